"""The update Δθ of every parameter tensor of a base network, and applying it without rewriting the net.

A :class:`WeightUpdate` holds the *decoded* previous weights θ as frozen buffers and, per tensor,
a raw update parameter (zeros at the start) and, for the gated kinds, a
:class:`~weightstep.stepping.gates.HardConcreteGate` of the same shape:

- ``'l0'``: Δ = raw ⊙ z (sparsity of the weight update itself, the proposal's eq. 5);
- ``'dct'``: Δ = DCT⁻¹(raw ⊙ z), raw being DCT coefficients (sparsity in frequency, eq. 6);
- ``'dense'``: Δ = raw, no gates (the control).

z is a hard-concrete sample when training and the deterministic test-time gate otherwise. The
network is evaluated with ``torch.func.functional_call`` on ``θ + Δ`` (:func:`forward_with`), so
the anchor networks need no changes and gradients reach raw and the gate logits.

Typical use with :func:`weightstep.inr.fit`::

    update = WeightUpdate(dict(model.named_parameters()), spec)
    g = torch.Generator().manual_seed(spec.seed)
    def closure(step):
        pred = forward_with(model, update.weights(train=True, generator=g))
        return StepOutput(loss=F.mse_loss(pred, target) + spec.lam * update.penalty())
    fit(update.param_groups(), closure, FitConfig(...))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from weightstep.config import param, validate
from weightstep.stepping.dct import from_coefficients
from weightstep.stepping.gates import HardConcreteGate

__all__ = ["UPDATE_KINDS", "UpdateSpec", "WeightUpdate", "forward_with", "apply_delta"]

UPDATE_KINDS = ("l0", "dct", "dense")


@dataclass(frozen=True)
class UpdateSpec:
    """How one weight step is parametrised and trained."""

    kind: str = param("l0", "l0: gates on each weight's update; dct: gates on the DCT coefficients of "
                      "each tensor's update; dense: no gates (the control)", choices=UPDATE_KINDS)
    log_alpha_init: float = param(-3.0, "initial gate logit: -3 starts every gate closed at test time "
                                  "while about 20 % open in training samples (measured on carphone)",
                                  low=-20.0, high=20.0)
    gate_lr: float = param(0.05, "Adam lr of the gate logits: at the update's lr the gates learn nothing "
                           "(measured: 0.05 opens a useful 0.3-3 % in 200 steps)", low=0.0)
    update_lr: float = param(2e-4, "Adam lr of the raw update values (weights are O(0.1), steps O(1e-3))",
                             low=0.0)
    latent_lr: float = param(0.05, "Adam lr of a latent residual (the latent kind): latents are integers, "
                             "so a residual must move by whole units within one step's fit", low=0.0)
    lam: float = param(1e-7, "weight of the penalty (expected bits) beside an MSE in [0, 1]: the codec "
                       "passes its lambda / pixels, so the loss is MSE + lambda * expected bpp", low=0.0)
    gate_bits: float = param(1.0, "bits one open gate is expected to cost (position and value); the "
                             "schedules set it from the update coder's last frame (1 = penalty is the "
                             "expected L0 itself)", low=0.0, high=64.0)
    seed: int = param(0, "seed of the generator drawing the gate noise during training", low=0,
                      high=2**31 - 1)


def forward_with(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model()`` evaluated with ``weights`` in place of its parameters (the model is not modified)."""
    return torch.func.functional_call(model, dict(weights), ())


def apply_delta(base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """New weights ``base + delta`` in float32 on ``base``'s devices, detached, same keys and order.

    The one function both encoder and decoder use to step the weights (an element-wise float32
    add is exact-rounded, so the result is bit-identical wherever it runs).
    """
    if list(base) != list(delta):
        raise ValueError(f"delta names {list(delta)} do not match the base names {list(base)}")
    out = {}
    for name, b in base.items():
        d = delta[name]
        if tuple(d.shape) != tuple(b.shape):
            raise ValueError(f"{name}: delta shape {tuple(d.shape)} != base shape {tuple(b.shape)}")
        b = b.detach().to(torch.float32)
        out[name] = b + d.detach().to(device=b.device, dtype=torch.float32)
    return out


class WeightUpdate(nn.Module):
    """The trainable update of every tensor in ``base`` (name -> decoded previous weights), in order.

    Keep the order of ``model.named_parameters()``: the bitstream codes tensors in this order.
    """

    def __init__(self, base: Mapping[str, torch.Tensor], spec: UpdateSpec):
        super().__init__()
        validate(spec)
        if not base:
            raise ValueError("WeightUpdate needs at least one base tensor")
        self.spec = spec
        self.names: tuple[str, ...] = tuple(base)
        self.gated = spec.kind in ("l0", "dct")
        raws, gates = [], []
        for index, (name, tensor) in enumerate(base.items()):
            tensor = tensor.detach().to(torch.float32).clone()
            if not torch.isfinite(tensor).all():
                raise ValueError(f"base tensor {name!r} has non-finite entries")
            self.register_buffer(f"base_{index}", tensor)
            raws.append(nn.Parameter(torch.zeros_like(tensor)))
            if self.gated:
                gates.append(HardConcreteGate(tensor.shape, spec.log_alpha_init, device=tensor.device))
        self.raw = nn.ParameterList(raws)
        self.gates = nn.ModuleList(gates)

    def base(self) -> dict[str, torch.Tensor]:
        """name -> the frozen previous weights."""
        return {name: getattr(self, f"base_{i}") for i, name in enumerate(self.names)}

    def _gated_raw(self, index: int, train: bool, generator: torch.Generator | None) -> torch.Tensor:
        raw = self.raw[index]
        return raw * self.gates[index](train, generator) if self.gated else raw

    def delta(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> Δ (differentiable); sampled gates when ``train``, deterministic gates otherwise."""
        out = {}
        for i, name in enumerate(self.names):
            value = self._gated_raw(i, train, generator)
            out[name] = from_coefficients(value) if self.spec.kind == "dct" else value
        return out

    def weights(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> base + Δ (differentiable in the update's parameters)."""
        delta = self.delta(train, generator)
        return {name: b + delta[name] for name, b in self.base().items()}

    def coded_values(self) -> dict[str, torch.Tensor]:
        """What gets quantised and coded: raw ⊙ deterministic gate, detached (DCT coefficients for 'dct').

        Exactly zero wherever the gate is closed (and everywhere the raw update is zero).
        """
        with torch.no_grad():
            return {name: self._gated_raw(i, False, None).detach().clone() for i, name in enumerate(self.names)}

    def penalty(self) -> torch.Tensor:
        """Expected coded bits: the expected L0 summed over every gate times ``spec.gate_bits`` (a
        scalar; zero for 'dense'). Multiply by ``spec.lam``."""
        if not self.gated:
            return torch.zeros((), device=self.raw[0].device)
        return self.spec.gate_bits * torch.stack([gate.expected_l0() for gate in self.gates]).sum()

    def warm_start(self, log_alpha: Mapping[str, torch.Tensor], low: float = -3.0, high: float = 3.0) -> None:
        """Start every gate's logit from ``log_alpha`` (the previous frame's, clamped to [low, high]):
        gates that paid last frame start open, the rest where they were."""
        if not self.gated:
            return
        with torch.no_grad():
            for name, gate in zip(self.names, self.gates, strict=True):
                if name in log_alpha:
                    gate.log_alpha.copy_(log_alpha[name].to(gate.log_alpha.device).clamp(low, high))

    def logits(self) -> dict[str, torch.Tensor]:
        """name -> a detached copy of each gate's logits (empty for 'dense')."""
        return {name: gate.log_alpha.detach().clone() for name, gate in zip(self.names, self.gates, strict=True)}

    def param_groups(self) -> list[dict]:
        """Param groups for :func:`weightstep.inr.fit`: raw values at update_lr, gate logits at gate_lr."""
        groups = [{"params": list(self.raw), "lr": self.spec.update_lr}]
        if self.gated:
            groups.append({"params": [gate.log_alpha for gate in self.gates], "lr": self.spec.gate_lr})
        return groups

    def open_count(self) -> int:
        """Number of elements whose deterministic gate is > 0 (all elements for 'dense')."""
        if not self.gated:
            return sum(raw.numel() for raw in self.raw)
        with torch.no_grad():
            return int(sum(int(gate.open_mask().sum()) for gate in self.gates))

    def numel(self) -> int:
        """Number of update elements (one per base weight)."""
        return sum(raw.numel() for raw in self.raw)

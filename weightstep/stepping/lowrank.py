"""The ``lowrank`` update kind: each weight matrix's update as a product of two thin factors.

:class:`LowRankUpdate` holds the decoded previous weights as frozen buffers and, per tensor, the
trainable update :func:`~weightstep.stepping.lowrank_code.plan_tensors` gives it: matrices (the
tensor with leading size-1 dims dropped, viewed as (out, rest)) get ΔW = U V with U (m x r) and
V (r x n), r = min(max_rank, m, n); biases, scalars and tiny tensors get a dense update; names in
``frozen`` get none. U starts at 0 and V at seeded N(0, 1/n), so Δ = 0 at the start while
dL/dU = (dL/dΔW) V^T is not zero. The fit runs at ``max_rank``; the coder
(:func:`code_lowrank`, in :mod:`.lowrank_code` with the byte layout) picks each tensor's rank and
the step by D + lam R with real bits, and :func:`decode_lowrank` rebuilds the same Δ bit for bit.

Typical use (two-stage, frame t)::

    update = LowRankUpdate(previous_weights, lr=1e-3, seed=seed + t, frozen=frozen, max_rank=4)
    # fit: loss = mse(forward_with(net, update.weights(train=True)), target) + lam / pixels * update.penalty()
    data, delta, facts = code_lowrank(update, distortion, lam / pixels)
    weights = apply_delta(update.base(), delta)  # what the decoder will hold
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from weightstep.stepping.kindcode import register_base, value_bits
from weightstep.stepping.lowrank_code import (
    MAX_RANK,
    TensorPlan,
    code_lowrank,
    decode_lowrank,
    lowrank_delta,
    plan_tensors,
    rank_levels,
)

__all__ = ["MAX_RANK", "TensorPlan", "plan_tensors", "rank_levels", "LowRankUpdate", "lowrank_delta",
           "code_lowrank", "decode_lowrank"]

BITS_REL_STEP = 2.0**-6  # penalty's step: 1/64 of the tensor's RMS (weight-update steps measured ~1e-3 on 0.1 weights)
# V's learning rate over U's: V's rows start at unit norm while U's entries grow from 0 to about
# |ΔW| sqrt(n); measured on a 24-wide SIREN, 30 Adam steps at lr 1e-3: MSE 3.9e-4 (x1), 3.5e-4 (x3),
# 2.5e-4 (x10), and the same order after 100 steps (2.2e-4, 1.2e-4, 0.9e-4).
V_LR_RATIO = 10.0


def _check_max_rank(max_rank: int) -> int:
    if isinstance(max_rank, bool) or not 1 <= int(max_rank) <= MAX_RANK:
        raise ValueError(f"max_rank must be in [1, {MAX_RANK}], got {max_rank!r}")
    return int(max_rank)


class LowRankUpdate(nn.Module):
    """Trainable low-rank update of every tensor of ``base`` (name -> decoded previous weights), in order."""

    def __init__(self, base: Mapping[str, torch.Tensor], *, lr: float, seed: int,
                 frozen: frozenset[str] = frozenset(), max_rank: int = 4):
        super().__init__()
        self.names: tuple[str, ...] = register_base(self, base, lr, "LowRankUpdate")
        self.max_rank = _check_max_rank(max_rank)
        self.lr = float(lr)
        self.frozen = frozenset(frozen)
        self.plans = plan_tensors([(n, tuple(t.shape)) for n, t in base.items()], self.frozen)
        generator = torch.Generator().manual_seed(int(seed))
        factors_u, factors_v, dense, units = [], [], [], []
        self._slot: list[int] = []  # plan -> index into its parameter list
        for plan in self.plans:
            ref = base[plan.name]
            rms = float(ref.detach().double().pow(2).mean().sqrt()) if ref.numel() else 0.0
            units.append(max(BITS_REL_STEP * rms, 2.0**-20))
            if plan.factorised:
                r = min(self.max_rank, plan.full_rank)
                v = torch.randn(r, plan.cols, generator=generator) / math.sqrt(plan.cols)
                self._slot.append(len(factors_u))
                factors_u.append(nn.Parameter(torch.zeros(plan.rows, r, device=ref.device)))
                factors_v.append(nn.Parameter(v.to(ref.device)))
            else:
                self._slot.append(len(dense))
                dense.append(nn.Parameter(torch.zeros(plan.shape, device=ref.device)))
        self.u = nn.ParameterList(factors_u)
        self.v = nn.ParameterList(factors_v)
        self.dense = nn.ParameterList(dense)
        self.units = tuple(units)
        # each rank component's m + n values, in penalty()'s order (a buffer: it follows the module's device)
        sizes = [float(p.rows + p.cols) for p in self.plans if p.factorised for _ in range(min(self.max_rank, p.full_rank))]
        self.register_buffer("component_values", torch.tensor(sizes, dtype=torch.float32, device=self.base_0.device),
                             persistent=False)

    def base(self) -> dict[str, torch.Tensor]:
        """name -> the frozen previous weights."""
        return {name: getattr(self, f"base_{i}") for i, name in enumerate(self.names)}

    def _value(self, index: int) -> torch.Tensor:
        plan, slot = self.plans[index], self._slot[index]
        if plan.factorised:
            return (self.u[slot] @ self.v[slot]).reshape(plan.shape)
        return self.dense[slot]

    def delta(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> Δ for every name (zeros where untouched); differentiable. ``train``/``generator`` unused."""
        coded = {plan.name: self._value(i) for i, plan in enumerate(self.plans)}
        return {name: coded[name] if name in coded else torch.zeros_like(b) for name, b in self.base().items()}

    def weights(self, train: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """name -> base + Δ (differentiable in the factors)."""
        delta = self.delta(train, generator)
        return {name: b + delta[name] for name, b in self.base().items()}

    def penalty(self) -> torch.Tensor:
        """Differentiable estimate of the coded bits (a scalar; the caller scales it by lam / pixels).

        A rank component u_k v_k^T costs its m + n values times
        :func:`~weightstep.stepping.kindcode.value_bits` (rms_k / step), about log2(rms_k / step) + 2.4, where
        rms_k = |u_k| |v_k| / sqrt(m n) is the RMS of the ΔW entries it makes (|u_k| |v_k| is its
        singular value when the factors are balanced and orthogonal, an upper bound otherwise) and
        step = 2^-6 x the base tensor's RMS. Summed over components it acts like a nuclear norm
        with a log: components that do little are pushed to zero, so the coder can drop them. A
        dense value d costs value_bits(|d| / step). Zero at the start, and scale-free in (U c, V / c).
        """
        ratios, dense = [], []  # every tensor's ratios, then value_bits once (a fit step's overhead is its op count)
        for i, plan in enumerate(self.plans):
            slot, unit = self._slot[i], self.units[i]
            if plan.factorised:
                u, v = self.u[slot], self.v[slot]
                strength = torch.sqrt(u.pow(2).sum(0) * v.pow(2).sum(1) + 1e-30)  # |u_k| |v_k| per k
                ratios.append(strength * (1.0 / (math.sqrt(plan.rows * plan.cols) * unit)))
            else:
                dense.append(self.dense[slot].abs().reshape(-1) * (1.0 / unit))
        total = self.base_0.new_zeros(())
        if ratios:
            total = total + (self.component_values * value_bits(torch.cat(ratios))).sum()
        if dense:
            total = total + value_bits(torch.cat(dense)).sum()
        return total

    def param_groups(self) -> list[dict]:
        """U factors and dense values at ``lr``, then V factors at ``V_LR_RATIO * lr``."""
        groups = [{"params": list(self.u) + list(self.dense), "lr": self.lr}]
        if len(self.v):
            groups.append({"params": list(self.v), "lr": V_LR_RATIO * self.lr})
        return groups

    def open_count(self) -> int:
        """Values the update codes at ``max_rank``: r (m + n) per matrix plus every dense value."""
        return sum(min(self.max_rank, p.full_rank) * (p.rows + p.cols) if p.factorised else p.cols
                   for p in self.plans)

    def fitted(self) -> dict[str, np.ndarray]:
        """name -> the trained ΔW as a float64 (rows, cols) matrix, or the flat dense update (detached)."""
        with torch.no_grad():
            out = {}
            for i, plan in enumerate(self.plans):
                value = self._value(i).detach().to("cpu", torch.float64).numpy()
                out[plan.name] = value.reshape(plan.rows, plan.cols) if plan.factorised else value.reshape(-1)
                if not np.isfinite(out[plan.name]).all():
                    raise ValueError(f"the update of {plan.name!r} has non-finite entries")
            return out

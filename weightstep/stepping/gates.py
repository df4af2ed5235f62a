"""Hard-concrete gates (Louizos, Welling & Kingma 2018, "Learning sparse neural networks through L0
regularization"), written from the paper.

Each gate z in [0, 1] multiplies one element of a weight update. During training a gate is a
sample of the hard-concrete distribution with location ``log_alpha`` and temperature ``beta``::

    u ~ U(eps, 1 - eps)
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)       (binary concrete)
    z = clamp(s * (zeta - gamma) + gamma, 0, 1)                 (stretched to (gamma, zeta), rectified)

so z is exactly 0 or 1 with non-zero probability, and the reparametrised sample is
differentiable in ``log_alpha``. The L0 penalty is the expected number of non-zero gates,
``sum P(z > 0) = sum sigmoid(log_alpha - beta * log(-gamma / zeta))`` (the paper's eq. 12).

At test time the gate is the deterministic ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``
(the paper's estimator without noise; *not* a 0.5 threshold). A gate is *closed* iff that value is
exactly 0, i.e. ``sigmoid(log_alpha) <= -gamma / (zeta - gamma)`` (log_alpha <= about -2.40 for the
defaults); a closed gate's update element is exactly zero and costs no value bits. Initialising
``log_alpha`` at -3 therefore starts every gate closed at test time while P(z > 0) is still about
0.2 during training, so the update's elements receive gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BETA", "GAMMA", "ZETA", "EPS", "HardConcreteGate"]

BETA = 2.0 / 3.0  # temperature (paper: 2/3)
GAMMA = -0.1  # lower end of the stretch interval (paper: -0.1)
ZETA = 1.1  # upper end of the stretch interval (paper: 1.1)
EPS = 1e-6  # u is drawn from U(eps, 1 - eps) so that log u and log(1 - u) stay finite


class HardConcreteGate(nn.Module):
    """A tensor of independent hard-concrete gates with a learnable ``log_alpha`` of ``shape``."""

    def __init__(self, shape: Sequence[int] | torch.Size, log_alpha_init: float = -3.0, *, beta: float = BETA,
                 gamma: float = GAMMA, zeta: float = ZETA, eps: float = EPS,
                 device: torch.device | str | None = None):
        super().__init__()
        if not (beta > 0 and gamma < 0 and zeta > 1 and 0 < eps < 0.5):
            raise ValueError(f"hard-concrete needs beta > 0, gamma < 0 < 1 < zeta, 0 < eps < 0.5; got "
                             f"beta={beta}, gamma={gamma}, zeta={zeta}, eps={eps}")
        if not math.isfinite(log_alpha_init):
            raise ValueError(f"log_alpha_init must be finite, got {log_alpha_init!r}")
        self.shape = tuple(int(d) for d in shape)
        self.beta, self.gamma, self.zeta, self.eps = float(beta), float(gamma), float(zeta), float(eps)
        self.log_alpha = nn.Parameter(torch.full(self.shape, float(log_alpha_init), dtype=torch.float32,
                                                 device=device))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A training sample z (differentiable in ``log_alpha``).

        The uniform noise is drawn on ``generator``'s device (CPU generator: the same numbers on every
        machine) and moved to ``log_alpha``'s device. ``generator=None`` uses torch's global RNG
        (which :func:`weightstep.inr.fit` seeds).
        """
        device = generator.device if generator is not None else self.log_alpha.device
        u = torch.rand(self.shape, generator=generator, device=device, dtype=torch.float32)
        u = u.to(self.log_alpha.device).clamp(self.eps, 1.0 - self.eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate: ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``."""
        return (torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def forward(self, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample when ``train``, else the deterministic gate."""
        return self.sample(generator) if train else self.deterministic()

    def expected_l0(self) -> torch.Tensor:
        """Expected number of non-zero gates, ``sum sigmoid(log_alpha - beta * log(-gamma / zeta))``."""
        shift = self.beta * math.log(-self.gamma / self.zeta)
        return torch.sigmoid(self.log_alpha - shift).sum()

    def open_mask(self) -> torch.Tensor:
        """Boolean tensor: True where the deterministic gate is non-zero (the element may change)."""
        return self.deterministic().detach() > 0

    def extra_repr(self) -> str:
        return f"shape={self.shape}, beta={self.beta:.4g}, gamma={self.gamma}, zeta={self.zeta}"

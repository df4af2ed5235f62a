"""Building blocks of DVC: GDN, the factorised (non-parametric) density of Ballé et al. 2018, a residual block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it pushes x back above the bound."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


class GDN(nn.Module):
    """Generalised divisive normalisation y_i = x_i / sqrt(beta_i + sum_j gamma_ji x_j^2) (inverse: times).

    Parameters are stored in the square-root reparametrisation (beta, gamma as the square
    roots of the offset values), the layout the public DVC weights use.
    """

    PEDESTAL = (2.0**-18) ** 2

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_bound = (beta_min + self.PEDESTAL) ** 0.5
        self.gamma_bound = 2.0**-18
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.PEDESTAL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = _LowerBound.apply(self.beta, self.beta_bound) ** 2 - self.PEDESTAL
        gamma = (_LowerBound.apply(self.gamma, self.gamma_bound) ** 2 - self.PEDESTAL).view(c, c, 1, 1)
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


class FactorizedDensity(nn.Module):
    """A learned per-channel CDF (Ballé et al. 2018, 3 hidden units of width 1 per channel, as DVC).

    ``cdf(x)`` maps (N, C, H, W) values to their CDF under channel C's density; the
    probability of an integer k is cdf(k + 0.5) - cdf(k - 0.5).
    """

    def __init__(self, channels: int, depth: int = 4):
        super().__init__()
        shape = (1, channels, 1, 1)
        self.hs = nn.ParameterList([nn.Parameter(torch.randn(shape) * 0.01) for _ in range(depth)])
        self.bs = nn.ParameterList([nn.Parameter(torch.randn(shape) * 0.01) for _ in range(depth)])
        self.as_ = nn.ParameterList([nn.Parameter(torch.randn(shape) * 0.01) for _ in range(depth - 1)])

    @property
    def channels(self) -> int:
        return self.hs[0].shape[1]

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.hs) - 1
        for i in range(last):
            x = x * F.softplus(self.hs[i].to(x.dtype)) + self.bs[i].to(x.dtype)
            x = x + torch.tanh(x) * torch.tanh(self.as_[i].to(x.dtype))
        return torch.sigmoid(x * F.softplus(self.hs[last].to(x.dtype)) + self.bs[last].to(x.dtype))

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        return self.cdf(x + 0.5) - self.cdf(x - 0.5)


class ResBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))): the blocks of DVC's motion compensation network."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_a = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(F.relu(self.conv_a(F.relu(x))))

"""Soft rounding: the training-time stand-in for rounding the latents (C3-style, annealed).

``soft_round(x, T)`` is a smooth, monotone function equal to ``x`` at integer + 0.5 and to
the integers themselves at the integers; as the temperature ``T`` falls towards 0 it tends to
``round(x)``, and at large ``T`` to the identity. :func:`latent_proxy` is what the anchor fit
feeds the network and the rate model in place of rounded latents:

    y = soft_round(latent, T) + u,  u ~ U(-0.5, 0.5)   (the rate model sees y)
    the synthesis sees soft_round(y, T)

so the rate model keeps the noise proxy's smooth density while the synthesis sees values
that move towards integers as ``T`` is annealed (:func:`temperature`, geometric from
``start`` to ``end`` over the fit). Measured on carphone (benchmarks/anchor_rd.py): lower
D + lambda * R than plain additive noise at the same steps (README, "Anchor networks as
images").
"""

from __future__ import annotations

import math

import torch

T_START, T_END = 0.5, 0.01  # soft-rounding temperature at the start and the end of the fit (measured)


def soft_round(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Smooth rounding: floor(x) + 0.5 + 0.5 * tanh(r / T) / tanh(0.5 / T), r = x - floor(x) - 0.5."""
    t = max(float(temperature), 1e-4)
    base = torch.floor(x).detach()
    r = x - base - 0.5
    return base + 0.5 + 0.5 * torch.tanh(r / t) / math.tanh(0.5 / t)


def temperature(step: int, steps: int, start: float = T_START, end: float = T_END) -> float:
    """Geometric annealing from ``start`` (step 0) to ``end`` (the last step)."""
    progress = step / max(1, steps - 1)
    return start * (end / start) ** progress


def latent_proxy(x: torch.Tensor, temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the synthesis sees, what the rate model sees) for latents ``x`` at temperature ``temp``."""
    noisy = soft_round(x, temp) + (torch.rand_like(x) - 0.5)
    return soft_round(noisy, temp), noisy

"""Fourier-feature MLP (Tancik et al. 2020): random Fourier features feeding a ReLU/GELU MLP.

A fixed Gaussian matrix B (num_features x in_features, entries N(0, sigma^2)) maps a
coordinate v in [0, 1]^2 to ``[cos(2 pi B v), sin(2 pi B v)]`` (2 * num_features values).
Coordinates are in [0, 1] as in the paper, so its sigma values (e.g. 10 for natural images)
mean the same here. B is regenerated from the spec's seed with a CPU ``torch.Generator``
(identical on every machine) and kept as a non-persistent buffer: never sent, never trained.

Layout for ``depth`` = D and ``width`` = W: ``Linear(2F, W) + act``, then ``(D - 1)`` x
``Linear(W, W) + act``, then ``Linear(W, 3)`` and a sigmoid (the paper's output), so frames
are always within [0, 1]. Weights and biases take PyTorch's usual U(-1/sqrt(in), 1/sqrt(in))
from a seeded generator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightstep.inr.siren import (
    CoordinateMLP,
    coordinate_grid,
    init_generator,
    uniform_,
)
from weightstep.inr.spec import NetworkSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def fourier_matrix(num_features: int, in_features: int, sigma: float, seed: int) -> torch.Tensor:
    """The Gaussian matrix B (num_features, in_features) with std ``sigma`` for ``seed``."""
    generator = init_generator(seed, stream=0)
    return torch.randn(num_features, in_features, generator=generator, dtype=torch.float32) * float(sigma)


class FourierMLP(CoordinateMLP):
    """Fourier-feature image network: ``forward()`` returns the (1, 3, H, W) frame it encodes.

    ``in_features`` and ``chunk_size`` work as in :class:`~weightstep.inr.siren.Siren`
    (coordinates for :meth:`query` are in [0, 1]).
    """

    def __init__(self, spec: NetworkSpec, height: int, width: int, *, in_features: int = 2,
                 chunk_size: int | None = None):
        super().__init__()
        self.height, self.width, self.in_features = int(height), int(width), int(in_features)
        self.chunk_size = chunk_size
        self.register_buffer("B", fourier_matrix(spec.fourier_features, in_features, spec.fourier_sigma,
                                                 spec.seed), persistent=False)
        sizes = [2 * spec.fourier_features] + [spec.width] * spec.depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.output = nn.Linear(spec.width, 3)
        self.activation = ACTIVATIONS[spec.activation]()
        generator = init_generator(spec.seed, stream=1)
        for layer in [*self.layers, self.output]:
            bound = 1.0 / math.sqrt(layer.in_features)
            uniform_(layer.weight, bound, generator)
            uniform_(layer.bias, bound, generator)
        self.register_buffer("coords", coordinate_grid(self.height, self.width, 0.0, 1.0), persistent=False)

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, 2 * num_features) Fourier features."""
        projected = (2.0 * math.pi) * (coords @ self.B.t())
        return torch.cat([torch.cos(projected), torch.sin(projected)], dim=1)

    def _mlp(self, coords: torch.Tensor) -> torch.Tensor:
        h = self.features(coords)
        for layer in self.layers:
            h = self.activation(layer(h))
        return torch.sigmoid(self.output(h))

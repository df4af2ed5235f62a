"""SIREN (Sitzmann et al. 2020): a coordinate MLP with sine activations.

Layout for ``depth`` = D and ``width`` = W (``depth`` counts the sine layers)::

    x in [-1, 1]^2 -> sin(w0 * Linear(2, W)) -> (D - 1) x sin(w * Linear(W, W)) -> Linear(W, 3)

Parameters: ``(2W + W) + (D - 1)(W^2 + W) + (3W + 3)``; e.g. W = 96, D = 4 gives 28,515.

Initialisation follows the paper: the first layer's weights are U(-1/in, 1/in); every later
layer's (the linear output layer included) are U(-sqrt(6/in)/w, sqrt(6/in)/w) with the
hidden omega w. Biases take PyTorch's usual U(-1/sqrt(in), 1/sqrt(in)). All draws come
from a ``torch.Generator`` seeded from the spec, so construction never touches global RNG.

Output: the linear layer's value ``out`` is mapped to the image as ``0.5 + 0.5 * out``, which is
the paper's fitting of targets in [-1, 1] expressed in [0, 1]. It is not clamped (clamping
would stop gradients); whoever turns it into pixels clamps to [0, 1].

Coordinates are a fixed buffer (not a parameter, not in ``state_dict``): row-major over
the frame, x along the width first, then y, each ``linspace(-1, 1, n)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightstep.inr.spec import NetworkSpec, WarpTarget


def coordinate_grid(height: int, width: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """(H*W, 2) float32 coordinates ``(x, y)`` in row-major pixel order, each ``linspace(low, high)``."""
    ys = torch.linspace(low, high, height) if height > 1 else torch.full((1,), (low + high) / 2)
    xs = torch.linspace(low, high, width) if width > 1 else torch.full((1,), (low + high) / 2)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1).to(torch.float32)


def init_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one purpose (``stream``) of a spec's seed, the same on every machine."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed) * 1_000_003 + int(stream))
    return generator


def uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    """Fill ``tensor`` in place with U(-bound, bound) drawn from ``generator``."""
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def pixels_to_image(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H*W, 3) row-major pixel values -> (1, 3, H, W)."""
    return values.reshape(height, width, 3).permute(2, 0, 1).unsqueeze(0)


def query_chunked(fn, coords: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Apply ``fn`` to ``coords`` in chunks of ``chunk_size`` rows (all at once when None)."""
    if chunk_size is None or coords.shape[0] <= chunk_size:
        return fn(coords)
    return torch.cat([fn(part) for part in coords.split(chunk_size)], dim=0)


class CoordinateMLP(nn.Module):
    """What the coordinate networks share: chunked queries, frame rendering, parameter count.

    Subclasses set ``coords`` (a buffer of the frame's pixel coordinates), ``height``, ``width``,
    ``in_features``, ``chunk_size`` and implement ``_mlp(coords) -> (N, 3)``.
    """

    def query(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, in_features) coordinates (the subclass's range) -> (N, 3) values."""
        return query_chunked(self._mlp, coords, self.chunk_size)

    def forward(self, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """The (1, 3, H, W) frame; with ``pixels`` (row-major indices) only those, as (N, 3) values
        (fits on random pixel subsets)."""
        if self.in_features != 2:
            raise ValueError("forward() renders a frame only for 2-D coordinates; use query()")
        if pixels is not None:
            return self.query(self.coords[pixels])
        return pixels_to_image(self.query(self.coords), self.height, self.width)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def warp_targets(self) -> tuple[WarpTarget, ...]:
        """A motion warp moves the coordinates the MLP reads."""
        return (WarpTarget("coords", "coords"),)


class Siren(CoordinateMLP):
    """SIREN image network: ``forward()`` returns the (1, 3, H, W) frame it encodes.

    ``in_features`` > 2 builds the same MLP for other coordinate spaces (e.g. (x, y, t) for a
    full-sequence model); then use :meth:`query` with your own coordinates. ``chunk_size``
    bounds the rows evaluated at once (memory for large frames, at inference); use the same
    value on encoder and decoder for bit-identical outputs.
    """

    def __init__(self, spec: NetworkSpec, height: int, width: int, *, in_features: int = 2,
                 chunk_size: int | None = None):
        super().__init__()
        self.height, self.width, self.in_features = int(height), int(width), int(in_features)
        self.chunk_size = chunk_size
        self.first_omega, self.hidden_omega = float(spec.first_omega), float(spec.hidden_omega)
        sizes = [in_features] + [spec.width] * spec.depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.output = nn.Linear(spec.width, 3)
        generator = init_generator(spec.seed, stream=1)
        for index, layer in enumerate([*self.layers, self.output]):
            fan_in = layer.in_features
            if index == 0:
                bound = 1.0 / fan_in
            else:
                bound = math.sqrt(6.0 / fan_in) / self.hidden_omega
            uniform_(layer.weight, bound, generator)
            uniform_(layer.bias, 1.0 / math.sqrt(fan_in), generator)
        self.register_buffer("coords", coordinate_grid(self.height, self.width), persistent=False)

    def _mlp(self, coords: torch.Tensor) -> torch.Tensor:
        h = coords
        for index, layer in enumerate(self.layers):
            omega = self.first_omega if index == 0 else self.hidden_omega
            h = torch.sin(omega * layer(h))
        return 0.5 + 0.5 * self.output(h)


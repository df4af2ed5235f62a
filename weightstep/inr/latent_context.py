"""The latent grids' entropy model: a small context network predicting each latent's Laplace.

Decoding order (vectorised: two passes per level, coarsest level first)::

    for level = L-1 .. 0:
        pass A: the "anchor" positions of a checkerboard ((row + col) even), from the coarser level
        pass B: the other positions, from the coarser level and their 4 neighbours (all pass-A)

Context of a position (i, j) of level l:

- coarse (5 values): the coarser level l+1 (already decoded) at (i//2, j//2) and its four
  neighbours; zeros for the coarsest level;
- neighbours (4 values, pass B only): this level at (i-1, j), (i+1, j), (i, j-1), (i, j+1), zero
  outside the grid.

Two tiny MLPs (one per pass; 5 -> H -> 2 and 9 -> H -> 2) map a context to the location ``mu``
and the log-scale of a Laplace; a learned offset per level adds to the log-scale (coarse levels
carry larger values). The same MLPs serve every level, so the model's weights cost a few
hundred bytes, sent with the anchor like the synthesis weights.

Two paths, kept apart as in CompressAI:

- training, :meth:`LatentContext.forward`: the bits of (noisy or rounded) latents, as a
  differentiable tensor, each pass's MLP on its own positions of every level at once;
- coding, :func:`coding_plan`: the exact chunks (symbols, rounded parameters) in decoding
  order, computed level by level from *decoded* integers only. The encoder and the decoder
  call the same function (the decoder fills each level as it goes), and the parameters are
  rounded to a coarse grid (:func:`round_params`) before the coder sees them, so both sides
  give the coder identical numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_SCALE, MAX_SCALE = 0.04, 256.0  # Laplace scales the model may give (a latent is an integer)
_LOG2E = 1.0 / math.log(2.0)


def _cross(x: torch.Tensor) -> torch.Tensor:
    """(1,1,h,w) -> (1,5,h,w): each position and its up, down, left and right neighbours (zero padded)."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return torch.cat([x, p[..., 0:h, 1:w + 1], p[..., 2:h + 2, 1:w + 1], p[..., 1:h + 1, 0:w],
                      p[..., 1:h + 1, 2:w + 2]], dim=1)


def checkerboard(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(h, w) bool: True at pass-A positions ((row + col) even)."""
    rows = torch.arange(h, device=device).view(-1, 1)
    cols = torch.arange(w, device=device).view(1, -1)
    return (rows + cols) % 2 == 0


def coarse_context(coarser: torch.Tensor | None, h: int, w: int) -> torch.Tensor:
    """(1,5,h,w): the coarser level's value at (i//2, j//2) and its 4 neighbours; zeros without one."""
    if coarser is None:
        return torch.zeros(1, 5, h, w)
    cross = _cross(coarser)
    return cross.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]


def laplace_bits(x: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 of the Laplace(mu, scale) mass on [x - 0.5, x + 0.5], element-wise (differentiable)."""
    d = (x - mu).abs()
    inv = 1.0 / scale
    # d >= 0.5: 0.5 * exp(-(d - 0.5) / b) * (1 - exp(-1 / b)); d < 0.5: 1 - 0.5 e^{-(0.5-d)/b} - 0.5 e^{-(0.5+d)/b}
    far = math.log(0.5) - (d - 0.5) * inv + torch.log(-torch.expm1(-inv))
    near_mass = 1.0 - 0.5 * torch.exp(-(0.5 - d).clamp_min(0.0) * inv) - 0.5 * torch.exp(-(0.5 + d) * inv)
    near = torch.log(near_mass.clamp_min(1e-9))
    log_mass = torch.where(d >= 0.5, far, near).clamp_min(math.log(2.0**-24))
    return -log_mass * _LOG2E


def round_params(mu: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parameters the coder sees: mu to 1/16, log2(scale) to 1/8, scale clamped; float64."""
    mu = np.round(np.asarray(mu, dtype=np.float64) * 16.0) / 16.0
    log2s = np.round(np.log2(np.clip(np.asarray(scale, dtype=np.float64), MIN_SCALE, MAX_SCALE)) * 8.0) / 8.0
    return mu, np.exp2(log2s)


class LatentContext(nn.Module):
    """Predicts (mu, scale) of every latent from its causal context; ``forward`` returns total bits."""

    def __init__(self, levels: int, hidden: int):
        super().__init__()
        self.levels = int(levels)
        self.pass_a = nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.pass_b = nn.Sequential(nn.Linear(9, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.level_log_scale = nn.Parameter(torch.zeros(self.levels))

    def reset(self, generator: torch.Generator) -> None:
        """Deterministic initialisation; the output layers start at zero (mu = 0, scale = 1)."""
        with torch.no_grad():
            for mlp in (self.pass_a, self.pass_b):
                first, last = mlp[0], mlp[2]
                bound = 1.0 / math.sqrt(first.in_features)
                first.weight.uniform_(-bound, bound, generator=generator)
                first.bias.zero_()
                last.weight.zero_()
                last.bias.zero_()
            self.level_log_scale.zero_()

    def _params(self, mlp: nn.Module, features: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(1,C,h,w) features -> (h,w) mu and scale."""
        out = mlp(features[0].permute(1, 2, 0))
        log_scale = (out[..., 1] + self.level_log_scale[level]).clamp(math.log(MIN_SCALE), math.log(MAX_SCALE))
        return out[..., 0], torch.exp(log_scale)

    def level_params(self, level: int, values: torch.Tensor, coarser: torch.Tensor | None,
                     which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, scale) over the whole (h,w) grid for pass ``which`` ('a' or 'b') of ``level``.

        ``values`` is this level's (1,1,h,w) grid; pass A ignores it; pass B reads only the
        neighbours of pass-B positions, which are pass-A positions.
        """
        h, w = values.shape[-2:]
        coarse = coarse_context(coarser, h, w).to(values)
        if which == "a":
            return self._params(self.pass_a, coarse, level)
        neighbours = _cross(values)[:, 1:]
        return self._params(self.pass_b, torch.cat([neighbours, coarse], dim=1), level)

    def forward(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Total bits of ``latents`` (a list of (1,1,h,w), finest first), differentiable.

        Training path: every latent of every level is one column, and each pass's contexts are
        gathered in one indexing op from the concatenated latents (a zero appended for positions
        outside a grid), pass-A positions first: each MLP runs only on the positions of its own
        pass, and the whole model is a dozen ops instead of a few per level (building each level's
        neighbours by padding and slicing was half a grid fit step's context model on a CPU).
        Same function as evaluating :meth:`level_params` level by level, up to float rounding.
        """
        shapes = tuple(tuple(int(n) for n in values.shape[-2:]) for values in latents)
        layout = _layout(shapes, latents[0].device)
        flat = torch.cat([values.reshape(-1) for values in latents] + [latents[0].new_zeros(1)])
        out_a = _mlp_columns(self.pass_a, flat.index_select(0, layout.context_a).view(5, -1))
        out_b = _mlp_columns(self.pass_b, flat.index_select(0, layout.context_b).view(9, -1))
        mu = torch.cat([out_a[0], out_b[0]])
        raw = torch.cat([out_a[1], out_b[1]]) + self.level_log_scale.index_select(0, layout.level)
        scale = torch.exp(raw.clamp(math.log(MIN_SCALE), math.log(MAX_SCALE)))
        return laplace_bits(flat.index_select(0, layout.order), mu, scale).sum()


class _Layout:
    """Where each latent's context sits in the concatenated latents (finest first, then one zero).

    ``order``: the flat index of every latent, pass-A positions (of every level) first, then pass
    B; ``level``: each one's level in that order; ``context_a`` / ``context_b``: the flat indices
    (row-major (5, N_A) / (9, N_B), flattened) of each pass's context columns in that order: the
    up, down, left and right neighbours (pass B only), then the coarser level's value at
    (i // 2, j // 2) and its up, down, left and right neighbours, the appended zero wherever a
    position falls outside its grid or there is no coarser level."""

    def __init__(self, shapes: tuple[tuple[int, int], ...], device: torch.device):
        offsets = np.cumsum([0] + [h * w for h, w in shapes])
        zero = int(offsets[-1])  # the appended zero
        per_pass: dict[bool, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {True: [], False: []}
        for level, (h, w) in enumerate(shapes):
            rows, cols = np.meshgrid(np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32), indexing="ij")
            own = _cross_indices(rows, cols, shapes[level], int(offsets[level]), zero)
            coarse = (_cross_indices(rows // 2, cols // 2, shapes[level + 1], int(offsets[level + 1]), zero)
                      if level + 1 < len(shapes) else [np.full((h, w), zero, dtype=np.int32)] * 5)
            context = np.stack(own[1:] + coarse).reshape(9, -1)
            anchors = ((rows + cols) % 2 == 0).reshape(-1)
            for which in (True, False):
                pick = anchors == which
                per_pass[which].append((own[0].reshape(-1)[pick], np.full(int(pick.sum()), level, dtype=np.int32),
                                        context[:, pick]))
        parts = per_pass[True] + per_pass[False]
        # int32 indices (index_select takes them, forward and backward): half the memory of int64 at large frames
        as_index = functools.partial(torch.as_tensor, dtype=torch.int32, device=device)
        self.order = as_index(np.concatenate([p[0] for p in parts]))
        self.level = as_index(np.concatenate([p[1] for p in parts]))
        self.context_a = as_index(np.concatenate([p[2][4:] for p in per_pass[True]], axis=1).reshape(-1))
        self.context_b = as_index(np.concatenate([p[2] for p in per_pass[False]], axis=1).reshape(-1))


def _cross_indices(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], offset: int, zero: int) -> list[np.ndarray]:
    """Flat indices of positions (rows, cols) of a grid of ``shape`` starting at ``offset`` and of their up,
    down, left and right neighbours (the order of :func:`_cross`), ``zero`` where one falls outside."""
    height, width = shape
    out = []
    for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        out.append(np.where(inside, offset + r * width + c, zero).astype(np.int32))
    return out


@functools.lru_cache(maxsize=16)
def _layout(shapes: tuple[tuple[int, int], ...], device: torch.device) -> _Layout:
    return _Layout(shapes, device)


def _mlp_columns(mlp: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """``mlp`` (Linear, ReLU, Linear) applied to every column of (C, N) ``features`` -> (2, N)."""
    first, last = mlp[0], mlp[2]
    hidden = torch.relu(torch.addmm(first.bias.unsqueeze(1), first.weight, features))
    return torch.addmm(last.bias.unsqueeze(1), last.weight, hidden)


Chunk = tuple[np.ndarray, np.ndarray]  # rounded (mu, scale), float64, in decoding order


def coding_plan(context: LatentContext, shapes: list[tuple[int, int]],
                fill: Callable[[int, str, torch.Tensor, Chunk], torch.Tensor]) -> list[torch.Tensor]:
    """Walk the decoding order; ``fill(level, pass, mask, params)`` returns that pass's values.

    ``fill`` gets the flat boolean mask of the pass's positions and their rounded parameters
    and returns the decoded (or known) integers there as a float tensor. Everything runs on
    the CPU in float32 with gradients off, and reads only integers already filled, so the
    encoder and the decoder compute bit-identical parameters. Returns the (1,1,h,w) grids,
    finest first.
    """
    grids: list[torch.Tensor | None] = [None] * len(shapes)
    with torch.no_grad():
        for level in reversed(range(len(shapes))):
            h, w = shapes[level]
            values = torch.zeros(1, 1, h, w)
            coarser = grids[level + 1] if level + 1 < len(shapes) else None
            anchors = checkerboard(h, w).reshape(-1)
            for which, mask in (("a", anchors), ("b", ~anchors)):
                mu, scale = context.level_params(level, values, coarser, which)
                params = round_params(mu.reshape(-1)[mask].numpy(), scale.reshape(-1)[mask].numpy())
                flat = values.view(-1)
                flat[mask] = fill(level, which, mask, params)
            grids[level] = values
    return grids  # type: ignore[return-value]



"""Motion inside a weight step: a per-frame warp of what the network sees.

A warp is a displacement field over the frame, in pixels: a global affine part plus a coarse
G x G grid of displacement nodes interpolated bilinearly,

    d(x, y) = [a0 a1; a2 a3] . ((x, y) - centre) / R + (a4, a5) + bilinear(nodes)(x, y)

with R = max(W, H) / 2, so every one of the 6 + 2 G^2 numbers is a displacement in pixels
(the linear terms: at the frame's edge). Frame t then sees each warp target of the network
resampled at p + d(p) from its state at frame t-1 (a backward warp): the input coordinates of
the coordinate MLPs, the noise input of the DIP net, every latent grid of the grid network
(each at its own stride), as the networks declare in ``warp_targets()``
(:class:`weightstep.inr.spec.WarpTarget`). Maps are resampled with Catmull-Rom bicubic taps
clamped at the border (Keys' cubic convolution, a = -0.75, as torch's bicubic); coordinate fields bilinearly, extended linearly beyond the border (an
MLP can extrapolate content that moves in).

Exactness: encoder and decoder build the new state with :func:`warp_state` on the CPU in
float32 from gathers and element-wise IEEE operations in a fixed order (no library resampler,
no reductions), so both hold identical tensors on any machine. Training uses torch's grid_sample with the same
interpolation (float32, autograd), which is several times faster.

The warp blob and its coding (step search, prediction from the previous warp) are in
:mod:`weightstep.stepping.warp_code`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weightstep.inr.spec import WarpTarget
from weightstep.stepping.warp_code import (  # noqa: F401  (the coding API, re-exported for callers of this module)
    MAX_ABS,
    MAX_EXPONENT,
    STEP_EXPONENTS,
    affine_split,
    code_warp,
    decode_warp,
    dequantise_warp,
    encode_warp,
    predict_warp,
    quantise_warp,
    warp_count,
)

__all__ = ["WarpField", "warp_count", "warp_state", "exact_warp", "warp_targets", "affine_split", "predict_warp",
           "quantise_warp", "dequantise_warp", "encode_warp", "decode_warp", "code_warp"]


def warp_targets(net: nn.Module) -> tuple[WarpTarget, ...]:
    targets = getattr(net, "warp_targets", None)
    if targets is None:
        raise ValueError(f"{type(net).__name__} declares no warp targets; the warp kinds need them")
    return tuple(targets())


# ---------------------------------------------------------------- the field and the resampling


def displacement_geometry(xs: torch.Tensor, ys: torch.Tensor, width: int, height: int, grid: int) -> tuple:
    """What :func:`displacement` needs of the positions alone (a decoder computes it once per layout)."""
    cx, cy, radius = (width - 1) / 2.0, (height - 1) / 2.0, max(width, height) / 2.0
    nx, ny = (xs - cx) / radius, (ys - cy) / radius
    if grid < 2:
        return nx, ny, None
    gx = (xs * ((grid - 1) / max(width - 1, 1))).clamp(0, grid - 1)
    gy = (ys * ((grid - 1) / max(height - 1, 1))).clamp(0, grid - 1)
    x0 = gx.floor().clamp(max=grid - 2).long()
    y0 = gy.floor().clamp(max=grid - 2).long()
    tx, ty = gx - x0, gy - y0
    corner = (y0 * grid + x0).reshape(-1)  # flat index of the top-left node (index_select: a fast gather)
    taps = tuple(corner + offset for offset in (0, 1, grid, grid + 1))
    return nx, ny, (taps, 1 - tx, tx, 1 - ty, ty)


def displacement(values: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, width: int, height: int,
                 grid: int, geometry: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy) in pixels at frame positions (xs, ys) (pixel centres at integers); ``geometry``:
    :func:`displacement_geometry` of the same positions, if the caller keeps it."""
    nx, ny, nodes_at = geometry if geometry is not None else displacement_geometry(xs, ys, width, height, grid)
    dx = values[0] * nx + values[1] * ny + values[4]
    dy = values[2] * nx + values[3] * ny + values[5]
    if grid >= 2:
        nodes = values[6:].reshape(2, grid, grid)
        taps, one_tx, tx, one_ty, ty = nodes_at
        for channel in (0, 1):
            n = nodes[channel].reshape(-1)
            at = [n.index_select(0, index).reshape(tx.shape) for index in taps]
            top = at[0] * one_tx + at[1] * tx
            bottom = at[2] * one_tx + at[3] * tx
            value = top * one_ty + bottom * ty
            if channel == 0:
                dx = dx + value
            else:
                dy = dy + value
    elif grid == 1:
        dx, dy = dx + values[6], dy + values[7]
    return dx, dy


CUBIC_A = -0.75  # Keys' cubic convolution parameter, as torch's bicubic grid_sample (the training path)


def _cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keys cubic-convolution weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def _bicubic_gather(flat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, h, w, offset=0) -> torch.Tensor:
    """Bicubic samples at map positions (u, v) (1-D) of maps flattened along the last dim of
    ``flat``, taps clamped at each sample's own map border: its map is h x w and starts at
    ``offset`` in ``flat`` (ints, or long tensors shaped like u). Gathers and element-wise
    operations only, in a fixed order, so the result is the same bits on any machine."""
    x0, y0 = u.floor(), v.floor()
    wx, wy = _cubic_weights(u - x0), _cubic_weights(v - y0)
    x0, y0 = x0.long(), y0.long()
    zero = torch.zeros_like(x0)
    h_last, w_last = torch.as_tensor(h - 1, device=u.device), torch.as_tensor(w - 1, device=u.device)
    columns = [offset + torch.clamp(x0 + (b - 1), zero, w_last) for b in range(4)]
    lead = flat.shape[:-1]
    single = math.prod(lead) == 1  # one map row (a latent level): gather from a 1-D tensor, ~5x faster
    source, dim = (flat.reshape(-1), 0) if single else (flat, -1)
    out = None
    for a in range(4):
        iy = torch.clamp(y0 + (a - 1), zero, h_last) * w
        row = None
        for b in range(4):
            tap = source.index_select(dim, iy + columns[b]) * wx[b]
            row = tap if row is None else row + tap
        term = row * wy[a]
        out = term if out is None else out + term
    return out.reshape(*lead, -1) if single else out


def sample_map(m: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of ``m`` (N, C, h, w) at map positions (u, v) (same shape S), taps clamped
    at the border -> (N, C, *S)."""
    h, w = m.shape[-2:]
    out = _bicubic_gather(m.reshape(*m.shape[:-2], h * w), u.reshape(-1), v.reshape(-1), h, w)
    return out.reshape(*m.shape[:-2], *u.shape)


def sample_coords(field: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a (2, H, W) coordinate field at pixel positions (u, v), extended
    linearly beyond the border with the field's mean slope -> (2, *S)."""
    _, h, w = field.shape
    uc, vc = u.clamp(0, w - 1), v.clamp(0, h - 1)
    x0 = uc.floor().clamp(max=max(w - 2, 0)).long()
    y0 = vc.floor().clamp(max=max(h - 2, 0)).long()
    tx, ty = uc - x0, vc - y0
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    top = field[:, y0, x0] * (1 - tx) + field[:, y0, x1] * tx
    bottom = field[:, y1, x0] * (1 - tx) + field[:, y1, x1] * tx
    out = top * (1 - ty) + bottom * ty
    slope_x = (field[:, :, -1] - field[:, :, 0]).mean(dim=1) / max(w - 1, 1)
    slope_y = (field[:, -1, :] - field[:, 0, :]).mean(dim=1) / max(h - 1, 1)
    extra = slope_x.reshape(2, *([1] * u.dim())) * (u - uc) + slope_y.reshape(2, *([1] * v.dim())) * (v - vc)
    return out + extra


def _grid_sample(m: torch.Tensor, u: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor:
    """torch's resampler at map positions (u, v) (border clamped): the fast path for training."""
    h, w = m.shape[-2:]
    grid = torch.stack([(2.0 * u + 1.0) / w - 1.0, (2.0 * v + 1.0) / h - 1.0], dim=-1)
    grid = grid.unsqueeze(0).expand(m.shape[0], *grid.shape)
    return F.grid_sample(m, grid, mode=mode, padding_mode="border", align_corners=False)


def _map_positions(h: int, w: int, stride: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame positions (px, py) of a map's samples (sample centres, one per ``stride`` pixels)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                            torch.arange(w, dtype=dtype, device=device), indexing="ij")
    return (xs + 0.5) * stride - 0.5, (ys + 0.5) * stride - 0.5


# Every frame and fit step warps the same maps, so their positions are kept, least recently used
# out first, up to a number of samples (a sample keeps about 90 bytes: 1 << 22 of them ~ 400 MB; a
# fit at 176x144 needs 0.1M, at 1920x1080 5.5M, where the cache thrashes and costs what it saved).
_POSITIONS: OrderedDict[tuple, tuple] = OrderedDict()
_POSITIONS_SAMPLES = 1 << 22


def _concatenated_positions(layout: tuple[tuple[int, int, float], ...], dtype, device,
                            frame: tuple[int, int, int]) -> tuple:
    """(px, py, stride, h, w, offset), one entry per sample of the maps ``layout`` ((h, w, stride)
    each) laid end to end, and their :func:`displacement_geometry` for ``frame`` (width, height,
    grid); cached, as they depend on the layout alone (callers only read them)."""
    key = (layout, dtype, str(device), frame)
    if key in _POSITIONS:
        _POSITIONS.move_to_end(key)
        return _POSITIONS[key]
    px, py, hs, ws, offsets, strides_e = [], [], [], [], [], []
    offset = 0
    for h, w, stride in layout:
        x, y = _map_positions(h, w, stride, dtype, device)
        px.append(x.reshape(-1))
        py.append(y.reshape(-1))
        count = h * w
        hs.append(torch.full((count,), h, dtype=torch.long, device=device))
        ws.append(torch.full((count,), w, dtype=torch.long, device=device))
        offsets.append(torch.full((count,), offset, dtype=torch.long, device=device))
        strides_e.append(torch.full((count,), stride, dtype=dtype, device=device))
        offset += count
    px, py = torch.cat(px), torch.cat(py)
    entry = (px, py, torch.cat(strides_e), torch.cat(hs), torch.cat(ws), torch.cat(offsets),
             displacement_geometry(px, py, *frame))
    _POSITIONS[key] = entry
    while len(_POSITIONS) > 1 and sum(e[0].numel() for e in _POSITIONS.values()) > _POSITIONS_SAMPLES:
        _POSITIONS.popitem(last=False)
    return entry


def _sample_maps_exact(maps: list[torch.Tensor], strides: list[float], values: torch.Tensor, width: int,
                       height: int, grid: int) -> list[torch.Tensor]:
    """:func:`sample_map` of every map (all (N, C, h_i, w_i) with one N, C) at its warped positions, in
    one :func:`_bicubic_gather` over the concatenated samples: the same element-wise operations
    as one map at a time (so the same bits), with a few dozen tensor operations in all instead of
    a few dozen per map (the decoder's warp was dominated by per-operation overhead)."""
    lead = maps[0].shape[:-2]
    layout = tuple((*m.shape[-2:], float(stride)) for m, stride in zip(maps, strides, strict=True))
    px, py, s, h_e, w_e, off, geometry = _concatenated_positions(layout, values.dtype, values.device,
                                                                 (width, height, grid))
    dx, dy = displacement(values, px, py, width, height, grid, geometry)
    u, v = (px + dx + 0.5) / s - 0.5, (py + dy + 0.5) / s - 0.5
    out = _bicubic_gather(torch.cat([m.reshape(*lead, -1) for m in maps], dim=-1), u, v, h_e, w_e, off)
    result, start = [], 0
    for m in maps:
        count = m.shape[-2] * m.shape[-1]
        result.append(out[..., start:start + count].reshape(m.shape))
        start += count
    return result


def _sample_maps_fast(maps: list[torch.Tensor], strides: list[float], values: torch.Tensor, width: int,
                      height: int, grid: int) -> list[torch.Tensor]:
    """The training path of :func:`_sample_maps_exact`: the warp's displacement at every map's samples
    in one pass over the concatenated positions (a fit step's warp was a few hundred small operations,
    a few dozen per map), then torch's bicubic resampler map by map."""
    layout = tuple((*m.shape[-2:], float(stride)) for m, stride in zip(maps, strides, strict=True))
    px, py, s, h_e, w_e, _, geometry = _concatenated_positions(layout, values.dtype, values.device,
                                                               (width, height, grid))
    dx, dy = displacement(values, px, py, width, height, grid, geometry)
    # grid_sample's coordinates (align_corners=False) of map position (px + dx + 0.5) / s - 0.5: 2 (px + dx + 0.5) / (s w) - 1
    normalised = torch.stack([(px + dx + 0.5) * (2.0 / (s * w_e)) - 1.0, (py + dy + 0.5) * (2.0 / (s * h_e)) - 1.0],
                             dim=-1)
    result, start = [], 0
    for m in maps:
        h, w = m.shape[-2:]
        end = start + h * w
        where = normalised[start:end].reshape(1, h, w, 2).expand(m.shape[0], h, w, 2)
        result.append(F.grid_sample(m, where, mode="bicubic", padding_mode="border", align_corners=False))
        start = end
    return result


def warp_state(state: Mapping[str, torch.Tensor], targets: Sequence[WarpTarget], values: torch.Tensor,
               width: int, height: int, grid: int, *, exact: bool = True) -> dict[str, torch.Tensor]:
    """name -> each target of ``state`` resampled through the warp ``values`` (differentiable;
    computed in ``values``' dtype and device). ``exact=False`` uses torch's grid_sample (the same
    interpolation up to rounding, several times faster: for training)."""
    dtype, device = values.dtype, values.device
    out = {}
    batch: dict[tuple, list[tuple[str, torch.Tensor, float]]] = {}  # exact maps, grouped by leading dims
    for target in targets:
        tensor = state[target.name].to(device=device, dtype=dtype)
        if target.kind == "coords":
            field = tensor.t().reshape(2, height, width)
            xs, ys, *_, geometry = _concatenated_positions(((height, width, 1.0),), dtype, device,
                                                           (width, height, grid))  # pixel centres
            dx, dy = displacement(values, xs, ys, width, height, grid, geometry)
            xs, ys, dx, dy = (a.reshape(height, width) for a in (xs, ys, dx, dy))
            if exact:
                moved = sample_coords(field, xs + dx, ys + dy)
            else:
                u, v = xs + dx, ys + dy
                uc, vc = u.clamp(0, width - 1), v.clamp(0, height - 1)
                moved = _grid_sample(field.unsqueeze(0), uc, vc, "bilinear")[0]
                slope_x = (field[:, :, -1] - field[:, :, 0]).mean(dim=1) / max(width - 1, 1)
                slope_y = (field[:, -1, :] - field[:, 0, :]).mean(dim=1) / max(height - 1, 1)
                moved = moved + slope_x.reshape(2, 1, 1) * (u - uc) + slope_y.reshape(2, 1, 1) * (v - vc)
            out[target.name] = moved.reshape(2, -1).t()
        else:
            batch.setdefault(tuple(tensor.shape[:-2]), []).append((target.name, tensor, float(target.stride)))
    sample = _sample_maps_exact if exact else _sample_maps_fast
    for group in batch.values():
        moved = sample([t for _, t, _ in group], [s for _, _, s in group], values, width, height, grid)
        out.update({name: m for (name, _, _), m in zip(group, moved, strict=True)})
    return {t.name: out[t.name] for t in targets}


def exact_warp(state: Mapping[str, torch.Tensor], targets: Sequence[WarpTarget], values: np.ndarray,
               width: int, height: int, grid: int) -> dict[str, torch.Tensor]:
    """The decoder's warp: float32 on the CPU, gathers and element-wise operations only, in a fixed
    order (see the module docstring)."""
    cpu = {t.name: state[t.name].detach().to("cpu", torch.float32) for t in targets}
    with torch.no_grad():
        values32 = torch.from_numpy(np.asarray(values, np.float64).astype(np.float32))
        moved = warp_state(cpu, targets, values32, width, height, grid)
    return {name: t.contiguous() for name, t in moved.items()}


class WarpField(nn.Module):
    """The trainable warp of one step, started from ``init`` (what :func:`~weightstep.stepping.motion.start_warp`
    chose: a motion estimate or the previous frame's decoded warp) or from the identity."""

    def __init__(self, grid: int, init: np.ndarray | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.grid = int(grid)
        start = np.zeros(warp_count(self.grid)) if init is None else np.asarray(init, np.float64)
        if start.shape != (warp_count(self.grid),):
            raise ValueError(f"warp init has shape {start.shape}, expected ({warp_count(self.grid)},)")
        self.values = nn.Parameter(torch.tensor(start, dtype=torch.float32, device=device))

    def apply(self, state: Mapping[str, torch.Tensor], targets: Sequence[WarpTarget], width: int,
              height: int) -> dict[str, torch.Tensor]:
        return warp_state(state, targets, self.values, width, height, self.grid, exact=False)



"""The warp's starting point (stepping/motion.py): a block-matching estimate that finds a known shift."""

import numpy as np
import torch
import torch.nn.functional as F

from weightstep.stepping.motion import estimate_warp, start_warp
from weightstep.stepping.warp import displacement, warp_count


def _texture(height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, height + 8, width + 8, generator=g)
    return F.avg_pool2d(noise, 3, stride=1)[..., 1:height + 1, 1:width + 1]  # smooth but textured


def predict(previous: torch.Tensor, values: np.ndarray, grid: int) -> torch.Tensor:
    """``previous`` (1, 3, H, W) resampled through the warp ``values`` (bilinear, border clamped)."""
    frame = previous.detach().to("cpu", torch.float32)
    height, width = frame.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    dx, dy = displacement(torch.as_tensor(values, dtype=torch.float32), xs, ys, width, height, grid)
    u = ((xs + dx).clamp(0, width - 1) + 0.5) * (2.0 / width) - 1.0
    v = ((ys + dy).clamp(0, height - 1) + 0.5) * (2.0 / height) - 1.0
    return F.grid_sample(frame, torch.stack([u, v], dim=-1)[None], mode="bilinear", padding_mode="border",
                         align_corners=False)


def _shift(frame: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out(x, y) = frame(x + dx, y + dy), borders replicated."""
    h, w = frame.shape[-2:]
    padded = F.pad(frame, (6, 6, 6, 6), mode="replicate")
    return padded[..., 6 + dy:6 + dy + h, 6 + dx:6 + dx + w]


def test_a_uniform_shift_is_found_at_every_node():
    previous = _texture()
    target = _shift(previous, 3, -2)  # the target at p shows the previous frame at p + (3, -2)
    values = estimate_warp(previous, target, 4)
    assert values.shape == (warp_count(4),) and not values[:6].any()
    nodes = values[6:].reshape(2, 4, 4)
    assert np.allclose(nodes[0], 3.0, atol=0.05) and np.allclose(nodes[1], -2.0, atol=0.05)
    assert float((predict(previous, values, 4) - target).pow(2).mean()) < 1e-4


def test_grid_zero_estimates_a_global_translation():
    previous = _texture(seed=1)
    values = estimate_warp(previous, _shift(previous, -1, 2), 0)
    assert values.shape == (6,) and np.allclose(values[4:], [-1.0, 2.0], atol=0.05)


def test_a_still_frame_keeps_every_node_at_zero_and_the_previous_warp_can_win():
    previous = _texture(seed=2)
    assert not estimate_warp(previous, previous.clone(), 4).any()
    flat = torch.full((1, 3, 48, 64), 0.5)  # no texture: nothing to match, nothing moves
    assert not estimate_warp(flat, flat.clone(), 4).any()
    target = _shift(previous, 2, 0)
    last = np.zeros(warp_count(4))
    last[6:6 + 16] = 2.0  # the previous warp already holds this motion exactly

    def error(values):
        return float((predict(previous, values, 4) - target).pow(2).mean())

    values, source = start_warp(previous, target, 4, last, error)
    assert error(values) < 1e-4
    values, source = start_warp(previous, target, 4, None, error)  # from the identity, the estimate wins
    assert source == "estimate" and error(values) < 1e-4
    values, source = start_warp(previous, previous.clone(), 4, last, error)  # no motion found: the last warp stays
    assert source == "previous" and np.array_equal(values, last)

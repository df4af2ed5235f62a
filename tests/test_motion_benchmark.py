"""The motion benchmark (benchmarks/motion_prediction.py) measures what it says: on a frame whose content
moved by a known amount, block motion finds that vector and the codec's warp field follows the move."""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("motion_prediction", ROOT / "benchmarks" / "motion_prediction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texture(height: int, width: int) -> torch.Tensor:
    """A smooth random RGB picture (noise blurred twice), so sub-pixel shifts are well defined."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, height // 4, width // 4, generator=generator)
    return F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def test_block_motion_finds_a_known_shift():
    bench = _benchmark()
    big = _texture(64, 80)
    ref, target = big[:, 8:56, 8:72], big[:, 11:59, 6:70]  # target(p) = ref(p + (-2, 3))
    frame = bench.Frame(48, 64)
    quality, size, vectors = bench.block_prediction(frame, ref, target, 16, 4)
    inner = vectors[:, :2, 1:3]  # blocks whose displaced source lies inside the reference
    assert torch.equal(inner[0], torch.full_like(inner[0], -2.0))
    assert torch.equal(inner[1], torch.full_like(inner[1], 3.0))
    assert quality > bench.psnr(ref, target) + 10 and size > 0


def test_the_codecs_warp_follows_a_pan():
    bench = _benchmark()
    big = _texture(64, 80)
    ref, target = big[:, 8:56, 8:72], big[:, 9:57, 10:74]  # a pan of (2, 1) pixels
    frame = bench.Frame(48, 64)
    torch.manual_seed(0)
    fitted, coded, size = bench.smooth_prediction(frame, ref, target, 4, 60, 1e-3 / (48 * 64))
    assert coded > bench.psnr(ref, target) + 8 and fitted >= coded - 1.0 and size > 1

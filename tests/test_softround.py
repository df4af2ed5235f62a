"""Soft rounding (the grid anchor's training proxy) and the frame-scaled default anchor steps."""

import pytest
import torch

from weightstep.codecs.weightstep_config import FULL_STEPS_PIXELS, WeightStepConfig
from weightstep.inr.softround import latent_proxy, soft_round, temperature


def test_soft_round_keeps_integers_and_half_integers_and_tends_to_rounding():
    x = torch.linspace(-3.0, 3.0, 601)
    for t in (0.5, 0.1, 0.01):
        y = soft_round(x, t)
        assert torch.all(y[1:] >= y[:-1] - 1e-6)  # monotone
        ints = torch.arange(-3.0, 4.0)
        assert torch.allclose(soft_round(ints, t), ints, atol=1e-5)
        assert torch.allclose(soft_round(ints + 0.5, t), ints + 0.5, atol=1e-5)
    off_half = x[(x - torch.floor(x) - 0.5).abs() > 0.05]
    assert torch.allclose(soft_round(off_half, 0.005), torch.round(off_half), atol=1e-3)
    assert (soft_round(x, 50.0) - x).abs().max() < 1e-3  # hot: the identity


def test_temperature_anneals_from_start_to_end_and_the_proxy_has_gradients():
    assert temperature(0, 100) == 0.5 and abs(temperature(99, 100) - 0.01) < 1e-12
    assert temperature(10, 100) > temperature(50, 100) > temperature(90, 100)
    torch.manual_seed(0)
    x = torch.randn(64, requires_grad=True)
    seen, rated = latent_proxy(x, 0.2)
    (seen.sum() + rated.sum()).backward()
    assert x.grad is not None and torch.all(x.grad > 0)
    assert (rated - soft_round(x, 0.2)).abs().max() <= 0.5 + 1e-6  # uniform noise of width 1


def test_default_anchor_steps_scale_down_with_the_frame_on_a_cpu_only():
    grid, siren = WeightStepConfig(inr="grid"), WeightStepConfig(inr="siren")
    assert grid.steps() == 2000 and grid.steps(FULL_STEPS_PIXELS) == 2000 and siren.steps(176 * 144) == 800
    assert grid.steps(640 * 360) == 500 and siren.steps(640 * 360) == 200
    assert grid.steps(1920 * 1080) == 250 and siren.steps(3840 * 2160) == 100  # never below 1/8
    assert WeightStepConfig(inr="grid", anchor_steps=700).steps(1920 * 1080) == 700  # explicit wins
    assert grid.anchor_settings(True, 640 * 360).fit.steps == 500
    assert grid.anchor_settings(True, 640 * 360).qat_steps == 50  # a tenth for the grid
    assert siren.anchor_settings(True, 176 * 144).qat_steps == 160  # a fifth for the others
    assert WeightStepConfig(inr="grid", qat_steps=7).anchor_settings(True, 176 * 144).qat_steps == 7
    # a CUDA device fits every frame for the full steps (the scaling is a CPU-time compromise)
    assert grid.steps(1920 * 1080, "cuda") == 2000 and siren.steps(3840 * 2160, torch.device("cuda", 0)) == 800
    assert grid.steps(1920 * 1080, torch.device("cpu")) == 250
    assert grid.anchor_settings(True, 1920 * 1080, "cuda").fit.steps == 2000
    assert grid.anchor_settings(True, 1920 * 1080, "cuda").qat_steps == 200
    # the anchor's own lambda: the codec's (by default), scaled where steps follow it, never for an image
    half = WeightStepConfig(inr="grid", lam=2e-3, anchor_lambda_scale=0.5)
    assert half.anchor_settings(True).lam == pytest.approx(1e-3) and half.anchor_settings(True, stepped=False).lam == 2e-3
    assert grid.anchor_settings(True).lam == grid.lam and siren.anchor_settings(True).lam == siren.lam

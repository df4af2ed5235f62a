"""Anchor networks: shapes for odd sizes, hand-counted sizes, seeded fixed inputs, DIP skips, device."""

from __future__ import annotations

import pytest
import torch

from weightstep.device import device_label, resolve_device
from weightstep.errors import ConfigError, UnavailableError
from weightstep.inr import NetworkSpec, build_network, coordinate_grid, psnr_from_mse, reconstruction_loss
from weightstep.inr.dip import padded_size

torch.set_num_threads(1)

SPECS = {
    "siren": NetworkSpec("siren", width=16, depth=3),
    "fourier": NetworkSpec("fourier", width=16, depth=2, fourier_features=8),
    "dip": NetworkSpec("dip", dip_channels=8, dip_levels=3, dip_noise_channels=4),
}


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("size", [(36, 28), (33, 17), (1, 5)])
def test_output_shape_for_odd_sizes(kind, size):
    height, width = size
    model = build_network(SPECS[kind], height, width)
    with torch.no_grad():
        out = model()
    assert out.shape == (1, 3, height, width)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def siren_count(width: int, depth: int, in_features: int = 2) -> int:
    return (in_features * width + width) + (depth - 1) * (width * width + width) + (3 * width + 3)


@pytest.mark.parametrize(("width", "depth"), [(16, 3), (96, 4), (7, 1)])
def test_siren_parameter_count_by_hand(width, depth):
    model = build_network(NetworkSpec("siren", width=width, depth=depth), 8, 8)
    assert model.parameter_count() == siren_count(width, depth)
    assert build_network(NetworkSpec("siren", width=96, depth=4), 8, 8).parameter_count() == 28515


def test_fourier_parameter_count_by_hand():
    model = build_network(NetworkSpec("fourier", width=16, depth=2, fourier_features=8), 8, 8)
    assert model.parameter_count() == (16 * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3)


def test_siren_initialisation_bounds():
    model = build_network(NetworkSpec("siren", width=64, depth=3, hidden_omega=30.0), 4, 4)
    first, second = model.layers[0].weight, model.layers[1].weight
    assert first.abs().max() <= 1.0 / 2 and first.abs().max() > 0.4
    bound = (6.0 / 64) ** 0.5 / 30.0
    assert second.abs().max() <= bound and second.abs().max() > 0.9 * bound


def test_fixed_inputs_follow_the_seed():
    fourier = NetworkSpec("fourier", width=8, depth=1, fourier_features=16)
    a, b = build_network(fourier, 10, 12), build_network(fourier, 10, 12)
    other = build_network(NetworkSpec("fourier", width=8, depth=1, fourier_features=16, seed=1), 10, 12)
    assert torch.equal(a.B, b.B) and not torch.equal(a.B, other.B)
    assert abs(float(a.B.std()) - 10.0) < 5.0  # sigma

    dip = SPECS["dip"]
    c, d = build_network(dip, 20, 20), build_network(dip, 20, 20)
    other = build_network(NetworkSpec("dip", dip_channels=8, dip_levels=3, dip_noise_channels=4, seed=7), 20, 20)
    assert torch.equal(c.noise, d.noise) and not torch.equal(c.noise, other.noise)
    assert abs(float(c.noise.std()) - 0.1) < 0.01  # N(0, 1) * 0.1, the default
    uniform = build_network(NetworkSpec("dip", dip_levels=2, dip_noise="uniform"), 8, 8).noise
    assert 0.0 <= float(uniform.min()) and float(uniform.max()) < 0.1  # the paper's U(0, 0.1)
    with torch.no_grad():
        assert torch.equal(c(), d())  # the initial weights follow the seed too


def test_fixed_inputs_are_buffers_not_parameters_nor_state():
    for kind, spec in SPECS.items():
        model = build_network(spec, 9, 11)
        names = [name for name, _ in model.named_parameters()]
        assert names == [name for name, _ in build_network(spec, 9, 11).named_parameters()]
        assert set(model.state_dict()) == set(names), kind
        assert not any(name in ("coords", "B", "noise") for name in names)


def test_dip_pads_noise_and_crops_output():
    model = build_network(SPECS["dip"], 33, 17)
    assert padded_size(33, 17, 3) == (40, 24)
    assert model.noise.shape == (1, 4, 40, 24)
    with torch.no_grad():
        full = model(model.noise)
    assert full.shape == (1, 3, 33, 17)


def test_dip_skips_change_parameter_count_exactly():
    channels, levels, skip = 8, 3, 4
    on = build_network(NetworkSpec("dip", dip_channels=channels, dip_levels=levels, dip_skip_channels=skip), 16, 16)
    off = build_network(NetworkSpec("dip", dip_channels=channels, dip_levels=levels, dip_skip_channels=skip,
                                    dip_skips=False), 16, 16)
    skip_convs = levels * (channels * skip + skip)
    wider_decoder = levels * (skip * channels * 9)
    assert on.parameter_count() - off.parameter_count() == skip_convs + wider_decoder
    assert len(on.skip) == levels and len(off.skip) == 0
    with torch.no_grad():
        assert off().shape == on().shape == (1, 3, 16, 16)


def test_chunked_query_matches_one_batch():
    for kind in ("siren", "fourier"):
        whole = build_network(SPECS[kind], 13, 11)
        chunked = build_network(SPECS[kind], 13, 11, chunk_size=16)
        with torch.no_grad():
            assert torch.allclose(whole(), chunked(), atol=1e-6)


def test_coordinate_grid_is_row_major_x_then_y():
    grid = coordinate_grid(2, 3)
    assert grid.shape == (6, 2)
    assert grid[:3, 0].tolist() == [-1.0, 0.0, 1.0] and grid[:3, 1].tolist() == [-1.0, -1.0, -1.0]
    assert grid[3:, 1].tolist() == [1.0, 1.0, 1.0]


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError):
        build_network(NetworkSpec("nope"), 8, 8)
    with pytest.raises(ConfigError):
        build_network(NetworkSpec("siren", width=0), 8, 8)
    with pytest.raises(ConfigError):
        build_network(NetworkSpec("siren"), 0, 8)


def test_losses_and_psnr():
    x = torch.rand(1, 3, 17, 9, generator=torch.Generator().manual_seed(0))
    assert float(reconstruction_loss(x, x, "mse")) == 0.0
    assert abs(float(reconstruction_loss(x, x, "l1ssim"))) < 1e-5
    assert float(reconstruction_loss(x, 1 - x, "l1ssim")) > 0.1
    assert abs(psnr_from_mse(0.01) - 20.0) < 1e-9 and psnr_from_mse(0.0) == float("inf")
    with pytest.raises(ConfigError):
        reconstruction_loss(x, x, "l3")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_label(torch.device("cpu")).startswith("cpu")
    with pytest.raises(ConfigError):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(UnavailableError, match="CUDA is not available"):
            resolve_device("cuda")

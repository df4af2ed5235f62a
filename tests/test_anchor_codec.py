"""The weight-step codec in image mode: a fitted, quantised, entropy-coded anchor network."""

import numpy as np
import pytest
import torch
from streams import container_layout
from typer.testing import CliRunner

from weightstep import registry
from weightstep.cli import app
from weightstep.codecs import harness
from weightstep.codecs.netcoding import mse, render, weights_of
from weightstep.coding.quantise import quantise
from weightstep.errors import BitstreamError
from weightstep.inr import FitConfig, fit_image
from weightstep.video import Video

QUICK = {"siren": {"inr": "siren", "width": "24", "depth": "2", "anchor_steps": "80", "anchor_lr": "5e-3"},
         "fourier": {"inr": "fourier", "width": "24", "depth": "2", "fourier_features": "32", "fourier_sigma": "3",
                     "anchor_steps": "80"},
         "dip": {"inr": "dip", "dip_channels": "8", "dip_levels": "2", "anchor_steps": "80"},
         "grid": {"inr": "grid", "grid_levels": "4", "grid_hidden": "8", "anchor_steps": "150", "lambda": "1e-5"}}


# Quality floors: mean - 3 sd of the coded PSNR over seeds 0-7 at the default lambda (1e-3), measured
# with the per-tensor steps: siren 30.14 +- 2.30 (27.8 to 35.3), fourier 28.44 +- 1.03, dip 25.96 +- 1.57,
# grid 23.27 +- 0.78 dB (lambda 1e-5, 150 steps). A tiny fit's quality moves that much with its seed, so
# one seed cannot be held tighter here; tests/test_rd_pins.py pins seed-averaged figures.
FLOORS = {"siren": 23.2, "fourier": 25.4, "dip": 21.2, "grid": 20.9}


def smooth_frame(size=32):
    """Gradients and a soft disc: the kind of content a tiny network can learn in a few dozen steps."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    disc = 1.0 / (1.0 + np.exp(((xx - 0.6) ** 2 + (yy - 0.4) ** 2 - 0.06) * 80))
    rgb = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy * disc, 0.8 - 0.6 * xx * yy]).astype(np.float32)
    return Video(identity="test:smooth", fps=25.0, rgb_frames=rgb[None])


def mean_colour_psnr(video):
    rgb = video.rgb()
    return 10 * np.log10(1.0 / np.mean((rgb - rgb.mean(axis=(2, 3), keepdims=True)) ** 2))


@pytest.fixture(scope="module")
def frame():
    return smooth_frame()


@pytest.mark.parametrize("inr", ["siren", "fourier", "dip", "grid"])
def test_decode_reproduces_the_encoder_reconstruction_exactly(inr, frame, tmp_path):
    codec = registry.create("weightstep", {"device": "cpu", **QUICK[inr]})
    result = harness.run(codec, frame, tmp_path / "a.wsv")
    decoded = codec.decode((tmp_path / "a.wsv").read_bytes())
    assert np.array_equal(decoded.rgb()[0], codec.reconstruction[0].numpy())
    layout = container_layout((tmp_path / "a.wsv").read_bytes())
    # the rate is the elementary stream; the file adds the metadata (the full settings) and a CRC
    assert result.file_bytes == (tmp_path / "a.wsv").stat().st_size == layout.end
    assert result.bytes == layout.stream < result.file_bytes and [tag for tag, _ in layout.sections] == ["ANCH"]
    assert result.per_frame[0]["bits"] == 8 * (layout.preamble + layout.section_bytes(0))
    anchor = result.extra["anchor"]
    coded = anchor["weight_bytes"] + anchor.get("latent_bytes", 0)  # a grid section adds a varint length
    assert layout.sections[0][1] - coded == (0 if inr != "grid" else 1 + (anchor["weight_bytes"] > 127))
    anchor = result.extra["anchor"]
    assert anchor["parameters"] > 0 and anchor["coded_psnr"] == pytest.approx(result.psnr_rgb, abs=1e-3)
    assert result.psnr_rgb > FLOORS[inr] > mean_colour_psnr(frame) + 3  # the mean colour gives 17.3 dB


def test_a_fresh_codec_instance_decodes_the_same_frame(frame):
    params = {"device": "cpu", **QUICK["siren"]}
    encoder = registry.create("weightstep", params)
    data = encoder.encode(frame).data
    other = harness.decode_bytes(data, device="cpu")[1]  # configured from the file alone, on the CPU it
    assert container_layout(data).meta["encoded_on"] == "cpu"  # was encoded on: exact match promised
    assert np.array_equal(other.rgb()[0], encoder.reconstruction[0].numpy())


def test_finer_quantisation_never_lowers_psnr_on_a_fixed_network(frame):
    codec = registry.create("weightstep", {"device": "cpu", **QUICK["siren"]})
    net = codec._network(32, 32)
    target = torch.from_numpy(frame.rgb()[:1])
    fit_image(net, target, FitConfig(steps=80, lr=2e-3), progress=False)
    weights = weights_of(net)
    errors = []
    for rel in (2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -10):
        q = {k: quantise(v, rel, per_channel=True).dequantise() for k, v in weights.items()}
        errors.append(mse(render(net, q), target))
    assert all(b <= a for a, b in zip(errors, errors[1:], strict=False)), errors


def test_lambda_trades_rate_for_quality(frame):
    base = {"device": "cpu", **QUICK["siren"], "anchor_steps": "80"}
    cheap = harness.run(registry.create("weightstep", {**base, "q_lambda": "1e-1"}), frame)
    rich = harness.run(registry.create("weightstep", {**base, "q_lambda": "1e-6"}), frame)
    assert cheap.bytes < rich.bytes and cheap.psnr_rgb <= rich.psnr_rgb


def test_quantisation_aware_finetune_keeps_the_closed_loop(frame):
    codec = registry.create("weightstep", {"device": "cpu", **QUICK["siren"], "qat_steps": "10"})
    data = codec.encode(frame).data
    assert np.array_equal(codec.decode(data).rgb()[0], codec.reconstruction[0].numpy())


def test_damaged_files_are_refused(frame, tmp_path):
    codec = registry.create("weightstep", {"device": "cpu", **QUICK["siren"]})
    data = codec.encode(frame).data
    rng = np.random.default_rng(7)
    for _ in range(40):
        cut = int(rng.integers(0, len(data)))
        with pytest.raises(BitstreamError):
            codec.decode(data[:cut])
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            harness.decode_bytes(bytes(flipped))
    runner = CliRunner()
    bad = tmp_path / "bad.wsv"
    bad.write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["decode", str(bad), "-o", str(tmp_path / "out.y4m")])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.y4m").exists()

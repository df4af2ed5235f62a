"""Where files decode: `decode` and `eval` take --device, files record where they were encoded.

Exact reproduction of the encoder's frames is promised on the kind of device a file was encoded
on (floating-point kernels differ between CPU and GPU); every bit-exact test in this suite
encodes on the CPU and decodes with ``device="cpu"``, and says so.
"""

import json

import numpy as np
import pytest
import torch
from clips import moving_clip
from streams import container_layout
from typer.testing import CliRunner

from weightstep import registry
from weightstep.cli import app
from weightstep.codecs import harness
from weightstep.device import stream_device
from weightstep.errors import ConfigError, UnavailableError

TINY = {"inr": "siren", "width": "12", "depth": "2", "anchor_steps": "10", "device": "cpu"}


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    clip = moving_clip(frames=1, size=16)
    codec = registry.create("weightstep", TINY)
    path = tmp_path_factory.mktemp("device") / "a.wsv"
    harness.run(codec, clip, path)
    return clip, codec, path


def test_the_file_records_where_it_was_encoded(coded):
    _, _, path = coded
    assert stream_device("cpu") == "cpu"
    assert container_layout(path.read_bytes()).meta["encoded_on"] == "cpu"


def test_identify_keeps_the_device_it_is_given(coded):
    _, codec, path = coded
    data = path.read_bytes()
    on_cpu, _ = harness.identify(data, device="cpu")
    assert on_cpu.config.device == "cpu" and on_cpu.device == torch.device("cpu")
    assert harness.identify(data)[0].config.device == "auto"  # the default: CUDA when present
    assert {k: v for k, v in on_cpu.config.__dict__.items() if k != "device"} == \
        {k: v for k, v in codec.config.__dict__.items() if k != "device"}  # everything else from the file
    with pytest.raises(ConfigError):
        harness.identify(data, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UnavailableError):
            harness.identify(data, device="cuda")


def test_evaluate_reports_both_devices(coded):
    clip, codec, path = coded
    result = harness.evaluate(path.read_bytes(), clip, device="cpu")
    assert result.device.startswith("cpu") and result.extra["encoded_on"] == "cpu"
    decoded = harness.decode_bytes(path.read_bytes(), device="cpu")[1]  # same kind as the encoder: exact
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())


def test_cli_decode_and_eval_take_a_device(coded, tmp_path):
    clip, _, path = coded
    runner = CliRunner()
    dec = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "d.y4m"), "--device", "cpu"])
    assert dec.exit_code == 0, dec.output
    bad = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "e.y4m"), "--device", "abacus"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "abacus" in bad.stderr
    assert not (tmp_path / "e.y4m").exists()
    if not torch.cuda.is_available():
        gpu = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "g.y4m"), "--device", "cuda"])
        assert gpu.exit_code == 2 and "CUDA is not available" in gpu.stderr


def test_cli_eval_device_on_a_real_source(tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.wsv"
    video = ["synthetic:testsrc2", "--frames", "1", "--downscale", "8"]
    params = ["-p", "width=8", "-p", "depth=1", "-p", "anchor_steps=5", "-p", "device=cpu"]
    enc = runner.invoke(app, ["encode", *video, "-c", "weightstep", *params, "-o", str(out), "--json"])
    assert enc.exit_code == 0, enc.output
    ev = runner.invoke(app, ["eval", str(out), *video, "--device", "cpu", "--json"])
    assert ev.exit_code == 0, ev.output
    record, again = json.loads(enc.stdout), json.loads(ev.stdout)
    assert again["device"].startswith("cpu") and again["extra"]["encoded_on"] == "cpu"
    assert again["psnr_rgb"] == record["psnr_rgb"]  # same device kind: the very same frames

"""Shared by the DVC and VCII tests: tiny checkpoints trained in a few steps, CLI helpers."""

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from baselines.neuralvc.codec import recon_digest
from weightstep import registry
from weightstep.cli import app
from weightstep.coding.container import Container
from weightstep.errors import BitstreamError

CLIP = ["synthetic:testsrc2", "--frames", "4", "--downscale", "2"]  # 88x72: padded to the networks' strides


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, needle):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]


def train_tiny(kind: str, folder: Path, steps: int = 3) -> Path:
    path = folder / f"{kind}.ckpt"
    result = invoke("train", kind, "synthetic:testsrc2", "-o", path, "--steps", steps, "--size", "tiny",
                    "--crop", 64, "--batch", 1, "--max-frames", 13, "--device", "cpu", "--checkpoint-every", 2)
    assert result.exit_code == 0, result.output
    return path


def check_stream_settings(kind: str, path: Path, result: dict, ckpt: Path, carried: dict, padded: list[int]):
    """The stream carries only what its decoder reads; the decoder takes its settings from the
    stream, not from its own config; a format-1 header still decodes; other weights are refused."""
    data = path.read_bytes()
    container = Container.from_bytes(data)
    header = container.header
    assert header["config"] == carried and header["format"] == 2
    assert "weights" not in header and "padded" not in header and str(ckpt) not in json.dumps(header)
    assert container.meta["weights"] == result["extra"]["weights"]
    assert container.meta["config"]["checkpoint"] == str(ckpt)
    md5 = result["extra"]["reconstruction_md5"]
    plain = registry.create(kind, {"checkpoint": str(ckpt), "gop": 2})  # not the stream's: its own are ignored
    assert recon_digest(plain.decode(data).rgb()) == md5
    old = {k: v for k, v in header.items() if k not in ("defaults", "format")}
    old.update(config=container.meta["config"], weights=container.meta["weights"], padded=padded)
    assert recon_digest(plain.decode(Container(kind, old, container.sections).to_bytes()).rgb()) == md5
    with pytest.raises(BitstreamError, match="padding"):
        plain.decode(Container(kind, {**old, "padded": [padded[0] + 16, padded[1]]}, container.sections).to_bytes())
    aliases = getattr(plain.Config, "aliases", {})
    ignored = {name: "elsewhere" for name in (*plain.ENCODER_ONLY, *aliases)}  # encoder-only, by name or alias
    codec = plain.for_stream({**header, "config": {**header["config"], **ignored}})
    assert dataclasses.asdict(codec.config) == {**dataclasses.asdict(plain.config), **carried}
    container.meta["weights"] = "0" * 64
    with pytest.raises(BitstreamError, match="give the checkpoint it was made with"):
        plain.decode(container.to_bytes())

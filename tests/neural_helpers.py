"""Shared by the DVC and VCII tests: tiny checkpoints trained in a few steps, CLI helpers."""

from pathlib import Path

from typer.testing import CliRunner

from weightstep.cli import app

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

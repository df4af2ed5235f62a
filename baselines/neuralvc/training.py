"""Entry points of ``weightstep train`` and ``weightstep convert`` for the neural baselines (no parsing here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from baselines.neuralvc.checkpoint import save_record
from baselines.neuralvc.trainloop import TrainSettings, TrainSummary, train
from weightstep.errors import ConfigError, InputError

KINDS = ("dvc", "vcii")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown neural codec {kind!r}; trainable: {', '.join(KINDS)}")


def trainer(kind: str):
    _check_kind(kind)
    if kind == "dvc":
        from baselines.dvc.train import DvcTrainer

        return DvcTrainer()
    from baselines.vcii.train import VciiTrainer

    return VciiTrainer()


def train_kind(kind: str, inputs: list[str], out: str | Path, *, resume: bool = False,
               echo: Callable[[str], None] | None = None, **settings) -> TrainSummary:
    if not inputs:
        raise InputError("give at least one training input")
    return train(trainer(kind), inputs, out, TrainSettings(**settings), resume=resume, echo=echo)


def convert_kind(kind: str, sources: list[str], out: str | Path, *, lam: float | None = None) -> None:
    _check_kind(kind)
    if lam is not None and not lam > 0:
        raise ConfigError(f"lambda must be positive, got {lam}")
    out = Path(out)
    if kind == "dvc":
        from baselines.dvc.convert import convert_file

        if len(sources) != 1:
            raise InputError(f"convert dvc takes one state-dict file, got {len(sources)}")
        record = convert_file(sources[0], lam)
    else:
        from baselines.vcii.convert import convert_files

        record = convert_files(sources, lam)
    save_record(record, out)

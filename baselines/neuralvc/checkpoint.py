"""Checkpoints of the neural baselines: our record format, safe loading, and strict matching.

A checkpoint we write is one ``torch.save`` of a dict holding only tensors and plain values
(nothing pickled but those), loaded back with ``torch.load(..., weights_only=True)``::

    format        "weightstep-checkpoint"
    version       1
    codec         "dvc" or "vcii"
    architecture  {name: int | list}       the network's sizes (the codec rebuilds it from these)
    lambda        float | None             the rate-distortion weight it was trained at
    steps         int                      optimiser steps taken
    data          [str]                    what it was trained on (inputs as given)
    source        str                      "trained by weightstep train" or "converted from <layout>: <files>"
    state_dict    {key: tensor}            the weights
    optimizer     {...} | None             the optimiser's state, for --resume
    seed          int

A file that holds pickled code or objects is refused by ``weights_only``; a state dict that
does not fit the architecture is refused naming the first key that is missing, unexpected or
of another shape. All failures are :class:`~weightstep.errors.InputError` (one line, exit 2).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightstep.errors import InputError
from weightstep.fileio import atomic_write_bytes

FORMAT = "weightstep-checkpoint"
VERSION = 1


def load_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; every failure is one InputError line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p}: no such file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported object"
        raise InputError(f"{what} {p} is refused: it holds pickled objects other than tensors and plain values, "
                         f"which are never loaded (weights_only; {first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} {p} cannot be read as a PyTorch file ({first[:160]})") from None


def _shape(t: Any) -> str:
    return "x".join(map(str, tuple(t.shape))) if isinstance(t, torch.Tensor) else type(t).__name__


def check_state_dict(expected: dict[str, torch.Tensor], given: dict[str, Any], source: str) -> None:
    """Refuse ``given`` unless it has exactly ``expected``'s keys with the same shapes (first mismatch named)."""
    if not isinstance(given, dict):
        raise InputError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(given).__name__}")
    for key, tensor in expected.items():
        if key not in given:
            raise InputError(f"{source} does not match the architecture: key {key!r} (shape {_shape(tensor)}) is missing")
        value = given[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(tensor.shape):
            raise InputError(f"{source} does not match the architecture: key {key!r} has shape {_shape(value)}, "
                             f"expected {_shape(tensor)}")
    for key, value in given.items():
        if key not in expected:
            raise InputError(f"{source} does not match the architecture: unexpected key {key!r} (shape {_shape(value)})")


def load_into(model: nn.Module, state: dict[str, Any], source: str) -> None:
    check_state_dict(model.state_dict(), state, source)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short digest of the weights: a bitstream names it so a decoder refuses other weights."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def make_record(codec: str, architecture: dict[str, Any], state: dict[str, torch.Tensor], *, lam: float | None,
                steps: int, data: list[str], source: str, optimizer: dict | None = None, seed: int = 0) -> dict:
    return {"format": FORMAT, "version": VERSION, "codec": codec, "architecture": dict(architecture),
            "lambda": None if lam is None else float(lam), "steps": int(steps), "data": [str(d) for d in data],
            "source": source, "state_dict": {k: v.detach().to("cpu").clone() for k, v in state.items()},
            "optimizer": optimizer, "seed": int(seed)}


def save_record(record: dict, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-save never leaves half a checkpoint at ``path``."""
    import io

    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_record(path: str | os.PathLike, codec: str) -> dict:
    """Load and check one of our checkpoints for ``codec`` (not yet matched against a network)."""
    record = load_file(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        hint = ""
        if isinstance(record, dict) and record and all(isinstance(k, str) for k in record):
            hint = f" (a bare state dict? convert it first: weightstep convert {codec} FILE -o CKPT)"
        raise InputError(f"{path} is not a weightstep checkpoint{hint}")
    if record.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint version {record.get('version')!r} is not supported (this build reads {VERSION})")
    if record.get("codec") != codec:
        raise InputError(f"{path} is a checkpoint for {record.get('codec')!r}, not {codec!r}")
    for key, types in (("architecture", dict), ("state_dict", dict), ("steps", int), ("data", list)):
        if not isinstance(record.get(key), types):
            raise InputError(f"{path}: checkpoint field {key!r} is missing or of the wrong type")
    return record

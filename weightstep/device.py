"""Choosing the torch device: ``--device auto`` means CUDA when present, else CPU.

Library code calls :func:`resolve_device` with the user's string; asking for a device this
machine does not have is an :class:`~weightstep.errors.UnavailableError` (one clear line),
a name torch does not know is a :class:`~weightstep.errors.ConfigError`.
"""

from __future__ import annotations

import torch

from weightstep.errors import ConfigError, UnavailableError


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` -> ``cuda`` when available else ``cpu``; ``'cpu'``, ``'cuda'``, ``'cuda:N'`` as asked."""
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableError(f"device {name!r} was asked for but CUDA is not available on this "
                                   "machine (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UnavailableError(f"device {name!r} was asked for but this machine has {count} CUDA "
                                   f"device(s) (cuda:0..cuda:{count - 1})")
        return device
    raise ConfigError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")


def device_label(device: torch.device | str) -> str:
    """A short human description for reports, e.g. ``'cpu (2 threads)'`` or ``'cuda:0 (NVIDIA H100)'``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def stream_device(device: torch.device | str) -> str:
    """What a file records as the device it was encoded on: ``'cpu'`` or ``'cuda (GPU name)'``.

    Float results (a rendered frame) are reproducible bit for bit only on the same kind of
    device: a decoder compares this with :func:`stream_device` of its own device before
    promising an exact match. Thread counts are left out: they do not change the results.
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda ({torch.cuda.get_device_name(index)})"
    return device.type

"""Writing files so that nothing half-written is ever left at the output path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from weightstep.errors import InputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target}: is a directory, expected a file path")
    if not target.parent.exists():
        raise InputError(f"{target.parent}: output directory does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file, turning OS errors into one clear InputError."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None

"""Writing files so that nothing half-written is ever left at the output path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from weightstep.errors import InputError


def check_output_path(path: str | os.PathLike, *, folder_ok: bool = False) -> Path:
    """The one rule for every output path the user names (encode -o, decode -o): its folder must already
    exist and be writable; it is never created (a run folder's own subfolders are the runner's to make).
    ``folder_ok``: ``path`` may itself be a (new or existing) folder.

    Raises InputError with one line; returns ``path`` as a Path.
    """
    target = Path(os.fspath(path)).expanduser()
    if target.is_dir() and not folder_ok:
        raise InputError(f"{target}: is a directory, expected a file path")
    parent = target.parent
    if not parent.exists():
        raise InputError(f"{parent}: output folder does not exist (create it first)")
    if not parent.is_dir():
        raise InputError(f"{parent}: is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: output folder is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{target}: exists and is not writable")
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    target = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
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

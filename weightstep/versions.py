"""Versions of everything a measurement depends on, recorded in every Result."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("weightstep", "torch", "av", "numpy", "scipy", "constriction", "pytorch-msssim"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        import av

        for lib, version in av.library_versions.items():
            out[lib] = ".".join(map(str, version))
    except ImportError:
        pass
    return out

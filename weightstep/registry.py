"""The one map from codec name to codec class, for weightstep's own codecs and the baselines.

Entries are import paths so that listing names does not import torch or PyAV.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from weightstep.codecs.base import Codec
from weightstep.config import build
from weightstep.errors import ConfigError

_CODECS: dict[str, str] = {
    "weightstep": "weightstep.codecs.weightstep_codec:WeightStepCodec",
    "x264": "baselines.conventional:X264",
    "x265": "baselines.conventional:X265",
    "svtav1": "baselines.conventional:SvtAv1",
    "vp9": "baselines.conventional:Vp9",
    "full-mlp": "baselines.full_mlp:FullMlpCodec",
    "full-cnn": "baselines.full_cnn:FullCnnCodec",
    "nerv": "baselines.nerv:NervCodec",
    "dvc": "baselines.dvc.codec:DvcCodec",
    "vcii": "baselines.vcii.codec:VciiCodec",
}

# Codecs outside this package: WEIGHTSTEP_CODECS="name=module:Class,other=pkg.mod:Other". Read at each
# call, so that processes started later (pool workers, Ray workers) see the same map as the driver.
PLUGINS_ENV = "WEIGHTSTEP_CODECS"
_PLUGIN = re.compile(r"\s*([A-Za-z0-9_.+-]+)\s*=\s*([A-Za-z_][\w.]*:[A-Za-z_]\w*)\s*")


def _all() -> dict[str, str]:
    codecs = dict(_CODECS)
    text = os.environ.get(PLUGINS_ENV, "").strip()
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _PLUGIN.fullmatch(entry)
        if match is None:
            raise ConfigError(f"{PLUGINS_ENV}: {entry!r} is not name=module:Class")
        codecs.setdefault(match.group(1), match.group(2))
    return codecs


def names() -> list[str]:
    return list(_all())


def codec_class(name: str) -> type[Codec]:
    codecs = _all()
    try:
        target = codecs[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}; available: {', '.join(codecs)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create(name: str, params: dict[str, Any] | None = None, *, where: str = "") -> Codec:
    """A codec instance with its config built from ``params`` (strings or TOML values)."""
    cls = codec_class(name)
    return cls(build(cls.Config, params or {}, where=where or f"codec {name}"))

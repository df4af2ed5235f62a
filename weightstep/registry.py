"""The one map from codec name to codec class, for weightstep's own codecs and the baselines.

Entries are import paths so that listing names does not import torch or PyAV.
"""

from __future__ import annotations

import importlib
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


def names() -> list[str]:
    return list(_CODECS)


def codec_class(name: str) -> type[Codec]:
    try:
        target = _CODECS[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}; available: {', '.join(_CODECS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create(name: str, params: dict[str, Any] | None = None, *, where: str = "") -> Codec:
    """A codec instance with its config built from ``params`` (strings or TOML values)."""
    cls = codec_class(name)
    return cls(build(cls.Config, params or {}, where=where or f"codec {name}"))

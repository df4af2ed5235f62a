"""Frozen-dataclass configs: declaring fields with a reason, parsing ``-p key=value`` and TOML tables.

Every codec config is a frozen dataclass whose fields are made with :func:`param`, which stores
why the field exists; ``weightstep codecs`` prints that text. Parsing checks names against the
dataclass (an unknown key names the valid ones) and converts strings to the field's type.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from weightstep.errors import ConfigError


def param(default: Any, why: str, *, choices: tuple | None = None, low: float | None = None,
          high: float | None = None) -> Any:
    """A config field with its reason and optional bounds, checked by :func:`validate`."""
    meta = {"why": why, "choices": choices, "low": low, "high": high}
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...]; return (type, allows_none)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _convert(name: str, tp: Any, raw: Any) -> Any:
    tp, optional = _base_type(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", ""))):
        return None
    if typing.get_origin(tp) is Literal:
        allowed = typing.get_args(tp)
        value = raw if not isinstance(raw, str) else raw
        if isinstance(raw, str) and all(isinstance(a, int) for a in allowed):
            try:
                value = int(raw)
            except ValueError:
                pass
        if value not in allowed:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(map(str, allowed))}")
        return value
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw) if not isinstance(raw, str) else int(raw.strip(), 0)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if tp is str:
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not a valid {tp.__name__}") from None
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


def validate(config: Any) -> None:
    """Check every field against the bounds declared with :func:`param`. Raises ConfigError."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        meta = f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value} is not a finite number")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{f.name}={value!r} is not one of {', '.join(map(str, meta['choices']))}")
        if meta.get("low") is not None and value < meta["low"]:
            raise ConfigError(f"{f.name}={value} is out of range (minimum {meta['low']})")
        if meta.get("high") is not None and value > meta["high"]:
            raise ConfigError(f"{f.name}={value} is out of range (maximum {meta['high']})")


def build(cls: type, values: dict[str, Any], *, where: str = "") -> Any:
    """Make ``cls`` from a mapping of names to strings or TOML values; unknown names are refused."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    aliases = getattr(cls, "aliases", {})  # e.g. {"lambda": "lam"} for names Python reserves
    kwargs = {}
    for key, raw in values.items():
        key = aliases.get(key, key)
        if key not in names:
            place = f" in {where}" if where else ""
            raise ConfigError(f"unknown parameter {key!r}{place}; valid: {', '.join(names)}")
        kwargs[key] = _convert(key, hints[key], raw)
    config = cls(**kwargs)
    validate(config)
    return config


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Turn ``["crf=23", "preset=slow"]`` into a dict; a malformed item is a ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Every field of a config, defaults included (what the Result record stores)."""
    return dataclasses.asdict(config)


def describe_fields(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and reason of each field, for ``weightstep codecs``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp, optional = _base_type(hints[f.name])
        if typing.get_origin(tp) is Literal:
            type_name = "|".join(map(str, typing.get_args(tp)))
        else:
            type_name = getattr(tp, "__name__", str(tp))
        if optional:
            type_name += "|none"
        meta = f.metadata
        bounds = ""
        if meta.get("low") is not None or meta.get("high") is not None:
            bounds = f"[{meta.get('low', '')}, {meta.get('high', '')}]"
        if meta.get("choices"):
            type_name = "|".join(map(str, meta["choices"]))
        alias = next((a for a, target in getattr(cls, "aliases", {}).items() if target == f.name), None)
        rows.append({"name": f"{alias} ({f.name})" if alias else f.name, "type": type_name, "default": f.default, "bounds": bounds,
                     "why": meta.get("why", "")})
    return rows

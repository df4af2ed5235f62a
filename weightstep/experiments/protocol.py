"""Protocol files: which videos, which techniques at which rate points, which seeds and metrics.

A protocol is a TOML file (schema: ``protocols/README.md``) parsed into the frozen dataclasses
below. Every table is checked key by key: an unknown key is a :class:`ConfigError` naming the
key, where it sits and the file, so a typo never silently drops a setting. Values are checked
for type and range here; whether a technique's parameters suit its codec is checked by
:func:`check_parameters` (and again for every job by the planner), because the protocol may
name codecs that are not registered on this machine yet.

Profiles (``[profiles.NAME]``) override the read options of datasets (downscale, frames,
crop...), so one protocol serves a 2-core CPU and a GPU machine: ``weightstep run core.toml
--profile cpu``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from itertools import product
from pathlib import Path
from typing import Any

from weightstep.config import build
from weightstep.errors import ConfigError, InputError, UnavailableError
from weightstep.experiments.specs import (
    BD_METHODS,
    DATA_ROOT_ENV,
    PROFILE_DATASET_KEYS,
    QUALITY_METRICS,
    READ_KEYS,
    DatasetSpec,
    Protocol,
    Resources,
    Scalar,
    TechniqueSpec,
    codec_class_or_reason,
    merged_params,
)

try:  # the standard library from Python 3.11; the same parser as the tomli package before that
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

# reading tables ------------------------------------------------------------------------------------

def _kind_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a table"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


class _Table:
    """One TOML table, with the file and the place in it for every message."""

    def __init__(self, data: Any, where: str, file: str):
        self.file, self.where = file, where
        if not isinstance(data, dict):
            self.fail(f"must be a table, got {type(data).__name__}")
        self.data = data

    def fail(self, message: str) -> None:
        raise ConfigError(f"{self.file}: {self.where}: {message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(f"unknown key {key!r}; valid keys: {', '.join(allowed)}")

    def _typed(self, key: str, value: Any, kind: type | tuple) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = False
        for k in kinds:
            if k is float and isinstance(value, int | float) and not isinstance(value, bool):
                ok = True
                value = float(value)
            elif k is int and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            elif k not in (int, float) and isinstance(value, k):
                ok = True
            if ok:
                break
        if not ok:
            self.fail(f"{key} = {value!r} must be {' or '.join(_kind_name(k) for k in kinds)}")
        return value

    def get(self, key: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                self.fail(f"the key {key!r} is required")
            return default
        return self._typed(key, self.data[key], kind)

    def get_list(self, key: str, kind: type | tuple, default: tuple = (), *, scalar_ok: bool = False,
                 nonempty: bool = False) -> tuple:
        """A list of ``kind`` (or, with ``scalar_ok``, one value standing for a list of one)."""
        if key not in self.data:
            return default
        value = self.data[key]
        if scalar_ok and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list):
            self.fail(f"{key} must be a list")
        if nonempty and not value:
            self.fail(f"{key} must not be empty")
        return tuple(self._typed(f"{key}[{i}]", item, kind) for i, item in enumerate(value))

    def get_scalars(self, key: str, value: Any, what: str) -> dict[str, Scalar]:
        """A table of codec parameters: names to strings, numbers or booleans."""
        if not isinstance(value, dict):
            self.fail(f"{what} must be a table of parameter = value")
        for name, item in value.items():
            if not isinstance(item, str | int | float | bool):
                self.fail(f"{what}: parameter {name!r} must be a string, number or boolean, "
                          f"got {type(item).__name__}")
        return dict(value)


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


# datasets -----------------------------------------------------------------------------------------

_DATASET_KEYS = tuple(f.name for f in fields(DatasetSpec))


def _read_values(table: _Table) -> dict[str, Any]:
    """The read-option keys of a dataset or profile table, type-checked."""
    values: dict[str, Any] = {}
    if "frames" in table.data:
        values["frames"] = table.get_list("frames", int, scalar_ok=True, nonempty=True)
        if any(f < 1 for f in values["frames"]):
            table.fail("frames must be 1 or more")
    if "start" in table.data:
        values["start"] = table.get_list("start", int, scalar_ok=True, nonempty=True)
        if any(s < 0 for s in values["start"]):
            table.fail("start must be 0 or more")
    for key, kind in (("crop", str), ("downscale", int), ("width", int), ("height", int), ("fps", float),
                      ("bit_depth", int), ("matrix", str), ("target_width", int), ("include", bool)):
        if key in table.data:
            values[key] = table.get(key, kind)
    if values.get("target_width") is not None and values["target_width"] < 2:
        table.fail("target_width must be 2 or more")
    return values


def _check_read_values(values: Mapping[str, Any], table: _Table) -> None:
    """Every combination of frames and start must make valid ReadOptions."""
    from weightstep.video.options import ReadOptions, parse_crop

    try:
        crop = parse_crop(values["crop"]) if values.get("crop") else None
        for frames, start in product(values.get("frames", (None,)), values.get("start", (0,))):
            ReadOptions(start=start, frames=frames, crop=crop, downscale=values.get("downscale", 1),
                        width=values.get("width"), height=values.get("height"), fps=values.get("fps"),
                        bit_depth=values.get("bit_depth"), matrix=values.get("matrix", "bt709"))
    except (ConfigError, InputError) as exc:
        table.fail(str(exc))


def _parse_dataset(data: Any, index: int, file: str) -> DatasetSpec:
    table = _Table(data, f"datasets[{index}]", file)
    name = table.get("name", str, required=True)
    table.where = f"dataset {name!r}"
    table.check_keys(_DATASET_KEYS)
    values = _read_values(table)
    _check_read_values(values, table)
    videos = table.get_list("videos", str)
    root = table.get("root", str)
    sequences = table.get_list("sequences", str)
    if sequences and root is None:
        table.fail("sequences need a root (a folder under the data root, or an absolute path)")
    if root is not None and not sequences:
        table.fail("root is given but no sequences (file names or glob patterns under it)")
    if not videos and not sequences:
        table.fail("give videos (paths, sample:NAME, synthetic:NAME) or a root with sequences")
    return DatasetSpec(name=name, videos=videos, root=root, sequences=sequences, **values)


# techniques ---------------------------------------------------------------------------------------

_TECHNIQUE_KEYS = ("label", "codec", "params", "rate_points", "vary", "description", "cpus", "gpus", "group",
                   "profiles", "seed_points")
_TECHNIQUE_PROFILE_KEYS = ("params", "vary")


def _variant_label(label: str, combo: Mapping[str, Scalar]) -> str:
    return label + " " + " ".join(f"{k}={v}" for k, v in combo.items())


def _profile_overrides(table: _Table, profiles: tuple[str, ...], profile: str | None) -> tuple[dict, dict]:
    """(params, vary) that the technique's ``profiles.NAME`` table sets for ``profile`` (checked for all)."""
    chosen: tuple[dict, dict] = ({}, {})
    raw = table.get("profiles", dict, {})
    for name, body in raw.items():
        if name not in profiles:
            table.fail(f"profiles.{name}: no [profiles.{name}] table defines that profile; "
                       f"profiles: {', '.join(profiles) or 'none'}")
        sub = _Table(body, f"{table.where}, profiles.{name}", table.file)
        sub.check_keys(_TECHNIQUE_PROFILE_KEYS)
        params = sub.get_scalars("params", sub.data.get("params", {}), "params")
        vary = sub.get("vary", dict, {})
        if name == profile:
            chosen = (params, vary)
    return chosen


def _seed_points(table: _Table, count: int | None) -> tuple[int, ...] | None:
    """``seed_points``: distinct rate-point indices (below ``count`` when it is known)."""
    if "seed_points" not in table.data:
        return None
    points = table.get_list("seed_points", int, nonempty=True)
    if len(set(points)) != len(points) or any(p < 0 or (count is not None and p >= count) for p in points):
        table.fail("seed_points must be distinct rate-point indices from 0" +
                   (f" to {count - 1}" if count is not None else ""))
    return points


def _parse_technique(data: Any, index: int, file: str, profiles: tuple[str, ...] = (),
                     profile: str | None = None) -> list[TechniqueSpec]:
    table = _Table(data, f"techniques[{index}]", file)
    label = table.get("label", str, required=True)
    table.where = f"technique {label!r}"
    table.check_keys(_TECHNIQUE_KEYS)
    codec = table.get("codec", str, required=True)
    params = table.get_scalars("params", table.data.get("params", {}), "params")
    profile_params, profile_vary = _profile_overrides(table, profiles, profile)
    params = {**params, **profile_params}
    points: tuple[dict[str, Scalar], ...] = ({},)
    if "rate_points" in table.data:
        raw = table.data["rate_points"]
        if not isinstance(raw, list) or not raw:
            table.fail("rate_points must be a non-empty list of tables, e.g. [{crf = 23}, {crf = 28}]")
        points = tuple(table.get_scalars("rate_points", p, f"rate_points[{i}]") for i, p in enumerate(raw))
        for i, point in enumerate(points):
            overlap = sorted(set(point) & set(params))
            if overlap:
                table.fail(f"rate_points[{i}] sets {', '.join(overlap)}, already fixed in params")
        if len({tuple(sorted(p.items())) for p in points}) != len(points):
            table.fail("rate_points has repeated parameter sets")
    description = table.get("description", str, "")
    group = table.get("group", str, "")
    seed_points = _seed_points(table, len(points))
    cpus, gpus = table.get("cpus", float, None), table.get("gpus", float, None)
    if (cpus is not None and not 0 < cpus < 1e6) or (gpus is not None and not 0 <= gpus < 1e6):
        table.fail("cpus must be > 0 and gpus >= 0")
    vary = {**table.get("vary", dict, {}), **profile_vary}
    if not vary:
        return [TechniqueSpec(label=label, codec=codec, params=params, rate_points=points,
                              description=description, cpus=cpus, gpus=gpus, group=group, seed_points=seed_points)]
    lists: dict[str, list] = {}
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            table.fail(f"vary.{key} must be a non-empty list of values")
        for value in values:
            if not isinstance(value, str | int | float | bool):
                table.fail(f"vary.{key}: {value!r} must be a string, number or boolean")
        if key in params or any(key in p for p in points):
            table.fail(f"vary.{key} is also set in params or rate_points")
        lists[key] = values
    out = []
    for combo_values in product(*lists.values()):
        combo = dict(zip(lists, combo_values, strict=True))
        out.append(TechniqueSpec(label=_variant_label(label, combo), codec=codec, params={**params, **combo},
                                 rate_points=points, description=description, cpus=cpus, gpus=gpus, group=group,
                                 seed_points=seed_points, variant_of=label))
    return out


# profiles -----------------------------------------------------------------------------------------

def _parse_profiles(data: Any, datasets: tuple[DatasetSpec, ...], file: str) -> dict[str, dict[str, dict]]:
    table = _Table(data, "profiles", file)
    names = {d.name for d in datasets}
    out: dict[str, dict[str, dict]] = {}
    for profile, body in table.data.items():
        entries = _Table(body, f"profile {profile!r}", file)
        for target in entries.data:
            if target != "*" and target not in names:
                entries.fail(f"unknown dataset {target!r}; datasets: {', '.join(sorted(names))} (or \"*\" for all)")
        parsed = {}
        for target, overrides in entries.data.items():
            sub = _Table(overrides, f"profile {profile!r}, {target!r}", file)
            sub.check_keys(PROFILE_DATASET_KEYS)
            parsed[target] = _read_values(sub)
        out[profile] = parsed
    return out


def _apply_profile(protocol: Protocol, name: str) -> Protocol:
    profiles = protocol.profiles or {}
    if name not in profiles:
        known = ", ".join(profiles) or "none"
        raise ConfigError(f"{protocol.path}: no profile {name!r}; profiles: {known}")
    datasets = []
    for dataset in protocol.datasets:
        overrides = {**profiles[name].get("*", {}), **profiles[name].get(dataset.name, {})}
        changed = replace(dataset, **overrides)
        table = _Table({}, f"dataset {dataset.name!r} with profile {name!r}", protocol.path)
        _check_read_values({k: getattr(changed, k) for k in READ_KEYS}, table)
        datasets.append(changed)
    return replace(protocol, datasets=tuple(datasets), profile=name)


# the file -----------------------------------------------------------------------------------------

_TOP_KEYS = ("name", "description", "data_root", "seeds", "seed_points", "metrics", "anchor", "also_against",
             "bd_interpolation",
             "datasets", "techniques", "resources", "profiles")


def parse_protocol(text: str, path: str = "<protocol>", *, profile: str | None = None,
                   data_root: str | os.PathLike | None = None) -> Protocol:
    """Parse protocol ``text`` (``path`` names it in messages and anchors relative paths).

    ``data_root`` (the command line's ``--data-root``) wins over the file's ``data_root``, which
    wins over the ``WEIGHTSTEP_DATA`` environment variable.
    """
    file = str(path)
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise UnavailableError("reading protocol files on Python 3.10 needs `pip install tomli`")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    top = _Table(data, "top level", file)
    top.check_keys(_TOP_KEYS)
    name = top.get("name", str) or Path(file).stem
    datasets_raw = data.get("datasets")
    if not isinstance(datasets_raw, list) or not datasets_raw:
        top.fail("needs at least one [[datasets]] table")
    techniques_raw = data.get("techniques")
    if not isinstance(techniques_raw, list) or not techniques_raw:
        top.fail("needs at least one [[techniques]] table")
    datasets = tuple(_parse_dataset(d, i, file) for i, d in enumerate(datasets_raw))
    if len({d.name for d in datasets}) != len(datasets):
        top.fail("dataset names must be unique")
    profiles = _parse_profiles(data.get("profiles", {}), datasets, file)
    if profile and profile not in profiles:
        raise ConfigError(f"{file}: no profile {profile!r}; profiles: {', '.join(profiles) or 'none'}")
    techniques = tuple(t for i, raw in enumerate(techniques_raw)
                       for t in _parse_technique(raw, i, file, tuple(profiles), profile))
    labels = [t.label for t in techniques]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        top.fail(f"technique labels must be unique: {', '.join(map(repr, duplicates))}")
    seeds = top.get_list("seeds", int, (0,), nonempty=True)
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        top.fail("seeds must be distinct integers >= 0")
    seed_points = _seed_points(top, None)
    metrics = top.get_list("metrics", str, QUALITY_METRICS, nonempty=True)
    for metric in metrics:
        if metric not in QUALITY_METRICS:
            top.fail(f"metric {metric!r} is not one of {', '.join(QUALITY_METRICS)}")
    anchor = top.get("anchor", str, labels[0])
    also = top.get_list("also_against", str, ())
    for label in also:
        if label not in labels or label == anchor:
            top.fail(f"also_against {label!r} is not a technique label other than the anchor; labels: "
                     f"{', '.join(labels)}")
    if anchor not in labels:
        top.fail(f"anchor {anchor!r} is not a technique label; labels: {', '.join(labels)}")
    bd = top.get("bd_interpolation", str, "pchip")
    if bd not in BD_METHODS:
        top.fail(f"bd_interpolation = {bd!r} is not one of {', '.join(BD_METHODS)}")
    res_table = _Table(data.get("resources", {}), "resources", file)
    res_table.check_keys(tuple(f.name for f in fields(Resources)))
    resources = Resources(cpus_per_job=res_table.get("cpus_per_job", float, 1.0),
                          gpus_per_job=res_table.get("gpus_per_job", float, 0.0),
                          retries=res_table.get("retries", int, 2), timeout_s=res_table.get("timeout_s", float, None))
    if not (0 < resources.cpus_per_job < 1e6 and 0 <= resources.gpus_per_job < 1e6):
        res_table.fail("cpus_per_job must be > 0 and gpus_per_job >= 0")
    if not 0 <= resources.retries <= 100 or (resources.timeout_s is not None and not resources.timeout_s > 0):
        res_table.fail("retries must be 0 to 100 and timeout_s a positive number of seconds")
    root = data_root if data_root is not None else top.get("data_root", str) or os.environ.get(DATA_ROOT_ENV)
    base_dir = str(Path(file).resolve().parent) if Path(file).exists() else os.getcwd()
    protocol = Protocol(name=name, path=file, text=text, description=top.get("description", str, ""),
                        base_dir=base_dir, data_root=_expand(str(root)) if root else None, seeds=seeds,
                        seed_points=seed_points,
                        metrics=metrics, anchor=anchor, also_against=tuple(also), bd_interpolation=bd, datasets=datasets,
                        techniques=techniques, resources=resources, profiles=profiles)
    if profile:
        protocol = _apply_profile(protocol, profile)
    return protocol


def load_protocol(path: str | os.PathLike, *, profile: str | None = None,
                  data_root: str | os.PathLike | None = None) -> Protocol:
    """Read and parse a protocol file; a missing or unreadable file is an InputError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such protocol file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a protocol .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_protocol(text, str(path), profile=profile, data_root=data_root)


# parameters against codecs ------------------------------------------------------------------------

@dataclass(frozen=True)
class ParameterProblem:
    """Why a technique's jobs cannot run as written: an unregistered codec or a parameter its config refuses."""

    technique: str
    rate_index: int | None  # None: the whole technique
    kind: str  # 'skipped' (codec not here) or 'failed' (parameters refused)
    message: str


def check_parameters(protocol: Protocol) -> list[ParameterProblem]:
    """Build every technique's config at every rate point against its registered codec.

    A codec that is not registered (or cannot be imported) is a 'skipped' problem; parameters
    its config refuses are 'failed' problems carrying the codec's own ConfigError message.
    """
    problems = []
    for technique in protocol.techniques:
        cls, reason = codec_class_or_reason(technique.codec)
        if cls is None:
            problems.append(ParameterProblem(technique.label, None, "skipped", reason))
            continue
        for index, point in enumerate(technique.rate_points):
            try:
                build(cls.Config, merged_params(technique, point), where=f"codec {technique.codec}")
            except ConfigError as exc:
                problems.append(ParameterProblem(technique.label, index, "failed", str(exc)))
    return problems


__all__ = ["BD_METHODS", "DATA_ROOT_ENV", "QUALITY_METRICS", "READ_KEYS", "DatasetSpec", "ParameterProblem",
           "Protocol", "Resources", "TechniqueSpec", "check_parameters", "load_protocol", "parse_protocol"]

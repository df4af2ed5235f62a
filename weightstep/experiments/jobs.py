"""Expanding a protocol into jobs: every video x technique x rate point x seed, each with a stable key.

A job's key is the SHA-256 of a canonical JSON of what determines its result: the codec's
name, its full config after :func:`weightstep.config.build` (defaults included, less the fields
the config says it never reads: ``unused_fields()``, e.g. a warp's grid size for an l0 step, and those at
the value that reproduces the codec from before they existed: ``neutral_fields()``), what the
codec says about itself apart from the config (``describe()``: bitstream format, encoder
library and options), the input's identity and the seed. Technique labels, rate-point
indices and the run directory are not part of it, so renaming a technique or moving a run
keeps finished work; changing any parameter, the input or a library that shapes the
bitstream gives a new key.

Inputs are probed (headers only, never decoded) so each has an identity; files under the
data root or beside the protocol are named relative to it (``data:UVG/Beauty_...yuv?frames=16``),
so moving the data keeps the keys.

Jobs that cannot run are planned with their status already decided: ``skipped`` (codec not
registered, ``availability()`` gives a reason, an input missing an optional package) or
``failed`` (parameters the codec's config refuses, an input that cannot be read).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightstep.config import build
from weightstep.errors import ConfigError, UnavailableError, WeightstepError
from weightstep.experiments.specs import (
    DONE,
    FAILED,
    SKIPPED,
    TODO,
    DatasetSpec,
    Protocol,
    codec_class_or_reason,
    merged_params,
    seeded_point,
)

KEY_VERSION = 1
"""Bump when the meaning of a job (what the runner does with it) changes, so old rows stop matching."""


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, tuples as lists: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def job_key(codec: str, config: Mapping[str, Any], codec_info: Mapping[str, Any] | None, video: str,
            seed: int | None, *, built: bool = True) -> str:
    """The job's key: sha256 of the canonical JSON of everything that determines its result."""
    payload = {"key_version": KEY_VERSION, "codec": codec, "config": dict(config), "config_built": built,
               "codec_info": dict(codec_info) if codec_info is not None else None, "video": video, "seed": seed}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


# inputs -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInput:
    """One clip of a dataset: what to open and how, and what it is."""

    dataset: str
    label: str  # short name in reports (unique within the dataset)
    spec: str  # what open_video reads: absolute path, sample:NAME or synthetic:NAME
    options: dict[str, Any]  # ReadOptions keyword arguments (JSON-able: crop is a list)
    identity: str  # portable identity (part of job keys)
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    status: str = TODO  # or SKIPPED / FAILED when it cannot be read
    reason: str | None = None


def read_options(options: Mapping[str, Any]):
    """ReadOptions from a job's JSON-able options."""
    from weightstep.video.options import ReadOptions

    values = dict(options)
    if values.get("crop") is not None:
        values["crop"] = tuple(values["crop"])
    return ReadOptions(**values)


def _options(dataset: DatasetSpec, spec: str, frames: int | None, start: int,
             downscale: int | None = None) -> dict[str, Any]:
    from weightstep.video.options import parse_crop

    opts: dict[str, Any] = {"start": start, "frames": frames, "downscale": downscale or dataset.downscale,
                            "matrix": dataset.matrix}
    if dataset.crop:
        opts["crop"] = list(parse_crop(dataset.crop))
    if spec.startswith("synthetic:"):  # synthetic sources take width/height/fps as their own size and rate
        for key, target in (("width", "synthetic_width"), ("height", "synthetic_height"), ("fps", "synthetic_rate")):
            if getattr(dataset, key) is not None:
                opts[target] = getattr(dataset, key)
    else:
        for key in ("width", "height", "fps", "bit_depth"):
            if getattr(dataset, key) is not None:
                opts[key] = getattr(dataset, key)
    return opts


def _file_label(path: Path) -> str:
    """``Beauty_1920x1080_120fps_420_8bit_YUV.yuv`` -> ``Beauty``; other names: the stem."""
    return re.split(r"_\d{2,5}x\d{2,5}", path.stem)[0] or path.stem


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def dataset_sources(protocol: Protocol, dataset: DatasetSpec) -> tuple[list[tuple[str, str]], list[str]]:
    """(spec, base label) of every clip the dataset names, and notes on what it could not find."""
    items: list[tuple[str, str]] = []
    notes: list[str] = []
    for video in dataset.videos:
        if video.startswith(("sample:", "synthetic:")):
            items.append((video, video.split(":", 1)[1]))
            continue
        path = Path(_expand(video))
        if not path.is_absolute():
            path = Path(protocol.base_dir) / path
        items.append((str(path), _file_label(path)))
    if dataset.sequences:
        root = Path(_expand(dataset.root or ""))
        if not root.is_absolute():
            if not protocol.data_root:
                notes.append(f"dataset {dataset.name}: its root {dataset.root!r} is relative to the data root, "
                             "and none is given (--data-root DIR, data_root in the protocol, or $WEIGHTSTEP_DATA)")
                return items, notes
            root = Path(protocol.data_root) / root
        if not root.is_dir():
            notes.append(f"dataset {dataset.name}: {root} is not a folder")
            return items, notes
        for pattern in dataset.sequences:
            if glob.has_magic(pattern):
                matches = sorted(p for p in root.glob(pattern) if p.is_file())
                if not matches:
                    notes.append(f"dataset {dataset.name}: no file matches {pattern!r} in {root}")
                items.extend((str(p), _file_label(p)) for p in matches)
            else:
                path = root / pattern
                items.append((str(path), _file_label(path)))
    return items, notes


def _portable(identity: str, protocol: Protocol) -> str:
    """An identity with the data root or the protocol's folder replaced by ``data:`` / ``protocol:``."""
    for prefix, tag in ((protocol.data_root, "data:"), (protocol.base_dir, "protocol:")):
        if not prefix:
            continue
        base = str(Path(prefix).resolve())
        if identity.startswith(base + os.sep):
            return tag + identity[len(base) + 1:].replace(os.sep, "/")
    return identity


def dataset_inputs(protocol: Protocol, dataset: DatasetSpec) -> tuple[list[VideoInput], list[str]]:
    """Every clip of a dataset (each source at each frame count and start), probed; plus notes."""
    from weightstep.video.readers import probe

    sources, notes = dataset_sources(protocol, dataset)
    inputs: list[VideoInput] = []
    seen: dict[str, int] = {}
    for spec, base in sources:
        factor = _fitting_downscale(dataset, spec) if dataset.target_width else None
        for frames in dataset.frames:
            for start in dataset.start:
                label = base
                if len(dataset.frames) > 1:
                    label += f"@{frames}f" if frames is not None else "@all"
                if len(dataset.start) > 1:
                    label += f"+{start}"
                seen[label] = seen.get(label, 0) + 1
                if seen[label] > 1:
                    label += f"#{seen[label]}"
                opts = _options(dataset, spec, frames, start, factor)
                try:
                    facts = probe(spec, read_options(opts))
                except UnavailableError as exc:
                    query = read_options(opts).identity_query()
                    inputs.append(VideoInput(dataset.name, label, spec, opts, _portable(spec, protocol) + query,
                                             status=SKIPPED, reason=str(exc)))
                    continue
                except WeightstepError as exc:
                    query = read_options(opts).identity_query()
                    inputs.append(VideoInput(dataset.name, label, spec, opts, _portable(spec, protocol) + query,
                                             status=FAILED, reason=f"{type(exc).__name__}: {exc}"))
                    continue
                inputs.append(VideoInput(dataset.name, label, spec, opts, _portable(facts["video"], protocol),
                                         width=facts["width"], height=facts["height"], frames=facts["frames"]))
    return inputs, notes


def _fitting_downscale(dataset: DatasetSpec, spec: str) -> int | None:
    """The integer downscale bringing ``spec``'s width closest to ``dataset.target_width`` (None: unreadable).

    Only factors the frame allows (4:2:0 after downscaling needs multiples of 2 x factor) are
    considered; ties go to the larger picture.
    """
    from weightstep.video.options import output_size
    from weightstep.video.readers import probe

    try:
        opts = read_options(_options(dataset, spec, 1, 0, 1))
        facts = probe(spec, opts)
    except WeightstepError:
        return None  # the clip's own probe below says why
    width = facts["width"]
    best = 1
    for factor in range(1, max(1, width // 2) + 1):
        try:
            output_size(facts["source_width"], facts["source_height"], read_options(_options(dataset, spec, 1, 0, factor)), spec)
        except WeightstepError:
            continue
        if abs(width / factor - dataset.target_width) < abs(width / best - dataset.target_width):
            best = factor
    return best


# techniques ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """A technique at one parameter set, checked against its codec once for every video."""

    config: dict[str, Any] | None  # the built config (defaults included), None if it did not build
    codec_info: dict[str, Any] | None  # describe() without the config
    suffix: str
    status: str  # TODO, SKIPPED or FAILED
    reason: str | None = None
    key_config: dict[str, Any] | None = None  # what the job key hashes: the config less the fields it never reads


def prepare(codec_name: str, params: Mapping[str, Any]) -> Prepared:
    """Build the codec's config from ``params`` and ask whether it can run here."""
    cls, reason = codec_class_or_reason(codec_name)
    if cls is None:
        return Prepared(None, None, ".bin", SKIPPED, reason)
    suffix = getattr(cls, "suffix", ".bin")
    try:
        config = build(cls.Config, dict(params), where=f"codec {codec_name}")
    except ConfigError as exc:
        return Prepared(None, None, suffix, FAILED, f"ConfigError: {exc}")
    unused = config.unused_fields() if hasattr(config, "unused_fields") else frozenset()
    if hasattr(config, "neutral_fields"):  # at the value that reproduces the codec from before the field existed
        unused |= config.neutral_fields()
    keyed = {k: v for k, v in _plain(config).items() if k not in unused}
    try:
        codec = cls(config)
        info = {k: v for k, v in codec.describe().items() if k != "config"}
        reason = codec.availability()
    except UnavailableError as exc:
        return Prepared(_plain(config), None, suffix, SKIPPED, str(exc), keyed)
    except Exception as exc:  # a codec that cannot even be made: its jobs fail, the plan goes on
        return Prepared(_plain(config), None, suffix, FAILED, f"{type(exc).__name__}: {exc}", keyed)
    if reason:
        return Prepared(_plain(config), _plain(info), suffix, SKIPPED, f"{codec_name} cannot run here: {reason}",
                        keyed)
    return Prepared(_plain(config), _plain(info), suffix, TODO, None, keyed)


def _plain(obj: Any) -> Any:
    """JSON-normal form (tuples as lists, dataclasses as dicts): what the store gives back."""
    return json.loads(canonical_json(obj))


def _has_seed(codec_name: str) -> bool:
    cls, _ = codec_class_or_reason(codec_name)
    return cls is not None and any(f.name == "seed" for f in dataclasses.fields(cls.Config))


# jobs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One encode + decode + measurement; plain data, so it travels to worker processes and Ray."""

    key: str
    technique: str
    codec: str
    rate_index: int
    rate_point: dict[str, Any]
    params: dict[str, Any]  # what registry.create gets (fixed params, rate point, seed)
    config: dict[str, Any] | None  # the built config, defaults included
    seed: int | None
    dataset: str
    video: str  # portable identity
    video_label: str
    spec: str
    options: dict[str, Any]
    suffix: str
    status: str = TODO
    reason: str | None = None
    cpus: float | None = None  # what the job asks of a Ray cluster (None: the protocol's [resources])
    gpus: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def bitstream_name(self) -> str:
        """``bitstreams/<technique>/<video>-r<rate>-s<seed>-<key12><suffix>`` (relative to the run dir)."""
        seed = "x" if self.seed is None else str(self.seed)
        return (f"bitstreams/{slug(self.technique)}/{slug(self.dataset)}-{slug(self.video_label)}"
                f"-r{self.rate_index}-s{seed}-{self.key[:12]}{self.suffix}")


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    out = re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-.")
    return out or "x"


@dataclass
class Plan:
    """The protocol's grid as jobs, with what could not be planned."""

    protocol: Protocol
    jobs: list[Job] = field(default_factory=list)
    videos: list[VideoInput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # datasets (parts) that gave no videos, and why

    def count(self, status: str) -> int:
        return sum(1 for job in self.jobs if job.status == status)

    def reasons(self) -> list[tuple[str, str, str]]:
        """Distinct (technique, status, reason) of the jobs decided before running."""
        seen: dict[tuple[str, str, str], None] = {}
        for job in self.jobs:
            if job.status != TODO:
                seen[(job.technique, job.status, job.reason or "")] = None
        return list(seen)


def expand(protocol: Protocol) -> Plan:
    """Every video x technique x rate point x seed of ``protocol`` as a :class:`Job`.

    Seeds multiply only techniques whose codec config has a ``seed`` field that the technique
    does not fix itself. Two jobs with the same key (identical techniques) are a ConfigError.
    """
    plan = Plan(protocol)
    for dataset in protocol.datasets:
        if not dataset.include:
            plan.notes.append(f"dataset {dataset.name}: left out (include = false"
                              + (f" in profile {protocol.profile})" if protocol.profile else ")"))
            continue
        inputs, notes = dataset_inputs(protocol, dataset)
        plan.videos.extend(inputs)
        plan.notes.extend(notes)
    prepared: dict[str, Prepared] = {}
    owners: dict[str, str] = {}
    for video in plan.videos:
        for technique in protocol.techniques:
            seeded = _has_seed(technique.codec)
            for index, point in enumerate(technique.rate_points):
                base = merged_params(technique, point)
                seeds = protocol.seeds if seeded_point(protocol, technique, index) else protocol.seeds[:1]
                variants = [{**base, "seed": s} for s in seeds] if seeded and "seed" not in base else [base]
                for params in variants:
                    cache_key = canonical_json([technique.codec, params])
                    if cache_key not in prepared:
                        prepared[cache_key] = prepare(technique.codec, params)
                    prep = prepared[cache_key]
                    config = prep.config
                    seed = (config or {}).get("seed", params.get("seed"))
                    key = job_key(technique.codec, prep.key_config if config is not None else params, prep.codec_info,
                                  video.identity, seed, built=config is not None)
                    owner = f"{technique.label!r} rate point {index} on {video.dataset}/{video.label}"
                    if key in owners:
                        raise ConfigError(f"{protocol.path}: {owners[key]} and {owner} are the same job (same "
                                          "codec, parameters, input and seed); remove one")
                    owners[key] = owner
                    status, reason = prep.status, prep.reason
                    if video.status != TODO and status == TODO:
                        status, reason = video.status, video.reason
                    plan.jobs.append(Job(key=key, technique=technique.label, codec=technique.codec,
                                         rate_index=index, rate_point=dict(point), params=params, config=config,
                                         seed=seed, dataset=video.dataset, video=video.identity,
                                         video_label=video.label, spec=video.spec, options=video.options,
                                         suffix=prep.suffix, status=status, reason=reason,
                                         cpus=technique.cpus, gpus=technique.gpus))
    return plan


__all__ = ["DONE", "FAILED", "KEY_VERSION", "SKIPPED", "TODO", "Job", "Plan", "Prepared", "VideoInput",
           "canonical_json", "codec_class_or_reason", "dataset_inputs", "dataset_sources", "expand", "job_key",
           "merged_params", "prepare", "read_options", "slug"]

"""The experiments' shared types: protocol records, job statuses and codec look-ups.

This module is the bottom of :mod:`weightstep.experiments`: it imports nothing from its sibling
modules, and every one of them may import it. :mod:`.protocol` parses files into these records,
:mod:`.jobs` expands them into jobs, the runner and the reports read both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from weightstep.config import param
from weightstep.errors import WeightstepError

TODO, DONE, FAILED, SKIPPED = "todo", "done", "failed", "skipped"
"""Job statuses: planned, finished with a result, raised an error, could not run here (with the reason)."""

QUALITY_METRICS = ("psnr_rgb", "psnr_yuv", "ms_ssim")
"""Quality measures a report can plot and compare (the harness measures all three every time)."""

BD_METHODS = ("pchip", "akima")

READ_KEYS = ("frames", "start", "crop", "downscale", "width", "height", "fps", "bit_depth", "matrix", "target_width")
"""Dataset keys that say how a video is read."""

PROFILE_DATASET_KEYS = (*READ_KEYS, "include")
"""Dataset keys a ``[profiles.NAME]`` entry may override."""

DATA_ROOT_ENV = "WEIGHTSTEP_DATA"
"""Environment variable naming the data root when neither ``--data-root`` nor the file does."""

Scalar = str | int | float | bool


@dataclass(frozen=True)
class DatasetSpec:
    """A named set of clips, and how each is read."""

    name: str = param("", "label of the dataset in reports, and the name profiles refer to")
    videos: tuple[str, ...] = param((), "inputs given directly: paths (relative ones from the protocol file's "
                                    "folder), sample:NAME or synthetic:NAME")
    root: str | None = param(None, "folder holding `sequences`: relative to the data root, or absolute")
    sequences: tuple[str, ...] = param((), "file names or glob patterns under `root` (raw .yuv as distributed)")
    frames: tuple[int | None, ...] = param((None,), "clip length(s) in frames; several give the timing-"
                                           "against-length analysis (§4.3, §4.4); none = the whole clip")
    start: tuple[int, ...] = param((0,), "first frame(s); several make several clips (or images) per sequence")
    crop: str | None = param(None, "WxH+X+Y window (even values) taken before downscaling")
    downscale: int = param(1, "integer area downscale: 1080p sources become sizes a CPU can fit", low=1)
    width: int | None = param(None, "raw .yuv width when the name does not say it; synthetic: frame width",
                              low=2)
    height: int | None = param(None, "raw .yuv height when the name does not say it; synthetic: frame height",
                               low=2)
    fps: float | None = param(None, "frame rate for raw .yuv (or an override); synthetic: its rate", low=0.0)
    bit_depth: int | None = param(None, "raw .yuv sample size, 8 or 10", choices=(8, 10))
    matrix: str = param("bt709", "Y'CbCr matrix of the RGB view", choices=("bt709", "bt601"))
    target_width: int | None = param(None, "per-clip integer downscale bringing each source's width closest to "
                                     "this (clips of different sizes in one dataset); replaces downscale", low=2)
    include: bool = param(True, "false leaves the dataset out (a profile drops data too big for its machine)")


@dataclass(frozen=True)
class TechniqueSpec:
    """One technique: a codec with fixed parameters, measured at each of its rate points."""

    label: str = param("", "the technique's name in reports (unique in the protocol)")
    codec: str = param("", "registered codec name (see `weightstep codecs`)")
    params: Mapping[str, Scalar] = param(None, "fixed codec parameters")
    rate_points: tuple[Mapping[str, Scalar], ...] = param(({},), "parameter sets, one per point of the RD "
                                                         "curve (BD-rate needs at least 4)")
    description: str = param("", "one line for the report")
    cpus: float | None = param(None, "Ray num_cpus of each of its jobs (none: [resources] cpus_per_job)", low=0.0)
    gpus: float | None = param(None, "Ray num_gpus of each of its jobs (none: [resources] gpus_per_job)", low=0.0)
    group: str = param("", "block of the protocol it belongs to (e.g. 'new weight-step kinds'), for the report")
    seed_points: tuple[int, ...] | None = param(None, "indices of the rate points run with every seed, the rest with "
                                                "the first seed only (none: the protocol's seed_points)")
    variant_of: str = param("", "label of the [[techniques]] table whose `vary` made this one ('' if none): the "
                            "report compares a table's variants and picks one")


@dataclass(frozen=True)
class Resources:
    """What one job asks of a Ray cluster (the local executor splits this machine's cores itself)."""

    cpus_per_job: float = param(1.0, "Ray num_cpus of a job; also its torch threads under Ray", low=0.0)
    gpus_per_job: float = param(0.0, "Ray num_gpus of a job (fractions share a GPU)", low=0.0)
    retries: int = param(2, "Ray retries of a job whose worker died (killed, lost node), then it is failed",
                         low=0, high=100)
    timeout_s: float | None = param(None, "wall-clock limit of one job under Ray: it is cancelled and "
                                    "recorded as failed after this (none: no limit)", low=0.0)


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol file (with a profile applied, if one was chosen)."""

    name: str = param("", "the protocol's name: run folders and reports/<name>/ use it")
    path: str = param("", "the file it was read from")
    text: str = param("", "the file's text, recorded with every run")
    description: str = param("", "what the protocol tests, for the report")
    base_dir: str = param("", "folder of the protocol file: relative video paths start here")
    data_root: str | None = param(None, "folder holding the datasets' `root` folders")
    seeds: tuple[int, ...] = param((0,), "seeds of every technique whose codec config has a `seed`; codecs "
                                   "without one (conventional) run once")
    seed_points: tuple[int, ...] | None = param(None, "indices of the rate points run with every seed (the spread of "
                                                "a noisy fit costs a run per seed); none: every point")
    metrics: tuple[str, ...] = param(QUALITY_METRICS, "quality measures of the RD curves and BD tables")
    anchor: str = param("", "technique every BD-rate is measured against")
    also_against: tuple[str, ...] = param((), "further references: the report adds a BD-rate table against "
                                          "each (e.g. x264 / x265 intra beside an INR anchor)")
    bd_interpolation: str = param("pchip", "BD interpolation", choices=BD_METHODS)
    datasets: tuple[DatasetSpec, ...] = param((), "the clips")
    techniques: tuple[TechniqueSpec, ...] = param((), "the techniques")
    resources: Resources = field(default_factory=Resources)  # what one job asks of a Ray cluster
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]] = param(None, "named read-option overrides")
    profile: str | None = param(None, "the profile applied, if any")

    def technique(self, label: str) -> TechniqueSpec:
        for technique in self.techniques:
            if technique.label == label:
                return technique
        raise KeyError(label)


def seeded_point(protocol: Protocol, technique: TechniqueSpec, index: int) -> bool:
    """Whether rate point ``index`` of ``technique`` runs with every seed (else with the first only)."""
    points = technique.seed_points if technique.seed_points is not None else protocol.seed_points
    return points is None or index in points


def merged_params(technique: TechniqueSpec, point: Mapping[str, Any]) -> dict[str, Any]:
    """A technique's fixed parameters with one rate point's on top."""
    return {**(technique.params or {}), **point}


def codec_class_or_reason(name: str) -> tuple[type | None, str | None]:
    """(codec class, None), or (None, why it is not here: not registered, or its module fails to import)."""
    from weightstep import registry

    if name not in registry.names():
        return None, f"codec {name!r} is not registered here (registered: {', '.join(registry.names())})"
    try:
        return registry.codec_class(name), None
    except (ImportError, AttributeError, WeightstepError) as exc:
        return None, f"codec {name!r} cannot be loaded here: {type(exc).__name__}: {exc}"


__all__ = ["BD_METHODS", "DATA_ROOT_ENV", "DONE", "FAILED", "PROFILE_DATASET_KEYS", "QUALITY_METRICS", "READ_KEYS",
           "SKIPPED", "TODO", "DatasetSpec", "Protocol", "Resources", "Scalar", "TechniqueSpec", "codec_class_or_reason",
           "merged_params", "seeded_point"]

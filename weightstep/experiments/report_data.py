"""A run's results as reports need them: the latest run's jobs, RD points (seeds pooled), BD-rates.

Aggregation rules (the report states them too): clip values are means over frames (the
harness's); a rate point run with several seeds is the mean of its seeds, with the minimum and
maximum kept as its spread; BD-rates are computed per clip (anchor and test curves each need 4
points with distinct quality values and overlapping ranges, else the cell says why) and averaged
over the clips where they exist; an averaged RD curve's point is the mean over a dataset's clips
of that rate point, drawn only where the technique has it on every clip.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightstep.errors import InputError, MetricError
from weightstep.experiments import plots
from weightstep.experiments.specs import DONE, FAILED, SKIPPED
from weightstep.experiments.store import Store

# the run's data -----------------------------------------------------------------------------------

@dataclass
class Point:
    """One rate point of one technique on one clip (means over its seeds, with their minimum and maximum)."""

    rate_index: int
    rate_point: dict[str, Any]
    bpp: float
    psnr_rgb: float
    psnr_yuv: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    frames: int
    seeds: int
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # bpp / metric -> (min, max) over seeds

    def quality(self, metric: str) -> float:
        return float(getattr(self, metric))

    def low_high(self, measure: str) -> tuple[float, float]:
        """(min, max) of ``measure`` over the seeds; (mean, mean) for one seed."""
        value = float(getattr(self, measure))
        return self.spread.get(measure, (value, value))

    def range(self, measure: str) -> float:
        """max - min of ``measure`` over the seeds (0 for one seed)."""
        low, high = self.low_high(measure)
        return high - low


@dataclass
class RunData:
    """Everything a report shows, read from the store."""

    run_dir: Path
    runs: list[dict[str, Any]]
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    techniques: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    clips: dict[str, list[str]] = field(default_factory=dict)  # dataset -> clip labels in order

    @property
    def run(self) -> dict[str, Any]:
        return self.runs[-1]

    @property
    def anchor(self) -> str:
        return self.meta.get("anchor") or (self.techniques[0] if self.techniques else "")

    @property
    def also_against(self) -> list[str]:
        """Further BD references the protocol names (each gets its own table), those with results."""
        return [t for t in self.meta.get("also_against") or [] if t in self.techniques and t != self.anchor]

    @property
    def metrics(self) -> list[str]:
        return list(self.meta.get("metrics") or plots.METRIC_LABELS)

    @property
    def method(self) -> str:
        return self.meta.get("bd_interpolation") or "pchip"

    def done(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == DONE and r["result"]]


def load_run(run_dir: str | Path) -> RunData:
    """The latest run's jobs and metadata from ``run_dir/results.sqlite``."""
    run_dir = Path(run_dir)
    with Store.open(run_dir) as store:
        runs = store.runs()
        if not runs:
            raise InputError(f"{run_dir}: the results database records no run")
        keys = runs[-1].get("keys")
        rows = store.rows(keys if keys is not None else None)
    meta = runs[-1].get("meta") or {}
    data = RunData(run_dir=run_dir, runs=runs, meta=meta, rows=rows)
    data.techniques = [t["label"] for t in meta.get("techniques", [])]
    for row in rows:
        if row["technique"] not in data.techniques:
            data.techniques.append(row["technique"])
    data.datasets = list(meta.get("datasets", []))
    for row in rows:
        if row["dataset"] not in data.datasets:
            data.datasets.append(row["dataset"])
    clips: dict[str, list[str]] = defaultdict(list)
    for video in meta.get("videos", []):
        if video["label"] not in clips[video["dataset"]]:
            clips[video["dataset"]].append(video["label"])
    for row in rows:
        if row["video_label"] not in clips[row["dataset"]]:
            clips[row["dataset"]].append(row["video_label"])
    data.clips = dict(clips)
    # a dataset the run left out (a profile's include = false, no data) has no clips: the report's
    # inputs section names it from the plan's notes; its tables and figures would be empty
    data.datasets = [d for d in data.datasets if clips.get(d)]
    return data


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


SPREAD_MEASURES = ("bpp", "psnr_rgb", "psnr_yuv", "ms_ssim")
"""What the spread over seeds is kept for."""


def rd_points(data: RunData) -> dict[tuple[str, str], dict[str, list[Point]]]:
    """{(dataset, clip): {technique: [Point by rate index]}} from the done jobs (seeds averaged)."""
    grouped: dict[tuple[str, str, str, int], list[dict]] = defaultdict(list)
    for row in data.done():
        grouped[(row["dataset"], row["video_label"], row["technique"], row["rate_index"])].append(row)
    out: dict[tuple[str, str], dict[str, list[Point]]] = defaultdict(dict)
    for (dataset, clip, technique, index), rows in grouped.items():
        results = [r["result"] for r in rows]
        point = Point(rate_index=index, rate_point=rows[0]["rate_point"],
                      bpp=_mean(r["bpp"] for r in results), psnr_rgb=_mean(r["psnr_rgb"] for r in results),
                      psnr_yuv=_mean(r["psnr_yuv"] for r in results), ms_ssim=_mean(r["ms_ssim"] for r in results),
                      encode_s=_mean(r["encode_s"] for r in results), decode_s=_mean(r["decode_s"] for r in results),
                      frames=int(results[0]["frames"]), seeds=len(results))
        if len(results) > 1:
            for measure in SPREAD_MEASURES:
                values = [float(r[measure]) for r in results if r.get(measure) is not None]
                if values:
                    point.spread[measure] = (min(values), max(values))
        out[(dataset, clip)].setdefault(technique, []).append(point)
    for curves in out.values():
        for points in curves.values():
            points.sort(key=lambda p: p.rate_index)
    return dict(out)


# BD-rates -----------------------------------------------------------------------------------------

@dataclass
class BdCell:
    value: float | None
    reason: str | None = None
    count: int = 1  # clips averaged
    total: int = 1  # clips asked

    def text(self) -> str:
        if self.value is None:  # "not defined: curves do not overlap (...)" reads as it is
            return self.reason if (self.reason or "").startswith("not defined") else f"n/a: {self.reason}"
        text = f"{self.value:+.1f} %"
        if self.total > 1 or self.count != self.total:
            text += f" ({self.count}/{self.total} clips)"
        return text


def bd_cell(anchor: Sequence[Point] | None, test: Sequence[Point] | None, metric: str, method: str,
            anchor_label: str = "anchor", why_not: str | None = None) -> BdCell:
    """BD-rate (percent) of ``test`` against ``anchor`` on one clip, or why there is none.

    ``why_not``: why the test technique has no results here (its jobs' status and error), if known.
    """
    from weightstep.metrics import bd_rate

    if not anchor:
        return BdCell(None, f"{anchor_label} has no results here")
    if not test:
        return BdCell(None, why_not or "no results")
    try:
        value = bd_rate([p.bpp for p in anchor], [p.quality(metric) for p in anchor],
                        [p.bpp for p in test], [p.quality(metric) for p in test], method=method)
    except MetricError as exc:
        return BdCell(None, str(exc))
    return BdCell(value)


def mean_cell(cells: Sequence[BdCell]) -> BdCell:
    """The mean over clips of the BD-rates that exist (how many is stated)."""
    values = [c.value for c in cells if c.value is not None]
    if not values:
        reasons = sorted({c.reason for c in cells if c.reason})
        return BdCell(None, "; ".join(reasons[:2]) if reasons else "no clips", 0, len(cells))
    return BdCell(sum(values) / len(values), None, len(values), len(cells))


def not_run_reasons(data: RunData) -> dict[tuple[str, str, str], str]:
    """{(dataset, clip, technique): 'skipped: reason'} for techniques with no finished job on a clip."""
    finished = {(r["dataset"], r["video_label"], r["technique"]) for r in data.done()}
    out: dict[tuple[str, str, str], str] = {}
    for row in data.rows:
        where = (row["dataset"], row["video_label"], row["technique"])
        if row["status"] in (FAILED, SKIPPED) and where not in finished and where not in out:
            out[where] = f"{row['status']} (see: Jobs that did not run)"
    return out


def bd_tables(data: RunData, points: dict, reference: str | None = None) -> dict[str, dict[str, dict[str, list[BdCell]]]]:
    """{dataset: {technique: {metric: [BdCell per clip]}}} against ``reference`` (default: the anchor)."""
    reference = reference or data.anchor
    name = f"the anchor {reference!r}" if reference == data.anchor else repr(reference)
    why = not_run_reasons(data)
    out: dict[str, dict[str, dict[str, list[BdCell]]]] = {}
    for dataset in data.datasets:
        per_technique: dict[str, dict[str, list[BdCell]]] = {}
        for technique in data.techniques:
            if technique == reference:
                continue
            per_technique[technique] = {
                metric: [bd_cell(points.get((dataset, clip), {}).get(reference),
                                 points.get((dataset, clip), {}).get(technique), metric, data.method,
                                 name, why.get((dataset, clip, technique)))
                         for clip in data.clips.get(dataset, [])]
                for metric in data.metrics}
        out[dataset] = per_technique
    return out


def average_curve(points: dict, dataset: str, clips: Sequence[str], technique: str) -> list[Point]:
    """Mean over clips of each rate point the technique has on every clip of the dataset."""
    per_clip = [{p.rate_index: p for p in points.get((dataset, clip), {}).get(technique, [])} for clip in clips]
    if not per_clip or not all(per_clip):
        return []
    common = sorted(set.intersection(*(set(p) for p in per_clip)))
    out = []
    for index in common:
        chosen = [p[index] for p in per_clip]
        out.append(Point(rate_index=index, rate_point=chosen[0].rate_point, bpp=_mean(c.bpp for c in chosen),
                         psnr_rgb=_mean(c.psnr_rgb for c in chosen), psnr_yuv=_mean(c.psnr_yuv for c in chosen),
                         ms_ssim=_mean(c.ms_ssim for c in chosen), encode_s=_mean(c.encode_s for c in chosen),
                         decode_s=_mean(c.decode_s for c in chosen), frames=chosen[0].frames,
                         seeds=min(c.seeds for c in chosen)))
        if all(c.seeds > 1 for c in chosen):  # the mean over clips of each clip's distance to its min and max
            point = out[-1]
            for measure in SPREAD_MEASURES:
                below = _mean(getattr(c, measure) - c.low_high(measure)[0] for c in chosen)
                above = _mean(c.low_high(measure)[1] - getattr(c, measure) for c in chosen)
                point.spread[measure] = (getattr(point, measure) - below, getattr(point, measure) + above)
    return out


def stage_pairs(data: RunData) -> list[tuple[str, str]]:
    """(single-stage label, two-stage label) of techniques that differ only in ``schedule``."""
    techniques = data.meta.get("techniques", [])
    pairs = []
    for single in techniques:
        if str(single["params"].get("schedule")) != "single-stage":
            continue
        rest = {k: v for k, v in single["params"].items() if k != "schedule"}
        for two in techniques:
            if (two["codec"] == single["codec"] and str(two["params"].get("schedule")) == "two-stage"
                    and {k: v for k, v in two["params"].items() if k != "schedule"} == rest):
                pairs.append((single["label"], two["label"]))
                break
    return pairs

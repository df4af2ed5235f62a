"""Reports of a run, read only from its results store: RD curves, BD-rates, timing, stages, per-frame bits.

``build_report(run_dir)`` writes into ``run_dir/report/`` (or ``out_dir``):

- ``summary.md``: the run's provenance, how things were measured, the BD-rate tables, every
  RD point, timing against clip length, single- against two-stage, per-frame bits of
  weight-step runs, and every job that did not run with its reason;
- ``report.html``: the same, self-contained (figures embedded as base64 PNG);
- ``results.csv``: one row per job of the run's grid (done, failed and skipped);
- ``figures/*.png``: the figures (matplotlib, Agg canvas).

Aggregation rules (stated in the report too): clip values are means over frames (the
harness's); a rate point run with several seeds is the mean of its seeds; BD-rates are
computed per clip (anchor and test curves each need 4 points with distinct quality values and
overlapping ranges, else the table says why) and averaged over the clips where they exist; an
averaged RD curve's point is the mean over a dataset's clips of that rate point, drawn only
where the technique has it on every clip.

Only the jobs planned by the latest ``weightstep run`` on the directory are reported.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightstep.errors import InputError, MetricError
from weightstep.experiments import plots
from weightstep.experiments.jobs import DONE, FAILED, SKIPPED, canonical_json, slug
from weightstep.experiments.store import Store
from weightstep.fileio import atomic_write_bytes

REPORT_DIR = "report"
FILES = ("summary.md", "report.html", "results.csv")
FULL_TABLE_LIMIT = 600  # rows of the RD points table in summary.md beyond which results.csv stands in

CSV_COLUMNS = ("key", "status", "technique", "codec", "dataset", "video", "video_label", "rate_index", "rate_point",
               "seed", "frames", "width", "height", "bytes", "file_bytes", "bpp", "psnr_rgb", "psnr_yuv", "ms_ssim",
               "encode_s", "decode_s", "device", "bitstream", "error")
_QUALITY_FORMAT = {"psnr_rgb": "{:.2f}", "psnr_yuv": "{:.2f}", "ms_ssim": "{:.4f}"}
_METRIC_NAMES = {"psnr_rgb": "PSNR RGB", "psnr_yuv": "PSNR YUV", "ms_ssim": "MS-SSIM"}


# the run's data -----------------------------------------------------------------------------------

@dataclass
class Point:
    """One rate point of one technique on one clip (means over its seeds)."""

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

    def quality(self, metric: str) -> float:
        return float(getattr(self, metric))


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
    return data


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


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
        if self.value is None:
            return f"n/a: {self.reason}"
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


# documents: one list of blocks, written as Markdown and as HTML -----------------------------------

def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class Doc:
    """A document as a list of blocks (headings, paragraphs, lists, tables, figures), written two ways."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(headers), [[str(c) for c in row] for row in rows]))

    def figure(self, name: str, caption: str) -> None:
        self.blocks.append(("figure", name, caption))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                headers, rows = block[1], block[2]
                lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                         "|" + "|".join("---" for _ in headers) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "figure":
                out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str, images: dict[str, bytes]) -> str:
        e = html.escape
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{e(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode(images[block[1]]).decode("ascii")
                body.append(f'<figure><img alt="{e(block[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(block[2])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
                 "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top}"
                 "th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}"
                 "figcaption{font-style:italic;font-size:0.9em}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(title)}</title><style>{style}</style></head><body>\n" + "\n".join(body)
                + "\n</body></html>\n")


# formatting ---------------------------------------------------------------------------------------

def _fmt(value: Any, pattern: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)


def _point_text(rate_point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rate_point.items()) or "defaults"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def write_file(path: Path, data: bytes) -> None:
    """Write atomically, readable as the umask allows (the temporary file behind it is private)."""
    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _first_line(text: str | None, limit: int = 220) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# the report ---------------------------------------------------------------------------------------

@dataclass
class ReportFiles:
    out_dir: Path
    files: list[Path]


class _Builder:
    def __init__(self, data: RunData, out_dir: Path):
        self.data = data
        self.out_dir = out_dir
        self.doc = Doc()
        self.images: dict[str, bytes] = {}
        self.points = rd_points(data)
        self.styles = {label: plots.style(i) for i, label in enumerate(data.techniques)}

    def add_figure(self, name: str, png: bytes, caption: str) -> None:
        path = f"figures/{name}.png"
        self.images[path] = png
        self.doc.figure(path, caption)

    # sections ----------------------------------------------------------------------------------
    def provenance(self) -> None:
        data, run, doc = self.data, self.data.run, self.doc
        name = data.meta.get("name") or run["protocol_name"]
        doc.heading(1, f"{name}: results")
        if data.meta.get("description"):
            doc.para(data.meta["description"])
        counts = defaultdict(int)
        for row in data.rows:
            counts[row["status"]] += 1
        total = max(len(run.get("keys") or []), len(data.rows))
        device = run.get("device") or {}
        versions = run.get("versions") or {}
        gpus = ", ".join(device.get("gpus", [])) or "none"
        shown = ("weightstep", "torch", "numpy", "scipy", "av", "constriction", "libavcodec", "python")
        items = [
            f"protocol: {run['protocol_name']} ({run.get('protocol_path')})"
            + (f", profile {run['profile']}" if run.get("profile") else ""),
            f"git commit: {run.get('git_commit')}" + (" (with uncommitted changes)" if run.get("git_dirty") else ""),
            f"jobs in the grid: {total}: {counts[DONE]} done, {counts[FAILED]} failed, "
            f"{counts[SKIPPED]} skipped" + (f", {total - len(data.rows)} not run yet" if total > len(data.rows) else ""),
            f"machine: {device.get('cpu', '?')}, {device.get('cpu_count', '?')} CPU threads, "
            f"{device.get('platform', '?')}; GPUs: {gpus}",
            f"executor: {run.get('executor')}, {run.get('workers') or 1} job(s) at a time"
            + (f", {run['threads_per_job']} torch thread(s) each" if run.get("threads_per_job") else ""),
            f"seeds: {', '.join(map(str, run.get('seeds') or []))}",
            "versions: " + ", ".join(f"{k} {versions[k]}" for k in shown if k in versions),
        ]
        doc.bullets(items)
        doc.table(["run", "started", "finished", "status", "commit", "executor", "counts"],
                  [[r["id"], _when(r["started"]), _when(r.get("finished")), r["status"],
                    (r.get("git_commit") or "")[:12], r.get("executor"),
                    ", ".join(f"{k} {v}" for k, v in (r.get("counts") or {}).items())] for r in data.runs])
        doc.heading(2, "How this was measured")
        doc.bullets([
            "Every rate is the size of a bitstream that was written to disk, read back and decoded; "
            "bpp = 8 x bytes / (frames x width x height). Conventional codecs: the elementary stream.",
            "Quality is measured on the decoded output against the source: PSNR per frame, then the mean over "
            "frames (RGB, and YUV 4:2:0 weighted (6Y+U+V)/8); MS-SSIM on RGB, mean over frames.",
            "A rate point run with several seeds is shown as the mean over its seeds.",
            f"BD-rate: {self.data.method.upper()} interpolation of log-rate over the overlapping quality range, "
            f"against the anchor {self.data.anchor!r}"
            + "".join(f" and against {t!r}" for t in self.data.also_against) + "; computed per clip (each curve needs at least 4 points) "
            "and averaged over the clips where it exists (the count is given). Negative: fewer bits than the "
            "anchor for the same quality.",
            "Averaged RD curves: the mean over a dataset's clips of each rate point's bpp and quality, drawn "
            "only where a technique has that rate point on every clip.",
            "Encode and decode times are wall-clock seconds measured by the harness around the codec's "
            "encode and decode calls, with the parallelism stated above.",
        ])

    def inputs(self) -> None:
        videos = self.data.meta.get("videos", [])
        notes = self.data.meta.get("notes", [])
        if not videos and not notes:
            return
        self.doc.heading(2, "Inputs")
        if videos:
            self.doc.table(["dataset", "clip", "input", "size", "frames", "status"],
                           [[v["dataset"], v["label"], v["identity"],
                             f"{v['width']}x{v['height']}" if v.get("width") else "-", _fmt(v.get("frames"), "{}"),
                             "ok" if v["status"] == "todo" else f"{v['status']}: {_first_line(v.get('reason'))}"]
                            for v in videos])
        self.doc.bullets([f"note: {n}" for n in notes])

    def bd_rates(self) -> None:
        for reference in [self.data.anchor, *self.data.also_against]:
            self.bd_rates_against(reference)

    def bd_rates_against(self, reference: str) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, f"BD-rate against {reference}")
        tables = bd_tables(data, self.points, reference)
        names = [_METRIC_NAMES.get(m, m) for m in data.metrics]
        for dataset in data.datasets:
            per_technique = tables.get(dataset, {})
            clips = data.clips.get(dataset, [])
            doc.heading(3, f"{dataset} (mean over {len(clips)} clip{'s' if len(clips) != 1 else ''})")
            if not per_technique:
                doc.para(f"No technique besides {reference}.")
                continue
            doc.table(["technique", *[f"BD-rate ({n})" for n in names]],
                      [[t, *[mean_cell(per_technique[t][m]).text() for m in data.metrics]] for t in per_technique])
            if len(clips) > 1:
                rows = []
                for technique, cells in per_technique.items():
                    if all(c.value is None and "did not run" in (c.reason or "") for c in cells[data.metrics[0]]):
                        continue  # never ran on this dataset: the mean table says so once
                    for i, clip in enumerate(clips):
                        rows.append([technique, clip, *[cells[m][i].text() for m in data.metrics]])
                if rows:
                    doc.para("Per clip:")
                    doc.table(["technique", "clip", *names], rows)

    def rd_curves(self) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, "Rate-distortion curves")
        for dataset in data.datasets:
            clips = data.clips.get(dataset, [])
            doc.heading(3, dataset)
            if not any(self.points.get((dataset, clip)) for clip in clips):
                doc.para("No job finished on this dataset.")
                continue
            averaged = {t: average_curve(self.points, dataset, clips, t) for t in data.techniques}
            panels = [(m, {t: [(p.bpp, p.quality(m)) for p in pts] for t, pts in averaged.items() if pts})
                      for m in data.metrics]
            self.add_figure(f"rd-{slug(dataset)}-mean", plots.rd_figure(f"{dataset}: mean over {len(clips)} clip(s)",
                                                                         panels, self.styles),
                            f"{dataset}: RD curves averaged over its clips (rate points present on every clip)")
            for metric in data.metrics:
                panels = [(clip, {t: [(p.bpp, p.quality(metric)) for p in pts]
                                  for t, pts in self.points.get((dataset, clip), {}).items()}) for clip in clips]
                self.add_figure(f"rd-{slug(dataset)}-clips-{metric}",
                                plots.rd_figure(f"{dataset}: {_METRIC_NAMES.get(metric, metric)} per clip", panels,
                                                self.styles, metric=metric),
                                f"{dataset}: {_METRIC_NAMES.get(metric, metric)} against bpp, one panel per clip")

    def points_table(self) -> None:
        doc = self.doc
        doc.heading(2, "All RD points")
        rows = []
        for dataset in self.data.datasets:
            for clip in self.data.clips.get(dataset, []):
                curves = self.points.get((dataset, clip), {})
                for technique in self.data.techniques:
                    for p in curves.get(technique, []):
                        rows.append([dataset, clip, technique, _point_text(p.rate_point), p.frames,
                                     _fmt(p.bpp, "{:.4f}"), _fmt(p.psnr_rgb, "{:.2f}"), _fmt(p.psnr_yuv, "{:.2f}"),
                                     _fmt(p.ms_ssim, "{:.4f}"), _fmt(p.encode_s, "{:.2f}"), _fmt(p.decode_s, "{:.2f}"),
                                     p.seeds])
        if not rows:
            doc.para("No job finished.")
        elif len(rows) > FULL_TABLE_LIMIT:
            doc.para(f"{len(rows)} points: see results.csv (one row per job).")
        else:
            doc.table(["dataset", "clip", "technique", "rate point", "frames", "bpp", "PSNR RGB", "PSNR YUV",
                       "MS-SSIM", "encode s", "decode s", "seeds"], rows)

    def timing(self) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, "Encode and decode time against clip length")
        doc.para("Means over a dataset's clips of that length, the technique's rate points and seeds.")
        for dataset in data.datasets:
            groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
            for row in data.done():
                if row["dataset"] == dataset:
                    groups[(row["technique"], int(row["result"]["frames"]))].append(row["result"])
            if not groups:
                continue
            doc.heading(3, dataset)
            rows, series = [], defaultdict(list)
            for technique in data.techniques:
                for frames in sorted(f for t, f in groups if t == technique):
                    results = groups[(technique, frames)]
                    enc, dec = _mean(r["encode_s"] for r in results), _mean(r["decode_s"] for r in results)
                    series[technique].append((frames, enc, dec))
                    rows.append([technique, frames, len(results), _fmt(enc, "{:.3g}"), _fmt(dec, "{:.3g}"),
                                 _fmt(enc / frames, "{:.3g}"), _fmt(_mean(r["bpp"] for r in results), "{:.4f}"),
                                 _fmt(_mean(r["psnr_rgb"] for r in results), "{:.2f}")])
            doc.table(["technique", "frames", "jobs", "encode s", "decode s", "encode s/frame", "bpp",
                       "PSNR RGB"], rows)
            self.add_figure(f"timing-{slug(dataset)}", plots.timing_figure(f"{dataset}: time against clip length",
                                                                           dict(series), self.styles),
                            f"{dataset}: encode and decode wall time against clip length")

    def stages(self) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, "Single-stage against two-stage")
        pairs = stage_pairs(data)
        if not pairs:
            doc.para("No pair of techniques differs only in schedule = single-stage / two-stage.")
            return
        doc.para("BD-rate of each single-stage technique against its two-stage twin (the anchor here), per "
                 "clip and averaged as above; negative: single-stage needs fewer bits. Time ratio: mean "
                 "encode time single-stage / two-stage.")
        rows = []
        for dataset in data.datasets:
            clips = data.clips.get(dataset, [])
            curves = []
            for single, two in pairs:
                cells = {m: [bd_cell(self.points.get((dataset, c), {}).get(two),
                                     self.points.get((dataset, c), {}).get(single), m, data.method, repr(two))
                             for c in clips] for m in data.metrics}
                enc = {label: _mean(p.encode_s for c in clips for p in self.points.get((dataset, c), {}).get(label, []))
                       for label in (single, two)}
                ratio = enc[single] / enc[two] if enc[two] and math.isfinite(enc[two]) and enc[two] > 0 else math.nan
                rows.append([dataset, single, two, *[mean_cell(cells[m]).text() for m in data.metrics],
                             _fmt(enc[single], "{:.3g}"), _fmt(enc[two], "{:.3g}"), _fmt(ratio, "{:.2f}")])
                metric = data.metrics[0]
                curves.append((two, [(p.bpp, p.quality(metric)) for p in average_curve(self.points, dataset, clips, two)],
                               single,
                               [(p.bpp, p.quality(metric)) for p in average_curve(self.points, dataset, clips, single)]))
            if any(c[1] or c[3] for c in curves):
                colours = [{"color": self.styles.get(two, plots.style(i))["color"],
                            "marker": self.styles.get(two, plots.style(i))["marker"]}
                           for i, (_, two) in enumerate(pairs)]
                self.add_figure(f"stages-{slug(dataset)}",
                                plots.stages_figure(f"{dataset}: single-stage (dashed) vs two-stage (solid)", curves,
                                                    data.metrics[0], colours),
                                f"{dataset}: single- against two-stage weight stepping, averaged over clips")
        doc.table(["dataset", "single-stage", "two-stage", *[f"BD-rate ({_METRIC_NAMES.get(m, m)})"
                                                            for m in data.metrics],
                   "encode s single", "encode s two", "time ratio"], rows)

    def per_frame_bits(self) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, "Per-frame bits of weight-step runs")
        runs: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
        rows = []
        for row in data.done():
            result = row["result"]
            bits = [f.get("bits") for f in result.get("per_frame", [])]
            if row["codec"] != "weightstep" or len(bits) < 2 or any(b is None for b in bits):
                continue
            if row["seed"] is not None and row["seed"] != min(data.run.get("seeds") or [row["seed"]]):
                continue  # one seed per line keeps the figure readable; the table lists the same seed
            label = _point_text(row["rate_point"])
            runs[row["technique"]][(row["dataset"], row["video_label"])][label] = [float(b) for b in bits]
            rows.append([row["technique"], f"{row['dataset']}/{row['video_label']}", label, len(bits),
                         _fmt(bits[0] / 1000, "{:.2f}"), _fmt(_mean(bits[1:]) / 1000, "{:.3f}"),
                         _fmt(max(bits[1:]) / 1000, "{:.3f}"), _fmt(result["bpp"], "{:.4f}")])
        if not rows:
            doc.para("No weight-step run (codec weightstep, more than one frame, bits known per frame) finished.")
            return
        doc.table(["technique", "clip", "rate point", "frames", "frame 0 kbit", "mean later kbit", "max later kbit",
                   "bpp"], rows)
        for technique in data.techniques:
            if technique not in runs:
                continue
            clips = list(runs[technique].items())
            shown = clips[:9]
            caption = f"{technique}: coded bits of each frame (first seed), one line per rate point"
            if len(clips) > len(shown):
                caption += f"; the first {len(shown)} of {len(clips)} clips"
            self.add_figure(f"bits-{slug(technique)}",
                            plots.bits_figure(f"{technique}: bits per frame",
                                              [(f"{d}/{c}", lines) for (d, c), lines in shown]), caption)

    def not_run(self) -> None:
        doc = self.doc
        doc.heading(2, "Jobs that did not run")
        groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for row in self.data.rows:
            if row["status"] in (FAILED, SKIPPED):
                groups[(row["status"], row["technique"], _first_line(row["error"]))].append(row)
        if not groups:
            doc.para("None: no job failed or was skipped.")
            return
        doc.table(["status", "technique", "jobs", "example", "reason"],
                  [[status, technique, len(rows), f"{rows[0]['dataset']}/{rows[0]['video_label']} "
                    f"{_point_text(rows[0]['rate_point'])}", reason]
                   for (status, technique, reason), rows in sorted(groups.items())])

    def build(self) -> None:
        self.provenance()
        self.inputs()
        self.bd_rates()
        self.rd_curves()
        self.timing()
        self.stages()
        self.per_frame_bits()
        self.points_table()
        self.not_run()


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One CSV row per job (done, failed and skipped)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        result = row.get("result") or {}
        values = {**{k: result.get(k) for k in ("frames", "width", "height", "bytes", "file_bytes", "bpp", "psnr_rgb",
                                                  "psnr_yuv", "ms_ssim", "encode_s", "decode_s", "device")},
                  **{k: row.get(k) for k in ("key", "status", "technique", "codec", "dataset", "video", "video_label",
                                             "rate_index", "seed", "bitstream")},
                  "rate_point": canonical_json(row.get("rate_point") or {}), "error": _first_line(row.get("error"), 500)}
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns the files."""
    data = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_DIR
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the report folder ({exc.strerror})") from None
    builder = _Builder(data, out)
    builder.build()
    written = []
    for name, png in builder.images.items():
        write_file(out / name, png)
        written.append(out / name)
    for stale in (out / "figures").glob("*.png"):  # figures of an earlier report that this one has not
        if f"figures/{stale.name}" not in builder.images:
            stale.unlink()
    title = f"{data.meta.get('name') or data.run['protocol_name']}: results"
    documents = {"summary.md": builder.doc.markdown(), "report.html": builder.doc.html(title, builder.images),
                 "results.csv": results_csv(data.rows)}
    for name, text in documents.items():
        write_file(out / name, text.encode("utf-8"))
        written.append(out / name)
    return ReportFiles(out_dir=out, files=written)


__all__ = ["FILES", "REPORT_DIR", "BdCell", "Doc", "Point", "ReportFiles", "RunData", "average_curve", "bd_cell",
           "bd_tables", "build_report", "load_run", "mean_cell", "not_run_reasons", "rd_points", "results_csv", "stage_pairs"]

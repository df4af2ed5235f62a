"""Reports of a run, read only from its results store: RD curves, BD-rates, timing, stages, per-frame bits.

``build_report(run_dir)`` writes into ``run_dir/report/`` (or ``out_dir``):

- ``summary.md``: the run's provenance, how things were measured, the BD-rate tables, every
  RD point, timing against clip length, single- against two-stage, per-frame bits of
  weight-step runs, where their bits go (anchor and step parts against the anchor codec's first
  and later frames at the same PSNR), and every job that did not run with its reason;
- ``report.html``: the same, self-contained (figures embedded as base64 PNG);
- ``results.csv``: one row per job of the run's grid (done, failed and skipped);
- ``figures/*.png``: the figures (matplotlib, Agg canvas).

Aggregation rules: :mod:`.report_data`. Documents and formatting: :mod:`.report_doc`; the seed
spread, the per-frame timeline and the visual comparison: :mod:`.report_more`; where the bits
go: :mod:`.report_bits`; two runs side by side: :mod:`.compare`.

Only the jobs planned by the latest ``weightstep run`` on the directory are reported.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightstep.errors import InputError
from weightstep.experiments import plots
from weightstep.experiments.jobs import canonical_json, slug
from weightstep.experiments.report_data import (
    BdCell,
    Point,
    RunData,
    _mean,
    average_curve,
    bd_cell,
    bd_tables,
    load_run,
    mean_cell,
    not_run_reasons,
    rd_points,
    stage_pairs,
)
from weightstep.experiments.report_doc import (
    Doc,
    _first_line,
    _fmt,
    _point_text,
    _when,
    write_assets,
    write_file,
)
from weightstep.experiments.specs import DONE, FAILED, SKIPPED

REPORT_DIR = "report"
FILES = ("summary.md", "report.html", "results.csv")
FULL_TABLE_LIMIT = 600  # rows of the RD points table in summary.md beyond which results.csv stands in

CSV_COLUMNS = ("key", "status", "technique", "codec", "dataset", "video", "video_label", "rate_index", "rate_point",
               "seed", "frames", "width", "height", "bytes", "file_bytes", "bpp", "psnr_rgb", "psnr_yuv", "ms_ssim",
               "encode_s", "decode_s", "device", "bitstream", "error")
_METRIC_NAMES = {"psnr_rgb": "PSNR RGB", "psnr_yuv": "PSNR YUV", "ms_ssim": "MS-SSIM"}


# the report ---------------------------------------------------------------------------------------

def _spread_text(point: Point, measure: str, pattern: str) -> str:
    """``mean`` for one seed, ``mean (min-max)`` for several."""
    text = _fmt(getattr(point, measure), pattern)
    if point.seeds > 1 and measure in point.spread:
        low, high = point.spread[measure]
        text += f" ({_fmt(low, pattern)}-{_fmt(high, pattern)})"
    return text


def _spread_verdict(points: dict, dataset: str, clips: Sequence[str], a: str, b: str, metric: str) -> str:
    """Whether ``a`` and ``b`` differ by more than their seed spread at the seeded rate points (dataset means)."""
    from weightstep.experiments.report_more import spread_verdicts

    curves = {t: average_curve(points, dataset, clips, t) for t in (a, b)}
    verdicts = spread_verdicts({t: c for t, c in curves.items() if c}, metric)
    if not verdicts:
        return "no seeded point to compare"
    return "; ".join(f"{gap:+.2f} at {bpp:.3g} bpp: {'within' if inside else 'beyond'} the spread ({spread:.2f})"
                     for _, _, bpp, gap, spread, inside in verdicts)


def _plotted(point: Point, metric: str) -> tuple[float, ...]:
    """A point for plots.rd_figure: (bpp, quality), with its min-max over seeds when it has several."""
    if point.seeds < 2 or metric not in point.spread:
        return (point.bpp, point.quality(metric))
    return (point.bpp, point.quality(metric), *point.low_high(metric), *point.low_high("bpp"))


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
        self.streams: dict[str, bytes] = {}  # bitstreams the visual comparison decoded, kept beside the report
        self.points = rd_points(data)
        self.styles = {label: plots.style(i) for i, label in enumerate(data.techniques)}
        self.compare: str | Path | None = None  # another run directory to set beside this one
        self.comparison: str | None = None  # comparison.csv's text, when compared

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
        if total > len(data.rows):
            doc.para(f"Partial run: {counts[DONE]} of the {total} planned jobs have a result and "
                     f"{total - len(data.rows)} have not run yet; every table and figure below shows only the "
                     "finished jobs (`weightstep run` with `--resume` on this run directory continues it).")
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
        self.measured_at()
        doc.heading(2, "How this was measured")
        doc.bullets([
            "Every rate is the size of a bitstream that was written to disk, read back and decoded; "
            "bpp = 8 x bytes / (frames x width x height). Conventional codecs: the elementary stream.",
            "Quality is measured on the decoded output against the source: PSNR per frame, then the mean over "
            "frames (RGB, and YUV 4:2:0 weighted (6Y+U+V)/8); MS-SSIM on RGB, mean over frames.",
            "A rate point run with several seeds is shown as the mean over its seeds, with the minimum and "
            "maximum over them (tables: mean (min-max); RD plots: min-max bars). Averaged curves carry the mean over "
            "clips of each clip's distance from its mean to its min and max.",
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

    def measured_at(self) -> None:
        """Which runs (commits) measured each technique's results, when they are more than one."""
        commits = {r["id"]: (r.get("git_commit") or "unknown")[:12] + ("+" if r.get("git_dirty") else "")
                   for r in self.data.runs}
        by_technique: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in self.data.done():
            by_technique[row["technique"]][commits.get(row.get("run_id"), "unknown")] += 1
        if len({c for counts in by_technique.values() for c in counts}) < 2:
            return
        self.doc.para("The results shown were measured at more than one commit ('+': with uncommitted changes). "
                      "A resumed run keeps a finished job whose key is unchanged, and a key covers the codec's "
                      "settings and stream format, not its code; `weightstep run --resume --redo TECHNIQUE` "
                      "measures a technique again at the current code. Results per commit:")
        self.doc.table(["technique", "results per commit"],
                       [[label, ", ".join(f"{c} ({by_technique[label][c]})" for c in dict.fromkeys(commits.values())
                                          if c in by_technique[label])]
                        for label in self.data.techniques if label in by_technique])

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
        techniques = self.data.meta.get("techniques", [])
        if techniques:
            self.doc.heading(3, "Techniques")
            self.doc.table(["codec", "technique", "block", "parameters", "rate points", "what it is"],
                           [[t["codec"], t["label"], t.get("group") or "-", _point_text(t.get("params") or {}),
                             len(t.get("rate_points") or []), t.get("description") or ""] for t in techniques])

    def bd_rates(self) -> None:
        for reference in [self.data.anchor, *self.data.also_against]:
            self.bd_rates_against(reference)

    def bd_rates_against(self, reference: str) -> None:
        doc, data = self.doc, self.data
        doc.heading(2, f"BD-rate against {reference}")
        if reference == data.anchor and any(r["seed"] not in (None, min(data.run.get("seeds") or [0])) for r in data.done()):
            doc.para("Curves of INR techniques are means over seeds; whether a gap between two techniques is "
                     "larger than the seeds' own spread is under Seeds and spread.")
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
            present = {t: sum(1 for c in clips if self.points.get((dataset, c), {}).get(t)) for t in averaged}
            partial = [f"{t} ({present[t]} of {len(clips)})" for t, pts in averaged.items() if not pts and present[t]]
            if partial:  # a mean over fewer clips would not compare with the others' means
                doc.para("Left out of the mean curves, for want of results on every clip (clips with results): "
                         + ", ".join(partial) + ". The per-clip plots below show them.")
            if any(averaged.values()):
                panels = [(m, {t: [_plotted(p, m) for p in pts] for t, pts in averaged.items() if pts})
                          for m in data.metrics]
                self.add_figure(f"rd-{slug(dataset)}-mean",
                                plots.rd_figure(f"{dataset}: mean over {len(clips)} clip(s)", panels, self.styles),
                                f"{dataset}: RD curves averaged over its clips (rate points present on every clip)")
            for metric in data.metrics:
                panels = [(clip, {t: [_plotted(p, metric) for p in pts]
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
                                     _spread_text(p, "bpp", "{:.4f}"), _spread_text(p, "psnr_rgb", "{:.2f}"),
                                     _spread_text(p, "psnr_yuv", "{:.2f}"), _spread_text(p, "ms_ssim", "{:.4f}"),
                                     _fmt(p.encode_s, "{:.2f}"), _fmt(p.decode_s, "{:.2f}"), p.seeds])
        if not rows:
            doc.para("No job finished.")
        elif len(rows) > FULL_TABLE_LIMIT:
            doc.para(f"{len(rows)} points: see results.csv (one row per job).")
        else:
            doc.para("Means over seeds; where a point ran with several seeds, (min-max) over them follows.")
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
                 "encode time single-stage / two-stage. Gap vs seed spread: at the rate points run with several "
                 "seeds, the quality gap between the two at equal bpp and whether it exceeds the seeds' min-max "
                 "range (see Seeds and spread).")
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
                             _fmt(enc[single], "{:.3g}"), _fmt(enc[two], "{:.3g}"), _fmt(ratio, "{:.2f}"),
                             _spread_verdict(self.points, dataset, clips, single, two, data.metrics[0])])
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
                   "encode s single", "encode s two", "time ratio", "gap vs seed spread"], rows)

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
        from weightstep.experiments import report_bits, report_more

        self.provenance()
        self.inputs()
        if self.compare is not None:
            from weightstep.experiments import compare

            self.comparison = compare.section(self, self.compare, FULL_TABLE_LIMIT)
        report_more.timeline(self)
        report_more.visual(self)
        self.bd_rates()
        self.rd_curves()
        report_more.seeds(self)
        self.timing()
        report_more.selection(self)
        self.stages()
        self.per_frame_bits()
        report_bits.bits_breakdown(self)
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


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *,
                 compare: str | Path | None = None) -> ReportFiles:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns the files.

    ``compare``: another run directory (the state before a change); the report then starts with
    both runs side by side and writes ``comparison.csv``.
    """
    data = load_run(run_dir)
    if compare is not None:
        load_run(compare)  # refuse a bad directory before anything is written
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_DIR
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the report folder ({exc.strerror})") from None
    builder = _Builder(data, out)
    builder.compare = compare
    builder.build()
    written = write_assets(out, builder.images, builder.streams)
    title = f"{data.meta.get('name') or data.run['protocol_name']}: results"
    documents = {"summary.md": builder.doc.markdown(), "report.html": builder.doc.html(title, builder.images),
                 "results.csv": results_csv(data.rows)}
    if builder.comparison is not None:
        documents["comparison.csv"] = builder.comparison
    for name, text in documents.items():
        write_file(out / name, text.encode("utf-8"))
        written.append(out / name)
    return ReportFiles(out_dir=out, files=written)


__all__ = ["FILES", "REPORT_DIR", "BdCell", "Doc", "Point", "ReportFiles", "RunData", "average_curve", "bd_cell",
           "bd_tables", "build_report", "load_run", "mean_cell", "not_run_reasons", "rd_points", "results_csv", "stage_pairs"]

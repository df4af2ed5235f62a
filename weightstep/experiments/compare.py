"""Two runs side by side: ``weightstep report RUN --compare BEFORE`` (a change's effect, in one table).

Points are matched by (dataset, clip, technique label, rate-point index), seeds averaged as in
the rest of the report, so the two runs may come from different commits or even protocol
versions: what matters is that the labels mean the same thing. For each technique the BD-rate
of this run's curve against the other run's curve of the same technique says, in one number per
clip, whether the change costs or saves bits at equal quality.

A change in quality smaller than the seed spread of the point (in either run) is marked: it is
not evidence of an effect.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from weightstep.experiments.report_data import Point, bd_cell, load_run, mean_cell, rd_points
from weightstep.experiments.report_doc import _fmt, _point_text, _when

COLUMNS = ("dataset", "clip", "technique", "rate_index", "rate_point", "bpp_before", "bpp_after", "bpp_change_pct",
           "psnr_before", "psnr_after", "psnr_change_db", "seed_spread_db", "encode_s_before", "encode_s_after",
           "note")


def _change(before: float, after: float) -> float | None:
    return 100.0 * (after - before) / before if before else None


def compare_rows(after, before) -> list[dict]:
    """One dict per matched or unmatched point: (dataset, clip, technique, rate index) of either run."""
    a_points, b_points = rd_points(after), rd_points(before)
    techniques = list(after.techniques) + [t for t in before.techniques if t not in after.techniques]
    keys = []
    for (dataset, clip), curves in list(a_points.items()) + list(b_points.items()):
        for technique in techniques:
            for point in curves.get(technique, []):
                key = (dataset, clip, technique, point.rate_index)
                if key not in keys:
                    keys.append(key)
    order = {t: i for i, t in enumerate(techniques)}
    clip_order: dict[tuple[str, str], int] = {}
    for run in (after, before):
        for dataset, clips in run.clips.items():
            for clip in clips:
                clip_order.setdefault((dataset, clip), len(clip_order))
    keys.sort(key=lambda k: (k[0], clip_order.get((k[0], k[1]), 1 << 30), k[1], order[k[2]], k[3]))
    rows = []
    for dataset, clip, technique, index in keys:
        a = _find(a_points, dataset, clip, technique, index)
        b = _find(b_points, dataset, clip, technique, index)
        row = {"dataset": dataset, "clip": clip, "technique": technique, "rate_index": index,
               "rate_point": _point_text((a or b).rate_point), "bpp_before": b.bpp if b else None,
               "bpp_after": a.bpp if a else None, "psnr_before": b.psnr_rgb if b else None,
               "psnr_after": a.psnr_rgb if a else None, "encode_s_before": b.encode_s if b else None,
               "encode_s_after": a.encode_s if a else None, "bpp_change_pct": None, "psnr_change_db": None,
               "seed_spread_db": None, "note": ""}
        if a and b:
            row["bpp_change_pct"] = _change(b.bpp, a.bpp)
            row["psnr_change_db"] = a.psnr_rgb - b.psnr_rgb
            spread = max(a.range("psnr_rgb"), b.range("psnr_rgb"))
            if a.seeds > 1 or b.seeds > 1:
                row["seed_spread_db"] = spread
                if abs(row["psnr_change_db"]) <= spread:
                    row["note"] = "within the seed spread"
            if (a.rate_point or {}) != (b.rate_point or {}):
                row["note"] = (row["note"] + "; " if row["note"] else "") + "rate point differs: " + _point_text(
                    b.rate_point) + " before"
        else:
            row["note"] = "only in this run" if a else "only in the other run"
        rows.append(row)
    return rows


def _find(points: dict, dataset: str, clip: str, technique: str, index: int) -> Point | None:
    for point in points.get((dataset, clip), {}).get(technique, []):
        if point.rate_index == index:
            return point
    return None


def comparison_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return buffer.getvalue()


def section(builder, other_dir: str | Path, limit: int = 600) -> str:
    """Add the comparison with ``other_dir`` to the builder's document; returns comparison.csv's text."""
    doc, after = builder.doc, builder.data
    before = load_run(other_dir)
    run = before.run
    doc.heading(2, f"Against another run: {other_dir}")
    doc.bullets([f"this run: {after.run_dir}, commit {(after.run.get('git_commit') or '?')[:12]}, started "
                 f"{_when(after.run.get('started'))}",
                 f"other run (before): {other_dir}, protocol {run['protocol_name']}, commit "
                 f"{(run.get('git_commit') or '?')[:12]}, started {_when(run.get('started'))}"])
    rows = compare_rows(after, before)
    b_points, a_points = rd_points(before), rd_points(after)
    summary = []
    for technique in after.techniques:
        for dataset in after.datasets:
            clips = after.clips.get(dataset, [])
            cells = [bd_cell(b_points.get((dataset, c), {}).get(technique), a_points.get((dataset, c), {}).get(technique),
                             "psnr_rgb", after.method, "the other run") for c in clips]
            matched = [r for r in rows if r["technique"] == technique and r["dataset"] == dataset
                       and r["psnr_change_db"] is not None]
            if not matched:
                continue
            within = sum(1 for r in matched if r["note"].startswith("within"))
            mean_change = sum(r["psnr_change_db"] for r in matched) / len(matched)
            summary.append([dataset, technique, mean_cell(cells).text(), len(matched), _fmt(mean_change, "{:+.2f}"),
                            f"{within}/{len(matched)}" if any(r["seed_spread_db"] is not None for r in matched)
                            else "-"])
    doc.para("Per technique: BD-rate (PSNR RGB) of this run's curve against the other run's curve of the same "
             "technique (negative: this run needs fewer bits at equal quality), and the mean PSNR change over "
             "matched rate points.")
    if summary:
        doc.table(["dataset", "technique", "BD-rate vs other run", "matched points", "mean PSNR change (dB)",
                   "changes within seed spread"], summary)
    else:
        doc.para("No technique has matching rate points in both runs.")
    table = [[r["dataset"], r["clip"], r["technique"], r["rate_point"],
              f"{_fmt(r['bpp_before'], '{:.4f}')} -> {_fmt(r['bpp_after'], '{:.4f}')}",
              _fmt(r["bpp_change_pct"], "{:+.1f} %"),
              f"{_fmt(r['psnr_before'], '{:.2f}')} -> {_fmt(r['psnr_after'], '{:.2f}')}",
              _fmt(r["psnr_change_db"], "{:+.2f}"),
              f"{_fmt(r['encode_s_before'], '{:.3g}')} -> {_fmt(r['encode_s_after'], '{:.3g}')}", r["note"]]
             for r in rows]
    if len(table) > limit:
        doc.para(f"{len(table)} points: see comparison.csv.")
    else:
        doc.table(["dataset", "clip", "technique", "rate point", "bpp before -> after", "bpp change",
                   "PSNR RGB before -> after", "PSNR change (dB)", "encode s before -> after", "note"], table)
    return comparison_csv(rows)


__all__ = ["COLUMNS", "compare_rows", "comparison_csv", "section"]

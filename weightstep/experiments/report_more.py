"""Report sections beyond the tables: frames over time, decoded crops, and the spread over seeds.

- :func:`timeline`: per-frame PSNR and bits over time of every technique at a common rate, one
  row per clip of the dataset's longest length (where weight stepping freezes, decays or
  refreshes its anchor shows at a glance);
- :func:`visual`: one decoded frame crop per technique beside the source, each at its rate point
  nearest a common bpp; decoded from the stored bitstreams (the source of truth), not stored. The
  report keeps a copy of each bitstream it decodes under ``streams/`` beside itself, so a checkout
  that has the database and the report but not the run's (git-ignored) bitstreams draws it again;
- :func:`seeds`: the spread of results run with several seeds, and which differences between
  techniques lie within it;
- :func:`selection`: among the variants one ``vary`` table made (capacity.toml's sizes and slice
  lengths), the one the rule below picks for the core run.

The common rate of a clip is the geometric middle of the anchor technique's bpp range there
(the median of every technique's bpp when the anchor has none); each technique shows its rate
point whose bpp is nearest to it in log scale, first seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from weightstep.errors import WeightstepError
from weightstep.experiments import plots
from weightstep.experiments.jobs import read_options, slug
from weightstep.experiments.report_data import Point, average_curve, bd_cell, mean_cell
from weightstep.experiments.report_doc import STREAMS_DIR, _fmt, _point_text

CROP_MAX = (160, 120)
"""Largest crop (width, height) of the visual comparison, centred in the frame."""

_METRIC_NAMES = {"psnr_rgb": "PSNR RGB", "psnr_yuv": "PSNR YUV", "ms_ssim": "MS-SSIM"}


# choosing what to show ----------------------------------------------------------------------------

def longest_clips(data, dataset: str) -> list[str]:
    """The dataset's clips of its longest length (frames), in order."""
    frames: dict[str, int] = {}
    for video in data.meta.get("videos", []):
        if video["dataset"] == dataset and video.get("frames"):
            frames[video["label"]] = int(video["frames"])
    for row in data.done():
        if row["dataset"] == dataset:
            frames.setdefault(row["video_label"], int(row["result"]["frames"]))
    clips = [c for c in data.clips.get(dataset, []) if c in frames]
    if not clips:
        return []
    longest = max(frames[c] for c in clips)
    return [c for c in clips if frames[c] == longest]


def common_rate(data, curves: dict[str, list[Point]]) -> float | None:
    """The clip's common bpp: the middle of the anchor's range, else the median of every point."""
    anchor = [p.bpp for p in curves.get(data.anchor, []) if p.bpp > 0]
    if anchor:
        return math.sqrt(min(anchor) * max(anchor))
    every = sorted(p.bpp for points in curves.values() for p in points if p.bpp > 0)
    return every[len(every) // 2] if every else None


def nearest_rows(data, points: dict, dataset: str, clip: str) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """(common bpp, {technique: done row of its rate point nearest it, first seed}) on one clip."""
    curves = points.get((dataset, clip), {})
    target = common_rate(data, curves)
    if target is None:
        return None, {}
    chosen: dict[str, dict[str, Any]] = {}
    for technique in data.techniques:
        candidates = [p for p in curves.get(technique, []) if p.bpp > 0]
        if not candidates:
            continue
        best = min(candidates, key=lambda p: abs(math.log(p.bpp / target)))
        rows = [r for r in data.done() if r["dataset"] == dataset and r["video_label"] == clip
                and r["technique"] == technique and r["rate_index"] == best.rate_index]
        rows.sort(key=lambda r: (r["seed"] is not None, r["seed"] or 0))
        if rows:
            chosen[technique] = rows[0]
    return target, chosen


# per-frame quality and bits over time -------------------------------------------------------------

def timeline(builder) -> None:
    doc, data = builder.doc, builder.data
    doc.heading(2, "Quality and bits per frame at a common rate")
    doc.para("Each technique at its rate point nearest the clip's common bpp (the geometric middle of the anchor's "
             f"({data.anchor}) bpp range), first seed; the clips of each dataset's longest length. Bits per frame: "
             "what each frame's part of the bitstream costs (conventional codecs: its packets).")
    rows = []
    for dataset in data.datasets:
        panels = []
        for clip in longest_clips(data, dataset):
            target, chosen = nearest_rows(data, builder.points, dataset, clip)
            series = {}
            for technique, row in chosen.items():
                frames = row["result"].get("per_frame") or []
                series[technique] = ([f.get("psnr_rgb") for f in frames], [f.get("bits") for f in frames])
                rows.append([dataset, clip, _fmt(target, "{:.4f}"), technique, _point_text(row["rate_point"]),
                             _fmt(row["result"]["bpp"], "{:.4f}"), _fmt(row["result"]["psnr_rgb"], "{:.2f}")])
            if series:
                panels.append((f"{clip} (~{target:.3g} bpp)", series))
        if panels:
            builder.add_figure(f"timeline-{slug(dataset)}",
                               plots.timeline_figure(f"{dataset}: PSNR and bits per frame at a common rate", panels,
                                                     builder.styles),
                               f"{dataset}: per-frame PSNR and bits of every technique at a common rate")
    if rows:
        doc.table(["dataset", "clip", "common bpp", "technique", "rate point", "bpp", "PSNR RGB"], rows)
    else:
        doc.para("No job finished.")


# decoded crops ------------------------------------------------------------------------------------

def _crop(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> centred crop of at most CROP_MAX as H x W x 3 uint8."""
    _, height, width = rgb.shape
    w, h = min(width, CROP_MAX[0]), min(height, CROP_MAX[1])
    x, y = (width - w) // 2, (height - h) // 2
    tile = np.clip(rgb[:, y:y + h, x:x + w], 0.0, 1.0)
    return (tile.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def kept_name(row: dict[str, Any]) -> str:
    """Where the report keeps a copy of ``row``'s bitstream, relative to the report folder."""
    parts = [part for part in PurePosixPath(row["bitstream"]).parts if part not in ("/", "..", ".")]
    return "/".join([STREAMS_DIR, *(parts[1:] if parts[:1] == ["bitstreams"] else parts)])


def _stream_path(run_dir, out_dir, row: dict[str, Any]) -> Path | None:
    """The row's bitstream: the run's own file, else the copy an earlier report kept; None if neither.

    A file counts only at the size the row recorded, so a copy left from a job measured again with
    other bytes is not taken for it.
    """
    if not row.get("bitstream"):
        return None
    size = (row.get("result") or {}).get("file_bytes")
    for path in (Path(run_dir) / row["bitstream"], Path(out_dir) / kept_name(row)):
        if path.is_file() and (size is None or path.stat().st_size == size):
            return path
    return None


def _decoded_frame(stream: bytes, index: int) -> np.ndarray:
    from weightstep.codecs import harness

    _, video = harness.decode_bytes(stream, "cpu")
    return video.rgb()[index]


def _visual_clip(builder, dataset: str) -> tuple[str, float, dict[str, dict[str, Any]]] | None:
    """(clip, common bpp, rows) of the dataset's longest clip with the most stored bitstreams.

    A run resumed from a committed database keeps no bitstreams of its earlier jobs, so the first
    clip may have none to decode while another has them all; ties go to the first clip.
    """
    data = builder.data
    best, best_count = None, -1
    for clip in longest_clips(data, dataset):
        target, chosen = nearest_rows(data, builder.points, dataset, clip)
        if not chosen:
            continue
        count = sum(1 for row in chosen.values() if _stream_path(data.run_dir, builder.out_dir, row))
        if count > best_count:
            best, best_count = (clip, target, chosen), count
    return best


def visual(builder) -> None:
    doc, data = builder.doc, builder.data
    doc.heading(2, "Visual comparison")
    doc.para("The last frame of one clip per dataset (of its longest clips, the first with the most stored "
             f"bitstreams), centre crop of at most {CROP_MAX[0]}x{CROP_MAX[1]} pixels shown pixel for pixel: the "
             "source, then each technique at its rate point nearest the common bpp, decoded from its stored "
             f"bitstream (the run's, or the copy this report keeps under `{STREAMS_DIR}/`).")
    from weightstep.video.readers import open_video

    problems = []
    shown = False
    for dataset in data.datasets:
        picked = _visual_clip(builder, dataset)
        if picked is None:
            continue
        clip, target, chosen = picked
        first = next(iter(chosen.values()))
        index = int(first["result"]["frames"]) - 1
        try:
            source = open_video(first["spec"], read_options(first["options"])).rgb()[index]
        except (WeightstepError, OSError) as exc:
            problems.append(f"{dataset}/{clip}: the source cannot be read here ({exc})")
            continue
        tiles = [(f"source, frame {index}", _crop(source))]
        for technique, row in chosen.items():
            result = row["result"]
            path = _stream_path(data.run_dir, builder.out_dir, row)
            if path is None:
                problems.append(f"{technique} on {dataset}/{clip}: not decoded (its bitstream "
                                f"{row.get('bitstream')} is neither in the run nor kept by the report)")
                continue
            try:
                stream = path.read_bytes()
                frame = _decoded_frame(stream, index)
            except (WeightstepError, OSError, ValueError, RuntimeError) as exc:
                problems.append(f"{technique} on {dataset}/{clip}: not decoded ({type(exc).__name__}: {exc})")
                continue
            builder.streams[kept_name(row)] = stream
            tiles.append((f"{technique}\n{result['bpp']:.3f} bpp, {result['psnr_rgb']:.1f} dB", _crop(frame)))
        builder.add_figure(f"visual-{slug(dataset)}",
                           plots.crops_figure(f"{dataset}/{clip}: frame {index} near {target:.3g} bpp", tiles),
                           f"{dataset}/{clip}: decoded crops of every technique near {target:.3g} bpp beside the "
                           "source")
        shown = True
    if not shown:
        doc.para("No decoded frame to show.")
    doc.bullets(problems)


# seeds and spread ---------------------------------------------------------------------------------

def _interpolate(curve: Sequence[Point], bpp: float, metric: str) -> float | None:
    """Quality of ``curve`` at ``bpp`` (linear in log bpp), None outside its range."""
    points = sorted((p.bpp, p.quality(metric)) for p in curve if p.bpp > 0)
    if len(points) < 2 or not points[0][0] <= bpp <= points[-1][0]:
        return None
    xs = [math.log(b) for b, _ in points]
    return float(np.interp(math.log(bpp), xs, [q for _, q in points]))


def spread_verdicts(curves: dict[str, list[Point]], metric: str) -> list[tuple[str, str, float, float, float, bool]]:
    """(A, B, A's bpp, quality gap A - B at that bpp, spread, within) at A's points run with several seeds.

    The spread is the larger of A's min-max range there and B's widest range over its own seeded
    points (0 for a deterministic technique); the gap is within it when |gap| <= spread. Each
    unordered pair appears once: at the first technique's seeded points, or, where none of them
    lies within the other's bpp range, at the other's.
    """
    widest = {t: max((p.range(metric) for p in pts if p.seeds > 1), default=0.0) for t, pts in curves.items()}

    def compare(a: str, b: str) -> list[tuple[str, str, float, float, float, bool]]:
        found = []
        for point in (p for p in curves[a] if p.seeds > 1):
            quality = _interpolate(curves[b], point.bpp, metric)
            if quality is not None:
                gap = point.quality(metric) - quality
                spread = max(point.range(metric), widest.get(b, 0.0))
                found.append((a, b, point.bpp, gap, spread, abs(gap) <= spread))
        return found

    out = []
    names = list(curves)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out.extend(compare(a, b) or compare(b, a))
    return out


def seeds(builder) -> None:
    doc, data = builder.doc, builder.data
    metric = data.metrics[0]
    name = _METRIC_NAMES.get(metric, metric)
    doc.heading(2, "Seeds and spread")
    rows = []
    for (dataset, clip), curves in builder.points.items():
        for technique in data.techniques:
            for p in curves.get(technique, []):
                if p.seeds > 1:
                    low, high = p.low_high(metric)
                    b_low, b_high = p.low_high("bpp")
                    rows.append([dataset, clip, technique, _point_text(p.rate_point), p.seeds,
                                 f"{_fmt(p.bpp, '{:.4f}')} ({_fmt(b_low, '{:.4f}')}-{_fmt(b_high, '{:.4f}')})",
                                 f"{_fmt(p.quality(metric), '{:.2f}')} ({_fmt(low, '{:.2f}')}-{_fmt(high, '{:.2f}')})",
                                 _fmt(high - low, "{:.2f}")])
    if not rows:
        doc.para("No rate point ran with more than one seed: every result is one draw of its fit.")
        return
    doc.para(f"Rate points run with several seeds: mean (min-max) over the seeds; the {name} range is how far one "
             "draw of a noisy fit can move a result.")
    doc.table(["dataset", "clip", "technique", "rate point", "seeds", "bpp", name, "range"], rows)
    within, beyond = [], 0
    for dataset in data.datasets:
        clips = data.clips.get(dataset, [])
        curves = {t: average_curve(builder.points, dataset, clips, t) for t in data.techniques}
        for a, b, bpp, gap, spread, inside in spread_verdicts({t: c for t, c in curves.items() if c}, metric):
            if inside:
                within.append([dataset, a, b, _fmt(bpp, "{:.4f}"), _fmt(gap, "{:+.2f}"), _fmt(spread, "{:.2f}")])
            else:
                beyond += 1
    doc.para(f"Differences within the spread (dataset means, as the RD curves): at each seeded point of a technique, "
             f"its {name} minus the other technique's curve at the same bpp (linear in log bpp), against the larger "
             "of the two techniques' min-max ranges over seeds. Such a difference is not evidence that one is better.")
    if within:
        doc.table(["dataset", "technique", "against", "bpp", f"gap ({name})", "seed spread"], within)
    else:
        doc.para("No difference between techniques at a seeded rate point lies within the seed spread.")
    doc.para(f"{beyond} other comparison(s) at seeded rate points differ by more than the seed spread.")


# choosing among variants ---------------------------------------------------------------------------

TIME_LIMIT = 2.0
"""A variant is eligible when its encode time per frame is at most this many times the reference's."""


def _reference(data, variants: list[str]) -> str:
    """What a vary table's variants are measured against: the protocol's anchor when it is one of
    them, else the table's first variant (its first combination of values)."""
    return data.anchor if data.anchor in variants else variants[0]


def _lagrangian(point: Point) -> float | None:
    """D + lambda * bpp of a point swept by lambda (D: the RGB MSE on [0,1] its PSNR implies), else None."""
    lam = point.rate_point.get("lambda", point.rate_point.get("lam"))
    if not isinstance(lam, (int, float)) or not math.isfinite(point.psnr_rgb):
        return None
    return 10 ** (-point.psnr_rgb / 10) + float(lam) * point.bpp


def cost_change(reference: Sequence[Point] | None, test: Sequence[Point] | None) -> tuple[float | None, int]:
    """Mean change (percent) of D + lambda R from ``reference`` to ``test`` at the lambdas both ran.

    Every INR codec minimises this cost for its lambda, so at equal lambda it ranks two variants
    whether or not their curves overlap in quality (where a BD-rate is not defined)."""
    ref = {p.rate_index: _lagrangian(p) for p in reference or []}
    changes = [100.0 * (cost / ref[p.rate_index] - 1.0) for p in test or []
               if (cost := _lagrangian(p)) is not None and ref.get(p.rate_index)]
    return (sum(changes) / len(changes) if changes else None), len(changes)


def select_variants(builder, dataset: str, variants: list[str]) -> tuple[list[list[str]], str | None, str]:
    """(table rows, the selected variant or None, why) for one ``vary`` table's variants on one dataset.

    Over the dataset's longest clips, against the table's reference (:func:`_reference`): the mean
    change of the Lagrangian cost D + lambda R at equal lambda when the rate points are lambdas (the
    INR codecs), else the mean BD-rate (first metric); the BD-rate is shown either way, and the mean
    encode seconds per frame. The selected variant has the lowest criterion among those encoding at
    most TIME_LIMIT times slower per frame than the reference.
    """
    data, points = builder.data, builder.points
    clips = longest_clips(data, dataset)
    metric = data.metrics[0]
    reference = _reference(data, variants)

    def per_frame(technique: str) -> float:
        times = [p.encode_s / p.frames for c in clips for p in points.get((dataset, c), {}).get(technique, [])
                 if p.frames]
        return sum(times) / len(times) if times else math.nan

    def curve(clip: str, technique: str) -> list[Point] | None:
        return points.get((dataset, clip), {}).get(technique)

    by_cost = any(_lagrangian(p) is not None for c in clips for p in curve(c, reference) or [])
    limit = TIME_LIMIT * per_frame(reference)
    rows, scored = [], []
    for variant in variants:
        if variant == reference:
            bd_text, cost_text, value = "0.0 % (the reference)", "0.0 %" if by_cost else "-", 0.0
        else:
            cell = mean_cell([bd_cell(curve(c, reference), curve(c, variant), metric, data.method,
                                      f"the reference {reference!r}") for c in clips])
            bd_text, value = cell.text(), cell.value
            cost_text = "-"
            if by_cost:
                changes = [cost_change(curve(c, reference), curve(c, variant)) for c in clips]
                pairs = sum(n for _, n in changes)
                values = [v * n for v, n in changes if v is not None]
                value = sum(values) / pairs if pairs else None
                cost_text = f"{value:+.1f} % ({pairs} points)" if value is not None else "n/a: no common lambda"
        speed = per_frame(variant)
        eligible = value is not None and math.isfinite(speed) and (not math.isfinite(limit) or speed <= limit)
        if eligible:
            scored.append((value, variant))
        rows.append([dataset, variant, cost_text, bd_text, _fmt(speed, "{:.3g}"), "yes" if eligible else "no"])
    if not scored:
        return rows, None, "no variant has a criterion and an encode time within the limit"
    chosen = min(scored)[1]
    for row in rows:
        row.append("selected" if row[1] == chosen else "")
    return rows, chosen, ""


def selection(builder) -> None:
    data = builder.data
    groups: dict[str, list[str]] = {}
    for technique in data.meta.get("techniques", []):
        if technique.get("variant_of"):
            groups.setdefault(technique["variant_of"], []).append(technique["label"])
    groups = {base: labels for base, labels in groups.items() if len(labels) > 1}
    if not groups:
        return
    doc = builder.doc
    name = _METRIC_NAMES.get(data.metrics[0], data.metrics[0])
    doc.heading(2, "Selection among variants")
    doc.para(f"For each [[techniques]] table with `vary`, over each dataset's longest clips, every variant against "
             f"the table's reference (the anchor {data.anchor!r} when it is one of the variants, else the table's "
             "first variant): the mean change of the cost D + lambda x bpp at equal lambda (D the RGB MSE on [0,1] "
             "that the PSNR implies; every INR codec minimises exactly this, so it ranks variants whose curves do "
             f"not overlap), the mean BD-rate ({name}), and the encode seconds per frame. The selected variant "
             "(for core.toml) has the lowest cost change (the lowest BD-rate for techniques not swept by lambda) "
             f"among those whose encode time per frame is at most {TIME_LIMIT:g} times the reference's.")
    for base, variants in groups.items():
        table, picks = [], []
        for dataset in data.datasets:
            if not data.clips.get(dataset):
                continue  # a dataset left out of this run (no clips): nothing to select on
            rows, chosen, why = select_variants(builder, dataset, variants)
            table.extend(row + [""] * (7 - len(row)) for row in rows)
            picks.append(f"{base} on {dataset}: " + (chosen if chosen else f"none ({why})"))
        if not table:
            continue
        doc.heading(3, base)
        doc.table(["dataset", "variant", "cost change vs reference", "BD-rate vs reference", "encode s/frame",
                   "eligible", ""], table)
        doc.bullets(picks)


__all__ = ["CROP_MAX", "TIME_LIMIT", "common_rate", "cost_change", "longest_clips", "nearest_rows", "seeds",
           "select_variants", "selection", "spread_verdicts", "timeline", "visual"]

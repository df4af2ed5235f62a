"""Report section "Where the bits go": each weight-step result's bytes split into its parts, set
against what the anchor technique (H.264 in the protocols) spends at the same quality.

A weight-step stream is anchors (network weights, and latents for the grid network) plus steps
(a warp and an update for the motion kinds). Per result (first seed, the clips of each dataset's
longest length): the mean anchor and the mean step in bytes, their parts where the encoder
recorded them, and, on the anchor technique's RD curve of the same clip at the same clip PSNR
(interpolated linearly in PSNR between its two nearest points, log-linearly in bytes), its first
frame's and its later frames' mean bytes. The ratios say which half of a stream is the dearer
one against a conventional codec: its intra frame or its predicted frames.

Which frames are anchors comes from the encoder's ``changed_weights`` (None at an anchor), so a
GOP's refreshes count as anchors; the first frame's bits include the container header, as in the
per-frame bits everywhere else.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from weightstep.experiments.report_doc import _fmt, _point_text
from weightstep.experiments.report_more import longest_clips

__all__ = ["bits_breakdown", "split_row", "reference_bytes"]


def split_row(result: dict[str, Any]) -> dict[str, float] | None:
    """The parts of one weight-step result in bytes (means over anchors and over steps), or None
    when the result does not record its frames' bits."""
    bits = [f.get("bits") for f in result.get("per_frame") or []]
    if len(bits) < 2 or any(b is None for b in bits):
        return None
    extra = result.get("extra") or {}
    changed = extra.get("changed_weights") or []
    anchors = [i for i, c in enumerate(changed) if c is None] if len(changed) == len(bits) else [0]
    anchors = anchors or [0]
    steps = [i for i in range(len(bits)) if i not in anchors]
    out: dict[str, float] = {"anchors": float(len(anchors)),
                             "anchor": statistics.fmean(bits[i] for i in anchors) / 8,
                             "step": statistics.fmean(bits[i] for i in steps) / 8 if steps else math.nan}
    facts = extra.get("anchors") or ([extra["anchor"]] if extra.get("anchor") else [])
    for part in ("latent_bytes", "weight_bytes"):
        values = [f[part] for f in facts if f.get(part) is not None]
        if values:
            out[part] = statistics.fmean(values)
    warps = [s["warp_bytes"] for s in extra.get("steps") or [] if s.get("warp_bytes") is not None]
    if warps:
        out["warp_bytes"] = statistics.fmean(warps)
    return out


def reference_bytes(curve: Sequence[tuple[float, float, float]], psnr: float) -> tuple[float, float] | None:
    """(first frame, mean later frame) bytes of a reference curve of (psnr, first, later) points
    at ``psnr``; None outside the curve's PSNR range."""
    points = sorted(p for p in curve if p[1] > 0 and p[2] > 0)
    if len(points) < 2 or not points[0][0] <= psnr <= points[-1][0]:
        return None
    for (q0, f0, l0), (q1, f1, l1) in zip(points, points[1:], strict=False):
        if q0 <= psnr <= q1:
            t = 0.0 if q1 == q0 else (psnr - q0) / (q1 - q0)
            return (math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0))),
                    math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))))
    return None


def _reference_curves(data) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    curves: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    first_seed = min(data.run.get("seeds") or [0])
    for row in data.done():
        if row["technique"] != data.anchor or row["seed"] not in (None, first_seed):
            continue
        bits = [f.get("bits") for f in row["result"].get("per_frame") or []]
        if len(bits) < 2 or any(b is None for b in bits):
            continue
        curves[(row["dataset"], row["video_label"])].append(
            (float(row["result"]["psnr_rgb"]), bits[0] / 8, statistics.fmean(bits[1:]) / 8))
    return curves


def bits_breakdown(builder) -> None:
    doc, data = builder.doc, builder.data
    doc.heading(2, "Where the bits go")
    doc.para(f"Weight-step results (first seed, each dataset's longest clips): the mean anchor and the mean step in "
             f"bytes with their parts, and what {data.anchor} spends at the same clip PSNR on the same clip "
             "(interpolated on its RD curve): its first frame and the mean of its later frames. Anchor x and step x: "
             f"how many times {data.anchor}'s first and later frames each costs. Frame 0 includes the container "
             "header; a GOP's refreshes count as anchors.")
    curves = _reference_curves(data)
    first_seed = min(data.run.get("seeds") or [0])
    rows, ratios = [], defaultdict(lambda: ([], []))
    for dataset in data.datasets:
        clips = set(longest_clips(data, dataset))
        for row in data.done():
            if (row["dataset"] != dataset or row["video_label"] not in clips or row["codec"] != "weightstep"
                    or row["seed"] not in (None, first_seed)):
                continue
            parts = split_row(row["result"])
            if parts is None:
                continue
            psnr = float(row["result"]["psnr_rgb"])
            reference = reference_bytes(curves.get((dataset, row["video_label"]), []), psnr)
            anchor_ratio = step_ratio = None
            if reference is not None:
                anchor_ratio, step_ratio = parts["anchor"] / reference[0], parts["step"] / reference[1]
                ratios[row["technique"]][0].append(anchor_ratio)
                ratios[row["technique"]][1].append(step_ratio)
            rows.append((row["technique"], dataset, row["video_label"], row["rate_index"], [
                row["technique"], f"{dataset}/{row['video_label']}", _point_text(row["rate_point"]),
                _fmt(psnr, "{:.2f}"), _fmt(parts["anchor"], "{:.0f}"), _fmt(parts.get("latent_bytes"), "{:.0f}"),
                _fmt(parts.get("weight_bytes"), "{:.0f}"), _fmt(parts["step"], "{:.0f}"),
                _fmt(parts.get("warp_bytes"), "{:.0f}"),
                _fmt(reference[0] if reference else None, "{:.0f}"), _fmt(reference[1] if reference else None, "{:.0f}"),
                _fmt(anchor_ratio, "{:.1f}"), _fmt(step_ratio, "{:.1f}")]))
    if not rows:
        doc.para("No weight-step result with per-frame bits on these clips.")
        return
    order = {t: i for i, t in enumerate(data.techniques)}
    summary = [[t, len(a), _fmt(statistics.median(a), "{:.1f}"), _fmt(statistics.median(s), "{:.1f}")]
               for t, (a, s) in sorted(ratios.items(), key=lambda kv: order.get(kv[0], 0)) if a]
    if summary:
        doc.para(f"Medians over the results inside {data.anchor}'s PSNR range:")
        doc.table(["technique", "results", f"anchor x {data.anchor} first frame",
                   f"step x {data.anchor} later frame"], summary)
    rows.sort(key=lambda r: (order.get(r[0], 0), r[1], r[2], r[3]))
    doc.table(["technique", "clip", "rate point", "PSNR RGB", "anchor B", "latents B", "weights B", "step B", "warp B",
               f"{data.anchor} frame 0 B", f"{data.anchor} later B", "anchor x", "step x"], [r[-1] for r in rows])

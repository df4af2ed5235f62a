"""Report figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no global state).

Each function takes plain numbers and returns the PNG; the report module decides what goes
in. A technique keeps its colour and marker in every figure (``style``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

METRIC_LABELS = {"psnr_rgb": "PSNR RGB (dB)", "psnr_yuv": "PSNR YUV 4:2:0 (dB)", "ms_ssim": "MS-SSIM (RGB)"}
_MARKERS = "osD^v<>pPX*h"


def style(index: int) -> dict:
    """Colour and marker of the technique at ``index`` in protocol order."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors if index < 10 else colormaps["tab20b"].colors
    return {"color": colours[index % len(colours)], "marker": _MARKERS[index % len(_MARKERS)]}


LEGEND_IN = 2.4  # inches at the right of a figure kept for its legend


def _figure(width: float, height: float, *, legend: bool = True):
    """A figure with fixed margins (a layout engine costs more than the drawing) and room for a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    right = width - (LEGEND_IN if legend else 0.2)
    figure.subplots_adjust(left=0.75 / width, right=right / width, bottom=0.6 / height, top=1 - 0.55 / height,
                           wspace=0.32, hspace=0.6)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    return buffer.getvalue()


def _log(axis, ticks: Sequence[float] | None = None) -> None:
    """A log axis labelled in plain numbers (0.3, 1, 2) rather than powers of ten."""
    from matplotlib.ticker import FixedLocator, LogFormatter, NullFormatter

    class Plain(LogFormatter):
        """matplotlib's choice of which log ticks get a label, written as 0.03 rather than 3e-02."""

        def __call__(self, x, pos=None):
            if not super().__call__(x, pos):
                return ""
            return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"

    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False))
    if ticks:
        axis.set_major_locator(FixedLocator(sorted(set(ticks))))
        axis.set_minor_formatter(NullFormatter())


def _legend(figure, handles_labels: dict) -> None:
    if handles_labels:
        width, height = figure.get_size_inches()
        figure.legend(list(handles_labels.values()), list(handles_labels.keys()), loc="upper left",
                      bbox_to_anchor=(1 - (LEGEND_IN - 0.1) / width, 1 - 0.5 / height), fontsize="small",
                      frameon=False)


Curve = Sequence[tuple[float, ...]]
"""(bpp, quality) points; a point run with several seeds may carry its spread as
(bpp, quality, quality min, quality max, bpp min, bpp max), drawn as min-max error bars."""


def _spread_bars(ax, points: Sequence[tuple[float, ...]], colour) -> None:
    """Min-max bars (over seeds) of the points that carry them."""
    spread = [p for p in points if len(p) >= 6]
    if not spread:
        return
    x = [p[0] for p in spread]
    y = [p[1] for p in spread]
    def below(a, b):  # a mean and its min can differ by rounding the wrong way
        return [max(0.0, p[a] - p[b]) for p in spread]

    ax.errorbar(x, y, yerr=[below(1, 2), [max(0.0, p[3] - p[1]) for p in spread]],
                xerr=[below(0, 4), [max(0.0, p[5] - p[0]) for p in spread]], fmt="none", ecolor=colour,
                elinewidth=0.9, capsize=2.5)


def rd_figure(title: str, panels: Sequence[tuple[str, dict[str, Curve]]], styles: dict[str, dict],
              metric: str | None = None, columns: int = 3) -> bytes:
    """Rate-distortion curves: one panel per (panel title, {technique: points}); log bpp axis.

    ``metric`` names the quality axis of every panel; when None, each panel title is a metric key.
    """
    count = max(1, len(panels))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    figure = _figure(3.6 * cols + LEGEND_IN, 2.9 * rows + 0.5)
    figure.suptitle(title)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    handles: dict = {}
    for ax, (panel_title, curves) in zip(axes, panels, strict=False):
        quality = metric or panel_title
        for label, points in curves.items():
            points = sorted(p for p in points if p[0] > 0 and math.isfinite(p[1]))
            if not points:
                continue
            line, = ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.2, markersize=4,
                            **styles.get(label, {}))
            _spread_bars(ax, points, line.get_color())
            handles.setdefault(label, line)
        ax.set_xscale("log")
        _log(ax.xaxis)
        ax.set_xlabel("bpp")
        ax.set_ylabel(METRIC_LABELS.get(quality, quality))
        ax.set_title(panel_title if metric else METRIC_LABELS.get(panel_title, panel_title), fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _legend(figure, handles)
    return _png(figure)


def timing_figure(title: str, series: dict[str, Sequence[tuple[int, float, float]]], styles: dict[str, dict]) -> bytes:
    """Encode and decode wall time against clip length: {technique: [(frames, encode_s, decode_s)]}."""
    figure = _figure(7.6 + LEGEND_IN, 3.6)
    figure.suptitle(title)
    axes = figure.subplots(1, 2, squeeze=False).ravel()
    handles: dict = {}
    lengths = [p[0] for points in series.values() for p in points]
    for ax, column, name in ((axes[0], 1, "encode"), (axes[1], 2, "decode")):
        for label, points in series.items():
            points = sorted(p for p in points if p[column] > 0)
            if not points:
                continue
            line, = ax.plot([p[0] for p in points], [p[column] for p in points], linewidth=1.2, markersize=4,
                            **styles.get(label, {}))
            handles.setdefault(label, line)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log(ax.xaxis, lengths)
        _log(ax.yaxis)
        ax.set_xlabel("clip length (frames)")
        ax.set_ylabel(f"{name} time (s)")
        ax.set_title(f"{name} wall time", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    _legend(figure, handles)
    return _png(figure)


def stages_figure(title: str, pairs: Sequence[tuple[str, Curve, str, Curve]], metric: str,
                  colours: Sequence[dict]) -> bytes:
    """Single-stage (dashed) against two-stage (solid) RD curves, one colour per pair.

    ``pairs``: (two-stage label, its points, single-stage label, its points).
    """
    figure = _figure(5.0 + 2 * LEGEND_IN, 4.2)
    figure.subplots_adjust(right=5.6 / (5.0 + 2 * LEGEND_IN))
    figure.suptitle(title)
    ax = figure.subplots()
    for (two_label, two, single_label, single), colour in zip(pairs, colours, strict=False):
        for points, dash, name in ((two, "-", two_label), (single, "--", single_label)):
            points = sorted(p for p in points if p[0] > 0)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], dash, linewidth=1.2, markersize=4,
                        label=name, **colour)
    ax.set_xscale("log")
    _log(ax.xaxis)
    ax.set_xlabel("bpp")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    return _png(figure)


def bits_figure(title: str, panels: Sequence[tuple[str, dict[str, Sequence[float]]]]) -> bytes:
    """Coded bits per frame: one panel per clip, one line per rate point; log bits axis."""
    count = max(1, len(panels))
    cols = min(3, count)
    rows = math.ceil(count / cols)
    from matplotlib.ticker import MaxNLocator

    figure = _figure(3.8 * cols + 0.4, 2.9 * rows + 0.5, legend=False)
    figure.suptitle(title)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel_title, lines) in zip(axes, panels, strict=False):
        for index, (label, bits) in enumerate(lines.items()):
            ax.plot(range(len(bits)), bits, marker=_MARKERS[index % len(_MARKERS)], markersize=3, linewidth=1.0,
                    label=label)
        ax.set_yscale("log")
        _log(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("frame")
        ax.set_ylabel("bits")
        ax.set_title(panel_title, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize="x-small", frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _png(figure)


def timeline_figure(title: str, panels: Sequence[tuple[str, dict[str, tuple[Sequence[float], Sequence[float]]]]],
                    styles: dict[str, dict]) -> bytes:
    """Per-frame PSNR (left) and coded bits (right, log) over time: one row per clip, one line per technique.

    ``panels``: (clip title, {technique: (psnr per frame, bits per frame)}); a technique whose
    bits per frame are unknown (conventional codecs give them per packet) draws PSNR only.
    """
    from matplotlib.ticker import MaxNLocator

    rows = max(1, len(panels))
    figure = _figure(2 * 4.2 + LEGEND_IN, 2.8 * rows + 0.5)
    figure.suptitle(title)
    axes = figure.subplots(rows, 2, squeeze=False)
    handles: dict = {}
    for (left, right), (panel_title, series) in zip(axes, panels, strict=False):
        for label, (psnr, bits) in series.items():
            kwargs = {**styles.get(label, {}), "markersize": 2.5, "linewidth": 1.0}
            if psnr:
                line, = left.plot(range(len(psnr)), psnr, **kwargs)
                handles.setdefault(label, line)
            if bits and all(b is not None and b > 0 for b in bits):
                line, = right.plot(range(len(bits)), bits, **kwargs)
                handles.setdefault(label, line)
        for ax, name in ((left, "PSNR RGB (dB)"), (right, "bits")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("frame")
            ax.set_ylabel(name)
            ax.grid(True, which="both", alpha=0.3)
        right.set_yscale("log")
        _log(right.yaxis)
        left.set_title(f"{panel_title}: quality per frame", fontsize="medium")
        right.set_title(f"{panel_title}: bits per frame", fontsize="medium")
    _legend(figure, handles)
    return _png(figure)


def crops_figure(title: str, tiles: Sequence[tuple[str, object]], columns: int = 4) -> bytes:
    """Image tiles side by side (the source first): (caption, H x W x 3 uint8 array) each, shown pixel for pixel."""
    count = max(1, len(tiles))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    height, width = (tiles[0][1].shape[:2] if tiles else (64, 64))
    scale = min(2.0, 3.2 / max(1.0, width / 90))  # inches per 90 pixels: small crops are enlarged
    tile_w, tile_h = width / 90 * scale, height / 90 * scale
    total_h = rows * (tile_h + 0.55) + 0.95  # inches; 0.85 above the first row: the title and two caption lines
    figure = _figure(cols * (tile_w + 0.2) + 0.4, total_h, legend=False)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.85 / total_h, wspace=0.05, hspace=0.35)
    figure.suptitle(title, y=1 - 0.1 / total_h, va="top")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, (caption, image) in zip(axes, tiles, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize="x-small")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(tiles):]:
        ax.set_visible(False)
    return _png(figure)


__all__ = ["METRIC_LABELS", "bits_figure", "crops_figure", "rd_figure", "stages_figure", "style", "timeline_figure",
           "timing_figure"]

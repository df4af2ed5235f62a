"""Report documents: one list of blocks written as Markdown and as self-contained HTML, and formatting."""

from __future__ import annotations

import base64
import html
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weightstep.fileio import atomic_write_bytes

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


FIGURE_PREFIXES = ("rd-", "timing-", "stages-", "bits-", "timeline-", "visual-")
"""How the report names its figures: only such PNGs left by an earlier report are removed from ``figures/``."""

STREAMS_DIR = "streams"
"""Folder of the report where the visual comparison keeps the bitstreams it decoded."""

KEPT_NAME = re.compile(r"-r\d+-s(\d+|x)-[0-9a-f]{12}\.[a-z0-9]+$")
"""How a run names a bitstream (``Job.bitstream_name``): only such files in ``streams/`` are removed as stale."""


def write_assets(out: Path, images: dict[str, bytes], streams: dict[str, bytes]) -> list[Path]:
    """Write the report's figures and kept bitstreams under ``out`` (names relative to it) and remove what an
    earlier report there left and this one has not: only files named as the report names them."""
    written = []
    for name, data in (*images.items(), *streams.items()):
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file(target, data)
        written.append(target)
    for stale in (out / "figures").glob("*.png"):
        if stale.name.startswith(FIGURE_PREFIXES) and f"figures/{stale.name}" not in images:
            stale.unlink()
    for stale in (out / STREAMS_DIR).glob("**/*"):
        if stale.is_file() and KEPT_NAME.search(stale.name) and stale.relative_to(out).as_posix() not in streams:
            stale.unlink()
    return written


def _first_line(text: str | None, limit: int = 220) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."

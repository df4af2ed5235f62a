"""Reading sizes straight from written files, independently of the code that wrote them.

The tests check the encoders' own per-frame bit records against these readers, so a record
that drifts from the file (a section counted twice, a header forgotten) fails instead of
agreeing with itself by construction.

- :func:`container_layout` walks a weightstep container with ``struct`` from the layout
  documented in ``weightstep/coding/container.py`` (it imports nothing from weightstep).
- :func:`packet_sizes` demuxes a conventional codec's Matroska file with PyAV directly.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import av

PRE = struct.Struct("<4sHIII")  # magic, version, n_sections, header_len, header_crc
SECTION = struct.Struct("<4sII")  # tag, length, crc


@dataclass
class Layout:
    preamble: int  # bytes before the first section: fixed fields and the header JSON
    header: dict
    sections: list[tuple[str, int]]  # (tag, payload length) in file order
    end: int  # offset after the last section

    def section_bytes(self, index: int) -> int:
        """What section ``index`` occupies in the file: its framing (tag, length, CRC) and payload."""
        return SECTION.size + self.sections[index][1]


def container_layout(data: bytes) -> Layout:
    magic, _version, count, header_len, _crc = PRE.unpack_from(data, 0)
    assert magic == b"WSTP", magic
    offset = PRE.size + header_len
    header = json.loads(data[PRE.size:offset])
    sections = []
    for _ in range(count):
        tag, length, _crc = SECTION.unpack_from(data, offset)
        sections.append((tag.decode("ascii"), length))
        offset += SECTION.size + length
    return Layout(preamble=PRE.size + header_len, header=header, sections=sections, end=offset)


def packet_sizes(data: bytes) -> tuple[int, list[int]]:
    """(codec extradata bytes, packet bytes in presentation order) of the file's video stream."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        extradata = len(stream.codec_context.extradata or b"")
        packets = sorted((p.pts, p.size) for p in container.demux(stream) if p.size)
    return extradata, [size for _, size in packets]

"""Reading sizes straight from written files, independently of the code that wrote them.

The tests check the encoders' own per-frame bit records against these readers, so a record
that drifts from the file (a section counted twice, a header forgotten) fails instead of
agreeing with itself by construction.

- :func:`container_layout` walks a weightstep container (version 2) with ``struct`` from the layout
  documented in ``weightstep/coding/container.py`` (it imports nothing from weightstep).
- :func:`packet_sizes` demuxes a conventional codec's Matroska file with PyAV directly.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import av

V2 = struct.Struct("<4sHI")  # magic, version, meta_len
TAGS = ("ANCH", "STEP", "NETW", "GOP_")  # a version-2 section's tag byte indexes this


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """(value, offset after it) of the little-endian base-128 varint at ``offset``."""
    value, shift = 0, 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


@dataclass
class Layout:
    meta: dict  # the metadata JSON (provenance; not counted)
    header: dict  # the stream's header JSON (what a decoder reads)
    preamble: int  # stream bytes before the first section: header length, header, section count
    sections: list[tuple[str, int]]  # (tag, payload length) in stream order
    stream: int  # bytes of the elementary stream: what the rate counts
    end: int  # offset after the trailing CRC

    def section_bytes(self, index: int) -> int:
        """What section ``index`` occupies in the stream: its tag byte, length varint and payload."""
        length = self.sections[index][1]
        return 1 + max(1, (length.bit_length() + 6) // 7) + length


def container_layout(data: bytes) -> Layout:
    magic, version, meta_len = V2.unpack_from(data, 0)
    assert magic == b"WSTP" and version == 2, (magic, version)
    meta = json.loads(data[V2.size:V2.size + meta_len])
    offset = V2.size + meta_len
    (stream_len,) = struct.unpack_from("<I", data, offset)
    start = offset = offset + 4
    head_len, offset = _varint(data, offset)
    header = json.loads(data[offset:offset + head_len])
    count, offset = _varint(data, offset + head_len)
    preamble = offset - start
    sections = []
    for _ in range(count):
        tag = TAGS[data[offset]]
        length, offset = _varint(data, offset + 1)
        sections.append((tag, length))
        offset += length
    assert offset - start == stream_len, (offset - start, stream_len)
    return Layout(meta=meta, header=header, preamble=preamble, sections=sections, stream=stream_len, end=offset + 4)


def packet_sizes(data: bytes) -> tuple[int, list[int]]:
    """(codec extradata bytes, packet bytes in presentation order) of the file's video stream."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        extradata = len(stream.codec_context.extradata or b"")
        packets = sorted((p.pts, p.size) for p in container.demux(stream) if p.size)
    return extradata, [size for _, size in packets]

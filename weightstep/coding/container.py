"""The weightstep file format: metadata a reader may want, then the stream a decoder needs.

Version 2 (written; all integers little-endian)::

    magic       4 bytes   b"WSTP"
    version     uint16    2
    meta_len    uint32
    meta        meta_len bytes of UTF-8 JSON: {"codec": str, <metadata>}: provenance only (the
                encoder's full settings, where it ran); no decoder reads it
    stream_len  uint32
    stream      the elementary stream, what the rate counts:
      head_len  varint
      head      head_len bytes of UTF-8 JSON: the header a decoder reads (geometry, the settings
                that change what it rebuilds, seeds)
      n         varint    number of sections
      n times:
        tag     uint8     index into SECTION_TAGS
        length  varint
        payload length bytes
    crc         uint32    zlib.crc32 of everything from version to the stream's end
    nothing after the CRC

Why two parts: a conventional codec's rate is its elementary stream (parameter sets and
packets, with about 4 bytes of length per packet), not its Matroska file, and not the settings
text x264 and x265 write about themselves (baselines/conventional.py). The same rule here:
the rate is the stream, the bytes a decoder cannot do without, and the settings a reader may
want ride in the metadata beside it. Version 1 put everything in one JSON header (about 0.9 kB
of settings for a weightstep file) and 12 bytes of tag, length and CRC on every section, which
on a 30-frame CIF-size clip at low rate was a fifth of the file; it is still read.

Version 1::

    magic 4 bytes, version uint16 (1), n_sections uint32, header_len uint32,
    header_crc uint32 (crc32 of version .. header_len + the header JSON), the header JSON
    ({"codec": str, <header keys>}), then per section: tag (4 ASCII bytes), length uint32,
    crc uint32 (crc32 of tag + length + payload), payload

Reading checks every length against the bytes that remain before slicing, the CRC, and the
header's keys and types, then :func:`check_geometry` refuses absurd sizes (10^9 frames, a
10^6 x 10^6 frame) before a decoder allocates anything. Any failure is a single-line
``BitstreamError``. JSON only, never pickle; the JSON is written canonically (sorted keys,
no spaces, ASCII), so equal containers give equal bytes.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from weightstep.coding.framing import ByteReader, put_varint
from weightstep.errors import BitstreamError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SECTION_TAGS",
    "payload_size",
    "section_size",
    "MAX_HEADER",
    "MAX_SECTIONS",
    "MAX_SIDE",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "MAX_FPS",
    "Container",
    "check_geometry",
    "validate_header",
]

MAGIC = b"WSTP"
FORMAT_VERSION = 2  # written; version 1 is still read
SECTION_TAGS = ("ANCH", "STEP", "NETW", "GOP_")  # the section tags of a version-2 stream, one byte each
MAX_HEADER = 64 * 1024  # bytes of header JSON
MAX_SECTIONS = 1 << 20  # sections per file (each costs at least 12 bytes anyway)
MAX_SIDE = 16384  # width and height, pixels
MAX_FRAMES = 100_000  # frames per file
MAX_PIXELS = 1 << 38  # width * height * frames (about 2.7e11: 100k frames of 1080p fit)
MAX_FPS = 1000.0
_BIT_DEPTHS = range(8, 17)

_PRE = struct.Struct("<4sHIII")  # magic, version, n_sections, header_len, header_crc
_SEC = struct.Struct("<4sII")  # tag, length, crc
_TAG = re.compile(rb"[A-Za-z0-9_]{4}")

# Required header keys and their JSON types (bool is never accepted as a number).
_REQUIRED: dict[str, tuple[type, ...]] = {
    "width": (int,),
    "height": (int,),
    "frames": (int,),
    "fps": (int, float),
    "bit_depth": (int,),
    "config": (dict,),
}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def validate_header(header: Any) -> None:
    """Check the header object's required keys and types (``seeds``, if present: {str: int})."""
    if not isinstance(header, dict):
        raise BitstreamError("header is not a JSON object")
    for key, types in _REQUIRED.items():
        if key not in header:
            raise BitstreamError(f"header lacks the required key {key!r}")
        if not _is(header[key], types):
            raise BitstreamError(f"header key {key!r} has the wrong type ({type(header[key]).__name__})")
    fps = header["fps"]
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise BitstreamError(f"header fps {fps!r} out of range (0, {MAX_FPS:g}]")
    if header["bit_depth"] not in _BIT_DEPTHS:
        raise BitstreamError(f"header bit_depth {header['bit_depth']!r} out of range 8..16")
    seeds = header.get("seeds", {})
    if not isinstance(seeds, dict) or not all(_is(v, (int,)) for v in seeds.values()):
        raise BitstreamError("header key 'seeds' must map names to integers")


def check_geometry(header: dict[str, Any], *, max_side: int = MAX_SIDE, max_frames: int = MAX_FRAMES,
                   max_pixels: int = MAX_PIXELS) -> tuple[int, int, int]:
    """Refuse sizes beyond the limits before anything is allocated; returns (width, height, frames)."""
    try:
        w, h, n = header["width"], header["height"], header["frames"]
    except (KeyError, TypeError):
        raise BitstreamError("header lacks width, height or frames") from None
    if not all(_is(v, (int,)) for v in (w, h, n)):
        raise BitstreamError("header width, height and frames must be integers")
    if not (1 <= w <= max_side and 1 <= h <= max_side):
        raise BitstreamError(f"frame size {w}x{h} out of bounds (1..{max_side} per side)")
    if not 1 <= n <= max_frames:
        raise BitstreamError(f"frame count {n} out of bounds (1..{max_frames})")
    if w * h * n > max_pixels:
        raise BitstreamError(f"{n} frames of {w}x{h} exceed the limit of {max_pixels} pixels")
    return w, h, n


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BitstreamError(f"header is not valid JSON ({reason})") from None


def _dump(obj: dict[str, Any], what: str) -> bytes:
    """Canonical ASCII JSON of ``obj``; ValueError if it would not read back equal."""
    try:
        raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                         allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid container {what}: {exc}") from None
    if json.loads(raw) != obj:
        raise ValueError(f"{what} does not survive JSON unchanged (tuples or numpy scalars?): "
                         "use plain lists, dicts, str, int, float, bool and None")
    if len(raw) > MAX_HEADER:
        raise ValueError(f"{what} JSON of {len(raw)} bytes exceeds {MAX_HEADER}")
    return raw


_V2 = struct.Struct("<4sHI")  # magic, version, meta_len


@dataclass
class Container:
    """A weightstep file: codec id, the header a decoder reads (geometry, settings, seeds...),
    tagged sections, and metadata no decoder reads (``meta``: provenance, the full settings)."""

    codec: str
    header: dict[str, Any]
    sections: list[tuple[str, bytes]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def section(self, tag: str) -> bytes:
        """The payload of the one section tagged ``tag`` (BitstreamError if absent or repeated)."""
        found = [payload for t, payload in self.sections if t == tag]
        if len(found) != 1:
            raise BitstreamError(f"expected one section {tag!r}, found {len(found)}")
        return found[0]

    def sections_tagged(self, tag: str) -> list[bytes]:
        """Payloads of every section tagged ``tag``, in file order."""
        return [payload for t, payload in self.sections if t == tag]

    def stream(self) -> bytes:
        """The elementary stream (head and sections): what a decoder needs, and what the rate counts."""
        if not isinstance(self.codec, str) or not self.codec:
            raise ValueError("codec must be a non-empty string")
        try:
            validate_header(self.header)
            check_geometry(self.header)
        except BitstreamError as exc:
            raise ValueError(f"invalid container header: {exc}") from None
        if "codec" in self.header:
            raise ValueError("header must not contain the key 'codec' (it is stored from Container.codec)")
        head = _dump(dict(self.header), "header")
        if len(self.sections) > MAX_SECTIONS:
            raise ValueError(f"{len(self.sections)} sections exceed {MAX_SECTIONS}")
        out = bytearray()
        put_varint(out, len(head))
        out += head
        put_varint(out, len(self.sections))
        for tag, payload in self.sections:
            if tag not in SECTION_TAGS:
                raise ValueError(f"section tag {tag!r} is not one of {SECTION_TAGS}")
            payload = bytes(payload)
            if len(payload) > 0xFFFFFFFF:
                raise ValueError(f"section {tag!r} is larger than 4 GiB")
            out.append(SECTION_TAGS.index(tag))
            put_varint(out, len(payload))
            out += payload
        return bytes(out)

    def write(self) -> tuple[bytes, int]:
        """(the file, version 2; the bytes of its stream, which the rate counts); raises ValueError
        for a header or section this format could not read back."""
        if "codec" in self.meta:
            raise ValueError("meta must not contain the key 'codec' (it is stored from Container.codec)")
        stream = self.stream()
        meta = _dump({"codec": self.codec, **self.meta}, "metadata")
        out = bytearray(_V2.pack(MAGIC, FORMAT_VERSION, len(meta)) + meta)
        out += struct.pack("<I", len(stream)) + stream
        out += struct.pack("<I", zlib.crc32(bytes(out[4:])))
        return bytes(out), len(stream)

    def to_bytes(self) -> bytes:
        """The file (see :meth:`write`)."""
        return self.write()[0]

    @classmethod
    def from_bytes(cls, data: bytes, *, max_sections: int = MAX_SECTIONS, max_header: int = MAX_HEADER) -> Container:
        """Parse and check a file; any inconsistency raises a one-line BitstreamError."""
        data = memoryview(bytes(data))
        if len(data) < 4 or bytes(data[:4]) != MAGIC:
            raise BitstreamError("not a weightstep file (bad magic bytes)")
        if len(data) < 6:
            raise BitstreamError("truncated file header")
        version = struct.unpack_from("<H", data, 4)[0]
        if version == 1:
            return cls._from_v1(data, max_sections, max_header)
        if version != FORMAT_VERSION:
            raise BitstreamError(f"unsupported weightstep format version {version} (this build reads 1 and "
                                 f"{FORMAT_VERSION})")
        return cls._from_v2(data, max_sections, max_header)

    @classmethod
    def _from_v2(cls, data: memoryview, max_sections: int, max_header: int) -> Container:
        if len(data) < _V2.size + 8:
            raise BitstreamError("truncated file header")
        meta_len = _V2.unpack_from(data)[2]
        if meta_len > max_header:
            raise BitstreamError(f"metadata of {meta_len} bytes exceeds the limit of {max_header}")
        if meta_len > len(data) - _V2.size - 8:
            raise BitstreamError("truncated metadata")
        pos = _V2.size + meta_len
        stream_len = struct.unpack_from("<I", data, pos)[0]
        if stream_len != len(data) - pos - 8:
            raise BitstreamError(f"the stream's length {stream_len} does not match the file's "
                                 f"{max(0, len(data) - pos - 8)} bytes")
        if zlib.crc32(bytes(data[4:len(data) - 4])) != struct.unpack_from("<I", data, len(data) - 4)[0]:
            raise BitstreamError("CRC mismatch: the file is damaged")
        meta = _parse_json(bytes(data[_V2.size:pos]))
        if not isinstance(meta, dict):
            raise BitstreamError("metadata is not a JSON object")
        codec = meta.pop("codec", None)
        if not isinstance(codec, str) or not codec:
            raise BitstreamError("metadata lacks a codec name")
        stream = ByteReader(bytes(data[pos + 4:len(data) - 4]), "stream")
        head_len = stream.varint("header length")
        if head_len > max_header:
            raise BitstreamError(f"header of {head_len} bytes exceeds the limit of {max_header}")
        header = _parse_json(stream.take(head_len, "header"))
        validate_header(header)
        check_geometry(header)
        count = stream.varint("section count")
        if count > max_sections:
            raise BitstreamError(f"{count} sections exceed the limit of {max_sections}")
        sections: list[tuple[str, bytes]] = []
        for i in range(count):
            index = stream.take(1, f"tag of section #{i}")[0]
            if index >= len(SECTION_TAGS):
                raise BitstreamError(f"unknown tag {index} of section #{i}")
            sections.append((SECTION_TAGS[index], stream.take(stream.varint(f"length of section #{i}"),
                                                              f"section #{i}")))
        if stream.rest():
            raise BitstreamError("unexpected bytes after the last section")
        return cls(codec=codec, header=header, sections=sections, meta=meta)

    @classmethod
    def _from_v1(cls, data: memoryview, max_sections: int, max_header: int) -> Container:
        if len(data) < _PRE.size:
            raise BitstreamError("truncated file header")
        _, _, n_sections, header_len, header_crc = _PRE.unpack_from(data)
        if header_len > max_header:
            raise BitstreamError(f"header of {header_len} bytes exceeds the limit of {max_header}")
        if header_len > len(data) - _PRE.size:
            raise BitstreamError("truncated header")
        raw = bytes(data[_PRE.size:_PRE.size + header_len])
        if zlib.crc32(bytes(data[4:_PRE.size - 4]) + raw) != header_crc:
            raise BitstreamError("CRC mismatch in the file header")
        if n_sections > max_sections:
            raise BitstreamError(f"{n_sections} sections exceed the limit of {max_sections}")
        pos = _PRE.size + header_len
        if n_sections * _SEC.size > len(data) - pos:
            raise BitstreamError(f"truncated file: {n_sections} sections cannot fit in {len(data) - pos} bytes")
        obj = _parse_json(raw)
        if not isinstance(obj, dict):
            raise BitstreamError("header is not a JSON object")
        codec = obj.pop("codec", None)
        if not isinstance(codec, str) or not codec:
            raise BitstreamError("header lacks a codec name")
        validate_header(obj)
        check_geometry(obj)
        sections: list[tuple[str, bytes]] = []
        for i in range(n_sections):
            if _SEC.size > len(data) - pos:
                raise BitstreamError(f"truncated section #{i}")
            btag, length, crc = _SEC.unpack_from(data, pos)
            tag = btag.decode("ascii", "replace") if _TAG.fullmatch(btag) else repr(btag)
            if not _TAG.fullmatch(btag):
                raise BitstreamError(f"invalid tag {tag} of section #{i}")
            if length > len(data) - pos - _SEC.size:
                raise BitstreamError(f"truncated section {tag!r}")
            start = pos + _SEC.size
            payload = bytes(data[start:start + length])
            if zlib.crc32(payload, zlib.crc32(bytes(data[pos:pos + 8]))) != crc:
                raise BitstreamError(f"CRC mismatch in section {tag!r}")
            sections.append((tag, payload))
            pos = start + length
        if pos != len(data):
            raise BitstreamError(f"{len(data) - pos} unexpected bytes after the last section")
        return cls(codec=codec, header=obj, sections=sections)


def section_size(payload: bytes) -> int:
    """Bytes one section takes in a version-2 stream: its tag, its length (varint) and its payload."""
    head = bytearray()
    put_varint(head, len(payload))
    return 1 + len(head) + len(payload)


def payload_size(data: bytes) -> int:
    """Bytes of a file's elementary stream (version 2), which is what a decoder needs and what the
    rate counts; a version-1 file counts whole (it has no such part)."""
    Container.from_bytes(data)  # checks it
    if struct.unpack_from("<H", data, 4)[0] == 1:
        return len(data)
    meta_len = _V2.unpack_from(data)[2]
    return len(data) - _V2.size - meta_len - 8  # less the metadata, the stream's length field and the CRC

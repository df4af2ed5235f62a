"""The weightstep file format: magic, version, a JSON header, then tagged CRC-checked sections.

Layout (all integers little-endian)::

    magic       4 bytes   b"WSTP"
    version     uint16    FORMAT_VERSION
    n_sections  uint32
    header_len  uint32
    header_crc  uint32    zlib.crc32 of version .. header_len (10 bytes) + the header JSON
    header      header_len bytes of UTF-8 JSON: an object {"codec": str, <header keys>}
    n_sections times:
      tag       4 bytes   ASCII letters, digits or '_' (e.g. b"ANCH", b"STEP")
      length    uint32
      crc       uint32    zlib.crc32 of tag + length + payload
      payload   length bytes
    nothing after the last section

Reading checks every length against the bytes that remain before slicing, every CRC, and
the header's keys and types, then :func:`check_geometry` refuses absurd sizes (10^9 frames,
a 10^6 x 10^6 frame) before a decoder allocates anything. Any failure is a single-line
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

from weightstep.errors import BitstreamError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
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
FORMAT_VERSION = 1
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


@dataclass
class Container:
    """A weightstep file: codec id, header dict (geometry, config, seeds...) and tagged sections."""

    codec: str
    header: dict[str, Any]
    sections: list[tuple[str, bytes]] = field(default_factory=list)

    def section(self, tag: str) -> bytes:
        """The payload of the one section tagged ``tag`` (BitstreamError if absent or repeated)."""
        found = [payload for t, payload in self.sections if t == tag]
        if len(found) != 1:
            raise BitstreamError(f"expected one section {tag!r}, found {len(found)}")
        return found[0]

    def sections_tagged(self, tag: str) -> list[bytes]:
        """Payloads of every section tagged ``tag``, in file order."""
        return [payload for t, payload in self.sections if t == tag]

    def to_bytes(self) -> bytes:
        """Serialise; raises ValueError for a header or section this format could not read back."""
        if not isinstance(self.codec, str) or not self.codec:
            raise ValueError("codec must be a non-empty string")
        if "codec" in self.header:
            raise ValueError("header must not contain the key 'codec' (it is stored from Container.codec)")
        try:
            validate_header(self.header)
            check_geometry(self.header)
            raw = json.dumps({"codec": self.codec, **self.header}, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=True, allow_nan=False).encode("ascii")
        except (BitstreamError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid container header: {exc}") from None
        if json.loads(raw) != {"codec": self.codec, **self.header}:
            raise ValueError("header does not survive JSON unchanged (tuples or numpy scalars?): "
                             "use plain lists, dicts, str, int, float, bool and None")
        if len(raw) > MAX_HEADER:
            raise ValueError(f"header JSON of {len(raw)} bytes exceeds {MAX_HEADER}")
        if len(self.sections) > MAX_SECTIONS:
            raise ValueError(f"{len(self.sections)} sections exceed {MAX_SECTIONS}")
        fixed = struct.pack("<HII", FORMAT_VERSION, len(self.sections), len(raw))
        out = bytearray(MAGIC + fixed + struct.pack("<I", zlib.crc32(fixed + raw)) + raw)
        for tag, payload in self.sections:
            btag = tag.encode("ascii", "replace") if isinstance(tag, str) else b""
            if not _TAG.fullmatch(btag):
                raise ValueError(f"section tag {tag!r} must be 4 ASCII letters, digits or '_'")
            payload = bytes(payload)
            if len(payload) > 0xFFFFFFFF:
                raise ValueError(f"section {tag!r} is larger than 4 GiB")
            head = btag + struct.pack("<I", len(payload))
            out += head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_sections: int = MAX_SECTIONS, max_header: int = MAX_HEADER) -> Container:
        """Parse and check a file; any inconsistency raises a one-line BitstreamError."""
        data = memoryview(bytes(data))
        if len(data) < 4 or bytes(data[:4]) != MAGIC:
            raise BitstreamError("not a weightstep file (bad magic bytes)")
        if len(data) < _PRE.size:
            raise BitstreamError("truncated file header")
        _, version, n_sections, header_len, header_crc = _PRE.unpack_from(data)
        if version != FORMAT_VERSION:
            raise BitstreamError(f"unsupported weightstep format version {version} (this build reads {FORMAT_VERSION})")
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

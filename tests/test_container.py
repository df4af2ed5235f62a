"""The container: exact round trips, and every truncated, flipped or foreign file refused cleanly."""

import hashlib
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from weightstep.coding.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_FRAMES,
    MAX_SIDE,
    Container,
    check_geometry,
)
from weightstep.errors import BitstreamError

HEADER = {
    "width": 64,
    "height": 48,
    "frames": 5,
    "fps": 29.97,
    "bit_depth": 8,
    "config": {"width": 96, "lr": 2e-4, "update": "l0", "layers": [3, 96, 96, 3], "extra": None},
    "seeds": {"noise": 1234, "fourier": 7},
}


def _sample() -> Container:
    blob = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(10))  # fixed pseudo-random bytes
    sections = [("ANCH", blob[:300])]
    sections += [("STEP", blob[i * 7:i * 7 + 11 * i]) for i in range(4)]
    sections.append(("EMPT", b""))
    return Container(codec="ws-siren", header=dict(HEADER), sections=sections)


def _raw_file(header_json: bytes, sections: bytes = b"", n_sections: int = 0, version: int = FORMAT_VERSION) -> bytes:
    """A file with an arbitrary header JSON and a correct header CRC (to reach the later checks)."""
    fixed = struct.pack("<HII", version, n_sections, len(header_json))
    return MAGIC + fixed + struct.pack("<I", zlib.crc32(fixed + header_json)) + header_json + sections


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def test_round_trip_and_canonical_bytes():
    c = _sample()
    data = c.to_bytes()
    back = Container.from_bytes(data)
    assert back == c
    assert back.to_bytes() == data
    assert back.section("ANCH") == c.sections[0][1]
    assert len(back.sections_tagged("STEP")) == 4
    with pytest.raises(BitstreamError):
        back.section("STEP")  # repeated
    with pytest.raises(BitstreamError):
        back.section("NONE")
    # A format pin: a change here means files written before no longer read the same.
    assert hashlib.md5(data).hexdigest() == "2e31249c69520964a4b0a2b650034b17"


def test_fuzz_truncations_and_flips():
    data = _sample().to_bytes()
    rng = np.random.default_rng(12345)
    for _ in range(500):
        cut = int(rng.integers(0, len(data)))
        with pytest.raises(BitstreamError):
            Container.from_bytes(data[:cut])
    for _ in range(500):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(bad)))
            bad[pos] ^= int(rng.integers(1, 256))
        if bytes(bad) == data:
            continue
        with pytest.raises(BitstreamError):
            Container.from_bytes(bytes(bad))
    for _ in range(100):  # random insertions and appended junk
        pos = int(rng.integers(len(data) + 1))
        junk = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        with pytest.raises(BitstreamError):
            Container.from_bytes(data[:pos] + junk + data[pos:])


def test_foreign_and_empty_files():
    for data in (b"", b"WST", b"\x89PNG\r\n\x1a\n" + bytes(64), b"WSTP", bytes(100), b"RIFF....WAVEfmt "):
        with pytest.raises(BitstreamError):
            Container.from_bytes(data)
    with pytest.raises(BitstreamError, match="not a weightstep file"):
        Container.from_bytes(b"GIF89a" + bytes(40))


def test_unsupported_version():
    data = _raw_file(_json({"codec": "x", **HEADER}), version=FORMAT_VERSION + 1)
    with pytest.raises(BitstreamError, match="version"):
        Container.from_bytes(data)


@pytest.mark.parametrize("header", [
    {**HEADER, "frames": 10**9},
    {**HEADER, "width": 10**6, "height": 10**6},
    {**HEADER, "width": MAX_SIDE + 1},
    {**HEADER, "frames": 0},
    {**HEADER, "width": -64},
    {**HEADER, "frames": MAX_FRAMES, "width": MAX_SIDE, "height": MAX_SIDE},
])
def test_absurd_geometry_refused_before_allocation(header):
    data = _raw_file(_json({"codec": "x", **header}))
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError):
            Container.from_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"refusing the header allocated {peak} bytes"  # memory, not time, is the check
    with pytest.raises(BitstreamError):
        check_geometry(header)
    with pytest.raises(ValueError):
        Container("x", header).to_bytes()  # never written either


def test_check_geometry_limits():
    assert check_geometry(HEADER) == (64, 48, 5)
    with pytest.raises(BitstreamError):
        check_geometry(HEADER, max_frames=4)
    with pytest.raises(BitstreamError):
        check_geometry(HEADER, max_pixels=64 * 48 * 5 - 1)
    with pytest.raises(BitstreamError):
        check_geometry({"width": 64})


@pytest.mark.parametrize("raw", [
    b"[1, 2, 3]",  # not an object
    b"\"text\"",
    b"{not json",
    b"\xff\xfe{}",  # not UTF-8
    _json({k: v for k, v in HEADER.items() if k != "frames"} | {"codec": "x"}),  # missing key
    _json({**HEADER, "codec": "x", "width": "64"}),  # wrong type
    _json({**HEADER, "codec": "x", "width": True}),  # bool is not an int here
    _json({**HEADER, "codec": "x", "width": 64.0}),
    _json({**HEADER, "codec": "x", "config": [1]}),
    _json({**HEADER, "codec": "x", "fps": 0}),
    _json({**HEADER, "codec": "x", "bit_depth": 3}),
    _json({**HEADER, "codec": "x", "seeds": {"noise": "1"}}),
    _json({**HEADER}),  # no codec
    _json({**HEADER, "codec": 5}),
    b'{"codec": "x", "codec": "y"}',  # duplicate key
    json.dumps({**HEADER, "codec": "x", "fps": float("nan")}).encode(),
    b"[" * 30_000 + b"]" * 30_000,  # deep nesting (within the size limit)
])
def test_bad_header_json_refused(raw):
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw_file(raw))


def test_section_and_size_limits():
    c = _sample()
    data = c.to_bytes()
    with pytest.raises(BitstreamError, match="sections"):
        Container.from_bytes(data, max_sections=3)
    with pytest.raises(BitstreamError, match="header"):
        Container.from_bytes(data, max_header=16)
    # a file claiming four billion sections is refused without reading them one by one
    fixed = _raw_file(_json({"codec": "x", **HEADER}), n_sections=0xFFFFFFFF)
    with pytest.raises(BitstreamError):
        Container.from_bytes(fixed, max_sections=0xFFFFFFFF)
    # a section that claims more bytes than remain
    raw = _json({"codec": "x", **HEADER})
    sec = b"ANCH" + struct.pack("<II", 1000, 0) + b"abc"
    with pytest.raises(BitstreamError, match="truncated section 'ANCH'"):
        Container.from_bytes(_raw_file(raw, sec, 1))
    sec = b"AN\x00H" + struct.pack("<II", 0, zlib.crc32(b"AN\x00H" + struct.pack("<I", 0)))
    with pytest.raises(BitstreamError, match="tag"):
        Container.from_bytes(_raw_file(raw, sec, 1))
    sec = b"ANCH" + struct.pack("<II", 3, 0) + b"abc"
    with pytest.raises(BitstreamError, match="CRC mismatch in section 'ANCH'"):
        Container.from_bytes(_raw_file(raw, sec, 1))


def test_writer_refuses_what_the_reader_would_refuse():
    with pytest.raises(ValueError):
        Container("x", {**HEADER, "codec": "y"}).to_bytes()
    with pytest.raises(ValueError):
        Container("", dict(HEADER)).to_bytes()
    with pytest.raises(ValueError):
        Container("x", dict(HEADER), [("TOOLONG", b"")]).to_bytes()
    with pytest.raises(ValueError):
        Container("x", dict(HEADER), [("AB C", b"")]).to_bytes()
    with pytest.raises(ValueError):
        Container("x", {**HEADER, "config": {"layers": (3, 96)}}).to_bytes()  # a tuple would come back a list
    with pytest.raises(ValueError):
        Container("x", {**HEADER, "config": {"lr": float("inf")}}).to_bytes()
    with pytest.raises(ValueError):
        Container("x", {**HEADER, "config": {"n": np.int64(3)}}).to_bytes()
    with pytest.raises(ValueError):
        Container("x", {**HEADER, "config": {"x": "a" * 70_000}}).to_bytes()

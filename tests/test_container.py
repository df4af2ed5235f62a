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
    payload_size,
    section_size,
)
from weightstep.coding.framing import put_varint
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
    sections.append(("NETW", b""))
    return Container(codec="ws-siren", header=dict(HEADER), sections=sections, meta={"config": {"lam": 1e-3}})


def _raw_file(header_json: bytes, sections: bytes = b"", n_sections: int = 0, version: int = 1) -> bytes:
    """A version-1 file with an arbitrary header JSON and a correct header CRC (to reach the later checks)."""
    fixed = struct.pack("<HII", version, n_sections, len(header_json))
    return MAGIC + fixed + struct.pack("<I", zlib.crc32(fixed + header_json)) + header_json + sections


def _varint(value: int) -> bytes:
    out = bytearray()
    put_varint(out, value)
    return bytes(out)


def _raw_v2(head_json: bytes, sections: bytes = b"", n_sections: int = 0, meta_json: bytes = b'{"codec":"x"}') -> bytes:
    """A version-2 file with arbitrary JSON parts and a correct CRC (to reach the later checks)."""
    stream = _varint(len(head_json)) + head_json + _varint(n_sections) + sections
    body = struct.pack("<HI", 2, len(meta_json)) + meta_json + struct.pack("<I", len(stream)) + stream
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


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
    assert hashlib.md5(data).hexdigest() == "3fb26783bd33f18ad737208967bb27e4"


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


def test_version_1_files_still_read():
    raw = _json({"codec": "x", **HEADER})
    payload = b"abc"
    head = b"ANCH" + struct.pack("<I", len(payload))
    data = _raw_file(raw, head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload, 1)
    back = Container.from_bytes(data)
    assert back.codec == "x" and back.header == HEADER and back.sections == [("ANCH", payload)] and back.meta == {}
    assert payload_size(data) == len(data)  # a version-1 file has no separate stream: all of it counts


def test_the_rate_is_the_stream():
    c = _sample()
    data = c.to_bytes()
    stream = c.stream()
    assert payload_size(data) == len(stream) and data[-4 - len(stream):-4] == stream
    # metadata is not rate: more of it leaves the stream as it is
    bigger = Container(c.codec, c.header, c.sections, meta={"config": {"lam": 1e-3, "notes": "x" * 500}})
    assert payload_size(bigger.to_bytes()) == len(stream) and len(bigger.to_bytes()) > len(data) + 500
    # each section costs its tag byte and its length varint on top of its payload
    sizes = [section_size(p) for _, p in c.sections]
    assert sum(sizes) == sum(len(p) for _, p in c.sections) + 2 * len(c.sections) + 1  # the 300-byte one: 2-byte varint
    with pytest.raises(ValueError, match="tag"):
        Container("x", dict(HEADER), [("EMPT", b"")]).to_bytes()  # a tag the format does not know


@pytest.mark.parametrize("header", [
    {**HEADER, "frames": 10**9},
    {**HEADER, "width": 10**6, "height": 10**6},
    {**HEADER, "width": MAX_SIDE + 1},
    {**HEADER, "frames": 0},
    {**HEADER, "width": -64},
    {**HEADER, "frames": MAX_FRAMES, "width": MAX_SIDE, "height": MAX_SIDE},
])
def test_absurd_geometry_refused_before_allocation(header):
    for data in (_raw_file(_json({"codec": "x", **header})), _raw_v2(_json(header))):
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


@pytest.mark.parametrize("raw", [
    b"[1, 2, 3]", b"{not json", b"\xff\xfe{}", _json({k: v for k, v in HEADER.items() if k != "frames"}),
    _json({**HEADER, "width": "64"}), _json({**HEADER, "width": True}), _json({**HEADER, "config": [1]}),
    _json({**HEADER, "fps": 0}), _json({**HEADER, "seeds": {"noise": "1"}}), b'{"width": 1, "width": 2}',
    json.dumps({**HEADER, "fps": float("nan")}).encode(), b"[" * 30_000 + b"]" * 30_000,
])
def test_bad_stream_header_refused(raw):
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw_v2(raw))


@pytest.mark.parametrize("meta", [b"[1]", b"{not json", b"{}", b'{"codec": 5}', b'{"codec": "x", "codec": "y"}'])
def test_bad_metadata_refused(meta):
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw_v2(_json(HEADER), meta_json=meta))


def test_section_and_size_limits():
    c = _sample()
    data = c.to_bytes()
    with pytest.raises(BitstreamError, match="sections"):
        Container.from_bytes(data, max_sections=3)
    with pytest.raises(BitstreamError, match="metadata"):
        Container.from_bytes(data, max_header=16)
    with pytest.raises(BitstreamError, match="header"):
        Container.from_bytes(data, max_header=100)  # the metadata fits, the stream's header does not
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
    # version 2: a section longer than the stream, an unknown tag, a count beyond the limit, a short CRC
    head = _json(HEADER)
    with pytest.raises(BitstreamError, match="section #0"):
        Container.from_bytes(_raw_v2(head, b"\x00" + _varint(1000) + b"abc", 1))
    with pytest.raises(BitstreamError, match="unknown tag"):
        Container.from_bytes(_raw_v2(head, b"\x09" + _varint(0), 1))
    with pytest.raises(BitstreamError, match="sections"):
        Container.from_bytes(_raw_v2(head, b"", 0xFFFFFFFF), max_sections=1000)
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw_v2(head, b"", 0xFFFFFFFF))  # claims more sections than bytes
    with pytest.raises(BitstreamError, match="length"):
        Container.from_bytes(_raw_v2(head)[:-5] + _raw_v2(head)[-4:])


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

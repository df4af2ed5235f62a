"""Hostile and odd inputs: budgeted decoders, non-finite values, damaged Matroska, one rule for outputs."""

import io
import struct
import zlib

import av
import numpy as np
import pytest
from clips import moving_clip
from typer.testing import CliRunner

from baselines.conventional import CHECKSUM_TAG, decode_stream
from weightstep import registry
from weightstep.cli import app
from weightstep.codecs import budget, harness
from weightstep.codecs.weightstep_codec import WeightStepCodec
from weightstep.coding.container import Container
from weightstep.errors import BitstreamError, ConfigError, UnavailableError
from weightstep.experiments import parse_protocol

TINY = {
    "weightstep": {"inr": "siren", "width": "8", "depth": "2", "anchor_steps": "5", "step_steps": "2",
                   "device": "cpu"},
    "full-cnn": {"dip_channels": "4", "dip_levels": "2", "epochs": "2", "device": "cpu"},
    "nerv": {"channels": "8", "min_channels": "4", "stem_hidden": "8", "epochs": "2", "finetune_epochs": "0",
             "prune": "0", "device": "cpu"},
}


@pytest.fixture(scope="module")
def files():
    clip = moving_clip(frames=2, size=32)
    return {name: registry.create(name, params).encode(clip).data for name, params in TINY.items()}


def rewrite(data: bytes, **changes) -> bytes:
    """The same file with header fields changed (config fields under config=...): every CRC valid."""
    container = Container.from_bytes(data)
    header = dict(container.header)
    header["config"] = {**header["config"], **changes.pop("config", {})}
    header.update(changes)
    return Container(codec=container.codec, header=header, sections=container.sections).to_bytes()


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv(budget.LIMIT_ENV, "1G")


def test_sizes_parse_and_the_limit_comes_from_the_environment(monkeypatch):
    assert budget.parse_size("1.5G") == int(1.5 * 2**30) and budget.parse_size("800M") == 800 * 2**20
    assert budget.parse_size("2e9") == 2_000_000_000
    for bad in ("", "-1G", "nan", "1Q", "0"):
        with pytest.raises(ValueError):
            budget.parse_size(bad)
    monkeypatch.setenv(budget.LIMIT_ENV, "123M")
    assert budget.memory_limit() == 123 * 2**20
    monkeypatch.setenv(budget.LIMIT_ENV, "lots")
    with pytest.raises(UnavailableError, match="not a size"):
        budget.memory_limit()
    monkeypatch.delenv(budget.LIMIT_ENV)
    assert budget.memory_limit() > 100 * 2**20


@pytest.mark.parametrize("name", list(TINY))
def test_a_huge_frame_in_a_crc_valid_header_is_refused_before_allocating(files, name, small_limit):
    hostile = rewrite(files[name], width=16384, height=16384)
    with pytest.raises(BitstreamError, match="memory to decode"):
        harness.decode_bytes(hostile)


@pytest.mark.parametrize("name, config", [("weightstep", {"width": 4096, "depth": 32}),
                                          ("nerv", {"channels": 4096}),
                                          ("full-cnn", {"dip_channels": 1024})])
def test_a_network_too_big_for_the_budget_is_refused_before_it_is_built(files, name, config, small_limit):
    # full-cnn: 1024 maps of 1024x1024 activations (4 GB each); the others' weights alone are over 1 GB
    geometry = {"width": 1024, "height": 1024} if name == "full-cnn" else {}
    with pytest.raises(BitstreamError, match="parameters"):
        harness.decode_bytes(rewrite(files[name], config=config, **geometry))


def test_a_config_that_does_not_match_the_streams_tensors_never_builds_the_network(files, monkeypatch):
    built = []
    original = WeightStepCodec._network

    def spy(self, height, width, device=None):
        built.append(device)
        return original(self, height, width, device)

    monkeypatch.setattr(WeightStepCodec, "_network", spy)
    with pytest.raises(BitstreamError, match="tensor"):
        harness.decode_bytes(rewrite(files["weightstep"], config={"width": 64}))
    assert built == [None]  # the meta-device build only: refused before any real network existed


@pytest.mark.parametrize("name", list(TINY))
def test_within_budget_the_decoders_reproduce_the_encoder(name):
    clip = moving_clip(frames=2, size=32)
    codec = registry.create(name, TINY[name])
    encoded = codec.encode(clip)
    decoded = harness.decode(codec, encoded.data)
    assert decoded.frames == 2 and np.array_equal(decoded.rgb(), codec.reconstruction.numpy())


def test_the_footprint_counts_a_network_exactly_without_building_it():
    from weightstep.inr import NetworkSpec, build_network

    spec = NetworkSpec(kind="siren", width=96, depth=4)
    cost = budget.footprint(lambda: build_network(spec, 4096, 2048, chunk_size=budget.RENDER_CHUNK))
    assert cost.parameters == 28_515  # the SIREN docstring's count
    assert cost.activation_bytes == 4096 * 2048 * 3 * 4  # the output frame; chunks are 65536 x 96 floats
    assert cost.state_bytes >= 4096 * 2048 * 2 * 4  # the coordinate buffer is counted


def test_a_failed_allocation_is_a_clean_error():
    with pytest.raises(UnavailableError, match="not enough memory"):
        with budget.guarded("decoding"):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(RuntimeError, match="other"):  # other errors pass through untouched
        with budget.guarded("decoding"):
            raise RuntimeError("other")


# non-finite values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("codec, key, value", [("x264", "crf", "nan"), ("x265", "crf", "inf"),
                                               ("weightstep", "lambda", "nan"), ("weightstep", "q_lambda", "inf"),
                                               ("weightstep", "anchor_lr", "nan"), ("full-mlp", "lr", "-inf"),
                                               ("nerv", "q_lambda", "nan")])
def test_non_finite_values_are_refused(codec, key, value):
    with pytest.raises(ConfigError, match="not a finite number"):
        registry.create(codec, {key: value})


def test_non_finite_values_in_a_protocol_are_refused():
    base = '[[datasets]]\nname = "s"\nvideos = ["synthetic:testsrc2"]\n[[techniques]]\nlabel = "a"\ncodec = "x264"\n'
    with pytest.raises(ConfigError, match="cpus_per_job"):
        parse_protocol("[resources]\ncpus_per_job = nan\n" + base, "p.toml")
    with pytest.raises(ConfigError, match="cpus"):
        parse_protocol(base + "cpus = inf\n", "p.toml")


def with_header_text(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace text in the stream's header JSON and fix its length and the CRC (layout in coding/container.py)."""
    magic, version, meta_len = struct.unpack_from("<4sHI", data)
    assert version == 2
    pos = 10 + meta_len
    stream = data[pos + 4:-4]
    length, shift, i = 0, 0, 0
    while True:  # the header's length, a varint
        length |= (stream[i] & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not stream[i - 1] & 0x80:
            break
    head = stream[i:i + length]
    assert old in head
    head = head.replace(old, new)
    size = bytearray()
    n = len(head)
    while True:
        size.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            break
    rebuilt = bytes(size) + head + stream[i + length:]
    body = data[4:pos] + struct.pack("<I", len(rebuilt)) + rebuilt
    return magic + body + struct.pack("<I", zlib.crc32(body))


def test_a_non_finite_value_in_a_crc_valid_header_is_refused(files):
    hostile = with_header_text(rewrite(files["weightstep"], config={"q_lambda": 0.123}), b"0.123", b"1e999")
    with pytest.raises(ConfigError, match="finite"):
        harness.decode_bytes(hostile)


# Matroska ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def x264_file():
    clip = moving_clip(frames=3, size=32)
    return registry.create("x264", {"preset": "ultrafast"}).encode(clip).data


def test_our_matroska_files_carry_a_checksum_that_refuses_damage(x264_file):
    decode_stream(x264_file)  # intact: decodes
    with av.open(io.BytesIO(x264_file)) as container:
        assert len(container.metadata[CHECKSUM_TAG]) == 64
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    start = x264_file.find(bytes(packets[-1]))  # a byte inside the last frame's packet
    assert start > 0
    damaged = bytearray(x264_file)
    damaged[start + len(bytes(packets[-1])) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        decode_stream(bytes(damaged))


def test_a_file_from_before_checksums_still_decodes(x264_file):
    older = x264_file.replace(CHECKSUM_TAG.encode(), b"WEIGHTSTEP_STREAM_SHA25X")  # as if the tag were absent
    assert decode_stream(older).frames == 3


def test_a_file_without_a_usable_video_stream_is_refused():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(BitstreamError, match="no video stream"):
        harness.decode_bytes(buffer.getvalue())


def test_a_stream_declaring_an_odd_frame_size_is_refused():
    """Found by the fuzzer: a damaged AV1 sequence header (valid checksum) declaring 32x31 reached PyAV's
    4:2:0 conversion, which asserts on odd sizes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 31, "yuv420p"
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((31, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    with pytest.raises(BitstreamError, match="odd sizes"):
        decode_stream(buffer.getvalue())


# one rule for output paths ---------------------------------------------------------------------------

def test_encode_and_decode_refuse_a_missing_output_folder_alike(tmp_path, x264_file):
    runner = CliRunner()
    source = tmp_path / "in.mkv"
    source.write_bytes(x264_file)
    for args in (["encode", "synthetic:testsrc2", "-n", "1", "-c", "x264", "-o", str(tmp_path / "no" / "x.mkv")],
                 ["decode", str(source), "-o", str(tmp_path / "no" / "x.y4m")],
                 ["decode", str(source), "-o", str(tmp_path / "no" / "frames") + "/"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "output folder does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["decode", str(source), "-o", str(tmp_path / "file" / "x.y4m")])
    assert result.exit_code == 2 and "is not a folder" in result.output
    result = runner.invoke(app, ["decode", str(source), "-o", str(tmp_path / "frames") + "/"])
    assert result.exit_code == 0 and len(list((tmp_path / "frames").glob("*.png"))) == 3

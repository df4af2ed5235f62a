"""What DVC and VCII share as codecs: checkpoints, key frames, the container header, decoder bounds.

A subclass names its checkpoint kind, builds its network from a checkpoint record and codes
the frames between key frames. Key frames go through :mod:`baselines.neuralvc.intra`; the
stream is our container, one section per group of pictures (``GOP_``)::

    intra_len  uint32
    intra      intra_len bytes: the key frame's elementary stream
    checksum   uint32: CRC32 of the group's decoded symbols (an altered ANS stream may still decode)
    rest       the codec's coded frames of the group (one ANS stream)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from baselines.neuralvc.checkpoint import fingerprint, load_into, read_record
from baselines.neuralvc.frames import padded_size
from baselines.neuralvc.intra import decode_intra, encode_intra
from weightstep.codecs.base import Codec
from weightstep.codecs.streamconfig import full_config, plain, stream_config
from weightstep.coding.container import FORMAT_VERSION, Container
from weightstep.config import build
from weightstep.device import device_label, resolve_device, stream_device
from weightstep.errors import BitstreamError, ConfigError, UnavailableError
from weightstep.progress import make_progress
from weightstep.video import Video
from weightstep.video.colour import MATRICES, rgb_to_yuv420, yuv420_to_rgb

MAX_SIDE = 4096  # neural decoders allocate float32 feature maps: refuse larger frames before anything else
MAX_TOTAL_PIXELS = 1 << 30  # frames x width x height a decoder will hold (about 500 frames of 1080p)
_LEN = struct.Struct("<I")
STREAM_FORMAT = 2  # 1: the whole config, the weights' fingerprint and the padding in the header (still read)

_NETS: dict[tuple[str, str, float, int], tuple[dict, nn.Module, str]] = {}


def how_to_get(kind: str) -> str:
    public = {"dvc": "convert the public PyTorch DVC weights with `weightstep convert dvc iterN.model -o dvc.ckpt`",
              "vcii": "convert the authors' VCII weights with `weightstep convert vcii ENCODER_0.pth ENCODER_1.pth "
                      "ENCODER_2.pth -o vcii.ckpt`"}[kind]
    return (f"give -p checkpoint=PATH: train one with `weightstep train {kind} VIDEO... -o {kind}.ckpt` "
            f"(sample:carphone works), or {public}")


class NeuralVideoCodec(Codec):
    """Shared encode/decode scaffolding; subclasses implement the coding of a group of pictures."""

    container = FORMAT_VERSION  # part of describe(): results of another container version stop matching
    kind: ClassVar[str]  # checkpoint kind: "dvc" or "vcii"
    # The settings a decoder never reads (kept in the file's metadata, not in the stream the rate
    # counts) and the frozen defaults the stream's settings are written against (add a table,
    # never edit one): weightstep/codecs/streamconfig.py.
    ENCODER_ONLY: ClassVar[frozenset[str]]
    STREAM_DEFAULTS: ClassVar[dict[int, dict[str, Any]]]
    stride: ClassVar[int]  # frames are padded to a multiple of this
    suffix = ".wst"

    # checkpoints ------------------------------------------------------------------------------
    def availability(self) -> str | None:
        path = self.config.checkpoint
        if not path:
            return f"no checkpoint (this baseline never runs untrained weights); {how_to_get(self.kind)}"
        if not Path(path).is_file():
            return f"checkpoint {path} does not exist; {how_to_get(self.kind)}"
        return None

    def build_network(self, record: dict) -> nn.Module:
        raise NotImplementedError

    def network(self) -> tuple[dict, nn.Module, str]:
        """(record without weights, network in eval mode on the device, weights fingerprint); cached per file."""
        reason = self.availability()
        if reason:
            raise UnavailableError(f"{self.name} cannot run: {reason}")
        path = Path(self.config.checkpoint)
        stat = path.stat()
        device = resolve_device(self.config.device)
        key = (str(path.resolve()), str(device), stat.st_mtime, stat.st_size)
        if key not in _NETS:
            record = read_record(path, self.kind)
            net = self.build_network(record)
            load_into(net, record["state_dict"], str(path))
            net.to(device).eval()
            info = {k: v for k, v in record.items() if k not in ("state_dict", "optimizer")}
            if len(_NETS) > 4:
                _NETS.clear()
            _NETS[key] = (info, net, fingerprint(record["state_dict"]))
        info, net, digest = _NETS[key]
        lam = getattr(self.config, "lmbda", None)
        if lam is not None and info.get("lambda") is not None and float(info["lambda"]) != float(lam):
            raise ConfigError(f"{self.name}: the checkpoint {path} was trained at lambda {info['lambda']:g}, "
                              f"but this rate point asks for lambda {lam:g} (give the matching checkpoint)")
        return info, net, digest

    def device_label(self) -> str:
        return device_label(resolve_device(self.config.device))

    def intra_crf(self, info: dict) -> float:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["format"] = STREAM_FORMAT
        return out

    # key frames -----------------------------------------------------------------------------
    def code_key(self, video: Video, index: int, crf: float) -> tuple[bytes, torch.Tensor]:
        """Key frame ``index``: its bytes and its decoded RGB (1,3,H,W) as the decoder will see it."""
        if video.has_native_yuv and video.bit_depth == 8:
            planes = tuple(p[index] for p in video.yuv420())
        else:
            planes = tuple(p[0] for p in rgb_to_yuv420(video.rgb()[index:index + 1], bit_depth=8, matrix=video.matrix))
        data = encode_intra(planes, self.config.intra_codec, crf, self.config.intra_preset)
        return data, self.decode_key(data, video.width, video.height, video.matrix)

    def decode_key(self, data: bytes, width: int, height: int, matrix: str) -> torch.Tensor:
        y, u, v = decode_intra(data, self.config.intra_codec, width, height)
        rgb = yuv420_to_rgb(y[None], u[None], v[None], bit_depth=8, matrix=matrix)
        return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))

    # the container --------------------------------------------------------------------------
    def write(self, video: Video, digest: str, sections: list[tuple[str, bytes]]) -> tuple[bytes, int]:
        """(the file, the bytes of its stream): the stream carries geometry and the settings its
        decoder reads (against a frozen table of defaults, weightstep/codecs/streamconfig.py); the
        full settings, the weights' fingerprint and where it ran go to the metadata, which the
        rate does not count (the checkpoint is the decoder's, as a conventional codec's spec is)."""
        carried, table = stream_config(self.config, self.STREAM_DEFAULTS, self.ENCODER_ONLY)
        header = {"config": carried, "defaults": table, "width": video.width, "height": video.height,
                  "frames": video.frames, "fps": float(video.fps), "bit_depth": 8, "matrix": video.matrix,
                  "format": STREAM_FORMAT}
        meta = {"config": dataclasses.asdict(self.config), "weights": digest,
                "encoded_on": stream_device(resolve_device(self.config.device))}
        return Container(self.name, header, sections, meta=meta).write()

    def open_stream(self, data: bytes) -> tuple[Container, NeuralVideoCodec, int, int, int, str]:
        """Parse and bound-check a file of this codec: (container, this codec with the stream's
        settings, width, height, frames, matrix). Only the checkpoint and the device stay ours."""
        container = Container.from_bytes(data)
        if container.codec != self.name:
            raise BitstreamError(f"the file was written by codec {container.codec!r}, not {self.name!r}")
        h = container.header
        fmt = h.get("format", 1)
        if fmt not in (1, STREAM_FORMAT) or isinstance(fmt, bool):
            raise BitstreamError(f"{self.name} stream format {fmt!r} (this build reads 1 and {STREAM_FORMAT})")
        w, hgt, n = h["width"], h["height"], h["frames"]
        if w > MAX_SIDE or hgt > MAX_SIDE:
            raise BitstreamError(f"frame size {w}x{hgt} exceeds this decoder's limit of {MAX_SIDE} per side")
        if w * hgt * n > MAX_TOTAL_PIXELS:
            raise BitstreamError(f"{n} frames of {w}x{hgt} exceed this decoder's limit of {MAX_TOTAL_PIXELS} pixels")
        if w % 2 or hgt % 2:
            raise BitstreamError(f"frame size {w}x{hgt} is not even (4:2:0 key frames)")
        matrix = h.get("matrix")
        if matrix not in MATRICES:
            raise BitstreamError(f"header matrix {matrix!r} is not one of {', '.join(MATRICES)}")
        if fmt == 1:
            if not isinstance(h.get("weights"), str):
                raise BitstreamError("header lacks the weights fingerprint")
            ph, pw = padded_size(hgt, w, self.stride)
            if h.get("padded") != [pw, ph]:
                raise BitstreamError(f"header padding {h.get('padded')!r} does not match {pw}x{ph}")
        codec = self.for_stream(h)
        groups = codec.section_count(n)
        found = container.sections_tagged("GOP_")
        if len(found) != groups or len(container.sections) != groups:
            raise BitstreamError(f"expected {groups} GOP_ sections for {n} frames at GOP {codec.config.gop}, "
                                 f"found {len(container.sections)} sections")
        return container, codec, w, hgt, n, matrix

    def for_stream(self, header: dict[str, Any]) -> NeuralVideoCodec:
        """This codec with the settings a stream's header carries (a version-1 header carries them
        all; what the encoder alone reads is ignored there)."""
        stored = full_config(header, self.STREAM_DEFAULTS, f"{self.name} stream")
        aliases = getattr(self.Config, "aliases", {})  # "lambda" is lmbda: an alias never slips past the filter
        decoding = {k: v for k, v in stored.items() if aliases.get(k, k) not in self.ENCODER_ONLY}
        try:
            config = build(self.Config, {**plain(dataclasses.asdict(self.config)), **decoding},
                           where=f"{self.name} stream header")
        except ConfigError as exc:
            raise BitstreamError(f"{self.name} stream: invalid settings in the header ({exc})") from None
        return type(self)(config)

    def section_count(self, frames: int) -> int:
        """GOP_ sections a file of ``frames`` frames holds (one per group of ``gop`` frames)."""
        return -(-frames // self.config.gop)

    def check_weights(self, container: Container, digest: str) -> None:
        """Refuse a file coded with other weights than the checkpoint's (the fingerprint is in the
        metadata from format 2 on, in the header before; a file without one is decoded, and a
        wrong checkpoint then fails its groups' symbol checksums)."""
        written = container.header.get("weights", container.meta.get("weights"))
        if written is not None and written != digest:
            raise BitstreamError(f"the file was coded with weights {written}, but the checkpoint "
                                 f"{self.config.checkpoint} holds weights {digest}: give the checkpoint it was made with")


@contextlib.contextmanager
def frame_progress(description: str, total: int):
    """A Rich bar with ETA over the frames of an encode or decode; yields ``tick()``."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        yield lambda: progress.advance(task)


def pack_group(intra: bytes, rest: bytes, checksum: int) -> bytes:
    return _LEN.pack(len(intra)) + intra + _LEN.pack(checksum) + rest


def unpack_group(payload: bytes) -> tuple[bytes, int, bytes]:
    """(key frame bytes, symbol checksum, the coded frames' stream) of a GOP_ section."""
    if len(payload) < 2 * _LEN.size:
        raise BitstreamError("truncated GOP_ section")
    (n,) = _LEN.unpack_from(payload)
    if n == 0 or n > len(payload) - 2 * _LEN.size:
        raise BitstreamError(f"GOP_ section: key frame length {n} does not fit its {len(payload)} bytes")
    (checksum,) = _LEN.unpack_from(payload, _LEN.size + n)
    return payload[_LEN.size:_LEN.size + n], checksum, payload[2 * _LEN.size + n:]


def recon_digest(frames: np.ndarray) -> str:
    """MD5 of the float32 reconstruction (the encoder records it; a decode must give the same)."""
    return hashlib.md5(np.ascontiguousarray(frames, dtype=np.float32).tobytes()).hexdigest()


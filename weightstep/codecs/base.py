"""The Codec interface every technique implements, and the Result record every report reads.

A codec turns a Video into the bytes of a file (``encode``) and such bytes back into a Video
(``decode``). It measures nothing itself: the harness (:mod:`weightstep.codecs.harness`)
times both calls and measures the decoded output against the source, so every number in
every report comes from the same code.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from weightstep.coding.container import MAGIC, payload_size
from weightstep.video import Video


@dataclass
class Encoded:
    """What an encoder hands back: the file to write and what only the encoder knows."""

    data: bytes  # the whole file as written to disk
    payload_bytes: int | None = None  # the elementary stream's bytes (the rate); None: codec.payload_bytes(data)
    per_frame_bits: list[int | None] | None = None  # coded bits of each frame in display order
    estimated_bits: float | None = None  # an entropy-model estimate, logged but never the rate
    extra: dict[str, Any] = field(default_factory=dict)  # codec-specific facts (e.g. changed weights)


class Codec(abc.ABC):
    """One technique. Subclasses set ``name``, ``Config`` and ``suffix`` and implement the rest."""

    name: ClassVar[str]
    Config: ClassVar[type]  # frozen dataclass of parameters, built with weightstep.config.param
    suffix: ClassVar[str] = ".bin"  # default file ending for its bitstreams
    summary: ClassVar[str] = ""  # one line for `weightstep codecs`
    # The weightstep container version the codec writes (None: another format). It is part of
    # describe(), so results of an older container (whose rate counted its settings) stop matching.
    container: ClassVar[int | None] = None

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    def describe(self) -> dict[str, Any]:
        """Settings and library versions this codec ran with."""
        info = {"codec": self.name, "config": dataclasses.asdict(self.config)}
        if self.container is not None:
            info["container"] = self.container
        return info

    @abc.abstractmethod
    def encode(self, video: Video) -> Encoded:
        """Code ``video``; the returned file must decode with :meth:`decode`."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> Video:
        """Rebuild the video from a file written by :meth:`encode`."""

    def payload_bytes(self, data: bytes) -> int:
        """Bytes a decoder needs from a written file: a weightstep container's elementary stream
        (its metadata and CRC are left out, as a Matroska file's are for a conventional codec)."""
        return payload_size(data) if bytes(data[:4]) == MAGIC else len(data)

    def device_label(self) -> str:
        """Where this codec computes (conventional codecs: the CPU)."""
        return "cpu"

    def availability(self) -> str | None:
        """None when the codec can run here, else the reason it cannot (missing checkpoint...)."""
        return None


@dataclass
class Result:
    """One measured encode/decode (the schema in shared/result.schema.json)."""

    codec: str
    config: dict[str, Any]
    video: str
    frames: int
    width: int
    height: int
    fps: float
    bytes: int
    file_bytes: int
    bpp: float
    psnr_rgb: float
    psnr_yuv: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    per_frame: list[dict[str, Any]]
    device: str
    versions: dict[str, str]
    seed: int | None = None
    estimated_bits: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

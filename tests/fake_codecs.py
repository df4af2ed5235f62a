"""Codecs for executor tests, registered through WEIGHTSTEP_CODECS so that worker processes see them too."""

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from baselines.conventional import X264
from weightstep.codecs.base import Codec
from weightstep.config import param

PLUGINS = "failing=fake_codecs:FailingCodec,dying=fake_codecs:DyingX264,holding=fake_codecs:HoldingX264"


@dataclass(frozen=True)
class FailingConfig:
    level: int = param(1, "a parameter", low=0, high=9)


class FailingCodec(Codec):
    name = "failing"
    Config = FailingConfig
    summary = "always raises (tests)"

    def encode(self, video):
        raise RuntimeError("boom: this codec always fails")

    def decode(self, data):  # pragma: no cover - never reached
        raise AssertionError


@dataclass(frozen=True)
class DyingConfig:
    crf: float = param(30.0, "x264 crf", low=0.0, high=51.0)
    marker: str = param("", "file that exists once the worker died here; '' never dies, 'always' always does")


class DyingX264(Codec):
    """x264 whose first attempt SIGKILLs its own worker process mid-job (the marker file remembers it)."""

    name = "dying"
    Config = DyingConfig
    suffix = ".mkv"
    summary = "x264 that kills its worker once (tests)"

    def _x264(self):
        return X264(X264.Config(crf=self.config.crf, preset="ultrafast"))

    def encode(self, video):
        if self.config.marker == "always":
            os.kill(os.getpid(), signal.SIGKILL)
        marker = Path(self.config.marker) if self.config.marker else None
        if marker is not None and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self._x264().encode(video)

    def decode(self, data):
        return self._x264().decode(data)

    def payload_bytes(self, data):
        return self._x264().payload_bytes(data)


@dataclass(frozen=True)
class HoldingConfig:
    crf: float = param(30.0, "x264 crf", low=0.0, high=51.0)
    hold: str = param("", "while this file exists, encode waits (the test decides when a job may end); '' never waits")
    seed: int = param(0, "seeded, so protocol seeds multiply its jobs", low=0)


class HoldingX264(Codec):
    """x264 whose encode blocks while its ``hold`` file exists: a run can be killed in a known state."""

    name = "holding"
    Config = HoldingConfig
    suffix = ".mkv"
    summary = "x264 that waits on a file (tests)"

    def _x264(self):
        return X264(X264.Config(crf=self.config.crf, preset="ultrafast"))

    def encode(self, video):
        import time

        while self.config.hold and Path(self.config.hold).exists():
            time.sleep(0.05)
        return self._x264().encode(video)

    def decode(self, data):
        return self._x264().decode(data)

    def payload_bytes(self, data):
        return self._x264().payload_bytes(data)

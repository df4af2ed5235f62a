"""The one Video object every reader returns and every codec consumes and produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from weightstep.errors import InputError
from weightstep.video.colour import MATRICES, rgb_to_yuv420, yuv420_to_rgb


@dataclass(eq=False)
class Video:
    """A clip: its own YUV 4:2:0 planes when the source has them, RGB float32 on demand.

    Exactly what a source gave is kept: ``planes`` for YUV sources (8 or 10 bit, uint8/uint16),
    ``rgb`` for RGB ones (PNG folders, network outputs). The other form is derived lazily with
    the ``matrix`` colour conversion and cached.
    """

    identity: str  # stable name of the input (path or sample:/synthetic: name plus options)
    fps: float
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    rgb_frames: np.ndarray | None = None  # float32 (T,3,H,W) in [0, 1]
    bit_depth: int = 8
    matrix: str = "bt709"
    _rgb_cache: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.planes is None and self.rgb_frames is None:
            raise InputError(f"{self.identity}: a video needs YUV planes or RGB frames")
        if self.matrix not in MATRICES:
            raise InputError(f"unknown colour matrix {self.matrix!r}; use one of {', '.join(MATRICES)}")
        if self.bit_depth not in (8, 10):
            raise InputError(f"{self.identity}: bit depth {self.bit_depth} is not supported (8 or 10)")
        if not self.fps or self.fps <= 0:
            raise InputError(f"{self.identity}: frame rate must be positive, got {self.fps}")
        if self.planes is not None:
            y, u, v = self.planes
            t, h, w = y.shape
            if h % 2 or w % 2:
                raise InputError(f"{self.identity}: 4:2:0 needs an even width and height, got {w}x{h}")
            if u.shape != (t, h // 2, w // 2) or v.shape != u.shape:
                raise InputError(f"{self.identity}: chroma planes do not match a {w}x{h} 4:2:0 frame")
        else:
            if self.rgb_frames.ndim != 4 or self.rgb_frames.shape[1] != 3:
                raise InputError(f"{self.identity}: RGB frames must have shape (T,3,H,W)")
            self.rgb_frames = np.ascontiguousarray(self.rgb_frames, dtype=np.float32)
        if self.frames == 0:
            raise InputError(f"{self.identity}: the video has zero frames")

    # geometry -----------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return (self.planes[0] if self.planes is not None else self.rgb_frames).shape[0]

    @property
    def height(self) -> int:
        return self.planes[0].shape[1] if self.planes is not None else self.rgb_frames.shape[2]

    @property
    def width(self) -> int:
        return self.planes[0].shape[2] if self.planes is not None else self.rgb_frames.shape[3]

    @property
    def has_native_yuv(self) -> bool:
        return self.planes is not None

    # the two representations ----------------------------------------------------------------
    def rgb(self) -> np.ndarray:
        """RGB float32 (T,3,H,W) in [0, 1]: the source's own if RGB, else converted and cached."""
        if self.rgb_frames is not None:
            return self.rgb_frames
        if self._rgb_cache is None:
            self._rgb_cache = yuv420_to_rgb(*self.planes, bit_depth=self.bit_depth, matrix=self.matrix)
        return self._rgb_cache

    def yuv420(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer 4:2:0 planes: the source's own if YUV, else converted from RGB (and cached)."""
        if self.planes is None:
            try:
                self.planes = rgb_to_yuv420(self.rgb_frames, bit_depth=self.bit_depth, matrix=self.matrix)
            except ValueError as exc:
                raise InputError(f"{self.identity}: {exc}") from None
        return self.planes

    def slice(self, start: int, count: int | None = None) -> Video:
        """Frames [start, start + count) as a new Video sharing the arrays."""
        stop = self.frames if count is None else min(self.frames, start + count)
        if start < 0 or start >= self.frames or stop <= start:
            raise InputError(f"{self.identity}: frames {start}..{stop} are outside its {self.frames} frames")
        planes = None if self.planes is None else tuple(p[start:stop] for p in self.planes)
        rgb = None if self.rgb_frames is None else self.rgb_frames[start:stop]
        return Video(identity=self.identity, fps=self.fps, planes=planes, rgb_frames=rgb,
                     bit_depth=self.bit_depth, matrix=self.matrix)

    def describe(self) -> dict:
        return {"video": self.identity, "frames": self.frames, "width": self.width, "height": self.height,
                "fps": self.fps, "bit_depth": self.bit_depth, "matrix": self.matrix,
                "native": "yuv420p" if self.has_native_yuv else "rgb"}

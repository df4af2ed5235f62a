"""Training clips for the neural baselines: videos, folders of videos or frames, the Vimeo-90k septuplet layout.

An input is anything ``weightstep encode`` reads (a file, ``sample:NAME``, ``synthetic:NAME``,
a folder of PNG frames), or a folder searched for such inputs: video files and folders of PNG
frames under it, or a Vimeo-90k root (``sequences/XXXXX/YYYY/im1.png .. im7.png``, with
``sep_trainlist.txt`` when present). Clips are held as uint8 RGB; many small clips (Vimeo)
are read on demand, a few large ones once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weightstep.errors import InputError

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m", ".m4v", ".mpg", ".mpeg", ".ts", ".yuv"}
PRELOAD_LIMIT = 32  # clips read once and kept; beyond that each sample reads its clip again


@dataclass(frozen=True)
class ClipSource:
    spec: str  # what open_video reads
    frames: int | None  # frames to read at most


def _has_png(folder: Path) -> bool:
    return any(p.suffix.lower() == ".png" for p in folder.iterdir() if p.is_file())


def _vimeo(root: Path, max_frames: int) -> list[ClipSource]:
    listing = root / "sep_trainlist.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        folders = [root / "sequences" / name for name in names]
    else:
        folders = sorted(p for p in (root / "sequences").glob("*/*") if p.is_dir())
    return [ClipSource(str(f), max_frames) for f in folders if f.is_dir()]


def discover(inputs: list[str], max_frames: int) -> list[ClipSource]:
    """Every clip the inputs name (folders searched); an input that yields nothing is an InputError."""
    clips: list[ClipSource] = []
    for spec in inputs:
        path = Path(spec)
        if spec.startswith(("sample:", "synthetic:")) or path.is_file():
            clips.append(ClipSource(spec, max_frames))
            continue
        if not path.is_dir():
            raise InputError(f"training input {spec}: no such file or folder")
        if (path / "sequences").is_dir():
            found = _vimeo(path, max_frames)
        elif _has_png(path):
            found = [ClipSource(spec, max_frames)]
        else:
            found = []
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and sub.suffix.lower() in VIDEO_SUFFIXES:
                    found.append(ClipSource(str(sub), max_frames))
                elif sub.is_dir() and _has_png(sub):
                    found.append(ClipSource(str(sub), max_frames))
        if not found:
            raise InputError(f"training input {spec}: no videos or PNG frame folders found in it")
        clips.extend(found)
    return clips


def _read(source: ClipSource) -> np.ndarray:
    from weightstep.video.options import ReadOptions
    from weightstep.video.readers import open_video

    video = open_video(source.spec, ReadOptions(frames=source.frames))
    rgb = video.rgb()
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (T, 3, H, W)


class TrainingData:
    """Random crops of random runs of frames from the clips."""

    def __init__(self, inputs: list[str], *, frames_needed: int, crop: int, max_frames: int = 100,
                 min_frames: int | None = None):
        """Runs are ``frames_needed`` long, or as short as ``min_frames`` when the clips are shorter
        (Vimeo-90k septuplets hold 7 frames); :attr:`frames_needed` is the length chosen."""
        self.sources = discover(inputs, max_frames)
        self.crop = crop
        self._cache: dict[int, np.ndarray] = {}
        shortest = min_frames if min_frames is not None else frames_needed
        if len(self.sources) <= PRELOAD_LIMIT:
            clips = [_read(source) for source in self.sources]
            shortest = min(clip.shape[0] for clip in clips)
        self.frames_needed = frames_needed if shortest >= frames_needed else max(shortest, min_frames or frames_needed)
        if len(self.sources) <= PRELOAD_LIMIT:
            for i, clip in enumerate(clips):
                self._cache[i] = self._checked(i, clip)

    def _checked(self, index: int, clip: np.ndarray) -> np.ndarray:
        t, _, h, w = clip.shape
        if t < self.frames_needed:
            raise InputError(f"training clip {self.sources[index].spec} has {t} frames; training needs at least "
                             f"{self.frames_needed}")
        if h < self.crop or w < self.crop:
            raise InputError(f"training clip {self.sources[index].spec} is {w}x{h}, smaller than the crop "
                             f"{self.crop}x{self.crop} (use a smaller --crop)")
        return clip

    def clip(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        return self._checked(index, _read(self.sources[index]))

    def sample(self, rng: np.random.Generator, batch: int) -> torch.Tensor:
        """(batch, frames_needed, 3, crop, crop) float32 in [0, 1]; random clip, start, window and flip."""
        out = np.empty((batch, self.frames_needed, 3, self.crop, self.crop), dtype=np.uint8)
        for b in range(batch):
            clip = self.clip(int(rng.integers(len(self.sources))))
            t, _, h, w = clip.shape
            s = int(rng.integers(t - self.frames_needed + 1))
            y = int(rng.integers(h - self.crop + 1))
            x = int(rng.integers(w - self.crop + 1))
            window = clip[s:s + self.frames_needed, :, y:y + self.crop, x:x + self.crop]
            if rng.random() < 0.5:
                window = window[..., ::-1]
            if rng.random() < 0.5:
                window = window[::-1]  # play the run backwards: motion both ways
            out[b] = window
        return torch.from_numpy(out).float().div_(255.0)

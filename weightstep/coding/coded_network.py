"""The result of coding one network (an anchor): what the stepping schedules receive from the
anchor coder (:mod:`weightstep.codecs.anchor`). It sits in ``coding`` so that ``stepping`` can
name it without importing ``codecs``, which sits above it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CodedNetwork"]


@dataclass
class CodedNetwork:
    data: bytes  # the anchor section: packed weights (and latents)
    weights: dict[str, torch.Tensor]  # dequantised weights (and integer latents), what the decoder gets
    frame: torch.Tensor  # (1,3,H,W) 8-bit-level reconstruction from those weights
    report: dict[str, Any]  # fit and quantisation facts for the Result's extra

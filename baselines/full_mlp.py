"""``full-mlp``: one coordinate MLP f(x, y, t) -> RGB for the whole clip (the proposal's section 4.1).

The network is the anchor MLP of :mod:`weightstep.inr` (SIREN or Fourier features) with a
third input, time. Coordinates: for SIREN x, y and t each run over ``[-1, 1]``
(``linspace`` over the width, height and frame count), for the Fourier MLP over ``[0, 1]``
(so its sigma means what it does for images). A one-frame clip has t at the middle.

Training draws mini-batches of ``batch`` pixels across all frames: each epoch is a seeded
permutation of the clip's T*H*W pixels (``torch.Generator`` seeded from ``seed``), cut into
batches, so an epoch shows every pixel once (but for the permutation's last, partial batch,
which is skipped) and takes floor(T*H*W / batch) steps. Loss: MSE.

Decoding queries every pixel of every frame, one frame per forward pass (in chunks of
``CHUNK`` coordinates), the same way in encoder and decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from baselines.fullseq import (
    LAMBDA_ALIASES,
    Batch,
    FullSequenceCodec,
    device_param,
    epochs_param,
    finetune_param,
    lambda_param,
    per_channel_param,
    prune_param,
    search_frames_param,
    seed_param,
    time_budget_param,
)
from weightstep.codecs.anchor import DEFAULT_LR
from weightstep.config import param
from weightstep.inr import NetworkSpec
from weightstep.inr.fourier import ACTIVATIONS, FourierMLP
from weightstep.inr.siren import Siren, coordinate_grid, pixels_to_image

CHUNK = 65536  # coordinates per MLP evaluation when rendering (bounds memory; fixed for bit-exactness)


@dataclass(frozen=True)
class FullMlpConfig:
    inr: str = param("siren", "coordinate network: SIREN or Fourier-feature MLP (proposal section 4.2)",
                     choices=("siren", "fourier"))
    width: int = param(96, "hidden width; with depth it sets the model size (96x4 SIREN on (x,y,t): 28.6k params)",
                       low=4, high=4096)
    depth: int = param(4, "hidden layers", low=1, high=32)
    first_omega: float = param(30.0, "SIREN w0 of the first layer: the highest frequency it starts with", low=0.0)
    fourier_sigma: float = param(10.0, "std of the Fourier feature matrix on [0,1]^3 coordinates", low=1e-3, high=1e3)
    fourier_features: int = param(128, "number of Fourier frequencies (features are twice this)", low=1, high=8192)
    activation: str = param("relu", "Fourier MLP activation", choices=tuple(ACTIVATIONS))
    epochs: int = epochs_param(20)
    batch: int = param(8192, "pixels per optimiser step, drawn across all frames", low=1, high=2**24)
    time_budget: float | None = time_budget_param()
    lr: float | None = param(None, "Adam learning rate (warm-up, then cosine decay to 1 %); none = the network "
                             "kind's default: siren 1e-3, fourier 1e-2", low=0.0, high=1.0)
    prune: float = prune_param(0.0)
    finetune_epochs: int = finetune_param(2)
    aliases: ClassVar[dict[str, str]] = LAMBDA_ALIASES
    lam: float = lambda_param(1e-4)
    per_channel: bool = per_channel_param()
    search_frames: int = search_frames_param()
    seed: int = seed_param()
    device: str = device_param()

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(kind=self.inr, width=self.width, depth=self.depth, first_omega=self.first_omega,
                           fourier_sigma=self.fourier_sigma, fourier_features=self.fourier_features,
                           activation=self.activation, seed=self.seed)


class CoordinateVideoNet(nn.Module):
    """f(x, y, t): ``forward(frame_indices)`` -> (n, 3, H, W); :meth:`pixels` for training batches."""

    def __init__(self, spec: NetworkSpec, frames: int, height: int, width: int):
        super().__init__()
        self.frames, self.height, self.width = int(frames), int(height), int(width)
        mlp_class = Siren if spec.kind == "siren" else FourierMLP
        # Siren / FourierMLP build their own (H*W, 2) grid; a 1x1 one is enough, ours is below.
        self.mlp = mlp_class(spec, 1, 1, in_features=3, chunk_size=CHUNK)
        low, high = (-1.0, 1.0) if spec.kind == "siren" else (0.0, 1.0)
        self.register_buffer("xy", coordinate_grid(self.height, self.width, low, high), persistent=False)
        times = torch.linspace(low, high, self.frames) if self.frames > 1 else torch.full((1,), (low + high) / 2)
        self.register_buffer("times", times.to(torch.float32), persistent=False)

    def coordinates(self, pixel_indices: torch.Tensor) -> torch.Tensor:
        """Flat pixel indices over (T, H, W) -> (n, 3) coordinates (x, y, t)."""
        per_frame = self.height * self.width
        t, p = pixel_indices // per_frame, pixel_indices % per_frame
        return torch.cat([self.xy[p], self.times[t].unsqueeze(1)], dim=1)

    def pixels(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp.query(coords)

    def forward(self, frame_indices: torch.Tensor) -> torch.Tensor:
        out = []
        for t in frame_indices.tolist():
            coords = torch.cat([self.xy, self.times[t].expand(self.xy.shape[0], 1)], dim=1)
            out.append(pixels_to_image(self.mlp.query(coords), self.height, self.width))
        return torch.cat(out, dim=0)


class FullMlpCodec(FullSequenceCodec):
    name = "full-mlp"
    Config = FullMlpConfig
    summary = "full-sequence coordinate MLP f(x,y,t) (SIREN / Fourier), pixel mini-batches, constriction-coded"
    FORMAT = 1
    STREAM_DEFAULTS = {
        1: {"inr": "siren", "width": 96, "depth": 4, "first_omega": 30.0, "fourier_sigma": 10.0,
            "fourier_features": 128, "activation": "relu", "epochs": 20, "batch": 8192, "time_budget": None,
            "lr": None, "prune": 0.0, "finetune_epochs": 2, "lam": 0.0001, "per_channel": True, "search_frames": 8,
            "seed": 0, "device": "auto"},
    }
    RENDER_GROUP = 1

    def network(self, config: FullMlpConfig, frames: int, height: int, width: int) -> nn.Module:
        return CoordinateVideoNet(config.network_spec(), frames, height, width)

    def learning_rate(self) -> float:
        return self.config.lr if self.config.lr is not None else DEFAULT_LR[self.config.inr]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((pred - target) ** 2)

    def batches(self, net: nn.Module, target: torch.Tensor, seed: int) -> tuple[int, Batch]:
        count = target.shape[0] * target.shape[2] * target.shape[3]
        size = min(self.config.batch, count)
        flat = target.permute(0, 2, 3, 1).reshape(-1, 3)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed))
        state: dict[str, Any] = {"perm": None, "pos": count}

        def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            if state["pos"] + size > count:  # a new epoch: a fresh permutation (a short tail is skipped)
                state["perm"], state["pos"] = torch.randperm(count, generator=generator), 0
            chosen = state["perm"][state["pos"]:state["pos"] + size].to(flat.device)
            state["pos"] += size
            return model.pixels(model.coordinates(chosen)), flat[chosen]

        return count // size, batch

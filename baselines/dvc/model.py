"""DVC's networks: pyramid optical flow, motion autoencoder, motion compensation, residual autoencoder with hyperprior.

One P-frame step (training path, :meth:`DvcNet.forward`): estimate flow from the frame to
its decoded reference, code the flow with the motion autoencoder (latents under a
factorised density), warp the reference with the decoded flow and refine the prediction,
then code the residual with an autoencoder whose latents are Laplace with scales from a
hyperprior (hyper-latents under a factorised density). During training rounding is
replaced by uniform noise; the rate is the latents' information content.

The real coding path is in :mod:`baselines.dvc.coding`; both use the pieces below, so an
encoder and a decoder compute exactly the same prediction and reconstruction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.dvc.layers import GDN, FactorizedDensity, ResBlock
from baselines.neuralvc.frames import warp

STRIDE = 64  # residual latents at 1/16, hyper-latents at 1/64 of the frame
LIKELIHOOD_FLOOR = 1e-9


@dataclass(frozen=True)
class DvcArch:
    """Sizes of the networks (the paper's in :data:`PRESETS` ``"paper"``); a checkpoint records them."""

    flow_levels: int = 4  # pyramid levels of the flow estimator (coarsest at 1/2^(levels-1))
    flow_channels: tuple[int, ...] = (32, 64, 32, 16)  # widths of the four hidden convs of each level
    flow_kernel: int = 7  # kernel size of the flow convs (SpyNet: 7)
    mv_channels: int = 128  # motion latent channels (and the motion autoencoder's width)
    warp_channels: int = 64  # width of the motion compensation network
    res_channels: int = 64  # width of the residual autoencoder and hyper-latent channels (N)
    latent_channels: int = 96  # residual latent channels (M)

    def to_json(self) -> dict:
        out = asdict(self)
        out["flow_channels"] = list(self.flow_channels)
        return out

    @classmethod
    def from_json(cls, data: dict) -> DvcArch:
        from weightstep.errors import InputError

        names = {f for f in cls.__dataclass_fields__}
        if not isinstance(data, dict) or set(data) != names:
            raise InputError(f"DVC architecture record must have exactly the keys {sorted(names)}")
        values = dict(data)
        values["flow_channels"] = tuple(values["flow_channels"])
        ints = [v for k, v in values.items() if k != "flow_channels"] + list(values["flow_channels"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in ints) \
                or len(values["flow_channels"]) != 4 or values["flow_levels"] > 6 or values["flow_kernel"] % 2 == 0:
            raise InputError(f"DVC architecture record out of range: {data}")
        return cls(**values)


PRESETS = {
    "paper": DvcArch(),
    "small": DvcArch(flow_channels=(16, 32, 16, 8), flow_kernel=5, mv_channels=64, warp_channels=32,
                     res_channels=48, latent_channels=64),
    "tiny": DvcArch(flow_levels=3, flow_channels=(4, 8, 4, 4), flow_kernel=3, mv_channels=8, warp_channels=8,
                    res_channels=8, latent_channels=8),
}


class FlowLevel(nn.Module):
    """One pyramid level: [frame, warped reference, upsampled flow] (8 channels) -> flow correction."""

    def __init__(self, widths: tuple[int, ...], kernel: int):
        super().__init__()
        sizes = (8, *widths, 2)
        self.layers = nn.ModuleList(nn.Conv2d(a, b, kernel, padding=kernel // 2) for a, b in zip(sizes, sizes[1:], strict=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class PyramidFlow(nn.Module):
    """SpyNet-style coarse-to-fine flow from ``frame`` to ``reference`` (in pixels, x then y)."""

    def __init__(self, arch: DvcArch):
        super().__init__()
        self.levels = nn.ModuleList(FlowLevel(arch.flow_channels, arch.flow_kernel) for _ in range(arch.flow_levels))

    def forward(self, frame: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        frames, refs = [frame], [reference]
        for _ in range(len(self.levels) - 1):
            frames.append(F.avg_pool2d(frames[-1], 2))
            refs.append(F.avg_pool2d(refs[-1], 2))
        n, _, h, w = frames[-1].shape
        flow = frame.new_zeros(n, 2, h // 2, w // 2)
        for level, (f, r) in enumerate(zip(reversed(frames), reversed(refs), strict=True)):
            up = F.interpolate(flow, size=f.shape[-2:], mode="bilinear", align_corners=False) * 2.0
            flow = up + self.levels[level](torch.cat([f, warp(r, up), up], dim=1))
        return flow


class MotionEncoder(nn.Module):
    """Flow (2 channels) -> motion latents at 1/16: four stride-2 convs, each followed by a stride-1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(2 if i == 0 else channels, channels, 3, stride=2 if i % 2 == 0 else 1, padding=1) for i in range(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.leaky_relu(layer(x), 0.1)
        return self.layers[-1](x)


class MotionDecoder(nn.Module):
    """Motion latents -> flow: four x2 transposed convs, each followed by a stride-1 conv (the last to 2 channels)."""

    def __init__(self, channels: int):
        super().__init__()
        layers = []
        for i in range(8):
            if i % 2 == 0:
                layers.append(nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1))
            else:
                layers.append(nn.Conv2d(channels, 2 if i == 7 else channels, 3, padding=1))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.leaky_relu(layer(x), 0.1)
        return self.layers[-1](x)


class Compensation(nn.Module):
    """[warped reference, reference] -> a correction of the warped frame (a small U-shaped residual net)."""

    def __init__(self, channels: int):
        super().__init__()
        self.head = nn.Conv2d(6, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(channels) for _ in range(6))
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.blocks
        c0 = b[0](F.relu(self.head(x)))
        c1 = b[1](F.avg_pool2d(c0, 2))
        c3 = b[3](b[2](F.avg_pool2d(c1, 2)))
        c4 = b[4](c1 + F.interpolate(c3, scale_factor=2, mode="bilinear", align_corners=True))
        c5 = b[5](c0 + F.interpolate(c4, scale_factor=2, mode="bilinear", align_corners=True))
        return self.tail(c5)


class ResidualEncoder(nn.Module):
    def __init__(self, n: int, m: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else n, m if i == 3 else n, 5, stride=2, padding=2)
                                   for i in range(4))
        self.gdns = nn.ModuleList(GDN(n) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, gdn in zip(self.convs, self.gdns, strict=False):
            x = gdn(conv(x))
        return self.convs[3](x)


class ResidualDecoder(nn.Module):
    def __init__(self, n: int, m: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.ConvTranspose2d(m if i == 0 else n, 3 if i == 3 else n, 5, stride=2, padding=2,
                                                      output_padding=1) for i in range(4))
        self.gdns = nn.ModuleList(GDN(n, inverse=True) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, gdn in zip(self.convs, self.gdns, strict=False):
            x = gdn(conv(x))
        return self.convs[3](x)


class HyperEncoder(nn.Module):
    def __init__(self, n: int, m: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(m, n, 3, padding=1), nn.Conv2d(n, n, 5, stride=2, padding=2),
                                    nn.Conv2d(n, n, 5, stride=2, padding=2)])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.convs[0](y.abs()))
        return self.convs[2](F.relu(self.convs[1](x)))


class HyperDecoder(nn.Module):
    """Hyper-latents -> Laplace scales of the residual latents (exp of the last layer)."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
                                    nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1),
                                    nn.ConvTranspose2d(n, m, 3, stride=1, padding=1)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.convs[1](F.relu(self.convs[0](z))))
        return torch.exp(self.convs[2](x))


def laplace_likelihood(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P(round(Y) = y) for Y ~ Laplace(0, scale): the mass of [y - 0.5, y + 0.5]."""
    scale = scale.clamp_min(1e-5)

    def cdf(v: torch.Tensor) -> torch.Tensor:
        return 0.5 - 0.5 * torch.sign(v) * torch.expm1(-v.abs() / scale)

    return cdf(y + 0.5) - cdf(y - 0.5)


def _bits(likelihood: torch.Tensor) -> torch.Tensor:
    return -torch.log2(likelihood.clamp_min(LIKELIHOOD_FLOOR)).sum()


class DvcNet(nn.Module):
    """All of DVC's P-frame networks (the I-frame codec is conventional)."""

    def __init__(self, arch: DvcArch):
        super().__init__()
        self.arch = arch
        n, m = arch.res_channels, arch.latent_channels
        self.flow = PyramidFlow(arch)
        self.motion_encoder = MotionEncoder(arch.mv_channels)
        self.motion_decoder = MotionDecoder(arch.mv_channels)
        self.compensation = Compensation(arch.warp_channels)
        self.residual_encoder = ResidualEncoder(n, m)
        self.residual_decoder = ResidualDecoder(n, m)
        self.hyper_encoder = HyperEncoder(n, m)
        self.hyper_decoder = HyperDecoder(n, m)
        self.z_prior = FactorizedDensity(n)
        self.mv_prior = FactorizedDensity(arch.mv_channels)

    def predict(self, reference: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, warped reference) from the decoded flow."""
        warped = warp(reference, flow)
        return warped + self.compensation(torch.cat([warped, reference], dim=1)), warped

    def forward(self, frame: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training / estimation pass; noise for rounding in train mode, rounding in eval mode."""
        def q(v: torch.Tensor) -> torch.Tensor:
            return v + torch.empty_like(v).uniform_(-0.5, 0.5) if self.training else torch.round(v)

        m_hat = q(self.motion_encoder(self.flow(frame, reference)))
        prediction, warped = self.predict(reference, self.motion_decoder(m_hat))
        y = self.residual_encoder(frame - prediction)
        z_hat = q(self.hyper_encoder(y))
        scale = self.hyper_decoder(z_hat)
        y_hat = q(y)
        recon = prediction + self.residual_decoder(y_hat)
        pixels = frame.shape[0] * frame.shape[2] * frame.shape[3]
        bits = {"mv": _bits(self.mv_prior.likelihood(m_hat)), "z": _bits(self.z_prior.likelihood(z_hat)),
                "y": _bits(laplace_likelihood(y_hat, scale))}
        return {"recon": recon, "prediction": prediction, "warped": warped, "bits_mv": bits["mv"],
                "bits_z": bits["z"], "bits_y": bits["y"], "bpp": (bits["mv"] + bits["z"] + bits["y"]) / pixels}


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def lambda_to_crf(lam: float) -> int:
    """DVC's pairing of lambda and its key-frame quality (2048 -> 20, 1024 -> 23, 512 -> 26, 256 -> 29)."""
    return int(min(51, max(0, round(29 - 3 * math.log2(lam / 256.0)))))

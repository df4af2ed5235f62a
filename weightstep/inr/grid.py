"""Latent-grid image network (the C3 / Cool-chic family): ``forward()`` returns the frame it encodes.

Layout for ``grid_levels`` = L and ``grid_hidden`` = S::

    latents: L grids of one channel, level l of size ceil(H / 2^l) x ceil(W / 2^l)
    upsample each level by 2^l (bicubic), crop to H x W, stack -> (1, L, H, W)
    synthesis: 1x1 conv L -> S, ReLU, 1x1 conv S -> 3 = x;  frame = 0.5 + x + conv3x3(x)

With L = 7 and S = 16 the synthesis has 263 parameters; nearly all of the rate is in the
latents, which are integers in the stream (trained with additive uniform noise, then
straight-through rounding: the anchor coder does both) and are entropy-coded under the
Laplace that :class:`~weightstep.inr.latent_context.LatentContext` predicts from already
decoded data. The context model's weights are parameters of this network too (a few hundred),
coded like the synthesis weights.

Parameter names: ``latents.0`` (finest) .. ``latents.{L-1}``, ``synthesis.*``, ``context.*``.
:meth:`GridNet.latent_names` tells a coder which of them are latents.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from weightstep.inr.latent_context import LatentContext
from weightstep.inr.siren import init_generator, uniform_
from weightstep.inr.spec import NetworkSpec, WarpTarget


def level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(h, w) of each latent level, finest first: ceil(H / 2^l) x ceil(W / 2^l)."""
    return [(-(-int(height) // 2**level), -(-int(width) // 2**level)) for level in range(levels)]


MATMUL_MAX = 320  # longest side of a level upsampled by matrices when fitting (beyond it torch's kernel is faster)


@functools.lru_cache(maxsize=64)
def upsample_matrix(size: int, scale: int, out: int, mode: str, device: torch.device, dtype: torch.dtype
                    ) -> torch.Tensor:
    """(out, size): 1-D ``mode`` upsampling by ``scale`` (align_corners=False, border clamped, as
    F.interpolate), cropped to ``out`` samples. Column j is the upsampled unit vector e_j; the
    2-D kernels are separable, so A_h @ x @ A_w^T is the 2-D upsampling of x up to rounding."""
    with torch.no_grad():
        eye = torch.eye(size, device=device, dtype=dtype).reshape(size, 1, 1, size)
        up = F.interpolate(eye, size=(1, size * scale), mode=mode, align_corners=False)
    return up.reshape(size, size * scale)[:, :out].t().contiguous()


class GridSynthesis(nn.Module):
    """The per-pixel synthesis: two 1x1 convs with a ReLU, then a 3x3 residual refinement."""

    def __init__(self, levels: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.mix = nn.Conv2d(levels, hidden, 1)
        self.out = nn.Conv2d(hidden, 3, 1)
        self.refine = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate")
        for conv, gain in ((self.mix, 2.0), (self.out, 1.0)):
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            uniform_(conv.weight, math.sqrt(3.0 * gain / fan_in), generator)
            nn.init.zeros_(conv.bias)
        with torch.no_grad():  # ReLUs open on all-zero latents (else nothing receives a gradient)
            self.mix.bias.uniform_(0.0, 0.2, generator=generator)
        nn.init.zeros_(self.refine.weight)  # starts as the identity residual
        nn.init.zeros_(self.refine.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and features.shape[0] == 1:
            return self._fit_forward(features)
        x = self.out(F.relu(self.mix(features)))
        return 0.5 + x + self.refine(x)

    def _fit_forward(self, features: torch.Tensor) -> torch.Tensor:
        """The same function for fitting, up to float rounding: the 1x1 convolutions as matrix products
        on the (channels, pixels) view and the 3x3 one on a channels-last copy. Forward and backward
        of the synthesis took 5.6 ms a fit step at 176x144 on one CPU thread, 4.0 ms so (coded renders
        and the decoder keep the convolutions, so streams decode as before)."""
        _, channels, height, width = features.shape
        hidden = torch.relu(torch.addmm(self.mix.bias[:, None], self.mix.weight.reshape(-1, channels),
                                        features.reshape(channels, height * width)))
        x = torch.addmm(self.out.bias[:, None], self.out.weight.reshape(3, -1), hidden).reshape(1, 3, height, width)
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate").contiguous(memory_format=torch.channels_last)
        return (0.5 + x + F.conv2d(padded, self.refine.weight, self.refine.bias)).contiguous()


class GridNet(nn.Module):
    """Latent grids + synthesis + the latents' context model, for one (height, width) frame."""

    def __init__(self, spec: NetworkSpec, height: int, width: int):
        super().__init__()
        self.height, self.width = int(height), int(width)
        self.levels = int(spec.grid_levels)
        self.upsample_mode = spec.grid_upsample
        self.shapes = level_shapes(self.height, self.width, self.levels)
        self.latents = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, h, w)) for h, w in self.shapes)
        generator = init_generator(spec.seed, stream=1)
        self.synthesis = GridSynthesis(self.levels, spec.grid_hidden, generator)
        self.context = LatentContext(self.levels, spec.grid_context_hidden)
        self.context.reset(generator)
        # Upsample by matrices in coded renders too (weightstep stream format 3, encoder and decoder
        # alike); False keeps torch's kernel there, as streams of formats 1 and 2 were rendered.
        self.matrix_render = False

    def latent_names(self) -> tuple[str, ...]:
        """Names of the parameters coded as integer latents (the rest are network weights)."""
        return tuple(f"latents.{level}" for level in range(self.levels))

    def warp_targets(self) -> tuple[WarpTarget, ...]:
        """A motion warp moves every latent grid (level l: one sample per 2^l pixels)."""
        return tuple(WarpTarget(name, "map", 2**level) for level, name in enumerate(self.latent_names()))

    def upsampled(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """(1, L, H, W): every level upsampled to the frame and cropped.

        With autograd on (fitting), a level of at most MATMUL_MAX samples a side is upsampled as
        A_h @ level @ A_w^T with the interpolation's own 1-D matrices: the same function up to
        float rounding, 3-9x faster forward and backward on a CPU than torch's bicubic kernel.
        Without autograd (every coded render, and the decoder) it is the matrices too when
        ``matrix_render`` is set (streams of format 3: 0.4 ms against 3 ms for the six levels at
        176x144), else torch's kernel; either way the encoder's coded renders and the decoder take
        the same path, whichever the fit took."""
        if latents[0].is_meta:  # shape-only pass (a decoder's memory check): skip the decomposed bicubic
            return torch.empty(1, self.levels, self.height, self.width, device="meta")
        by_matrix = torch.is_grad_enabled() or self.matrix_render
        planes = [latents[0][..., : self.height, : self.width]]
        for level in range(1, self.levels):
            grid = latents[level]
            if by_matrix and max(grid.shape[-2:]) <= MATMUL_MAX:
                rows = upsample_matrix(grid.shape[-2], 2**level, self.height, self.upsample_mode, grid.device,
                                       grid.dtype)
                cols = upsample_matrix(grid.shape[-1], 2**level, self.width, self.upsample_mode, grid.device,
                                       grid.dtype)
                planes.append(rows @ grid @ cols.t())
                continue
            up = F.interpolate(grid, scale_factor=2**level, mode=self.upsample_mode, align_corners=False)
            planes.append(up[..., : self.height, : self.width])
        return torch.cat(planes, dim=1)

    def forward(self) -> torch.Tensor:
        return self.synthesis(self.upsampled(list(self.latents)))

    def latent_bits(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bits of the latents in ``params`` under the context model in ``params`` (differentiable)."""
        context = {name[len("context."):]: value for name, value in params.items() if name.startswith("context.")}
        latents = [params[name] for name in self.latent_names()]
        return functional_call(self.context, context, (latents,))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""The progressive coding loop of VCII, shared by training, the encoder and the decoder."""

from __future__ import annotations

from collections.abc import Callable

import torch

from baselines.vcii.model import LevelNet
from baselines.vcii.motion import block_motion, warp_features


def contexts(net: LevelNet, left: torch.Tensor, right: torch.Tensor, fraction: float, block: int, radius: int):
    """Warped U-Net features of both references for a frame at ``fraction`` of the way from left to right."""
    n = left.shape[0]
    features = net.context(torch.cat([left - 0.5, right - 0.5], dim=0))
    motion = block_motion(left, right, block, radius)
    ctx_left = warp_features([f[:n] for f in features], fraction * motion)
    ctx_right = warp_features([f[n:] for f in features], -(1.0 - fraction) * motion)
    return ctx_left, ctx_right


def progressive(net: LevelNet, left: torch.Tensor, right: torch.Tensor, ctx, iterations: int,
                frame: torch.Tensor | None = None, codes: Callable[[int], torch.Tensor] | None = None):
    """Run ``iterations`` passes; with ``frame`` the encoder makes the codes, else ``codes(it)`` supplies them.

    Returns (reconstructions after each pass, codes of each pass, residual magnitudes of each pass).
    """
    ctx_left, ctx_right = ctx
    recon = torch.full_like(left, 0.5)
    residual = None if frame is None else frame - 0.5
    enc_states, dec_states = [None] * 3, [None] * 4
    recons, all_codes, losses = [], [], []
    for it in range(iterations):
        if frame is not None:
            encoded, enc_states = net.encoder(torch.cat([left - 0.5, residual, right - 0.5], dim=1), enc_states,
                                              ctx_left, ctx_right)
            code = net.binarizer(encoded)
        else:
            code = codes(it)
        output, dec_states = net.decoder(code, dec_states, ctx_left, ctx_right)
        recon = recon + output
        recons.append(recon)
        all_codes.append(code)
        if residual is not None:
            residual = residual - output
            losses.append(residual.abs().mean())
    return recons, all_codes, losses

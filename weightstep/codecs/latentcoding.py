"""Coding the integer latents of a latent-grid network under its own context model.

A network with latents (:class:`weightstep.inr.GridNet`) exposes ``latent_names()``, ``shapes``
(each level's (h, w)) and ``context`` (a :class:`~weightstep.inr.latent_context.LatentContext`).
The context model runs on the CPU in float32 with the *dequantised* context weights, on both
sides, walking :func:`~weightstep.inr.latent_context.coding_plan`'s decoding order.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
from torch import nn

from weightstep.coding.latents import ChunkDecoder, encode_chunks, ideal_bits
from weightstep.inr.build import latent_names
from weightstep.inr.latent_context import Chunk, LatentContext, coding_plan

_PREFIX = "context."


def _context(net: nn.Module, weights: dict[str, torch.Tensor]) -> LatentContext:
    """A CPU copy of ``net.context`` holding the context weights of ``weights``."""
    context = copy.deepcopy(net.context).cpu().float()
    state = {name[len(_PREFIX):]: value.detach().cpu().float() for name, value in weights.items()
             if name.startswith(_PREFIX)}
    context.load_state_dict(state, strict=True)
    return context


def latent_chunks(net: nn.Module, weights: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(symbols, mu, scale) of every pass, in decoding order; ``weights`` holds integer-valued latents."""
    grids = [weights[name].detach().cpu().float() for name in latent_names(net)]
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def known(level: int, _which: str, mask: torch.Tensor, params: Chunk) -> torch.Tensor:
        values = grids[level].reshape(-1)[mask]
        chunks.append((values.numpy().astype(np.int64), *params))
        return values

    coding_plan(_context(net, weights), [tuple(g.shape[-2:]) for g in grids], known)
    return chunks


def latent_inputs(net: nn.Module, weights: dict[str, torch.Tensor]) -> bytes:
    """A digest of everything :func:`latent_bits` reads from ``weights`` (the context weights and the
    latents): equal digests, equal bits, so a search over the other weights can reuse the figure."""
    names = [name for name in weights if name.startswith(_PREFIX)] + list(latent_names(net))
    digest = hashlib.sha256()
    for name in names:
        digest.update(weights[name].detach().cpu().float().numpy().tobytes())
    return digest.digest()


def latent_bits(net: nn.Module, weights: dict[str, torch.Tensor]) -> float:
    """Information content of the latents under the coded context model (what the file will pay)."""
    chunks = latent_chunks(net, weights)
    symbols = np.concatenate([s for s, _, _ in chunks])
    lo, hi = int(symbols.min()), int(symbols.max())
    return float(sum(ideal_bits(s, mu, scale, lo, hi) for s, mu, scale in chunks))


def encode_latents(net: nn.Module, weights: dict[str, torch.Tensor]) -> bytes:
    return encode_chunks(latent_chunks(net, weights))


def decode_latents(net: nn.Module, weights: dict[str, torch.Tensor], blob: bytes) -> dict[str, torch.Tensor]:
    """The latents of ``blob``, decoded with the context weights in ``weights`` (dequantised)."""
    decoder = ChunkDecoder(blob)

    def decoded(_level: int, _which: str, _mask: torch.Tensor, params: Chunk) -> torch.Tensor:
        return torch.from_numpy(decoder.decode(*params).astype(np.float32))

    grids = coding_plan(_context(net, weights), list(net.shapes), decoded)
    decoder.finish()
    return dict(zip(latent_names(net), grids, strict=True))

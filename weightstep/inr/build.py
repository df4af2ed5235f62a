"""``build_network``: the network a ``NetworkSpec`` (``spec.py``) describes, for a frame size.

One spec describes a network for any frame size: ``build_network(spec, height, width)``.
Everything the decoder needs to rebuild the network except its weights is in the spec
(fixed inputs are regenerated from ``seed``), so a codec stores the spec in its header.

Parameter order is ``model.named_parameters()`` order, fixed by construction order; the
coding layer relies on it. Fixed inputs (coordinates, Fourier matrix, DIP noise) are
non-persistent buffers: not parameters and not in ``state_dict()``.
"""

from __future__ import annotations

from torch import nn

from weightstep.config import validate
from weightstep.errors import ConfigError
from weightstep.inr.dip import DipNet
from weightstep.inr.fourier import FourierMLP
from weightstep.inr.grid import GridNet
from weightstep.inr.siren import Siren
from weightstep.inr.spec import KINDS, NetworkSpec

__all__ = ["KINDS", "NetworkSpec", "build_network", "latent_names"]


def build_network(spec: NetworkSpec, height: int, width: int, *, chunk_size: int | None = None) -> nn.Module:
    """The float32 CPU network ``spec`` describes for (height, width) frames; ``forward()`` -> (1,3,H,W).

    ``chunk_size`` (MLPs only) bounds the coordinates evaluated at once. Raises ConfigError
    for out-of-range fields or a frame size below 1x1.
    """
    validate(spec)
    if int(height) < 1 or int(width) < 1:
        raise ConfigError(f"frame size {width}x{height} is not at least 1x1")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size} must be positive")
    if spec.kind == "siren":
        return Siren(spec, height, width, chunk_size=chunk_size)
    if spec.kind == "fourier":
        return FourierMLP(spec, height, width, chunk_size=chunk_size)
    if spec.kind == "grid":
        return GridNet(spec, height, width)
    return DipNet(spec, height, width)


def latent_names(net: nn.Module) -> tuple[str, ...]:
    """Parameters of ``net`` coded as integer latents under its own entropy model (grid); () otherwise."""
    names = getattr(net, "latent_names", None)
    return tuple(names()) if callable(names) else ()

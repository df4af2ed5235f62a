"""DVC's real coding path: P-frame latents to constriction symbols and back.

Per P-frame, in the order a decoder reads them from one ANS stream per GOP:

1. motion latents, channel by channel, each channel under its factorised density
   (``Categorical`` over the integers [-R, R], tails folded into the end symbols);
2. hyper-latents, the same way under their own factorised density;
3. residual latents under ``QuantizedLaplace(-R, R)`` with location 0 and the scale the
   hyper-decoder gives for each latent, snapped to a log grid of step 2^(1/16) so that a
   last-bit difference in a convolution cannot change the model.

Latents are rounded and clipped to [-R, R] before anything uses them, so encoder and decoder
reconstruct from identical integers. The rate the model estimates is the one the training loss
uses (continuous scales, not snapped to the coder's grid); see :func:`estimates`.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from baselines.dvc.layers import FactorizedDensity
from baselines.dvc.model import DvcNet, laplace_likelihood
from weightstep.coding.entropy import SegmentReader, SegmentWriter

RANGE = 127  # latents are clipped to [-RANGE, RANGE]
SCALE_STEPS = 16  # scales snap to 2^(k / SCALE_STEPS)
SCALE_MIN, SCALE_MAX = 2.0**-6, 2.0**10
_MODELS = constriction.stream.model


def factorized_tables(prior: FactorizedDensity) -> np.ndarray:
    """(C, 2R+1) probabilities of each integer in [-R, R] per channel (float64, tails folded)."""
    with torch.no_grad():
        k = torch.arange(-RANGE, RANGE + 1, dtype=torch.float64).view(1, 1, 1, -1)
        k = k.expand(1, prior.channels, 1, k.shape[-1])
        upper = prior.cdf(k + 0.5)[0, :, 0, :]
        lower = prior.cdf(k - 0.5)[0, :, 0, :]
        upper[:, -1] = 1.0
        lower[:, 0] = 0.0
        probs = (upper - lower).clamp_min(0.0).cpu().numpy()
    return probs


class Models:
    """The fixed models of one network (built once: the factorised tables depend only on weights)."""

    def __init__(self, net: DvcNet):
        self.mv = [_MODELS.Categorical(p, perfect=False) for p in factorized_tables(net.mv_prior)]
        self.z = [_MODELS.Categorical(p, perfect=False) for p in factorized_tables(net.z_prior)]
        self.y = _MODELS.QuantizedLaplace(-RANGE, RANGE)


def snap_scales(scale: torch.Tensor) -> np.ndarray:
    s = scale.detach().to("cpu", torch.float64).clamp(SCALE_MIN, SCALE_MAX)
    return torch.exp2(torch.round(torch.log2(s) * SCALE_STEPS) / SCALE_STEPS).numpy().ravel()


def _q(v: torch.Tensor) -> torch.Tensor:
    return torch.round(v).clamp_(-RANGE, RANGE)


def reconstruct(net: DvcNet, reference: torch.Tensor, m_hat: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The decoded frame from the integer latents (the one function encoder and decoder share)."""
    prediction, _ = net.predict(reference, net.motion_decoder(m_hat))
    return (prediction + net.residual_decoder(y_hat)).clamp_(0.0, 1.0)


def _add_channels(writer: SegmentWriter, latents: torch.Tensor, models: list) -> None:
    symbols = (latents[0].to("cpu", torch.int64) + RANGE).numpy()
    for channel, model in zip(symbols, models, strict=True):
        writer.add(channel.ravel(), model)


def _bits(likelihood: torch.Tensor, floor: float) -> float:
    return float(-torch.log2(likelihood.clamp_min(floor)).sum())


def estimates(net: DvcNet, m_hat: torch.Tensor, z_hat: torch.Tensor, y_hat: torch.Tensor,
              scale: torch.Tensor) -> dict[str, float]:
    """The model's rate estimate of the latents, two ways.

    ``mv``, ``z``, ``y``: the training loss's own formula (float32, probabilities floored at
    1e-9 as in :meth:`DvcNet.forward`): what the model predicts. ``exact``: the information
    content in float64 with no practical floor. The coder gives every symbol at least 2^-24 of
    probability, so symbols far in a density's tail cost it less than ``exact`` says.
    """
    out = {"mv": _bits(net.mv_prior.likelihood(m_hat), 1e-9), "z": _bits(net.z_prior.likelihood(z_hat), 1e-9),
           "y": _bits(laplace_likelihood(y_hat, scale), 1e-9)}
    d = torch.float64
    out["exact"] = (_bits(net.mv_prior.likelihood(m_hat.to(d)), 2.0**-60)
                    + _bits(net.z_prior.likelihood(z_hat.to(d)), 2.0**-60)
                    + _bits(laplace_likelihood(y_hat.to(d), scale.to(d)), 2.0**-60))
    return out


@torch.no_grad()
def encode_p(net: DvcNet, models: Models, frame: torch.Tensor, reference: torch.Tensor,
             writer: SegmentWriter) -> tuple[torch.Tensor, dict[str, float]]:
    """Code one P-frame into ``writer``; returns the decoder's reconstruction and the model's bit estimates."""
    m_hat = _q(net.motion_encoder(net.flow(frame, reference)))
    prediction, _ = net.predict(reference, net.motion_decoder(m_hat))
    y = net.residual_encoder(frame - prediction)
    z_hat = _q(net.hyper_encoder(y))
    scale = net.hyper_decoder(z_hat)
    y_hat = _q(y)
    recon = reconstruct(net, reference, m_hat, y_hat)
    _add_channels(writer, m_hat, models.mv)
    _add_channels(writer, z_hat, models.z)
    writer.add((y_hat[0].to("cpu", torch.int64)).numpy().ravel(), models.y,
               np.zeros(y_hat.numel()), snap_scales(scale))
    return recon, estimates(net, m_hat, z_hat, y_hat, scale)


def _take_channels(reader: SegmentReader, models: list, h: int, w: int, device: torch.device) -> torch.Tensor:
    rows = [reader.take(h * w, model) for model in models]
    out = torch.from_numpy(np.stack(rows).astype(np.float32) - RANGE).view(1, len(models), h, w)
    return out.to(device)


@torch.no_grad()
def decode_p(net: DvcNet, models: Models, reference: torch.Tensor, reader: SegmentReader) -> torch.Tensor:
    """Read one P-frame from ``reader`` and reconstruct it from ``reference``."""
    _, _, h, w = reference.shape
    device = reference.device
    m_hat = _take_channels(reader, models.mv, h // 16, w // 16, device)
    z_hat = _take_channels(reader, models.z, h // 64, w // 64, device)
    scale = snap_scales(net.hyper_decoder(z_hat))
    count = net.arch.latent_channels * (h // 16) * (w // 16)
    y = reader.take(count, models.y, np.zeros(count), scale)
    y_hat = torch.from_numpy(y.astype(np.float32)).view(1, net.arch.latent_channels, h // 16, w // 16).to(device)
    return reconstruct(net, reference, m_hat, y_hat)

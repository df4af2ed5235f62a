"""Global magnitude pruning, and coding a network whose pruned weights cost no value bits.

Pruning (NeRV section 3.3, after Han et al.): of all *prunable* weights together (every
parameter tensor with two or more dimensions: linear and conv kernels, never biases), the
``round(ratio * count)`` of smallest magnitude are set to zero. Ties are broken by position
(a stable sort over the tensors in ``named_parameters()`` order), so exactly the requested
number is removed and the masks are reproducible.

Coding (:func:`code_network`, one container section)::

    mode      uint8    0: dense, 1: pruned
    dense:    pack_network(all tensors)                        (weightstep.coding.tensorpack)
    pruned:   count    varint  number of masked tensors (the decoder knows how many to expect)
              count x  varint length + encode_bits(mask)       (weightstep.coding.entropy)
              pack_network(values) where a masked tensor contributes only its surviving
              entries (a 1-D tensor of mask.sum() values, in C order), others are whole
    (files written before the compact layout hold pack_tensors there; they still decode)

So a pruned weight costs only its share of the binary mask (coded under a Bernoulli model
with the map's own frequency) and no value bits. The quantisation steps are chosen as the
anchors' are (:func:`weightstep.coding.stepsearch.search_steps`: the best shared step, then
each tensor's own) over the surviving values: distortion + lam * real bits, so ``lambda``
means what it means for every other codec.
The mask bits do not depend on the step, so leaving them out of the search changes nothing
it decides. Surviving values of a masked tensor are 1-D, so they always take one step per
tensor (``per_channel`` applies to the dense tensors). A survivor may quantise to zero and
stays in the mask; a pruned weight dequantises to exactly 0.0.

The decoder derives which tensors are masked and every shape from the config-built network;
it checks the mode, the mask count, each mask's length and that the value tensors have the
survivor counts its masks imply, so a damaged section is a one-line ``BitstreamError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from weightstep.codecs.netcoding import code_weights
from weightstep.coding.entropy import decode_bits, encode_bits
from weightstep.coding.framing import ByteReader, put_varint
from weightstep.coding.quantise import DEFAULT_CANDIDATES, QuantisedTensor
from weightstep.coding.stepsearch import StepsReport, search_steps
from weightstep.coding.tensorpack import pack_network, unpack_network
from weightstep.errors import BitstreamError

DENSE, PRUNED = 0, 1

Shapes = Sequence[tuple[str, Sequence[int]]]


def prunable_names(shapes: Shapes) -> list[str]:
    """Names of the tensors pruning may touch: those with two or more dimensions (kernels)."""
    return [name for name, shape in shapes if len(shape) >= 2]


def global_magnitude_masks(weights: dict[str, torch.Tensor], ratio: float,
                           names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Boolean keep-masks (True = kept) removing the ``round(ratio * n)`` smallest |w| of ``names``.

    ``names`` defaults to :func:`prunable_names` of ``weights``. The threshold is global over
    all of them (one magnitude ranking, not per layer).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    if names is None:
        names = prunable_names([(name, tuple(w.shape)) for name, w in weights.items()])
    flat = [weights[name].detach().cpu().abs().reshape(-1).double() for name in names]
    sizes = [f.numel() for f in flat]
    total = sum(sizes)
    remove = int(round(ratio * total))
    keep = torch.ones(total, dtype=torch.bool)
    if remove > 0:
        order = torch.argsort(torch.cat(flat), stable=True)
        keep[order[:remove]] = False
    masks, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        masks[name] = keep[start:start + size].reshape(weights[name].shape)
        start += size
    return masks


def apply_masks_(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries of ``params`` in place (masks are moved to each tensor's device)."""
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def pruned_fraction(weights: dict[str, torch.Tensor], names: Sequence[str]) -> float:
    """Fraction of exact zeros among the entries of ``names``."""
    total = sum(weights[name].numel() for name in names)
    zeros = sum(int((weights[name] == 0).sum()) for name in names)
    return zeros / total if total else 0.0


# ---------------------------------------------------------------- coding


def _survivors(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu().float().reshape(-1)[mask.reshape(-1).cpu()].clone()


def _scatter(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    full = torch.zeros(mask.numel(), dtype=torch.float32)
    full[mask.reshape(-1)] = values.float()
    return full.reshape(mask.shape)


def code_network(weights: dict[str, torch.Tensor], distortion: Callable[[dict[str, torch.Tensor]], float],
                 lam: float, pixels: int, per_channel: bool, masks: dict[str, torch.Tensor] | None = None,
                 candidates: Sequence[float] = DEFAULT_CANDIDATES) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """Quantise and entropy-code ``weights`` (optionally pruned by ``masks``) into one section.

    ``distortion(weights)`` gets full-shaped CPU float32 tensors (pruned entries exactly 0);
    the step minimises distortion + ``lam`` * bits / ``pixels``. Returns (section bytes, the
    dequantised weights the decoder will read, a report dict).
    """
    if not masks:
        data, dequantised, search = code_weights(weights, distortion, lam, pixels, per_channel,
                                                 candidates=candidates)
        return bytes([DENSE]) + data, dequantised, _report(search, 0, dequantised)
    unknown = set(masks) - set(weights)
    if unknown:
        raise ValueError(f"masks for unknown tensors: {sorted(unknown)}")
    masks = {name: masks[name].cpu().bool() for name in weights if name in masks}
    for name, mask in masks.items():
        if tuple(mask.shape) != tuple(weights[name].shape):
            raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, the tensor {tuple(weights[name].shape)}")
    values = {name: (_survivors(w, masks[name]) if name in masks else w.detach().cpu().float())
              for name, w in weights.items()}

    def full(candidate: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: (_scatter(v, masks[name]) if name in masks else v) for name, v in candidate.items()}

    chosen, search = search_steps(values, lambda c: distortion(full(c)), lam / pixels,
                                  candidates=candidates, per_channel=per_channel)
    mask_blobs = [encode_bits(mask.numpy().reshape(-1)) for mask in masks.values()]
    out = bytearray([PRUNED])
    put_varint(out, len(mask_blobs))
    for blob in mask_blobs:
        put_varint(out, len(blob))
        out += blob
    out += pack_network([chosen[name] for name in weights])
    dequantised = full({name: q.dequantise() for name, q in chosen.items()})
    return bytes(out), dequantised, _report(search, sum(len(b) for b in mask_blobs), dequantised)


def _report(search: StepsReport, mask_bytes: int, dequantised: dict[str, torch.Tensor]) -> dict:
    """The best shared relative step, each tensor's own, mask bytes, nonzero weights, and every
    shared candidate tried as [relative step, value bits, distortion]."""
    return {"rel_step": search.shared_rel_step, "rel_steps": search.rel_steps, "mask_bytes": mask_bytes,
            "nonzero": sum(int((w != 0).sum()) for w in dequantised.values()),
            "candidates": [[rel, bits, d] for rel, bits, d, _ in search.shared], "evaluations": search.evaluations}


def parse_section(data: bytes, shapes: Shapes, masked: Sequence[str] | None = None
                  ) -> tuple[dict[str, torch.Tensor], list[QuantisedTensor]]:
    """Section bytes -> (keep-masks by name, quantised value tensors in network order).

    A masked tensor's value tensor is 1-D with one entry per kept weight; a dense section has
    no masks. ``masked``: names the encoder may have pruned (default :func:`prunable_names`);
    every count and shape is checked before use.
    """
    shapes = [(name, tuple(int(d) for d in shape)) for name, shape in shapes]
    masked = list(prunable_names(shapes) if masked is None else masked)
    reader = ByteReader(bytes(data), "network section")
    mode = reader.take(1, "mode")[0]
    if mode == DENSE:
        return {}, unpack_network(reader.rest(), shapes)
    if mode != PRUNED:
        raise BitstreamError(f"network section: unknown mode {mode}")
    count = reader.varint("mask count")
    if count != len(masked):
        raise BitstreamError(f"network section: {count} masks, the network has {len(masked)} prunable tensors")
    sizes = dict(shapes)
    masks = {}
    for name in masked:
        blob = reader.take(reader.varint(f"mask length of {name!r}"), f"mask of {name!r}")
        masks[name] = torch.from_numpy(decode_bits(blob, int(np.prod(sizes[name]))).reshape(sizes[name]))
    expected = [(name, (int(masks[name].sum()),) if name in masks else shape) for name, shape in shapes]
    return masks, unpack_network(reader.rest(), expected)


def decode_network(data: bytes, shapes: Shapes, masked: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Section bytes -> dequantised weights of ``shapes`` (the config-built network's), pruned
    entries exactly 0; see :func:`parse_section`."""
    masks, tensors = parse_section(data, shapes, masked)
    return {q.name: (_scatter(q.dequantise(), masks[q.name]) if q.name in masks else q.dequantise())
            for q in tensors}

"""Decoding within a memory budget: what a stream's header implies is estimated before anything is allocated.

A CRC-valid header can still claim a 16384x16384 frame or a network of a billion weights. The
geometry bounds of the container let such headers through (a large frame is a legitimate
file), so every decoder asks this module first:

- :func:`check_frames` for the decoded video itself (float RGB frames and their copies);
- :func:`check_network` for an INR decoder: the network is built on PyTorch's ``meta`` device
  (shapes only, no memory, no initialisation work), its parameters and buffers are counted
  exactly, one forward pass on ``meta`` measures the largest activation, and the codec's own
  weight reader is run against those shapes, so a config that does not match the tensors the
  stream spells is refused before the real network is built.

The limit is ``WEIGHTSTEP_DECODE_MEMORY`` (bytes, or with a K/M/G suffix) or, by default,
half of this machine's memory (or of the address-space limit, when one is set). A refusal is
a :class:`~weightstep.errors.BitstreamError` naming the need and the limit. An allocation that
fails anyway (the estimate is an estimate) is turned into a clean error by :func:`guarded`.

What a network must provide to take part (the anchor networks, the full-sequence models and
any new one): it can be built under ``torch.device("meta")`` (no data-dependent work, no tensors
created on an explicit CPU device in ``__init__``: fixed inputs as buffers created on the default
device or regenerated with a CPU generator and then moved), and one rendering call runs on
``meta`` too. Memory per call must not grow with the frame beyond its own buffers and output:
coordinate MLPs bound it with ``chunk_size`` (pixels per pass); a conv net's activations are
whole-frame and are counted as such.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weightstep.errors import BitstreamError, UnavailableError

LIMIT_ENV = "WEIGHTSTEP_DECODE_MEMORY"
RENDER_CHUNK = 1 << 16  # pixels per pass of a coordinate MLP when decoding (and encoding: the same grouping)
ACTIVATION_COPIES = 4  # live tensors of the largest activation's size (input, output, temporaries)
VIDEO_BYTES_PER_PIXEL = 3 * 4 * 3  # float32 RGB, times the render list + its concatenation + conversions
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1.5G', '800M', '2e9' -> bytes (K, M, G, T are powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    scale = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    value = float(match.group(1)) * scale
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return int(value)


def _machine_memory() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        total = 8 << 30
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            total = min(total, soft)
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass
    return int(total)


def memory_limit() -> int:
    """Bytes one decode may use: ``WEIGHTSTEP_DECODE_MEMORY``, else half of this machine's memory."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        try:
            return parse_size(text)
        except ValueError:
            raise UnavailableError(f"{LIMIT_ENV}={text!r} is not a size such as 2G or 1500M") from None
    return _machine_memory() // 2


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def check(what: str, needed: int) -> None:
    """Refuse (BitstreamError) when ``needed`` bytes exceed the decode memory limit."""
    limit = memory_limit()
    if needed > limit:
        raise BitstreamError(f"{what} needs about {_gb(needed)} of memory to decode, more than the limit of "
                             f"{_gb(limit)} ({LIMIT_ENV} sets it)")


def video_bytes(frames: int, height: int, width: int) -> int:
    """Memory of a decoded clip as decoders hand it over and the harness measures it."""
    return int(frames) * int(height) * int(width) * VIDEO_BYTES_PER_PIXEL


def check_frames(what: str, frames: int, height: int, width: int, extra: int = 0) -> None:
    check(f"{what} ({frames} frames of {width}x{height})", video_bytes(frames, height, width) + int(extra))


@dataclass(frozen=True)
class Footprint:
    """What a network costs in memory, measured on the meta device."""

    parameters: int  # number of parameters
    state_bytes: int  # parameters and buffers
    activation_bytes: int  # largest single module output of one rendering call
    shapes: list[tuple[str, tuple[int, ...]]]  # named_parameters() order: what the stream must spell
    network: nn.Module | None = None  # the meta-device network itself (shapes only)

    def decode_bytes(self) -> int:
        """Weights (the network's and the decoded copies), buffers, and the live activations."""
        return 2 * self.state_bytes + ACTIVATION_COPIES * self.activation_bytes


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return max((_tensor_bytes(v) for v in value), default=0)
    return 0


def footprint(build: Callable[[], nn.Module], run: Callable[[nn.Module], Any] | None = None) -> Footprint:
    """Build with ``build()`` on the meta device and measure; ``run(net)`` is one rendering call
    (default ``net()``, a whole frame)."""
    run = run if run is not None else (lambda net: net())
    net = meta_network(build)
    tensors = [*net.parameters(), *net.buffers()]
    state = sum(t.numel() * t.element_size() for t in tensors)
    largest = [0]

    def hook(_module, _inputs, output) -> None:
        largest[0] = max(largest[0], _tensor_bytes(output))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad(), torch.device("meta"):
            largest[0] = max(largest[0], _tensor_bytes(run(net)))
    finally:
        for handle in handles:
            handle.remove()
    shapes = [(name, tuple(p.shape)) for name, p in net.named_parameters()]
    return Footprint(parameters=sum(p.numel() for p in net.parameters()), state_bytes=state,
                     activation_bytes=largest[0], shapes=shapes, network=net)


def meta_network(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: every shape, no memory, no initialisation work."""
    with torch.device("meta"):
        return build()


def check_network(what: str, build: Callable[[], nn.Module], *, frames: int, height: int, width: int,
                  run: Callable[[nn.Module], Any] | None = None,
                  read_weights: Callable[[nn.Module], Any] | None = None) -> Footprint:
    """Everything an INR decoder checks before it builds its network (see the module docstring).

    ``read_weights(meta_net)`` is the codec's own reader of its first weight section, run against
    the network built on the meta device (its parameter shapes): a stream whose tensors do not
    match its config fails there, before any real network exists. Raises BitstreamError.
    """
    check_frames(what, frames, height, width)  # the frames alone: refused before even the meta build
    try:
        net_cost = footprint(build, run)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise BitstreamError(f"{what}: its config does not describe a network that can be built ({exc})") from None
    check(f"{what} ({net_cost.parameters:,} parameters, {frames} frames of {width}x{height})",
          net_cost.decode_bytes() + video_bytes(frames, height, width))
    if read_weights is not None:
        read_weights(net_cost.network)
    return net_cost


def _is_allocation_failure(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("alloc" in text or "out of memory" in text)


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn a failed allocation inside the block into one clean UnavailableError."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not _is_allocation_failure(exc):
            raise
        raise UnavailableError(f"{what}: not enough memory on this machine "
                               f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None


__all__ = ["LIMIT_ENV", "RENDER_CHUNK", "Footprint", "check", "check_frames", "check_network", "footprint",
           "guarded", "memory_limit", "parse_size", "video_bytes"]

"""Orthonormal DCT-II of weight tensors, as matrix products in torch (differentiable, on any device).

``dct_matrix(n)`` is the n x n orthonormal DCT-II matrix ``C[k, i] = s_k cos(pi (2i + 1) k / (2n))``
with ``s_0 = sqrt(1/n)`` and ``s_k = sqrt(2/n)``; it equals ``scipy.fft.dct(np.eye(n), norm='ortho',
axis=0)``. Being orthonormal, its inverse is its transpose, and the transform preserves energy,
so the squared error of quantised coefficients is the squared error of the weights.

How each parameter tensor is transformed (:func:`to_coefficients` / :func:`from_coefficients`):

- 0-D: unchanged;
- 1-D (biases): a 1-D DCT;
- 2-D (MLP weight matrices, (out, in)): a separable 2-D DCT, ``C_out @ W @ C_in^T``;
- 3-D and 4-D (conv weights, (out, in, k...)): a 1-D DCT along the **input-channel axis** (dim 1),
  separately for every output channel and every kernel position.

Why the input-channel axis for convs. The proposal applies the DCT "to individual sequences of
aligned kernel elements": the elements at the same kernel position (kh, kw) across the channels.
Two such sequences exist, along input or output channels. We take the input channels because
(a) that axis is long in every conv of our DIP network (32 or 36), while the output axis is 3
for the head and 4 for the skip convs, and a DCT of 3 or 4 elements compacts almost nothing;
(b) for a 1x1 conv the result then matches what each row of an MLP layer gets on its input
axis; (c) the sequence is one filter's response to all inputs at one tap, which a smooth change
(e.g. a filter re-weighting its inputs together) updates coherently. Kernel positions are not
transformed: 3x3 kernels are too short for a DCT to help.

Matrices are cached per (n, dtype, device). Note for bit-exact decoding: matrix products may
round differently across devices and BLAS builds; the coding path (``weightstep.stepping.code``)
therefore inverts the DCT on the CPU in float64 and rounds to float32 once, on both encoder and
decoder.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["dct_matrix", "dct1", "idct1", "dct2", "idct2", "to_coefficients", "from_coefficients"]


@functools.lru_cache(maxsize=256)
def _cached_matrix(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    matrix[0] *= math.sqrt(0.5)
    return matrix.to(dtype=dtype, device=device)


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The cached n x n orthonormal DCT-II matrix (rows are basis vectors). Do not modify it in place."""
    if int(n) < 1:
        raise ValueError(f"DCT size must be at least 1, got {n}")
    return _cached_matrix(int(n), dtype, str(torch.device(device)))


def _matrix_for(x: torch.Tensor, n: int) -> torch.Tensor:
    return dct_matrix(n, x.dtype, x.device)


def dct1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along ``dim``."""
    c = _matrix_for(x, x.shape[dim])
    return torch.movedim(torch.movedim(x, dim, -1) @ c.T, -1, dim)


def idct1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`dct1` (DCT-III, orthonormal) along ``dim``."""
    c = _matrix_for(x, x.shape[dim])
    return torch.movedim(torch.movedim(x, dim, -1) @ c, -1, dim)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Separable orthonormal 2-D DCT-II over the last two dims."""
    return _matrix_for(x, x.shape[-2]) @ x @ _matrix_for(x, x.shape[-1]).T


def idct2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`."""
    return _matrix_for(x, x.shape[-2]).T @ x @ _matrix_for(x, x.shape[-1])


def to_coefficients(w: torch.Tensor) -> torch.Tensor:
    """DCT coefficients of one parameter tensor, dispatched by ``w.ndim`` (see the module docstring)."""
    if w.ndim == 0 or w.numel() == 0:
        return w.clone()
    if w.ndim == 1:
        return dct1(w)
    if w.ndim == 2:
        return dct2(w)
    return dct1(w, dim=1)


def from_coefficients(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_coefficients`: the parameter tensor from its coefficients."""
    if c.ndim == 0 or c.numel() == 0:
        return c.clone()
    if c.ndim == 1:
        return idct1(c)
    if c.ndim == 2:
        return idct2(c)
    return idct1(c, dim=1)

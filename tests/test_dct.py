"""Orthonormal DCT of weight tensors: exact inverses, orthonormality, agreement with scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from weightstep.stepping.dct import dct1, dct2, dct_matrix, from_coefficients, idct1, idct2, to_coefficients

SHAPES = [(1,), (7,), (64,), (3, 5), (16, 16), (64, 2), (32, 36, 3, 3), (4, 32, 1, 1), (3, 32, 1, 1)]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 37, 96])
def test_matrix_is_orthonormal_and_matches_scipy(n):
    c = dct_matrix(n, torch.float64)
    assert torch.allclose(c @ c.T, torch.eye(n, dtype=torch.float64), atol=1e-13, rtol=0)
    reference = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)
    assert np.abs(c.numpy() - reference).max() < 1e-13


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_and_energy(shape, rng):
    x64 = torch.from_numpy(rng.standard_normal(shape))
    c64 = to_coefficients(x64)
    assert c64.shape == x64.shape
    assert float((from_coefficients(c64) - x64).abs().max()) < 1e-12
    assert float(c64.pow(2).sum()) == pytest.approx(float(x64.pow(2).sum()), rel=1e-12)
    x32 = x64.to(torch.float32)
    c32 = to_coefficients(x32)
    assert c32.dtype == torch.float32
    assert float((from_coefficients(c32) - x32).abs().max()) < 1e-5
    assert float(c32.pow(2).sum()) == pytest.approx(float(x32.pow(2).sum()), rel=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_agrees_with_scipy(shape, rng):
    x = rng.standard_normal(shape)
    got = to_coefficients(torch.from_numpy(x)).numpy()
    if len(shape) == 1:
        want = scipy.fft.dct(x, norm="ortho")
    elif len(shape) == 2:
        want = scipy.fft.dctn(x, norm="ortho")
    else:  # conv weights: along input channels, for every output channel and kernel position
        want = scipy.fft.dct(x, norm="ortho", axis=1)
    assert np.abs(got - want).max() < 1e-12
    assert np.abs(from_coefficients(torch.from_numpy(want)).numpy() - x).max() < 1e-12


def test_helpers_and_gradients(rng):
    x = torch.from_numpy(rng.standard_normal((5, 6))).requires_grad_()
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-12)
    assert torch.allclose(idct1(dct1(x, dim=0), dim=0), x, atol=1e-12)
    from_coefficients(x).pow(2).sum().backward()  # orthonormal: d/dc |C^T c|^2 = 2c
    assert torch.allclose(x.grad, 2 * x.detach(), atol=1e-12)
    scalar = torch.tensor(3.0)
    assert to_coefficients(scalar).item() == 3.0 and from_coefficients(scalar).item() == 3.0
    assert dct_matrix(8) is dct_matrix(8)  # cached
    with pytest.raises(ValueError):
        dct_matrix(0)

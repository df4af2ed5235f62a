"""Quantisation: error bounds, the rate-distortion step search, exact and checked serialisation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstep.coding.quantise import (
    DEFAULT_CANDIDATES,
    QuantisedTensor,
    pack_tensors,
    quantise,
    quantise_absolute,
    relative_steps,
    search_step,
    unpack_tensors,
)
from weightstep.errors import BitstreamError

FAST = settings(max_examples=50, deadline=None)


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "l0.weight": torch.randn(32, 3, generator=g) * 2.0,
        "l0.bias": torch.randn(32, generator=g) * 0.1,
        "l1.weight": torch.randn(32, 32, generator=g) * 0.05,
        "l1.bias": torch.zeros(32),
        "l2.weight": torch.randn(3, 32, 1, 1, generator=g) * torch.tensor([1.0, 10.0, 0.01]).view(3, 1, 1, 1),
    }


def _mse(params: dict[str, torch.Tensor]):
    total = sum(t.numel() for t in params.values())

    def distortion(deq: dict[str, torch.Tensor]) -> float:
        return float(sum(((deq[k].double() - params[k].double()) ** 2).sum() for k in params) / total)

    return distortion


@FAST
@given(shape=st.sampled_from([(), (1,), (7,), (5, 3), (4, 2, 3, 3), (1, 9)]), per_channel=st.booleans(),
       rel=st.sampled_from([2.0**-10, 0.01, 0.3, 4.0]), magnitude=st.sampled_from([1e-6, 1.0, 1e4]),
       seed=st.integers(0, 2**31))
def test_error_within_half_step(shape, per_channel, rel, magnitude, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude
    q = quantise(x, rel, per_channel)
    y = q.dequantise()
    assert y.dtype == torch.float32 and tuple(y.shape) == tuple(shape)
    step = torch.from_numpy(q.step.astype(np.float64))
    if q.per_channel:
        step = step.view((-1,) + (1,) * (len(shape) - 1))
    err = (y.double() - x.double()).abs()
    bound = step / 2 + x.double().abs() * 2**-23 + 1e-45  # half a step, plus float32 rounding of the product
    assert bool((err <= bound).all())


def test_dequantise_is_exact_float32_product():
    q = quantise(torch.randn(6, 5), 0.05, per_channel=True)
    want = q.values.astype(np.float32) * q.step.reshape(6, 1)
    assert want.dtype == np.float32
    np.testing.assert_array_equal(q.dequantise().numpy(), want)


def test_finer_step_never_larger_error():
    params = _params(1)
    dist = _mse(params)
    for per_channel in (False, True):
        errors = [dist({k: quantise(t, c, per_channel).dequantise() for k, t in params.items()})
                  for c in DEFAULT_CANDIDATES]
        assert all(a <= b for a, b in zip(errors, errors[1:], strict=False)), errors


def test_per_channel_steps_follow_channel_spread():
    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(3)) * torch.tensor([[0.1], [1.0], [10.0]])
    steps = relative_steps(x, 0.01, per_channel=True)
    assert steps.shape == (3,) and steps.dtype == np.float32
    np.testing.assert_allclose(steps, 0.01 * x.double().std(dim=1, unbiased=False).numpy(), rtol=1e-6)
    assert relative_steps(x, 0.01, per_channel=False).shape == (1,)
    assert relative_steps(torch.randn(7), 0.01, per_channel=True).shape == (1,)  # 1-D: one step


def test_degenerate_and_extreme_tensors():
    assert quantise(torch.zeros(4, 4), 0.1).dequantise().abs().sum() == 0
    q = quantise(torch.full((3, 3), 2.5), 0.1)  # zero spread: step from the mean magnitude
    assert torch.allclose(q.dequantise(), torch.full((3, 3), 2.5), atol=0.125 + 1e-6)
    spiky = torch.zeros(1000)
    spiky[0] = 1e6  # std is tiny relative to the peak: step is enlarged to keep the coder's cap
    q = quantise(spiky, 2.0**-10)
    assert unpack_tensors(pack_tensors([q]), [("", (1000,))])[0] == q
    with pytest.raises(ValueError):
        quantise(torch.tensor([1.0, float("nan")]), 0.1)
    with pytest.raises(ValueError):
        quantise_absolute(torch.tensor([0.0, 1.0]), 1e-9)  # integers would span too many values


def test_search_prefers_finer_steps_for_smaller_lambda():
    params = _params(2)
    dist = _mse(params)
    chosen = []
    for lam in (1e-12, 1e-9, 1e-7, 1e-5, 1e-2):
        q, report = search_step(params, dist, lam, per_channel=True)
        assert len(report.candidates) == len(DEFAULT_CANDIDATES)
        assert set(q) == set(params)
        best = report.chosen
        assert best.cost == min(c.cost for c in report.candidates)
        # the reported bits are the real packed size of the returned tensors
        assert best.bits == 8 * len(pack_tensors(list(q.values())))
        assert best.distortion == dist({k: v.dequantise() for k, v in q.items()})
        chosen.append(best.rel_step)
    assert chosen == sorted(chosen)
    assert chosen[0] < chosen[-1]
    assert chosen[0] == DEFAULT_CANDIDATES[0] and chosen[-1] == DEFAULT_CANDIDATES[-1]


def test_search_report_bits_fall_as_steps_grow():
    params = _params(4)
    _, report = search_step(params, _mse(params), 0.0)
    bits = [c.bits for c in report.candidates]
    assert bits[0] > bits[-1]
    assert report.to_dict()["candidates"][0]["rel_step"] == DEFAULT_CANDIDATES[0]


def _expected(params):
    return [(k, tuple(t.shape)) for k, t in params.items()]


@pytest.mark.parametrize("per_channel", [False, True])
def test_pack_unpack_round_trip(per_channel):
    params = _params(5)
    qs = [quantise(t, 0.02, per_channel, name=k) for k, t in params.items()]
    data = pack_tensors(qs)
    back = unpack_tensors(data, _expected(params))
    assert back == qs
    for a, b in zip(qs, back, strict=True):
        assert torch.equal(a.dequantise(), b.dequantise())  # bit for bit
        assert a.per_channel == b.per_channel


def test_shape_mismatch_refused():
    params = _params(6)
    data = pack_tensors([quantise(t, 0.02, True, name=k) for k, t in params.items()])
    expected = _expected(params)
    wrong = list(expected)
    wrong[2] = ("l1.weight", (32, 31))
    with pytest.raises(BitstreamError, match="shape"):
        unpack_tensors(data, wrong)
    with pytest.raises(BitstreamError):
        unpack_tensors(data, expected[:-1])  # one tensor fewer than in the stream
    with pytest.raises(BitstreamError):
        unpack_tensors(data, expected + [("extra", (2,))])
    with pytest.raises(BitstreamError):
        unpack_tensors(data + b"\x00", expected)  # trailing bytes
    transposed = pack_tensors([quantise(torch.randn(4, 3), 0.1)])
    with pytest.raises(BitstreamError, match="shape"):
        unpack_tensors(transposed, [("w", (3, 4))])  # same element count, other shape


def test_truncated_and_corrupted_streams():
    params = _params(7)
    expected = _expected(params)
    data = pack_tensors([quantise(t, 0.05, True, name=k) for k, t in params.items()])
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            unpack_tensors(data[:cut], expected)
    rng = np.random.default_rng(0)
    for _ in range(200):
        bad = bytearray(data)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            out = unpack_tensors(bytes(bad), expected)
        except BitstreamError:
            continue
        assert [(t.name, t.shape) for t in out] == expected  # an undetected flip keeps the shapes


def test_quantised_tensor_validates():
    with pytest.raises(ValueError):
        QuantisedTensor("w", (2, 2), np.float32([1.0]), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError):
        QuantisedTensor("w", (2, 2), np.float32([1.0, 1.0, 1.0]), np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError):
        QuantisedTensor("w", (2, 2), np.float32([0.0]), np.zeros((2, 2), np.int32))

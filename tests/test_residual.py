"""The block-DCT residual after a grid step (stepping/residual.py): exact decoding, real-bit choices, refusals."""

import numpy as np
import pytest
import torch

from weightstep import registry
from weightstep.codecs import harness
from weightstep.errors import BitstreamError, ConfigError
from weightstep.stepping.residual import (
    BLOCK,
    STEP_CODES,
    BlockResidual,
    code_residual,
    decode_residual,
    residual_map,
    step_of,
)
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video

H, W = 20, 27  # not multiples of the block: edge blocks are cropped


def _coefficients(seed=0, density=0.1, size=1.5):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(3, 4, BLOCK, BLOCK, generator=g) * size
    keep = torch.rand(3, 4, BLOCK, BLOCK, generator=g) < density
    keep[1] = False  # a row of blocks with nothing: their flags say so
    return (c * keep).double().numpy()


def _target(coefficients):
    return residual_map(torch.from_numpy(coefficients).float(), H, W)


def test_the_map_is_the_inverse_dct_of_each_block_cropped():
    c = np.zeros((3, 4, BLOCK, BLOCK))
    c[2, 3, 0, 0] = 8.0  # a DC coefficient: a flat block of 8 / 8 = 1 (orthonormal DCT), cut by the edge
    m = residual_map(torch.from_numpy(c).float(), H, W)[0, 0]
    assert m.shape == (H, W)
    assert torch.allclose(m[16:, 24:], torch.ones(4, 3)) and float(m[:16].abs().max()) == 0.0


def test_a_coded_residual_decodes_to_the_encoders_map_bit_for_bit():
    fitted = _coefficients()
    target = _target(fitted)
    data, delta, facts = code_residual(fitted, H, W, lambda d: float(((0 if d is None else d) - target).pow(2).mean()),
                                       1e-6)
    decoded = decode_residual(data, H, W)
    assert delta is not None and torch.equal(decoded, delta)
    assert facts["residual_bytes"] == len(data) and facts["residual_nonzero"] > 0
    assert 0 < facts["residual_blocks"] <= 8  # the empty row of blocks is skipped
    assert facts["residual_step"] in [step_of(code) for code in STEP_CODES]
    assert float((decoded - target).pow(2).mean()) < 0.05 * float(target.pow(2).mean())


def test_lambda_trades_bytes_for_accuracy_and_a_residual_that_does_not_pay_is_not_sent():
    fitted = _coefficients(seed=3)
    target = _target(fitted)

    def distortion(d):
        return float(((0 if d is None else d) - target).pow(2).mean())

    sizes = [len(code_residual(fitted, H, W, distortion, lam)[0]) for lam in (1e-7, 1e-5, 1e-3)]
    assert sizes[0] > sizes[1] > sizes[2]
    data, delta, facts = code_residual(fitted, H, W, distortion, 10.0)
    assert data == bytes(1) and delta is None and facts["residual_nonzero"] == 0
    assert decode_residual(data, H, W) is None


def test_the_fit_penalty_is_an_l1_on_the_coefficients_and_starts_at_zero():
    r = BlockResidual(H, W)
    assert r.coefficients.shape == (3, 4, BLOCK, BLOCK)
    with torch.no_grad():
        assert float(r.penalty()) == 0.0 and float(r.delta().abs().max()) == 0.0
        r.coefficients[0, 0, 1, 2] = -2.0
        assert float(r.penalty()) > 0 and r.delta().shape == (1, 1, H, W)


def _good_frame():
    fitted = _coefficients(seed=5)
    data, _, _ = code_residual(fitted, H, W, lambda d: float(((0 if d is None else d) - _target(fitted))
                                                               .pow(2).mean()), 1e-6)
    return data


@pytest.mark.parametrize("damage", ["truncate", "trailing", "zero_flag_prob", "no_bands", "wide_support",
                                    "empty_with_data"])
def test_damaged_residual_frames_are_refused(damage):
    data = bytearray(_good_frame())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "trailing":
        data += b"\x55\x55\x55\x55"
    elif damage == "zero_flag_prob":
        data[1] = 0
    elif damage == "no_bands":
        data[2:8] = bytes(6)
    elif damage == "wide_support":
        data[8:] = b"\xff\xff\xff\x7f" + bytes(data[9:])
    else:
        data = bytearray(b"\x00\x01")
    with pytest.raises(BitstreamError):
        decode_residual(bytes(data), H, W)


def test_a_flipped_flag_probability_is_refused():
    data = bytearray(_good_frame())
    data[1] = 255 if data[1] != 255 else 1
    with pytest.raises(BitstreamError):
        decode_residual(bytes(data), H, W)


def test_a_grid_stream_with_residual_steps_round_trips_and_only_grid_two_stage_takes_it():
    clip = open_video("synthetic:testsrc2", ReadOptions(frames=3, synthetic_width=24, synthetic_height=20))
    codec = registry.create("weightstep", {"inr": "grid", "grid_levels": 3, "grid_hidden": 4, "residual": "dct",
                                           "lambda": 1e-5, "anchor_steps": 20, "step_steps": 15, "device": "cpu"})
    encoded = codec.encode(clip)
    steps = encoded.extra["steps"]
    assert len(steps) == 2 and all("residual_bytes" in s for s in steps)
    assert any(s["residual_nonzero"] > 0 for s in steps)  # at this lambda the residual pays somewhere
    _, decoded = harness.decode_bytes(encoded.data)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    for params in ({"inr": "siren", "residual": "dct"}, {"inr": "grid", "residual": "dct", "update": "l0",
                                                          "schedule": "single-stage"}):
        with pytest.raises(ConfigError):
            registry.create("weightstep", params)


def test_search_descend_stops_after_two_rises_and_skips_leading_invalid_candidates():
    from weightstep.stepping.kindcode import Search

    costs = [None, None, 5.0, 3.0, 2.0, 2.5, 4.0, 1.0]  # None: an invalid candidate (e.g. all zero)
    search = Search(0.0, lambda delta: delta)
    offered = []

    def candidate(i):
        def build():
            offered.append(i)
            return None if costs[i] is None else (b"", costs[i], None)
        return (i, build)

    search.descend(candidate(i) for i in range(len(costs)))
    assert offered == [0, 1, 2, 3, 4, 5, 6] and search.best_key == 4

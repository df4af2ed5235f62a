"""The latent residual step (stepping/latent.py): coding by real bits, exact decoding, damaged frames refused."""

import numpy as np
import pytest
import torch

from weightstep.errors import BitstreamError
from weightstep.stepping.latent import LatentUpdate, code_latent, decode_latent, scale_of

NAMES = ("latents.0", "latents.1", "synthesis.w")


def _base():
    g = torch.Generator().manual_seed(0)
    return {"latents.0": torch.randint(-3, 4, (1, 1, 12, 10), generator=g).float(),
            "latents.1": torch.randint(-3, 4, (1, 1, 6, 5), generator=g).float(),
            "synthesis.w": torch.randn(4, 2, generator=g)}


def _update(residual0: torch.Tensor | None = None) -> LatentUpdate:
    update = LatentUpdate(_base(), ("latents.0", "latents.1"), lr=0.05)
    if residual0 is not None:
        with torch.no_grad():
            update.residuals[0].copy_(residual0)
    return update


def _shapes():
    return [(name, tuple(t.shape)) for name, t in _base().items()]


def test_a_coded_residual_decodes_to_the_same_delta_and_only_latents_change():
    g = torch.Generator().manual_seed(1)
    residual = torch.randn(1, 1, 12, 10, generator=g) * 2.0
    update = _update(residual)
    data, delta, facts = code_latent(update, lambda d: float((d["latents.0"] - residual).pow(2).mean()), 1e-4)
    decoded = decode_latent(data, _shapes(), ("latents.0", "latents.1"))
    assert list(decoded) == list(NAMES)
    for name in NAMES:
        assert torch.equal(decoded[name], delta[name])
    assert facts["changed"] > 0 and facts["level_codes"][0] > 0 and facts["level_codes"][1] == 0
    assert torch.equal(decoded["synthesis.w"], torch.zeros(4, 2))
    assert torch.equal(decoded["latents.1"], torch.zeros(1, 1, 6, 5))


def test_a_residual_that_does_not_pay_is_not_sent():
    update = _update(torch.full((1, 1, 12, 10), 0.3))  # rounds to zero anyway; and lambda is huge
    data, delta, facts = code_latent(update, lambda d: 0.0, 1.0)
    assert data == bytes(2) and facts["changed"] == 0
    assert all(not v.any() for v in decode_latent(data, _shapes(), ("latents.0", "latents.1")).values())


def test_the_penalty_grows_with_the_residual_and_training_adds_noise():
    small, large = _update(torch.zeros(1, 1, 12, 10)), _update(torch.full((1, 1, 12, 10), 4.0))
    g = torch.Generator().manual_seed(0)
    noisy = small.delta(train=True, generator=g)["latents.0"]
    assert noisy.abs().max() <= 0.5 and noisy.abs().max() > 0
    small_bits = small.penalty()
    large.delta(train=True, generator=g)
    assert large.penalty() > small_bits + 100
    assert torch.equal(small.delta()["latents.0"], torch.zeros(1, 1, 12, 10))


def test_scales_span_near_zero_to_wide_levels():
    assert scale_of(1) == pytest.approx(1 / 64)
    assert scale_of(9) == pytest.approx(1 / 32)


def test_damaged_latent_frames_are_refused():
    update = _update(torch.randn(1, 1, 12, 10, generator=torch.Generator().manual_seed(2)) * 3)
    data, _, _ = code_latent(update, lambda d: 0.0, 0.0)
    latents = ("latents.0", "latents.1")
    with pytest.raises(BitstreamError):
        decode_latent(data[:1], _shapes(), latents)  # level codes cut short
    with pytest.raises(BitstreamError):
        decode_latent(bytes(2) + b"\x00", _shapes(), latents)  # data after an empty residual
    with pytest.raises(BitstreamError):
        decode_latent(data + b"\x00\x00\x00\x00", _shapes(), latents)  # data left over
    with pytest.raises(BitstreamError):
        decode_latent(data, _shapes(), ())  # not a latent network
    for cut in range(3, len(data), max(1, len(data) // 7)):
        try:
            out = decode_latent(data[:cut], _shapes(), latents)
        except BitstreamError:
            continue
        assert all(np.isfinite(v.numpy()).all() for v in out.values())


def test_non_latent_networks_are_refused():
    with pytest.raises(ValueError, match="latent grids"):
        LatentUpdate({"w": torch.zeros(2, 2)}, (), lr=0.05)


def test_blocks_cover_every_latent_once_in_raster_order_inside_each_block():
    from weightstep.stepping.latent import block_positions

    positions, starts = block_positions((1, 1, 9, 10), 2)  # 4x4 blocks, cut at the border: 3 x 3 of them
    assert sorted(positions.tolist()) == list(range(90))
    assert starts.size == 10 and np.diff(starts).tolist() == [16, 16, 8, 16, 16, 8, 4, 4, 2]
    assert positions[:5].tolist() == [0, 1, 2, 3, 10]


def test_still_blocks_cost_almost_nothing():
    """The same 12 non-zero integers cost fewer bytes packed in one corner block than spread over the level."""
    corner, spread = torch.zeros(1, 1, 12, 10), torch.zeros(1, 1, 12, 10)
    corner[0, 0, :3, :4] = 2.0
    spread.view(-1)[torch.arange(0, 120, 10)] = 2.0
    sizes = []
    for residual in (corner, spread):
        data, delta, facts = code_latent(_update(residual), lambda d, r=residual: float((d["latents.0"] - r).pow(2).sum()),
                                         1e-6)
        assert torch.equal(delta["latents.0"], residual)  # at this lambda every integer is sent
        assert torch.equal(decode_latent(data, _shapes(), ("latents.0", "latents.1"))["latents.0"], residual)
        sizes.append(len(data))
    assert sizes[0] < sizes[1]


def test_damaged_block_headers_are_refused():
    residual = torch.zeros(1, 1, 12, 10)
    residual[0, 0, :4, :4] = 3.0
    data, _, facts = code_latent(_update(residual), lambda d: float((d["latents.0"] - residual).pow(2).sum()), 1e-6)
    latents = ("latents.0", "latents.1")
    assert facts["level_codes"][1] == 0
    block_byte = 2  # after the two level codes
    for bad in (1, 6, 255):
        damaged = bytearray(data)
        damaged[block_byte] = bad
        with pytest.raises(BitstreamError, match="block size"):
            decode_latent(bytes(damaged), _shapes(), latents)
    damaged = bytearray(data)
    damaged[block_byte + 1] = 0  # P(coded) = 0
    with pytest.raises(BitstreamError, match="probability"):
        decode_latent(bytes(damaged), _shapes(), latents)


def test_the_first_layout_still_decodes():
    """Streams of format 1 hold the level bytes and one Laplace blob, without block flags."""
    from weightstep.coding.latents import encode_chunks

    level0 = np.zeros(120, np.int32)
    level0[[3, 50, 51]] = [2, -1, 1]
    legacy = bytes([20, 0]) + encode_chunks([(level0, np.zeros(120), np.full(120, scale_of(20)))])
    decoded = decode_latent(legacy, _shapes(), ("latents.0", "latents.1"), blocks=False)
    assert torch.equal(decoded["latents.0"].reshape(-1), torch.from_numpy(level0.astype(np.float32)))
    assert not decoded["latents.1"].any()
    with pytest.raises(BitstreamError):
        decode_latent(legacy, _shapes(), ("latents.0", "latents.1"))  # not a block-coded frame


def test_a_stated_support_or_probability_the_encoder_would_not_write_is_refused():
    residual = torch.zeros(1, 1, 12, 10)
    residual[0, 0, :4, :4] = 3.0
    data, _, _ = code_latent(_update(residual), lambda d: float((d["latents.0"] - residual).pow(2).sum()), 1e-6)
    latents = ("latents.0", "latents.1")
    head = 2 + 1 + 1  # level codes, block size, one probability
    assert data[head:head + 2] == bytes([0, 3])  # support [0, 3]
    wider = data[:head] + bytes([1, 3]) + data[head + 2:]  # [-1, 3]: the integers never reach -1
    with pytest.raises(BitstreamError):
        decode_latent(wider, _shapes(), latents)
    other_p = bytearray(data)
    other_p[head - 1] = (other_p[head - 1] % 255) + 1
    with pytest.raises(BitstreamError):
        decode_latent(bytes(other_p), _shapes(), latents)


def test_latent_grids_of_several_planes_are_refused():
    base = {"latents.0": torch.zeros(1, 2, 4, 4)}
    with pytest.raises(ValueError, match="one plane"):
        LatentUpdate(base, ("latents.0",), lr=0.05)

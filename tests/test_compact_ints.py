"""The compact integer blobs of a warp step's low-rank values (format 5)."""

import numpy as np
import pytest

from weightstep.coding.compact_ints import decode_compact_ints, encode_compact_ints
from weightstep.coding.entropy import encode_ints, ideal_bits, model_of
from weightstep.errors import BitstreamError


@pytest.mark.parametrize("scale, count", [(3.0, 100), (0.4, 30), (40.0, 12)])
def test_compact_blobs_round_trip_and_are_shorter_than_with_the_full_header(scale, count):
    values = np.rint(np.random.default_rng(0).laplace(0.0, scale, count)).astype(np.int32)
    blob = encode_compact_ints(values)
    assert np.array_equal(decode_compact_ints(blob, count), values)
    full = encode_ints(values)
    assert len(blob) <= len(full) - 8  # 17 header bytes against 5-9
    # the model on the coarser grids costs at most a few per cent over the full header's one (plus
    # the header and the ANS coder's final state, up to two words)
    assert 8 * len(blob) <= ideal_bits(values, *model_of(full)) * 1.05 + 8 * 9 + 64


def test_a_constant_array_is_its_header_alone():
    blob = encode_compact_ints(np.full(7, -3, np.int32))
    assert len(blob) == 3 and np.array_equal(decode_compact_ints(blob, 7), np.full(7, -3))


def test_the_encoder_refuses_what_it_cannot_code():
    with pytest.raises(ValueError):
        encode_compact_ints(np.zeros(0, np.int32))
    with pytest.raises(ValueError):
        encode_compact_ints(np.array([0.5]))
    with pytest.raises(ValueError):
        encode_compact_ints(np.array([0, 2**21], np.int64))


def test_damaged_compact_blobs_are_refused_or_decode_within_their_support():
    rng = np.random.default_rng(1)
    values = np.rint(rng.laplace(0.0, 2.0, 40)).astype(np.int32)
    blob = encode_compact_ints(values)
    cases = [blob[:k] for k in range(len(blob))] + [bytes(rng.integers(0, 256, n, dtype=np.uint8))
                                                   for n in range(1, 40)]
    cases += [bytes([b ^ (1 << bit)]) + blob[1:] for b in blob[:1] for bit in range(8)]
    cases += [blob[:i] + bytes([blob[i] ^ 0x55]) + blob[i + 1:] for i in range(1, len(blob))]
    for data in cases:
        for count in (40, 1, 41):
            try:
                out = decode_compact_ints(data, count)
            except BitstreamError:
                continue
            assert out.shape == (count,) and out.dtype == np.int32
    with pytest.raises(BitstreamError):
        decode_compact_ints(blob, 0)

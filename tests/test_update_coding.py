"""Coding one weight update: exact round trips, tiny empty frames, conditional maps, corrupt input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstep.errors import BitstreamError
from weightstep.inr import NetworkSpec, build_network
from weightstep.stepping import (
    QuantisedUpdate,
    UpdateSpec,
    WeightUpdate,
    apply_delta,
    choose_step,
    decode_update,
    encode_update,
    quantise_update,
    step_from_exponent,
    to_coefficients,
)

KINDS = ("l0", "dct", "dense")


@pytest.fixture(scope="module")
def base():
    model = build_network(NetworkSpec("siren", width=32, depth=3), 8, 8)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def shapes_of(base):
    return {n: tuple(t.shape) for n, t in base.items()}


def trained_like(base, kind: str, open_fraction: float, seed: int = 0) -> WeightUpdate:
    """A WeightUpdate whose raw values and gate logits look trained: a few gates open."""
    update = WeightUpdate(base, UpdateSpec(kind))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for raw in update.raw:
            raw.copy_(torch.randn(raw.shape, generator=g) * 1e-2)
        for gate in update.gates:
            opened = torch.rand(gate.shape, generator=g) < open_fraction
            gate.log_alpha.copy_(torch.where(opened, torch.tensor(3.0), torch.tensor(-4.0)))
    return update


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_exact(base, kind):
    update = trained_like(base, kind, 0.05)
    q = quantise_update(update.coded_values(), kind, 0.1)
    data, maps, stats = encode_update(q, None)
    delta, decoded_maps = decode_update(data, shapes_of(base), None, kind)
    want = q.delta()
    assert list(delta) == list(base)
    for name in base:
        assert delta[name].dtype == torch.float32 and delta[name].shape == base[name].shape
        assert torch.equal(delta[name], want[name])
        assert np.array_equal(decoded_maps[name], maps[name])
    # closed loop: encoder and decoder step the weights to identical values
    enc, dec = apply_delta(base, want), apply_delta(base, delta)
    assert all(torch.equal(enc[n], dec[n]) for n in base)
    assert stats.bytes == len(data)
    assert stats.changed == sum(int(m.sum()) for m in maps.values())
    assert stats.bytes * 8 == stats.map_bits + stats.value_bits + stats.header_bits
    if kind != "dense":
        assert 0 < stats.changed < 0.1 * stats.total
        # closed gates are never coded as changes
        closed = {n: ~gate.open_mask().numpy() for n, gate in zip(update.names, update.gates, strict=True)}
        assert not any((maps[n] & closed[n]).any() for n in base)
    print(kind, stats)


def test_a_second_frame_decodes_against_the_first(base):
    first = quantise_update(trained_like(base, "l0", 0.05, seed=1).coded_values(), "l0", 0.1)
    second = quantise_update(trained_like(base, "l0", 0.05, seed=2).coded_values(), "l0", 0.1)
    data1, maps1, _ = encode_update(first, None)
    data2, maps2, _ = encode_update(second, maps1)
    _, dec_maps1 = decode_update(data1, shapes_of(base), None, "l0")
    delta2, dec_maps2 = decode_update(data2, shapes_of(base), dec_maps1, "l0")
    assert all(torch.equal(delta2[n], second.delta()[n]) for n in base)
    assert all(np.array_equal(dec_maps2[n], maps2[n]) for n in base)


def test_all_closed_update_costs_only_framing(base):
    for kind in KINDS:
        update = WeightUpdate(base, UpdateSpec(kind))  # zero raw values, gates closed at -3
        q = quantise_update(update.coded_values(), kind, 0.1)
        data, maps, stats = encode_update(q, None)
        assert len(data) < 4 * len(base) + 4
        assert len(data) == 1 and stats.changed == 0
        delta, dec_maps = decode_update(data, shapes_of(base), maps, kind)
        assert all(float(d.abs().max()) == 0.0 for d in delta.values())
        assert not any(m.any() for m in dec_maps.values())


def test_values_quantising_to_zero_are_no_change(base):
    values = {n: torch.zeros_like(t) for n, t in base.items()}
    name = next(iter(base))
    values[name].view(-1)[:4] = torch.tensor([1.0, -1.0, 1e-6, 0.0])
    q = quantise_update(values, "l0", 0.01, relative=False)
    assert q.maps()[name].reshape(-1)[:4].tolist() == [True, True, False, False]
    assert q.changed() == 2
    assert float(q.step) == step_from_exponent(q.exponent)
    assert abs(q.step / 0.01 - 1) < 0.025  # the 2^(1/16) grid


def test_conditional_map_is_chosen_when_the_map_repeats(base):
    first = trained_like(base, "l0", 0.03, seed=3)
    q1 = quantise_update(first.coded_values(), "l0", 0.1)
    _, maps1, _ = encode_update(q1, None)
    # same changed elements, new values: p(change | changed before) = 1, p(change | not) = 0
    g = torch.Generator().manual_seed(9)
    values = {n: torch.from_numpy(m).float() * (1 + torch.rand(m.shape, generator=g)) * 0.01
              for n, m in maps1.items()}
    q2 = quantise_update(values, "l0", 0.1)
    assert all(np.array_equal(q2.maps()[n], maps1[n]) for n in base)
    plain, _, plain_stats = encode_update(q2, None)
    cond, _, cond_stats = encode_update(q2, maps1)
    assert cond_stats.conditional and not plain_stats.conditional
    assert cond_stats.map_bits < plain_stats.map_bits and len(cond) < len(plain)
    assert cond_stats.map_bits <= 8 * 2 * 5  # two constant maps: headers only
    delta, _ = decode_update(cond, shapes_of(base), maps1, "l0")
    assert all(torch.equal(delta[n], q2.delta()[n]) for n in base)
    print(f"map bits: plain {plain_stats.map_bits}, conditional {cond_stats.map_bits}; "
          f"frame {len(plain)} -> {len(cond)} bytes for {cond_stats.changed} changes")
    # an unrelated previous map does not make the encoder pick conditioning
    other = {n: np.zeros(m.shape, bool) for n, m in maps1.items()}
    assert not encode_update(q2, other)[2].conditional


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_and_corrupted_frames_raise(base, kind):
    shapes = shapes_of(base)
    prev = quantise_update(trained_like(base, kind, 0.05, seed=4).coded_values(), kind, 0.1).maps()
    q = quantise_update(trained_like(base, kind, 0.05, seed=5).coded_values(), kind, 0.2)
    data, _, stats = encode_update(q, prev)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_update(data[:n], shapes, prev, kind)
    with pytest.raises(BitstreamError):
        decode_update(data + b"\x00", shapes, prev, kind)
    with pytest.raises(BitstreamError):
        decode_update(bytes([data[0] | 0x80]) + data[1:], shapes, prev, kind)
    with pytest.raises(BitstreamError):
        decode_update(b"\x00\x00", shapes, prev, kind)
    with pytest.raises(BitstreamError):
        decode_update(b"\x01\xff\xff\xff\xff\x7f", shapes, prev, kind)  # huge step exponent
    if kind != "dense":
        with pytest.raises(BitstreamError):
            decode_update(data[:2] + b"\xff\xff\x03" + data[3:], shapes, prev, kind)  # map longer than the frame
    if stats.conditional:
        with pytest.raises(BitstreamError):
            decode_update(data, shapes, None, kind)
    # random byte flips: a typed error or a well-formed result, never another exception
    rng = np.random.default_rng(0)
    for _ in range(150):
        bad = bytearray(data)
        i = int(rng.integers(len(bad)))
        bad[i] ^= int(rng.integers(1, 256))
        try:
            delta, maps = decode_update(bytes(bad), shapes, prev, kind)
        except BitstreamError:
            continue
        assert all(delta[n].shape == base[n].shape and torch.isfinite(delta[n]).all() for n in base)


def test_decoder_refuses_inconsistent_arguments(base):
    data, maps, _ = encode_update(quantise_update(trained_like(base, "l0", 0.05).coded_values(), "l0", 0.1))
    with pytest.raises(ValueError):
        decode_update(data, shapes_of(base), {n: m[..., :1] for n, m in maps.items()}, "l0")
    with pytest.raises(ValueError):
        decode_update(data, shapes_of(base), None, "sparse")
    with pytest.raises(BitstreamError):  # a wrong network shape cannot consume the frame exactly
        decode_update(data, {**shapes_of(base), "output.bias": (4,)}, None, "l0")


def test_choose_step_trades_distortion_for_real_bits(base):
    values = trained_like(base, "dct", 0.1, seed=6).coded_values()
    exact = {n: v.clone() for n, v in values.items()}

    def distortion(delta):  # squared error of the coefficients (the DCT is orthonormal)
        return float(sum(((to_coefficients(delta[n].double()) - exact[n].double()) ** 2).sum() for n in exact))

    fine, report_fine = choose_step(values, "dct", distortion, lam=0.0)
    coarse, report_coarse = choose_step(values, "dct", distortion, lam=1e3)
    steps = [c for c in report_fine.candidates if c.rel_step > 0]  # rel_step 0: send nothing
    assert report_fine.chosen.rel_step == min(c.rel_step for c in steps)
    assert report_coarse.chosen.bits == min(c.bits for c in report_coarse.candidates) == 8
    assert report_coarse.chosen.rel_step == 0 and coarse.changed() == 0  # nothing pays at lam 1e3
    for c in steps:
        q = quantise_update(values, "dct", c.rel_step)
        assert c.bits == 8 * len(encode_update(q)[0])
    bits = [c.bits for c in steps]
    assert bits == sorted(bits, reverse=True)  # coarser steps, fewer bits


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1),
       density=st.sampled_from([0.0, 0.01, 0.3, 1.0]), step=st.sampled_from([1e-3, 0.05, 1.0]))
def test_round_trip_property(kind, seed, density, step):
    rng = np.random.default_rng(seed)
    shapes = {"a": (5, 3), "b": (5,), "c": (2, 3, 3, 3), "d": ()}
    values = {n: rng.standard_normal(s) * (rng.random(s) < density) for n, s in shapes.items()}
    prev = {n: rng.random(s) < 0.2 for n, s in shapes.items()}
    q = quantise_update(values, kind, step)
    data, maps, _ = encode_update(q, prev)
    delta, dec_maps = decode_update(data, shapes, prev, kind)
    want = q.delta()
    assert all(torch.equal(delta[n], want[n]) and np.array_equal(dec_maps[n], maps[n]) for n in shapes)


def test_quantised_update_validates():
    with pytest.raises(ValueError):
        QuantisedUpdate("l0", 5000, {})
    with pytest.raises(ValueError):
        QuantisedUpdate("l0", 0, {"a": np.zeros(3, np.int64)})
    with pytest.raises(ValueError):
        quantise_update({"a": torch.tensor([float("nan")])}, "l0", 0.1)
    with pytest.raises(ValueError):
        quantise_update({"a": np.array([1e300, 1.0])}, "l0", 0.1)
    # a step far below the float range is clamped to 2^-64, never an error
    assert quantise_update({"a": np.array([1e-30, 0.0])}, "l0", 1e-300).exponent == -1024
    # the step grows until no integer exceeds the coder's support
    q = quantise_update({"a": np.array([1.0, 1e-9])}, "l0", 1e-12, relative=False)
    assert int(np.abs(q.values["a"]).max()) <= (1 << 20) // 4

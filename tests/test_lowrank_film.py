"""The lowrank and film update kinds: zero at the start, gradients, exact round trips, RD choices, bad input."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from weightstep.errors import BitstreamError
from weightstep.inr import NetworkSpec, build_network
from weightstep.stepping import choose_step, encode_update
from weightstep.stepping.film import FilmUpdate, code_film, decode_film, film_layers
from weightstep.stepping.lowrank import (
    LowRankUpdate,
    code_lowrank,
    decode_lowrank,
    lowrank_delta,
    plan_tensors,
    rank_levels,
)
from weightstep.stepping.lowrank_code import _frame
from weightstep.stepping.update import UpdateSpec, WeightUpdate, apply_delta, forward_with

H, W = 12, 16
NETS = ("siren", "fourier", "dip", "grid")


def tiny_spec(kind: str) -> NetworkSpec:
    return NetworkSpec(kind, width=16, depth=2, fourier_features=8, dip_channels=6, dip_levels=1,
                       dip_noise_channels=4, dip_skip_channels=2, grid_levels=3, grid_hidden=6,
                       grid_context_hidden=4)


def frame(shift: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([0.5 + 0.3 * torch.sin(6 * (xx - shift) + 3 * yy),
                        0.5 + 0.3 * torch.cos(5 * yy + 4 * (xx - shift)), 0.4 + 0.2 * xx])[None]


@pytest.fixture(scope="module", params=NETS)
def anchored(request):
    """(net, base weights, frozen names): a tiny network fitted a little to frame(0)."""
    torch.manual_seed(0)
    net = build_network(tiny_spec(request.param), H, W)
    opt = torch.optim.Adam(net.parameters(), 1e-2 if request.param == "grid" else 3e-3)
    for _ in range(40):
        opt.zero_grad()
        F.mse_loss(net(), frame(0.0)).backward()
        opt.step()
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    frozen = frozenset(n for n in base if n.startswith("context."))
    return net, base, frozen


def make(kind: str, base, frozen, seed: int = 0):
    if kind == "lowrank":
        return LowRankUpdate(base, lr=1e-3, seed=seed, frozen=frozen, max_rank=4)
    return FilmUpdate(base, lr=1e-3, seed=seed, frozen=frozen)


def randomise(update, seed: int = 1, scale: float = 1e-2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in update.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def code(kind: str, update, distortion, lam: float):
    return (code_lowrank if kind == "lowrank" else code_film)(update, distortion, lam)


def decode(kind: str, data: bytes, base, frozen):
    if kind == "lowrank":
        return decode_lowrank(data, [(n, tuple(t.shape)) for n, t in base.items()], frozen)
    return decode_film(data, base, frozen)


def parameter_error(update):
    """A distortion that every faithful coding of ``update`` beats (squared error to its own Δ)."""
    with torch.no_grad():
        want = {n: d.detach().cpu().double() for n, d in update.delta().items()}

    def distortion(delta):
        return float(sum(((delta[n].double() - want[n]) ** 2).sum() for n in want))
    return distortion


def distortion_for(net, base, target):
    def distortion(delta):
        with torch.no_grad():
            return float(F.mse_loss(forward_with(net, apply_delta(base, delta)), target))
    return distortion


# ---------------------------------------------------------------- the modules


@pytest.mark.parametrize("kind", ["lowrank", "film"])
def test_zero_at_start_and_gradients_flow(anchored, kind):
    net, base, frozen = anchored
    update = make(kind, base, frozen)
    assert update.names == tuple(base)
    delta = update.delta()
    assert list(delta) == list(base)
    for name, b in base.items():
        assert torch.equal(delta[name], torch.zeros_like(b)), name
        assert torch.equal(update.weights()[name], b)
    assert float(update.penalty().detach()) == 0.0
    loss = F.mse_loss(forward_with(net, update.weights(train=True)), frame(0.1)) + 1e-6 * update.penalty()
    loss.backward()
    trained = update.u if kind == "lowrank" else update.scale_minus_one
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert [g["lr"] for g in update.param_groups()] == ([1e-3, 1e-2] if kind == "lowrank" else [1e-3, 1e-3])
    assert update.open_count() > 0


def test_lowrank_plan_and_delta():
    shapes = {"a.weight": (6, 5), "a.bias": (6,), "c.weight": (4, 3, 3, 3), "lat": (1, 1, 7, 9),
              "tiny.weight": (2, 2), "row.weight": (1, 8), "ctx.weight": (5, 5), "s": ()}
    plans = {p.name: p for p in plan_tensors(shapes, frozenset({"ctx.weight"}))}
    assert "ctx.weight" not in plans
    assert (plans["a.weight"].rows, plans["a.weight"].cols, plans["a.weight"].full_rank) == (6, 5, 5)
    assert (plans["c.weight"].rows, plans["c.weight"].cols) == (4, 27)
    assert (plans["lat"].rows, plans["lat"].cols) == (7, 9)  # a latent plane is an image
    for dense in ("a.bias", "tiny.weight", "row.weight", "s"):
        assert not plans[dense].factorised
    assert rank_levels(4) == (0, 1, 2, 4) and rank_levels(6) == (0, 1, 2, 4, 6) and rank_levels(1) == (0, 1)
    base = {n: torch.randn(s) for n, s in shapes.items()}
    update = LowRankUpdate(base, lr=1e-3, seed=3, frozen=frozenset({"ctx.weight"}), max_rank=3)
    randomise(update)
    delta = update.delta()
    i = [p.name for p in update.plans].index("c.weight")
    slot = update._slot[i]
    assert torch.equal(delta["c.weight"], (update.u[slot] @ update.v[slot]).reshape(4, 3, 3, 3))
    assert update.u[slot].shape == (4, 3)
    assert torch.equal(delta["ctx.weight"], torch.zeros(5, 5))
    with pytest.raises(ValueError):
        LowRankUpdate(base, lr=1e-3, seed=0, max_rank=1000)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_film_delta_is_an_output_modulation(conv, with_bias):
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 3, padding=1, bias=with_bias) if conv else torch.nn.Linear(4, 5, bias=with_bias)
    x = torch.randn(2, 3, 6, 6) if conv else torch.randn(7, 4)
    base = {n: p.detach().clone() for n, p in layer.named_parameters()}
    update = FilmUpdate(base, lr=1e-3, seed=0)
    assert [(lay.weight, lay.bias) for lay in update.layers] == [("weight", "bias" if with_bias else None)]
    randomise(update, scale=0.2)
    weights = {n: w.detach() for n, w in update.weights().items()}
    got = torch.func.functional_call(layer, weights, (x,))
    s = 1 + update.scale_minus_one[0].detach()
    t = update.tau[0].detach() * update.units[0] if with_bias else torch.zeros(5)
    view = (1, -1, 1, 1) if conv else (1, -1)
    want = s.reshape(view) * layer(x).detach() + t.reshape(view)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_film_layers_rules():
    shapes = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 4, 1, 1), "lat": (1, 1, 3, 3),
              "ctx.weight": (2, 2), "ctx.bias": (2,), "c.weight": (3, 2), "c.bias": (2,)}
    layers = film_layers(shapes, frozenset({"ctx.weight", "ctx.bias"}))
    assert [(lay.weight, lay.bias, lay.channels) for lay in layers] == [
        ("a.weight", "a.bias", 4), ("b.weight", None, 2), ("c.weight", None, 3)]  # c.bias is not per channel


# ---------------------------------------------------------------- coding


@pytest.mark.parametrize("kind", ["lowrank", "film"])
def test_round_trip_is_bit_exact(anchored, kind):
    net, base, frozen = anchored
    update = make(kind, base, frozen)
    randomise(update, seed=2, scale=3e-2)
    distortion = parameter_error(update)
    data, delta, facts = code(kind, update, distortion, 1e-9)
    assert facts["bytes"] == len(data) > 1 and facts["changed"] > 0
    assert math.isfinite(facts["step"]) and facts["step"] > 0
    decoded = decode(kind, data, base, frozen)
    assert list(decoded) == list(base) == list(delta)
    for name in base:
        assert decoded[name].dtype == torch.float32 and decoded[name].device.type == "cpu"
        assert torch.equal(decoded[name], delta[name]), name
        if name in frozen:
            assert not decoded[name].any()
    if kind == "lowrank":  # the shapes may also come as a mapping
        again = decode_lowrank(data, {n: tuple(t.shape) for n, t in base.items()}, frozen)
        assert all(torch.equal(again[n], delta[n]) for n in base)
        assert facts["rank"] == max(facts["ranks"].values(), default=0) or facts["rank"] >= 1
    assert distortion(delta) == pytest.approx(facts["distortion"])


@pytest.mark.parametrize("kind", ["lowrank", "film"])
def test_nothing_costs_one_byte(anchored, kind):
    net, base, frozen = anchored
    update = make(kind, base, frozen)
    data, delta, facts = code(kind, update, distortion_for(net, base, frame(0.05)), 1e-3)
    assert data == bytes([0]) and facts["bytes"] == 1 and facts["changed"] == 0
    assert all(not d.any() for d in delta.values())
    decoded = decode(kind, data, base, frozen)
    assert all(torch.equal(decoded[n], delta[n]) for n in base)


def fit(net, update, target, steps: int = 30, lam: float = 1e-7):
    opt = torch.optim.Adam(update.param_groups())
    for _ in range(steps):
        opt.zero_grad()
        err = F.mse_loss(forward_with(net, update.weights(train=True)), target)
        (err + lam * update.penalty()).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["lowrank", "film"])
def test_short_fit_codes_small_and_follows_lambda(kind):
    torch.manual_seed(0)
    net = build_network(NetworkSpec("siren", width=24, depth=2), H, W)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(net(), frame(0.0)).backward()
        opt.step()
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    target = frame(0.05)
    distortion = distortion_for(net, base, target)
    before = distortion({n: torch.zeros_like(b) for n, b in base.items()})
    update = make(kind, base, frozenset())
    fit(net, update, target)
    dense = WeightUpdate(base, UpdateSpec("dense"))
    fit(net, dense, target)
    quantised, _ = choose_step(dense.coded_values(), "dense", distortion, 0.0)
    dense_bytes = len(encode_update(quantised)[0])
    sizes, ranks = [], []
    for lam in (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1.0):
        data, delta, facts = code(kind, update, distortion, lam)
        if lam == 0.0:
            assert facts["distortion"] < 0.7 * before
            assert len(data) < dense_bytes
        sizes.append(len(data))
        ranks.append(facts.get("rank", 0))
    assert sizes == sorted(sizes, reverse=True), sizes
    assert ranks == sorted(ranks, reverse=True), ranks
    assert sizes[-1] == 1


# ---------------------------------------------------------------- damaged input


@pytest.fixture(scope="module")
def frames_of_both(anchored):
    net, base, frozen = anchored
    out = {}
    for kind in ("lowrank", "film"):
        update = make(kind, base, frozen)
        randomise(update, seed=5, scale=3e-2)
        out[kind] = code(kind, update, parameter_error(update), 1e-9)[0]
    return base, frozen, out


@pytest.mark.parametrize("kind", ["lowrank", "film"])
def test_truncations_and_extensions_raise(frames_of_both, kind):
    base, frozen, data = frames_of_both
    good = data[kind]
    for n in range(len(good)):
        with pytest.raises(BitstreamError):
            decode(kind, good[:n], base, frozen)
    for tail in (b"\x00", b"\x01\x02\x03\x04"):
        with pytest.raises(BitstreamError):
            decode(kind, good + tail, base, frozen)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.sampled_from(["lowrank", "film"]))
def test_random_bytes_raise_only_bitstream_errors(data, kind):
    shapes = {"l.weight": (8, 6), "l.bias": (8,), "o.weight": (3, 8), "o.bias": (3,)}
    base = {n: torch.full(s, 0.1) for n, s in shapes.items()}
    try:
        delta = decode(kind, data, base, frozenset())
    except BitstreamError:
        return
    assert all(torch.isfinite(d).all() for d in delta.values())


def test_huge_claims_are_refused_before_allocating():
    shapes = [("big.weight", (2048, 2048)), ("big.bias", (2048,))]
    base = {"big.weight": torch.zeros(1), "big.bias": torch.zeros(1)}  # film only needs the shapes to match
    tracemalloc.start()
    try:
        for head in (0xFF, 0xFD, 0x03 | (100 << 1)):  # ranks 127, 126 and 100 claimed
            # every rank field at its widest (all ones) with a bias switched on, then an exponent
            for fields in (b"\xff\xff", b"\x7f\x00", b""):
                with pytest.raises(BitstreamError):
                    decode_lowrank(bytes([head]) + fields + b"\x00" + b"\x01" * 3, shapes)
        with pytest.raises(BitstreamError):  # exponent far outside the grid
            decode_lowrank(bytes([0x03]) + b"\x03" + b"\xff\xff\xff\xff\x0f", [("w", (4, 4))] + shapes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak
    with pytest.raises(BitstreamError):  # a rank above min(m, n)
        decode_lowrank(bytes([0x01 | (5 << 1)]) + bytes([0x07]) + b"\x00" + b"\x00" * 17, [("w", (5, 6))])
    with pytest.raises(BitstreamError):  # rank claimed for a network without matrices
        decode_lowrank(bytes([0x03]) + b"\x01\x00", [("b", (4,))])
    with pytest.raises(BitstreamError):  # film: flags out of range, groups the network lacks
        decode_film(bytes([0x09]), base)
    with pytest.raises(BitstreamError):
        decode_film(bytes([0x05, 0x00]) + b"\x00" * 17, {"b": torch.zeros(3)})
    with pytest.raises(TypeError):  # film needs the weights, not only shapes
        decode_film(bytes([0]), {"w.weight": (3, 4)})


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_lowrank_layout_round_trips_any_ranks(data):
    n = data.draw(st.integers(1, 4))
    shapes = []
    for i in range(n):
        dims = data.draw(st.sampled_from([(5, 4), (3, 2, 2, 2), (1, 1, 4, 6), (6,), (2, 2), ()]))
        shapes.append((f"t{i}.weight", dims))
    plans = plan_tensors(shapes)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    coded = {}
    for plan in plans:
        if plan.factorised:
            k = data.draw(st.integers(0, plan.full_rank))
            if k:
                qu = rng.integers(1, 50, (plan.rows, k)).astype(np.int32) * rng.choice([-1, 1], (plan.rows, k))
                qv = rng.integers(-50, 50, (k, plan.cols)).astype(np.int32)
                qv[:, 0] = 7  # no empty component
                coded[plan.name] = (qu.astype(np.int32), qv)
        elif data.draw(st.booleans()):
            coded[plan.name] = rng.integers(1, 9, plan.cols).astype(np.int32)
    exponent = data.draw(st.integers(-200, 40)) if coded else 0
    frame_bytes = _frame(plans, exponent, coded)
    want = lowrank_delta(shapes, plans, exponent, coded)
    got = decode_lowrank(frame_bytes, shapes)
    assert all(torch.equal(got[name], want[name]) for name, _ in shapes)
    assert (frame_bytes == bytes([0])) == (not coded)

"""Motion inside the step (warp kinds), gop=auto, warm-started gates, the bits penalty and early stops."""

import numpy as np
import pytest
import torch
from golden import predict_every_warp
from test_weight_steps import FAST, TINY, drifting_clip

from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.weightstep_codec import ANCHOR, STEP
from weightstep.coding.container import Container
from weightstep.errors import BitstreamError, ConfigError
from weightstep.inr import FitConfig, StepOutput, fit
from weightstep.inr.siren import coordinate_grid
from weightstep.inr.spec import WarpTarget
from weightstep.stepping import warp as W
from weightstep.stepping.update import UpdateSpec, WeightUpdate
from weightstep.video import Video

WARP_KINDS = ["warp", "warp+l0", "warp+dct", "warp+dense", "lowrank", "film", "warp+lowrank", "warp+film"]


@pytest.fixture(scope="module")
def clip():
    return drifting_clip()


@pytest.mark.parametrize("inr", ["siren", "fourier", "dip", "grid"])
@pytest.mark.parametrize("update", WARP_KINDS)
def test_every_new_kind_round_trips_exactly(inr, update, clip, tmp_path):
    codec = registry.create("weightstep", {"inr": inr, "update": update, "warp_grid": "2", **FAST, **TINY[inr]})
    result = harness.run(codec, clip, tmp_path / "c.wsv")
    data = (tmp_path / "c.wsv").read_bytes()
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())
    assert [tag for tag, _ in Container.from_bytes(data).sections] == [ANCHOR, STEP, STEP]
    assert all(("warp_bytes" in step) == update.startswith("warp") for step in result.extra["steps"])


@pytest.mark.parametrize("update", ["latent", "warp+latent"])
def test_latent_residual_steps_round_trip_exactly_on_the_grid(update, clip, tmp_path):
    codec = registry.create("weightstep", {"inr": "grid", "update": update, "warp_grid": "2", "lambda": "1e-4",
                                           **FAST, **TINY["grid"]})
    result = harness.run(codec, clip, tmp_path / "c.wsv")
    data = (tmp_path / "c.wsv").read_bytes()
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())
    assert [tag for tag, _ in Container.from_bytes(data).sections] == [ANCHOR, STEP, STEP]
    assert all("threshold" in step for step in result.extra["steps"])


def test_stream_formats_by_network_and_kind(clip, tmp_path):
    """Streams of a warp kind are format 5 (warps predicted from the previous one); grid streams
    without a warp are format 3 (latent steps coded in blocks since format 2; renders upsample by
    matrices since 3), or 4 with the step residual; the other networks' streams without a warp still
    format 1, so their job keys stand. A header whose format does not fit its network and kind is
    refused; a grid stream read as format 1 still decodes (with torch's kernel: the same 8-bit
    pixels up to a rounding flip)."""
    import json

    assert registry.create("weightstep", {"inr": "grid"}).describe()["format"] == 5
    assert registry.create("weightstep", {"inr": "grid", "update": "lowrank"}).describe()["format"] == 4
    assert registry.create("weightstep", {"inr": "grid", "schedule": "single-stage", "update": "l0"}
                           ).describe()["format"] == 3  # the residual is a two-stage step's
    latent = registry.create("weightstep", {"inr": "grid", "update": "latent", "lambda": "1e-4", "residual": "none",
                                            **FAST, **TINY["grid"]})
    assert latent.describe()["format"] == 3 and registry.create("weightstep", {"inr": "dip", "update": "l0"}).describe()["format"] == 1
    assert registry.create("weightstep", {"inr": "siren", "update": "warp+lowrank"}).describe()["format"] == 5
    assert registry.create("weightstep", {"inr": "siren", "update": "warp+lowrank"}).config.readable_formats() == (1, 5)
    assert registry.create("weightstep", {"inr": "grid", "update": "warp", "residual": "none"}
                           ).config.readable_formats() == (1, 3, 5)
    assert registry.create("weightstep", {"inr": "grid"}).config.readable_formats() == (4, 5)
    harness.run(latent, clip, tmp_path / "c.wsv")
    data = (tmp_path / "c.wsv").read_bytes()
    container = Container.from_bytes(data)
    assert container.header["format"] == 3
    for wrong in (4, 0):
        header = {**container.header, "format": wrong}
        forged = Container(codec=container.codec, header=header, sections=container.sections).to_bytes()
        with pytest.raises(BitstreamError, match="format"):
            latent.decode(forged)
    lowrank = registry.create("weightstep", {"inr": "grid", "update": "lowrank", "lambda": "1e-4", "residual": "none",
                                             **FAST, **TINY["grid"]})
    harness.run(lowrank, clip, tmp_path / "l.wsv")
    other = Container.from_bytes((tmp_path / "l.wsv").read_bytes())
    assert other.header["format"] == 3
    forged = Container(codec=other.codec, header={**other.header, "format": 2}, sections=other.sections).to_bytes()
    with pytest.raises(BitstreamError, match="does not fit"):
        lowrank.decode(forged)
    assert json.loads(json.dumps(other.header))["format"] == 3
    as_format_1 = Container(codec=other.codec, header={**other.header, "format": 1}, sections=other.sections)
    kernel = lowrank.decode(as_format_1.to_bytes()).rgb()
    matrices = lowrank.decode((tmp_path / "l.wsv").read_bytes()).rgb()
    assert np.array_equal(matrices, lowrank.reconstruction.numpy())
    assert np.abs(kernel - matrices).max() <= 1.0 / 255 + 1e-6  # 8-bit pixels: rounding flips at most


def test_latent_steps_need_a_latent_grid_network():
    with pytest.raises(ConfigError, match="latent grids"):
        registry.create("weightstep", {"inr": "siren", "update": "warp+latent"})


def test_single_stage_refuses_the_warp_kinds():
    with pytest.raises(ConfigError, match="single-stage"):
        registry.create("weightstep", {"update": "warp+l0", "schedule": "single-stage"})


def test_identity_warp_leaves_maps_and_coordinates_unchanged():
    grid = 3
    zero = torch.zeros(W.warp_count(grid), dtype=torch.float64)
    m = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    moved = W.warp_state({"m": m}, (WarpTarget("m", "map", 2),), zero, 14, 10, grid)
    assert torch.equal(moved["m"], m)
    c = coordinate_grid(10, 14).double()
    moved = W.warp_state({"c": c}, (WarpTarget("c", "coords"),), zero, 14, 10, grid)
    assert torch.allclose(moved["c"], c, atol=1e-12)


def test_a_translation_moves_coordinates_by_that_many_pixels_even_past_the_border():
    values = torch.zeros(W.warp_count(2), dtype=torch.float64)
    values[4], values[5] = 2.0, -1.0  # sample 2 px to the right and 1 px up
    c = coordinate_grid(10, 14).double()  # x in [-1, 1] over 13 pixel steps
    moved = W.warp_state({"c": c}, (WarpTarget("c", "coords"),), values, 14, 10, 2)["c"]
    assert torch.allclose(moved[:, 0], c[:, 0] + 2.0 * 2 / 13, atol=1e-9)
    assert torch.allclose(moved[:, 1], c[:, 1] - 1.0 * 2 / 9, atol=1e-9)


def test_a_map_translated_by_whole_pixels_is_shifted_exactly_inside():
    values = torch.zeros(W.warp_count(0), dtype=torch.float64)
    values[4] = 1.0
    m = torch.arange(48, dtype=torch.float64).reshape(1, 1, 6, 8)
    moved = W.warp_state({"m": m}, (WarpTarget("m", "map"),), values, 8, 6, 0)["m"]
    assert torch.equal(moved[..., :-1], m[..., 1:])


def test_warp_blob_round_trips_and_an_identity_costs_one_byte():
    rng = np.random.default_rng(0)
    q = rng.integers(-3, 4, W.warp_count(4)).astype(np.int32)
    blob = W.encode_warp(q, -8)
    back, exponent = W.decode_warp(blob, 4)
    assert np.array_equal(back, q) and exponent == -8
    assert W.encode_warp(np.zeros(W.warp_count(4), np.int32), 3) == b"\x00"


def test_a_predicted_warp_blob_round_trips_and_codes_persisting_motion_in_fewer_bytes():
    rng = np.random.default_rng(0)
    grid, e = 4, -8
    previous = W.dequantise_warp(rng.integers(-40, 41, W.warp_count(grid)).astype(np.int32), -10)  # another step
    q = W.predict_warp(previous, e) + rng.integers(-1, 2, W.warp_count(grid)).astype(np.int32)  # motion persists
    predicted = W.encode_warp(q, e, previous)
    assert predicted[0] == 3 and len(predicted) < len(W.encode_warp(q, e))
    back, exponent = W.decode_warp(predicted, grid, previous)
    assert np.array_equal(back, q) and exponent == e
    with pytest.raises(BitstreamError, match="predicted"):  # a stream without prediction (format < 5) refuses it
        W.decode_warp(predicted, grid)
    same = W.encode_warp(W.predict_warp(previous, e), e, previous)  # no change at all: a constant support
    assert np.array_equal(W.decode_warp(same, grid, previous)[0], W.predict_warp(previous, e))
    # the coder picks the shorter layout per step; both decode to the same warp
    values = torch.tensor(W.dequantise_warp(q, e) + rng.normal(0, 0.01, q.size), dtype=torch.float32)

    def distortion(decoded):
        return float(np.mean((decoded - values.numpy()) ** 2))

    blob, decoded, facts = W.code_warp(values, distortion, 1e-4, previous=previous)
    assert facts["warp_predicted"] and blob[0] == 3
    direct_blob, direct, direct_facts = W.code_warp(values, distortion, 1e-4)
    assert not direct_facts["warp_predicted"] and len(blob) < len(direct_blob)
    back, exponent = W.decode_warp(blob, grid, previous)
    assert np.array_equal(W.dequantise_warp(back, exponent), decoded)
    unrelated = np.zeros(W.warp_count(grid))  # nothing to predict from: coded directly
    assert not W.code_warp(values, distortion, 1e-4, previous=unrelated)[2]["warp_predicted"]


def test_the_affine_split_keeps_the_displacement_and_empties_the_nodes_of_a_pan():
    grid, width, height = 4, 26, 18
    values = np.zeros(W.warp_count(grid))
    values[6:6 + grid * grid] = 2.5  # every node moves right by 2.5 px: a pan, coded in the nodes
    values[6 + grid * grid:] = np.linspace(-1, 1, grid).repeat(grid)  # a vertical zoom along y
    split = W.affine_split(values, grid, width, height)
    assert np.abs(split[6:]).max() < 1e-9 and split[4] == pytest.approx(2.5)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    for a, b in zip(W.displacement(torch.tensor(values), xs, ys, width, height, grid),
                    W.displacement(torch.tensor(split), xs, ys, width, height, grid), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_damaged_warp_blobs_are_refused_or_decode_to_bounded_values():
    rng = np.random.default_rng(1)
    blob = W.encode_warp(rng.integers(-5, 6, W.warp_count(2)).astype(np.int32), -6)
    cases = [blob[:k] for k in range(len(blob))] + [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in
                                                   range(1, 40)] + [b"\x01\x00\x00\xfe\xff\xff\xff\x0f"]
    previous = W.dequantise_warp(rng.integers(-9, 10, W.warp_count(2)).astype(np.int32), -6)
    predicted = W.encode_warp(rng.integers(-5, 6, W.warp_count(2)).astype(np.int32), -6, previous)
    cases += [predicted[:k] for k in range(len(predicted))] + [bytes([3]) + predicted[1:-1] + b"\xff"]
    for data in cases:
        for before in (None, previous):
            try:
                q, exponent = W.decode_warp(data, 2, before)
            except BitstreamError:
                continue
            assert q.shape == (W.warp_count(2),) and np.abs(q).max() <= W.MAX_ABS and abs(exponent) <= W.MAX_EXPONENT


def _shifting_clip_steps(tmp_path, step: int, size: tuple[int, int], width: int, identity: str, frames: int = 3,
                         **extra) -> list[dict]:
    """Steps' facts of a clip whose content moves left by ``step`` px a frame (a warp-only grid codec,
    without the step residual, which would take over part of the motion); the file is ``w.wsv``."""
    rng = np.random.default_rng(0)
    base = np.cumsum(np.cumsum(rng.normal(size=(3, *size)), axis=1), axis=2)
    base = (base - base.min()) / (base.max() - base.min())
    clip = np.stack([base[:, :16, t * step:t * step + width] for t in range(frames)]).astype(np.float32)
    video = Video(identity=identity, fps=25.0, rgb_frames=clip)
    params = {"inr": "grid", "update": "warp", "warp_grid": "0", "step_steps": "60", "anchor_steps": "200",
              "device": "cpu", "grid_levels": "3", "grid_hidden": "8", "lambda": "1e-6", "step_patience": "none",
              "residual": "none", **extra}
    return harness.run(registry.create("weightstep", params), video, tmp_path / "w.wsv").extra["steps"]


def test_predicted_warps_decode_through_a_stream_and_need_format_5(tmp_path):
    """Every warp after a group's first coded against the previous one (forced here: a tiny clip's
    warps fit in one ANS word either way): the file decodes to the encoder's frames, the decoder
    keeping each group's last warp, and the same sections under a header of format 3 (no
    prediction) are refused."""
    rng = np.random.default_rng(0)
    base = np.cumsum(np.cumsum(rng.normal(size=(3, 20, 48)), axis=1), axis=2)
    base = (base - base.min()) / (base.max() - base.min())
    video = Video(identity="test:persist", fps=25.0,
                  rgb_frames=np.stack([base[:, :16, 2 * t:2 * t + 16] for t in range(5)]).astype(np.float32))
    codec = registry.create("weightstep", {"inr": "grid", "update": "warp", "warp_grid": "2", "step_steps": "20",
                                           "anchor_steps": "100", "device": "cpu", "grid_levels": "3",
                                           "grid_hidden": "8", "lambda": "1e-6", "residual": "none", "gop": "3"})
    with predict_every_warp():
        steps = harness.run(codec, video, tmp_path / "w.wsv").extra["steps"]
    assert [step["warp_predicted"] for step in steps] == [False, True, False]  # frames 1, 2, 4: anchors at 0 and 3
    data = (tmp_path / "w.wsv").read_bytes()
    container = Container.from_bytes(data)
    assert container.header["format"] == 5 and [tag for tag, _ in container.sections][3] == ANCHOR
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())
    forged = Container(codec=container.codec, header={**container.header, "format": 3},
                       sections=container.sections).to_bytes()
    with pytest.raises(BitstreamError, match="predicted"):
        codec.decode(forged)


def test_a_fitted_warp_follows_a_shift(tmp_path):
    """Frames that are the first one shifted by whole pixels: the warp step finds the shift for a few bytes."""
    # the fit alone, from the identity; a 400-step anchor (at 200 the second step's fit followed
    # 0.35-0.75 px for some seeds: what a warp fit finds depends on how well the anchor renders)
    steps = _shifting_clip_steps(tmp_path, 1, (20, 40), 16, "test:shift", warp_init="previous", anchor_steps="400")
    shifts = [step["warp_shift"][0] for step in steps]
    # content moves left by 1 px a frame: each step samples about 1 px to the right of the last state
    assert all(0.5 < s < 1.6 for s in shifts) and abs(sum(shifts) - 2.0) < 0.5, shifts
    assert all(step["bytes"] < 20 for step in steps)


def test_a_motion_estimate_starts_the_warp_near_a_larger_shift(tmp_path):
    """3 px a frame, more than a fit from the identity follows: the block-matching start finds it."""
    steps = _shifting_clip_steps(tmp_path, 3, (24, 48), 24, "test:shift3")
    assert steps[0]["warp_start"] == "estimate"
    assert all(2.3 < step["warp_shift"][0] < 3.5 for step in steps), [step["warp_shift"] for step in steps]


def test_gop_auto_puts_a_fresh_anchor_at_a_scene_cut(tmp_path):
    first, second = drifting_clip(frames=2).rgb(), 1.0 - drifting_clip(frames=2).rgb()[:, ::-1]
    video = Video(identity="test:cut", fps=25.0, rgb_frames=np.ascontiguousarray(np.concatenate([first, second])))
    codec = registry.create("weightstep", {"inr": "siren", "gop": "auto", "update": "l0", **FAST, **TINY["siren"],
                                           "anchor_steps": "120"})
    harness.run(codec, video, tmp_path / "a.wsv")
    data = (tmp_path / "a.wsv").read_bytes()
    tags = [tag for tag, _ in Container.from_bytes(data).sections]
    assert tags[0] == ANCHOR and tags[2] == ANCHOR, tags
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())


def test_gop_must_be_a_count_or_auto():
    with pytest.raises(ConfigError, match="gop"):
        registry.create("weightstep", {"gop": "often"})


def test_the_gate_penalty_is_expected_bits_and_warm_starts_copy_the_logits():
    base = {"w": torch.zeros(4, 3)}
    update = WeightUpdate(base, UpdateSpec("l0", log_alpha_init=0.0, gate_bits=10.0))
    plain = WeightUpdate(base, UpdateSpec("l0", log_alpha_init=0.0, gate_bits=1.0))
    assert torch.allclose(update.penalty(), 10.0 * plain.penalty())
    logits = {"w": torch.linspace(-5, 5, 12).reshape(4, 3)}
    fresh = WeightUpdate(base, UpdateSpec("l0", log_alpha_init=-3.0))
    fresh.warm_start(logits)
    assert torch.equal(fresh.logits()["w"], logits["w"].clamp(-3, 3))


def test_a_fit_stops_early_on_a_plateau_and_runs_on_while_it_improves():
    x = torch.nn.Parameter(torch.tensor([3.0]))
    flat = fit([x], lambda _: StepOutput(loss=(x * 0).sum() + 1.0), FitConfig(steps=500, patience=20),
               progress=False)
    assert flat.stopped_by == "plateau" and flat.steps_done < 60
    y = torch.nn.Parameter(torch.tensor([3.0]))
    going = fit([y], lambda _: StepOutput(loss=(y - 100.0) ** 2 / 1e4), FitConfig(steps=100, lr=0.5, patience=20),
                progress=False)
    assert going.stopped_by == "steps" and going.steps_done == 100


def test_a_fit_whose_loss_first_rises_is_not_stopped_against_its_first_step():
    # a weight step's first loss has no rate term and its first Adam steps raise D + lambda R before it falls:
    # the plateau is judged after a burn-in, so a fit still improving after the rise runs on
    x = torch.nn.Parameter(torch.tensor([0.0]))

    def rises_then_falls(step: int) -> StepOutput:
        value = 1.0 if step == 0 else 3.0 - 0.02 * step  # below the first loss only after 100 steps
        return StepOutput(loss=(x * 0).sum() + value)

    report = fit([x], rises_then_falls, FitConfig(steps=90, patience=20), progress=False)
    assert report.stopped_by == "steps" and report.steps_done == 90


def test_mlp_steps_on_pixel_subsets_round_trip_and_still_improve(clip, tmp_path):
    params = {"inr": "siren", "update": "warp+l0", "step_pixels": "0.3", **FAST, **TINY["siren"], "step_steps": "30",
              "lambda": "1e-9"}
    codec = registry.create("weightstep", params)
    result = harness.run(codec, clip, tmp_path / "p.wsv")
    assert np.array_equal(codec.decode((tmp_path / "p.wsv").read_bytes()).rgb(), codec.reconstruction.numpy())
    frozen = registry.create("weightstep", {**params, "lambda": "1e3"})
    still = harness.run(frozen, clip, tmp_path / "f.wsv")
    assert result.psnr_rgb > still.psnr_rgb  # the subset fits still learn the frames


def test_the_batched_exact_warp_matches_one_map_at_a_time_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    width, height, grid = 23, 17, 3
    maps = {f"m{level}": torch.randn(1, 1, -(-height // 2**level), -(-width // 2**level), generator=g)
            for level in range(4)}
    targets = tuple(WarpTarget(name, "map", 2**level) for level, name in enumerate(maps))
    values = (torch.randn(W.warp_count(grid), generator=g) * 2.0).float()
    moved = W.warp_state(maps, targets, values, width, height, grid)
    for level, (name, m) in enumerate(maps.items()):
        h, w = m.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        s = float(2**level)
        px, py = (xs + 0.5) * s - 0.5, (ys + 0.5) * s - 0.5
        dx, dy = W.displacement(values, px, py, width, height, grid)
        one = W.sample_map(m, (px + dx + 0.5) / s - 0.5, (py + dy + 0.5) / s - 0.5)
        assert torch.equal(moved[name], one)


def test_the_warps_position_cache_is_bounded_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(W, "_POSITIONS", type(W._POSITIONS)())
    monkeypatch.setattr(W, "_POSITIONS_SAMPLES", 300)
    values = torch.linspace(-1.5, 2.0, W.warp_count(2))
    results = []
    for _ in range(2):  # the second pass finds some layouts cached, others evicted: the same bits
        out = {}
        for size in ((10, 14), (6, 8), (12, 16)):
            m = torch.arange(size[0] * size[1], dtype=torch.float32).reshape(1, 1, *size).sin()
            out[size] = W.warp_state({"m": m}, (WarpTarget("m", "map", 2),), values, 2 * size[1], 2 * size[0], 2)["m"]
            assert sum(e[0].numel() for e in W._POSITIONS.values()) <= 300 or len(W._POSITIONS) == 1
        results.append(out)
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_the_training_warp_is_the_exact_warp_up_to_rounding():
    torch.manual_seed(0)
    targets = [WarpTarget(f"l{i}", "map", 2**i) for i in range(4)]
    state = {t.name: torch.randn(1, 1, -(-18 // t.stride), -(-26 // t.stride)) for t in targets}
    values = torch.randn(W.warp_count(4)) * 1.5
    exact = W.warp_state(state, targets, values, 26, 18, 4, exact=True)
    fast = W.warp_state(state, targets, values, 26, 18, 4, exact=False)
    for t in targets:
        torch.testing.assert_close(fast[t.name], exact[t.name], rtol=0, atol=1e-4)


def test_the_warp_coder_stops_its_step_search_near_the_minimum():
    values = torch.tensor(np.random.default_rng(0).normal(0.0, 0.6, W.warp_count(2)), dtype=torch.float32)
    seen = []

    def distortion(decoded):
        seen.append(decoded)
        return float(np.mean((decoded - values.numpy()) ** 2))

    blob, decoded, facts = W.code_warp(values, distortion, 1e-4)
    full = [e for e in W.STEP_EXPONENTS]
    assert 1 + 3 <= len(seen) < 1 + len(full)  # the identity, then finest first until two rises
    costs = {}
    for e in full:  # the exhaustive search agrees
        q = W.quantise_warp(values, e)
        d = W.dequantise_warp(q, e)
        costs[e] = float(np.mean((d - values.numpy()) ** 2)) + 1e-4 * 8 * len(W.encode_warp(q, e))
    assert facts["warp_step"] == pytest.approx(2.0 ** (min(costs, key=costs.get) / 4), rel=1e-6)

"""Full-sequence baselines (full-mlp, full-cnn) and the pruning/sparse coding they share with NeRV."""

import importlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from clips import moving_clip
from streams import container_layout
from typer.testing import CliRunner

from baselines.full_cnn import frame_noise
from baselines.fullseq import evenly_spaced, plan_steps
from baselines.prune import (
    code_network,
    decode_network,
    global_magnitude_masks,
    parse_section,
    prunable_names,
)
from weightstep import registry
from weightstep.cli import app
from weightstep.codecs import harness
from weightstep.codecs.netcoding import parameter_shapes
from weightstep.coding.container import Container, payload_size
from weightstep.errors import BitstreamError

SCHEMA = json.loads((Path(__file__).parent / "data" / "result.schema.json").read_text())

QUICK = {
    "full-mlp": {"width": "24", "depth": "2", "epochs": "30", "batch": "512", "lr": "3e-3", "device": "cpu"},
    "full-cnn": {"dip_channels": "8", "dip_levels": "2", "epochs": "40", "lr": "1e-2", "device": "cpu"},
}


def mean_colour_psnr(video):
    rgb = video.rgb()
    return 10 * np.log10(1.0 / np.mean((rgb - rgb.mean(axis=(0, 2, 3), keepdims=True)) ** 2))


@pytest.fixture(scope="module")
def clip():
    return moving_clip()


@pytest.fixture(scope="module")
def runs(clip, tmp_path_factory):
    """One quick encode per codec, written to a file and measured by the harness (shared by tests)."""
    out = {}
    for name, params in QUICK.items():
        codec = registry.create(name, params)
        path = tmp_path_factory.mktemp(name) / "clip.wsv"
        out[name] = (codec, harness.run(codec, clip, path), path)
    return out


@pytest.mark.parametrize("name", list(QUICK))
def test_decode_equals_the_encoder_reconstruction(name, runs, clip):
    codec, result, path = runs[name]
    data = path.read_bytes()
    decoded = codec.decode(data)
    assert decoded.rgb().shape == (4, 3, 32, 32)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    # codec and its config rebuilt from the file alone; an exact match is promised on the device
    # kind the file was encoded on (its header says so), so the decoder is pinned to the CPU too
    assert container_layout(data).meta["encoded_on"] == "cpu"
    fresh = harness.decode_bytes(data, device="cpu")[1]
    assert np.array_equal(fresh.rgb(), codec.reconstruction.numpy())
    layout = container_layout(data)
    # the rate is the elementary stream (header and sections); the file adds metadata and a CRC
    assert result.bytes == layout.stream < result.file_bytes == len(data) == layout.end
    assert result.bpp == pytest.approx(8 * layout.stream / (4 * 32 * 32))
    # one network for all frames: no frame has bits of its own; the file is the header and one
    # section, whose size (read from the file) is the weights' coded size the encoder reports
    assert all(frame["bits"] is None for frame in result.per_frame)
    layout = container_layout(data)
    assert [tag for tag, _ in layout.sections] == ["NETW"] and layout.end == len(data)
    assert result.extra["weight_bytes"] == layout.sections[0][1]
    assert result.extra["coded_psnr_clip"] > 0 and result.extra["parameters"] > 0


@pytest.mark.parametrize("name", list(QUICK))
def test_psnr_rises_above_a_floor_within_a_few_epochs(name, runs, clip):
    _, result, _ = runs[name]
    # floors: mean - 3 sd over seeds 0-7 (measured: full-mlp 37.73 +- 2.53, full-cnn 27.33 +- 0.66 dB; seed 0
    # gives 39.0 and 28.1); the mean colour gives 17.3 dB. tests/test_rd_pins.py holds the tight checks.
    floor = {"full-mlp": 30.1, "full-cnn": 25.4}[name]
    assert result.psnr_rgb > floor > mean_colour_psnr(clip) + 6


def test_json_result_is_valid(runs):
    for _, result, _ in runs.values():
        jsonschema.validate(json.loads(json.dumps(result.to_dict(), default=float)), SCHEMA)


def test_pruned_cnn_round_trips_and_its_kernels_are_sparse(clip):
    codec = registry.create("full-cnn", {**QUICK["full-cnn"], "epochs": "10", "prune": "0.5",
                                         "finetune_epochs": "2"})
    encoded = codec.encode(clip)
    assert np.array_equal(codec.decode(encoded.data).rgb(), codec.reconstruction.numpy())
    facts = encoded.extra["prune"]
    assert facts["pruned"] == round(0.5 * facts["prunable"])
    net = codec.network(codec.config, 4, 32, 32)
    shapes = parameter_shapes(net)
    weights = decode_network(Container.from_bytes(encoded.data).section("NETW"), shapes)
    kernels = prunable_names(shapes)
    zeros = sum(int((weights[n] == 0).sum()) for n in kernels)
    assert zeros >= facts["pruned"]


def test_cnn_with_independent_noise_and_no_skips_round_trips(clip, tmp_path):
    codec = registry.create("full-cnn", {**QUICK["full-cnn"], "epochs": "20", "noise": "independent",
                                         "dip_skips": "false"})
    result = harness.run(codec, clip, tmp_path / "c.wsv")
    decoded = harness.decode_bytes((tmp_path / "c.wsv").read_bytes(), device="cpu")[1]  # encoded on the CPU
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    assert result.psnr_rgb > mean_colour_psnr(clip) + 3


def test_fourier_mlp_round_trips(clip, tmp_path):
    params = {"inr": "fourier", "width": "24", "depth": "2", "fourier_features": "32", "fourier_sigma": "3",
              "epochs": "20", "batch": "512", "device": "cpu"}
    codec = registry.create("full-mlp", params)
    result = harness.run(codec, clip, tmp_path / "f.wsv")
    decoded = harness.decode_bytes((tmp_path / "f.wsv").read_bytes(), device="cpu")[1]  # encoded on the CPU
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    assert result.extra["lr"] == 1e-2  # the Fourier MLP's own default rate
    assert result.psnr_rgb > mean_colour_psnr(clip) + 5  # measured 24.8 dB


def test_time_budget_ends_training_early(clip, monkeypatch, fake_clock):
    # an injected clock that reads 10 ms later each time: probing times each step at 10 ms, so a
    # 0.3 s budget plans floor(0.85 * 0.3 / 0.01) = 25 steps however fast this machine is
    import baselines.fullseq as fullseq

    clock = fake_clock(per_call=0.01)
    monkeypatch.setattr(fullseq, "time", clock)
    monkeypatch.setattr(importlib.import_module("weightstep.inr.fit"), "time", clock)
    codec = registry.create("full-mlp", {**QUICK["full-mlp"], "epochs": "100000", "time_budget": "0.3"})
    encoded = codec.encode(clip)
    fit = encoded.extra["fit"]
    assert fit["planned_steps"] == 25 and fit["steps"] == 25 and fit["stopped_by"] == "steps"
    assert np.array_equal(codec.decode(encoded.data).rgb(), codec.reconstruction.numpy())


def test_a_time_budget_plans_no_more_steps_than_fit_in_it(monkeypatch, fake_clock):
    import baselines.fullseq as fullseq

    clock = fake_clock()
    monkeypatch.setattr(fullseq, "time", clock)
    calls = []
    step_s = 0.0625  # what one step takes on the injected clock (a binary fraction: exact sums)

    def probe():
        calls.append(1)
        clock.advance(step_s)

    assert plan_steps(1000, None, probe) == 1000 and not calls  # no budget: the epochs decide, no probing
    assert plan_steps(10**6, 1.0, probe) == 13  # floor(0.85 * 1.0 / 0.0625): 15 % is kept back
    assert len(calls) == 1 + 3  # one warm-up, then the minimum of 3 timed probes (each over 3 % of 1 s)
    assert plan_steps(3, 100.0, probe) == 3  # the epochs stay a cap
    calls.clear()
    assert plan_steps(10**6, 64.0, probe) == 870  # floor(0.85 * 64 / 0.0625)
    assert len(calls) == 1 + 7  # a long budget: probes continue to the maximum of 7 while under 3 % of it
    assert evenly_spaced(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29] and evenly_spaced(5, 0) == [0, 1, 2, 3, 4]


def test_skip_connections_are_switchable():
    on = registry.create("full-cnn", {"dip_channels": "8", "dip_levels": "2"})
    off = registry.create("full-cnn", {"dip_channels": "8", "dip_levels": "2", "dip_skips": "false"})
    count = lambda c: sum(p.numel() for p in c.network(c.config, 3, 16, 16).parameters())  # noqa: E731
    assert count(off) < count(on)
    z = torch.zeros(1, 32, 16, 16)
    assert off.network(off.config, 3, 16, 16).dip(z).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("scheme", ["independent", "smooth"])
def test_frame_noise_is_regenerated_from_the_seed(scheme):
    codec = registry.create("full-cnn", {"dip_channels": "4", "dip_levels": "2", "noise": scheme})
    net = codec.network(codec.config, 5, 12, 20)  # padded to 12x20 (multiples of 4)
    z = net.inputs(torch.arange(5))
    assert z.shape == (5, 32, 12, 20)
    again = codec.network(codec.config, 5, 12, 20).inputs(torch.tensor([3, 0]))
    assert torch.equal(again, z[[3, 0]])
    for i in range(5):
        assert torch.allclose(frame_noise(i, 5, 32, 12, 20, 0, "normal", scheme)[0], z[i], atol=1e-7)
    distances = [float((z[i + 1] - z[i]).norm()) for i in range(4)]
    assert min(distances) > 0
    if scheme == "smooth":  # neighbours are nearer than the ends
        assert max(distances) < float((z[4] - z[0]).norm())


def test_mlp_pixel_batches_address_the_rendered_frames():
    codec = registry.create("full-mlp", {"width": "8", "depth": "1"})
    net = codec.network(codec.config, 3, 5, 7)
    frames = net(torch.arange(3))
    index = torch.tensor([0, 6, 34, 35, 3 * 35 - 1])
    t, rest = index // 35, index % 35
    expected = frames[t, :, rest // 7, rest % 7]
    assert torch.allclose(net.pixels(net.coordinates(index)), expected, atol=1e-6)
    coords = net.coordinates(index)
    assert coords[:, 2].tolist() == pytest.approx([-1, -1, -1, 0, 1])  # t over [-1, 1] (SIREN)


def test_damaged_streams_are_refused(runs):
    codec, _, path = runs["full-mlp"]
    data = path.read_bytes()
    rng = np.random.default_rng(5)
    for _ in range(15):
        with pytest.raises(BitstreamError):
            codec.decode(data[: int(rng.integers(0, len(data)))])
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            harness.decode_bytes(bytes(flipped))
    other = registry.create("full-cnn", QUICK["full-cnn"])
    with pytest.raises(BitstreamError):
        other.decode(data)


# ---------------------------------------------------------------- pruning and sparse coding


def random_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(16, 8, 3, 3, generator=g), "a.bias": torch.randn(16, generator=g),
            "b.weight": 0.1 * torch.randn(3, 16, generator=g), "b.bias": torch.randn(3, generator=g)}


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_global_pruning_removes_the_requested_fraction_of_the_smallest_kernels(ratio):
    weights = random_weights()
    names = prunable_names([(n, tuple(w.shape)) for n, w in weights.items()])
    assert names == ["a.weight", "b.weight"]
    masks = global_magnitude_masks(weights, ratio, names)
    total = sum(m.numel() for m in masks.values())
    removed = total - sum(int(m.sum()) for m in masks.values())
    assert removed == round(ratio * total)
    if 0 < removed < total:
        cut = max(float(weights[n][~masks[n]].abs().max()) for n in names if (~masks[n]).any())
        kept = min(float(weights[n][masks[n]].abs().min()) for n in names if masks[n].any())
        assert cut <= kept  # one global threshold: b.weight (smaller) loses more than a.weight
    if ratio == 0.5:
        assert (~masks["b.weight"]).float().mean() > (~masks["a.weight"]).float().mean()


def _distortion(reference):
    return lambda w: float(sum(torch.mean((w[n] - reference[n]) ** 2) for n in reference))


def test_pruned_weights_cost_no_value_bits_and_round_trip_exactly():
    weights = random_weights()
    masks = global_magnitude_masks(weights, 0.6)
    pruned = {n: w * masks[n] if n in masks else w for n, w in weights.items()}
    data, decoded_enc, report = code_network(pruned, _distortion(pruned), 1e-4, 4096, True, masks=masks)
    shapes = [(n, tuple(w.shape)) for n, w in weights.items()]
    decoded = decode_network(data, shapes)
    for name in weights:
        assert torch.equal(decoded[name], decoded_enc[name])
        if name in masks:
            assert torch.all(decoded[name][~masks[name]] == 0)
    # the values part holds only the survivors: one integer per kept weight, none per pruned one
    assert report["mask_bytes"] > 0
    parsed_masks, values = parse_section(data, shapes)
    assert all(torch.equal(parsed_masks[n], masks[n]) for n in masks)
    survivors = {n: int(m.sum()) for n, m in masks.items()}
    assert [q.values.size for q in values] == [survivors.get(n, int(np.prod(s))) for n, s in shapes]
    # what a pruned weight held before pruning does not matter: the same bytes either way
    noisy = {n: torch.where(masks[n], pruned[n], torch.full_like(pruned[n], 7.0)) if n in masks else w
             for n, w in pruned.items()}
    again, _, _ = code_network(noisy, _distortion(pruned), 1e-4, 4096, True, masks=masks)
    assert again == data


def test_dense_and_pruned_sections_are_checked():
    weights = random_weights()
    shapes = [(n, tuple(w.shape)) for n, w in weights.items()]
    dense, dec, _ = code_network(weights, _distortion(weights), 1e-4, 4096, True)
    assert all(torch.equal(decode_network(dense, shapes)[n], dec[n]) for n in weights)
    masks = global_magnitude_masks(weights, 0.9)
    sparse, _, _ = code_network(weights, _distortion(weights), 1e-4, 4096, True, masks=masks)
    assert len(sparse) < len(dense)
    with pytest.raises(BitstreamError):
        decode_network(sparse, shapes, masked=["a.weight"])  # a mask count the network does not expect
    with pytest.raises(BitstreamError):
        decode_network(bytes([7]) + dense[1:], shapes)
    for cut in range(0, len(sparse), max(1, len(sparse) // 25)):
        with pytest.raises(BitstreamError):
            decode_network(sparse[:cut], shapes)


# ---------------------------------------------------------------- command line


def test_codecs_are_listed_and_the_cli_round_trips_a_full_sequence_file(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["codecs", "--json"])
    assert listing.exit_code == 0
    entries = {entry["name"]: entry for entry in json.loads(listing.stdout)}
    for name, needed in {"full-mlp": {"width", "epochs", "time_budget", "prune", "lambda (lam)"},
                         "full-cnn": {"dip_channels", "dip_skips", "epochs", "time_budget", "prune", "lambda (lam)"},
                         "nerv": {"channels", "epochs", "time_budget", "prune", "lambda (lam)"}}.items():
        assert needed <= {p["name"] for p in entries[name]["parameters"]}
    out = tmp_path / "m.wsv"
    params = ["-p", "width=16", "-p", "depth=2", "-p", "epochs=2", "-p", "batch=1024", "-p", "device=cpu"]
    video = ["synthetic:testsrc2", "--frames", "2", "--downscale", "4"]
    enc = runner.invoke(app, ["encode", *video, "--codec", "full-mlp", *params, "-o", str(out), "--json"])
    assert enc.exit_code == 0, enc.output
    record = json.loads(enc.stdout)
    jsonschema.validate(record, SCHEMA)
    assert record["codec"] == "full-mlp" and record["bytes"] == payload_size(out.read_bytes()) and record["file_bytes"] == out.stat().st_size
    dec = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "d.y4m"), "--device", "cpu"])
    assert dec.exit_code == 0, dec.output
    ev = runner.invoke(app, ["eval", str(out), *video, "--device", "cpu", "--json"])  # where it was encoded:
    assert ev.exit_code == 0, ev.output  # the same frames, so the same PSNR
    assert json.loads(ev.stdout)["psnr_rgb"] == pytest.approx(record["psnr_rgb"])
    bad = runner.invoke(app, ["encode", *video, "--codec", "full-mlp", "-p", "widht=3", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "width" in bad.stderr

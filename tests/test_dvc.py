"""DVC: network shapes, a real bitstream that decodes to the encoder's reconstruction, checkpoints and refusals."""

import json
import pickle

import numpy as np
import pytest
import torch
from neural_helpers import CLIP, assert_refused, check_stream_settings, invoke, train_tiny

from baselines.dvc.convert import convert_state_dict
from baselines.dvc.model import PRESETS, DvcNet
from baselines.neuralvc.checkpoint import fingerprint, load_file, read_record
from baselines.neuralvc.codec import recon_digest
from weightstep import registry
from weightstep.coding.container import Container, payload_size
from weightstep.errors import InputError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return train_tiny("dvc", tmp_path_factory.mktemp("dvc"))


@pytest.fixture(scope="module")
def coded(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("dvc-out") / "clip.wst"
    result = invoke("encode", *CLIP, "--codec", "dvc", "-p", f"checkpoint={ckpt}", "-p", "gop=3", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_shapes_through_each_network():
    net = DvcNet(PRESETS["tiny"])
    frame, ref = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    assert net.flow(frame, ref).shape == (2, 2, 64, 128)
    m = net.motion_encoder(torch.zeros(2, 2, 64, 128))
    assert m.shape == (2, 8, 4, 8) and net.motion_decoder(m).shape == (2, 2, 64, 128)
    y = net.residual_encoder(frame)
    assert y.shape == (2, 8, 4, 8) and net.residual_decoder(y).shape == (2, 3, 64, 128)
    z = net.hyper_encoder(y)
    assert z.shape == (2, 8, 1, 2) and net.hyper_decoder(z).shape == y.shape and (net.hyper_decoder(z) > 0).all()
    out = net(frame, ref)
    assert out["recon"].shape == frame.shape and float(out["bpp"].detach()) > 0


def test_round_trip_is_bit_exact_and_the_file_costs_what_the_model_estimates(coded, ckpt):
    path, result = coded
    assert result["frames"] == 4 and (result["width"], result["height"]) == (88, 72)
    assert "88x72 to 128x128" in result["extra"]["padding"]
    assert result["extra"]["intra"].startswith("x265 intra")
    data = path.read_bytes()
    assert result["bytes"] == payload_size(data) and result["bpp"] == pytest.approx(8 * payload_size(data) / (4 * 88 * 72))
    decoded = registry.create("dvc", {"checkpoint": str(ckpt), "gop": 3}).decode(data)
    assert recon_digest(decoded.rgb()) == result["extra"]["reconstruction_md5"]
    estimated, real = result["extra"]["p_frame_estimated_bits"], 8 * result["extra"]["p_frame_bytes"]
    assert estimated > 0 and estimated <= real <= estimated + 64 + 0.02 * estimated


def test_the_stream_carries_only_what_its_decoder_reads(coded, ckpt):
    path, result = coded
    check_stream_settings("dvc", path, result, ckpt, {"gop": 3}, [128, 128])


def test_eval_of_the_file_reproduces_the_quality(coded):
    path, result = coded
    again = invoke("eval", path, *CLIP, "--json")
    assert again.exit_code == 0, again.output
    measured = json.loads(again.stdout)
    assert measured["psnr_rgb"] == pytest.approx(result["psnr_rgb"], abs=1e-9) and measured["bytes"] == result["bytes"]


def test_checkpoint_round_trip(ckpt):
    record = read_record(ckpt, "dvc")
    assert record["codec"] == "dvc" and record["steps"] == 3 and record["lambda"] == 256.0
    assert record["data"] == ["synthetic:testsrc2"] and record["architecture"] == PRESETS["tiny"].to_json()
    net = DvcNet(PRESETS["tiny"])
    net.load_state_dict(record["state_dict"])
    assert fingerprint(net.state_dict()) == fingerprint(record["state_dict"])


def test_resume_continues_the_step_count(ckpt, tmp_path):
    copy = tmp_path / "c.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    result = invoke("train", "dvc", "synthetic:testsrc2", "-o", copy, "--steps", 4, "--resume", "--size", "tiny",
                    "--crop", 64, "--batch", 1, "--max-frames", 4, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_record(copy, "dvc")["steps"] == 4
    assert_refused(invoke("train", "dvc", "synthetic:testsrc2", "-o", copy, "--steps", 5, "--resume", "--lambda", 512),
                   "trained at lambda 256")
    assert_refused(invoke("train", "dvc", "synthetic:testsrc2", "-o", copy, "--steps", 5), "--resume")


def public_dvc_layout():
    """Names and shapes of the public PyTorch DVC state dict (N=64, M=96, mv=128), written out by hand."""
    shapes = {}
    flow = [(32, 8), (64, 32), (32, 64), (16, 32), (2, 16)]
    for level in range(4):
        for j, (o, i) in enumerate(flow, 1):
            shapes[f"opticFlow.moduleBasic.{level}.conv{j}.weight"] = (o, i, 7, 7)
            shapes[f"opticFlow.moduleBasic.{level}.conv{j}.bias"] = (o,)
    for j in range(1, 9):
        shapes[f"mvEncoder.conv{j}.weight"] = (128, 2 if j == 1 else 128, 3, 3)
        shapes[f"mvEncoder.conv{j}.bias"] = (128,)
        shapes[f"mvDecoder.deconv{j}.weight"] = (2 if j == 8 else 128, 128, 3, 3)  # odd: ConvTranspose (in, out)
        shapes[f"mvDecoder.deconv{j}.bias"] = (2 if j == 8 else 128,)
    shapes["warpnet.feature_ext.weight"], shapes["warpnet.feature_ext.bias"] = (64, 6, 3, 3), (64,)
    for k in range(6):
        for c in (1, 2):
            shapes[f"warpnet.conv{k}.conv{c}.weight"], shapes[f"warpnet.conv{k}.conv{c}.bias"] = (64, 64, 3, 3), (64,)
    shapes["warpnet.conv6.weight"], shapes["warpnet.conv6.bias"] = (3, 64, 3, 3), (3,)
    for j in range(1, 5):
        shapes[f"resEncoder.conv{j}.weight"] = (96 if j == 4 else 64, 3 if j == 1 else 64, 5, 5)
        shapes[f"resEncoder.conv{j}.bias"] = (96 if j == 4 else 64,)
        shapes[f"resDecoder.deconv{j}.weight"] = (96 if j == 1 else 64, 3 if j == 4 else 64, 5, 5)
        shapes[f"resDecoder.deconv{j}.bias"] = (3 if j == 4 else 64,)
    for j in range(1, 4):
        for prefix in ("resEncoder.gdn", "resDecoder.igdn"):
            shapes[f"{prefix}{j}.beta"], shapes[f"{prefix}{j}.gamma"] = (64,), (64, 64)
    shapes["respriorEncoder.conv1.weight"], shapes["respriorEncoder.conv1.bias"] = (64, 96, 3, 3), (64,)
    for j in (2, 3):
        shapes[f"respriorEncoder.conv{j}.weight"], shapes[f"respriorEncoder.conv{j}.bias"] = (64, 64, 5, 5), (64,)
    shapes["respriorDecoder.deconv1.weight"], shapes["respriorDecoder.deconv1.bias"] = (64, 64, 5, 5), (64,)
    shapes["respriorDecoder.deconv2.weight"], shapes["respriorDecoder.deconv2.bias"] = (64, 64, 5, 5), (64,)
    shapes["respriorDecoder.deconv3.weight"], shapes["respriorDecoder.deconv3.bias"] = (64, 96, 3, 3), (96,)
    for name, c in (("bitEstimator_z", 64), ("bitEstimator_mv", 128)):
        for j in range(1, 5):
            for p in ("h", "b") + (("a",) if j < 4 else ()):
                shapes[f"{name}.f{j}.{p}"] = (1, c, 1, 1)
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.01 for k, s in shapes.items()}


def test_converter_maps_the_public_layout_onto_our_modules():
    public = public_dvc_layout()
    ours = convert_state_dict(public, "synthetic")
    net = DvcNet(PRESETS["paper"])
    net.load_state_dict(ours)
    assert torch.equal(net.flow.levels[2].layers[3].weight, public["opticFlow.moduleBasic.2.conv4.weight"])
    assert torch.equal(net.compensation.blocks[4].conv_b.bias, public["warpnet.conv4.conv2.bias"])
    assert torch.equal(net.mv_prior.as_[2], public["bitEstimator_mv.f3.a"])
    assert torch.equal(net.residual_decoder.gdns[0].gamma, public["resDecoder.igdn1.gamma"])
    wrapped = {f"module.{k}": v for k, v in public.items()}  # DataParallel's prefix
    assert convert_state_dict(wrapped, "synthetic").keys() == ours.keys()


def test_converter_cli_writes_a_checkpoint_and_refuses_a_mismatch(tmp_path):
    public = public_dvc_layout()
    torch.save(public, tmp_path / "iter1.model")
    result = invoke("convert", "dvc", tmp_path / "iter1.model", "-o", tmp_path / "ok.ckpt", "--lambda", 2048)
    assert result.exit_code == 0, result.output
    record = read_record(tmp_path / "ok.ckpt", "dvc")
    assert record["lambda"] == 2048 and "PyTorch DVC" in record["source"]
    bad = dict(public)
    bad["warpnet.conv3.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(bad, tmp_path / "bad.model")
    assert_refused(invoke("convert", "dvc", tmp_path / "bad.model", "-o", tmp_path / "x.ckpt"),
                   "'warpnet.conv3.conv1.weight' has shape 64x64x5x5, expected 64x64x3x3")
    missing = {k: v for k, v in public.items() if k != "bitEstimator_z.f2.b"}
    torch.save(missing, tmp_path / "missing.model")
    assert_refused(invoke("convert", "dvc", tmp_path / "missing.model", "-o", tmp_path / "x.ckpt"),
                   "'bitEstimator_z.f2.b' (shape 1x64x1x1) is missing")
    assert not (tmp_path / "x.ckpt").exists()


def test_a_checkpoint_whose_weights_do_not_fit_its_architecture_is_refused(ckpt, tmp_path):
    record = torch.load(ckpt, weights_only=True)
    record["state_dict"]["motion_encoder.layers.0.weight"] = torch.zeros(8, 2, 5, 5)
    torch.save(record, tmp_path / "bad.ckpt")
    assert_refused(invoke("encode", *CLIP, "--codec", "dvc", "-p", f"checkpoint={tmp_path / 'bad.ckpt'}", "-o",
                          tmp_path / "o.wst"), "'motion_encoder.layers.0.weight' has shape 8x2x5x5")
    assert not (tmp_path / "o.wst").exists()


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_checkpoint_holding_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"format": "weightstep-checkpoint", "payload": Payload()}, handle)
    with pytest.raises(InputError, match="pickled objects"):
        load_file(path)
    torch.save({"x": Payload()}, tmp_path / "evil2.ckpt")
    assert_refused(invoke("encode", *CLIP, "--codec", "dvc", "-p", f"checkpoint={tmp_path / 'evil2.ckpt'}", "-o",
                          tmp_path / "o.wst"), "pickled")


def test_without_a_checkpoint_encode_refuses_and_says_how_to_get_one(tmp_path):
    assert_refused(invoke("encode", *CLIP, "--codec", "dvc", "-o", tmp_path / "o.wst"), "weightstep train dvc")
    assert not (tmp_path / "o.wst").exists()


def test_fuzzed_bitstreams_are_refused(coded, tmp_path):
    path, _ = coded
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    cases = [data[:len(data) // 2], data[:-3], data + b"\0"]
    for _ in range(6):
        flipped = bytearray(data)
        flipped[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        cases.append(bytes(flipped))
    for i, case in enumerate(cases):
        (tmp_path / f"{i}.wst").write_bytes(case)
        assert_refused(invoke("decode", tmp_path / f"{i}.wst", "-o", tmp_path / f"{i}.y4m"), "")
        assert not (tmp_path / f"{i}.y4m").exists()
    # corrupt inside a valid container (CRCs recomputed): the entropy decoder or a bound check must refuse
    container = Container.from_bytes(data)
    tag, payload = container.sections[0]
    for cut in (3, 10, len(payload) - 5):
        container.sections[0] = (tag, payload[:cut])
        (tmp_path / "c.wst").write_bytes(container.to_bytes())
        assert_refused(invoke("decode", tmp_path / "c.wst", "-o", tmp_path / "c.y4m"), "")
    container.sections[0] = (tag, payload)
    container.header["width"] = 100000
    with pytest.raises(ValueError):
        container.to_bytes()


def test_protocol_plan_lists_dvc_as_skipped_with_the_reason(tmp_path):
    from weightstep.experiments import expand, parse_protocol

    text = """
name = "t"
[[datasets]]
name = "d"
videos = ["synthetic:testsrc2"]
frames = 2
[[techniques]]
label = "DVC"
codec = "dvc"
rate_points = [{ lmbda = 256 }]
"""
    plan = expand(parse_protocol(text, "t.toml"))
    reasons = [reason for _, status, reason in plan.reasons()]
    assert reasons and "weightstep train dvc" in reasons[0]

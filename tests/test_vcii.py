"""VCII: network shapes, hierarchical B-frame bitstreams that decode exactly, checkpoints, converter, refusals."""

import json

import numpy as np
import pytest
import torch
from neural_helpers import CLIP, assert_refused, check_stream_settings, invoke, train_tiny

import baselines.vcii.convert as vconvert
from baselines.neuralvc.checkpoint import read_record
from baselines.neuralvc.codec import recon_digest
from baselines.vcii.codec import b_order, key_frames
from baselines.vcii.model import PRESETS, LevelArch, VciiArch, VciiNet
from baselines.vcii.motion import block_motion
from baselines.vcii.progressive import contexts, progressive
from weightstep import registry
from weightstep.coding.container import Container, payload_size


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return train_tiny("vcii", tmp_path_factory.mktemp("vcii"), steps=2)


@pytest.fixture(scope="module")
def coded(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("vcii-out") / "clip.wst"
    result = invoke("encode", *CLIP, "--codec", "vcii", "-p", f"checkpoint={ckpt}", "-p", "gop=3",
                    "-p", "iterations=2", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_shapes_through_each_network():
    net = VciiNet(PRESETS["tiny"]).levels[1].eval()  # encoder fuse 2, decoder fuse 3
    left, frame, right = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    features = net.context(left)
    assert [f.shape[-2:] for f in features] == [(8, 12), (16, 24), (32, 48)]
    ctx = contexts(net, left, right, 0.5, 8, 8)
    recons, codes, losses = progressive(net, left, right, ctx, 3, frame=frame)
    assert len(recons) == 3 and recons[-1].shape == frame.shape and len(losses) == 3
    assert codes[0].shape == (2, 16, 4, 6) and set(codes[0].unique().tolist()) <= {-1.0, 1.0}


def test_block_motion_finds_a_shift():
    gen = torch.Generator().manual_seed(0)
    right = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 68, 68, generator=gen), 3, 1)[..., :64, :64]
    left = torch.roll(right, shifts=(2, -4), dims=(2, 3))  # left(p + m) = right(p) with m = (x -4? ) see below
    m = block_motion(left, right, 8, 8)
    # left(y, x) = right(y - 2, x + 4)  =>  left(p + (dx=-4, dy=+2)) = right(p)
    assert m.shape == (1, 2, 64, 64)
    assert (m[0, 0, 16:48, 16:48] == -4).all() and (m[0, 1, 16:48, 16:48] == 2).all()


def test_hierarchy_is_the_papers():
    assert key_frames(25, 12) == [0, 12, 24] and key_frames(20, 12) == [0, 12, 19]
    order = b_order(0, 12)
    assert [t for t, *_ in order] == [6, 3, 1, 2, 4, 5, 9, 7, 8, 10, 11]
    assert order[0] == (6, 0, 12, 0) and order[1] == (3, 0, 6, 1) and order[2] == (1, 0, 3, 2)


def test_round_trip_is_bit_exact(coded, ckpt):
    path, result = coded
    assert result["frames"] == 4 and "88x72 to 96x80" in result["extra"]["padding"]
    data = path.read_bytes()
    assert result["bytes"] == payload_size(data) and result["file_bytes"] == len(data)
    decoded = registry.create("vcii", {"checkpoint": str(ckpt), "gop": 3, "iterations": 2}).decode(data)
    assert recon_digest(decoded.rgb()) == result["extra"]["reconstruction_md5"]
    estimated, real = result["extra"]["b_frame_estimated_bits"], 8 * result["extra"]["b_frame_bytes"]
    assert 0 < estimated <= real <= estimated + 64 * 2 + 0.02 * estimated  # one ANS flush per group


def test_the_stream_carries_only_what_its_decoder_reads(coded, ckpt):
    path, result = coded
    check_stream_settings("vcii", path, result, ckpt, {"gop": 3, "iterations": 2}, [96, 80])


def test_eval_of_the_file_reproduces_the_quality(coded):
    path, result = coded
    again = invoke("eval", path, *CLIP, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["psnr_rgb"] == pytest.approx(result["psnr_rgb"], abs=1e-9)


def test_checkpoint_round_trip(ckpt):
    record = read_record(ckpt, "vcii")
    assert record["steps"] == 2 and record["lambda"] is None and record["architecture"] == PRESETS["tiny"].to_json()
    assert VciiArch.from_json(record["architecture"]) == PRESETS["tiny"]
    VciiNet(PRESETS["tiny"]).load_state_dict(record["state_dict"])


def public_vcii_level(bits, encoder_fuse, decoder_fuse, d=1, s=2, meta=False):
    """The release's four state dicts of one level, names and shapes written out from its model code."""
    c1, c2, c3 = 256 // s, 128 // s, 64 // s
    enc = {"conv.weight": (64 // d, 9, 3, 3),
           "rnn1.conv_ih.weight": (1024 // d, 64 // d + 2 * c3, 3, 3), "rnn1.conv_hh.weight": (1024 // d, 256 // d, 1, 1),
           "rnn2.conv_ih.weight": (2048 // d, 256 // d + (2 * c2 if encoder_fuse >= 2 else 0), 3, 3),
           "rnn2.conv_hh.weight": (2048 // d, 512 // d, 1, 1),
           "rnn3.conv_ih.weight": (2048 // d, 512 // d + (2 * c1 if encoder_fuse >= 3 else 0), 3, 3),
           "rnn3.conv_hh.weight": (2048 // d, 512 // d, 1, 1)}
    binz = {"conv.weight": (bits, 512 // d, 1, 1)}
    dec = {"conv1.weight": (512 // d, bits, 1, 1),
           "rnn1.conv_ih.weight": (2048 // d, 512 // d, 3, 3), "rnn1.conv_hh.weight": (2048 // d, 512 // d, 1, 1),
           "rnn2.conv_ih.weight": (2048 // d, 128 // d + (2 * c1 if decoder_fuse >= 3 else 0), 3, 3),
           "rnn2.conv_hh.weight": (2048 // d, 512 // d, 1, 1),
           "rnn3.conv_ih.weight": (1024 // d, 128 // d + (2 * c2 if decoder_fuse >= 2 else 0), 3, 3),
           "rnn3.conv_hh.weight": (1024 // d, 256 // d, 3, 3),
           "rnn4.conv_ih.weight": (512 // d, 64 // d + 2 * c3, 3, 3), "rnn4.conv_hh.weight": (512 // d, 128 // d, 3, 3),
           "conv2.weight": (3, 32 // d, 1, 1)}
    unet = {}
    blocks = {"inc.conv.conv": (3, 64), "down1.mpconv.1.conv": (64, 128), "down2.mpconv.1.conv": (128, 256),
              "down3.mpconv.1.conv": (256, 512), "down4.mpconv.1.conv": (512, 512), "up1.conv.conv": (1024, 256),
              "up2.conv.conv": (512, 128), "up3.conv.conv": (256, 64), "up4.conv.conv": (128, 64)}
    for name, (a, b) in blocks.items():
        a = a if name.startswith("inc") else a // s
        b //= s
        for conv, cin in (("0", a), ("3", b)):
            unet[f"{name}.{conv}.weight"], unet[f"{name}.{conv}.bias"] = (b, cin, 3, 3), (b,)
        for bn in ("1", "4"):
            for p in ("weight", "bias", "running_mean", "running_var"):
                unet[f"{name}.{bn}.{p}"] = (b,)
            unet[f"{name}.{bn}.num_batches_tracked"] = ()
    make = (lambda shape: torch.empty(shape, device="meta")) if meta else (lambda shape: torch.randn(shape) * 0.01)
    return [{k: (torch.tensor(0) if v == () else make(v)) for k, v in part.items()} for part in (enc, binz, dec, unet)]


def test_public_layout_at_paper_size_matches_our_network_shapes():
    with torch.device("meta"):
        ours = VciiNet(PRESETS["paper"]).state_dict()
    for level, (bits, ef, df) in enumerate([(16, 1, 1), (16, 2, 3), (8, 1, 1)]):
        for part, state in zip(vconvert.PARTS, public_vcii_level(bits, ef, df, meta=True), strict=True):
            for key, tensor in state.items():
                mapped = f"levels.{level}.{vconvert._rename(part, key)}"
                assert mapped in ours and tuple(ours[mapped].shape) == tuple(tensor.shape), (part, key)
    assert len(ours) == 3 * sum(len(p) for p in public_vcii_level(16, 1, 1, meta=True))


def _save_release(folder, d, s, bad=None):
    paths = []
    for level, (bits, ef, df) in enumerate([(16, 1, 1), (16, 2, 3), (8, 1, 1)]):
        for part, state in zip(vconvert.PARTS, public_vcii_level(bits, ef, df, d=d, s=s), strict=True):
            if bad and bad[0] == (level, part):
                bad[1](state)
            torch.save(state, folder / f"lvl{level}_{part}_00010000.pth")
        paths.append(folder / f"lvl{level}_encoder_00010000.pth")
    return paths


def test_converter_maps_the_release_layout_and_refuses_a_mismatch(tmp_path, monkeypatch):
    small = VciiArch(levels=(LevelArch(16, 1, 1, 16, 16), LevelArch(16, 2, 3, 16, 16), LevelArch(8, 1, 1, 16, 16)),
                     iterations=2)
    monkeypatch.setattr(vconvert, "PRESETS", {"paper": small})  # same formulas, 1/16 of the widths: fast
    paths = _save_release(tmp_path, 16, 16)
    result = invoke("convert", "vcii", *paths, "-o", tmp_path / "ok.ckpt")
    assert result.exit_code == 0, result.output
    record = read_record(tmp_path / "ok.ckpt", "vcii")
    net = VciiNet(small)
    net.load_state_dict(record["state_dict"])
    public = torch.load(tmp_path / "lvl1_decoder_00010000.pth", weights_only=True)
    assert torch.equal(net.levels[1].decoder.cells[2].hidden_conv.weight, public["rnn3.conv_hh.weight"])
    unet = torch.load(tmp_path / "lvl2_unet_00010000.pth", weights_only=True)
    assert torch.equal(net.levels[2].context.downs[3][4].running_var, unet["down4.mpconv.1.conv.4.running_var"])

    def widen(state):
        state["rnn2.conv_ih.weight"] = torch.zeros(128, 24, 3, 3)

    bad = tmp_path / "bad"
    bad.mkdir()
    paths = _save_release(bad, 16, 16, bad=((1, "decoder"), widen))
    assert_refused(invoke("convert", "vcii", *paths, "-o", tmp_path / "x.ckpt"),
                   "lvl1_decoder_00010000.pth:rnn2.conv_ih.weight' has shape 128x24x3x3")
    assert not (tmp_path / "x.ckpt").exists()
    assert_refused(invoke("convert", "vcii", paths[0], "-o", tmp_path / "x.ckpt"), "three encoder files")


def test_without_a_checkpoint_encode_refuses_and_says_how_to_get_one(tmp_path):
    assert_refused(invoke("encode", *CLIP, "--codec", "vcii", "-o", tmp_path / "o.wst"), "weightstep train vcii")


def test_a_dvc_checkpoint_is_refused_for_vcii(tmp_path):
    dvc = train_tiny("dvc", tmp_path, steps=1)
    assert_refused(invoke("encode", *CLIP, "--codec", "vcii", "-p", f"checkpoint={dvc}", "-o", tmp_path / "o.wst"),
                   "not 'vcii'")


def test_fuzzed_bitstreams_are_refused(coded, tmp_path):
    path, _ = coded
    data = path.read_bytes()
    rng = np.random.default_rng(1)
    cases = [data[:len(data) // 3], data[:-1]]
    for _ in range(5):
        flipped = bytearray(data)
        flipped[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        cases.append(bytes(flipped))
    container = Container.from_bytes(data)
    tag, payload = container.sections[1]
    container.sections[1] = (tag, payload[:-4])
    cases.append(container.to_bytes())
    container.sections[1] = (tag, payload)
    container.sections.pop()
    cases.append(container.to_bytes())
    for i, case in enumerate(cases):
        (tmp_path / f"{i}.wst").write_bytes(case)
        assert_refused(invoke("decode", tmp_path / f"{i}.wst", "-o", tmp_path / f"{i}.y4m"), "")
        assert not (tmp_path / f"{i}.y4m").exists()


def test_training_reads_the_vimeo_septuplet_layout(tmp_path):
    from weightstep.video.options import ReadOptions
    from weightstep.video.readers import open_video
    from weightstep.video.writers import write_video

    clip = open_video("synthetic:testsrc2", ReadOptions(frames=7, downscale=2))
    for seq in ("00001/0001", "00001/0002"):
        folder = tmp_path / "vimeo" / "sequences" / seq
        folder.mkdir(parents=True)
        write_video(clip, folder)
        for i, png in enumerate(sorted(folder.glob("*.png")), 1):
            png.rename(folder / f"im{i}.png")
    (tmp_path / "vimeo" / "sep_trainlist.txt").write_text("00001/0001\n00001/0002\n")
    for kind in ("vcii", "dvc"):
        out = tmp_path / f"{kind}.ckpt"
        result = invoke("train", kind, tmp_path / "vimeo", "-o", out, "--steps", 1, "--size", "tiny", "--crop", 64,
                        "--batch", 1, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert read_record(out, kind)["data"] == [str(tmp_path / "vimeo")]
    (tmp_path / "empty").mkdir()
    assert_refused(invoke("train", "dvc", tmp_path / "empty", "-o", tmp_path / "x.ckpt", "--steps", 1), "no videos")


def test_resume_continues_a_vcii_checkpoint(ckpt, tmp_path):
    copy = tmp_path / "c.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    result = invoke("train", "vcii", "synthetic:testsrc2", "-o", copy, "--steps", 3, "--resume", "--crop", 64,
                    "--batch", 1, "--max-frames", 13, "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = read_record(copy, "vcii")
    assert record["steps"] == 3 and record["lambda"] is None and record["architecture"] == PRESETS["tiny"].to_json()

"""The weight-step codec over several frames: every inr x update x schedule, closed loop, framing."""

import itertools

import numpy as np
import pytest
from streams import container_layout

from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.weightstep_codec import ANCHOR, STEP
from weightstep.coding.container import Container
from weightstep.errors import BitstreamError
from weightstep.metrics import psnr_rgb
from weightstep.video import Video

TINY = {"siren": {"width": "16", "depth": "2", "anchor_lr": "5e-3"},
        "fourier": {"width": "16", "depth": "2", "fourier_features": "16", "fourier_sigma": "3"},
        "dip": {"dip_channels": "4", "dip_levels": "2"},
        "grid": {"grid_levels": "3", "grid_hidden": "4", "grid_context_hidden": "4", "lambda": "1e-5"}}
FAST = {"anchor_steps": "30", "step_steps": "8", "device": "cpu", "update_lr": "1e-3", "gate_lr": "0.1"}


def drifting_clip(frames=3, size=16):
    """A soft disc drifting right over gradients: consecutive frames differ a little."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for t in range(frames):
        disc = 1.0 / (1.0 + np.exp(((xx - 0.4 - 0.05 * t) ** 2 + (yy - 0.5) ** 2 - 0.05) * 80))
        out.append(np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * disc, 0.8 - 0.6 * xx * yy]))
    return Video(identity="test:drift", fps=25.0, rgb_frames=np.asarray(out, dtype=np.float32))


@pytest.fixture(scope="module")
def clip():
    return drifting_clip()


@pytest.mark.parametrize("inr,update,schedule", list(itertools.product(
    ["siren", "fourier", "dip", "grid"], ["l0", "dct", "dense"], ["two-stage", "single-stage"])))
def test_every_combination_round_trips_exactly(inr, update, schedule, clip, tmp_path):
    codec = registry.create("weightstep", {"inr": inr, "update": update, "schedule": schedule,
                                           "log_alpha_init": "0", **FAST, **TINY[inr]})
    result = harness.run(codec, clip, tmp_path / "c.wsv")
    data = (tmp_path / "c.wsv").read_bytes()
    decoded = codec.decode(data)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    assert result.frames == 3 and len(result.extra["steps"]) == 2
    # each frame's bits against the file itself: frame 0 carries the preamble (fixed fields and
    # header JSON) and its anchor section; every later frame exactly its own section
    layout = container_layout(data)
    assert layout.end == len(data) and layout.stream == result.bytes
    assert [tag for tag, _ in layout.sections] == [ANCHOR, STEP, STEP]
    expected = [8 * (layout.preamble + layout.section_bytes(0))] + [8 * layout.section_bytes(i) for i in (1, 2)]
    assert [f["bits"] for f in result.per_frame] == expected
    # the anchor is never the cheap frame (a grid's single-stage l0 step, gates open from the start on this
    # 3-frame clip, re-codes latents and may cost about what the anchor does)
    assert result.per_frame[0]["bits"] > min(f["bits"] for f in result.per_frame[1:])


def test_steps_improve_on_keeping_the_anchor(clip):
    base = {"inr": "siren", **TINY["siren"], **FAST, "step_steps": "60", "lambda": "1e-9", "log_alpha_init": "0"}
    codec = registry.create("weightstep", base)
    stepped = harness.run(codec, clip)
    frozen = float(psnr_rgb(clip.rgb()[2:3], codec.reconstruction[:1].numpy())[0])  # the decoded anchor kept
    assert stepped.per_frame[2]["psnr_rgb"] > frozen + 0.5


@pytest.mark.parametrize("update", ["l0", "dct"])
def test_huge_lambda_changes_nothing_and_costs_only_framing(update, clip):
    codec = registry.create("weightstep", {"inr": "siren", "update": update, **TINY["siren"], **FAST,
                                           "lambda": "1e3", "log_alpha_init": "0", "step_steps": "20",
                                           "gate_lr": "0.3"})  # closes open gates within 20 steps
    result = harness.run(codec, clip)
    assert result.extra["changed_weights"][1:] == [0, 0]
    assert [f["bits"] for f in result.per_frame[1:]] == [8 * 3] * 2  # tag, length 1 and the byte 0
    assert [length for _, length in container_layout(codec.encode(clip).data).sections[1:]] == [1, 1]
    frames = codec.reconstruction.numpy()
    assert np.array_equal(frames[0], frames[1]) and np.array_equal(frames[1], frames[2])


def test_gop_restarts_with_fresh_anchors():
    clip = drifting_clip(frames=5)
    codec = registry.create("weightstep", {"inr": "siren", **TINY["siren"], **FAST, "gop": "2"})
    data = codec.encode(clip).data
    tags = [tag for tag, _ in Container.from_bytes(data).sections]
    assert tags == [ANCHOR, STEP, ANCHOR, STEP, ANCHOR]
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())


def test_a_cut_inside_a_step_section_is_refused(clip):
    codec = registry.create("weightstep", {"inr": "siren", **TINY["siren"], **FAST, "lambda": "1e-9",
                                           "log_alpha_init": "0"})
    data = codec.encode(clip).data
    sections = Container.from_bytes(data).sections
    assert sections[-1][0] == STEP and len(sections[-1][1]) > 2
    for cut in (len(data) - 1, len(data) - len(sections[-1][1]) // 2, len(data) - len(sections[-1][1])):
        with pytest.raises(BitstreamError):
            codec.decode(data[:cut])


def test_any_instance_decodes_a_file_by_the_files_own_config(clip):
    # the file's header carries the whole config; a codec set up otherwise (defaults here: a
    # 96-wide SIREN, l0, one GOP) must decode it as written, as the full-sequence codecs do
    codec = registry.create("weightstep", {"inr": "fourier", "update": "dct", "gop": "2", **TINY["fourier"], **FAST})
    data = codec.encode(clip).data
    stranger = registry.create("weightstep", {"device": "cpu"})
    assert np.array_equal(stranger.decode(data).rgb(), codec.reconstruction.numpy())
    # a header whose config the codec refuses is a damaged stream, not a crash
    container = Container.from_bytes(data)
    bad = Container(codec=container.codec, header={**container.header, "config": {**container.header["config"],
                                                                                  "width": -5}},
                    sections=container.sections).to_bytes()
    with pytest.raises(BitstreamError, match="invalid config"):
        stranger.decode(bad)

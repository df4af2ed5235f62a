"""The rate is the elementary stream: it carries what a decoder needs and nothing of how the encoder searched.

A stream is decoded here with its file's metadata (the full settings) stripped, by a codec made
with default settings, after an encode whose encoder-only settings were all moved off their
defaults: if the decoder read any of them, the pictures would differ.
"""

import dataclasses
import json

import numpy as np
import pytest
from test_weight_steps import drifting_clip

from baselines.dvc.codec import DvcCodec
from baselines.full_cnn import FullCnnCodec
from baselines.full_mlp import FullMlpCodec
from baselines.nerv import NervCodec
from baselines.vcii.codec import VciiCodec
from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.streamconfig import full_config
from weightstep.codecs.weightstep_codec import ENCODER_ONLY, STREAM_DEFAULTS, WeightStepCodec
from weightstep.coding.container import Container, payload_size
from weightstep.errors import BitstreamError

CODECS = [WeightStepCodec, FullMlpCodec, FullCnnCodec, NervCodec]


def _tables(cls):
    return STREAM_DEFAULTS if cls is WeightStepCodec else cls.STREAM_DEFAULTS


@pytest.mark.parametrize("cls", [*CODECS, DvcCodec, VciiCodec], ids=lambda c: c.name)
def test_the_newest_table_of_defaults_is_the_config_s(cls):
    tables = _tables(cls)
    current = json.loads(json.dumps(dataclasses.asdict(cls.Config())))
    assert tables[max(tables)] == current, (
        f"{cls.name}: a default changed; add table {max(tables) + 1} with the new defaults to its STREAM_DEFAULTS "
        "(never edit a table: files written against it must still decode)")


def _without_metadata(data: bytes) -> bytes:
    container = Container.from_bytes(data)
    return Container(container.codec, container.header, container.sections).to_bytes()


ENCODER_SIDE = {"lambda": "2e-2", "anchor_steps": "12", "anchor_lr": "4e-3", "step_steps": "6",
                "step_lambda_scale": "0.8", "anchor_lambda_scale": "0.7", "warp_lr": "0.1", "warp_init": "previous", "step_pixels": "0.5",
                "update_lr": "2e-3", "gate_lr": "0.2", "latent_lr": "0.1", "log_alpha_init": "1",
                "step_patience": "4", "frame_batch": "2", "step_sweeps": "1", "qat_steps": "3", "time_budget": "600",
                "step_time_budget": "60", "loss": "l1ssim", "anchor_starts": "2", "anchor_grad_clip": "0.5",
                "step_guard": "1.5"}


@pytest.mark.parametrize("params", [
    {"inr": "grid", "grid_levels": "3", "grid_hidden": "4", "grid_context_hidden": "4", "update": "warp+lowrank",
     "warp_grid": "2"},
    {"inr": "siren", "width": "16", "depth": "2", "update": "l0", "gop": "2"},
], ids=["grid-warp+lowrank", "siren-l0-gop2"])
def test_a_weightstep_stream_decodes_without_its_metadata(params):
    assert set(ENCODER_SIDE) - {"lambda"} <= ENCODER_ONLY and "lam" in ENCODER_ONLY
    clip = drifting_clip(frames=3)
    codec = registry.create("weightstep", {**params, **ENCODER_SIDE, "device": "cpu"})
    data = codec.encode(clip).data
    bare = _without_metadata(data)
    assert len(bare) < len(data) and payload_size(bare) == payload_size(data)
    header = Container.from_bytes(bare).header
    assert not set(header["config"]) & ENCODER_ONLY  # none of the search settings is paid for
    decoded = WeightStepCodec().decode(bare)  # a codec at the defaults: the stream alone decides
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())


@pytest.mark.parametrize("name,params", [
    ("full-mlp", {"width": "8", "depth": "2", "epochs": "3", "batch": "128", "lr": "2e-3", "lambda": "3e-3",
                  "finetune_epochs": "1", "search_frames": "2"}),
    ("nerv", {"channels": "8", "min_channels": "4", "stem_hidden": "8", "epochs": "3", "finetune_epochs": "1",
              "lr": "3e-3", "lambda": "3e-3", "loss": "mse", "search_frames": "2"}),
])
def test_a_full_sequence_stream_decodes_without_its_metadata(name, params):
    clip = drifting_clip(frames=2)
    codec = registry.create(name, {**params, "device": "cpu"})
    data = codec.encode(clip).data
    bare = _without_metadata(data)
    assert len(bare) < len(data)
    decoded = type(codec)().decode(bare)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    assert harness.decode_bytes(bare, "cpu")[1].frames == 2


def test_a_stream_at_the_defaults_carries_no_settings():
    codec = WeightStepCodec()
    clip = drifting_clip(frames=1)
    fast = registry.create("weightstep", {"anchor_steps": "5", "device": "cpu"})  # encoder-only: not carried
    header = Container.from_bytes(fast.encode(clip).data).header
    assert header["config"] == {} and header["defaults"] == max(STREAM_DEFAULTS)
    assert dataclasses.replace(codec.config, anchor_steps=5, device="cpu") == fast.config


def test_unknown_tables_and_version_1_headers():
    with pytest.raises(BitstreamError, match="table of defaults"):
        full_config({"config": {}, "defaults": 99}, STREAM_DEFAULTS, "weightstep")
    with pytest.raises(BitstreamError, match="table of defaults"):
        full_config({"config": {}, "defaults": True}, STREAM_DEFAULTS, "weightstep")
    with pytest.raises(BitstreamError, match="not an object"):
        full_config({"config": [1]}, STREAM_DEFAULTS, "weightstep")
    assert full_config({"config": {"inr": "dip"}}, STREAM_DEFAULTS, "w") == {"inr": "dip"}  # version 1: all there
    assert full_config({"config": {"inr": "dip"}, "defaults": 1}, STREAM_DEFAULTS, "w")["warp_grid"] == 8

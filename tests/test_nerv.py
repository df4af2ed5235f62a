"""NeRV: the up-scaling plan for any frame size, the network, and the codec's closed loop."""

import math

import numpy as np
import pytest
import torch
from clips import moving_clip
from streams import container_layout

from baselines.nerv_model import FACTORS, NervNet, channel_plan, plan_upscale, positional_encoding
from baselines.prune import decode_network, prunable_names
from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.netcoding import parameter_shapes
from weightstep.coding.container import Container
from weightstep.errors import BitstreamError

SIZES = [(176, 144), (640, 272), (1920, 1080), (32, 32), (36, 20), (7, 3), (1, 1), (33, 17), (1280, 720)]

QUICK = {"channels": "16", "min_channels": "8", "stem_hidden": "16", "epochs": "60", "lr": "1e-2",
         "finetune_epochs": "5", "prune": "0.4", "device": "cpu"}


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("blocks", [0, 1, 3, 5])
def test_upscale_plan_covers_any_frame_size(width, height, blocks):
    plan = plan_upscale(height, width, blocks=blocks)
    assert all(f in FACTORS for f in plan.factors) and len(plan.factors) >= 1
    assert blocks == 0 or len(plan.factors) == blocks
    assert list(plan.factors) == sorted(plan.factors, reverse=True)
    scale = math.prod(plan.factors)  # one factor sequence for both axes
    assert plan.stem_height == -(-height // scale) and plan.stem_width == -(-width // scale)
    assert plan.out_height >= height and plan.out_width >= width
    assert plan.cropped == (plan.out_height - height, plan.out_width - width)
    assert plan.cropped[0] < scale and plan.cropped[1] < scale  # never a whole stem cell too many
    if blocks == 0:
        assert set(plan.factors) <= {2, 3, 5}  # prime factors of the scale, as NeRV's 5-3-2-2-2


def test_upscale_plans_of_known_sizes():
    nerv_1080p = plan_upscale(1080, 1920, stem_target=9)
    assert nerv_1080p.factors == (5, 3, 2, 2, 2) and (nerv_1080p.stem_height, nerv_1080p.stem_width) == (9, 16)
    assert nerv_1080p.cropped == (0, 0)
    carphone = plan_upscale(144, 176)
    assert carphone.factors == (3, 3, 2, 2) and carphone.cropped == (0, 4)
    bikes = plan_upscale(272, 640)
    assert bikes.out_height >= 272 and bikes.waste < 0.1


@pytest.mark.parametrize("width,height", [(36, 20), (33, 17), (7, 3)])
def test_network_renders_odd_sizes(width, height):
    plan = plan_upscale(height, width)
    net = NervNet(5, plan, channels=8, reduction=2, min_channels=4, stem_hidden=8, pe_base=1.25, pe_levels=80,
                  seed=0)
    with torch.no_grad():
        out = net(torch.tensor([0, 4]))
    assert out.shape == (2, 3, height, width)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out[0], out[1])  # different frame indices, different frames


def test_positional_encoding_is_nervs():
    t = torch.tensor([0.0, 0.25, 1.0])
    pe = positional_encoding(t, 1.25, 80)
    assert pe.shape == (3, 160) and pe.dtype == torch.float32
    assert torch.equal(pe[0, 0::2], torch.zeros(80)) and torch.equal(pe[0, 1::2], torch.ones(80))
    for k in (0, 7, 79):
        angle = 1.25**k * math.pi * 0.25
        assert float(pe[1, 2 * k]) == pytest.approx(math.sin(angle), abs=1e-6)
        assert float(pe[1, 2 * k + 1]) == pytest.approx(math.cos(angle), abs=1e-6)


def test_channel_plan_narrows_to_a_floor():
    assert channel_plan(64, 2, 12, 4) == [64, 32, 16, 12, 12]


def test_defaults_follow_the_paper():
    cfg = registry.create("nerv").config
    assert (cfg.pe_base, cfg.pe_levels, cfg.loss, cfg.ssim_alpha) == (1.25, 80, "l1ssim", 0.7)
    assert cfg.prune > 0 and cfg.finetune_epochs > 0


@pytest.fixture(scope="module")
def clip():
    return moving_clip()


@pytest.fixture(scope="module")
def coded(clip, tmp_path_factory):
    codec = registry.create("nerv", QUICK)
    path = tmp_path_factory.mktemp("nerv") / "clip.wsv"
    return codec, harness.run(codec, clip, path), path.read_bytes()


def test_decode_equals_the_encoder_reconstruction(coded):
    codec, result, data = coded
    assert np.array_equal(codec.decode(data).rgb(), codec.reconstruction.numpy())
    assert container_layout(data).meta["encoded_on"] == "cpu"  # exact match: decoded on the same kind
    assert np.array_equal(harness.decode_bytes(data, device="cpu")[1].rgb(), codec.reconstruction.numpy())
    layout = container_layout(data)  # read from the file, not from the encoder's record
    assert result.bytes == layout.stream and all(f["bits"] is None for f in result.per_frame)  # one network
    assert [tag for tag, _ in layout.sections] == ["NETW"] and layout.end == len(data)
    assert result.extra["weight_bytes"] == layout.sections[0][1]
    assert Container.from_bytes(data).meta["upscale"] == {"factors": [2, 2, 2], "stem": [4, 4]}


def test_psnr_rises_above_a_floor_within_a_few_epochs(coded, clip):
    _, result, _ = coded
    rgb = clip.rgb()
    floor = 10 * np.log10(1.0 / np.mean((rgb - rgb.mean(axis=(0, 2, 3), keepdims=True)) ** 2))
    # mean - 3 sd over seeds 0-7 (measured: 32.03 +- 1.91 dB; seed 0 gives 33.4); the mean colour gives 17.3 dB
    assert result.psnr_rgb > 26.3 > floor + 6


def test_pruning_removes_the_requested_fraction_and_survives_coding(coded):
    codec, result, data = coded
    facts = result.extra["prune"]
    assert facts["pruned"] == round(0.4 * facts["prunable"])
    net = codec.network(codec.config, 4, 32, 32)
    shapes = parameter_shapes(net)
    weights = decode_network(Container.from_bytes(data).section("NETW"), shapes)
    kernels = prunable_names(shapes)
    assert sum(weights[n].numel() for n in kernels) == facts["prunable"]
    assert sum(int((weights[n] == 0).sum()) for n in kernels) >= facts["pruned"]
    assert result.extra["coding"]["mask_bytes"] > 0


def test_a_header_whose_plan_disagrees_with_its_config_is_refused(coded):
    codec, _, data = coded
    container = Container.from_bytes(data)
    container.header["upscale"] = {"factors": [4, 2], "stem": [4, 4]}
    with pytest.raises(BitstreamError, match="upscale"):
        codec.decode(container.to_bytes())
    container.header["upscale"] = {"factors": [2, 2, 2], "stem": [4, 4]}
    container.header["config"]["channels"] = 17  # a different network: the weights no longer fit
    with pytest.raises(BitstreamError):
        codec.decode(container.to_bytes())
    container.header["config"]["channels"] = "many"
    with pytest.raises(BitstreamError):
        codec.decode(container.to_bytes())

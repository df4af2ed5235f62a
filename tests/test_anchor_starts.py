"""Several anchor starts (``anchor_starts``): the cheapest anchor plus first step is coded, start 0 is the
codec's usual anchor, and the stream decodes to the encoder's pictures bit for bit."""

import numpy as np
import pytest

from weightstep import registry
from weightstep.codecs import harness
from weightstep.coding.container import Container
from weightstep.errors import ConfigError
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video

SMALL = {"inr": "grid", "grid_levels": 3, "grid_hidden": 4, "lambda": 3e-3, "anchor_steps": 40, "step_steps": 8,
         "device": "cpu"}


def _clip():
    return open_video("synthetic:testsrc2", ReadOptions(frames=3, synthetic_width=24, synthetic_height=20))


def _two_frame_cost(data, reconstruction, clip, lam):
    """MSE + lambda bpp of a stream's first two frames, summed: their sections' bytes (no header)."""
    sections = Container.from_bytes(data).sections
    pixels = clip.width * clip.height
    total = 0.0
    for t in (0, 1):
        mse = float(np.mean((reconstruction[t] - clip.rgb()[t]) ** 2))
        total += mse + lam * 8 * len(sections[t][1]) / pixels
    return total


def test_the_cheapest_start_is_coded_and_start_zero_is_the_usual_anchor():
    clip = _clip()
    plain = registry.create("weightstep", SMALL)
    single = plain.encode(clip)
    codec = registry.create("weightstep", {**SMALL, "anchor_starts": 3})
    encoded = codec.encode(clip)
    anchor = encoded.extra["anchor"]
    costs, start = anchor["start_costs"], anchor["start"]
    assert len(costs) == 3 and costs[start] == min(costs)
    assert len(set(costs)) == 3  # each start is its own fit
    # start 0 is the usual encode's anchor and first step, costed as that stream's first two frames
    usual = _two_frame_cost(single.data, plain.reconstruction.numpy(), clip, SMALL["lambda"])
    assert costs[0] == pytest.approx(usual, rel=1e-5)
    if start == 0:  # the same fits in the same order: the same file
        assert encoded.data == single.data
    _, decoded = harness.decode_bytes(encoded.data)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())


def test_starts_need_the_two_stage_schedule():
    with pytest.raises(ConfigError, match="two-stage"):
        registry.create("weightstep", {**SMALL, "update": "l0", "schedule": "single-stage", "anchor_starts": 2})
    with pytest.raises(ConfigError):
        registry.create("weightstep", {**SMALL, "anchor_starts": 0})

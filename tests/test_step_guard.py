"""The steps' quality floor (``step_guard``): a step that falls too far below its group's anchor is fitted
again at half its lambda; the stream it leaves decodes to the encoder's pictures bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from weightstep import registry
from weightstep.codecs import harness
from weightstep.coding.container import Container
from weightstep.errors import ConfigError
from weightstep.stepping.schedule import _guard
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video

SMALL = {"inr": "grid", "grid_levels": 3, "grid_hidden": 4, "lambda": 3e-2, "anchor_steps": 150, "step_steps": 8,
         "device": "cpu"}


class _Stepper:
    """Steps whose PSNR rises by 1 dB each time their lambda halves, from ``base`` dB at the steps' lambda."""

    def __init__(self, base: float):
        self.base, self.scales = base, []

    def step(self, t, state, memory, previous, lam_scale=1.0):
        self.scales.append(lam_scale)
        psnr = self.base - float(np.log2(lam_scale))
        return b"x" * int(10 / lam_scale), state, memory, {"psnr": psnr, "step_seconds": 1.0}, None, 0.0


def _first(stepper):
    return stepper.step(1, {}, None, None)


def test_a_step_below_the_floor_is_fitted_again_at_half_the_lambda_until_it_reaches_it():
    stepper = _Stepper(20.0)
    coded = _guard(stepper, 1, {}, None, None, _first(stepper), floor=21.5, tries=3)
    assert stepper.scales == [1.0, 0.5, 0.25]  # 20 -> 21 -> 22 dB: the second halving reaches 21.5
    assert coded[3]["psnr"] == pytest.approx(22.0) and coded[3]["guard_scale"] == 0.25
    assert coded[3]["guard_replaced"] == [(10, 20.0), (20, 21.0)]  # (bytes, PSNR) of each step it replaced
    assert coded[3]["step_seconds"] == 3.0  # the frame's time counts every fit it took


def test_the_guard_stops_after_its_tries_and_leaves_steps_above_the_floor_alone():
    stepper = _Stepper(20.0)
    coded = _guard(stepper, 1, {}, None, None, _first(stepper), floor=30.0, tries=2)
    assert stepper.scales == [1.0, 0.5, 0.25] and coded[3]["guard_scale"] == 0.25  # the last try is kept
    stepper = _Stepper(20.0)
    coded = _guard(stepper, 1, {}, None, None, _first(stepper), floor=20.0, tries=2)
    assert stepper.scales == [1.0] and "guard_scale" not in coded[3]


def _clip():
    return open_video("synthetic:mandelbrot", ReadOptions(frames=4, synthetic_width=24, synthetic_height=20))


def test_a_guarded_stream_holds_its_floor_or_records_why_and_decodes_bit_for_bit():
    clip = _clip()
    plain = registry.create("weightstep", SMALL)
    plain_sections = Container.from_bytes(plain.encode(clip).data).sections
    never = registry.create("weightstep", {**SMALL, "step_guard": "100"}).encode(clip).data  # a floor 100 dB down
    assert Container.from_bytes(never).sections == plain_sections  # never acts: the same frames (the metadata differs)
    codec = registry.create("weightstep", {**SMALL, "step_guard": "0"})  # floor: the anchor's own PSNR
    encoded = codec.encode(clip)
    anchor_psnr = 10 * np.log10(1 / np.mean((codec.reconstruction.numpy()[0] - clip.rgb()[0]) ** 2))
    steps = encoded.extra["steps"]
    assert any("guard_scale" in s for s in steps), "steps at this lambda fall below their anchor: the guard acts"
    for facts in steps:
        if facts["psnr"] < anchor_psnr - 1e-6:  # still below: only after every try
            assert facts["guard_scale"] == 0.25
        for _, psnr in facts.get("guard_replaced", []):
            assert psnr < anchor_psnr + 1e-6  # only steps under the floor were replaced
    assert Container.from_bytes(encoded.data).sections != plain_sections
    _, decoded = harness.decode_bytes(encoded.data)
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())


def test_the_guard_is_off_by_default_and_refuses_a_negative_floor():
    assert registry.create("weightstep", {"device": "cpu"}).config.step_settings(3).guard_db is None
    with pytest.raises(ConfigError):
        registry.create("weightstep", {"step_guard": "-1"})
    with pytest.raises(ConfigError, match="two-stage"):
        registry.create("weightstep", {"update": "l0", "schedule": "single-stage", "step_guard": "1"})

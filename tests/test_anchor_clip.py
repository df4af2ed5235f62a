"""The anchor fit's gradient clip (``anchor_grad_clip``): which fits it reaches, and what its values mean."""

from __future__ import annotations

import pytest

from weightstep import registry
from weightstep.errors import ConfigError


def _clip(**params):
    codec = registry.create("weightstep", {"device": "cpu", **{k: str(v) for k, v in params.items()}})
    return codec.config.anchor_settings(True, pixels=176 * 144).fit.grad_clip


def test_the_grid_is_clipped_by_default_and_the_other_networks_are_not():
    assert _clip() == pytest.approx(0.02)  # the default network, the grid: measured (README)
    for inr in ("siren", "fourier", "dip"):
        assert _clip(inr=inr) is None  # never measured with a clip: their fits stay as they were


def test_zero_turns_the_clip_off_and_a_value_sets_it_for_any_network():
    assert _clip(anchor_grad_clip=0) is None
    assert _clip(anchor_grad_clip=0.5) == pytest.approx(0.5)
    assert _clip(inr="siren", anchor_grad_clip=0.1) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        registry.create("weightstep", {"anchor_grad_clip": "-1"})


def test_the_clip_reaches_the_anchor_fit_only():
    config = registry.create("weightstep", {"device": "cpu"}).config
    assert config.step_settings(3).fit.grad_clip is None  # the steps' fits were measured without it


def test_anchor_beta2_reaches_the_anchors_main_fit_only():
    def settings(**params):
        return registry.create("weightstep", {"device": "cpu", **{k: str(v) for k, v in params.items()}}).config

    assert settings().anchor_settings(True, pixels=176 * 144).fit.adam_beta2 == pytest.approx(0.999)  # Adam's own
    config = settings(anchor_beta2=0.98)
    assert config.anchor_settings(True, pixels=176 * 144).fit.adam_beta2 == pytest.approx(0.98)
    assert config.step_settings(3).fit.adam_beta2 == pytest.approx(0.999)  # the steps' fits: measured within noise
    with pytest.raises(ConfigError):
        settings(anchor_beta2=1)

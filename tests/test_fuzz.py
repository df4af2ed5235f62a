"""A seeded few hundred damaged and hostile files (CRC-valid ones included) through every decoder family.

Each must end in a WeightstepError (what the command line turns into one line and exit code 2)
or decode to a valid video. The mutation engine is the fuzzing benchmark's
(benchmarks/fuzz_mutants.py); benchmarks/fuzz_decoders.py runs many more through the command line.
"""

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from weightstep import registry
from weightstep.codecs import budget, harness
from weightstep.errors import WeightstepError
from weightstep.video.options import ReadOptions
from weightstep.video.readers import open_video

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {
    "weightstep-siren-l0": ("weightstep", {"inr": "siren", "width": "8", "depth": "2", "anchor_steps": "3",
                                           "step_steps": "2", "device": "cpu"}),
    "weightstep-dip-dct": ("weightstep", {"inr": "dip", "dip_channels": "4", "dip_levels": "2", "update": "dct",
                                          "anchor_steps": "3", "step_steps": "2", "device": "cpu"}),
    "weightstep-fourier-dense": ("weightstep", {"inr": "fourier", "width": "8", "depth": "2", "fourier_features": "8",
                                                "update": "dense", "anchor_steps": "3", "step_steps": "2",
                                                "device": "cpu"}),
    "weightstep-grid-l0": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4", "anchor_steps": "3",
                                          "step_steps": "2", "device": "cpu"}),
    "weightstep-grid-warp-l0": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                               "update": "warp+l0", "warp_grid": "2", "anchor_steps": "3",
                                               "step_steps": "2", "device": "cpu"}),
    "weightstep-grid-warp-latent": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                   "update": "warp+latent", "warp_grid": "2", "lambda": "1e-5",
                                                   "anchor_steps": "3", "step_steps": "2", "device": "cpu"}),
    "weightstep-grid-residual": ("weightstep", {"inr": "grid", "grid_levels": "3", "grid_hidden": "4",
                                                "residual": "dct", "warp_grid": "2", "lambda": "1e-5",
                                                "anchor_steps": "3", "step_steps": "2", "device": "cpu"}),
    "weightstep-siren-lowrank": ("weightstep", {"inr": "siren", "width": "8", "depth": "2", "update": "lowrank",
                                                "anchor_steps": "3", "step_steps": "2", "device": "cpu"}),
    "weightstep-dip-warp-film": ("weightstep", {"inr": "dip", "dip_channels": "4", "dip_levels": "2",
                                                "update": "warp+film", "anchor_steps": "3", "step_steps": "2",
                                                "device": "cpu"}),
    "full-mlp": ("full-mlp", {"width": "8", "depth": "2", "epochs": "1", "device": "cpu"}),
    "full-cnn": ("full-cnn", {"dip_channels": "4", "dip_levels": "2", "epochs": "1", "prune": "0.5",
                              "finetune_epochs": "1", "device": "cpu"}),
    "nerv": ("nerv", {"channels": "8", "min_channels": "4", "stem_hidden": "8", "epochs": "1", "finetune_epochs": "0",
                      "prune": "0", "device": "cpu"}),
    "x264": ("x264", {"preset": "ultrafast"}),
}
MUTANTS = 390  # 30 a seed


def _fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_mutants", ROOT / "benchmarks" / "fuzz_mutants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def seeds():
    clip = open_video("synthetic:testsrc2", ReadOptions(frames=2, synthetic_width=32, synthetic_height=32))
    return {label: registry.create(codec, params).encode(clip).data for label, (codec, params) in SEEDS.items()}


def test_damaged_and_hostile_files_are_refused_cleanly_or_decode_validly(seeds, monkeypatch):
    monkeypatch.setenv(budget.LIMIT_ENV, "64M")  # hostile geometry is refused fast; the tiny seeds fit
    fuzz = _fuzzer()
    kinds, outcomes = Counter(), Counter()
    for label, kind, data in fuzz.mutants(seeds, MUTANTS, seed=13):
        kinds[kind] += 1
        try:
            _, video = harness.decode_bytes(data)
        except WeightstepError as exc:
            message = str(exc)
            assert message and "\n" not in message, (label, kind, message)
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the test's whole point
            pytest.fail(f"{label} {kind} mutant: {type(exc).__name__}: {exc}")
        rgb = video.rgb()
        assert video.frames >= 1 and np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1, (label, kind)
        outcomes["decoded"] += 1
    assert sum(outcomes.values()) == MUTANTS
    # every mutation family was exercised, the CRC- and checksum-valid ones included
    assert min(kinds[k] for k in ("truncate", "flip", "header", "section", "resign")) > 0, kinds
    assert kinds["header"] + kinds["section"] > MUTANTS // 3
    assert outcomes["refused"] > MUTANTS // 2

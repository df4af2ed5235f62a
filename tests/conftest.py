"""Test-wide settings: no progress bars, one torch thread, deterministic seeds."""

import os

os.environ.setdefault("WEIGHTSTEP_PROGRESS", "0")
os.environ.setdefault("SVT_LOG", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray for tests stays on 127.0.0.1

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

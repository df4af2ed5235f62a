"""Test-wide settings: no progress bars, one torch thread, deterministic seeds, no drawn randomness.

Hypothesis runs under the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another: examples
are derived from each test's name (``derandomize``), so every run checks the same cases and a
failure reproduces; no example database is written. ``HYPOTHESIS_PROFILE=explore`` draws fresh
examples (for hunting bugs by hand, never in CI).

Wall time is never asserted: budgets are tested with :class:`FakeClock`, an injected clock.
"""

import os

os.environ.setdefault("WEIGHTSTEP_PROGRESS", "0")
os.environ.setdefault("SVT_LOG", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray for tests stays on 127.0.0.1

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class FakeClock:
    """A stand-in for the ``time`` module: ``perf_counter()`` returns a counter that moves only
    when told (``advance``) and, optionally, by ``per_call`` on every reading."""

    def __init__(self, per_call: float = 0.0):
        self.now = 0.0
        self.per_call = per_call
        self.readings = 0

    def perf_counter(self) -> float:
        value = self.now
        self.now += self.per_call
        self.readings += 1
        return value

    monotonic = perf_counter

    def time(self) -> float:
        return 1.7e9 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@pytest.fixture
def fake_clock():
    return FakeClock


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

"""Bjøntegaard delta rate and delta quality between two rate-quality curves.

Each curve is interpolated piecewise-cubically (PCHIP by default, Akima on request), which
avoids the overshoot of the original cubic polynomial fit, and the two interpolants are
integrated exactly over the interval where both curves are defined.

- BD-rate: log(rate) as a function of quality, averaged over the common quality interval;
  the mean log difference d gives (exp(d) - 1) * 100 percent. Negative: the test curve needs
  fewer bits for the same quality.
- BD-quality (BD-PSNR when quality is PSNR): quality as a function of log(rate), averaged
  over the common log-rate interval; positive: the test curve is better at the same rate.

Rates may be in any unit (bpp, kbit/s) as long as both curves use the same one.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

from weightstep.errors import MetricError

MIN_POINTS = 4
METHODS = {"pchip": PchipInterpolator, "akima": Akima1DInterpolator}


def _curve(rates, quality, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (log rate, quality) arrays of one curve."""
    try:
        r = np.asarray(rates, dtype=np.float64).reshape(-1)
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"BD: {which} curve is not numeric: {exc}") from None
    if r.size != q.size:
        raise MetricError(f"BD: {which} curve has {r.size} rates but {q.size} quality values")
    if r.size < MIN_POINTS:
        raise MetricError(f"BD: {which} curve has {r.size} points; at least {MIN_POINTS} are needed")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise MetricError(f"BD: {which} curve has non-finite rates or quality values")
    if np.any(r <= 0):
        raise MetricError(f"BD: {which} curve has non-positive rates; rates must be > 0")
    return np.log(r), q


def _strict(x: np.ndarray, y: np.ndarray, which: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by x; duplicate x values are refused (the curve would not be a function)."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise MetricError(f"BD: {which} curve has repeated {axis} values; each point needs a distinct {axis}")
    return x, y


def _mean_gap(anchor: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
              method: str, axis: str) -> float:
    """Mean of test(x) - anchor(x) over the overlap of both curves' x ranges."""
    try:
        interpolator = METHODS[method]
    except KeyError:
        raise MetricError(f"BD: unknown interpolation {method!r}; use one of {', '.join(METHODS)}") from None
    (xa, ya), (xt, yt) = anchor, test
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        raise MetricError(f"not defined: curves do not overlap ({axis} ranges [{xa[0]:.4g}, {xa[-1]:.4g}] and "
                          f"[{xt[0]:.4g}, {xt[-1]:.4g}])")
    area_anchor = interpolator(xa, ya).integrate(lo, hi)
    area_test = interpolator(xt, yt).integrate(lo, hi)
    return float((area_test - area_anchor) / (hi - lo))


def bd_rate(anchor_rates, anchor_quality, test_rates, test_quality, method: str = "pchip") -> float:
    """Bjøntegaard delta rate in percent of the test curve against the anchor.

    Points are sorted by quality; each curve needs at least 4 points with distinct quality
    values, positive finite rates and finite quality, and the two quality ranges must
    overlap. Otherwise MetricError. ``method`` is 'pchip' (default) or 'akima'.
    """
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    gap = _mean_gap(_strict(qa, la, "anchor", "quality"), _strict(qt, lt, "test", "quality"),
                    method, "quality")
    return float(np.expm1(gap) * 100.0)


def bd_quality(anchor_rates, anchor_quality, test_rates, test_quality, method: str = "pchip") -> float:
    """Bjøntegaard delta quality (BD-PSNR in dB for PSNR) of the test curve against the anchor.

    Points are sorted by rate; each curve needs at least 4 points with distinct positive
    finite rates and finite quality, and the two log-rate ranges must overlap. Otherwise
    MetricError. ``method`` is 'pchip' (default) or 'akima'.
    """
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    return _mean_gap(_strict(la, qa, "anchor", "rate"), _strict(lt, qt, "test", "rate"), method, "log-rate")


bd_psnr = bd_quality

"""numba kernels against plain-Python references of the same filters, per call and per series.

The references are the tests' definitions (tests/test_kernels.py) restated here so the
benchmark does not import the test suite. Timings are the best of several timeit repeats.
"""

from __future__ import annotations

import math
import timeit
from typing import Any

import numpy as np

import kernels


def py_ema(prev: float, x: float, dt: float, tau: float) -> float:
    if math.isnan(prev):
        return x
    if dt <= 0:
        return prev
    if tau <= 0:
        return x
    return prev + (1 - math.exp(-dt / tau)) * (x - prev)


def py_hysteresis(
    score: float, t: float, away: bool, since: float, lo: float, hi: float, ma: float, mb: float
) -> tuple[bool, float]:
    crossing = score > hi if away else score < lo
    if not crossing:
        return away, math.nan
    if math.isnan(since):
        since = t
    if t - since >= (mb if away else ma):
        return not away, math.nan
    return away, since


def py_ema_series(x: np.ndarray, t: np.ndarray, tau: float) -> np.ndarray:
    out = np.empty_like(x)
    prev, last = math.nan, t[0]
    for i in range(len(x)):
        prev = py_ema(prev, float(x[i]), float(t[i] - last), tau)
        last = t[i]
        out[i] = prev
    return out


def py_hysteresis_series(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=bool)
    away, since = False, math.nan
    for i in range(len(x)):
        away, since = py_hysteresis(float(x[i]), float(t[i]), away, since, 0.4, 0.55, 0.25, 0.1)
        out[i] = away
    return out


def _ns_per_call(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def run(quick: bool = False) -> dict[str, Any]:
    kernels.warm_up()
    calls = 2_000 if quick else 200_000
    n = 1_000 if quick else 100_000
    rng = np.random.default_rng(0)
    x = rng.random(n)
    t = np.cumsum(rng.uniform(0.02, 0.05, n))
    nan = math.nan
    rows = [
        {
            "kernel": "ema_step (per call)",
            "numba_ns": _ns_per_call(lambda: kernels.ema_step(0.5, 1.0, 0.033, 0.2), calls),
            "python_ns": _ns_per_call(lambda: py_ema(0.5, 1.0, 0.033, 0.2), calls),
        },
        {
            "kernel": "hysteresis_step (per call)",
            "numba_ns": _ns_per_call(
                lambda: kernels.hysteresis_step(0.3, 1.0, False, nan, 0.4, 0.55, 0.25, 0.1), calls
            ),
            "python_ns": _ns_per_call(
                lambda: py_hysteresis(0.3, 1.0, False, nan, 0.4, 0.55, 0.25, 0.1), calls
            ),
        },
        {
            "kernel": f"ema_series (per element, n={n})",
            "numba_ns": _ns_per_call(lambda: kernels.ema_series(x, t, 0.2), 3) / n,
            "python_ns": _ns_per_call(lambda: py_ema_series(x, t, 0.2), 1) / n,
        },
        {
            "kernel": f"hysteresis_series (per element, n={n})",
            "numba_ns": _ns_per_call(
                lambda: kernels.hysteresis_series(x, t, 0.4, 0.55, 0.25, 0.1), 3
            )
            / n,
            "python_ns": _ns_per_call(lambda: py_hysteresis_series(x, t), 1) / n,
        },
    ]
    for row in rows:
        row["speedup"] = row["python_ns"] / row["numba_ns"]
    print(f"{'kernel':42} {'numba ns':>10} {'python ns':>10} {'speed-up':>9}")
    for row in rows:
        print(
            f"{row['kernel']:42} {row['numba_ns']:>10.1f} {row['python_ns']:>10.1f}"
            f" {row['speedup']:>8.1f}x"
        )
    return {"rows": rows, "calls": calls, "series_length": n}

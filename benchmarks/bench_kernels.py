"""numba kernels against plain-Python references of the same filters, per call and per element.

Both sides run in the same process and the same run; each timing is the best of several timeit
repeats. The step rows answer where the per-frame filters should run: the tracker calls each step
once per frame, through the typed wrappers in ``kernels``, so that is what the "numba" column
times; "numba raw" calls the compiled dispatcher directly, to show what the wrapper adds. The
references are the kernels' own code run by CPython (so the test suite is not imported); the
eye-centre reference loops over Python lists, which is faster than indexing numpy arrays element
by element, so the fairest plain-Python baseline.

Run ``python -m benchmarks kernels`` or ``python -m benchmarks.bench_kernels [--quick]`` from the
repository root. ``--quick`` is a smoke test that the code runs, not a timing.
"""

from __future__ import annotations

import math
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import kernels
from kernels import eyecentre as raw_eyecentre
from kernels import hysteresis as raw_hysteresis
from kernels import smoothing as raw_smoothing

RESULTS = Path(__file__).parent / "results"
# The step rows pass settings of the tracker's order as literals (as the tracker passes
# attributes, not a tuple to unpack: tau 0.2 s, thresholds 0.4 and 0.55, minimum durations 0.25
# and 0.1 s; the gaze's tau 0.3 s and jump 0.35) and take the common branches: a step that
# smooths (for the gaze, a change smaller than the jump: a steady face's); a score below the
# threshold with a pending change that has not yet lasted long enough.


def py_ema(prev: float, x: float, dt: float, tau: float) -> float:
    if math.isnan(prev):
        return x
    if math.isnan(x) or not dt > 0:
        return prev
    if tau <= 0:
        return x
    y = x + math.exp(-dt / tau) * (prev - x)
    lo, hi = (prev, x) if prev <= x else (x, prev)
    return lo if y < lo else hi if y > hi else y


def py_adaptive_ema(prev: float, x: float, dt: float, tau: float, jump: float) -> float:
    if math.isnan(prev) or math.isnan(x):
        return py_ema(prev, x, dt, tau)
    ratio = (x - prev) / jump
    return py_ema(prev, x, dt, tau * max(0.0, 1.0 - ratio * ratio))


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


def py_eye_centre(patch: list[list[float]], weight: list[list[float]]) -> tuple[int, int]:
    """Means of gradients as the kernel computes it, in plain Python over lists."""
    h, w = len(patch), len(patch[0])

    def diff(line: list[float], i: int) -> float:
        """numpy.gradient's rule along one row or column."""
        n = len(line)
        if n == 1:
            return 0.0
        if i == 0:
            return line[1] - line[0]
        if i == n - 1:
            return line[i] - line[i - 1]
        return (line[i + 1] - line[i - 1]) / 2

    columns = [[patch[r][c] for r in range(h)] for c in range(w)]
    grads = []
    for r in range(h):
        for c in range(w):
            gx, gy = diff(patch[r], c), diff(columns[c], r)
            grads.append((c, r, gx, gy, math.hypot(gx, gy)))
    mags = [g[4] for g in grads]
    mean = sum(mags) / len(mags)
    sd = math.sqrt(sum((m - mean) ** 2 for m in mags) / len(mags))
    strong = [(x, y, gx / m, gy / m) for x, y, gx, gy, m in grads if m > mean + 0.3 * sd and m > 0]
    best, where = -math.inf, (0, 0)
    for r in range(h):
        for c in range(w):
            total = 0.0
            for x, y, ux, uy in strong:
                dx, dy = x - c, y - r
                d2 = dx * dx + dy * dy
                if d2:
                    dot = dx * ux + dy * uy
                    if dot > 0:
                        total += dot * dot / d2
            value = weight[r][c] * total / len(strong) if strong else 0.0
            if value > best:
                best, where = value, (c, r)
    return where


def _eye_patch() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A pupil-like dark disc on a noisy bright patch, 24 px wide as the tracker crops an eye:
    the cost depends on the patch size and the number of strong gradients, not on whose eye."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:17, 0:24]
    patch = 170.0 + 20.0 * rng.random((17, 24))
    patch[(cols - 11) ** 2 + (rows - 8) ** 2 <= 16] = 40.0
    return patch, (255.0 - patch) / 255.0


def _ns(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``number`` calls, in ns per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def run(quick: bool = False) -> dict[str, Any]:
    kernels.warm_up()
    calls = 2_000 if quick else 300_000
    rows: list[dict[str, Any]] = [
        {
            "kernel": "ema_step (per call)",
            "numba_ns": _ns(lambda: kernels.ema_step(0.5, 1.0, 0.033, 0.2), calls),
            "numba_raw_ns": _ns(lambda: raw_smoothing.ema_step(0.5, 1.0, 0.033, 0.2), calls),
            "python_ns": _ns(lambda: py_ema(0.5, 1.0, 0.033, 0.2), calls),
        },
        {
            "kernel": "adaptive_ema_step (per call)",
            "numba_ns": _ns(lambda: kernels.adaptive_ema_step(0.1, 0.2, 0.033, 0.3, 0.35), calls),
            "numba_raw_ns": _ns(
                lambda: raw_smoothing.adaptive_ema_step(0.1, 0.2, 0.033, 0.3, 0.35), calls
            ),
            "python_ns": _ns(lambda: py_adaptive_ema(0.1, 0.2, 0.033, 0.3, 0.35), calls),
        },
        {
            "kernel": "hysteresis_step (per call)",
            "numba_ns": _ns(
                lambda: kernels.hysteresis_step(0.3, 1.0, False, 0.9, 0.4, 0.55, 0.25, 0.1), calls
            ),
            "numba_raw_ns": _ns(
                lambda: raw_hysteresis.hysteresis_step(0.3, 1.0, False, 0.9, 0.4, 0.55, 0.25, 0.1),
                calls,
            ),
            "python_ns": _ns(
                lambda: py_hysteresis(0.3, 1.0, False, 0.9, 0.4, 0.55, 0.25, 0.1), calls
            ),
        },
    ]
    patch, weight = _eye_patch()
    plist, wlist = patch.tolist(), weight.tolist()
    rows.append(
        {
            "kernel": f"eye_centre (per eye, {patch.shape[1]}x{patch.shape[0]} patch)",
            "numba_ns": _ns(lambda: kernels.eye_centre(patch, weight), calls // 20),
            "numba_raw_ns": _ns(
                lambda: raw_eyecentre.means_of_gradients(patch, weight, 0.3, np.empty(patch.shape)),
                calls // 20,
            ),
            "python_ns": _ns(lambda: py_eye_centre(plist, wlist), 1 if quick else 3, 3),
        }
    )
    for row in rows:
        row["speedup"] = row["python_ns"] / row["numba_ns"]  # below 1: plain Python is faster
    print(f"{'kernel':42} {'numba ns':>9} {'raw ns':>8} {'python ns':>10} {'speed-up':>9}")
    for row in rows:
        print(
            f"{row['kernel']:42} {row['numba_ns']:>9.1f} {row['numba_raw_ns']:>8.1f}"
            f" {row['python_ns']:>10.1f} {row['speedup']:>8.2f}x"
        )
    return {"rows": rows, "calls": calls}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_kernels [--quick] [--out DIR]``: the same as
    ``python -m benchmarks kernels``, whose runner writes the JSON record and the chart."""
    from benchmarks.__main__ import main as run_suites

    return run_suites(["kernels", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

"""Time-aware exponential smoothing: the filter that turns per-frame scores into ``confidence``.

``alpha = 1 - exp(-dt / tau)`` makes the filter a sampled first-order low-pass with time constant
``tau`` seconds, whatever the frame interval: two steps of ``dt/2`` equal one step of ``dt`` for
a constant input, so it behaves the same at 10, 24 or 30 fps and across dropped frames.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Each kernel is compiled eagerly for one signature, releases the GIL, and is cached on disk
# (NUMBA_CACHE_DIR, or __pycache__ beside this file) so that a restart loads instead of compiling.


@nb.njit("float64(float64, float64, float64, float64)", nogil=True, cache=True)
def ema_step(prev: float, x: float, dt_s: float, tau_s: float) -> float:
    """One step. No history (``prev`` NaN) starts at ``x``; ``dt_s <= 0`` (a repeated or
    backwards timestamp) leaves ``prev`` unchanged; ``tau_s <= 0`` means no smoothing."""
    if math.isnan(prev):
        return x
    if dt_s <= 0.0:
        return prev
    if tau_s <= 0.0:
        return x
    alpha = 1.0 - math.exp(-dt_s / tau_s)
    return prev + alpha * (x - prev)


@nb.njit("float64[:](float64[:], float64[:], float64, float64, float64[:])", nogil=True, cache=True)
def ema_series(
    x: np.ndarray, t_s: np.ndarray, tau_s: float, y0: float, out: np.ndarray
) -> np.ndarray:
    """``ema_step`` along a series. The first sample steps from ``y0`` over ``dt = 0`` — so it
    is ``x[0]`` when ``y0`` is NaN (no history) and ``y0`` otherwise — and every later one from
    the previous output over the interval since the previous sample. A prefix of the series
    therefore smooths to a prefix of the output (the live and offline paths agree)."""
    prev = y0
    last_t = t_s[0] if x.shape[0] else 0.0
    for i in range(x.shape[0]):
        prev = ema_step(prev, x[i], t_s[i] - last_t, tau_s)
        last_t = t_s[i]
        out[i] = prev
    return out

"""Time-aware exponential smoothing: the filter that turns per-frame scores into ``confidence``.

``alpha = 1 - exp(-dt / tau)`` makes the filter a sampled first-order low-pass with time constant
``tau`` seconds, whatever the frame interval: two steps of ``dt/2`` equal one step of ``dt`` for
a constant input, so it behaves the same at 10, 24 or 30 fps and across dropped frames.
"""

from __future__ import annotations

import math

import numba as nb

# Compiled eagerly for its one signature (as every kernel here), releases the GIL, and cached on
# disk (NUMBA_CACHE_DIR, or __pycache__ beside this file) so that a restart loads, not compiles.


@nb.njit("float64(float64, float64, float64, float64)", nogil=True, cache=True)
def ema_step(prev: float, x: float, dt_s: float, tau_s: float) -> float:
    """One step from ``prev`` towards ``x`` over ``dt_s`` seconds.

    - ``prev`` NaN (no history yet) starts at ``x``.
    - ``x`` NaN (no evidence) leaves ``prev`` unchanged.
    - Unless time moved forward (``dt_s <= 0`` or NaN: a repeated or backwards timestamp), ``prev``
      is returned unchanged: the sample is dropped rather than given an invented interval.
    - ``tau_s <= 0`` means no smoothing: the result is ``x``.

    The result always lies between ``prev`` and ``x``, exactly.
    """
    if math.isnan(prev):
        return x
    if math.isnan(x) or not dt_s > 0.0:
        return prev
    if tau_s <= 0.0:
        return x
    # prev + alpha * (x - prev) with alpha = 1 - exp(-dt/tau), written around the decay so that a
    # long gap (decay 0) gives exactly x rather than x give or take an ulp.
    decay = math.exp(-dt_s / tau_s)
    y = x + decay * (prev - x)
    # Rounding can still put y outside [prev, x] when the two differ by orders of magnitude
    # (prev=1e-17, x=0.67, dt far below tau: 0.0 < prev). The clamp makes the bound exact.
    # It costs nothing visible per call (``python -m benchmarks kernels``).
    lo, hi = (prev, x) if prev <= x else (x, prev)
    return lo if y < lo else hi if y > hi else y

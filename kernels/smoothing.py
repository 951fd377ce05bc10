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


@nb.njit("float64(float64, float64, float64, float64, float64)", nogil=True, cache=True)
def adaptive_ema_step(prev: float, x: float, dt_s: float, tau_s: float, jump: float) -> float:
    """:func:`ema_step` with a time constant that shrinks as the change grows: it holds still on
    small changes (noise) and follows large ones (a real move) at once.

    The time constant is ``tau_s * (1 - (|x - prev| / jump) ** 2)``, floored at 0: ``tau_s`` for
    no change, and no smoothing at all for a change of ``jump`` or more. ``prev``, ``x`` and
    ``dt_s`` NaN or not moving forward behave as in :func:`ema_step`, and the result lies between
    ``prev`` and ``x``, exactly. ``jump`` must be positive (the typed wrapper checks it).
    """
    if math.isnan(prev) or math.isnan(x):
        return ema_step(prev, x, dt_s, tau_s)
    # Chosen by measurement on the eye stage's gaze (zju-dev subjects 11-15, benchmarks/gaze.py):
    # with tau 0.3 s and jump 0.35 a steady face's median change a frame is 0.014, about a plain
    # EMA's of 0.3 s (0.013), but a step of 0.5 is 90 % followed after 1.1 frames, not 18.6; the
    # One Euro filter (Casiez et al. 2012) as still (fc 0.3 Hz, beta 0.3: 0.016) takes 5.5.
    ratio = (x - prev) / jump
    return ema_step(prev, x, dt_s, tau_s * max(0.0, 1.0 - ratio * ratio))

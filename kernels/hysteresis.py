"""Hysteresis with minimum durations: the decision that turns ``confidence`` into ``looking_away``.

Two thresholds (enter below ``enter_below``, leave above ``exit_above``) stop the decision from
chattering around one value; the minimum durations, in seconds, stop a short dip (a blink, one
missed detection) from flipping it at all. The state is ``(away, pending_since)``: the time at
which the score first crossed towards the other state, NaN when no change is pending.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# (away, pending_since) of (score, t_s, away, pending_since, enter_below, exit_above,
# min_away_s, min_back_s)
_STEP = (
    "Tuple((boolean, float64))(float64, float64, boolean, float64, "
    + ", ".join(["float64"] * 4)
    + ")"
)


@nb.njit(_STEP, nogil=True, cache=True)
def hysteresis_step(
    score: float,
    t_s: float,
    away: bool,
    pending_since: float,
    enter_below: float,
    exit_above: float,
    min_away_s: float,
    min_back_s: float,
) -> tuple[bool, float]:
    """One step: the new ``(away, pending_since)``."""
    crossing = score > exit_above if away else score < enter_below
    if not crossing:
        return away, math.nan
    if math.isnan(pending_since):
        pending_since = t_s
    if t_s - pending_since >= (min_back_s if away else min_away_s):
        return not away, math.nan
    return away, pending_since


@nb.njit(
    "boolean[:](float64[:], float64[:], float64, float64, float64, float64, boolean, boolean[:])",
    nogil=True,
    cache=True,
)
def hysteresis_series(
    score: np.ndarray,
    t_s: np.ndarray,
    enter_below: float,
    exit_above: float,
    min_away_s: float,
    min_back_s: float,
    away0: bool,
    out: np.ndarray,
) -> np.ndarray:
    """``hysteresis_step`` along a series, starting from ``away0`` with nothing pending."""
    away = away0
    pending = math.nan
    for i in range(score.shape[0]):
        away, pending = hysteresis_step(
            score[i], t_s[i], away, pending, enter_below, exit_above, min_away_s, min_back_s
        )
        out[i] = away
    return out

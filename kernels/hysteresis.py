"""Hysteresis with minimum durations: the decision that turns ``confidence`` into ``looking_away``.

Two thresholds (enter below ``enter_below``, leave above ``exit_above``) stop the decision from
chattering around one value; the minimum durations, in seconds, stop a short dip (a blink, one
missed detection) from flipping it at all. The state is ``(away, pending_since)``: the time at
which the score first crossed towards the other state, NaN when no change is pending.
"""

from __future__ import annotations

import math

import numba as nb

# (away, pending_since) of (score, t_s, away, pending_since, enter_below, exit_above,
# min_away_s, min_back_s)
_STEP = (
    "Tuple((boolean, float64))"
    "(float64, float64, boolean, float64, float64, float64, float64, float64)"
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
    """One step: the new ``(away, pending_since)``.

    Not away, a score below ``enter_below`` starts (or continues) a pending change; once it has
    lasted ``min_away_s`` (``t_s - pending_since >= min_away_s``) the decision flips to away and
    nothing is pending. A score at or above ``enter_below`` cancels the pending change. Away, the
    same with ``score > exit_above`` and ``min_back_s``. A NaN score is not a crossing, so it
    cancels a pending change too.
    """
    crossing = score > exit_above if away else score < enter_below
    if not crossing:
        return away, math.nan
    if math.isnan(pending_since):
        pending_since = t_s
    if t_s - pending_since >= (min_back_s if away else min_away_s):
        return not away, math.nan
    return away, pending_since

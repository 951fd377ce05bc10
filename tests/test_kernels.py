"""The numba filters against plain-Python references, and the invariants users rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels

# --- plain-Python references: the definitions, written for reading, not speed -------------------


def ref_ema(prev: float, x: float, dt: float, tau: float) -> float:
    if math.isnan(prev):
        return x
    if dt <= 0:
        return prev
    if tau <= 0:
        return x
    return prev + (1 - math.exp(-dt / tau)) * (x - prev)


def ref_hysteresis(
    scores: list[float], times: list[float], lo: float, hi: float, min_away: float, min_back: float
) -> list[bool]:
    away, since, out = False, None, []
    for s, t in zip(scores, times, strict=True):
        crossing = s > hi if away else s < lo
        if not crossing:
            since = None
        else:
            since = t if since is None else since
            if t - since >= (min_back if away else min_away):
                away, since = not away, None
        out.append(away)
    return out


unit = st.floats(0.0, 1.0)
intervals = st.lists(st.floats(0.001, 0.5), min_size=1, max_size=60)


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    dts = draw(intervals)
    x = np.array(draw(st.lists(unit, min_size=len(dts), max_size=len(dts))))
    t = np.cumsum(dts) - dts[0]
    return x, t


TAU = st.floats(0.01, 2.0)
FAST = settings(max_examples=150, deadline=None)


# --- smoothing ------------------------------------------------------------------------------------


@FAST
@given(prev=unit, x=unit, dt=st.floats(-1.0, 5.0), tau=st.floats(0.0, 5.0))
def test_ema_step_matches_reference(prev: float, x: float, dt: float, tau: float) -> None:
    assert kernels.ema_step(prev, x, dt, tau) == pytest.approx(ref_ema(prev, x, dt, tau), abs=1e-12)


@FAST
@given(data=series(), tau=TAU)
def test_ema_series_is_repeated_steps_and_stays_in_range(
    data: tuple[np.ndarray, np.ndarray], tau: float
) -> None:
    x, t = data
    out = kernels.ema_series(x, t, tau)
    prev, last = math.nan, t[0]
    for i in range(len(x)):
        prev = ref_ema(prev, x[i], t[i] - last, tau)
        last = t[i]
        assert out[i] == pytest.approx(prev, abs=1e-12)
    assert np.all(out >= x.min() - 1e-12) and np.all(out <= x.max() + 1e-12)


@FAST
@given(data=series(), tau=TAU, cut=st.integers(1, 60))
def test_ema_prefix_stability(data: tuple[np.ndarray, np.ndarray], tau: float, cut: int) -> None:
    x, t = data
    cut = min(cut, len(x))
    np.testing.assert_array_equal(
        kernels.ema_series(x[:cut], t[:cut], tau), kernels.ema_series(x, t, tau)[:cut]
    )


@FAST
@given(prev=unit, x=unit, dt=st.floats(0.001, 1.0), tau=TAU)
def test_ema_is_time_aware(prev: float, x: float, dt: float, tau: float) -> None:
    """Two steps of dt/2 towards a constant equal one step of dt: frame rate does not matter."""
    half = kernels.ema_step(kernels.ema_step(prev, x, dt / 2, tau), x, dt / 2, tau)
    assert half == pytest.approx(kernels.ema_step(prev, x, dt, tau), abs=1e-9)


@FAST
@given(c=unit, y0=unit, tau=st.floats(0.05, 1.0))
def test_ema_constant_input_converges(c: float, y0: float, tau: float) -> None:
    t = np.arange(0, 20 * tau, 1 / 30)
    out = kernels.ema_series(np.full(len(t), c), t, tau, y0)
    assert out[-1] == pytest.approx(c, abs=1e-6)
    assert np.all(np.diff(np.abs(out - c)) <= 1e-15), "monotone approach, no overshoot"


def test_ema_first_sample_and_y0() -> None:
    x, t = np.array([0.2, 0.2]), np.array([0.0, 0.1])
    assert kernels.ema_series(x, t, 0.2)[0] == 0.2
    assert kernels.ema_series(x, t, 0.2, y0=1.0)[0] == 1.0


# --- hysteresis -------------------------------------------------------------------------------


thresholds = st.tuples(unit, unit).map(sorted)
durations = st.floats(0.0, 1.0)


@FAST
@given(data=series(), th=thresholds, min_away=durations, min_back=durations)
def test_hysteresis_matches_reference_and_steps(
    data: tuple[np.ndarray, np.ndarray], th: list[float], min_away: float, min_back: float
) -> None:
    x, t = data
    lo, hi = th
    expected = ref_hysteresis(list(x), list(t), lo, hi, min_away, min_back)
    assert kernels.hysteresis_series(x, t, lo, hi, min_away, min_back).tolist() == expected
    away, pending, stepped = False, math.nan, []
    for s, ts in zip(x, t, strict=True):
        away, pending = kernels.hysteresis_step(s, ts, away, pending, lo, hi, min_away, min_back)
        stepped.append(away)
    assert stepped == expected


@FAST
@given(
    dip_s=st.floats(0.0, 0.99),
    min_away=st.floats(0.1, 1.0),
    fps=st.sampled_from([10.0, 24.0, 30.0, 60.0]),
    depth=st.floats(0.0, 0.39),
)
def test_a_dip_shorter_than_min_away_never_flips(
    dip_s: float, min_away: float, fps: float, depth: float
) -> None:
    dip_s = dip_s * min_away  # strictly shorter than the minimum duration
    t = np.arange(0, 3.0, 1 / fps)
    score = np.where((t >= 1.0) & (t < 1.0 + dip_s), depth, 1.0)
    assert not kernels.hysteresis_series(score, t, 0.4, 0.55, min_away, 0.1).any()


@FAST
@given(min_away=st.floats(0.0, 1.0), fps=st.sampled_from([10.0, 24.0, 30.0, 60.0]))
def test_a_sustained_drop_flips_within_min_away_plus_a_frame(min_away: float, fps: float) -> None:
    t = np.arange(0, 3.0, 1 / fps)
    score = np.where(t >= 1.0, 0.0, 1.0)
    away = kernels.hysteresis_series(score, t, 0.4, 0.55, min_away, 0.1)
    first = t[np.argmax(away)]
    assert away.any() and away[np.argmax(away) :].all()
    crossing = t[np.argmax(t >= 1.0)]
    assert crossing + min_away - 1e-9 <= first <= crossing + min_away + 1 / fps + 1e-9


def test_hysteresis_series_starts_from_away0() -> None:
    t = np.arange(5) / 30
    assert kernels.hysteresis_series(np.zeros(5), t, 0.4, 0.5, 1.0, 1.0, away0=True).all()


# --- the wrappers refuse what the kernels would misread ------------------------------------------


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"x \(3,\), t_s \(2,\)"):
        kernels.ema_series(np.zeros(3), np.zeros(2), 0.2)
    with pytest.raises(ValueError, match="1-D"):
        kernels.hysteresis_series(np.zeros((2, 2)), np.zeros((2, 2)), 0.4, 0.5, 0.1, 0.1)


def test_bad_out_and_thresholds_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="out must be"):
        kernels.ema_series(np.zeros(3), np.arange(3.0), 0.2, out=np.zeros(2))
    with pytest.raises(ValueError, match="enter_below"):
        kernels.hysteresis_series(np.zeros(2), np.arange(2.0), 0.6, 0.5, 0.1, 0.1)
    with pytest.raises(ValueError, match="min_away_s"):
        kernels.hysteresis_series(np.zeros(2), np.arange(2.0), 0.4, 0.5, -1.0, 0.1)


def test_out_is_filled_in_place() -> None:
    out = np.empty(3)
    result = kernels.ema_series(np.ones(3), np.arange(3.0), 0.2, out=out)
    assert result is out and np.all(out == 1.0)


def test_empty_series() -> None:
    assert kernels.ema_series(np.zeros(0), np.zeros(0), 0.2).shape == (0,)
    assert kernels.hysteresis_series(np.zeros(0), np.zeros(0), 0.4, 0.5, 0.1, 0.1).shape == (0,)

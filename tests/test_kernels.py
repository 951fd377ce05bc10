"""The numba filters against plain-Python references and the rules they document, and the
invariants users rely on.

The tracker calls the filters once a frame, so a series here is what it sees: the step kernel
called at every sample, in Python (``ema_series``, ``decide``). Hypothesis runs derandomized (the
same examples on every run) and without its example database, so the file is deterministic;
example counts are modest, so it runs in a second or two once the kernels are compiled or loaded
from the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import kernels

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

# --- plain-Python references: the definitions, written for reading, not speed -------------------


def ref_ema(prev: float, x: float, dt: float, tau: float) -> float:
    """prev + alpha (x - prev), alpha = 1 - exp(-dt/tau); the rules for the edges as documented."""
    if math.isnan(prev):
        return x  # no history: start at the sample
    if math.isnan(x) or not dt > 0:
        return prev  # no evidence, or time did not move forward: nothing changes
    if tau <= 0:
        return x  # no smoothing
    return prev + (1 - math.exp(-dt / tau)) * (x - prev)


def beyond(score: float, away: bool, lo: float, hi: float) -> bool:
    """Past the threshold towards the other state: below ``lo`` to leave, above ``hi`` to come
    back. The thresholds themselves, anything between them and NaN are not."""
    if math.isnan(score):
        return False
    return score > hi if away else score < lo


def ref_decisions(
    scores: list[float],
    times: list[float],
    lo: float,
    hi: float,
    min_away: float,
    min_back: float,
    away: bool = False,
) -> list[bool]:
    """The rule of ``kernels.hysteresis_step``, read off the whole history at every sample rather
    than carried in a state: the decision changes at sample i when i and every sample before it
    back to the start of its run are beyond the threshold, the run begins after the last change,
    and it has lasted the minimum duration, times[i] - times[start] >= min (measured from the
    first crossing, as documented, whatever the times did in between)."""
    out: list[bool] = []
    changed_at = -1
    for i, now in enumerate(times):
        start = i + 1
        while start - 1 > changed_at and beyond(scores[start - 1], away, lo, hi):
            start -= 1
        if start <= i and now - times[start] >= (min_back if away else min_away):
            away, changed_at = not away, i
        out.append(away)
    return out


def same(a: float, b: float) -> bool:
    """Equal within rounding, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


# --- series: the step kernels at every sample, as the tracker calls them -------------------------


def ema_series(x: Floats, t: Floats, tau: float, y0: float = math.nan) -> Floats:
    """``ema_step`` at every sample, the first from ``y0`` over dt = 0: the output starts at
    ``x[0]`` when ``y0`` is NaN (no history) and at ``y0`` otherwise."""
    out, prev, last = [], y0, t[0]
    for xi, ti in zip(x, t, strict=True):
        prev = kernels.ema_step(prev, float(xi), float(ti - last), tau)
        last = ti
        out.append(prev)
    return np.array(out)


def decide(
    score: Floats,
    t: Floats,
    lo: float,
    hi: float,
    min_away: float,
    min_back: float,
    away: bool = False,
) -> Bools:
    """``hysteresis_step`` at every sample, from ``(away, nan)``: the decision after each."""
    out, pending = [], math.nan
    for s, ts in zip(score.tolist(), t.tolist(), strict=True):
        away, pending = kernels.hysteresis_step(s, ts, away, pending, lo, hi, min_away, min_back)
        out.append(away)
    return np.array(out, dtype=bool)


# --- strategies ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None)
NAN = st.just(math.nan)
unit = st.floats(0.0, 1.0)
values = st.floats(-1e3, 1e3)
taus = st.floats(0.01, 2.0)
# Eighths of a second add up exactly, so a pending change can last its minimum to the bit.
eighths = st.sampled_from([0.0, 0.125, 0.25, 0.5])
durations = eighths | st.floats(0.0, 1.0)
# A few levels shared by thresholds and scores, so that a score often sits on a threshold.
levels = st.sampled_from([0.0, 0.25, 0.4, 0.5, 0.55, 1.0])
thresholds = st.tuples(levels | unit, levels | unit).map(lambda pair: (min(pair), max(pair)))
scores = levels | unit | NAN


@st.composite
def series(
    draw: st.DrawFn, x: st.SearchStrategy[float] = unit, backwards: bool = False
) -> tuple[Floats, Floats]:
    """Scores at irregular times from 0 s: intervals of 0 (a repeated timestamp) to 0.3 s, often
    whole eighths of a second, and, when ``backwards``, some that go back in time."""
    low = -0.1 if backwards else 0.0
    dts = draw(st.lists(eighths | st.floats(low, 0.3), min_size=1, max_size=50))
    xs = draw(st.lists(x, min_size=len(dts), max_size=len(dts)))
    return np.array(xs), np.cumsum([0.0, *dts[1:]])


# --- smoothing ------------------------------------------------------------------------------------


@SETTINGS
@given(
    prev=values | NAN,
    x=values | NAN,
    dt=st.floats(-1.0, 10.0) | NAN | st.just(math.inf),
    tau=st.floats(-1.0, 10.0),
)
def test_ema_step_matches_reference(prev: float, x: float, dt: float, tau: float) -> None:
    assert same(kernels.ema_step(prev, x, dt, tau), ref_ema(prev, x, dt, tau))


@SETTINGS
@given(
    prev=st.floats(-1e300, 1e300),  # not up to 1.8e308: prev - x would overflow
    x=st.floats(-1e300, 1e300),
    dt=st.floats(0.0, 100.0),
    tau=st.floats(0.0, 100.0),
)
def test_ema_step_stays_between_prev_and_x_exactly(
    prev: float, x: float, dt: float, tau: float
) -> None:
    """No tolerance: a score in [0, 1] must give a confidence in [0, 1], not 1.0000000000000002."""
    assert min(prev, x) <= kernels.ema_step(prev, x, dt, tau) <= max(prev, x)


def test_ema_step_edges() -> None:
    assert kernels.ema_step(math.nan, 0.3, 0.1, 0.2) == 0.3, "no history: start at the sample"
    assert kernels.ema_step(0.8, math.nan, 0.1, 0.2) == 0.8, "no evidence: unchanged"
    assert kernels.ema_step(0.8, 0.3, 0.0, 0.2) == 0.8, "repeated timestamp: unchanged"
    assert kernels.ema_step(0.8, 0.3, -0.1, 0.2) == 0.8, "backwards timestamp: unchanged"
    assert kernels.ema_step(0.8, 0.3, 0.1, 0.0) == 0.3, "tau 0: no smoothing"
    assert kernels.ema_step(0.8, 0.3, math.inf, 0.2) == 0.3, "an infinite gap forgets"
    assert kernels.ema_step(0.5, 1.0, 0.2, 0.2) == pytest.approx(1 - 0.5 / math.e)


@SETTINGS
@given(data=series(backwards=True), tau=taus, y0=unit | NAN)
def test_ema_series_matches_reference(data: tuple[Floats, Floats], tau: float, y0: float) -> None:
    """Step after step, rounding does not add up to a difference from the definition."""
    x, t = data
    out = ema_series(x, t, tau, y0)
    prev, last = y0, t[0]
    for i in range(len(x)):
        prev, last = ref_ema(prev, x[i], t[i] - last, tau), t[i]
        assert same(out[i], prev)


@SETTINGS
@given(data=series(x=values, backwards=True), tau=taus, y0=values | NAN)
def test_ema_series_stays_within_inputs_and_y0(
    data: tuple[Floats, Floats], tau: float, y0: float
) -> None:
    x, t = data
    out = ema_series(x, t, tau, y0)
    bounds = x if math.isnan(y0) else np.append(x, y0)
    assert np.all(out >= bounds.min()) and np.all(out <= bounds.max())


@SETTINGS
@given(data=series(backwards=True), tau=taus, y0=unit | NAN, cut=st.integers(0, 50))
def test_ema_prefix_stability_and_resume(
    data: tuple[Floats, Floats], tau: float, y0: float, cut: int
) -> None:
    """Resuming from an earlier output is exact: a restart from a stored confidence (a step over
    dt = 0) changes nothing."""
    x, t = data
    k = min(cut, len(x) - 1)
    whole = ema_series(x, t, tau, y0)
    np.testing.assert_array_equal(ema_series(x[: k + 1], t[: k + 1], tau, y0), whole[: k + 1])
    np.testing.assert_array_equal(ema_series(x[k:], t[k:], tau, whole[k]), whole[k:])


@SETTINGS
@given(prev=unit, x=unit, dt=st.floats(0.001, 1.0), tau=taus)
def test_ema_two_half_steps_equal_one_step(prev: float, x: float, dt: float, tau: float) -> None:
    """Time-aware: the frame rate does not change where the filter goes."""
    half = kernels.ema_step(kernels.ema_step(prev, x, dt / 2, tau), x, dt / 2, tau)
    assert half == pytest.approx(kernels.ema_step(prev, x, dt, tau), abs=1e-12)


@SETTINGS
@given(data=series(), c=unit, y0=unit, tau=taus)
def test_ema_of_a_constant_follows_the_exponential_at_any_intervals(
    data: tuple[Floats, Floats], c: float, y0: float, tau: float
) -> None:
    _, t = data
    out = ema_series(np.full(len(t), c), t, tau, y0)
    np.testing.assert_allclose(out, c + (y0 - c) * np.exp(-(t - t[0]) / tau), rtol=0, atol=1e-12)


@SETTINGS
@given(c=unit, y0=unit, tau=st.floats(0.05, 1.0), fps=st.sampled_from([10.0, 24.0, 30.0, 60.0]))
def test_ema_constant_input_converges(c: float, y0: float, tau: float, fps: float) -> None:
    t = np.arange(0, 20 * tau, 1 / fps)
    out = ema_series(np.full(len(t), c), t, tau, y0)
    assert out[-1] == pytest.approx(c, abs=1e-6)
    assert np.all(np.diff(np.abs(out - c)) <= 0), "a monotone approach, no overshoot"


def test_ema_series_first_sample_and_y0() -> None:
    x, t = np.array([0.2, 0.2]), np.array([0.0, 0.1])
    assert ema_series(x, t, 0.2)[0] == 0.2, "no history: the first sample"
    assert ema_series(x, t, 0.2, y0=1.0)[0] == 1.0, "y0 is the value at t_s[0]"


# --- adaptive smoothing (the gaze) ----------------------------------------------------------------
# The documented rule: ema_step with tau_s * max(0, 1 - ((x - prev) / jump) ** 2). Checked by what
# it promises, not by re-deriving it: at least as far as the plain EMA, never past x, a change of
# jump or more taken whole, a larger change followed by a larger fraction, a tiny one held as the
# plain EMA holds it.

jumps = st.floats(0.01, 2.0)


@SETTINGS
@given(prev=values, x=values, dt=st.floats(0.0, 10.0), tau=st.floats(0.0, 10.0), jump=jumps)
def test_adaptive_ema_step_lies_between_the_plain_ema_and_x(
    prev: float, x: float, dt: float, tau: float, jump: float
) -> None:
    y = kernels.adaptive_ema_step(prev, x, dt, tau, jump)
    plain = kernels.ema_step(prev, x, dt, tau)
    assert min(plain, x) <= y <= max(plain, x)
    assert min(prev, x) <= y <= max(prev, x), "exactly: never past the sample"


@SETTINGS
@given(
    prev=values,
    over=st.floats(1.0, 1e3),
    sign=st.sampled_from([-1.0, 1.0]),
    dt=st.floats(1e-6, 10.0),
    tau=taus,
    jump=jumps,
)
def test_adaptive_ema_step_takes_a_change_of_jump_or_more_whole(
    prev: float, over: float, sign: float, dt: float, tau: float, jump: float
) -> None:
    x = prev + sign * over * jump
    assert kernels.adaptive_ema_step(prev, x, dt, tau, jump) == x


@SETTINGS
@given(
    prev=unit,
    small=st.floats(1e-3, 1.0),
    larger=st.floats(1e-3, 1.0),
    sign=st.sampled_from([-1.0, 1.0]),
    dt=st.floats(1e-3, 1.0),
    tau=taus,
    jump=jumps,
)
def test_adaptive_ema_step_follows_a_larger_change_by_a_larger_fraction(
    prev: float, small: float, larger: float, sign: float, dt: float, tau: float, jump: float
) -> None:
    small, larger = sorted((small, larger))

    def followed(change: float) -> float:
        x = prev + sign * change * jump
        return (kernels.adaptive_ema_step(prev, x, dt, tau, jump) - prev) / (x - prev)

    assert followed(small) <= followed(larger) + 1e-9


@SETTINGS
@given(prev=unit, sign=st.sampled_from([-1.0, 1.0]), dt=st.floats(1e-3, 1.0), tau=taus)
def test_adaptive_ema_step_holds_a_tiny_change_as_the_plain_ema(
    prev: float, sign: float, dt: float, tau: float
) -> None:
    x = prev + sign * 1e-4  # a ten-thousandth of the jump: tau_s shrinks by 1e-8
    plain = (kernels.ema_step(prev, x, dt, tau) - prev) / (x - prev)
    adaptive = (kernels.adaptive_ema_step(prev, x, dt, tau, 1.0) - prev) / (x - prev)
    assert adaptive == pytest.approx(plain, rel=1e-6)


@SETTINGS
@given(prev=values | NAN, x=values | NAN, dt=st.floats(-1.0, 10.0) | NAN, tau=taus)
def test_adaptive_ema_step_with_an_infinite_jump_is_the_plain_ema(
    prev: float, x: float, dt: float, tau: float
) -> None:
    assert same(kernels.adaptive_ema_step(prev, x, dt, tau, math.inf), ref_ema(prev, x, dt, tau))


def test_adaptive_ema_step_edges() -> None:
    step = kernels.adaptive_ema_step
    assert step(math.nan, 0.3, 0.1, 0.3, 0.35) == 0.3, "no history: start at the sample"
    assert step(0.1, math.nan, 0.1, 0.3, 0.35) == 0.1, "no evidence: unchanged"
    assert step(0.1, 0.2, 0.0, 0.3, 0.35) == 0.1, "repeated timestamp: unchanged"
    assert step(0.1, 0.2, -0.1, 0.3, 0.35) == 0.1, "backwards timestamp: unchanged"
    assert step(0.1, 0.2, 0.1, 0.0, 0.35) == 0.2, "tau 0: no smoothing"
    # Half the jump: the time constant is three quarters of tau_s.
    assert step(0.0, 0.5, 0.3, 0.4, 1.0) == pytest.approx(0.5 * (1 - math.exp(-1.0)))


@pytest.mark.parametrize("jump", [0.0, -0.35, math.nan])
def test_adaptive_ema_step_refuses_a_jump_that_is_not_positive(jump: float) -> None:
    with pytest.raises(ValueError, match="jump must be > 0"):
        kernels.adaptive_ema_step(0.1, 0.2, 0.033, 0.3, jump)


# --- hysteresis -----------------------------------------------------------------------------------


@SETTINGS
@given(
    data=series(x=scores, backwards=True),
    th=thresholds,
    min_away=durations,
    min_back=durations,
    away0=st.booleans(),
)
def test_hysteresis_follows_the_rule(
    data: tuple[Floats, Floats],
    th: tuple[float, float],
    min_away: float,
    min_back: float,
    away0: bool,
) -> None:
    x, t = data
    lo, hi = th
    expected = ref_decisions(x.tolist(), t.tolist(), lo, hi, min_away, min_back, away0)
    assert decide(x, t, lo, hi, min_away, min_back, away0).tolist() == expected


@st.composite
def between(draw: st.DrawFn, th: tuple[float, float]) -> float:
    """A score that does not cross: a threshold itself, anything between the two, or NaN."""
    lo, hi = th
    inside = min(max(lo + draw(unit) * (hi - lo), lo), hi)
    return draw(st.sampled_from([lo, hi, inside, math.nan]))


# A moment of a decision: the time, the state, and how long a change has been pending (NaN: none).
moments = st.tuples(st.floats(0.0, 10.0), st.booleans(), durations | NAN)


@SETTINGS
@given(th=thresholds, data=st.data(), moment=moments, min_away=durations, min_back=durations)
def test_a_score_that_does_not_cross_keeps_the_state_and_cancels_what_is_pending(
    th: tuple[float, float],
    data: st.DataObject,
    moment: tuple[float, bool, float],
    min_away: float,
    min_back: float,
) -> None:
    t, away, pending_for = moment
    score = data.draw(between(th))
    state = kernels.hysteresis_step(score, t, away, t - pending_for, *th, min_away, min_back)
    assert state[0] is away and math.isnan(state[1])


@SETTINGS
@given(th=thresholds, moment=moments, minimum=durations, other=durations)
def test_a_crossing_flips_once_it_has_lasted_its_own_minimum(
    th: tuple[float, float], moment: tuple[float, bool, float], minimum: float, other: float
) -> None:
    """The minimum of the way it crosses counts (min_away_s to leave, min_back_s to come back),
    not the other; nothing pending starts the wait now; a flip leaves nothing pending."""
    t, away, pending_for = moment
    lo, hi = th
    score = math.nextafter(hi, 2.0) if away else math.nextafter(lo, -1.0)
    since = t - pending_for if not math.isnan(pending_for) else t
    mins = (other, minimum) if away else (minimum, other)
    state = kernels.hysteresis_step(score, t, away, t - pending_for, lo, hi, *mins)
    if t - since >= minimum:
        assert state[0] is not away and math.isnan(state[1])
    else:
        assert state == (away, since)


@SETTINGS
@given(data=series(x=scores), th=thresholds, min_away=durations, cut=st.integers(1, 50))
def test_hysteresis_prefix_stability(
    data: tuple[Floats, Floats], th: tuple[float, float], min_away: float, cut: int
) -> None:
    x, t = data
    whole = decide(x, t, *th, min_away, 0.1)
    np.testing.assert_array_equal(decide(x[:cut], t[:cut], *th, min_away, 0.1), whole[:cut])


@st.composite
def jittered_times(draw: st.DrawFn, duration_s: float = 4.0) -> Floats:
    """Frame times over at least ``duration_s`` at 5 to 60 fps, each interval jittered by up to
    +-50 % (a camera under load): at most 0.3 s apart."""
    period = 1 / draw(st.floats(5.0, 60.0))
    jitter = draw(st.lists(st.floats(0.5, 1.5), min_size=1, max_size=16))
    n = int(duration_s / period * 2) + 2  # enough even if every interval is half a period
    return np.cumsum([0.0, *(period * np.resize(jitter, n))])


@SETTINGS
@given(
    t=jittered_times(duration_s=6.0),
    min_away=st.floats(0.05, 1.0),
    dips=st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.999)), max_size=3),
    depth=st.floats(0.0, 0.39),
)
def test_dips_shorter_than_min_away_never_flip(
    t: Floats, min_away: float, dips: list[tuple[float, float]], depth: float
) -> None:
    """Blinks: several, each shorter than min_away_s, at any frame rate. Dip i starts in the
    first 0.5 s of its own 2 s slot, so at least one frame at full score separates two dips."""
    score = np.ones_like(t)
    for i, (offset, fraction) in enumerate(dips):
        start = 2.0 * i + offset
        score[(t >= start) & (t < start + fraction * min_away)] = depth
    assert not decide(score, t, 0.4, 0.55, min_away, 0.1).any()


@SETTINGS
@given(
    t=jittered_times(),
    min_s=st.floats(0.0, 1.0),
    drop_at=st.floats(0.0, 2.0),
    leaving=st.booleans(),
)
def test_a_sustained_change_flips_at_the_first_frame_min_duration_after_the_crossing(
    t: Floats, min_s: float, drop_at: float, leaving: bool
) -> None:
    """Leaving (score drops to 0 while present) or coming back (score rises to 1 while away)."""
    crossed = t >= drop_at
    score = np.where(crossed, 0.0, 1.0) if leaving else np.where(crossed, 1.0, 0.0)
    decided = decide(score, t, 0.4, 0.55, min_s, min_s, away=not leaving)
    changed = decided if leaving else ~decided
    crossing_t = t[np.argmax(crossed)]
    expected = crossed & (t - crossing_t >= min_s)
    assert expected.any(), "the strategy leaves min_s of frames after the crossing"
    np.testing.assert_array_equal(changed, expected)
    longest_interval = np.diff(t).max()  # at most 0.3 s: 5 fps, +50 %
    assert t[np.argmax(changed)] <= crossing_t + min_s + longest_interval, "within a frame"


def test_hysteresis_edges() -> None:
    nan = math.nan
    # Pending starts at the first crossing and survives further crossings; a score back at the
    # threshold clears it; a NaN score is not a crossing.
    assert kernels.hysteresis_step(0.3, 1.0, False, nan, 0.4, 0.6, 0.5, 0.5) == (False, 1.0)
    assert kernels.hysteresis_step(0.3, 1.2, False, 1.0, 0.4, 0.6, 0.5, 0.5) == (False, 1.0)
    assert kernels.hysteresis_step(0.3, 1.5, False, 1.0, 0.4, 0.6, 0.5, 0.5)[0] is True
    assert math.isnan(kernels.hysteresis_step(0.4, 1.2, False, 1.0, 0.4, 0.6, 0.5, 0.5)[1])
    assert math.isnan(kernels.hysteresis_step(nan, 1.2, False, 1.0, 0.4, 0.6, 0.5, 0.5)[1])
    # Between the thresholds nothing moves, in either state.
    assert kernels.hysteresis_step(0.5, 9.0, True, nan, 0.4, 0.6, 0.0, 0.0)[0] is True
    assert kernels.hysteresis_step(0.5, 9.0, False, nan, 0.4, 0.6, 0.0, 0.0)[0] is False
    t = np.arange(5) / 30
    assert decide(np.zeros(5), t, 0.4, 0.5, 1.0, 1.0, away=True).all()


# --- the wrapper refuses what the kernel would misread -------------------------------------------


@pytest.mark.parametrize(
    ("enter_below", "exit_above", "min_away_s", "min_back_s", "message"),
    [
        (0.6, 0.5, 0.1, 0.1, r"enter_below \(0.6\) must not exceed exit_above \(0.5\)"),
        (math.nan, 0.5, 0.1, 0.1, r"enter_below \(nan\)"),
        (0.4, 0.5, -1.0, 0.1, r"min_away_s \(-1.0\) and min_back_s \(0.1\) must be >= 0"),
        (0.4, 0.5, 0.1, math.nan, r"min_back_s \(nan\) must be >= 0"),
    ],
)
def test_bad_thresholds_are_clear_errors(
    enter_below: float, exit_above: float, min_away_s: float, min_back_s: float, message: str
) -> None:
    decision = (enter_below, exit_above, min_away_s, min_back_s)
    with pytest.raises(ValueError, match=message):
        kernels.hysteresis_step(0.5, 0.0, False, math.nan, *decision)


def test_equal_thresholds_are_allowed() -> None:
    assert kernels.hysteresis_step(0.3, 0.0, False, math.nan, 0.5, 0.5, 0.0, 0.0)[0] is True


def test_warm_up_calls_every_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server runs warm_up before it listens so that no frame pays a kernel's first call:
    it must call each one (through its explicit signature: a wrong argument type raises)."""
    called: list[str] = []

    def recording(name: str, kernel: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            called.append(name)
            return kernel(*args)

        return call

    every = sorted(set(kernels.__all__) - {"warm_up"})
    for name in every:
        monkeypatch.setattr(kernels, name, recording(name, getattr(kernels, name)))
    kernels.warm_up()
    assert sorted(set(called)) == every


def test_the_kernel_benchmark_times_every_kernel() -> None:
    """``python -m benchmarks kernels`` has a row for each kernel (its quick mode: no timing is
    asserted, only that each kernel is there)."""
    from benchmarks import bench_kernels

    rows = bench_kernels.run(quick=True)["rows"]
    assert sorted(row["kernel"].split()[0] for row in rows) == sorted(
        set(kernels.__all__) - {"warm_up"}
    )


# --- eye centres: means of gradients --------------------------------------------------------------


def ref_gradient(patch: list[list[float]]) -> tuple[list[list[float]], list[list[float]]]:
    """numpy.gradient's rule: central differences inside, one-sided at the edges, 0 across a
    single row or column."""
    h, w = len(patch), len(patch[0])

    def diff(get: Callable[[int], float], i: int, n: int) -> float:
        if n == 1:
            return 0.0
        if i == 0:
            return get(1) - get(0)
        if i == n - 1:
            return get(i) - get(i - 1)
        return (get(i + 1) - get(i - 1)) * 0.5

    gx = [[diff(lambda c, r=r: patch[r][c], c, w) for c in range(w)] for r in range(h)]
    gy = [[diff(lambda r, c=c: patch[r][c], r, h) for c in range(w)] for r in range(h)]
    return gx, gy


def ref_means_of_gradients(
    patch: list[list[float]], weight: list[list[float]], threshold_sd: float
) -> list[list[float]]:
    """Timm & Barth's objective, as the paper writes it: for every candidate c, the mean over
    strong gradients g_i at x_i of max(0, d_i . g_i)^2, d_i = (x_i - c) / |x_i - c|, times the
    candidate's weight."""
    h, w = len(patch), len(patch[0])
    gx, gy = ref_gradient(patch)
    mags = [math.hypot(gx[r][c], gy[r][c]) for r in range(h) for c in range(w)]
    mean = sum(mags) / len(mags)
    sd = math.sqrt(sum((m - mean) ** 2 for m in mags) / len(mags))
    strong = [
        (c, r, gx[r][c] / m, gy[r][c] / m)
        for r in range(h)
        for c in range(w)
        if (m := math.hypot(gx[r][c], gy[r][c])) > mean + threshold_sd * sd and m > 0
    ]
    out = []
    for r in range(h):
        row = []
        for c in range(w):
            total = 0.0
            for x, y, ux, uy in strong:
                norm = math.hypot(x - c, y - r)
                if norm > 0:
                    total += max(0.0, ((x - c) * ux + (y - r) * uy) / norm) ** 2
            row.append(weight[r][c] * total / len(strong) if strong else 0.0)
        out.append(row)
    return out


@st.composite
def patches(draw: st.DrawFn, max_side: int = 12) -> Floats:
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    flat = draw(st.lists(st.integers(0, 255), min_size=h * w, max_size=h * w))
    return np.array(flat, dtype=np.float64).reshape(h, w)


def check_centre(patch: Floats, weight: Floats, threshold_sd: float) -> None:
    out = np.empty(patch.shape)
    x, y, peak = kernels.eye_centre(patch, weight, threshold_sd, out=out)
    want = np.array(ref_means_of_gradients(patch.tolist(), weight.tolist(), threshold_sd))
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-12)
    assert not np.isnan(out).any() and math.isfinite(peak)
    # The answer is the first largest value of the kernel's own map (row-major), and its peak.
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert (x, y, peak) == (float(c), float(r), out[r, c])
    assert 0.0 <= peak <= weight.max() + 1e-12, "a mean of squared cosines, times the weight"


@SETTINGS
@given(patch=patches(), threshold_sd=st.floats(0.0, 2.0), unweighted=st.booleans())
def test_eye_centre_matches_reference(patch: Floats, threshold_sd: float, unweighted: bool) -> None:
    weight = np.ones(patch.shape) if unweighted else (255.0 - patch) / 255.0
    check_centre(patch, weight, threshold_sd)


@SETTINGS
@given(h=st.integers(1, 12), w=st.integers(1, 12), level=st.floats(0.0, 255.0), sd=st.floats(0, 2))
def test_a_flat_patch_has_no_centre_and_no_nan(h: int, w: int, level: float, sd: float) -> None:
    patch = np.full((h, w), level)
    check_centre(patch, np.ones((h, w)), sd)
    assert kernels.eye_centre(patch) == (0.0, 0.0, 0.0)


@SETTINGS
@given(value=st.floats(0.0, 255.0), weight=st.floats(0.0, 1.0))
def test_a_one_pixel_patch(value: float, weight: float) -> None:
    assert kernels.eye_centre(np.array([[value]]), np.array([[weight]])) == (0.0, 0.0, 0.0)


@SETTINGS
@given(
    cx=st.integers(6, 17),
    cy=st.integers(5, 10),
    radius=st.integers(3, 5),
    dark=st.integers(0, 80),
    bright=st.integers(150, 255),
)
def test_a_dark_disc_is_found_at_its_centre(
    cx: int, cy: int, radius: int, dark: int, bright: int
) -> None:
    """A pupil: a dark disc on a bright patch. Found within a pixel, with a strong peak."""
    rows, cols = np.mgrid[0:16, 0:24]
    patch = np.where((cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2, dark, bright).astype(float)
    x, y, peak = kernels.eye_centre(patch, (255.0 - patch) / 255.0)
    assert abs(x - cx) <= 1 and abs(y - cy) <= 1
    assert peak > 0.3


def test_eye_centre_refuses_what_it_would_misread() -> None:
    with pytest.raises(ValueError, match="non-empty 2-D"):
        kernels.eye_centre(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-empty 2-D"):
        kernels.eye_centre(np.zeros(4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"weight must have the patch's shape \(2, 2\)"):
        kernels.eye_centre(np.zeros((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        kernels.eye_centre(np.array([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="weight >= 0"):
        kernels.eye_centre(np.zeros((2, 2)), -np.ones((2, 2)))
    with pytest.raises(ValueError, match="threshold_sd"):
        kernels.eye_centre(np.zeros((2, 2)), threshold_sd=math.nan)
    with pytest.raises(
        ValueError, match=r"out must be a writeable float64 .* got float64 \(2, 3\)"
    ):
        kernels.eye_centre(np.zeros((2, 2)), out=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"got float32 \(2, 2\)"):
        # numba would refuse it too, with a dispatch error that does not say which argument
        kernels.eye_centre(np.zeros((2, 2)), out=np.zeros((2, 2), dtype=np.float32))
    frozen = np.zeros((2, 2))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"got read-only float64 \(2, 2\)"):
        kernels.eye_centre(np.zeros((2, 2)), out=frozen)


def test_eye_centre_fills_out_in_place_even_strided() -> None:
    patch = np.random.default_rng(2).integers(0, 256, (6, 5)).astype(np.float64)
    expected = np.empty(patch.shape)
    centre = kernels.eye_centre(patch, out=expected)
    grid = np.zeros((6, 10))
    assert kernels.eye_centre(patch, out=grid[:, 1::2]) == centre
    np.testing.assert_array_equal(grid[:, 1::2], expected)
    assert not grid[:, ::2].any(), "only the view's cells are written"


def test_eye_centre_takes_strided_read_only_and_integer_patches() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (20, 30)).astype(np.float64)
    expected = kernels.eye_centre(big[::2, ::3].copy())
    big.flags.writeable = False
    assert kernels.eye_centre(big[::2, ::3]) == expected
    as_bytes = big.astype(np.uint8)
    assert kernels.eye_centre(as_bytes) == kernels.eye_centre(as_bytes.astype(np.float64))  # type: ignore[arg-type]

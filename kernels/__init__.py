"""numba kernels: the filters behind ``confidence`` and ``looking_away``. Pure, no I/O.

numba hides signatures, so this module wraps each compiled kernel in a typed function; the
wrappers also check array shapes and thresholds, which the kernels themselves do not. The raw
kernels (for calling from other numba code) are ``kernels.smoothing`` and ``kernels.hysteresis``.

Measured here (``python -m benchmarks.bench_kernels``, 2-core Xeon VM, numba 0.68, numpy 2.4),
per call from Python: ``ema_step`` ~225 ns through this wrapper (~200 ns calling the dispatcher
directly) against ~175 ns for the same code run by CPython; ``hysteresis_step`` ~340 ns (~295 ns
direct: eight arguments to unbox, a tuple to box) against ~90 ns. So numba does not pay off on
one scalar per frame (docs/design.md: ~360 vs ~160 ns). It does on series: ~5.7 and ~3.7 ns
per element against ~245 and ~130 ns (about 43x and 36x). The live path uses the compiled steps
all the same: ~0.3 us more per frame, against a tracker frame of about a millisecond, is noise,
and one implementation then serves the live path, the offline series and the tests. (Calling
the compiled overload's ``entry_point`` skips numba's type dispatch, ~110 and ~155 ns, but it is
not public API: not worth it for 0.3 us.)

Start-up: the signatures are explicit, so the kernels compile (or load from the on-disk cache)
when this package is imported: ~0.40 s with an empty cache, ~0.12 s from the cache (on top of
~0.15 s for importing numba). :func:`warm_up` then costs ~6 ms, the first call of each kernel.
"""

from __future__ import annotations

import math
from typing import NoReturn, TypeVar

import numpy as np
from numpy.typing import NDArray

from kernels import eyecentre as _eyecentre
from kernels import hysteresis as _hysteresis
from kernels import smoothing as _smoothing

__all__ = [
    "ema_series",
    "ema_step",
    "eye_centre",
    "hysteresis_series",
    "hysteresis_step",
    "warm_up",
]

_Scalar = TypeVar("_Scalar", bound=np.generic)


def ema_step(prev: float, x: float, dt_s: float, tau_s: float) -> float:
    """Smooth one sample: ``prev + (1 - exp(-dt_s / tau_s)) * (x - prev)``.

    ``prev`` NaN (no history) gives ``x``; ``x`` NaN (no evidence) or ``dt_s`` not positive (a
    repeated or backwards timestamp) gives ``prev``; ``tau_s <= 0`` gives ``x``. The result lies
    between ``prev`` and ``x``, exactly. See :func:`kernels.smoothing.ema_step`.
    """
    # An annotated name rather than float(...): numba already returns a float (and, below, a
    # tuple of bool and float), so converting again would only add to the call.
    y: float = _smoothing.ema_step(prev, x, dt_s, tau_s)
    return y


def ema_series(
    x: NDArray[np.float64],
    t_s: NDArray[np.float64],
    tau_s: float,
    y0: float = math.nan,
    out: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Smooth a series sampled at times ``t_s`` (seconds); the same as repeated :func:`ema_step`.

    ``y0`` is the value at ``t_s[0]`` before ``x[0]`` is seen (NaN: no history), so the output
    starts at ``x[0]`` when ``y0`` is NaN and at ``y0`` otherwise. Resuming from an earlier output
    is exact: ``ema_series(x[k:], t_s[k:], tau_s, y0=out[k])`` equals ``out[k:]``. Writes into
    ``out`` when given (and returns it). See :func:`kernels.smoothing.ema_series`.
    """
    x, t_s = _vectors("x", x, "t_s", t_s)
    out = _out(out, x.shape[0], np.float64)
    y: NDArray[np.float64] = _smoothing.ema_series(x, t_s, tau_s, y0, out)
    return y


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
    """Decide one sample: the new ``(away, pending_since)``; start from ``(False, nan)``.

    Flips to away once the score has stayed below ``enter_below`` for ``min_away_s``, and back once
    it has stayed above ``exit_above`` for ``min_back_s``. See
    :func:`kernels.hysteresis.hysteresis_step`.
    """
    # Inline rather than a helper call: ~10 ns against ~30 ns, on every frame. `not (a <= b)` also
    # refuses NaN, which would never (or always) cross.
    if not (enter_below <= exit_above and min_away_s >= 0.0 and min_back_s >= 0.0):
        _refuse_decision(enter_below, exit_above, min_away_s, min_back_s)
    state: tuple[bool, float] = _hysteresis.hysteresis_step(
        score, t_s, away, pending_since, enter_below, exit_above, min_away_s, min_back_s
    )
    return state


def hysteresis_series(
    score: NDArray[np.float64],
    t_s: NDArray[np.float64],
    enter_below: float,
    exit_above: float,
    min_away_s: float,
    min_back_s: float,
    away0: bool = False,
    out: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Decide a series, starting from ``away0`` with nothing pending; the same as repeated
    :func:`hysteresis_step`. Writes into ``out`` when given (and returns it)."""
    if not (enter_below <= exit_above and min_away_s >= 0.0 and min_back_s >= 0.0):
        _refuse_decision(enter_below, exit_above, min_away_s, min_back_s)
    score, t_s = _vectors("score", score, "t_s", t_s)
    out = _out(out, score.shape[0], np.bool_)
    away: NDArray[np.bool_] = _hysteresis.hysteresis_series(
        score, t_s, enter_below, exit_above, min_away_s, min_back_s, away0, out
    )
    return away


def eye_centre(
    patch: NDArray[np.float64],
    weight: NDArray[np.float64] | None = None,
    threshold_sd: float = 0.3,
    out: NDArray[np.float64] | None = None,
) -> tuple[float, float, float]:
    """The eye centre in a grey ``patch`` by means of gradients: ``(x, y, peak)`` in the patch's
    pixels (column, row), ``peak`` the objective there, in [0, max(weight)].

    ``weight`` (default: all ones) is a prior per candidate, e.g. the inverted blurred intensity
    (pupils are dark); ``threshold_sd``: gradients weaker than the mean magnitude plus this many
    standard deviations are ignored (Timm & Barth use 0.3). Writes the objective map into ``out``
    when given. A patch with no gradient gives ``(0, 0, 0)``, never NaN. See
    :func:`kernels.eyecentre.means_of_gradients`.
    """
    patch = np.asarray(patch, dtype=np.float64)
    if patch.ndim != 2 or patch.size == 0:
        raise ValueError(f"patch must be a non-empty 2-D array, got shape {patch.shape}")
    weight = np.ones(patch.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    if weight.shape != patch.shape:
        raise ValueError(f"weight must have the patch's shape {patch.shape}, got {weight.shape}")
    # Small arrays: checking them costs ~1 us, and a NaN would make every comparison false.
    if not (np.isfinite(patch).all() and np.isfinite(weight).all() and weight.min() >= 0.0):
        raise ValueError("patch and weight must be finite, and weight >= 0")
    if not threshold_sd >= 0.0:
        raise ValueError(f"threshold_sd must be >= 0, got {threshold_sd}")
    if out is None:
        out = np.empty(patch.shape)
    elif out.shape != patch.shape or out.dtype != np.float64 or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable float64 array of shape {patch.shape}, got "
            f"{'read-only ' if not out.flags.writeable else ''}{out.dtype} {out.shape}"
        )
    centre: tuple[float, float, float] = _eyecentre.means_of_gradients(
        patch, weight, threshold_sd, out
    )
    return centre


def warm_up() -> None:
    """Compile, or load from the on-disk cache, every kernel now, so the first frame does not pay
    for it. The server calls this at start-up, before it listens."""
    x = np.zeros(2)
    t = np.arange(2.0)
    ema_step(math.nan, 0.0, 0.0, 1.0)
    ema_series(x, t, 1.0)
    hysteresis_step(0.0, 0.0, False, math.nan, 0.4, 0.6, 0.1, 0.1)
    hysteresis_series(x, t, 0.4, 0.6, 0.1, 0.1)
    eye_centre(np.zeros((2, 2)))


def _refuse_decision(
    enter_below: float, exit_above: float, min_away_s: float, min_back_s: float
) -> NoReturn:
    if not enter_below <= exit_above:
        raise ValueError(
            f"enter_below ({enter_below}) must not exceed exit_above ({exit_above}): "
            "the decision would flip back and forth on one score"
        )
    raise ValueError(
        f"min_away_s ({min_away_s}) and min_back_s ({min_back_s}) must be >= 0 seconds"
    )


def _vectors(
    a_name: str, a: NDArray[np.float64], b_name: str, b: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must be 1-D arrays of the same length, "
            f"got {a_name} {a.shape}, {b_name} {b.shape}"
        )
    return a, b


def _out(out: NDArray[_Scalar] | None, n: int, dtype: type[_Scalar]) -> NDArray[_Scalar]:
    if out is None:
        return np.empty(n, dtype=dtype)
    # Any 1-D layout will do (the kernels take strided arrays), but not another dtype: numba would
    # refuse it with a dispatch error that does not say which argument is wrong.
    if out.shape != (n,) or out.dtype != dtype or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable 1-D {np.dtype(dtype).name} array of length {n}, "
            f"got {'read-only ' if not out.flags.writeable else ''}{out.dtype} {out.shape}"
        )
    return out

"""numba kernels: the filters behind ``confidence`` and ``looking_away``. Pure, no I/O.

numba hides signatures, so this module wraps each compiled kernel in a typed function; the
wrappers also check array shapes and thresholds, which the kernels themselves do not.

Measured here (``python -m benchmarks kernels``, 2-core VM): called from Python through these
wrappers, ``ema_step`` costs ~225 ns and ``hysteresis_step`` ~370 ns, against ~140 and ~95 ns
for plain-Python versions: numba does not pay off on one scalar per frame. It does on series:
~4-5 ns per element against ~210-330 ns (50-70x). The live path uses the compiled steps all
the same: ~0.6 us against a ~2 ms frame is noise, and one implementation then serves the live
path, the offline series and the tests.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from kernels import hysteresis as _hysteresis
from kernels import smoothing as _smoothing

__all__ = ["ema_series", "ema_step", "hysteresis_series", "hysteresis_step", "warm_up"]


def ema_step(prev: float, x: float, dt_s: float, tau_s: float) -> float:
    """Smooth one sample; see :func:`kernels.smoothing.ema_step`."""
    return float(_smoothing.ema_step(prev, x, dt_s, tau_s))


def ema_series(
    x: NDArray[np.float64],
    t_s: NDArray[np.float64],
    tau_s: float,
    y0: float = math.nan,
    out: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Smooth a whole series; see :func:`kernels.smoothing.ema_series`."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    t_s = np.ascontiguousarray(t_s, dtype=np.float64)
    _same_length(x=x, t_s=t_s)
    out = _out(out, x.shape, np.float64)
    result: NDArray[np.float64] = _smoothing.ema_series(x, t_s, float(tau_s), float(y0), out)
    return result


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
    """Decide one sample; see :func:`kernels.hysteresis.hysteresis_step`."""
    new_away, new_pending = _hysteresis.hysteresis_step(
        score, t_s, away, pending_since, enter_below, exit_above, min_away_s, min_back_s
    )
    return bool(new_away), float(new_pending)


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
    """Decide a whole series; see :func:`kernels.hysteresis.hysteresis_series`."""
    if not enter_below <= exit_above:
        raise ValueError(f"enter_below ({enter_below}) must not exceed exit_above ({exit_above})")
    if min_away_s < 0 or min_back_s < 0:
        raise ValueError("min_away_s and min_back_s must be >= 0")
    score = np.ascontiguousarray(score, dtype=np.float64)
    t_s = np.ascontiguousarray(t_s, dtype=np.float64)
    _same_length(score=score, t_s=t_s)
    out = _out(out, score.shape, np.bool_)
    result: NDArray[np.bool_] = _hysteresis.hysteresis_series(
        score, t_s, enter_below, exit_above, min_away_s, min_back_s, bool(away0), out
    )
    return result


def warm_up() -> None:
    """Compile or load every kernel now, so the first frame does not pay for it."""
    x = np.zeros(2)
    t = np.arange(2.0)
    ema_step(math.nan, 0.0, 0.0, 1.0)
    ema_series(x, t, 1.0)
    hysteresis_step(0.0, 0.0, False, math.nan, 0.4, 0.6, 0.1, 0.1)
    hysteresis_series(x, t, 0.4, 0.6, 0.1, 0.1)


def _same_length(**arrays: NDArray[np.generic]) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        detail = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected 1-D arrays of one length, got {detail}")


def _out(out: NDArray[np.generic] | None, shape: tuple[int, ...], dtype: type) -> NDArray:  # type: ignore[type-arg]
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a contiguous {np.dtype(dtype).name} array of shape {shape}, "
            f"got {out.dtype} {out.shape}"
        )
    return out

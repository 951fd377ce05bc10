"""numba kernels: the filters behind ``confidence``, ``looking_away`` and ``gaze``, and the eye
centre. Pure, no I/O.

The tracker calls :func:`ema_step` and :func:`hysteresis_step` once a frame on the live path,
:func:`adaptive_ema_step` twice (the gaze's two components), and :func:`eye_centre` once an
eye. One scalar a frame does not pay for numba's call overhead, but that overhead is noise
against a frame, and one compiled implementation then serves the live path and the tests;
per-pixel work (the eye centre) is where numba pays. Figures: docs/performance.md, from
``python -m benchmarks kernels``.

The server runs them ahead-of-time compiled: ``kernels._compiled``, built by ``pip install``
from the njit sources in ``kernels.smoothing``, ``kernels.hysteresis`` and ``kernels.eyecentre``
(how, and why not the JIT: ``kernels/build.py``). Importing this package does not import numba;
the raw njit kernels (for calling from other numba code, and the tests' comparison of the two)
still do. A compiled module built from other sources than the ones beside it is refused, with
how to rebuild it. Where the install found no C compiler there is no compiled module, and the
same kernels run on numba's JIT (``kernels._jit``): :data:`COMPILED` says which, and the server
warns as it starts.

This module wraps each compiled kernel in a typed function; the wrappers also check thresholds
and arrays, which the kernels themselves do not.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Final, NoReturn

import numpy as np
from numpy.typing import NDArray

from kernels import build as _build

COMPILED: Final = importlib.util.find_spec("kernels._compiled") is not None
"""Whether the kernels run compiled ahead of time (else numba's JIT: no C compiler at install)."""
if COMPILED:
    from kernels import _compiled

    if _compiled.stamp() != _build.stamp():
        raise ImportError(
            "kernels._compiled was built from other sources than kernels/*.py beside it: "
            "rebuild it (pip install -e ., or python kernels/build.py)"
        )
else:
    from kernels import _jit as _compiled  # type: ignore[no-redef]

__all__ = [
    "adaptive_ema_step",
    "ema_step",
    "eye_centre",
    "hysteresis_step",
    "warm_up",
]


def ema_step(prev: float, x: float, dt_s: float, tau_s: float) -> float:
    """Smooth one sample: ``prev + (1 - exp(-dt_s / tau_s)) * (x - prev)``.

    ``prev`` NaN (no history) gives ``x``; ``x`` NaN (no evidence) or ``dt_s`` not positive (a
    repeated or backwards timestamp) gives ``prev``; ``tau_s <= 0`` gives ``x``. The result lies
    between ``prev`` and ``x``, exactly. See :func:`kernels.smoothing.ema_step`.
    """
    # An annotated name rather than float(...): the kernel already returns a float (and, below,
    # a tuple of bool and float), so converting again would only add to the call.
    y: float = _compiled.ema_step(prev, x, dt_s, tau_s)
    return y


def adaptive_ema_step(prev: float, x: float, dt_s: float, tau_s: float, jump: float) -> float:
    """:func:`ema_step` with the time constant ``tau_s * max(0, 1 - ((x - prev) / jump) ** 2)``:
    still on small changes, and a change of ``jump`` or more followed at once. ``jump`` must be
    positive (infinite: plain :func:`ema_step`). The result lies between ``prev`` and ``x``,
    exactly. See :func:`kernels.smoothing.adaptive_ema_step`.
    """
    # `not jump > 0` refuses NaN too.
    if not jump > 0.0:
        raise ValueError(f"jump must be > 0, got {jump}")
    y: float = _compiled.adaptive_ema_step(prev, x, dt_s, tau_s, jump)
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
    it has stayed above ``exit_above`` for ``min_back_s``. A score between the thresholds (either
    one included) or NaN keeps the state and cancels a pending change. A series is this step
    repeated from ``(away0, nan)``. See :func:`kernels.hysteresis.hysteresis_step`.
    """
    # Inline rather than a helper call: ~10 ns against ~30 ns, on every frame. `not (a <= b)` also
    # refuses NaN, which would never (or always) cross.
    if not (enter_below <= exit_above and min_away_s >= 0.0 and min_back_s >= 0.0):
        _refuse_decision(enter_below, exit_above, min_away_s, min_back_s)
    state: tuple[bool, float] = _compiled.hysteresis_step(
        score, t_s, away, pending_since, enter_below, exit_above, min_away_s, min_back_s
    )
    return state


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
    centre: tuple[float, float, float] = _compiled.means_of_gradients(
        patch, weight, threshold_sd, out
    )
    return centre


def warm_up() -> None:
    """Call every kernel once, so that a first frame pays nothing for them (the compiled module
    has no set-up of its own; this stays so that a JIT kernel added later is warmed too)."""
    ema_step(math.nan, 0.0, 0.0, 1.0)
    adaptive_ema_step(math.nan, 0.0, 0.0, 1.0, 1.0)
    hysteresis_step(0.0, 0.0, False, math.nan, 0.4, 0.6, 0.1, 0.1)
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

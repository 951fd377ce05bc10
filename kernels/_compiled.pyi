# The ahead-of-time compiled kernels (kernels/build.py builds the module; kernels/__init__.py
# wraps it). Signatures as exported there.
import numpy as np
from numpy.typing import NDArray

def ema_step(prev: float, x: float, dt_s: float, tau_s: float, /) -> float: ...
def adaptive_ema_step(
    prev: float, x: float, dt_s: float, tau_s: float, jump: float, /
) -> float: ...
def hysteresis_step(
    score: float,
    t_s: float,
    away: bool,
    pending_since: float,
    enter_below: float,
    exit_above: float,
    min_away_s: float,
    min_back_s: float,
    /,
) -> tuple[bool, float]: ...
def means_of_gradients(
    patch: NDArray[np.float64],
    weight: NDArray[np.float64],
    threshold_sd: float,
    out: NDArray[np.float64],
    /,
) -> tuple[float, float, float]: ...
def stamp() -> int: ...

"""numba's JIT kernels under the compiled module's names: what ``kernels`` runs where the install
found no C compiler to build ``kernels._compiled`` (kernels/build.py). The same njit functions,
compiled when first imported (or loaded from numba's cache), at ~0.5 s and ~110 MiB a process."""

from kernels.eyecentre import means_of_gradients
from kernels.hysteresis import hysteresis_step
from kernels.smoothing import adaptive_ema_step, ema_step

__all__ = ["adaptive_ema_step", "ema_step", "hysteresis_step", "means_of_gradients"]

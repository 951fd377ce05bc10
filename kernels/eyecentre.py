"""Eye centres by means of gradients (Timm & Barth, VISAPP 2011): the pupil in an eye patch.

The iris and pupil are a dark disc: the image gradients on its rim all point away from its centre.
For each candidate centre ``c`` the objective is the mean, over the patch's strong gradients
``g_i`` (unit length) at ``x_i``, of ``max(0, d_i . g_i)^2`` with ``d_i`` the unit vector from
``c`` to ``x_i``; it is 1 at the centre of a perfect dark disc. A prior weight per candidate
(the paper uses the inverted, blurred intensity: pupils are dark) multiplies it. The centre is
the candidate with the largest weighted objective.

Strong gradients are those with a magnitude above ``mean + threshold_sd * std`` of the patch's
magnitudes (the paper's adaptive threshold, with 0.3 there), and never a zero one: a flat patch
has no gradient, every objective is 0, and the answer is the first candidate, not NaN.

The cost is candidates x strong gradients: a 24x16 patch with ~100 strong gradients is ~40 k
inner steps. What that costs: ``python -m benchmarks kernels`` (docs/performance.md).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_IN2 = nb.types.Array(nb.float64, 2, "A", readonly=True)
# (x, y, peak) of (patch, weight, threshold_sd, out). Inputs are typed read-only and any layout:
# numba passes writeable and strided arrays to such a signature, whereas a plain float64[:, :]
# refuses a read-only one (a frozen or memory-mapped frame). numba's type constructors carry no
# annotations, hence the ignore.
_RESULT = nb.types.UniTuple(nb.float64, 3)  # type: ignore[no-untyped-call]
_SIG = _RESULT(_IN2, _IN2, nb.float64, nb.float64[:, :])


@nb.njit(nb.float64(nb.float64[:], nb.float64), nogil=True, cache=True, fastmath=True)
def _threshold(mag: np.ndarray, threshold_sd: float) -> float:
    """The strong gradients' bound: ``mean + threshold_sd * std`` of the magnitudes."""
    n = mag.shape[0]
    mean = 0.0
    for k in range(n):
        mean += mag[k]
    mean /= n
    var = 0.0
    for k in range(n):
        var += (mag[k] - mean) * (mag[k] - mean)
    return float(mean + threshold_sd * math.sqrt(var / n))


# fastmath: the sum's order may change (results agree with the reference to ~1e-15, see the
# tests); inputs are finite, which the typed wrapper checks.
@nb.njit(_SIG, nogil=True, cache=True, fastmath=True)
def means_of_gradients(
    patch: np.ndarray, weight: np.ndarray, threshold_sd: float, out: np.ndarray
) -> tuple[float, float, float]:
    """Fill ``out`` (the patch's shape) with the weighted objective; return ``(x, y, peak)``.

    ``x, y`` are the column and row of the first largest value of ``out`` (row-major order), and
    ``peak`` is that value. Gradients are central differences inside the patch and one-sided at
    its edges (numpy's ``gradient``); a patch one pixel wide or tall has no gradient across it.
    """
    h, w = patch.shape
    n = h * w
    gx = np.zeros(n)
    gy = np.zeros(n)
    mag = np.zeros(n)
    for r in range(h):
        for c in range(w):
            k = r * w + c
            # Central differences inside, one-sided at the edges, none across one pixel: the
            # neighbours clamped to the patch, over the distance between them (numpy's rule).
            left, right = max(c - 1, 0), min(c + 1, w - 1)
            up, down = max(r - 1, 0), min(r + 1, h - 1)
            if right > left:
                gx[k] = (patch[r, right] - patch[r, left]) / (right - left)
            if down > up:
                gy[k] = (patch[down, c] - patch[up, c]) / (down - up)
            mag[k] = math.sqrt(gx[k] * gx[k] + gy[k] * gy[k])
    threshold = _threshold(mag, threshold_sd)
    # The strong gradients, packed: unit vectors and their positions.
    xs = np.empty(n)
    ys = np.empty(n)
    ux = np.empty(n)
    uy = np.empty(n)
    m = 0
    for k in range(n):
        if mag[k] > threshold and mag[k] > 0.0:
            xs[m] = k % w
            ys[m] = k // w
            ux[m] = gx[k] / mag[k]
            uy[m] = gy[k] / mag[k]
            m += 1
    best_x, best_y, best = 0.0, 0.0, -math.inf
    for r in range(h):
        for c in range(w):
            total = 0.0
            # Branch-free, so that with fastmath LLVM vectorises the sum: about 5x faster than
            # with the paper's skip (commit d4c92ba; the kernel's cost now: python -m benchmarks
            # kernels). A gradient at the candidate itself has dx = dy = 0, so dot = 0 and its
            # term is 0 / 1e-300 = 0, as the skip would make it. Here, not in a function of its
            # own: passed in, the arrays could alias ``out`` as far as LLVM knows, and the sum is
            # not vectorised (3-4x slower).
            for i in range(m):
                dx = xs[i] - c
                dy = ys[i] - r
                dot = max(dx * ux[i] + dy * uy[i], 0.0)
                total += dot * dot / max(dx * dx + dy * dy, 1e-300)
            value = weight[r, c] * total / m if m > 0 else 0.0
            out[r, c] = value
            if value > best:
                best_x, best_y, best = float(c), float(r), value
    return best_x, best_y, best

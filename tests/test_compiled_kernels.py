"""The ahead-of-time compiled kernels (``kernels._compiled``, kernels/build.py) against the njit
kernels they are compiled from, and the guards around them: a module built from other sources is
refused, and the server's import of them never loads numba.

test_kernels.py holds the kernels to their plain-Python references through the typed wrappers,
which call the compiled module; here the compiled module must give what numba's JIT gives on
the same inputs: positions exactly, values to the last few bits (``fastmath`` may reassociate
a sum differently in the two builds).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import _compiled, build, eyecentre, hysteresis, smoothing
from tests.test_kernels import patches

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
maybe_nan = st.one_of(st.just(math.nan), st.floats(-1e3, 1e3))
times = st.one_of(st.just(math.nan), st.floats(-1.0, 2.0))


@SETTINGS
@given(prev=maybe_nan, x=maybe_nan, dt=times, tau=st.floats(-1.0, 2.0), jump=st.floats(0.01, 5))
def test_the_compiled_filters_are_the_jit_filters(
    prev: float, x: float, dt: float, tau: float, jump: float
) -> None:
    for compiled, jit in (
        (_compiled.ema_step(prev, x, dt, tau), smoothing.ema_step(prev, x, dt, tau)),
        (
            _compiled.adaptive_ema_step(prev, x, dt, tau, jump),
            smoothing.adaptive_ema_step(prev, x, dt, tau, jump),
        ),
    ):
        assert compiled == jit or (math.isnan(compiled) and math.isnan(jit))


@SETTINGS
@given(
    score=maybe_nan,
    t=st.floats(0.0, 10.0),
    away=st.booleans(),
    pending=st.one_of(st.just(math.nan), st.floats(0.0, 10.0)),
    lo=st.floats(0.0, 0.5),
    gap=st.floats(0.0, 0.5),
    mins=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_the_compiled_decision_is_the_jit_decision(
    score: float,
    t: float,
    away: bool,
    pending: float,
    lo: float,
    gap: float,
    mins: tuple[float, float],
) -> None:
    args = (score, t, away, pending, lo, lo + gap, *mins)
    got, want = _compiled.hysteresis_step(*args), hysteresis.hysteresis_step(*args)
    assert got[0] is want[0]
    assert got[1] == want[1] or (math.isnan(got[1]) and math.isnan(want[1]))


@SETTINGS
@given(patch=patches(max_side=24), threshold_sd=st.floats(0.0, 2.0))
def test_the_compiled_eye_centre_is_the_jit_eye_centre(
    patch: np.ndarray, threshold_sd: float
) -> None:
    weight = (255.0 - patch) / 255.0
    out_compiled, out_jit = np.empty(patch.shape), np.empty(patch.shape)
    x, y, peak = _compiled.means_of_gradients(patch, weight, threshold_sd, out_compiled)
    jx, jy, jpeak = eyecentre.means_of_gradients(patch, weight, threshold_sd, out_jit)
    assert (x, y) == (jx, jy)
    assert math.isclose(peak, jpeak, rel_tol=1e-12, abs_tol=1e-15)
    np.testing.assert_allclose(out_compiled, out_jit, rtol=1e-12, atol=1e-15)


def test_the_module_carries_the_stamp_of_the_sources_beside_it() -> None:
    assert _compiled.stamp() == build.stamp()
    assert Path(_compiled.__file__).parent == Path(kernels.__file__).parent


# An editable install's finder maps ``kernels._compiled`` to the checkout's build by name,
# wherever ``kernels`` came from: without it, the copy in ``folder`` is what is imported.
IMPORT_THE_COPY = (
    "import sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if 'editable' not in getattr(f, '__module__', '')]; "
    "import kernels; assert kernels.__file__.startswith(sys.argv[1]), kernels.__file__"
)


def _import_kernels_from(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORT_THE_COPY, str(folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_module_built_from_other_sources_is_refused(tmp_path: Path) -> None:
    """An edited kernel is never served by its old build: importing says how to rebuild."""
    copy = tmp_path / "kernels"
    shutil.copytree(ROOT / "kernels", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _import_kernels_from(tmp_path).returncode == 0, "the copy as built imports"
    with (copy / "smoothing.py").open("a") as source:
        source.write("\n# an edit\n")
    refused = _import_kernels_from(tmp_path)
    assert refused.returncode != 0
    assert "built from other sources" in refused.stderr
    assert "python kernels/build.py" in refused.stderr


def test_without_a_compiled_module_the_jit_runs_the_same_kernels(tmp_path: Path) -> None:
    """Installed where there was no C compiler (setup.py goes on without the module), the same
    kernels run on numba's JIT, and ``kernels.COMPILED`` says so (the server warns with it)."""
    copy = tmp_path / "kernels"
    shutil.copytree(
        ROOT / "kernels", copy, ignore=shutil.ignore_patterns("__pycache__", "_compiled*.so")
    )
    fallback = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_THE_COPY + "; print(kernels.COMPILED, kernels.ema_step(0.0, 1.0, 1.0, 1.0), "
            "kernels._compiled.__name__)",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.split() == [
        "False",
        repr(kernels.ema_step(0.0, 1.0, 1.0, 1.0)),
        "kernels._jit",
    ]


def test_without_a_c_compiler_the_build_says_so(tmp_path: Path) -> None:
    """The answer setup.py installs without the module on (``None``): nothing built."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import build; "
        "print(build.build(Path(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "kernels"), str(tmp_path / "_compiled.so")],
        env={**os.environ, "CC": "/bin/false", "CXX": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert not (tmp_path / "_compiled.so").exists()


def test_the_server_never_imports_numba() -> None:
    """The point of the compiled module: numba (~0.45 s and ~110 MiB at start) stays out of the
    serving process, whatever it imports to serve."""
    code = (
        "import sys, trackerd.app, trackerd.analyze, trackerd.ops.health, kernels; "
        "kernels.warm_up(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _python_steps_during_a_call(centre: Callable[..., object]) -> int:
    """How many steps this thread takes while another is inside one long ``centre`` call: none
    if the call holds the GIL (the other thread cannot run Python until it returns)."""
    patch = np.random.default_rng(7).random((80, 110)) * 255.0  # ~80 M inner steps: ~0.1 s
    weight = np.ones(patch.shape)
    entering = threading.Event()

    def call() -> None:
        entering.set()
        centre(patch, weight, 0.0, np.empty(patch.shape))

    # A short switch interval: the GIL changes hands within microseconds of being asked, so the
    # steps this thread takes before the call starts, or between bytecodes, stay few.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        worker = threading.Thread(target=call)
        worker.start()
        assert entering.wait(10)
        steps = 0
        while worker.is_alive():
            steps += 1
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    return steps


def test_the_compiled_eye_centre_releases_the_gil_as_the_jit_does() -> None:
    """The analysis threads run the eye centre side by side (kernels/build.py swaps pycc's
    flags for it). Not a timing: a call that holds the GIL leaves the other thread no step at
    all until it returns, one that releases it thousands."""
    assert _python_steps_during_a_call(eyecentre.means_of_gradients) > 1000, "the control"
    assert _python_steps_during_a_call(_compiled.means_of_gradients) > 1000

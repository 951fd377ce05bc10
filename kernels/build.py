"""Compiles the kernels ahead of time into ``kernels/_compiled``, an extension module that the
server imports instead of numba: ``pip install`` runs this (setup.py), and so does
``python kernels/build.py`` after a kernel's source changes (in place, for a checkout).

Why ahead of time: numba's JIT, even loading from its on-disk cache, costs the server ~0.45 s
and ~110 MiB before the first frame (importing numba, building its typing and target contexts,
LLVM). The compiled module imports in well under a millisecond and needs numpy only. The
kernels' source stays the njit functions in ``kernels.smoothing``, ``kernels.hysteresis`` and
``kernels.eyecentre``, which numba's ``pycc`` compiles here, each through a thin export that
calls the njit function, so that each keeps its own options (``fastmath``). What changes
against the JIT: the exports hold the GIL (pycc has no ``nogil``), and the code is compiled
for the CPU of the machine that installs, as the JIT compiles for the one that runs. Figures:
docs/performance.md.

The module carries a stamp of these sources (:func:`stamp`); ``kernels`` refuses a module built
from other ones, so an edited kernel is never silently served by its old build.

``TRACKERD_KERNELS_CPU`` names another LLVM CPU to compile for (e.g. ``x86-64-v3`` for an image
built on one machine and run on others); the default is ``host``.

numba's ``pycc`` is pending deprecation since numba 0.57; pyproject.toml pins numba below 0.70.
This module imports the kernel sources by path, not as ``kernels.…``, because importing the
``kernels`` package needs the module this builds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
NAME = "_compiled"
SOURCES = ("smoothing.py", "hysteresis.py", "eyecentre.py", "build.py")
"""The files whose content the stamp covers: the kernels and these exports."""
CPU_VARIABLE = "TRACKERD_KERNELS_CPU"


def stamp(folder: Path = HERE) -> int:
    """A 60-bit digest of :data:`SOURCES` (an int, so a compiled function can return it)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((folder / name).read_bytes())
    return int(digest.hexdigest()[:15], 16)


def _source(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_kernels_source_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


F = TypeVar("F", bound=Callable[..., Any])


def _export(cc: Any, name: str, signature: Any) -> Callable[[F], F]:
    """``cc.export``, typed: pycc records the function and returns it unchanged."""
    decorator: Callable[[F], F] = cc.export(name, signature)
    return decorator


def _release_the_gil(pycc_compiler: ModuleType) -> None:
    """pycc compiles every export with default flags, so its Python wrappers hold the GIL; the
    JIT kernels are ``nogil``, and the server's analysis threads run the eye centre side by
    side. pycc has no option for it: its module's ``Flags`` is swapped, in this build process
    only, for one with ``release_gil`` (what ``nogil=True`` sets), which numba's lowering
    passes to the wrapper it generates. tests/test_compiled_kernels.py checks the result."""
    base = getattr(pycc_compiler, "Flags")  # noqa: B009 (untyped: numba ships no stubs)
    if getattr(base, "trackerd_nogil", False):
        return

    class NogilFlags(base):  # type: ignore[misc, valid-type]
        trackerd_nogil = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    setattr(pycc_compiler, "Flags", NogilFlags)  # noqa: B010


def compiler(cpu: str | None = None) -> Any:
    """numba's ``pycc.CC`` with every kernel exported, compiling for ``cpu`` (default:
    ``TRACKERD_KERNELS_CPU``, else ``host``)."""
    with warnings.catch_warnings():
        # pycc's pending deprecation, which pyproject.toml's pin on numba answers.
        warnings.simplefilter("ignore")
        pycc = importlib.import_module("numba.pycc")
        pycc_compiler = importlib.import_module("numba.pycc.compiler")

    _release_the_gil(pycc_compiler)
    smoothing, hysteresis, eyecentre = map(_source, ("smoothing", "hysteresis", "eyecentre"))
    ema, adaptive = smoothing.ema_step, smoothing.adaptive_ema_step
    step, centre = hysteresis.hysteresis_step, eyecentre.means_of_gradients
    source_stamp = stamp()

    cc: Any = pycc.CC(NAME)
    cc.target_cpu = cpu or os.environ.get(CPU_VARIABLE) or "host"
    cc.verbose = False

    @_export(cc, "ema_step", "float64(float64, float64, float64, float64)")
    def _ema(prev: float, x: float, dt_s: float, tau_s: float) -> float:
        return ema(prev, x, dt_s, tau_s)  # type: ignore[no-any-return]

    @_export(cc, "adaptive_ema_step", "float64(float64, float64, float64, float64, float64)")
    def _adaptive(prev: float, x: float, dt_s: float, tau_s: float, jump: float) -> float:
        return adaptive(prev, x, dt_s, tau_s, jump)  # type: ignore[no-any-return]

    @_export(cc, "hysteresis_step", hysteresis._STEP)
    def _step(
        score: float,
        t_s: float,
        away: bool,
        pending: float,
        enter: float,
        leave: float,
        min_away_s: float,
        min_back_s: float,
    ) -> tuple[bool, float]:
        return step(score, t_s, away, pending, enter, leave, min_away_s, min_back_s)  # type: ignore[no-any-return]

    @_export(cc, "means_of_gradients", eyecentre._SIG)
    def _centre(patch: Any, weight: Any, threshold_sd: float, out: Any) -> tuple[float, ...]:
        return centre(patch, weight, threshold_sd, out)  # type: ignore[no-any-return]

    @_export(cc, "stamp", "int64()")
    def _stamp() -> int:
        return source_stamp

    return cc


NO_COMPILER = (
    "no working C and C++ compiler (CC and CXX, or gcc and g++ on the PATH): the kernels "
    "cannot be compiled ahead of time"
)


def build(target: Path | None = None, cpu: str | None = None) -> Path | None:
    """Compile the module to ``target`` (default: its place beside these sources) in a process
    that has not imported numba yet, and return where it went; ``None``, having built nothing,
    when there is no working C and C++ compiler (:data:`NO_COMPILER`): setup.py then installs
    without the module, and ``kernels`` runs the JIT.

    numba's JIT cache is pointed at an empty folder for the build: a cached kernel's
    environment names its module as ``kernels.…``, and importing ``kernels`` needs this module.
    """
    if "numba" in sys.modules:
        raise RuntimeError("build the kernels in a process of their own (numba already imported)")
    with tempfile.TemporaryDirectory(prefix="trackerd-kernels-build-") as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pycc's pending deprecation, as below
                platform = importlib.import_module("numba.pycc.platform")
            if not platform.external_compiler_works():
                return None
            cc = compiler(cpu)
            if target is not None:
                cc.output_dir, cc.output_file = str(target.parent), target.name
            else:
                cc.output_dir = str(HERE)
            cc.compile()
        finally:
            del os.environ["NUMBA_CACHE_DIR"]
    return Path(str(cc.output_dir)) / str(cc.output_file)


def main(argv: list[str] | None = None) -> None:
    """Build in place (``kernels/``), for a checkout whose kernels changed: run as a script
    (``python kernels/build.py [CPU]``), since ``kernels`` cannot be imported without it."""
    args = sys.argv[1:] if argv is None else argv
    built = build(cpu=args[0] if args else None)
    if built is None:
        sys.exit(NO_COMPILER)
    print(f"built {built}")


if __name__ == "__main__":
    main()

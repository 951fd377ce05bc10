"""Builds ``kernels._compiled``, the ahead-of-time compiled kernels, with numba's pycc (why and
how: kernels/build.py). Everything else about the package is in pyproject.toml."""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_spec = importlib.util.spec_from_file_location(
    "_kernels_build", Path(__file__).resolve().parent / "kernels" / "build.py"
)
assert _spec is not None and _spec.loader is not None
kernels_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernels_build)


class BuildKernels(build_ext):
    """pycc compiles and links the module itself: it goes where setuptools expects it (the
    build tree for a wheel, the source tree for an editable install)."""

    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        if kernels_build.build(target) is None:
            # Installing still works: the kernels then run on numba's JIT, which costs every
            # start ~0.5 s and ~110 MiB more, and the server says so as it starts. A module an
            # earlier build left here would be from other sources: not shipped.
            target.unlink(missing_ok=True)
            self.warn(
                f"{kernels_build.NO_COMPILER}; trackerd will use numba's JIT (install gcc and "
                "g++, then reinstall)"
            )


setup(
    ext_modules=[Extension(f"kernels.{kernels_build.NAME}", sources=[])],
    cmdclass={"build_ext": BuildKernels},
)

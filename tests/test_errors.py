"""Every exception trackerd defines has one root, and keeps the builtin base callers catch."""

from __future__ import annotations

import importlib
import pkgutil

import kernels
import trackerd
from trackerd.app import ListenError
from trackerd.errors import TrackerdError
from trackerd.net.protocol import ProtocolError
from trackerd.settings import SettingsError
from trackerd.vision.cascades import CascadeError


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of trackerd or kernels, subpackages included,
    by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for package in (trackerd, kernels):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):  # importing it would run the command
                continue
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_trackerd_exception_has_one_root() -> None:
    found = defined_exceptions()
    assert {"trackerd.net.web.BadRequest", "trackerd.net.server.SlowClient"} <= found.keys()
    rootless = sorted(name for name, cls in found.items() if not issubclass(cls, TrackerdError))
    assert rootless == []


def test_the_builtin_bases_callers_catch_are_kept() -> None:
    assert issubclass(SettingsError, ValueError) and issubclass(ProtocolError, ValueError)
    assert issubclass(CascadeError, RuntimeError) and issubclass(ListenError, OSError)

"""trackerd: a real-time eye-tracking WebSocket server (OpenCV Haar cascades, numba, Trio).

The names below are loaded when first used, not when the package is imported: ``trackerd
--workers N``'s supervisor only starts and stops processes, and importing the tracker (numba,
LLVM, OpenCV) made it a ~165 MiB process doing nothing (``import trackerd.ops.workers`` alone:
162 MiB before, ~40 MiB after).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackerd.sources import Frame, Source, SourceError, open_source
    from trackerd.vision.observation import Box, Observation
    from trackerd.vision.tracker import Tracker, TrackerSettings, TrackerSettingsError

__version__ = "0.1.0"

_WHERE = {
    "Box": "trackerd.vision.observation",
    "Observation": "trackerd.vision.observation",
    "Frame": "trackerd.sources",
    "Source": "trackerd.sources",
    "SourceError": "trackerd.sources",
    "open_source": "trackerd.sources",
    "Tracker": "trackerd.vision.tracker",
    "TrackerSettings": "trackerd.vision.tracker",
    "TrackerSettingsError": "trackerd.vision.tracker",
}

__all__ = [
    "Box",
    "Frame",
    "Observation",
    "Source",
    "SourceError",
    "Tracker",
    "TrackerSettings",
    "TrackerSettingsError",
    "__version__",
    "open_source",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'trackerd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once
    return value

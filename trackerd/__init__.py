"""trackerd: a real-time eye-tracking WebSocket server (OpenCV Haar cascades, numba, Trio)."""

from trackerd.observation import Box, Observation
from trackerd.sources import Frame, Source, SourceError, open_source
from trackerd.tracker import Tracker, TrackerSettings, TrackerSettingsError

__version__ = "0.1.0"

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

"""The server's own camera (``--source``) as a session: the same episodes as a push session's,
under the fixed sid :data:`CAMERA_SID`, so that the original's deployment shape (one camera,
viewers that stream its ``eye_data``) gets episodes, webhooks, observers and a report too.

The session runs from the server's start to its stop (``session.ended``, ``server_stopped``).
Its frames are the observations the hub publishes (:attr:`trackerd.hub.Hub.tap`), numbered as
the hub numbers them. The capture runs only while someone tracks: while nobody does, the
session counts as disconnected (no ``frames_stopped`` for a camera nobody asked for), and the
next frame reconnects it. ``frozen`` is not measured here: the hub sees observations, not
frames.
"""

from __future__ import annotations

from typing import Final

import trio

from trackerd.hub import Hub
from trackerd.platform.episodes import EpisodeSettings
from trackerd.platform.recorder import Recorder
from trackerd.platform.records import Records, Subject
from trackerd.vision.observation import Observation

CAMERA_SID: Final = "camera"
"""The camera session's sid: ``GET /sessions/camera``, ``{"type": "observe", "sid":
"camera"}`` with the shared token."""
IDLE_CHECK_S: Final = 1.0


class CameraSession:
    def __init__(self, hub: Hub, settings: EpisodeSettings) -> None:
        self._hub = hub
        self.recorder = Recorder(Subject(CAMERA_SID), settings)
        self._attached = True

    def frame(self, observation: Observation, captured_at: float, number: int) -> None:
        if not self._attached:
            self._attached = True
            self.recorder.reconnected()
        self.recorder.frame(number, captured_at, observation, None)

    async def run(self, records: Records) -> None:
        """Record until cancelled (the server stops)."""
        self._hub.tap = self.frame
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.recorder.run, records)
                while True:
                    await trio.sleep(IDLE_CHECK_S)
                    if self._attached and not self._hub.statistics().subscribers:
                        self._attached = False
                        self.recorder.disconnected()
        finally:
            self._hub.tap = None

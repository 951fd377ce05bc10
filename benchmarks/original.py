"""The original server's per-frame work, written once: every suite and test compares against this.

The original is the Intervue AI eye-tracking backend (``../shared/original-README.md``). Its
source was found in the stored copy of GitHub's ``satyam-mishra-dev/intervue-ai-backend``: the
README there at commit ``13f242c1425fb7096ed4032b8516c94d7d7416d5`` is the one in
``../shared`` word for word, and ``eye_gaze.py`` at commit
``468a42f06f3d58b1db7d5c6e98f084e74cac5ada`` is the server it documents (a later
``eye_gaze.py``, commit ``a68009c925756cc453f119758af555e5d56a8ef8``, does the same per frame and
adds a ``face_count`` key the README does not have). What follows is checked line by line
against ``EyeTracker.__init__`` and the loop in ``EyeTracker.start_eye_tracking`` of that file:

- the cascades: ``cv2.data.haarcascades`` + ``haarcascade_frontalface_default.xml`` and
  ``haarcascade_eye.xml``, loaded once at start-up;
- each frame to grey (``cv2.COLOR_BGR2GRAY``), faces over the whole frame at
  ``scaleFactor=1.1, minNeighbors=5, minSize=(30, 30)``;
- **for every face**, eyes over the face's whole box at ``1.1, 5, (20, 20)``. ``eye_count`` and
  ``confidence`` are assigned inside that loop, so the *last* face's eyes decide them:
  ``eye_count`` is that face's number of eye boxes, uncapped (three boxes send 3), and
  ``confidence`` is ``min(1.0, eyes / 2)`` with two or more eyes, else 0.5; 0.0 with no face;
- ``looking_away`` when there is no face or ``eye_count < 2``;
- the message: ``type, timestamp, face_detected, eye_count, looking_away, confidence`` in that
  order, ``json.dumps`` with its default separators, ``timestamp`` from
  ``datetime.now().isoformat()`` (local time, microseconds, no zone: the README's example shows
  ``...12:00:00.000Z``, but the code is what clients received).

What is the server's and not the frame's (a camera tried at indices 0-2, one capture loop per
``start_tracking`` awaited inside that client's message loop, ``asyncio.sleep(0.1)`` after each
send) is left to ``benchmarks/original_server.py``, which says how it differs.

This module imports only cv2, numpy and the standard library: ``original_server.py`` uses it,
and the baseline's start-up time and memory must be the original's own, without trackerd's
imports (numba).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

Box = tuple[int, int, int, int]
"""x, y, width, height in the frame's pixels."""

FACE_CASCADE: Final = "haarcascade_frontalface_default.xml"
EYE_CASCADE: Final = "haarcascade_eye.xml"
FACE_SCALE, FACE_NEIGHBOURS, FACE_MIN_PX = 1.1, 5, 30
EYE_SCALE, EYE_NEIGHBOURS, EYE_MIN_PX = 1.1, 5, 20


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the original found in one frame, and the fields of the message it sent for it."""

    faces: tuple[Box, ...]
    eyes: tuple[tuple[Box, ...], ...]
    """Each face's eye boxes, in frame coordinates, in the order of :attr:`faces`."""

    @property
    def face_detected(self) -> bool:
        return bool(self.faces)

    @property
    def eye_count(self) -> int:
        """The last face's eye boxes: its loop overwrites the count face after face."""
        return len(self.eyes[-1]) if self.eyes else 0

    @property
    def looking_away(self) -> bool:
        return not self.faces or self.eye_count < 2

    @property
    def confidence(self) -> float:
        if not self.faces:
            return 0.0
        return min(1.0, self.eye_count / 2.0) if self.eye_count >= 2 else 0.5

    def message(self, now: datetime | None = None) -> dict[str, Any]:
        """The ``eye_data`` message, keys in the original's order."""
        return {
            "type": "eye_data",
            "timestamp": (now or datetime.now()).isoformat(),
            "face_detected": self.face_detected,
            "eye_count": self.eye_count,
            "looking_away": self.looking_away,
            "confidence": self.confidence,
        }

    def text(self, now: datetime | None = None) -> str:
        """The message as the original wrote it on the wire."""
        return json.dumps(self.message(now))


class Original:
    """The two cascades, loaded once, and the per-frame analysis."""

    def __init__(self) -> None:
        folder = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(folder + FACE_CASCADE)
        self.eye = cv2.CascadeClassifier(folder + EYE_CASCADE)
        if self.face.empty() or self.eye.empty():  # the original raised too
            raise RuntimeError(f"the Haar cascades do not load from {folder}")

    def faces(self, image: NDArray[np.uint8]) -> tuple[Box, ...]:
        """The face search alone, for a test that compares faces only."""
        return self._faces(_grey(image))

    def analyse(self, image: NDArray[np.uint8]) -> Analysis:
        """One frame (BGR as the camera gave it, or already grey): every face, eyes in each."""
        grey = _grey(image)
        faces = self._faces(grey)
        eyes = []
        for x, y, w, h in faces:
            found = self.eye.detectMultiScale(
                grey[y : y + h, x : x + w],
                scaleFactor=EYE_SCALE,
                minNeighbors=EYE_NEIGHBOURS,
                minSize=(EYE_MIN_PX, EYE_MIN_PX),
            )
            eyes.append(tuple((x + int(a), y + int(b), int(c), int(d)) for a, b, c, d in found))
        return Analysis(faces, tuple(eyes))

    def _faces(self, grey: NDArray[np.uint8]) -> tuple[Box, ...]:
        found = self.face.detectMultiScale(
            grey,
            scaleFactor=FACE_SCALE,
            minNeighbors=FACE_NEIGHBOURS,
            minSize=(FACE_MIN_PX, FACE_MIN_PX),
        )
        return tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in found)


def _grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    # The original always had a camera's BGR frame; test photos may be grey already.
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image

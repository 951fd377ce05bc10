"""Where the tests' real footage lives, and the original server's approach to compare against."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from trackerd.sources import Frame, open_source
from trackerd.vision.cascades import EYE_CASCADE, FACE_CASCADE, load_cascade

DATA = Path(__file__).parent / "data"
"""Permissively licensed fixtures copied into the repository (see data/SOURCE.txt)."""

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The team's wider set (Yale, dlib/VOC), which may not be redistributed: read in place."""


def shared(*parts: str) -> Path:
    """A path in ../shared/data, or a skip that says plainly that the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the team's shared data folder")
    return path


def frames(path: Path) -> list[Frame]:
    with open_source(str(path)) as source:
        return list(source)


class OriginalApproach:
    """What the server we replace did for every frame: the whole frame at scale 1.1, five
    neighbours, 30 px faces; eyes over the whole face box at 1.1/5/20; ``looking_away`` = no face
    or fewer than two eyes."""

    def __init__(self) -> None:
        self.face = load_cascade(FACE_CASCADE)
        self.eye = load_cascade(EYE_CASCADE)

    def faces(self, image: NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        found = self.face.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))
        return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]

    def frame(self, image: NDArray[np.uint8]) -> tuple[bool, int, bool]:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        found = self.face.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))
        if len(found) == 0:
            return False, 0, True
        x, y, w, h = found[0]
        eyes = self.eye.detectMultiScale(grey[y : y + h, x : x + w], 1.1, 5, minSize=(20, 20))
        return True, len(eyes), len(eyes) < 2

"""Small geometry helpers shared by the face and eye stages: boxes, crops and scaling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from trackerd.observation import Box

__all__ = ["Box", "boxes", "clip", "resize", "u8", "unscale"]


def resize(image: NDArray[np.uint8], scale: float) -> NDArray[np.uint8]:
    if abs(scale - 1.0) < 1e-3:
        return image
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return u8(cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation))


def clip(
    image: NDArray[np.uint8], x0: float, y0: float, x1: float, y1: float
) -> tuple[int, int, int, int]:
    h, w = image.shape[:2]
    return max(0, int(x0)), max(0, int(y0)), min(w, math.ceil(x1)), min(h, math.ceil(y1))


def u8(image: object) -> NDArray[np.uint8]:
    """cv2's stubs type every result as a generic array; ours are 8-bit by construction."""
    return cast(NDArray[np.uint8], image)


def boxes(found: Sequence[Sequence[int]]) -> tuple[Box, ...]:
    """detectMultiScale's (n, 4) array as plain int tuples."""
    return tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in found)


def unscale(box: Box, scale: float, dx: int, dy: int) -> Box:
    x, y, w, h = box
    return (
        dx + round(x / scale),
        dy + round(y / scale),
        round(w / scale),
        round(h / scale),
    )

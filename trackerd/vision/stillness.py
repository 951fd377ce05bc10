"""How much a frame changed from the one before: the measure behind the ``frozen`` episode.

A camera that froze, a virtual camera showing a photo, or a client re-sending one picture gives
frames that do not change. A person sitting as still as they can does not: they breathe, blink
and sway, and the sensor adds its noise. The measure must tell these apart through what a
browser does to every frame, a JPEG encode, possibly at a changing quality.

**The measure.** The grey frame is cut into :data:`CELL_PX` square cells and each cell's mean
is taken; the change is the :data:`QUANTILE` quantile, over the cells, of how much the means
moved since the previous frame (grey levels). Why:

- a cell's mean ignores what re-encoding does inside it: the detail a different quality keeps
  or drops averages out over four 8x8 JPEG blocks, and what is left is the rounding of their
  mean (whole cells of a flat area step by exactly one grey level);
- a person's micro-motion is local (eyes, mouth, a shoulder), and the quantile looks at the
  cells that moved most, not at the average of a mostly still picture, nor at one cell.

**The numbers** (``python docs/measure_stillness.py``: every frame JPEG-encoded at quality 80 and
decoded by :func:`trackerd.vision.images.decode_grey`, as a pushed frame is; the 40 zju-dev clips
are read from ``../shared/data``). The largest change of a still picture re-encoded at each frame
(three photos and a frame of three clips):

- at the same quality: 0 (the same bytes);
- at random qualities in 75-85: 0.25-0.39; in 70-90: 0.29-1.0; cycling 80/65/50: 0.46-1.0.

Live people, consecutive frames at 30 fps (where a change is smallest): no frame of any clip
changed less than 0.547 (zju 000020F_FNN, a woman holding very still, a compressed 320x240
clip) in the 40 zju-dev clips, single_face.mp4, the Pexels clip, and the empty room of
face_noface.mov and noface_face.mov (a live camera with no one in view). Every live clip keeps
a frame above the threshold at least every 0.5 s for thresholds up to 0.73: 1.87 times the
0.39 of re-encoding at 75-85. The same cells give 1.80 with the 0.99 quantile, 1.32 with the
mean over all cells, 1.17 with the maximum (``--compare``).

So :data:`FROZEN_CHANGE` = 0.5 sits above a still picture re-encoded at qualities 75 to 85 and
under every live frame measured; the ``frozen`` episode then asks for 3 s of still frames
(:mod:`trackerd.platform.episodes`). A picture re-encoded at widely different qualities on
purpose, or a printed photo held before a live camera (its sensor noise is real), is not what
this finds.

Cost: ~0.1 ms a 640x480 frame (OpenCV's sums, a partition), paid in the analysis thread
beside the tracker's ~2 ms.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

CELL_PX: Final = 16
"""Side of a cell: two JPEG blocks. At 640x480 that is 40x30 cells, enough for a blink to
move several. Cells of 24 and 32 px separated about as well (``--compare``: 1.84 and 1.89) but
leave a 320x240 frame only 130 and 70 cells."""
QUANTILE: Final = 0.95
"""The cells that moved most, as a quantile: at 640x480 the 60th of 1200 cells."""
FROZEN_CHANGE: Final = 0.5
"""A frame that changed less than this (grey levels, see the module docstring) is still."""


class Stillness:
    """Compares each frame with the one before. Not thread-safe; one per session."""

    def __init__(self) -> None:
        self._previous: NDArray[np.float32] | None = None

    def change(self, grey: NDArray[np.uint8]) -> float | None:
        """How much ``grey`` changed from the previous frame given; ``None`` for the first
        frame, or when the frame's size changed (a change, but not one this can measure)."""
        cells = cell_means(grey)
        previous, self._previous = self._previous, cells
        if previous is None or previous.shape != cells.shape:
            return None
        moved = np.abs(cells - previous).ravel()
        k = round(QUANTILE * (moved.size - 1))
        return float(np.partition(moved, k)[k])

    def reset(self) -> None:
        """Forget the previous frame: the next one has nothing to compare with."""
        self._previous = None


def cell_means(grey: NDArray[np.uint8], cell_px: int = CELL_PX) -> NDArray[np.float32]:
    """The mean of each whole ``cell_px`` cell from the top left (aligned with the JPEG blocks
    when the frame was decoded at its own size); a frame smaller than a cell is one cell."""
    rows, cols = grey.shape[0] // cell_px, grey.shape[1] // cell_px
    if rows == 0 or cols == 0:
        return np.array([[grey.mean()]], dtype=np.float32)
    whole = np.ascontiguousarray(grey[: rows * cell_px, : cols * cell_px])
    # Each row of each cell summed by OpenCV in one pass over the bytes (no float copy of the
    # frame: 63 us a 640x480 frame, against 137 for an area resize of a float32 copy, with the
    # same means), then each cell's rows summed.
    row_sums: NDArray[np.int32] = np.asarray(
        cv2.reduce(
            whole.reshape(rows * cell_px * cols, cell_px), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S
        )
    )
    sums = row_sums.reshape(rows, cell_px, cols).sum(axis=1, dtype=np.int64)
    means: NDArray[np.float32] = (sums / (cell_px * cell_px)).astype(np.float32)
    return means

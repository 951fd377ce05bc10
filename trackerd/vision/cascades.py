"""Loading OpenCV's Haar cascades, with an error a user can act on when they are missing.

A loaded cascade costs ~4 MiB (the three trackerd uses, ~12.7 MiB together), and every push
session has a tracker of its own: loading them per tracker took ~960 MiB at 60 sessions. So
:func:`load_cascade` hands out one :class:`Cascade` per file for the whole process, which keeps
one ``cv2.CascadeClassifier`` per *thread* that uses it (a classifier is not documented as safe
to share between threads, and the threads that analyse are few: ``analysis_threads`` and the
capture's). A thread's classifiers go with the thread.

The file is parsed once, and a thread's classifier is built from the parsed tree: 1.3-5 ms a
cascade rather than the 5-15 ms of parsing the XML again (the face cascade 5.1 against
15.1 ms), which every new analysis thread and the warm-up before listening used to pay.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Final

import cv2

from trackerd.errors import TrackerdError

FACE_CASCADE: Final = "haarcascade_frontalface_default.xml"
"""The original's face detector: 24x24 native window, the most sensitive of the frontal cascades."""

EYE_CASCADE: Final = "haarcascade_eye.xml"
"""The original's eye detector: 20x20 native window, open or closed eyes alike."""

EYEGLASSES_CASCADE: Final = "haarcascade_eye_tree_eyeglasses.xml"
"""Eyes behind glasses, 20x20: tried where the plain eye cascade misses (about twice as slow)."""


PROFILE_CASCADE: Final = "haarcascade_profileface.xml"
"""Faces turned toward the image's right, 20x20; on a mirrored image, toward its left. Used
only where the frontal track is weak or lost (:mod:`trackerd.vision.head`)."""


class CascadeError(TrackerdError, RuntimeError):
    """A cascade file is missing or does not load."""


CASCADE_DIR_ENV: Final = "TRACKERD_CASCADE_DIR"
"""Set to a folder to load the cascades from there instead of from the OpenCV wheel."""


def cascade_dir() -> Path:
    """Where the cascades are: ``$TRACKERD_CASCADE_DIR``, else the OpenCV wheel's own folder."""
    override = os.environ.get(CASCADE_DIR_ENV)
    if override:
        return Path(override)
    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    if not folder:
        raise CascadeError(
            f"OpenCV {cv2.__version__} ships no Haar cascades (cv2.data.haarcascades is missing). "
            "OpenCV 5 removed them: install 'opencv-python-headless>=4.10,<5'."
        )
    return Path(folder)


class Cascade:
    """One cascade file for the whole process: ``detectMultiScale`` on this thread's own
    classifier, built from the parsed file the first time this thread asks."""

    def __init__(self, path: Path, parsed: cv2.FileStorage, first: cv2.CascadeClassifier) -> None:
        self.path = path
        self._parsed = parsed
        # A FileStorage is not documented as safe to read from two threads at once; a read
        # takes a few milliseconds, once per thread.
        self._reading = threading.Lock()
        self._local = threading.local()
        self._local.classifier = first  # the loading thread's, already made

    def classifier(self) -> cv2.CascadeClassifier:
        found = getattr(self._local, "classifier", None)
        if found is None:
            with self._reading:
                found = self._local.classifier = _classifier(self._parsed, self.path)
        return found

    def detectMultiScale(self, *args: Any, **kwargs: Any) -> Any:
        return self.classifier().detectMultiScale(*args, **kwargs)


_loaded: dict[Path, Cascade] = {}
_loading = threading.Lock()


def load_cascade(name: str, folder: Path | None = None) -> Cascade:
    """The cascade ``name`` in ``folder`` (default: OpenCV's own), shared by the process.
    Raises :class:`CascadeError` if it is missing or does not load."""
    path = (folder or cascade_dir()) / name
    with _loading:
        cascade = _loaded.get(path)
        if cascade is None:
            parsed = _parse(path)
            cascade = _loaded[path] = Cascade(path, parsed, _classifier(parsed, path))
    return cascade


def load_here() -> None:
    """Make this thread's classifier of every cascade loaded so far: a new analysis thread
    pays for them here rather than in its first frames."""
    with _loading:
        loaded = list(_loaded.values())
    for cascade in loaded:
        cascade.classifier()


def _parse(path: Path) -> cv2.FileStorage:
    if not path.is_file():
        raise CascadeError(
            f"Haar cascade file not found: {path} (OpenCV {cv2.__version__}). "
            "Reinstall 'opencv-python-headless>=4.10,<5', whose wheel ships these files."
        )
    # A file OpenCV cannot parse raises (cv2.error, surfacing as a SystemError from the
    # constructor, whose cause says what is wrong); one it parses but cannot use reads as no
    # cascade. Both are the same to a user.
    try:
        parsed = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as exc:
        raise _does_not_load(path, exc) from exc
    if not parsed.isOpened():
        raise _does_not_load(path)
    return parsed


def _classifier(parsed: cv2.FileStorage, path: Path) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier()
    try:
        read = classifier.read(parsed.getFirstTopLevelNode())
    except (cv2.error, SystemError) as exc:
        raise _does_not_load(path, exc) from exc
    if not read or classifier.empty():
        raise _does_not_load(path)
    return classifier


def _does_not_load(path: Path, exc: BaseException | None = None) -> CascadeError:
    """The error for a file OpenCV cannot use, with OpenCV's own reason when it gave one."""
    reason = "" if exc is None else f": {str(exc.__cause__ or exc).strip()}"
    return CascadeError(
        f"Haar cascade file does not load: {path} (OpenCV {cv2.__version__}){reason}"
    )

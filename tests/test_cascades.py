"""Cascades are loaded once per process and file, with a classifier per thread that uses one:
a push session's tracker costs no cascade memory of its own."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tests.media import DATA, frames
from tests.serverkit import vm_rss_bytes
from trackerd.vision.cascades import EYE_CASCADE, FACE_CASCADE, cascade_dir, load_cascade
from trackerd.vision.tracker import Tracker, warm_up


def _in_a_thread(work: Callable[[], object]) -> object:
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(work()))
    worker.start()
    worker.join()
    assert done, "the thread raised (its traceback is above)"
    return done[0]


def test_one_cascade_per_file_and_one_classifier_per_thread() -> None:
    first, again = load_cascade(FACE_CASCADE), load_cascade(FACE_CASCADE)
    assert first is again
    mine = first.classifier()
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(first.classifier()))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and first.classifier() is mine


def test_sixty_trackers_cost_no_cascade_memory_each() -> None:
    """Each used to load its own cascades, ~12.7 MiB: 60 sessions took ~760 MiB more."""
    image = frames(DATA / "single_face.mp4")[0].image
    Tracker().process(image, 0.0)  # this thread's classifiers exist from here on
    before = vm_rss_bytes(os.getpid())
    trackers = [Tracker() for _ in range(60)]
    for i, tracker in enumerate(trackers):
        assert tracker.process(image, float(i)).face_detected
    grown = (vm_rss_bytes(os.getpid()) - before) / 2**20
    print(f"\n60 trackers: +{grown:.1f} MiB")
    assert grown < 60


def test_a_new_threads_classifier_is_built_from_the_file_parsed_once(tmp_path: Path) -> None:
    """Not parsed again per thread (5-15 ms a cascade, paid by every new analysis thread): the
    file may be gone by then, and the new classifier finds the same faces."""
    shutil.copy(cascade_dir() / FACE_CASCADE, tmp_path / FACE_CASCADE)
    cascade = load_cascade(FACE_CASCADE, tmp_path)
    (tmp_path / FACE_CASCADE).unlink()
    image = frames(DATA / "single_face.mp4")[0].image
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image

    def faces() -> list[list[int]]:
        return sorted(np.asarray(cascade.detectMultiScale(grey, 1.1, 5)).tolist())

    mine = faces()
    assert mine and _in_a_thread(faces) == mine


def test_warm_up_makes_the_threads_classifier_of_every_loaded_cascade() -> None:
    """Including the eye cascade, which a search of an empty frame never reaches: a new
    analysis thread's first face is not charged for building it."""
    warm_up()
    eyes = load_cascade(EYE_CASCADE)

    def built_in_this_thread() -> bool:
        warm_up()
        return getattr(eyes._local, "classifier", None) is not None

    assert _in_a_thread(built_in_this_thread)
    assert not _in_a_thread(lambda: getattr(eyes._local, "classifier", None) is not None)

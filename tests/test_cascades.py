"""Cascades are loaded once per process and file, with a classifier per thread that uses one:
a push session's tracker costs no cascade memory of its own."""

from __future__ import annotations

import os
import threading

from tests.media import DATA, frames
from tests.serverkit import vm_rss_bytes
from trackerd.vision.cascades import FACE_CASCADE, load_cascade
from trackerd.vision.tracker import Tracker


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

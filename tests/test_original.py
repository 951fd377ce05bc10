"""The baseline every suite and test compares against (benchmarks/original.py) does what the
original server did: eyes in every face, the last face's eyes decide the message, and the
baseline server carries none of trackerd's imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2

from benchmarks.original import Analysis, Original
from tests.media import DATA

ROOT = Path(__file__).resolve().parents[1]
FACE_A = (0, 0, 100, 100)
FACE_B = (200, 0, 100, 100)
EYE = (10, 10, 20, 20)
README_KEYS = ("type", "timestamp", "face_detected", "eye_count", "looking_away", "confidence")
"""The README's eye_data example, which the original's dict follows key for key."""


def test_every_face_gets_its_own_eye_search() -> None:
    image = cv2.imread(str(DATA / "multi_face.jpg"))
    analysis = Original().analyse(image)
    assert len(analysis.faces) >= 2
    assert len(analysis.eyes) == len(analysis.faces)
    for (x, y, w, h), eyes in zip(analysis.faces, analysis.eyes, strict=True):
        assert eyes, "each face in this photo has eyes the cascade finds"
        for ex, ey, ew, eh in eyes:  # in frame coordinates, inside their own face
            assert x <= ex and ex + ew <= x + w and y <= ey and ey + eh <= y + h


def test_the_last_face_decides_the_message() -> None:
    """The original assigned eye_count and confidence inside its loop over the faces."""
    first_has_eyes = Analysis((FACE_A, FACE_B), ((EYE, EYE), ()))
    assert (first_has_eyes.eye_count, first_has_eyes.looking_away) == (0, True)
    assert first_has_eyes.confidence == 0.5
    last_has_eyes = Analysis((FACE_A, FACE_B), ((), (EYE, EYE)))
    assert (last_has_eyes.eye_count, last_has_eyes.looking_away) == (2, False)
    assert last_has_eyes.confidence == 1.0
    three = Analysis((FACE_A,), ((EYE, EYE, EYE),))
    assert (three.eye_count, three.confidence) == (3, 1.0)  # uncapped, as the original sent
    nobody = Analysis((), ())
    assert (nobody.face_detected, nobody.looking_away, nobody.confidence) == (False, True, 0.0)


def test_the_message_has_the_originals_keys_in_order() -> None:
    message = json.loads(Analysis((FACE_A,), ((EYE,),)).text())
    assert tuple(message) == README_KEYS
    assert message["type"] == "eye_data"


def test_the_baseline_server_imports_nothing_of_trackerd() -> None:
    """Its start-up time and memory are measured as the original's own."""
    code = (
        "import sys, benchmarks.original_server; roots = ('trackerd', 'kernels', 'numba'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

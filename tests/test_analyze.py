"""``trackerd analyze`` as a user runs it: a real process, real files, JSON lines on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.media import DATA

KEYS = [
    "source",
    "frame",
    "t",
    "face_detected",
    "eye_count",
    "looking_away",
    "confidence",
    "face",
    "eyes",
    "ms",
]


def analyze(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trackerd", "analyze", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_video_and_image_give_one_json_object_per_frame() -> None:
    done = analyze(DATA / "single_face.mp4", DATA / "single_face.jpg")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 72 + 1
    assert all(list(r) == KEYS for r in rows)
    video = rows[:72]
    assert [r["frame"] for r in video] == list(range(72))
    assert all(r["source"] == str(DATA / "single_face.mp4") for r in video)
    assert sum(r["face_detected"] for r in video) >= 70
    for r in video:
        assert 0.0 <= r["confidence"] <= 1.0 and r["ms"] >= 0.0
        assert r["eye_count"] == len(r["eyes"])
        assert r["face"] is None or len(r["face"]) == 4
    assert rows[72]["face_detected"] and rows[72]["frame"] == 0
    # Progress and the summary go to stderr, one summary line per path.
    assert "single_face.mp4: 72 frames" in done.stderr
    assert "single_face.jpg: 1 frames" in done.stderr


def test_missing_path_is_an_error_with_no_result_on_stdout(tmp_path: Path) -> None:
    done = analyze(tmp_path / "missing.mp4")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "no such file or folder" in done.stderr


def test_undecodable_file_is_an_error_with_no_result_on_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 4096)
    done = analyze(bad)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "broken.mp4" in done.stderr


def test_a_bad_path_after_a_good_one_stops_the_run(tmp_path: Path) -> None:
    done = analyze(DATA / "single_face.jpg", tmp_path / "missing")
    assert done.returncode == 2
    assert len(done.stdout.splitlines()) == 1  # the good path's result, complete
    assert "missing" in done.stderr


def test_help_lists_the_output_fields() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trackerd", "analyze", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "looking_away" in done.stdout

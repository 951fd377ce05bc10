"""benchmarks.ab_commits: another commit's tracker imports beside the working tree's and tracks."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from benchmarks.ab_commits import _rewrite, load_tracker_at
from tests.media import DATA
from trackerd.vision.tracker import Tracker


def test_imports_are_renamed_and_nothing_else() -> None:
    source = (
        "import kernels\nfrom kernels import smoothing\nfrom trackerd.vision import eyes\n"
        "import trackerd.app\nmytrackerd = 'trackerd'\n"
    )
    assert _rewrite(source, "x") == (
        "import kernels_x as kernels\nfrom kernels_x import smoothing\n"
        "from trackerd_x.vision import eyes\nimport trackerd_x.app\nmytrackerd = 'trackerd'\n"
    )


def test_a_commits_tracker_runs_beside_the_trees(tmp_path: Path) -> None:
    """HEAD's tracker, renamed, is another class from another module, with its own kernels, and
    finds the face the working tree's finds (the tree is HEAD in CI; here, nearly)."""
    old = load_tracker_at("HEAD", tmp_path, "t")
    try:
        assert old is not Tracker and old.__module__ == "trackerd_t.vision.tracker"
        assert "kernels_t" in sys.modules
        image = cv2.imread(str(DATA / "single_face.jpg"))
        then, now = old().process(image, 0.0), Tracker().process(image, 0.0)
        assert then.face_detected and then.face == now.face
    finally:
        sys.path.remove(str(tmp_path / "t"))

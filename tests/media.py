"""Where the tests' real footage lives (the original to compare against: benchmarks/original.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trackerd.sources import Frame, open_source

DATA = Path(__file__).parent / "data"
"""Permissively licensed fixtures copied into the repository (see data/SOURCE.txt)."""

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The team's wider set (Yale, dlib/VOC), which may not be redistributed: read in place."""


def shared(*parts: str) -> Path:
    """A path in ../shared/data. Absent: a skip that says so plainly, or under CI (which has
    the folder beside the checkout) a failure, so that a moved folder cannot pass as skipped."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent: these tests need the team's shared data folder"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def frames(path: Path) -> list[Frame]:
    with open_source(str(path)) as source:
        return list(source)

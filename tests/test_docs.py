"""The documents a newcomer reads: the README short, the performance tables generated from
``benchmarks/results``, and every link between the documents landing somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
"""What a newcomer reads in five minutes (issue 22); the rest lives in docs/."""

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped,
    spaces as hyphens."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_the_readme_reads_in_five_minutes() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_the_performance_tables_are_generated_from_the_results() -> None:
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    blocks = [name for name in report.SUITES if report.start_marker(name) in text]
    assert blocks == list(report.SUITES), "docs/performance.md lost a generated table"
    assert report.fill(text) == text, (
        "docs/performance.md's tables differ from benchmarks/results: run "
        "python -m benchmarks.report --write docs/performance.md"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_lands(document: Path) -> None:
    broken = []
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        lands = path.exists() and not (
            anchor and path.suffix == ".md" and anchor not in anchors(path)
        )
        if not lands:
            broken.append(target)
    assert not broken, f"{document.name}: links to nothing: {broken}"

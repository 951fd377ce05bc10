"""Imports run one way: no module of trackerd or kernels imports a layer above its own, and no
modules import each other in a circle (issue 22; docs/design.md draws the layers).

Read from the source with ``ast``, not by importing: every ``import`` counts, also one inside a
function (a lazy import is still a dependency) or under ``TYPE_CHECKING`` (a type is too).
A module may import its own layer and any layer below. A new module must be placed in
``LAYERS`` before this passes, which is the point: someone decides where it stands.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trackerd", "kernels")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Top to bottom. Patterns are fnmatch patterns over dotted module names.
    (
        "entry points",
        ("trackerd", "trackerd.__main__", "trackerd.cli", "trackerd.app", "trackerd.analyze"),
    ),
    ("operations", ("trackerd.ops", "trackerd.ops.*")),
    ("network side", ("trackerd.net", "trackerd.net.*")),
    ("platform side and capture", ("trackerd.platform", "trackerd.platform.*", "trackerd.capture")),
    ("hub and sources", ("trackerd.hub", "trackerd.sources")),
    ("vision", ("trackerd.vision", "trackerd.vision.*")),
    (
        "settings and errors",
        (
            "trackerd.settings",
            "trackerd.options",
            "trackerd.keys",
            "trackerd.errors",
            "trackerd.redact",
        ),
    ),
    ("kernels", ("kernels", "kernels.*")),
)
"""The layers, top first; rows with the same name are one layer."""

PACKAGE_ATTRIBUTES = frozenset({"__version__"})
"""``from trackerd import __version__`` adds no dependency: Python runs the package's
``__init__`` before any of its modules anyway. Any other name taken from the bare package (its
lazy re-exports) counts as importing the top layer."""


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_nearest(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in known:
                    found.add(f"{module}.{alias.name}")  # a module: ``from trackerd import app``
                elif module == "trackerd" and alias.name in PACKAGE_ATTRIBUTES:
                    continue
                else:
                    found.add(_nearest(module, known))
    found.discard("")
    found.discard(name)
    return found


def _nearest(dotted: str, known: dict[str, Path]) -> str:
    """``dotted`` or its nearest enclosing module of ours; "" for a module not ours."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def layer(name: str) -> int:
    """The index of the layer ``name`` is in (rows of one name count as one layer)."""
    names = list(dict.fromkeys(title for title, _ in LAYERS))
    for title, patterns in LAYERS:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return names.index(title)
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for name in modules():
        try:
            layer(name)
        except AssertionError:
            unplaced.append(name)
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{name} ({layer(name)}) imports {target} ({layer(target)})"
        for name, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer(target) < layer(name)
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_circles() -> None:
    found = circles(graph())
    assert not found, f"circles: {[sorted(c) for c in found]}"


def test_the_checks_see_upward_imports_lazy_imports_and_circles() -> None:
    """The helpers on a made-up graph: what the tests above rely on them to find."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert circles({"a": {"b"}, "b": set()}) == set()
    assert layer("trackerd.vision.tracker") > layer("trackerd.net.server")
    assert layer("kernels.smoothing") == len(dict.fromkeys(title for title, _ in LAYERS)) - 1
    # A lazy import inside a function, and one under TYPE_CHECKING, are both edges.
    known = modules()
    # Under TYPE_CHECKING: the package's lazy re-exports.
    assert "trackerd.vision.tracker" in imports("trackerd", known["trackerd"], known)
    assert "trackerd.net.tls" in imports("trackerd.ops.health", known["trackerd.ops.health"], known)

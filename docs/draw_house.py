"""Draw the house: trackerd's modules by layer, with their imports, into docs/house.png (issue 22).

    python docs/draw_house.py               # writes docs/house.png (needs the bench extras)
    python docs/draw_house.py --out x.png

The graph is the one tests/test_layers.py checks, built by its own functions (``ast``, every
import, also inside a function or under TYPE_CHECKING), so the picture cannot disagree with the
test. One row per layer of ``LAYERS``, top first; a box per module, its width by lines (never
narrower than its name); a frame per folder. Imports inside a row are arcs under it, each one
drawn; imports between rows are one arrow per pair of groups (a folder, or a loose module) with
the count. Orange marks an import that runs upward or two modules in a circle.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a file is the only output
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.path import Path as CurvePath
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_layers import LAYERS, circles, graph, layer, modules  # noqa: E402

WIDTH_PX = 1600
LEFT_PX = 165  # the layer names
RIGHT_PX = 15
TOP_PX = 62
TITLE_PX = 17  # a folder frame's title band
BOX_PX = 40
ARCS_PX = 34  # under a row: its own imports
GAP_PX = 46  # between rows: the arrows down
PITCH_PX = TITLE_PX + BOX_PX + ARCS_PX + GAP_PX
PAD_PX = 5
CHAR_PX = 6.4  # DejaVu Sans at 8 pt, 100 dpi, a little generous

GREY = "#7a8088"
FRAME = "#3d5a80"
ORANGE = "#e07010"
COLOURS = {
    "net": "#cfe0f3",
    "vision": "#d5ecd4",
    "ops": "#e6dcf2",
    "platform": "#f4e4cc",
    "kernels": "#d9eee9",
    "": "#e4e6e9",
}


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def middle(self) -> float:
        return self.x + self.w / 2


def folder(name: str) -> str:
    """The folder a module's file is in ("net", "kernels"); "" for a file directly in trackerd/."""
    parts = name.split(".")
    if parts[0] == "kernels":
        return "kernels"
    if len(parts) >= 2 and (ROOT / "trackerd" / parts[1]).is_dir():
        return parts[1]
    return ""


def group(name: str) -> str:
    """What arrows between rows join: a folder, or the loose files of one row taken together
    (one arrow from the entry points to settings and errors, not one per pair of files)."""
    return folder(name) or f"loose files of row {layer(name) + 1}"


def ordered(names: list[str], edges: dict[str, set[str]], key: dict[str, float]) -> list[str]:
    """Importers left of what they import (Kahn), the bigger first among the free; a circle's
    members go last, in key order, and their arcs show orange."""
    inside = set(names)
    waiting = {n: {t for t in edges.get(n, set()) if t in inside} for n in names}
    importers = {n: {s for s in names if n in waiting[s]} for n in names}
    result: list[str] = []
    free = sorted((n for n in names if not importers[n]), key=lambda n: (-key[n], n))
    while free:
        node = free.pop(0)
        result.append(node)
        for target in sorted(waiting[node], key=lambda n: (-key[n], n)):
            importers[target].discard(node)
            if not importers[target] and target not in result and target not in free:
                free.append(target)
        free.sort(key=lambda n: (-key[n], n))
    return result + sorted(inside - set(result), key=lambda n: (-key[n], n))


def curve(ax: Axes, points: list[tuple[float, float]], colour: str, width: float) -> None:
    codes = [CurvePath.MOVETO, CurvePath.CURVE4, CurvePath.CURVE4, CurvePath.CURVE4]
    ax.add_patch(
        FancyArrowPatch(
            path=CurvePath(points, codes),
            arrowstyle=f"-|>,head_length={2 + width},head_width={1.2 + width / 2}",
            color=colour,
            linewidth=width,
            alpha=0.85 if colour == ORANGE else 0.6,
            zorder=3 if colour == ORANGE else 2,
        )
    )


Row = list[tuple[str, list[str]]]
"""A row of the drawing: its groups left to right, each with its modules left to right."""


@dataclass
class House:
    edges: dict[str, set[str]]
    lines: dict[str, int]
    names: dict[str, str]
    """A box's label: its file's name (the frame names the folder)."""
    rows: list[Row]
    boxes: dict[str, Box]
    frames: dict[str, Box]
    """A folder's frame, or the span of one row's loose files: where arrows between rows end."""


def arrange(edges: dict[str, set[str]], lines: dict[str, int], count: int) -> list[Row]:
    """Each row: its groups in import order, each group's modules in import order."""
    group_edges: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        group_edges[group(source)].update(group(t) for t in targets if group(t) != group(source))
    rows: list[Row] = []
    for index in range(count):
        members: dict[str, list[str]] = defaultdict(list)
        for name in sorted(edges):
            if layer(name) == index:
                members[group(name)].append(name)
        size = {g: float(sum(lines[n] for n in ns)) for g, ns in members.items()}
        rows.append(
            [
                (g, ordered(members[g], edges, {n: float(lines[n]) for n in members[g]}))
                for g in ordered(list(members), group_edges, size)
            ]
        )
    return rows


def least(file: str) -> float:
    """The narrowest box a file's name fits in."""
    return CHAR_PX * len(file) + 8


def row_width(row: Row, lines: dict[str, int], names: dict[str, str], scale: float) -> float:
    width = 0.0
    for _, ns in row:
        width += sum(max(least(names[n]), lines[n] * scale) for n in ns) + PAD_PX * (len(ns) - 1)
        width += 2 * PAD_PX if folder(ns[0]) else 0
    return width + 12 * (len(row) - 1)


def place(edges: dict[str, set[str]], lines: dict[str, int], names: dict[str, str]) -> House:
    """Where every box and frame goes: widths by lines at the largest scale that fits."""
    rows = arrange(edges, lines, len(dict.fromkeys(title for title, _ in LAYERS)))
    room = WIDTH_PX - LEFT_PX - RIGHT_PX
    low, high = 0.0, 2.0  # pixels per line
    for _ in range(40):
        middle = (low + high) / 2
        fits = all(row_width(r, lines, names, middle) <= room for r in rows)
        low, high = (middle, high) if fits else (low, middle)
    house = House(edges, lines, names, rows, {}, {})
    for index, row in enumerate(rows):
        top = TOP_PX + index * PITCH_PX
        x = LEFT_PX + (room - row_width(row, lines, names, low)) / 2
        for g, ns in row:
            framed = bool(folder(ns[0]))
            start = x
            x += PAD_PX if framed else 0
            for n in ns:
                w = max(least(names[n]), lines[n] * low)
                house.boxes[n] = Box(x, top + TITLE_PX, w, BOX_PX)
                x += w + PAD_PX
            x += 0 if framed else -PAD_PX
            if framed:
                house.frames[g] = Box(start, top, x - start, TITLE_PX + BOX_PX + ARCS_PX)
            else:
                house.frames[g] = Box(start, top + TITLE_PX, x - start, BOX_PX)
            x += 12
    return house


def draw_rows(ax: Axes, house: House, in_circle: set[str]) -> None:
    titles = list(dict.fromkeys(title for title, _ in LAYERS))
    for index, row in enumerate(house.rows):
        y = TOP_PX + index * PITCH_PX + TITLE_PX + BOX_PX / 2
        ax.text(12, y, f"{index + 1}  {titles[index]}", fontsize=10, va="center", weight="bold")
        for g, ns in row:
            if not folder(ns[0]):
                continue
            f = house.frames[g]
            ax.add_patch(
                Rectangle((f.x, f.y), f.w, f.h, fc="none", ec=FRAME, linewidth=1.6, zorder=1)
            )
            y = f.y + TITLE_PX / 2 + 1
            ax.text(f.x + 5, y, f"{g}/", fontsize=10, weight="bold", va="center", color=FRAME)
            total = sum(house.lines[n] for n in ns)
            summary = f"{len(ns)} files, {total:,} lines"
            ax.text(f.x + f.w - 5, y, summary, fontsize=7.5, va="center", ha="right", color="#555")
    for n, b in house.boxes.items():
        ax.add_patch(
            Rectangle(
                (b.x, b.y),
                b.w,
                b.h,
                facecolor=COLOURS.get(folder(n), COLOURS[""]),
                edgecolor=ORANGE if n in in_circle else "#6b7785",
                linewidth=1.8 if n in in_circle else 0.7,
                zorder=4,
            )
        )
        ax.text(b.x + 4, b.y + 13, house.names[n], fontsize=8, zorder=5, color="#111")
        ax.text(b.x + 4, b.y + 29, f"{house.lines[n]}", fontsize=7, zorder=5, color="#555")


def draw_arcs(ax: Axes, house: House, circle_of: dict[str, frozenset[str]]) -> None:
    """Inside a row: every import, an arc under it (importers stand left, so arcs run right)."""
    for source, targets in sorted(house.edges.items()):
        for target in sorted(targets):
            if layer(target) != layer(source):
                continue
            a, b = house.boxes[source], house.boxes[target]
            wrong = source in circle_of and circle_of[source] == circle_of.get(target)
            y = a.y + a.h
            depth = min(8 + 0.05 * abs(b.middle - a.middle), ARCS_PX - 6)
            x1 = a.middle + min(a.w / 4, 12) * (1 if b.x > a.x else -1)
            x2 = b.middle - min(b.w / 4, 12) * (1 if b.x > a.x else -1)
            points = [(x1, y), (x1, y + depth), (x2, y + depth), (x2, y + 1)]
            curve(ax, points, ORANGE if wrong else GREY, 0.7)


def spread(frame: Box, count: int, rank: int) -> float:
    """Where the rank-th of count arrows meets an edge of frame: over its middle 80%."""
    if count == 1:
        return frame.middle
    return frame.x + frame.w * (0.1 + 0.8 * rank / (count - 1))


def draw_arrows(ax: Axes, house: House) -> None:
    """Between rows: one arrow per pair of groups, with how many imports it stands for."""
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for source, targets in sorted(house.edges.items()):
        for target in sorted(targets):
            if layer(target) != layer(source):
                pairs[(group(source), group(target))].append((source, target))
    leaving: dict[str, list[tuple[str, str]]] = defaultdict(list)
    arriving: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pair in pairs:
        leaving[pair[0]].append(pair)
        arriving[pair[1]].append(pair)
    frames = house.frames
    # Sorted by where the other end is, so that arrows leaving one frame cross each other less.
    starts = {
        pair: spread(frames[g], len(ps), i)
        for g, ps in leaving.items()
        for i, pair in enumerate(sorted(ps, key=lambda p: frames[p[1]].middle))
    }
    ends = {
        pair: spread(frames[g], len(ps), i)
        for g, ps in arriving.items()
        for i, pair in enumerate(sorted(ps, key=lambda p: frames[p[0]].middle))
    }
    for pair, members in pairs.items():
        a, b = frames[pair[0]], frames[pair[1]]
        up = any(layer(t) < layer(s) for s, t in members)
        y1, y2 = (a.y, b.y + b.h) if up else (a.y + a.h, b.y)
        bend = 0.45 * (y2 - y1)
        x1, x2 = starts[pair], ends[pair]
        points = [(x1, y1), (x1, y1 + bend), (x2, y2 - bend), (x2, y2)]
        curve(ax, points, ORANGE if up else GREY, 0.7 + 0.25 * min(len(members), 8))
        if len(members) > 1:
            ax.text(
                x2,
                y2 + (9 if up else -9),
                str(len(members)),
                fontsize=7.5,
                ha="center",
                va="center",
                zorder=6,
                color=ORANGE if up else "#333",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )


def draw(out: Path) -> str:
    paths = modules()
    edges = graph()
    lines = {n: len(path.read_text(encoding="utf-8").splitlines()) for n, path in paths.items()}
    found = circles(edges)
    circle_of = {name: c for c in found for name in c}
    upward = [(s, t) for s, ts in edges.items() for t in ts if layer(t) < layer(s)]
    house = place(edges, lines, {n: path.name for n, path in paths.items()})

    height = TOP_PX + PITCH_PX * len(house.rows) + 40
    fig = plt.figure(figsize=(WIDTH_PX / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, WIDTH_PX)
    ax.set_ylim(height, 0)
    ax.axis("off")
    draw_rows(ax, house, set(circle_of))
    draw_arcs(ax, house, circle_of)
    draw_arrows(ax, house)

    total = sum(len(ts) for ts in edges.values())
    caption = (
        f"{len(paths)} modules, {total} imports, {len(upward)} upward, {len(found)} circles, "
        "drawn from the code by docs/draw_house.py"
    )
    ax.text(12, 22, "trackerd: the house", fontsize=15, weight="bold", color="#222")
    ax.text(12, 44, caption, fontsize=10.5, color="#222")
    ax.text(
        12,
        height - 18,
        "a row per layer of LAYERS in tests/test_layers.py, top first; box width by lines "
        "(at least its name); a frame per folder  |  arcs under a row: imports inside the layer"
        "  |  arrows: imports down, one per pair of folders or loose modules, with their count"
        "  |  orange: an import upward, or a circle",
        fontsize=7.5,
        color="#555",
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    # A palette of 64 colours: flat fills and text lose nothing visible, and the file shrinks.
    Image.open(buffer).convert("RGB").quantize(colors=64).save(out, optimize=True)
    return caption


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "house.png")
    print(draw(parser.parse_args().out))


if __name__ == "__main__":
    main()

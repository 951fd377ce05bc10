"""The numbers behind trackerd.vision.stillness: still pictures re-encoded against live people.

    python docs/measure_stillness.py            # the shipped measure (a minute or so)
    python docs/measure_stillness.py --compare  # also other statistics over the same cells
    python docs/measure_stillness.py --halves   # zju-dev's subjects 11-15 and 16-20 apart

Every frame is JPEG-encoded at quality 80 and decoded by trackerd.vision.images.decode_grey, as a
pushed frame is. Live: tests/data's clips, the Pexels clip (the demo's first 472 frames) and the
40 zju-dev webcam clips (../shared/data/zju-dev; left out, saying so, when absent). Still: three
photos and one frame of three clips, each re-encoded 60 times at the same quality, at random
qualities in 75-85 and 70-90 (seeded), and cycling 80/65/50.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trackerd.sources import demo_clip_path, open_source  # noqa: E402
from trackerd.vision import stillness  # noqa: E402
from trackerd.vision.geometry import u8  # noqa: E402
from trackerd.vision.images import decode_grey  # noqa: E402

DATA = ROOT / "tests" / "data"
ZJU = ROOT.parent / "shared" / "data" / "zju-dev"
PEXELS_FRAMES = 472
LIVE_GAP_S = 0.5
"""The frozen episode ends on moving frames at most this far apart (frozen_stutter_s)."""

Grey = NDArray[np.uint8]
Statistic = Callable[[NDArray[np.float32]], float]


def jpeg(image: NDArray[np.uint8], quality: int = 80) -> Grey:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return decode_grey(data.tobytes()).grey


def clip(path: Path, limit: int | None = None) -> tuple[list[float], list[Grey]]:
    with open_source(str(path)) as source:
        frames = list(source)[:limit]
    return [f.t for f in frames], [jpeg(f.image) for f in frames]


def changes(
    greys: Sequence[Grey], statistic: Statistic | None = None, cell_px: int = stillness.CELL_PX
) -> NDArray[np.float64]:
    """Each frame's change from the one before: the shipped measure, or ``statistic`` over the
    moves of ``cell_px`` cells."""
    if statistic is None:
        measure = stillness.Stillness()
        values = [measure.change(g) for g in greys]
        return np.array([v for v in values if v is not None])
    cells = [stillness.cell_means(g, cell_px) for g in greys]
    return np.array([statistic(np.abs(b - a)) for a, b in itertools.pairwise(cells)])


def longest_without_moving(times: Sequence[float], moved: NDArray[np.float64], t: float) -> float:
    moving = np.asarray(times[1:])[moved >= t]
    anchors = np.concatenate([[times[0]], moving, [times[-1]]])
    return float(np.max(np.diff(anchors)))


def halves() -> None:
    """The threshold was set from still pictures (their largest change, 0.39) and checked on all
    of zju-dev: each half of its people apart, as if the other half had been the only one."""
    threshold = stillness.FROZEN_CHANGE
    for label, subjects in (("11-15", range(11, 16)), ("16-20", range(16, 21))):
        lows, gaps = [], []
        for path in sorted(ZJU.glob("*.avi")):
            if int(path.stem[:6]) in subjects:
                times, greys = clip(path)
                moved = changes(greys)
                lows.append(float(moved.min()))
                gaps.append(longest_without_moving(times, moved, threshold))
        print(
            f"zju subjects {label}: {len(lows)} clips, smallest change {min(lows):.3f}, longest "
            f"run of still frames {max(gaps):.2f} s (frozen needs 3 s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="also other statistics")
    parser.add_argument("--halves", action="store_true", help="zju-dev's two halves apart")
    args = parser.parse_args()
    if args.halves:
        halves()
        return

    live = {
        "single_face.mp4": clip(DATA / "single_face.mp4"),
        "face_noface.mov, empty room": clip(DATA / "face_noface.mov"),
        "Pexels clip": clip(demo_clip_path(), PEXELS_FRAMES),
    }
    empty_times, empty_greys = live["face_noface.mov, empty room"]
    live["face_noface.mov, empty room"] = (empty_times[72:], empty_greys[72:])
    times, greys = clip(DATA / "noface_face.mov")
    live["noface_face.mov, empty room"] = (times[:96], greys[:96])
    if ZJU.exists():
        for path in sorted(ZJU.glob("*.avi")):
            live[f"zju {path.stem}"] = clip(path)
    else:
        print(f"({ZJU} is absent: the zju-dev clips are left out)")

    first = {
        name: u8(cv2.imread(str(DATA / name)))
        for name in ("single_face.jpg", "multi_face.jpg", "astronaut.png")
    }
    with open_source(str(DATA / "single_face.mp4")) as source:
        first["single_face.mp4 frame 10"] = list(source)[10].image
    with open_source(str(demo_clip_path())) as source:
        first["Pexels frame 100"] = list(source)[100].image
    if ZJU.exists():
        with open_source(str(ZJU / "000011M_FBN.avi")) as source:
            first["zju 000011M_FBN frame 20"] = list(source)[20].image
    rng = np.random.default_rng(1)
    qualities = {
        "same q": [80] * 60,
        "q 75-85": [int(q) for q in rng.integers(75, 86, 60)],
        "q 70-90": [int(q) for q in rng.integers(70, 91, 60)],
        "q 80/65/50": [80, 65, 50] * 20,
    }
    still = {
        (name, label): [jpeg(image, q) for q in qs]
        for name, image in first.items()
        for label, qs in qualities.items()
    }

    threshold = stillness.FROZEN_CHANGE
    print(f"\n## The shipped measure: q{stillness.QUANTILE:g} of {stillness.CELL_PX} px cells")
    print("\nStill pictures, largest change:\n")
    print(f"| picture | {' | '.join(qualities)} |")
    print(f"|---|{'---|' * len(qualities)}")
    for name in first:
        row = [changes(still[name, q]).max() for q in qualities]
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in row)} |")
    print(f"\nLive, at {threshold:g}: share of frames below it, longest time without one")
    print("at or above it; smallest change, 5th percentile, median:\n")
    print("| clip | below | longest (s) | min | p5 | median |")
    print("|---|---|---|---|---|---|")
    for name, (times, greys) in live.items():
        m = changes(greys)
        print(
            f"| {name} | {np.mean(m < threshold):.0%} "
            f"| {longest_without_moving(times, m, threshold):.2f} | {m.min():.3f} "
            f"| {np.quantile(m, 0.05):.3f} | {np.median(m):.3f} |"
        )

    def q(level: float) -> Statistic:
        return lambda moved: float(np.quantile(moved, level))

    measures: dict[str, tuple[Statistic | None, int]] = {"shipped": (None, stillness.CELL_PX)}
    if args.compare:
        measures |= {
            "q0.99, 16 px": (q(0.99), 16),
            "mean, 16 px": (lambda m: float(m.mean()), 16),
            "max, 16 px": (lambda m: float(m.max()), 16),
            "q0.95, 24 px": (q(0.95), 24),
            "q0.95, 32 px": (q(0.95), 32),
        }
    print(
        f"\nSeparation: the largest threshold at which every live clip has a frame at or above"
        f" it at least every {LIVE_GAP_S:g} s, over the largest change of a still picture"
        " re-encoded at qualities 75-85:\n"
    )
    print("| measure | live up to | re-encoded 75-85 | ratio |")
    print("|---|---|---|---|")
    for label, (statistic, cell_px) in measures.items():
        moved = {n: changes(g, statistic, cell_px) for n, (_, g) in live.items()}
        live_safe = 0.0
        for t in np.arange(0.01, 5.0, 0.01):
            if any(
                longest_without_moving(ts, moved[n], t) > LIVE_GAP_S for n, (ts, _) in live.items()
            ):
                break
            live_safe = float(t)
        jitter = max(changes(still[n, "q 75-85"], statistic, cell_px).max() for n in first)
        print(f"| {label} | {live_safe:.2f} | {jitter:.3f} | {live_safe / jitter:.2f} |")


if __name__ == "__main__":
    main()

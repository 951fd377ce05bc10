"""Closed eyes and blinks on people the threshold never saw: zju-dev cross-validated by subject.

``python -m benchmarks.crossval``: the closed-eye threshold (``EyeSettings.closed_score``) is
chosen on subjects 11-15 by :data:`RULE`, then applied unchanged to subjects 16-20; then the other
way round. Each held-out half gets one row per method, from the same run:

- **today** (before issue 23): the mean mismatch over a fixed 0.046, which was chosen on subjects
  11-15 (so its 11-15 row is not held out);
- **today, tuned**: the same evidence and decision, its threshold chosen by :data:`RULE`;
- **trackerd**: the current settings, threshold chosen by :data:`RULE`;
- each ``eyes.NAME=VALUE[,...]`` given on the command line (``benchmarks.ab_tracker``'s syntax):
  the current settings so changed, threshold chosen by :data:`RULE` (~80 s each).

Closed and open frames, blinks found and false counts, per-eye recall and false boxes are
``benchmarks.zju``'s. Choosing a threshold replays :func:`trackerd.vision.eyes.closed_decision`
over each frame's recorded evidence (the decision feeds nothing back into the tracking); the
held-out rows come from the real tracker run with the chosen threshold. The table goes to
stdout and ``benchmarks/results/crossval.json``; docs/experiments.md quotes it. ~3 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2

from benchmarks import zju
from benchmarks.__main__ import RESULTS, make_record
from benchmarks.ab_tracker import parse
from trackerd.vision.eyes import Eyes, EyeSettings, closed_decision
from trackerd.vision.tracker import Tracker, TrackerSettings

HALVES: Final = ((11, 15), (16, 20))
"""zju-dev's subjects, in two halves: each is tuned on in turn, and the other reported."""

RULE_OPEN: Final = 0.01
"""The rule: the threshold that finds the most closed frames while calling at most 1 % of the
tuning half's open frames closed (the highest such threshold on a tie). 1 %, not the aim's 3 %:
subjects 16-20 call fewer open frames closed than 11-15 at any threshold, so a threshold chosen
at 3 % on them called 5-6 % of 11-15's open frames closed (docs/experiments.md)."""

RULE: Final = f"most closed frames found at <= {RULE_OPEN:.0%} of open frames called closed"

GRID: Final = tuple(round(0.005 + 0.00125 * i, 5) for i in range(197))
"""Thresholds tried: 0.005 to 0.25 in steps of 0.00125."""

TODAY: Final = dataclasses.replace(
    EyeSettings(),
    closed_score=0.046,
    closed_both=0.0,
    closed_dark_weight=0.0,
    closed_min_updates=3,
    closed_min_history=5,
)
"""The closed-eye decision before issue 23: the baseline."""


def subject(name: str) -> int:
    """A clip's subject number: ``000016F_FNN`` is 16."""
    return int(name[:6])


def half(clips: Sequence[zju.Clip], subjects: tuple[int, int]) -> list[zju.Clip]:
    return [c for c in clips if subjects[0] <= subject(c.name) <= subjects[1]]


@dataclass(frozen=True)
class Recorded:
    """One clip's run: what the tracker reported, and each frame's closed-eye evidence."""

    clip: zju.Clip
    results: list[zju.Result]
    evidence: list[tuple[float, float]]
    """(closedness, lower) for each frame: the inputs of ``closed_decision``."""


def tracker_with(eyes: EyeSettings) -> Tracker:
    return Tracker(dataclasses.replace(TrackerSettings(), eyes=eyes))


def record(clip: zju.Clip, eyes: EyeSettings) -> Recorded:
    """The tracker over ``clip``, keeping what its eye stage said on each frame."""
    tracker = tracker_with(eyes)
    stage = tracker._eyes
    said: list[Eyes] = []
    step = stage.step

    def keep(*args: Any) -> Eyes:
        found = step(*args)
        said.append(found)
        return found

    stage.step = keep  # type: ignore[method-assign, assignment]
    results = zju.run_trackerd(clip, tracker)
    if len(said) != len(results):
        raise RuntimeError(
            f"{clip.name}: the eye stage ran on {len(said)} of {len(results)} frames"
        )
    return Recorded(
        clip, [r for r in results if r is not None], [(e.closedness, e.lower) for e in said]
    )


def replay(eyes: EyeSettings, run: Recorded) -> list[zju.Result]:
    """The run's results with ``closed`` decided again under ``eyes`` (blinks not recounted)."""
    return [
        dataclasses.replace(result, closed=closed_decision(eyes, closedness, lower))
        for result, (closedness, lower) in zip(run.results, run.evidence, strict=True)
    ]


def choose(eyes: EyeSettings, runs: Sequence[Recorded]) -> tuple[float, zju.Score]:
    """:data:`RULE` over :data:`GRID` on ``runs``: the threshold, and its score there."""
    best: tuple[float, zju.Score] | None = None
    for threshold in GRID:
        trial = dataclasses.replace(eyes, closed_score=threshold)
        score = zju.Score()
        for run in runs:
            score.add(zju.score_clip(run.clip, replay(trial, run)))
        if score.open_said_closed_rate > RULE_OPEN:
            continue
        if best is None or score.closed_recall >= best[1].closed_recall:
            best = (threshold, score)
    if best is None:
        raise RuntimeError(f"no threshold in the grid meets the rule: {RULE}")
    return best


@dataclass
class Row:
    """One method's figures on one held-out half."""

    method: str
    tuned_on: str
    held_out: str
    threshold: float
    score: zju.Score
    blinks: zju.Blinks
    tuning: zju.Score | None = None
    """On the tuning half, at the chosen threshold (None: not chosen here)."""

    def summary(self) -> dict[str, Any]:
        tuning = self.tuning
        return {
            "method": self.method,
            "tuned_on": self.tuned_on,
            "held_out": self.held_out,
            "closed_score": self.threshold,
            "tuning_closed_on_closed": None if tuning is None else tuning.closed_recall,
            "tuning_closed_on_open": None if tuning is None else tuning.open_said_closed_rate,
            **self.score.summary(),
            **self.blinks.summary(),
        }


def held_out(eyes: EyeSettings, clips: Sequence[zju.Clip]) -> tuple[zju.Score, zju.Blinks]:
    """The real tracker with ``eyes`` over ``clips``."""
    score, blinks = zju.Score(), zju.Blinks()
    for clip in clips:
        results = zju.run_trackerd(clip, tracker_with(eyes))
        score.add(zju.score_clip(clip, results))
        blinks.add(zju.score_blinks(clip, [r for r in results if r is not None]))
    return score, blinks


def label(subjects: tuple[int, int]) -> str:
    return f"{subjects[0]}-{subjects[1]}"


def cross_validate(runs: Sequence[Recorded], eyes: EyeSettings, method: str) -> list[Row]:
    """``eyes`` with its threshold chosen on each half by :data:`RULE` (over ``runs``, recorded
    with ``eyes``), reported on the other."""
    clips = [run.clip for run in runs]
    rows = []
    for tune, report in (HALVES, HALVES[::-1]):
        tuning_half = {c.name for c in half(clips, tune)}
        threshold, tuning = choose(eyes, [r for r in runs if r.clip.name in tuning_half])
        chosen = dataclasses.replace(eyes, closed_score=threshold)
        score, blinks = held_out(chosen, half(clips, report))
        rows.append(Row(method, label(tune), label(report), threshold, score, blinks, tuning))
    return rows


def fixed(clips: Sequence[zju.Clip], eyes: EyeSettings, method: str) -> list[Row]:
    """``eyes`` unchanged on each half (the baseline: its threshold was chosen on 11-15)."""
    rows = []
    for report in HALVES:
        score, blinks = held_out(eyes, half(clips, report))
        rows.append(Row(method, "11-15, fixed", label(report), eyes.closed_score, score, blinks))
    return rows


COLUMNS: Final = (
    ("closed_score", "threshold", "{:.4g}"),
    ("closed_on_closed", "closed frames", "{:.1%}"),
    ("closed_on_open", "open frames said closed", "{:.1%}"),
    ("blinks_labelled", "blinks labelled", "{}"),
    ("blinks_found", "blinks found", "{:.1%}"),
    ("false_counts", "false counts", "{:.1%}"),
    ("eye_recall", "eye recall", "{:.1%}"),
    ("false_boxes_per_frame", "false boxes / frame", "{:.3f}"),
)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table, by held-out half."""
    head = ["held out", "tuned on", "method", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: str(r["held_out"])):
        cells = [r["held_out"], r["tuned_on"], r["method"]]
        cells += [fmt.format(r[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(variants: Sequence[str] = (), folder: Path = zju.FOLDER) -> dict[str, Any]:
    """The baseline, today's evidence tuned by the rule, the current settings, and each of
    ``variants`` (``eyes.NAME=VALUE[,...]`` as ``benchmarks.ab_tracker`` takes them)."""
    cv2.setNumThreads(1)
    clips = [zju.load(name, folder) for name in zju.names(folder)]
    rows = fixed(clips, TODAY, "today")
    rows += cross_validate([record(c, TODAY) for c in clips], TODAY, "today, tuned")
    current = EyeSettings()
    runs = [record(c, current) for c in clips]
    rows += cross_validate(runs, current, "trackerd")
    for variant in variants:
        eyes = parse(variant).eyes
        rows += cross_validate([record(c, eyes) for c in clips], eyes, variant)
    return {
        "rule": RULE,
        "clips": len(clips),
        "rows": [r.summary() for r in rows],
        "closed_score_on_all_clips": choose(current, runs)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="eyes.NAME=VALUE[,...]: more rows")
    parser.add_argument("--out", type=Path, default=RESULTS / "crossval.json")
    args = parser.parse_args()
    started = time.time()
    results = run(args.variants)
    print(table(results["rows"]))
    print(f"rule: {RULE}; on all 40 clips it chooses {results['closed_score_on_all_clips']}")
    command = ["-m", "benchmarks.crossval", *sys.argv[1:]]
    record_ = make_record("crossval", command, False, started, results)
    args.out.write_text(json.dumps(record_, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

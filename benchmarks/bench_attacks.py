"""Attacks: does a hostile candidate take the server from everyone else? (issue 20)

For each family of :data:`benchmarks.attack_clients.FAMILIES`, a fresh ``python -m trackerd
--source demo`` with default flags; beside it, in a client process of their own, a good push
session (real face JPEGs, 640x480, 15 fps, one frame in flight) and a stream subscriber on the
server's camera, throughout; the attack in another process. After a warm-up, three windows:
BEFORE, DURING (the attack runs) and AFTER (the attack's clients are gone). Per window:

- the good push session's ``eye_data`` a second and its send → ``eye_data`` p99;
- the subscriber's ``eye_data`` a second, and its ratio to BEFORE;
- the server's RSS (psutil, every 0.1 s): at the window's start, its peak, at its end;
- the server's CPU (psutil's CPU times over the window), in % of one core.

The goal (issue 20), for DURING and AFTER: the good session at ≥ ``GOOD_FPS`` with p99 <
``GOOD_P99_MS``, the subscriber at ≥ ``STREAM_RATIO`` of its BEFORE rate, and the RSS peak within
the Kubernetes manifest's memory limit with 50 % headroom.

``python -m benchmarks attacks [--quick]`` measures this tree. ``python -m benchmarks.bench_attacks
[--quick] [--trackerd-root DIR] [--compare DIR] [--families a,b] [--out FILE|DIR]`` runs the server
from another checkout (``--trackerd-root``), or that checkout first and this tree after, side by
side (``--compare``); the clients are always this tree's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.attack_clients import ANSWER_TIMEOUT_S, FAMILIES, UPGRADE_CONNECTIONS
from benchmarks.bench_fanout import Child, _quantile, child
from benchmarks.bench_sessions import await_quiet
from benchmarks.procs import LISTENING, ROOT, process

WINDOW_S = 8.0
QUICK_WINDOW_S = 1.0
WARMUP_S = 3.0
"""After the clients are READY, before BEFORE: the tracker has found the face."""
QUICK_WARMUP_S = 1.0
"""The quick run checks that the windows fill, not that they hold: no need to wait for a face."""
QUICK_FAMILIES = ("fill",)
"""The CI smoke test: one cheap attack (of frames; hoard, of sessions, is as quick but the run
is held to a minute)."""
GOOD_FPS = 14.0
GOOD_P99_MS = 150.0
STREAM_RATIO = 0.9
HEADROOM = 1.5
"""RSS must stay under the pod's memory limit / this (512 MiB -> 341 MiB)."""
SAMPLE_S = 0.1
RSS_GUARD_FRACTION = 0.4
"""The benchmark kills the server past this share of the machine's memory (the issue's attack
took it to 2.8 GB): a pod would have been OOM-killed long before, and the machine is shared."""
MANIFEST = ROOT / "deploy" / "kubernetes" / "statefulset.yaml"
CHILD_SLACK_S = 60.0
WINDOWS = ("before", "during", "after")
MIB = 2**20


def memory_limit_mib(manifest: Path = MANIFEST) -> float:
    """The container's memory limit in the Kubernetes manifest (``limits: ... memory: 512Mi``)."""
    found = re.search(
        r"limits:\s*\n(?:[ \t]+\w+:.*\n)*?[ \t]+memory:\s*(\d+)(Mi|Gi)", manifest.read_text()
    )
    if not found:
        raise RuntimeError(f"no memory limit in {manifest}")
    return int(found.group(1)) * (1024 if found.group(2) == "Gi" else 1)


@contextlib.contextmanager
def trackerd(root: Path, deadline_s: float) -> Iterator[Child]:
    """``python -m trackerd --source demo`` with default flags, from ``root``'s code."""
    args = ("-m", "trackerd", "--host", "127.0.0.1", "--port", "0", "--source", "demo")
    with process(*args, env={"PYTHONPATH": str(root)}, cwd=root) as proc:
        server = Child(proc, deadline_s)
        try:
            yield server
        finally:
            server.close()


class Sampler:
    """The server's RSS and CPU seconds every ``SAMPLE_S``, in a thread; it kills the server
    past ``guard_bytes`` of RSS (and says so)."""

    def __init__(self, pid: int, guard_bytes: int) -> None:
        self.process = psutil.Process(pid)
        self.guard_bytes = guard_bytes
        self.samples: list[tuple[float, int, float, float]] = []
        """``(unix, rss, server CPU s, machine CPU s)``: the machine's, to see other work."""
        self.killed_at_mib: float | None = None
        self.died_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                with self.process.oneshot():
                    rss = self.process.memory_info().rss
                    cpu = self.process.cpu_times()
            except psutil.NoSuchProcess:
                self.died_at = time.time()
                return
            if self.process.status() == psutil.STATUS_ZOMBIE:
                self.died_at = time.time()
                return
            busy = psutil.cpu_times()
            machine = busy.user + busy.nice + busy.system + busy.irq + busy.softirq
            self.samples.append((time.time(), rss, cpu.user + cpu.system, machine))
            if rss > self.guard_bytes:
                self.killed_at_mib = rss / MIB
                self.process.kill()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {
                "rss_start_mib": None,
                "rss_peak_mib": None,
                "rss_end_mib": None,
                "cpu_pct": None,
                "other_cpu_pct": None,
            }
        (a, rss_a, cpu_a, all_a), (b, rss_b, cpu_b, all_b) = inside[0], inside[-1]
        return {
            "rss_start_mib": rss_a / MIB,
            "rss_peak_mib": max(s[1] for s in inside) / MIB,
            "rss_end_mib": rss_b / MIB,
            "cpu_pct": 100 * (cpu_b - cpu_a) / (b - a),
            # Everything else, the good and attacking clients included.
            "other_cpu_pct": 100 * ((all_b - all_a) - (cpu_b - cpu_a)) / (b - a),
        }


def measure(family: str, root: Path, window_s: float, quick: bool = False) -> dict[str, Any]:
    """A fresh server, the good clients and one attack: the three windows. Unless ``quick``,
    first wait (a minute at most) for the machine to be quiet."""
    busy_before = None if quick else await_quiet()
    warmup_s = QUICK_WARMUP_S if quick else WARMUP_S
    deadline_s = warmup_s + 3 * window_s + CHILD_SLACK_S
    guard = int(RSS_GUARD_FRACTION * psutil.virtual_memory().total)
    with trackerd(root, deadline_s) as srv:
        port = str(srv.wait_log(LISTENING, timeout_s=30).group(1))
        sampler = Sampler(srv.proc.pid, guard)
        try:
            clients_module = ("-m", "benchmarks.attack_clients")
            attack_args = ("attack", "--port", port, "--family", family)
            with (
                child(*clients_module, "good", "--port", port, deadline_s=deadline_s) as good,
                child(*clients_module, *attack_args, deadline_s=deadline_s) as attacker,
            ):
                good.line("READY")
                attacker.line("READY")
                start = time.time() + warmup_s
                edges = [start + k * window_s for k in range(4)]
                # The good clients record a second past the end, so that no frame of the last
                # window is cut short; the attack runs through DURING only.
                good.send(f"{edges[0]!r} {edges[3] + 1.0!r}")
                attacker.send(f"{edges[1]!r} {edges[2]!r}")
                attack = _result(attacker)
                clients = _result(good)
        finally:
            sampler.stop()
    row: dict[str, Any] = {"family": family, "description": FAMILIES[family], "attack": attack}
    row["busy_before_pct"] = busy_before
    for name, t0, t1 in zip(WINDOWS, edges, edges[1:], strict=False):
        row[name] = {**_good_window(clients, t0, t1), **sampler.window(t0, t1)}
    before = row["before"]["stream_per_s"]
    for name in WINDOWS:
        rate = row[name]["stream_per_s"]
        row[name]["stream_ratio"] = rate / before if before and rate is not None else None
    row["server_killed_at_mib"] = sampler.killed_at_mib
    row["server_died_at_s"] = sampler.died_at - edges[0] if sampler.died_at else None
    return row


def _result(c: Child) -> dict[str, Any]:
    """The child's JSON line; a child that failed is reported, not raised (the others count)."""
    try:
        return dict(json.loads(c.line("")))
    except (RuntimeError, ValueError) as exc:
        return {"failed": str(exc)[-2000:]}


def _good_window(clients: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """The good clients' figures for answers received in ``[t0, t1)``."""
    if "failed" in clients:
        return {"good_fps": None, "good_p99_ms": None, "good_lost": None, "stream_per_s": None}
    span = t1 - t0
    frames = clients["push"]["frames"]
    answered = [
        (sent, got) for sent, got, reply in frames if got and t0 <= got < t1 and reply == "eye_data"
    ]
    latencies = sorted(1000 * (got - sent) for sent, got in answered)
    lost = sum(1 for sent, got, _ in frames if got is None and t0 <= sent + ANSWER_TIMEOUT_S < t1)
    errors = sum(1 for _, got, reply in frames if reply == "error" and t0 <= got < t1)
    stream = [t for t in clients["stream"]["eye_data_at"] if t0 <= t < t1]
    return {
        "good_fps": len(answered) / span,
        "good_p50_ms": _quantile(latencies, 0.50),
        "good_p99_ms": _quantile(latencies, 0.99),
        "good_lost": lost,
        "good_errors": errors,
        "stream_per_s": len(stream) / span,
    }


def holds(window: dict[str, Any], limit_mib: float) -> dict[str, bool]:
    """Each goal of issue 20, for one window."""
    p99 = window["good_p99_ms"]
    ratio = window["stream_ratio"]
    peak = window["rss_peak_mib"]
    return {
        "good": bool(
            window["good_fps"] and window["good_fps"] >= GOOD_FPS and p99 and p99 < GOOD_P99_MS
        ),
        "stream": bool(ratio is not None and ratio >= STREAM_RATIO),
        "rss": bool(peak is not None and peak <= limit_mib / HEADROOM),
    }


def attack_goal(family: str, attack: dict[str, Any]) -> tuple[str, bool] | None:
    """Where the good clients' figures cannot show the hole, what the attack itself must not
    get: hoarding must leave a new candidate a session; an upgrade with a body must be refused."""
    if "failed" in attack:
        return None
    if family == "hoard":
        probes = attack["probes"]
        got = sum(p["session"] == "tracking_started" for p in probes)
        every = bool(probes) and got == len(probes)
        return f"a new candidate got a session {got}/{len(probes)} times", every
    if family == "upgrade_body":
        upgraded = attack.get("status 101", 0)
        return (
            f"upgrades with a body refused: {UPGRADE_CONNECTIONS - upgraded}/{UPGRADE_CONNECTIONS}",
            upgraded == 0,
        )
    return None


def run(
    quick: bool = False, root: Path = ROOT, families: Sequence[str] | None = None
) -> dict[str, Any]:
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    limit = memory_limit_mib()
    results: dict[str, Any] = {
        "trackerd_root": str(root),
        "window_s": window_s,
        "warmup_s": QUICK_WARMUP_S if quick else WARMUP_S,
        "memory_limit_mib": limit,
        "rss_goal_mib": limit / HEADROOM,
        "goal": (
            f"DURING and AFTER: good push session >= {GOOD_FPS} fps, p99 < {GOOD_P99_MS} ms; "
            f"stream >= {STREAM_RATIO:.0%} of BEFORE; RSS peak <= {limit / HEADROOM:.0f} MiB "
            f"({limit:.0f} MiB limit / {HEADROOM})"
        ),
        "cpus": psutil.cpu_count(),
        "rows": [],
    }
    print(f"trackerd from {root}; goal: {results['goal']}", flush=True)
    print(HEADER, flush=True)
    for family in families or (QUICK_FAMILIES if quick else FAMILIES):
        row = measure(family, root, window_s, quick)
        for name in WINDOWS:
            row[name]["holds"] = holds(row[name], limit)
        goal = attack_goal(family, row["attack"])
        row["attack_goal"] = goal and {"what": goal[0], "holds": goal[1]}
        row["holds"] = all(all(row[w]["holds"].values()) for w in ("during", "after"))
        row["holds"] = row["holds"] and (goal is None or goal[1])
        results["rows"].append(row)
        print_row(row)
    return results


HEADER = (
    f"{'family':<13} {'window':<6} {'good fps':>8} {'p99 ms':>7} {'lost':>4} {'stream/s':>8} "
    f"{'ratio':>5} {'RSS start/peak/end MiB':>22} {'CPU %':>6} {'other %':>7}"
    "  goals (good stream rss)"
)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_row(row: dict[str, Any]) -> None:
    for name in WINDOWS:
        w = row[name]
        rss = "/".join(_fmt(w[k], ".0f") for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))
        goals = " ".join("ok" if v else "NO" for v in w["holds"].values())
        label = row["family"] if name == "before" else ""
        print(
            f"{label:<13} {name:<6} {_fmt(w['good_fps'], '8.1f')} "
            f"{_fmt(w['good_p99_ms'], '7.0f')} {_fmt(w['good_lost'], '4d')} "
            f"{_fmt(w['stream_per_s'], '8.1f')} {_fmt(w['stream_ratio'], '5.2f')} {rss:>22} "
            f"{_fmt(w['cpu_pct'], '6.0f')} {_fmt(w['other_cpu_pct'], '7.0f')}  {goals}",
            flush=True,
        )
    attack = {k: v for k, v in row["attack"].items() if k not in ("family", "probes")}
    print(f"{'':<13} attack: {json.dumps(attack)[:400]}", flush=True)
    if row["attack_goal"]:
        verdict = "ok" if row["attack_goal"]["holds"] else "NO"
        print(f"{'':<13} attack goal: {row['attack_goal']['what']}: {verdict}", flush=True)
    for what in ("busy_before_pct", "server_killed_at_mib", "server_died_at_s"):
        if row[what] is not None:
            print(f"{'':<13} {what}: {row[what]:.1f}", flush=True)


def print_compare(base: dict[str, Any], new: dict[str, Any]) -> None:
    """The two runs side by side: each figure as base → new."""
    print(f"\nside by side: {base['trackerd_root']} -> {new['trackerd_root']}")
    print(
        f"{'family':<13} {'window':<6} {'good fps':>11} {'p99 ms':>13} {'stream ratio':>12} "
        f"{'RSS peak MiB':>13} {'CPU %':>11}"
    )
    by_family = {r["family"]: r for r in new["rows"]}
    for old in base["rows"]:
        now = by_family.get(old["family"])
        if now is None:
            continue
        for name in WINDOWS:
            a, b = old[name], now[name]

            def pair(key: str, spec: str, width: int, a: Any = a, b: Any = b) -> str:
                return f"{_fmt(a[key], spec)} -> {_fmt(b[key], spec)}".rjust(width)

            print(
                f"{old['family'] if name == 'before' else '':<13} {name:<6} "
                f"{pair('good_fps', '.1f', 11)} {pair('good_p99_ms', '.0f', 13)} "
                f"{pair('stream_ratio', '.2f', 12)} {pair('rss_peak_mib', '.0f', 13)} "
                f"{pair('cpu_pct', '.0f', 11)}",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.__main__ import RESULTS, make_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s windows, one attack")
    parser.add_argument(
        "--trackerd-root", type=Path, default=ROOT, help="run this checkout's server"
    )
    parser.add_argument(
        "--compare", type=Path, help="run this checkout's server first, then this tree's"
    )
    parser.add_argument("--families", help=f"comma-separated, of: {', '.join(FAMILIES)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "attacks.json")
    args = parser.parse_args(argv)
    families = args.families.split(",") if args.families else None
    if families and (unknown := set(families) - set(FAMILIES)):
        parser.error(f"unknown families {', '.join(sorted(unknown))}")
    started = time.time()
    runs = {}
    if args.compare:
        runs["baseline"] = run(args.quick, args.compare.resolve(), families)
    runs["trackerd"] = run(args.quick, args.trackerd_root.resolve(), families)
    if args.compare:
        print_compare(runs["baseline"], runs["trackerd"])
    command = ["-m", "benchmarks.bench_attacks", *(argv or sys.argv[1:])]
    results = runs if args.compare else runs["trackerd"]
    record = make_record("attacks", command, args.quick, started, results)
    out = args.out / "attacks.json" if args.out.is_dir() else args.out  # a folder, as for the rest
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"-> {out}", flush=True)


if __name__ == "__main__":
    main()

"""One PNG per suite, drawn from the same results the JSON holds (matplotlib, ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
from matplotlib import ticker


def tracker(results: dict[str, Any], path: Path) -> None:
    """Per-frame cost distribution per case, trackerd against the original (log scale)."""
    cases = results["cases"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    data, labels, colours = [], [], []
    for c in cases:
        data += [c["trackerd_samples_ms"], c["original_samples_ms"]]
        labels += [f"{c['case']}\ntrackerd", "original"]
        colours += ["tab:blue", "tab:grey"]
    box = ax.boxplot(data, patch_artist=True, showfliers=False, whis=(1, 99))
    for patch, colour in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (log)")
    ax.set_title("Tracker cost per frame: trackerd (blue) vs the original (grey); whiskers p1-p99")
    _save(fig, path)


def kernels(results: dict[str, Any], path: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["numba_ns"] for r in rows], 0.4, label="numba")
    ax.barh([i - 0.2 for i in y], [r["python_ns"] for r in rows], 0.4, label="plain Python")
    ax.set_yticks(list(y), [r["kernel"] for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ns (log)")
    ax.legend()
    ax.set_title("Kernels: per call (steps once a frame, eye_centre once an eye)")
    _save(fig, path)


def gaze(results: dict[str, Any], path: Path) -> None:
    """Raw and smoothed gx where the eyes look aside and back: still between glances, no lag."""
    series = results["moving_series"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for key, style in (("raw", {"color": "tab:grey", "lw": 1}), ("smoothed", {"lw": 1.6})):
        t = [row[0] for row in series[key]]
        ax.plot(t, [row[1] for row in series[key]], label=key, **style)
    ax.set_xlabel("seconds into WolfgangLanger_Pexels.mp4")
    ax.set_ylabel("gaze gx")
    ax.legend(fontsize=7)
    held_out = next(iter(results["report"].values()))
    ax.set_title(
        "gaze: median change a frame on still faces "
        f"{held_out['raw']['median']:.3f} raw, {held_out['smoothed']['median']:.3f} smoothed"
        " (zju-dev 16-20)",
        fontsize=9,
    )
    _save(fig, path)


def fanout(results: dict[str, Any], path: Path) -> None:
    """Latency CDF per number of clients, both servers."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in results["rows"]:
        samples = row["latency_samples_ms"]
        if not samples:
            continue
        fractions = [(i + 1) / len(samples) for i in range(len(samples))]
        style = "-" if row["server"] == "trackerd" else "--"
        ax.plot(samples, fractions, style, label=f"{row['server']}, {row['clients']} clients")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("capture → receipt latency, ms (log)")
    ax.set_ylabel("fraction of messages")
    ax.legend(fontsize=7)
    ax.set_title("Fan-out at 30 Hz: trackerd (solid) vs asyncio + websockets broadcast (dashed)")
    _save(fig, path)


def startup(results: dict[str, Any], path: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 3))
    names = [r["variant"] for r in rows]
    ax.barh(names, [r["first_eye_data_s"] for r in rows], label="to the first eye_data")
    ax.barh(names, [r["listening_s"] for r in rows], label="to listening")
    ax.set_xlabel("seconds from process start")
    ax.legend(fontsize=7)
    ax.set_title("Start-up on the demo clip")
    _save(fig, path)


def memory(results: dict[str, Any], path: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 3))
    states = [("idle_mib", "idle"), ("tracking_mib", "tracking"), ("with_clients_mib", "clients")]
    for i, (key, label) in enumerate(states):
        ax.bar(
            [j + (i - 1) * 0.25 for j in range(len(rows))],
            [r[key] or 0.0 for r in rows],  # None (0 here): the crowd could not be seated
            0.25,
            label=label,
        )
    ax.set_xticks(range(len(rows)), [r["server"] for r in rows])
    ax.set_ylabel("RSS, MiB")
    ax.legend(fontsize=7)
    ax.set_title(f"Server memory (clients: {rows[0]['clients']})")
    _save(fig, path)


def sessions(results: dict[str, Any], path: Path) -> None:
    """Push sessions against N: delivered fps per session, latency, server CPU."""
    rows = results["rows"]
    n = [r["sessions"] for r in rows]
    fig, (fps, lat, cpu) = plt.subplots(1, 3, figsize=(11, 3.6))
    fps.plot(n, [r["fps_mean"] for r in rows], "o-", label="mean")
    fps.plot(n, [r["fps_min"] for r in rows], "s--", label="slowest session")
    split = results.get("rows_workers2") or []  # the same sizes with a process per core
    x = [r["sessions"] for r in split]
    for ax, key, label in (
        (fps, "fps_min", "slowest"),
        (lat, "p99_ms", "p99"),
        (cpu, "server_cpu_pct", "server"),
    ):
        if split:
            y = [r[key] for r in split]
            ax.plot(x, y, "^-.", color="tab:purple", label=f"{label}, --workers 2")
    fps.axhline(14, color="tab:red", lw=0.8, label="14 fps")
    fps.set_ylim(0, results["fps"] * 1.1)
    fps.set_ylabel("eye_data per second per session")
    lat.plot(n, [r["p50_ms"] for r in rows], "o-", label="p50")
    lat.plot(n, [r["p99_ms"] for r in rows], "s--", label="p99")
    lat.axhline(150, color="tab:red", lw=0.8, label="150 ms")
    lat.set_yscale("log")
    lat.yaxis.set_major_formatter(ticker.ScalarFormatter())
    lat.set_ylabel("send → eye_data, ms (log)")
    cpu.plot(n, [r["server_cpu_pct"] for r in rows], "o-", label="server")
    cpu.plot(n, [r["client_cpu_pct"] for r in rows], "s--", label="client processes")
    cpu.plot(n, [r["other_cpu_pct"] for r in rows], "x:", label="others' work (shared VM)")
    cpu.axhline(100 * results.get("cpus", 2), color="tab:red", lw=0.8, label="all cores")
    cpu.set_ylabel("CPU, % of one core")
    best = results.get("largest", {}).get("sessions")
    for ax in (fps, lat, cpu):
        ax.set_xlabel("push sessions at 15 fps")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if best:
            ax.axvline(best, color="tab:green", lw=0.8, ls=":")
        ax.legend(fontsize=7)
    held = f"; holds up to {best} (green)" if best else ""
    split_best = results.get("largest_workers2", {}).get("sessions")
    if split_best:
        held += f", {split_best} with --workers 2"
    fig.suptitle(f"Push sessions, 640x480 JPEGs at {results['fps']:.0f} fps{held}", fontsize=10)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DRAW = {
    "tracker": tracker,
    "kernels": kernels,
    "gaze": gaze,
    "fanout": fanout,
    "startup": startup,
    "memory": memory,
    "sessions": sessions,
}

"""Start-up: from launching the process to the first ``eye_data`` a client receives.

A client connects as soon as the server says it listens, sends ``start_tracking`` and waits for
the first observation of the demo clip. trackerd is measured with a cold numba cache (a fresh
NUMBA_CACHE_DIR: the first start after an install) and a warm one (every later start); the
baseline is the original server (benchmarks.original_server) in the same run.

Run as root, it also starts both with the kernel's page cache emptied before each start
(``/proc/sys/vm/drop_caches``): the first start after a reboot, when every library is read from
disk. Otherwise (or ``--quick``) those rows are left out, and the run says so.
"""

from __future__ import annotations

import compileall
import os
import statistics
import tempfile
import time
from typing import Any

from benchmarks.procs import ROOT, server, track


def once(kind: str, cache_dir: str) -> dict[str, float]:
    start = time.perf_counter()
    with server(kind, env={"NUMBA_CACHE_DIR": cache_dir}) as (_, port):
        listening = time.perf_counter()
        track(port, 1)
        first = time.perf_counter()
    return {"listening_s": listening - start, "first_eye_data_s": first - start}


def drop_page_cache() -> bool:
    """Write back and drop the kernel's page cache, as after a reboot; False where this
    process may not (not root, or a container's read-only /proc/sys)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as knob:
            knob.write("3\n")
    except OSError as exc:
        print(f"page cache not dropped ({exc}): no rows after a reboot")
        return False
    return True


def compile_sources() -> None:
    """Both servers' modules to bytecode first, as ``pip install`` does for an installed
    package: in a checkout, with PYTHONDONTWRITEBYTECODE set (CI's machines, the image), every
    start would otherwise compile whatever changed since the last bytecode written."""
    for package in ("trackerd", "kernels", "benchmarks"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def run(quick: bool = False) -> dict[str, Any]:
    compile_sources()
    repeats = 1 if quick else 5
    samples: dict[str, list[dict[str, float]]] = {
        "trackerd cold": [],
        "trackerd warm": [],
        "original": [],
    }
    with tempfile.TemporaryDirectory() as caches:
        for i in range(repeats):
            # A fresh, empty cache: a cold start, which fills it; the last one serves the warm.
            warm = os.path.join(caches, str(i))
            os.mkdir(warm)
            samples["trackerd cold"].append(once("trackerd", warm))
        for _ in range(repeats):
            samples["trackerd warm"].append(once("trackerd", warm))
            samples["original"].append(once("original", warm))
        if not quick and drop_page_cache():
            for kind in ("trackerd", "original"):
                samples[f"{kind} after a reboot"] = []
            for _ in range(repeats):
                for kind in ("trackerd", "original"):
                    drop_page_cache()
                    samples[f"{kind} after a reboot"].append(once(kind, warm))
    rows = []
    for variant, runs in samples.items():
        rows.append(
            {
                "variant": variant,
                "listening_s": statistics.median(r["listening_s"] for r in runs),
                "first_eye_data_s": statistics.median(r["first_eye_data_s"] for r in runs),
                "samples": runs,
            }
        )
    bases = {row["variant"]: row["first_eye_data_s"] for row in rows}
    print(f"{'variant':26} {'listening s':>12} {'first eye_data s':>17} {'vs original':>12}")
    for row in rows:
        # Each against the original started the same way.
        after = " after a reboot" if row["variant"].endswith(" after a reboot") else ""
        row["ratio_to_original"] = row["first_eye_data_s"] / bases["original" + after]
        print(
            f"{row['variant']:26} {row['listening_s']:>12.3f} {row['first_eye_data_s']:>17.3f}"
            f" {row['ratio_to_original']:>11.2f}x"
        )
    return {"rows": rows, "repeats": repeats}

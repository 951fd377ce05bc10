"""``trackerd health``: is this installation able to run? (The original's health_check.py.)

Checks, in order, each with a reason a person can act on: the dependencies import; OpenCV is
below 5 and its cascade files exist and load; the compiled kernels load and match their sources;
the settings from the environment are valid (and a TLS certificate loads); and, with
``--source``, that the source opens and yields a frame. Exit status 0 when everything passes,
1 otherwise; ``--json`` for machines.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TextIO

from trackerd.options import Parser
from trackerd.redact import redact

DEPENDENCIES = ("numpy", "cv2", "trio", "trio_websocket", "prometheus_client")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def _dependencies() -> str:
    versions = []
    for name in DEPENDENCIES:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", None) or metadata.version(name.replace("_", "-"))
        versions.append(f"{name} {version}")
    return ", ".join(versions)


def _opencv() -> str:
    import cv2

    from trackerd.vision.cascades import EYE_CASCADE, FACE_CASCADE, cascade_dir, load_cascade

    major = int(cv2.__version__.split(".")[0])
    if major >= 5:
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no Haar cascades: "
            "install 'opencv-python-headless>=4.10,<5'"
        )
    for name in (FACE_CASCADE, EYE_CASCADE):
        load_cascade(name)
    return f"OpenCV {cv2.__version__}; {FACE_CASCADE} and {EYE_CASCADE} load from {cascade_dir()}"


def _kernels() -> str:
    import kernels

    kernels.warm_up()
    if not kernels.COMPILED:
        return "numba's JIT: not compiled at install (no C compiler then; install gcc and g++)"
    return f"compiled ahead of time, matching their sources ({kernels._compiled.__file__})"


def _settings(source: str | None) -> str:
    """The settings the server would start with; ``--source`` given to ``health`` stands in for
    the environment's, as it would on the server's command line."""
    from trackerd.net.access import Access
    from trackerd.net.tls import tls_context
    from trackerd.settings import Settings
    from trackerd.sources import check_source

    settings = Settings.load({"source": source}, os.environ)
    tls_context(settings)  # a certificate that does not load fails here, not at start-up
    check_source(settings.source)  # as the server does before it listens
    scheme = "wss" if settings.tls else "ws"
    if Access(settings).any_origin:
        origins = "any origin"
    else:
        origins = "origins " + (", ".join(settings.origins) or "on localhost only")
    token = "a token" if settings.token else "no token"
    source = redact(settings.source)
    return f"{scheme}://{settings.host}:{settings.port}, source {source}; {origins}, {token}"


def _source(spec: str) -> Callable[[], str]:
    def check() -> str:
        from trackerd.sources import NO_SOURCE, open_source

        if spec.strip() == NO_SOURCE:
            return "none: push sessions only, nothing to open"
        with open_source(spec) as source:
            frame = source.read()
            if frame is None:
                raise RuntimeError(f"{source.description} opened but gave no frame")
            h, w = frame.image.shape[:2]
            return f"{source.description} gave a {w}x{h} frame"

    return check


def run_checks(source: str | None = None) -> list[Check]:
    steps: list[tuple[str, Callable[[], str]]] = [
        ("dependencies", _dependencies),
        ("opencv", _opencv),
        ("kernels", _kernels),
        ("settings", functools.partial(_settings, source)),
    ]
    if source is not None:
        steps.append(("source", _source(source)))
    results = []
    for name, step in steps:
        start = time.perf_counter()
        try:
            detail, ok = step(), True
        except Exception as exc:
            # Redacted: a library's own message may quote the stream URL it could not open.
            detail, ok = redact(f"{type(exc).__name__}: {exc}"), False
        results.append(Check(name, ok, detail, round(time.perf_counter() - start, 3)))
    return results


def main(argv: Sequence[str], stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    parser = Parser(
        prog="trackerd health",
        description="Check that this installation can run trackerd. Exit 0 healthy, 1 not.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--source", help="also open this source and read one frame")
    args = parser.parse_args(list(argv))
    checks = run_checks(args.source)
    healthy = all(c.ok for c in checks)
    if args.json:
        report = {"healthy": healthy, "checks": [asdict(c) for c in checks]}
        out.write(json.dumps(report) + "\n")
    else:
        for c in checks:
            out.write(f"{'ok  ' if c.ok else 'FAIL'} {c.name:13} {c.detail}\n")
        out.write("healthy\n" if healthy else "NOT healthy\n")
    return 0 if healthy else 1

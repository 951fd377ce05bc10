"""What ``/metrics`` and ``/healthz`` report, and the periodic stats line.

The counters live where the work happens (plain ints on the capture, the hub and each client,
no locks on the per-message path); each of those hands out a frozen ``statistics()`` record,
and a custom prometheus-client collector reads only those records, at scrape time. Only the
per-frame time is a real prometheus Histogram, observed once per frame (the capture is handed
its ``observe`` when it is made).
Each app has its own registry, so several servers can live in one process (tests).

So that a leak shows in production and not only in the soak test, the registry also carries
``trackerd_tasks`` (the live trio tasks of the whole process, counted at scrape time by walking
the task tree from the root task; each WebSocket client costs four: its connection handler,
trio-websocket's reader, and the client's writer and heartbeat; a scrape also counts the handler
of its own HTTP connection) and prometheus-client's standard ``process_*`` metrics
(``process_open_fds``, ``process_resident_memory_bytes``, CPU seconds...; read from ``/proc``,
so on Linux only). The task count can only be taken in the trio thread: ``/metrics`` is answered
there, by the app's own loop; a scrape from any other thread leaves ``trackerd_tasks`` out rather
than walk a tree that is changing under it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from trackerd.capture import CaptureStatistics
from trackerd.hub import HubStatistics
from trackerd.net.gate import GateStatistics
from trackerd.net.page import ACCESS_RESULTS, AccessStatistics
from trackerd.net.server import ServerStatistics
from trackerd.platform.records import RecordsStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FRAME_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
"""Tracked frames take ~1-3 ms, full-frame searches 20-90 ms."""


class _Counts(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        now = self._snapshot()
        server, hub, capture = now.server, now.hub, now.capture
        clients = server.clients
        yield _counter("trackerd_frames_processed", "Frames analysed and published", capture.frames)
        yield _counter(
            "trackerd_capture_errors",
            "Source failures: opens and reads that raised or timed out, runs of unusable frames",
            capture.errors,
        )
        yield _counter("trackerd_bad_frames", "Unusable frames skipped", capture.bad_frames)
        yield _counter(
            "trackerd_analyzer_errors",
            "Frames the tracker raised on (a bug), skipped",
            capture.analyzer_errors,
        )
        yield _counter(
            "trackerd_messages_sent",
            "Messages sent to clients",
            clients.fast_sends + clients.slow_sends,
        )
        yield _counter(
            "trackerd_messages_dropped",
            "Observations a slow client skipped because a newer one replaced it",
            clients.skipped,
        )
        yield _counter(
            "trackerd_protocol_errors",
            "Client messages answered with an error",
            clients.protocol_errors,
        )
        yield _counter(
            "trackerd_rate_limited",
            "Client messages refused by the rate limit",
            clients.rate_limited,
        )
        yield _counter(
            "trackerd_connections", "WebSocket connections accepted", server.connections_total
        )
        refused = CounterMetricFamily(
            "trackerd_connections_refused",
            "Connections answered with an HTTP error instead of a WebSocket, by status and cause",
            labels=["status", "cause"],
        )
        for (status, cause), count in sorted(now.gate.refused.items()):
            refused.add_metric([str(status), cause], count)
        yield refused
        dropped = CounterMetricFamily(
            "trackerd_connections_dropped",
            "Connections closed with no answer (TLS failed, nothing sent, evicted while idle to "
            "make room, over a connection limit), by cause",
            labels=["cause"],
        )
        for cause, count in sorted(now.gate.dropped.items()):
            dropped.add_metric([cause], count)
        yield dropped
        yield _by_code(
            "trackerd_messages_over_limit",
            "WebSocket clients closed for a message over a limit (size, fragments, time), by code",
            {str(code): count for code, count in server.closed_by_limit.items()},
        )
        yield _gauge("trackerd_clients_connected", "Open WebSocket connections", server.connected)
        yield _gauge("trackerd_clients_tracking", "Clients subscribed to eye_data", hub.subscribers)
        yield _gauge("trackerd_capture_running", "1 while the source is open", int(capture.running))
        yield _gauge("trackerd_frames_per_second", "Recent frame rate", capture.fps)
        sessions = server.sessions
        yield _gauge("trackerd_sessions", "Push sessions open", sessions.active)
        yield _gauge("trackerd_sessions_max", "max_sessions in force", sessions.limit)
        yield _counter("trackerd_sessions_started", "Push sessions started", sessions.started)
        pushed = CounterMetricFamily(
            "trackerd_pushed_frames",
            "Frames clients pushed, by outcome: analysed (answered with eye_data), replaced by "
            "a newer one while waiting, over_rate (beyond max_fps), bad (refused or undecodable), "
            "over_budget (analysis over frame_cpu_budget)",
            labels=["outcome"],
        )
        for outcome in ("analysed", "replaced", "over_rate", "bad", "over_budget"):
            pushed.add_metric([outcome], getattr(sessions.frames, outcome))
        yield pushed
        yield _by_code(
            "trackerd_sessions_refused",
            "Push sessions refused (server_busy, address_busy, address_penalised) or closed by "
            "the server (session_idle, session_over_budget), by code",
            sessions.refused,
        )
        # The load figure to scale on (docs/operations.md, "Capacity planning"): busy over threads.
        yield _gauge("trackerd_analysis_threads", "analysis_threads in force", sessions.threads)
        yield _counter(
            "trackerd_analysis_busy_seconds",
            "Thread-seconds spent decoding and tracking pushed frames; its rate over "
            "trackerd_analysis_threads is the share of the analysis capacity in use",
            sessions.frames.busy_s,
        )


class _Records(Collector):
    """The platform side (:mod:`trackerd.platform.records`): the database, the outbox, the
    webhooks' deliveries."""

    def __init__(self, statistics: Callable[[], RecordsStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        now = self._statistics()
        up = now.fault is None
        yield _gauge("trackerd_store_up", "1 while the database takes writes, 0 if it fails", up)
        events = CounterMetricFamily(
            "trackerd_events",
            "Session events (episodes, reports): recorded in the database, or lost (it failed)",
            labels=["result"],
        )
        events.add_metric(["recorded"], now.emitted)
        events.add_metric(["lost"], now.lost)
        yield events
        yield _gauge("trackerd_outbox_depth", "Webhook deliveries pending", now.depth)
        yield _gauge(
            "trackerd_outbox_oldest_seconds", "Age of the oldest pending delivery", now.oldest_s
        )
        deliveries = now.deliveries
        if deliveries is None:
            return
        outcomes = CounterMetricFamily(
            "trackerd_webhook_deliveries",
            "Webhook attempts by outcome: delivered (a 2xx), failed (retried later), dead "
            "(given up after --webhook-max-age, kept in the database)",
            labels=["outcome"],
        )
        for outcome in ("delivered", "failed", "dead"):
            outcomes.add_metric([outcome], getattr(deliveries, outcome))
        yield outcomes
        yield SummaryMetricFamily(
            "trackerd_webhook_delivery_latency_seconds",
            "From an event's emission to its 2xx, retries included",
            count_value=deliveries.latency_count,
            sum_value=deliveries.latency_sum_s,
        )


class _AccessChecks(Collector):
    """``trackerd_access_checks_total{result}``: /access answers (see :mod:`trackerd.net.page`)."""

    def __init__(self, statistics: Callable[[], AccessStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        now = self._statistics()
        documentation = (
            "GET /access answers, by result: admitted, refused (origin or token), full, or "
            "throttled (over the per-address rate, answered 429)"
        )
        checks = CounterMetricFamily("trackerd_access_checks", documentation, labels=["result"])
        for result in ACCESS_RESULTS:
            checks.add_metric([result], getattr(now, result))
        yield checks


class _Tasks(Collector):
    """``trackerd_tasks``: every live trio task in the process, counted when scraped."""

    def collect(self) -> Iterator[Metric]:
        count = live_tasks()
        if count is not None:
            yield _gauge("trackerd_tasks", "Live trio tasks in the process", count)


def live_tasks() -> int | None:
    """The number of live trio tasks in this thread's trio run: the root task and everything
    under it, system tasks included. ``None`` outside a trio thread (no tree to walk safely)."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    if root is None:
        return None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_code(name: str, documentation: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["code"])
    for code, count in sorted(counts.items()):
        family.add_metric([code], count)
    return family


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The records metrics are made of, taken together at scrape time."""

    server: ServerStatistics
    hub: HubStatistics
    capture: CaptureStatistics
    gate: GateStatistics


class Metrics:
    """``/metrics``, ``/healthz`` and the stats line, from :class:`Snapshot` records only.
    ``frame_seconds.observe`` is what the capture calls with each frame's tracker time."""

    def __init__(self, snapshot: Callable[[], Snapshot], version: str) -> None:
        self._snapshot, self._version = snapshot, version
        self.registry = CollectorRegistry()
        self.frame_seconds = Histogram(
            "trackerd_frame_seconds",
            "Tracker time per frame (decoding excluded)",
            buckets=FRAME_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_Counts(snapshot))
        self.registry.register(_Tasks())
        ProcessCollector(registry=self.registry)

    def count_access_checks(self, statistics: Callable[[], AccessStatistics]) -> None:
        """Report /access answers from ``statistics`` (the server's :class:`AccessChecks`)."""
        self.registry.register(_AccessChecks(statistics))

    def count_records(self, statistics: Callable[[], RecordsStatistics]) -> None:
        """Report the platform side's figures from ``statistics`` (the server's Records)."""
        self.registry.register(_Records(statistics))

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, bytes]:
        """Healthy unless the source is failing while clients want it."""
        now = self._snapshot()
        capture = now.capture
        healthy = capture.failing is None
        body: dict[str, Any] = {
            "status": "ok" if healthy else "failing",
            "version": self._version,
            "clients": now.server.connected,
            "tracking": now.hub.subscribers,
            "capture_running": capture.running,
            "fps": round(capture.fps, 2),
        }
        if not healthy:
            body["error"] = capture.failing
        return healthy, (json.dumps(body) + "\n").encode()

    def stats_line(self) -> dict[str, Any]:
        """The periodic log line's fields."""
        now = self._snapshot()
        recent = sorted(now.capture.recent_ms)
        clients = now.server.clients
        return {
            "fps": round(now.capture.fps, 2),
            "clients": now.server.connected,
            "tracking": now.hub.subscribers,
            "frame_ms_p50": round(statistics.median(recent), 3) if recent else None,
            "frame_ms_p99": round(recent[int(0.99 * (len(recent) - 1))], 3) if recent else None,
            "messages_sent": clients.fast_sends + clients.slow_sends,
            "messages_dropped": clients.skipped,
        }

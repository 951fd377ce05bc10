"""Three of issue 20's smaller findings, against a real ``trackerd`` process on 127.0.0.1:

- the message timeout stopped at a frame's header, so a pushed frame that declared its length
  and then trickled its payload was bounded only by the heartbeat (up to 40 s);
- ``/access`` answered ~2,200 token guesses a second, with no log line, metric or throttle;
- ``--allowed-hosts <public name>``, which docs/security.md advises for a public deployment, made
  kubelet's probes (``Host: <pod IP>:<port>``) fail with 421.
"""

from __future__ import annotations

import contextlib
import re
import socket

import pytest
import trio

from tests.media import DATA
from tests.serverkit import RawClient, client_frame, serving, upgrade_request
from tests.test_json_logs import logged_server

# --- the message timeout covers a frame's payload ------------------------------------------------

TIMEOUT_S = 1.0
START_SESSION = b'{"type": "start_tracking", "source": "client"}'


async def push_session(port: int) -> RawClient:
    client = await RawClient.connect(port)
    assert (await client.recv())["type"] == "connection"
    await client.send(client_frame(0x1, START_SESSION))
    assert (await client.recv())["type"] == "tracking_started"
    return client


async def trickle(client: RawClient, data: bytes, pieces: int, interval_s: float) -> None:
    """Send ``data`` in ``pieces`` writes, ``interval_s`` apart, until the server closes."""
    step = -(-len(data) // pieces)
    with contextlib.suppress(trio.BrokenResourceError):  # the server closed: the point
        for at in range(0, len(data), step):
            await client.send(data[at : at + step])
            await trio.sleep(interval_s)  # pacing the workload: a slow uplink


async def test_a_pushed_frame_trickled_past_the_message_timeout_is_closed_with_1008() -> None:
    """512 KiB declared, then a byte every 50 ms: closed within the timeout and a second, not
    after the heartbeat's 40 s."""
    async with serving("--source", "demo", "--message-timeout", str(TIMEOUT_S)) as (_, port):
        client = await push_session(port)
        frame = client_frame(0x2, b"\xff" * 512 * 1024)
        await client.send(frame[:14])  # the header: 2 bytes, a 64-bit length, the mask
        started = trio.current_time()
        with trio.fail_after(TIMEOUT_S + 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle, client, frame[14:2014], 2000, 0.05)
                code = await client.close_code()
                nursery.cancel_scope.cancel()
        waited = trio.current_time() - started
        client.reset()
    print(f"\na trickled frame was closed with {code} after {waited:.2f} s")
    assert code == 1008
    assert waited <= TIMEOUT_S + 1


async def test_a_slow_frame_that_arrives_within_the_message_timeout_is_analysed() -> None:
    """A real 80 KB JPEG in 8 pieces over ~0.6 s (about 130 KB/s), under a 1 s timeout."""
    jpeg = (DATA / "single_face.jpg").read_bytes()
    async with serving("--source", "demo", "--message-timeout", str(TIMEOUT_S)) as (_, port):
        client = await push_session(port)
        with trio.fail_after(10):
            await trickle(client, client_frame(0x2, jpeg), 8, 0.08)
            reply = await client.recv()
        await client.close()
    assert reply["type"] == "eye_data", reply


# --- /access is throttled per address and counted ------------------------------------------------

TOKEN = "a-token-nobody-guesses"


async def http(
    port: int, path: str, *, source: str = "127.0.0.1", headers: str = "", host: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` from ``source`` (a loopback address the client socket is bound to): the
    status, the headers (names in lower case) and the body."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    host = host or f"127.0.0.1:{port}"
    try:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    finally:
        await stream.aclose()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def access_checks(metrics: bytes) -> dict[str, float]:
    found = re.findall(rb'^trackerd_access_checks_total\{result="(\w+)"\} (\S+)$', metrics, re.M)
    return {result.decode(): float(value) for result, value in found}


GUESSES = 40


async def guess(port: int, source: str = "127.0.0.1", headers: str = "") -> list[int]:
    """GUESSES wrong tokens in a row, as fast as the server answers: their HTTP statuses."""
    statuses = []
    for i in range(GUESSES):
        status, _, _ = await http(port, f"/access?token=guess{i}", source=source, headers=headers)
        statuses.append(status)
    return statuses


async def test_access_guesses_get_429_after_a_burst_are_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKERD_TOKEN", TOKEN)
    async with logged_server("--source", "demo") as (port, log):
        with trio.fail_after(20):
            started = trio.current_time()
            statuses = await guess(port)
            took = trio.current_time() - started
            status, headers, body = await http(port, "/access?token=guess")
            other = await http(port, "/access?token=guess", source="127.0.0.2")
            right = await http(port, f"/access?token={TOKEN}", source="127.0.0.2")
            bearer = f"Authorization: Bearer {TOKEN}\r\n"
            metrics = (await http(port, "/metrics", headers=bearer))[2]
            await log.wait_for(rb"/access throttled for 127\.0\.0\.1")
    answered = statuses.count(200)
    print(f"\n{GUESSES} guesses in {took * 1000:.0f} ms: {answered} answered, the rest 429")
    # The burst of 20, and what the bucket refilled meanwhile (5 a second).
    assert statuses[:20] == [200] * 20 and answered <= 20 + 5 * took + 1
    assert statuses[20:] == [200] * (answered - 20) + [429] * (GUESSES - answered)
    assert status == 429 and headers["retry-after"] == "1"
    assert b'"status": 429' in body  # still the JSON the client module reads
    assert other[0] == 200 and b'"status": 401' in other[2]  # 127.0.0.2 has its own budget
    assert right[0] == 200 and b'"admitted": true' in right[2]
    counts = access_checks(metrics)
    assert counts == {
        "admitted": 1,
        "refused": answered + 1,
        "full": 0,
        "throttled": GUESSES - answered + 1,
    }
    assert len(re.findall(rb"/access throttled", log.data)) == 1  # not one a request


async def test_behind_a_trusted_proxy_access_is_throttled_by_the_forwarded_address() -> None:
    async with serving(
        "--source", "demo", "--trusted-proxies", "127.0.0.1", env={"TRACKERD_TOKEN": TOKEN}
    ) as (_, port):
        with trio.fail_after(20):
            statuses = await guess(port, headers="X-Forwarded-For: 203.0.113.9\r\n")
            behind = "X-Forwarded-For: 203.0.113.10\r\n"
            other = await http(port, "/access?token=guess", headers=behind)
    assert statuses[:20] == [200] * 20 and statuses[-1] == 429
    assert other[0] == 200  # the same proxy, another candidate


# --- kubelet's probes under --allowed-hosts ------------------------------------------------------

POD = "10.1.2.3:5000"
"""What kubelet sends as Host: the pod's IP and the probe's port."""
PROBE_PATHS = ("/healthz", "/readyz")
UPGRADE = "".join(f"{line}\r\n" for line in upgrade_request(0).decode().split("\r\n")[2:-2])
"""A WebSocket upgrade's headers after its Host."""


async def test_probes_naming_the_pod_ip_are_answered_under_allowed_hosts() -> None:
    """/healthz and /readyz answer a probe whatever Host it names; everything else still
    answers only the listed name."""
    async with serving("--source", "demo", "--allowed-hosts", "tracker.example.com") as (_, port):
        with trio.fail_after(20):
            probes = {path: (await http(port, path, host=POD))[0] for path in PROBE_PATHS}
            others = {path: (await http(port, path, host=POD))[0] for path in ("/metrics", "/")}
            others["/access"] = (await http(port, "/access", host=POD))[0]
            others["upgrade"] = (await http(port, "/", headers=UPGRADE, host=POD))[0]
            named = await http(port, "/metrics", host="tracker.example.com")
    assert probes == {"/healthz": 200, "/readyz": 200}, probes
    assert set(others.values()) == {421}, others
    assert named[0] == 200

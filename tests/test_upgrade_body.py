"""An upgrade request that carries a body, against a real ``trackerd --source demo`` process.

h11 (under wsproto) reads a declared body as the request's and gives wsproto only what follows,
while the frame policing of :mod:`trackerd.net.inbound` started right after the head: with
``Content-Length: 5`` and ``hello``, it read ``h`` as an invalid frame and stopped following the
stream, so the fragment limit, the size cap in bytes, the message timeout and the per-frame
price were all off for that connection (issue 20, item 6). Such an upgrade now gets 400, and so
does every attack of the earlier rounds (tests/test_attacks.py, tests/test_door.py) sent behind
one: nothing of it is served.

The same divergence without a body: wsproto dropped whatever it was given after the head before
the 101, while the policing counted it, so a frame header sent with the head hid the frames
after the 101 from the policing. Frames sent with the head are now frames to both.
"""

from __future__ import annotations

import re

import trio
import trio.testing

from tests.serverkit import RawClient, client_frame, serving, upgrade_request
from tests.test_door import raw_request
from trackerd.net.framing import FrameStream
from trackerd.net.handshake import HandshakeStream
from trackerd.net.web import Head

BODY = "Content-Length: 5\r\n"
"""With ``hello`` after the head: the request of the attack."""
OPEN_TEXT = client_frame(0x1, b'{"type": ', fin=False)
EMPTY_CONTINUATION = client_frame(0x0, b"", fin=False)
PING_FRAME = client_frame(0x9, b"p")

ATTACKS = {
    "fragment flood with pings": OPEN_TEXT + (EMPTY_CONTINUATION * 40 + PING_FRAME) * 20,
    "endless fragmented message": OPEN_TEXT + EMPTY_CONTINUATION * 200,
    "16,000-byte emoji text": client_frame(0x1, ("😀" * 4000).encode()),
    "4400-digit integer": client_frame(0x1, b'{"type": "ping", "n": 1' + b"2" * 4400 + b"}"),
    "ping flood": PING_FRAME * 2000,
    "command flood": client_frame(0x1, b'{"type": "ping"}') * 200,
    "oversized text": client_frame(0x1, b"x" * 5000),
    "unmasked frame": client_frame(0x1, b'{"type": "ping"}', masked=False),
    "push session and an oversized frame": (
        client_frame(0x1, b'{"type": "start_tracking", "source": "client"}')
        + client_frame(0x2, b"\xff" * 40_000)
    ),
}
"""Each under 64 KiB, what the server reads and drops after a refusal before it closes."""


def refused_with_400_and_nothing_else(answer: bytes) -> None:
    """One 400 response, whole, and not a byte after it (no 101, no frame)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert body == b"a WebSocket handshake has no body\n", answer[:300]
    assert len(body) == length


async def scrape(port: int) -> str:
    answer = await raw_request(
        port, f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    return answer.partition(b"\r\n\r\n")[2].decode()


def sample(metrics: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_every_earlier_attack_behind_a_body_gets_400_and_nothing_more() -> None:
    with trio.fail_after(60):
        async with serving("--source", "demo") as (_, port):
            for name, attack in ATTACKS.items():
                request = upgrade_request(port, BODY) + b"hello" + attack
                try:
                    refused_with_400_and_nothing_else(await raw_request(port, request))
                except AssertionError as exc:
                    raise AssertionError(f"{name}: {exc}") from None
            metrics = await scrape(port)
    refused = '{cause="handshake",status="400"}'
    assert sample(metrics, "trackerd_connections_refused_total", refused) == len(ATTACKS)
    assert sample(metrics, "trackerd_connections_total") == 0  # not one WebSocket accepted


BODIES = {
    "Content-Length: 5\r\n": b"hello",
    "Content-Length: 1\r\n": b"\x81",  # a frame's first byte, as a body
    "Content-Length: 5\r\nContent-Length: 5\r\n": b"hello",
    "Content-Length: 5, 5\r\n": b"hello",
    "Transfer-Encoding: chunked\r\n": b"5\r\nhello\r\n0\r\n\r\n",
    "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n": b"0\r\n\r\n",
}
"""Every way to declare a body that h11 accepts (it answers 400 itself to a garbled or
conflicting Content-Length, 501 to a Transfer-Encoding other than chunked)."""


async def test_an_upgrade_that_declares_a_body_in_any_way_gets_400() -> None:
    with trio.fail_after(30):
        async with serving("--source", "demo") as (_, port):
            for headers, body in BODIES.items():
                answer = await raw_request(port, upgrade_request(port, headers) + body + PING_FRAME)
                try:
                    refused_with_400_and_nothing_else(answer)
                except AssertionError as exc:
                    raise AssertionError(f"{headers!r}: {exc}") from None
            for garbled in ("Content-Length: 5, 6\r\n", "Content-Length: -5\r\n"):
                answer = await raw_request(port, upgrade_request(port, garbled) + b"hello")
                assert answer.startswith(b"HTTP/1.1 400 "), (garbled, answer[:100])


async def test_an_upgrade_declaring_no_body_is_admitted_and_policed_from_its_first_frame() -> None:
    """``Content-Length: 0`` (or ``00``) declares no body: the upgrade is let in. Frames sent in
    the same write as the head are frames to wsproto and to the policing alike (wsproto used
    to drop them, while the policing counted them): 20 fragments with the head and 12 after the
    101 are 32, the limit, and a ping is then answered; one more fragment is 1008."""
    with trio.fail_after(30):
        async with serving("--source", "demo") as (_, port):
            for length in ("0", "00"):
                client = await RawClient.connect(port, handshake=False)
                head = upgrade_request(port, f"Content-Length: {length}\r\n")
                await client.send(head + OPEN_TEXT + EMPTY_CONTINUATION * 19)
                assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                assert (await client.read_frame()) is not None  # the welcome
                await client.send(EMPTY_CONTINUATION * 12 + PING_FRAME)
                assert await client.read_frame() == (0x8A, b"p"), "no pong at 32 fragments"
                await client.send(EMPTY_CONTINUATION)
                assert await client.close_code() == 1008
                client.reset()


async def test_a_frame_header_sent_with_the_head_hides_nothing_from_the_policing() -> None:
    """wsproto dropped what came with the head, and the policing did not: a binary frame's
    header sent with the head, declaring the length of a fragment flood sent after the 101, had
    the policing take the flood for that frame's payload while wsproto served it (101 fragments
    and a ping: a pong, no 1008). Now both read the flood as the payload it was declared as."""
    flood = OPEN_TEXT + EMPTY_CONTINUATION * 100 + PING_FRAME
    hidden = client_frame(0x2, flood)[:8]  # the header alone: 2 bytes, a 16-bit length, the mask
    with trio.fail_after(30):
        async with serving("--source", "demo") as (_, port):
            client = await RawClient.connect(port, handshake=False)
            await client.send(upgrade_request(port) + hidden)
            assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            assert (await client.recv())["type"] == "connection"
            await client.send(flood)
            first = await client.read_frame()
            assert first is not None and first[0] == 0x81, f"{first}: 0x8a is a pong to the flood"
            assert "push session" in first[1].decode()  # a binary message outside one
            await client.send_text('{"type": "ping"}')
            assert (await client.recv())["type"] == "pong"
            await client.close()


async def test_a_message_sent_with_the_head_is_answered() -> None:
    """A client that does not wait for the 101 (RFC 6455 asks it to) is served in order."""
    with trio.fail_after(30):
        async with serving("--source", "demo") as (_, port):
            client = await RawClient.connect(port, handshake=False)
            await client.send(upgrade_request(port) + client_frame(0x1, b'{"type": "ping"}'))
            assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            assert (await client.recv())["type"] == "connection"
            assert (await client.recv())["type"] == "pong"
            await client.close()


async def test_a_body_no_longer_turns_the_fragment_limit_off() -> None:
    """The attack itself: ``Content-Length: 5`` and ``hello``, then a message in 41 fragments
    and a ping. Before the fix the server answered 101, then the ping with a pong, never closing
    with 1008: its policing had stopped at ``h``. Now it answers 400."""
    with trio.fail_after(30):
        async with serving("--source", "demo") as (_, port):
            client = await RawClient.connect(port, handshake=False)
            await client.send(upgrade_request(port, BODY) + b"hello")
            status = await client.read_until(b"\r\n")
            after = []
            if status.startswith(b"HTTP/1.1 101"):  # the hole: see what the stream is let do
                await client.read_until(b"\r\n\r\n")
                await client.send(OPEN_TEXT + EMPTY_CONTINUATION * 40 + PING_FRAME)
                with trio.move_on_after(2):
                    while (frame := await client.read_frame()) is not None:
                        after.append(hex(frame[0]))
                        if frame[0] in (0x88, 0x8A):  # a close, or the pong
                            break
            client.reset()
    assert status.startswith(b"HTTP/1.1 400"), (
        f"{status!r}; then, after 41 fragments and a ping, frames {after} "
        "(0x8a: a pong where a 1008 close was due; the policing was off)"
    )


async def test_the_handshake_stream_holds_back_what_follows_the_head_until_the_answer() -> None:
    """What trio-websocket reads through :class:`HandshakeStream`: the head; then nothing until
    the server writes its answer; then what came with the head, then the stream."""
    server, client = trio.testing.memory_stream_pair()
    head = Head("GET", "/", True, b"HEAD" + b"early", size=4)
    stream = HandshakeStream(server, head)
    await client.send_all(b"later")
    assert await stream.receive_some(100) == b"HEAD"
    got: list[bytes | bytearray] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await stream.receive_some(100))

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # "later" is there to read, and not read
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert got == [b"early"]
    assert await stream.receive_some(100) == b"later"
    assert (await client.receive_some(100)).startswith(b"HTTP/1.1 101")


async def test_the_fan_out_still_writes_straight_to_the_socket_under_it() -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        tcp = trio.SocketStream(a)
        stream = HandshakeStream(tcp, Head("GET", "/", True, b"", size=0))
        assert FrameStream(stream).socket is tcp.socket

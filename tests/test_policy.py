"""The limit policies as plain code, with time passed in: the command limit and its flood window,
the inbound budgets, the frame scanner that prices reads and bounds messages, and the per-address
bookkeeping, and /access's per-address limit. (The same rules over real sockets: test_limits.py,
test_attacks.py, test_door.py, test_small_holes.py.)"""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.serverkit import client_frame
from trackerd.net.access import Access
from trackerd.net.inbound import FRAME_COST_BYTES, InboundFrames
from trackerd.net.limits import (
    FLOOD_WINDOW_S,
    QUIET_BURST_BYTES,
    AddressLimit,
    CommandLimit,
    InboundBudget,
    TokenBucket,
    Verdict,
)
from trackerd.net.page import ACCESS_CHECKS_BURST, THROTTLE_LOG_INTERVAL_S, AccessChecks
from trackerd.net.peers import SPARE_CONNECTIONS, Peers, Slot
from trackerd.net.web import Head
from trackerd.settings import Settings

# --- commands -----------------------------------------------------------------------------------


def test_a_burst_is_allowed_then_refused_then_a_flood() -> None:
    limit = CommandLimit(Settings(rate_limit_per_s=1.0, rate_limit_burst=3), now=0.0)
    verdicts = [limit.check(0.0) for _ in range(3 + 4)]
    assert verdicts == [Verdict.ALLOWED] * 3 + [Verdict.REFUSED] * 3 + [Verdict.FLOOD]


def test_refusals_spread_beyond_the_flood_window_are_no_flood() -> None:
    limit = CommandLimit(Settings(rate_limit_per_s=0.01, rate_limit_burst=1), now=0.0)
    assert limit.check(0.0) is Verdict.ALLOWED
    step = FLOOD_WINDOW_S + 0.1  # one refusal per window: never burst + 1 within one
    assert all(limit.check(1.0 + i * step) is Verdict.REFUSED for i in range(5))


def test_the_bucket_refills_at_its_rate() -> None:
    limit = CommandLimit(Settings(rate_limit_per_s=2.0, rate_limit_burst=1), now=0.0)
    assert limit.check(0.0) is Verdict.ALLOWED
    assert limit.check(0.25) is Verdict.REFUSED
    assert limit.check(0.5) is Verdict.ALLOWED  # 0.5 s at 2/s: one token back


# --- inbound budgets ----------------------------------------------------------------------------


def test_a_quiet_connection_never_waits_for_the_shared_budget() -> None:
    shared = TokenBucket(1000.0, 1000.0, 0.0)
    shared.charge(0.0, 100_000.0)  # deep in debt: someone else is flooding
    quiet = InboundBudget(TokenBucket(5000.0, 10_000.0, 0.0), shared, 0.0)
    assert quiet.charge(0.0, 200.0) == 0.0


def test_a_busy_connection_waits_for_the_shared_budget() -> None:
    shared = TokenBucket(1000.0, 1000.0, 0.0)
    busy = InboundBudget(TokenBucket(1e9, 1e9, 0.0), shared, 0.0)
    waits = [busy.charge(0.0, 2 * QUIET_BURST_BYTES) for _ in range(3)]
    # Past the quiet allowance and the shared burst, each read waits for the shared debt.
    assert waits[0] > 0 and waits[1] > waits[0] and waits[2] > waits[1]
    assert waits[-1] == (3 * 2 * QUIET_BURST_BYTES - 1000.0) / 1000.0


def test_its_own_bucket_binds_a_connection_even_when_the_server_is_idle() -> None:
    shared = TokenBucket(1e9, 1e9, 0.0)
    own = TokenBucket(100.0, 100.0, 0.0)
    budget = InboundBudget(own, shared, 0.0)
    assert budget.charge(0.0, 300.0) == 2.0  # 200 over, at 100 a second


# --- the frame scanner --------------------------------------------------------------------------


def scanner(**limits: float) -> InboundFrames:
    defaults = {"max_message_bytes": 4096, "max_fragments": 32, "message_timeout_s": 5.0}
    return InboundFrames(**{**defaults, **limits})  # type: ignore[arg-type]


def test_each_frame_costs_its_bytes_and_a_fixed_price() -> None:
    data = client_frame(0x9, b"") * 10
    cost, _, violation = scanner().feed(data, 0.0)
    assert violation is None and cost == len(data) + 10 * FRAME_COST_BYTES


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20))
def test_frames_are_followed_across_any_split_of_the_bytes(cuts: list[int]) -> None:
    """The same bytes cost the same and break the same limit however the reads cut them."""
    data = (
        client_frame(0x1, b"a" * 300)
        + client_frame(0x9, b"p")
        + client_frame(0x1, b"b" * 70_000, fin=False)
    )
    whole = scanner().feed(data, 0.0)
    s, total, found, at = scanner(), 0, None, 0
    for cut in [*cuts, len(data)]:
        piece, at = data[at : at + cut], at + cut
        cost, _, violation = s.feed(piece, 0.0)
        total += cost
        found = found or violation
        if violation is not None or at >= len(data):
            break
    assert found == whole.violation and found is not None and found.code == 1009
    assert total <= whole.cost


def test_the_size_limit_is_on_bytes_and_is_known_from_the_header() -> None:
    emoji = ("😀" * 1025).encode()  # 4100 bytes in 1025 characters
    violation = scanner().feed(client_frame(0x1, emoji)[:14], 0.0).violation  # the header alone
    assert violation is not None and violation.code == 1009


def test_fragments_and_time_are_bounded_per_message() -> None:
    first = client_frame(0x1, b"{", fin=False)
    empty = client_frame(0x0, b"", fin=False)
    s = scanner(max_fragments=4)
    assert s.feed(first + empty * 3, 0.0).violation is None
    violation = s.feed(empty, 0.0).violation
    assert violation is not None and violation.code == 1008 and "fragments" in violation.reason
    slow = scanner(message_timeout_s=1.0)
    assert slow.feed(first, 0.0).violation is None
    assert slow.feed(client_frame(0x9, b""), 0.5).violation is None  # pings between fragments
    violation = slow.feed(client_frame(0x9, b""), 1.5).violation
    assert violation is not None and "1 s" in violation.reason


def test_the_message_timeout_covers_a_single_frames_payload() -> None:
    """A frame that declares its length and trickles its payload is a message under way until
    its last byte: it used to be free of the timeout once its header was read."""
    frame = client_frame(0x2, b"j" * 1000)  # a header of 8 bytes
    s = scanner(message_timeout_s=1.0, max_binary_bytes=100_000)
    assert s.feed(frame[:20], 0.0).violation is None
    assert s.feed(frame[20:21], 0.9).violation is None
    violation = s.feed(frame[21:22], 1.1).violation
    assert violation is not None and violation.code == 1008 and "1 s" in violation.reason


def test_a_frame_whose_last_bytes_come_late_is_too_slow_and_one_on_time_ends_its_message() -> None:
    frame = client_frame(0x1, b"t" * 1000)
    late = scanner(message_timeout_s=1.0)
    assert late.feed(frame[:20], 0.0).violation is None
    violation = late.feed(frame[20:], 1.5).violation  # all the rest at once, but after 1 s
    assert violation is not None and violation.code == 1008
    on_time = scanner(message_timeout_s=1.0)
    assert on_time.feed(frame[:20], 0.0).violation is None
    assert on_time.feed(frame[20:], 0.9).violation is None
    # Over: nothing is under way, so neither silence nor the next message is late.
    assert on_time.feed(client_frame(0x9, b""), 100.0).violation is None
    assert on_time.feed(frame, 200.0).violation is None


def test_a_zero_length_final_frame_ends_its_message_at_its_header() -> None:
    s = scanner(message_timeout_s=1.0)
    assert (
        s.feed(client_frame(0x1, b"{", fin=False) + client_frame(0x0, b""), 0.0).violation is None
    )
    assert s.feed(client_frame(0x9, b""), 10.0).violation is None


def test_a_finished_message_resets_the_counts() -> None:
    s = scanner(max_fragments=2)
    one = client_frame(0x1, b"{", fin=False) + client_frame(0x0, b"}")
    for _ in range(10):
        assert s.feed(one, 0.0).violation is None


def test_binary_messages_have_their_own_limit_and_are_priced_apart() -> None:
    s = scanner(max_binary_bytes=100_000)
    frame = client_frame(0x2, b"j" * 50_000)
    read = s.feed(frame, 0.0)
    assert read.violation is None and read.binary == 50_000 + FRAME_COST_BYTES
    assert read.cost == len(frame) - 50_000  # its header's bytes; the price goes with binary
    text = s.feed(client_frame(0x1, b"t" * 5000), 0.0)
    assert text.violation is not None and text.violation.code == 1009  # text stays at 4096
    big = scanner(max_binary_bytes=100_000).feed(client_frame(0x2, b"j" * 100_001)[:14], 0.0)
    assert big.violation is not None and "binary message over 100000" in big.violation.reason


def test_after_an_invalid_frame_nothing_is_policed() -> None:
    """An unmasked frame is wsproto's to fail (1002): garbage after it declaring a huge length
    must not turn the close into a 1009."""
    s = scanner()
    data = client_frame(0x1, b"x", masked=False) + client_frame(0x1, b"y" * 70_000)
    assert s.feed(data, 0.0).violation is None


# --- per-address bookkeeping --------------------------------------------------------------------


def arrive(peers: Peers, address: str) -> Slot:
    slot = peers.arrive(address)
    assert not isinstance(slot, str), slot
    return slot


def test_a_full_server_closes_its_oldest_idle_connection_for_a_newcomer() -> None:
    peers = Peers(Settings(max_connections=1, max_handshakes_per_ip=10**6))
    idle = [arrive(peers, f"10.0.0.{i}") for i in range(1 + SPARE_CONNECTIONS)]
    newcomer = arrive(peers, "10.9.9.9")
    assert idle[0].evicted and idle[0].scope.cancel_called
    assert not any(slot.evicted for slot in idle[1:]) and not newcomer.evicted
    assert peers.open == 1 + SPARE_CONNECTIONS


def test_when_nobody_is_idle_the_newcomer_is_refused() -> None:
    peers = Peers(Settings(max_connections=1, max_handshakes_per_ip=10**6))
    for i in range(1 + SPARE_CONNECTIONS):
        assert peers.headed(arrive(peers, f"10.0.0.{i}"), [])
    assert peers.arrive("10.9.9.9") == "capacity"


def test_leaving_twice_or_after_eviction_counts_once() -> None:
    peers = Peers(Settings(max_handshakes_per_ip=1))
    first = arrive(peers, "10.0.0.1")
    arrive(peers, "10.0.0.1")  # evicts the first
    peers.leave(first)
    peers.leave(first)
    assert peers.open == 1


# --- /access, per address ------------------------------------------------------------------------


def test_each_address_has_its_own_burst_and_rate() -> None:
    limit = AddressLimit(rate=5.0, burst=3, max_addresses=10)
    assert [limit.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.take("b", 0.0)  # another address is not held back by a's
    assert not limit.take("a", 0.1) and limit.take("a", 0.2)  # one token per 1/5 s
    assert limit.retry_after_s == 1


def test_a_spray_of_addresses_cannot_grow_the_table() -> None:
    limit = AddressLimit(rate=5.0, burst=3, max_addresses=100)
    for i in range(10_000):
        limit.take(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
    assert len(limit) == 100


def test_the_least_recently_seen_address_is_forgotten_first() -> None:
    limit = AddressLimit(rate=1.0, burst=1, max_addresses=3)
    assert limit.take("guesser", 0.0) and not limit.take("guesser", 0.0)
    for other in ("b", "c"):  # the table is full; the guesser keeps asking
        limit.take(other, 0.0)
        assert not limit.take("guesser", 0.0)
    limit.take("d", 0.0)  # b, the least recently seen, goes; the guesser stays held back
    assert not limit.take("guesser", 0.0)
    for other in ("e", "f", "g"):  # three newcomers while it is quiet: now it is forgotten
        limit.take(other, 0.0)
    assert limit.take("guesser", 0.0)


def access_head(token: str) -> Head:
    return Head("GET", f"/access?token={token}", False, b"", ((b"host", b"127.0.0.1"),))


def verdict(checks: AccessChecks, token: str, client: str, now: float) -> tuple[int, int]:
    """The HTTP status, and the status an upgrade would get as the JSON says."""
    response = checks.answer(access_head(token), client, now)
    return response.status, json.loads(response.body)["status"]


def test_access_answers_are_throttled_per_address_and_counted_by_result() -> None:
    full = False
    checks = AccessChecks(Access(Settings(token="right")), lambda: not full)
    answers = [verdict(checks, f"guess{i}", "192.0.2.1", 0.0) for i in range(30)]
    assert answers[:ACCESS_CHECKS_BURST] == [(200, 401)] * ACCESS_CHECKS_BURST
    assert answers[ACCESS_CHECKS_BURST:] == [(429, 429)] * (30 - ACCESS_CHECKS_BURST)
    throttled = checks.answer(access_head("right"), "192.0.2.1", 0.0)
    assert dict(throttled.headers)["Retry-After"] == "1"
    assert dict(throttled.headers)["Access-Control-Allow-Origin"] == "*"  # a page reads it
    assert verdict(checks, "right", "192.0.2.2", 0.0) == (200, 101)
    full = True
    assert verdict(checks, "right", "192.0.2.2", 0.0) == (200, 503)
    stats = checks.statistics()
    assert (stats.admitted, stats.refused, stats.full, stats.throttled) == (1, 20, 1, 11)


def test_throttling_is_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """25 s of 100 guesses a second from each of 2 addresses (10 a second of them allowed):
    three lines, at the first throttled guess and then 10 s apart, each with the count since."""
    caplog.set_level(logging.WARNING, logger="trackerd.net.page")
    checks = AccessChecks(Access(Settings(token="right")), lambda: True)
    for tick in range(2500):
        for client in ("192.0.2.1", "192.0.2.2"):
            checks.answer(access_head("guess"), client, tick / 100)
    lines = [r.getMessage() for r in caplog.records if "/access throttled" in r.getMessage()]
    counts = [int(n) for line in lines for n in re.findall(r"; (\d+) throttled since", line)]
    assert 25 // THROTTLE_LOG_INTERVAL_S + 1 == len(lines) == 3, lines
    assert counts[0] == 1
    assert abs(counts[1] - 10 * (200 - 10)) <= 20  # 10 s of throttled guesses
    assert sum(counts) <= checks.statistics().throttled

"""Budgets: a token bucket for each client's commands, and budgets for the bytes clients send.

A bucket holds up to ``burst`` tokens and refills at ``rate`` a second; taking one that is not
there is refused. Time is passed in (``trio.current_time()`` in the server), so the arithmetic is
plain and testable without a clock.
"""

from __future__ import annotations

from typing import Final


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` if the bucket holds it; otherwise take nothing and say so."""
        self._refill(now)
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True

    def charge(self, now: float, amount: float) -> float:
        """Take ``amount`` even if it is not there (bytes already received), and return how
        many seconds the bucket needs to be out of debt again (0 when it is not in debt)."""
        self._refill(now)
        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)


QUIET_BYTES_PER_S: Final = 256.0
"""What a connection may send without waiting for the shared budget: a real client's commands and
pongs (a few a minute, ~30-200 budget bytes each) stay far below it."""
QUIET_BURST_BYTES: Final = 2048.0


class InboundBudget:
    """What one connection may send: its own bucket, and its share of one bucket for the whole
    server, so that many connections together cannot cost more than ``shared`` allows.

    Every read is charged to both. A connection whose recent traffic fits in a small "quiet"
    allowance (``QUIET_BYTES_PER_S``) waits only for its own bucket: a flood elsewhere delays
    nobody's commands. A busier one also waits until the shared bucket is out of debt, so the
    server reads at most ``shared.rate`` a second from busy connections, however many there are
    (each has at most one read charged and waiting, so the debt is bounded too). The total is
    therefore at most ``shared.rate`` plus ``QUIET_BYTES_PER_S`` per connection.
    """

    def __init__(self, own: TokenBucket, shared: TokenBucket, now: float) -> None:
        self._own = own
        self._shared = shared
        self._quiet = TokenBucket(QUIET_BYTES_PER_S, QUIET_BURST_BYTES, now)

    def charge(self, now: float, cost: float) -> float:
        """Charge a read that cost ``cost``: the seconds to wait before reading again."""
        own_wait = self._own.charge(now, cost)
        shared_wait = self._shared.charge(now, cost)
        if self._quiet.take(now, cost):
            return own_wait
        return max(own_wait, shared_wait)

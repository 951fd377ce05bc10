"""Per-client budgets: a token bucket for commands, and one for the bytes a client sends.

A bucket holds up to ``burst`` tokens and refills at ``rate`` a second; taking one that is not
there is refused. Time is passed in (``trio.current_time()`` in the server), so the arithmetic is
plain and testable without a clock.
"""

from __future__ import annotations


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

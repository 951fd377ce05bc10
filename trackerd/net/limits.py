"""The limits on what clients send, as plain arithmetic: the server asks, these answer.

- :class:`CommandLimit`: each client's commands (``rate_limit_per_s``, ``rate_limit_burst``);
  a refused command gets an error, and a flood of refusals closes the client (1008).
- :class:`InboundBudget`: the bytes a client sends, priced per frame by
  :mod:`trackerd.net.inbound`, against its own bucket and one shared by every connection.
- :class:`AddressLimit`: requests per client address (``/access``), for what is cheap once
  and costly or telling in bulk, in a table of bounded size.

Both are built on :class:`TokenBucket`: it holds up to ``burst`` tokens and refills at ``rate``
a second; taking one that is not there is refused. Time is passed in (``trio.current_time()``
in the server), so every rule is testable without a clock or a socket.
"""

from __future__ import annotations

import collections
import enum
import math
from typing import Final

from trackerd.settings import Settings

INBOUND_BYTES_PER_COMMAND: Final = 256
"""What a client may send, in bytes, per command the rate limit allows (commands are ~30 bytes;
the rest is room for pong replies and frame headers). Beyond it the server stops reading from
that client for a while: a flood of pings or junk frames then waits on TCP instead of costing
the server a pong or a parse per frame."""
FLOOD_WINDOW_S: Final = 10.0
"""More than ``rate_limit_burst`` commands refused within this long is a flood (close 1008).
Counted in time, not in a row: a busy server reads a flood slowly enough for the bucket to let
some of it through, and the flood is still a flood."""


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


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    """Answer with an error; the client stays."""
    FLOOD = "flood"
    """Close the client with 1008."""


class CommandLimit:
    """One client's commands: ``rate_limit_per_s`` sustained, ``rate_limit_burst`` at once; more
    than a burst's worth refused within FLOOD_WINDOW_S is a flood."""

    def __init__(self, settings: Settings, now: float) -> None:
        self._bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst, now)
        self._refusals: collections.deque[float] = collections.deque(
            maxlen=settings.rate_limit_burst + 1
        )
        """When the latest refused commands came: a full deque within FLOOD_WINDOW_S is a flood."""

    def check(self, now: float) -> Verdict:
        if self._bucket.take(now):
            return Verdict.ALLOWED
        self._refusals.append(now)
        full = len(self._refusals) == self._refusals.maxlen
        return (
            Verdict.FLOOD if full and now - self._refusals[0] <= FLOOD_WINDOW_S else Verdict.REFUSED
        )


def inbound_budget(settings: Settings, shared: TokenBucket, now: float) -> InboundBudget:
    """A new connection's budget: INBOUND_BYTES_PER_COMMAND per allowed command, with a burst
    that holds two messages of the largest size, and its share of ``shared``."""
    own = TokenBucket(
        settings.rate_limit_per_s * INBOUND_BYTES_PER_COMMAND,
        max(
            settings.rate_limit_burst * INBOUND_BYTES_PER_COMMAND,
            2 * settings.max_message_bytes,
        ),
        now,
    )
    return InboundBudget(own, shared, now)


def shared_budget(settings: Settings) -> TokenBucket:
    """The bucket every connection's reads are charged to: a second's worth at most."""
    rate = settings.max_inbound_bytes_per_s
    return TokenBucket(rate, rate, 0.0)


class AddressLimit:
    """A :class:`TokenBucket` per address, ``rate`` a second with a burst of ``burst``, for at
    most ``max_addresses`` addresses: the one seen least recently is forgotten to make room, so
    a spray of addresses cannot grow the table. Forgetting costs little: a bucket left alone for
    ``burst / rate`` seconds is full again anyway, and one forgotten sooner (more than
    ``max_addresses`` addresses within that time) gives its address a burst that any other of
    those addresses has too."""

    def __init__(self, rate: float, burst: float, max_addresses: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        """Least recently seen first."""

    def take(self, address: str, now: float) -> bool:
        """One request from ``address``: whether it is within its limit."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._buckets.popitem(last=False)
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(address)
        return bucket.take(now)

    @property
    def retry_after_s(self) -> int:
        """Whole seconds after which a refused address has a token again (for Retry-After): a
        refused bucket holds under one token and gains ``rate`` a second."""
        return max(1, math.ceil(1 / self.rate))

    def __len__(self) -> int:
        """Addresses remembered."""
        return len(self._buckets)

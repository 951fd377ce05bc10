"""Connections by address: limits per client address, and room for newcomers when connections
that never send anything hold it.

Every TCP connection takes a :class:`Slot` when it arrives and gives it back when it ends. Until
it has sent its request head it is *waiting*, and a waiting connection is the first to go when
room is needed: it has cost the client nothing to open and says nothing about who it is. So:

- with ``max_connections`` + :data:`SPARE_CONNECTIONS` connections open, a newcomer closes the
  oldest waiting connection; only when none is waiting (every connection is a WebSocket client
  or a request being answered) is the newcomer itself closed. 1064 idle sockets therefore cannot
  keep a ``/healthz`` probe out: each probe takes the place of the oldest of them, and sends its
  request within a millisecond, after which it cannot be pushed out;
- one address may hold ``max_handshakes_per_ip`` waiting connections (a newcomer from it closes
  its own oldest) and ``max_connections_per_ip`` connections in all (a newcomer beyond that is
  closed, after that address's oldest waiting one if it has any).

Behind a reverse proxy every connection comes from the proxy's address. Connections from
``trusted_proxies`` are not limited by that address; their client's address is read from
``X-Forwarded-For`` (the rightmost entry that is not itself a trusted proxy: the entries to its
left are whatever the client chose to send), once the head has arrived, and is then held to
``max_connections_per_ip`` like a direct client's. From anyone else the header is ignored.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from typing import Final

import trio

from trackerd.settings import Settings

log = logging.getLogger(__name__)

SPARE_CONNECTIONS: Final = 64
"""TCP connections allowed beyond ``max_connections``: HTTP probes and handshakes under way."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Slot:
    """One TCP connection's place. Cancel :attr:`scope` to close it while it is waiting."""

    def __init__(self, address: str, trusted: bool) -> None:
        self.address = address
        """The TCP peer's address."""
        self.trusted = trusted
        """The peer is a trusted proxy: limits apply to the forwarded address instead."""
        self.client = address
        """Whose connection this is: the peer, or behind a trusted proxy the forwarded address."""
        self.counted: str | None = None
        """The address this slot is counted against for ``max_connections_per_ip``."""
        self.scope = trio.CancelScope()
        self.evicted = False
        self.released = False


class Peers:
    def __init__(self, settings: Settings) -> None:
        self._capacity = settings.max_connections + SPARE_CONNECTIONS
        self._per_address = settings.max_connections_per_ip
        self._waiting_per_address = settings.max_handshakes_per_ip
        self._proxies = settings.proxies
        self.open = 0
        self._by_address: collections.Counter[str] = collections.Counter()
        self._waiting: dict[Slot, None] = {}
        """Every waiting slot, oldest first (a dict keeps insertion order)."""
        self._waiting_by_address: dict[str, dict[Slot, None]] = {}
        self.evicted = 0

    def arrive(self, address: str) -> Slot | str:
        """A slot for a new connection from ``address``, or why it gets none (a cause name)."""
        trusted = self._trusted(address)
        if self.open >= self._capacity and not self._evict_oldest(self._waiting):
            return "capacity"
        if not trusted:
            mine = self._waiting_by_address.get(address, {})
            if len(mine) >= self._waiting_per_address:
                self._evict_oldest(mine)
            if self._by_address[address] >= self._per_address and not self._evict_oldest(mine):
                return "per-address"
        slot = Slot(address, trusted)
        self.open += 1
        if not trusted:
            self._count(slot, address)
        self._waiting[slot] = None
        self._waiting_by_address.setdefault(address, {})[slot] = None
        return slot

    def headed(self, slot: Slot, forwarded_for: list[bytes]) -> bool:
        """The connection has sent its head and can no longer be pushed out. Behind a trusted
        proxy, learn its client's address: False if that address is over its limit."""
        self._stop_waiting(slot)
        if not slot.trusted:
            return True
        slot.client = self._forwarded_client(forwarded_for) or slot.address
        if self._by_address[slot.client] >= self._per_address:
            return False
        self._count(slot, slot.client)
        return True

    def leave(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self.open -= 1
        self._stop_waiting(slot)
        if slot.counted is not None:
            self._by_address[slot.counted] -= 1
            if not self._by_address[slot.counted]:
                del self._by_address[slot.counted]  # the table holds open addresses only

    def _count(self, slot: Slot, address: str) -> None:
        slot.counted = address
        self._by_address[address] += 1

    def _stop_waiting(self, slot: Slot) -> None:
        self._waiting.pop(slot, None)
        mine = self._waiting_by_address.get(slot.address)
        if mine is not None:
            mine.pop(slot, None)
            if not mine:
                del self._waiting_by_address[slot.address]

    def _evict_oldest(self, waiting: dict[Slot, None]) -> bool:
        """Close the oldest of ``waiting`` now (its slot is free at once); False if empty."""
        if not waiting:
            return False
        victim = next(iter(waiting))
        victim.evicted = True
        victim.scope.cancel()
        self.leave(victim)
        self.evicted += 1
        log.debug("closed an idle connection from %s to make room", victim.address)
        return True

    def _trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self._proxies)

    def _forwarded_client(self, values: list[bytes]) -> str | None:
        """The client's address from ``X-Forwarded-For``: the rightmost entry that is not a
        trusted proxy. None if the header is missing or that entry is not an address."""
        entries = [e.strip() for v in values for e in v.decode("latin-1").split(",")]
        for entry in reversed(entries):
            ip = _ip(entry)
            if ip is None:
                return None
            if not any(ip in network for network in self._proxies):
                return str(ip)
        return None


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None

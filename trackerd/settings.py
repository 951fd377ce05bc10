"""The server's settings: one frozen, validated object built from flags, environment, defaults.

Precedence: command-line flags, then the environment (``HOST`` and ``PORT`` as in the original
server, every other variable prefixed ``TRACKERD_``), then the defaults below. A bad value is a
:class:`SettingsError` at start-up naming the setting and where it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from trackerd.errors import TrackerdError

DEFAULT_HOST: Final = "localhost"
DEFAULT_PORT: Final = 5000
DEFAULT_SOURCE: Final = "auto"
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 20.0
DEFAULT_HEARTBEAT_TIMEOUT_S: Final = 20.0
DEFAULT_MAX_MESSAGE_BYTES: Final = 4096
"""Client messages are a few dozen bytes; anything much larger is a mistake or an attack."""
DEFAULT_GRACEFUL_TIMEOUT_S: Final = 1.5
"""On SIGTERM, how long clients get to see their 1001 close before the process exits (< 2 s)."""
DEFAULT_SOURCE_RETRY_MAX_S: Final = 10.0
"""A source that fails mid-stream is reopened after 0.5 s, doubling up to this."""
DEFAULT_STATS_INTERVAL_S: Final = 60.0
"""How often the log gets a stats line (fps, clients, per-frame ms, dropped messages)."""
DEFAULT_HANDSHAKE_TIMEOUT_S: Final = 10.0
"""A connection that has not sent a complete request head by then is closed."""
DEFAULT_MAX_CONNECTIONS: Final = 1000
"""WebSocket clients at once; more are refused at the handshake with 503. The fan-out benchmark
holds 1000 at 30 Hz on one core."""
DEFAULT_RATE_LIMIT_PER_S: Final = 20.0
"""Commands a client may send per second, sustained. A real client sends a handful a minute."""
DEFAULT_RATE_LIMIT_BURST: Final = 40
"""Commands a client may send at once before the rate limit applies."""
DEFAULT_SEND_TIMEOUT_S: Final = 10.0
"""A client whose socket has taken nothing for this long is dropped."""
DEFAULT_SOURCE_TIMEOUT_S: Final = 10.0
"""A source that takes longer than this to open or to deliver a frame is treated as failed."""
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("text", "json")

ENV_NAMES: Final = {"host": "HOST", "port": "PORT"}
"""Environment variables that keep the original server's names; the rest are TRACKERD_<NAME>."""
ENV_PREFIX: Final = "TRACKERD_"
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Hosts that count as local, for binding and for Origins."""
ENV_READ_ELSEWHERE: Final = frozenset({"TRACKERD_CASCADE_DIR"})
"""``TRACKERD_`` variables that are not settings (cascades.py reads this one)."""
_ORIGIN = re.compile(r"^(https?://[^/?#\s]+|null)$")
"""``scheme://host[:port]`` as browsers send it, or ``null`` (sandboxed and file:// pages)."""


class SettingsError(TrackerdError, ValueError):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    """0 picks a free port (tests); the bound port is logged."""
    source: str = DEFAULT_SOURCE
    fps: float = 0.0
    """Most frames analysed per second; 0 means as many as the source delivers."""
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    source_retry_max_s: float = DEFAULT_SOURCE_RETRY_MAX_S
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    stats_interval_s: float = DEFAULT_STATS_INTERVAL_S
    log_level: str = "INFO"
    log_format: str = "text"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    source_timeout_s: float = DEFAULT_SOURCE_TIMEOUT_S
    allowed_origins: str = ""
    """Comma-separated origins (``https://app.example.com``) whose pages may connect, or ``*``
    for any. Empty (the default): bound to a loopback host, only pages served from localhost;
    bound to any other host, any origin (with a warning at start-up). Clients that send no
    Origin (anything but a browser) are always let in: the token is what keeps those out."""
    token: str = ""
    """A shared secret every WebSocket client (and /metrics) must present, as
    ``Authorization: Bearer <token>`` or ``?token=<token>``. Empty: no token asked."""
    certfile: str = ""
    """PEM certificate chain: with it the server speaks TLS only (``wss://``, ``https://``)."""
    keyfile: str = ""
    """PEM private key, if it is not in ``certfile``."""

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise SettingsError(message)

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f"{f.name} must be a finite number, got {value}")
        need(bool(self.host.strip()), "host must not be empty")
        need(0 <= self.port <= 65535, f"port must be 0-65535, got {self.port}")
        need(bool(self.source.strip()), "source must not be empty")
        need(self.fps >= 0, f"fps must be >= 0 (0 = no cap), got {self.fps}")
        need(self.heartbeat_interval_s > 0, "heartbeat_interval_s must be > 0")
        need(self.heartbeat_timeout_s > 0, "heartbeat_timeout_s must be > 0")
        need(self.max_message_bytes >= 64, "max_message_bytes must be >= 64")
        need(0 <= self.graceful_timeout_s <= 60, "graceful_timeout_s must be 0-60")
        need(self.source_retry_max_s > 0, "source_retry_max_s must be > 0")
        need(self.handshake_timeout_s > 0, "handshake_timeout_s must be > 0")
        need(self.stats_interval_s > 0, "stats_interval_s must be > 0")
        need(self.max_connections >= 1, "max_connections must be >= 1")
        need(self.rate_limit_per_s > 0, "rate_limit_per_s must be > 0")
        need(self.rate_limit_burst >= 1, "rate_limit_burst must be >= 1")
        need(self.send_timeout_s > 0, "send_timeout_s must be > 0")
        need(self.source_timeout_s > 0, "source_timeout_s must be > 0")
        for origin in self.origins:
            need(
                origin == "*" or _ORIGIN.match(origin) is not None,
                f"allowed_origins: {origin!r} is not an origin like https://example.com[:port]",
            )
        need(
            all(c.isprintable() and not c.isspace() for c in self.token),
            "token must not contain spaces or control characters",
        )
        need(bool(self.certfile) or not self.keyfile, "keyfile needs certfile")
        need(self.log_level in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}")
        need(self.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}")

    @property
    def origins(self) -> tuple[str, ...]:
        """The allow-list, normalised (lower case, no trailing slash); empty means default."""
        parts = (o.strip().lower().rstrip("/") for o in self.allowed_origins.split(","))
        return tuple(p for p in parts if p)

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (so the default Origin policy is localhost only)."""
        return self.host.lower() in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def tls(self) -> bool:
        return bool(self.certfile)

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable for setting ``name``."""
        return ENV_NAMES.get(name, ENV_PREFIX + name.upper())

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
        """Flags (``None`` = not given) over the environment over the defaults. An unknown
        ``TRACKERD_`` variable is refused: a misspelt one would otherwise be silently ignored."""
        known = {cls.env_name(f.name) for f in fields(cls)} | ENV_READ_ELSEWHERE
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            names = ", ".join(sorted(known - {"HOST", "PORT"}))
            raise SettingsError(f"unknown environment variable {unknown[0]}; known: {names}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            flag = flags.get(f.name)
            if flag is not None:
                values[f.name] = flag
                continue
            env = cls.env_name(f.name)
            if env in environ:
                values[f.name] = _convert(f.name, env, environ[env], type(f.default))
        if isinstance(values.get("log_level"), str):
            values["log_level"] = values["log_level"].upper()
        return cls(**values)


def _convert(name: str, env: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw.strip()) if kind is not str else raw
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise SettingsError(f"{name}: environment variable {env}={raw!r} is not {what}") from None

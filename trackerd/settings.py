"""The server's settings: one frozen, validated object built from flags, environment, defaults.

Precedence: command-line flags, then the environment (``HOST`` and ``PORT`` as in the original
server, every other variable prefixed ``TRACKERD_``), then the defaults below. A bad value is a
:class:`SettingsError` at start-up naming the setting and where it came from.

Each field is declared with :func:`option`, which is the one place its flag, its environment
variable and its help live: :mod:`trackerd.options` builds the command line, the ``--help``
text and docs/operations.md's options table from these declarations. A new field declared with
``option(default, "help")`` gets ``--its-name`` (a trailing ``_s``, the unit, dropped),
``TRACKERD_ITS_NAME`` and a row in that table, and needs nothing else outside its validation.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from trackerd.errors import TrackerdError
from trackerd.keys import check_webhook_secret, signing_keys

DEFAULT_HOST: Final = "localhost"
DEFAULT_PORT: Final = 5000
DEFAULT_SOURCE: Final = "auto"
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 20.0
DEFAULT_HEARTBEAT_TIMEOUT_S: Final = 20.0
DEFAULT_MAX_MESSAGE_BYTES: Final = 4096
"""Client messages are a few dozen bytes; anything much larger is a mistake or an attack."""
DEFAULT_GRACEFUL_TIMEOUT_S: Final = 1.5
"""Under the 2 s a platform usually waits after SIGTERM before it kills the process."""
DEFAULT_DRAIN_DELAY_S: Final = 0.0
"""With no load balancer polling /readyz, waiting helps no one; behind one, set it to the time
the balancer takes to see a 503 (Kubernetes: the readiness probe's period)."""
MAX_WORKERS: Final = 64
DEFAULT_SOURCE_RETRY_MAX_S: Final = 10.0
DEFAULT_STATS_INTERVAL_S: Final = 60.0
DEFAULT_HANDSHAKE_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_CONNECTIONS: Final = 1000
"""The fan-out benchmark holds 1000 clients at 30 Hz on one core."""
DEFAULT_RATE_LIMIT_PER_S: Final = 20.0
"""A real client sends a handful of commands a minute."""
DEFAULT_RATE_LIMIT_BURST: Final = 40
DEFAULT_SEND_TIMEOUT_S: Final = 10.0
DEFAULT_SOURCE_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_MESSAGE_FRAGMENTS: Final = 32
"""Browsers and our clients send each message as one frame."""
DEFAULT_MESSAGE_TIMEOUT_S: Final = 5.0
"""A 4 KiB message takes milliseconds."""
DEFAULT_MAX_INBOUND_BYTES_PER_S: Final = 262144.0
"""2048 empty frames a second at 128 budget bytes each: ~10 % of a core in wsproto and
trio-websocket."""
DEFAULT_MAX_CONNECTIONS_PER_IP: Final = 256
"""A NATed office of a few hundred people gets in."""
DEFAULT_MAX_HANDSHAKES_PER_IP: Final = 128
"""Room for a NATed office arriving all at once."""
DEFAULT_RECONNECT_GRACE_S: Final = 30.0
"""A page reload, or a laptop moving between networks, comes back within seconds."""
DEFAULT_CLOSED_EPISODE_S: Final = 2.0
"""Longer than any blink (0.1-0.4 s) and than a slow one (~1 s)."""
DEFAULT_RETENTION_S: Final = 30 * 86400.0
DEFAULT_WEBHOOK_MAX_AGE_S: Final = 72 * 3600.0
"""A receiver down over a long weekend still gets every event."""
DEFAULT_DATA_DIR: Final = "./trackerd-data"
DEFAULT_MAX_FRAME_BYTES: Final = 524288
"""A 640x480 JPEG at quality 80 is ~25-50 KB; 1920x1080 ~150-300 KB."""
DEFAULT_MAX_FRAME_PIXELS: Final = 1920 * 1080
DEFAULT_MAX_FPS: Final = 30.0
"""A webcam's rate; the tracker needs no more."""
SESSIONS_PER_ANALYSIS_THREAD: Final = 16
"""The default ``max_sessions``: one process held 33 sessions at 15 fps on 2 cores
(``python -m benchmarks sessions``, benchmarks/results/sessions.json), so 16 a thread, and a
session beyond what the process holds is refused rather than slowing every other one."""
DEFAULT_MAX_SESSIONS_PER_IP: Final = 4
"""A candidate has one session, a tab reloaded has two for a moment; a test centre behind one
NAT address raises it. Without it, one address held every session (issue 20)."""
DEFAULT_SESSION_IDLE_TIMEOUT_S: Final = 15.0
"""A browser sends frames many times a second; a tab in the background still sends about one a
second (Chromium's timer throttling). 15 s of nothing is a session held, not used."""
DEFAULT_FRAME_CPU_BUDGET_S: Final = 0.15
"""Honest 640x480 frames cost 1-2 ms of analysis, and 70 ms at most (a first full search), on
this VM; block noise built to pass the face cascade's first stages costs 220 ms. The margin is
for a slower CPU (thread CPU time, so a busy machine does not count)."""
DEFAULT_SESSION_CPU_SHARE: Final = 0.25
"""The analysis time one session may use, in cores: an honest session at 15 fps used 0.03-0.1
(the most in a second: 0.095, a face-less scene), so only a session whose frames cost far more
than a face's is held back."""
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("text", "json")

ENV_PREFIX: Final = "TRACKERD_"
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Hosts that count as local, for binding and for Origins."""
ENV_READ_ELSEWHERE: Final = frozenset(
    {"TRACKERD_CASCADE_DIR", "TRACKERD_WORKER", "TRACKERD_KERNELS_CPU"}
)
"""``TRACKERD_`` variables that are not settings (cascades.py reads the first, workers.py the
second, which its supervisor sets in each worker; kernels/build.py the third, at install)."""
_ORIGIN = re.compile(r"^(https?://[^/?#\s]+|null)$")
"""``scheme://host[:port]`` as browsers send it, or ``null`` (sandboxed and file:// pages)."""
_OPTION: Final = "trackerd.option"
"""The key of a field's :class:`_Declared` in its ``dataclasses.field`` metadata."""
_T = TypeVar("_T", str, int, float)


class SettingsError(TrackerdError, ValueError):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class _Declared:
    """What :func:`option` records; :func:`options` completes it with the field's name."""

    help: str
    flag: str
    env: str
    env_only: bool
    choices: tuple[str, ...]
    shown_default: str


def option(
    default: _T,
    help: str,
    *,
    flag: str = "",
    env: str = "",
    env_only: bool = False,
    choices: tuple[str, ...] = (),
    shown_default: str = "",
) -> _T:
    """A :class:`Settings` field with its outside names. ``help`` is one plain-text phrase
    (no default, no final full stop: those are added where it is shown). ``flag`` and ``env``
    override the names derived from the field's; ``env_only`` for a secret, which on a command
    line would show in the process list; ``choices`` match case-insensitively; ``shown_default``
    for a default whose value alone would mislead (``0`` meaning "no cap")."""
    declared = _Declared(help, flag, env, env_only, choices, shown_default)
    return field(default=default, metadata={_OPTION: declared})


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the outside world sees it."""

    name: str
    """The field's name, which is also argparse's ``dest``."""
    kind: type
    """``str``, ``int`` or ``float``: what flags and variables are converted to."""
    default: str | int | float
    flag: str | None
    """``--like-this``, or None for a setting read from the environment only."""
    env: str
    help: str
    choices: tuple[str, ...]
    shown_default: str
    """The default as a person should read it."""
    literal: bool
    """``shown_default`` is the value itself (``5000``), not words about it."""

    def normalise(self, value: str) -> str:
        """``value`` spelt as its choice (``debug`` -> ``DEBUG``); unchanged if none matches."""
        return next((c for c in self.choices if c.lower() == value.lower()), value)


def options(cls: type | None = None) -> tuple[Option, ...]:
    """Every setting of ``cls`` (:class:`Settings`), in declaration order. A field not declared
    with :func:`option` is an error here, so an undocumented setting cannot slip in."""
    return tuple(_resolve(f.name, f.default, f.metadata) for f in fields(cls or Settings))


def _resolve(name: str, default: Any, metadata: Mapping[str, Any]) -> Option:
    declared = metadata.get(_OPTION)
    if not isinstance(declared, _Declared):
        raise TypeError(f"Settings.{name} must be declared with option(default, help)")
    flag = declared.flag or "--" + name.removesuffix("_s").replace("_", "-")
    if declared.shown_default:
        shown = declared.shown_default
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default) if default != "" else "none"
    return Option(
        name=name,
        kind=type(default),
        default=default,
        flag=None if declared.env_only else flag,
        env=declared.env or ENV_PREFIX + name.upper(),
        help=declared.help,
        choices=declared.choices,
        shown_default=shown,
        literal=not declared.shown_default and default != "",
    )


def need(ok: bool, message: str) -> None:
    """A setting's check: ``message`` names the setting and what it must be."""
    if not ok:
        raise SettingsError(message)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = option(
        DEFAULT_HOST, "interface to listen on (0.0.0.0 for all, as in a container)", env="HOST"
    )
    port: int = option(
        DEFAULT_PORT, "TCP port; 0 picks a free one (the bound port is logged)", env="PORT"
    )
    source: str = option(
        DEFAULT_SOURCE,
        "what to watch: auto (cameras 0, 1, 2 in turn), a camera index, a video file (played "
        "on a loop at its own speed), a folder of images, a stream URL (rtsp://, http://), "
        "demo (the bundled face clip), or none (push sessions only)",
    )
    fps: float = option(
        0.0,
        "analyse at most this many frames a second (0: every frame the source delivers)",
    )
    heartbeat_interval_s: float = option(
        DEFAULT_HEARTBEAT_INTERVAL_S, "seconds between WebSocket pings to each client"
    )
    heartbeat_timeout_s: float = option(
        DEFAULT_HEARTBEAT_TIMEOUT_S,
        "drop a client that does not answer a ping within this many seconds",
    )
    max_message_bytes: int = option(
        DEFAULT_MAX_MESSAGE_BYTES,
        "largest client message; a larger one closes the connection with 1009",
    )
    graceful_timeout_s: float = option(
        DEFAULT_GRACEFUL_TIMEOUT_S,
        "on SIGTERM or SIGINT, seconds clients get to see their 1001 close (0-60)",
    )
    source_retry_max_s: float = option(
        DEFAULT_SOURCE_RETRY_MAX_S,
        "a source that fails is reopened after 0.5 s, the wait doubling up to this many seconds",
    )
    handshake_timeout_s: float = option(
        DEFAULT_HANDSHAKE_TIMEOUT_S,
        "close a connection whose request head is not complete within this many seconds (408)",
    )
    stats_interval_s: float = option(
        DEFAULT_STATS_INTERVAL_S,
        "seconds between stats lines in the log (fps, clients, per-frame ms, dropped messages)",
    )
    log_level: str = option("INFO", "the least severe log records written", choices=LOG_LEVELS)
    log_format: str = option(
        "text", "log line format; json: one object per line", choices=LOG_FORMATS
    )
    max_connections: int = option(
        DEFAULT_MAX_CONNECTIONS,
        "WebSocket clients at once; more are refused at the handshake with 503",
    )
    rate_limit_per_s: float = option(
        DEFAULT_RATE_LIMIT_PER_S,
        "commands a second a client may send, sustained; beyond it an error, and on a sustained "
        "flood a 1008 close",
        flag="--rate-limit",
    )
    rate_limit_burst: int = option(
        DEFAULT_RATE_LIMIT_BURST, "commands a client may send at once before the rate applies"
    )
    send_timeout_s: float = option(
        DEFAULT_SEND_TIMEOUT_S, "drop a client whose socket takes nothing for this many seconds"
    )
    source_timeout_s: float = option(
        DEFAULT_SOURCE_TIMEOUT_S,
        "a source that takes longer than this many seconds to open or to deliver a frame has "
        "failed",
    )
    allowed_origins: str = option(
        "",
        "comma-separated origins whose web pages may connect (https://app.example.com), or * "
        "for any; clients that send no Origin (anything but a browser) are always let in, and "
        "the token is what keeps those out",
        shown_default="localhost pages only when bound to a loopback host, any otherwise",
    )
    token: str = option(
        "",
        "shared secret every WebSocket client (and /metrics) must present, as "
        "Authorization: Bearer <token> or ?token=<token>; empty: none asked",
        env_only=True,
    )
    signing_keys: str = option(
        "",
        "session tokens: comma-separated kid=secret pairs (each secret at least 32 bytes) that "
        "verify the HS256 JWTs a platform mints per candidate; list the new key beside the old "
        "to rotate; with keys and no token, every WebSocket client needs a session token",
        env_only=True,
    )
    certfile: str = option("", "PEM certificate chain: serve wss:// and https:// only")
    keyfile: str = option("", "PEM private key, if it is not in the certificate file")
    max_message_fragments: int = option(
        DEFAULT_MAX_MESSAGE_FRAGMENTS,
        "frames one client message may come in; more close the connection with 1008",
    )
    message_timeout_s: float = option(
        DEFAULT_MESSAGE_TIMEOUT_S,
        "seconds from a client message's first byte to the last byte of its last frame (a "
        "pushed frame too); longer closes with 1008",
    )
    max_inbound_bytes_per_s: float = option(
        DEFAULT_MAX_INBOUND_BYTES_PER_S,
        "what the server reads a second from busy clients together, each frame counting 128 "
        "bytes more than its size; a quiet client (under 256 B/s) never waits for it",
        flag="--max-inbound-bytes-per-s",  # the derived name drops "_s", which here is "second"
    )
    max_connections_per_ip: int = option(
        DEFAULT_MAX_CONNECTIONS_PER_IP,
        "open connections from one client address; beyond it a new one is closed at once",
        flag="--max-connections-per-ip",
    )
    max_handshakes_per_ip: int = option(
        DEFAULT_MAX_HANDSHAKES_PER_IP,
        "connections from one address that have not sent their request yet; a newcomer beyond "
        "it closes that address's oldest",
        flag="--max-handshakes-per-ip",
    )
    trusted_proxies: str = option(
        "",
        "comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose "
        "X-Forwarded-For is believed: behind them, per-address limits and logs use the "
        "client's address; from anyone else the header is ignored",
    )
    max_sessions: int = option(
        0,
        "push sessions at once (clients sending their own frames); more get an error, and "
        "/readyz answers 503 while they are all taken",
        shown_default=f"{SESSIONS_PER_ANALYSIS_THREAD} per analysis thread",
    )
    max_sessions_per_ip: int = option(
        DEFAULT_MAX_SESSIONS_PER_IP,
        "push sessions at once from one address (behind --trusted-proxies, the forwarded one; "
        "IPv6 by /64)",
    )
    session_idle_timeout_s: float = option(
        DEFAULT_SESSION_IDLE_TIMEOUT_S,
        "a push session that sends no frame for this long gets an error (code session_idle) "
        "and its connection is closed",
    )
    frame_cpu_budget_s: float = option(
        DEFAULT_FRAME_CPU_BUDGET_S,
        "CPU time a pushed frame's analysis may take; a frame over it gets an error (code "
        "frame_over_budget), and a session that keeps sending such frames is closed",
    )
    session_cpu_share: float = option(
        DEFAULT_SESSION_CPU_SHARE,
        "analysis time one push session may use, in cores, averaged over a few seconds; a "
        "session over it waits for its next turn (its frames meanwhile are replaced, each answered "
        "frame_replaced)",
    )
    max_frame_bytes: int = option(
        DEFAULT_MAX_FRAME_BYTES,
        "largest frame a client may push; a larger one closes the connection with 1009",
    )
    max_frame_pixels: int = option(
        DEFAULT_MAX_FRAME_PIXELS,
        "most pixels a pushed frame's header may declare; more gets an error and is never decoded",
        shown_default="1920x1080",
    )
    max_fps: float = option(
        DEFAULT_MAX_FPS,
        "frames a second each push session may send; faster ones are not analysed, and are "
        "answered frame_over_rate",
    )
    analysis_threads: int = option(
        0,
        "worker threads that decode and track pushed frames, shared fairly by all sessions",
        shown_default="the CPUs this process may use",
    )
    allowed_hosts: str = option(
        "",
        "comma-separated host names the Host header may name (any port), or * for any; "
        "others get 421, which stops DNS rebinding",
        shown_default="localhost names only when bound to a loopback host, any otherwise",
    )

    drain_delay_s: float = option(
        DEFAULT_DRAIN_DELAY_S,
        "on SIGTERM or SIGINT, /readyz turns 503 and new WebSocket upgrades get 503 at once; "
        "clients are closed with 1001 only after this many seconds (0-60), so that a load "
        "balancer polling /readyz stops sending new ones first",
    )
    reconnect_grace_s: float = option(
        DEFAULT_RECONNECT_GRACE_S,
        "a session token's sid that reconnects within this many seconds continues its push "
        "session and episodes; after it, the session ends with a disconnected episode",
    )
    closed_episode_s: float = option(
        DEFAULT_CLOSED_EPISODE_S,
        "eyes closed at least this long make an eyes_closed episode",
        flag="--closed-episode-s",
    )
    max_head_yaw_deg: float = option(
        30.0,
        "a head turned further than this many degrees to either side for --head-turn-s is "
        "looking away, and a head_turned episode",
        flag="--max-head-yaw",
    )
    max_head_pitch_deg: float = option(
        35.0,
        "a head pitched down further than this many degrees for --head-turn-s is looking away "
        "too, and a head_turned episode (a bowed head at the screen is ~20-30 by the estimate, "
        "notes on the desk more)",
        flag="--max-head-pitch",
    )
    head_turn_s: float = option(
        1.0, "seconds a head stays turned or pitched down before it counts", flag="--head-turn-s"
    )
    webhook_url: str = option(
        "",
        "comma-separated URLs each session event and report is POSTed to, signed by the "
        "Standard Webhooks scheme with TRACKERD_WEBHOOK_SECRET, from a durable outbox",
    )
    webhook_secret: str = option(
        "",
        "the webhooks' signing secret, whsec_ then base64 (Standard Webhooks); needed with "
        "--webhook-url",
        env_only=True,
    )
    webhook_max_age_s: float = option(
        DEFAULT_WEBHOOK_MAX_AGE_S,
        "an event not delivered within this many seconds is marked dead (kept, never deleted "
        "silently, and counted in /metrics)",
        shown_default="259200 (72 h)",
    )
    data_dir: str = option(
        DEFAULT_DATA_DIR,
        "the folder of trackerd's database (sessions, reports and the webhook outbox); give it "
        "a volume that outlives the process",
    )
    retention_s: float = option(
        DEFAULT_RETENTION_S,
        "sessions, reports and delivered or dead events older than this many seconds are purged",
        shown_default="2592000 (30 days)",
    )
    admin_key: str = option(
        "",
        "bearer key for GET /sessions/{sid} (a session's report); empty: that route is off",
        env_only=True,
    )
    workers: int = option(
        1,
        "processes serving the same port (SO_REUSEPORT), to use more than one core for push "
        "sessions; only the first watches the server's camera: the others refuse "
        "start_tracking without source client",
    )

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_delivery()
        self._check_access()

    def _check_numbers(self) -> None:
        """Each number within the range that makes sense for it, and each choice one of its own."""
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
        need(0 <= self.drain_delay_s <= 60, "drain_delay_s must be 0-60")
        need(1 <= self.workers <= MAX_WORKERS, f"workers must be 1-{MAX_WORKERS}")
        need(self.reconnect_grace_s >= 0, "reconnect_grace_s must be >= 0")
        need(self.closed_episode_s > 0, "closed_episode_s must be > 0")
        need(0 < self.max_head_yaw_deg <= 90, "max_head_yaw_deg must be in (0, 90]")
        need(0 < self.max_head_pitch_deg <= 90, "max_head_pitch_deg must be in (0, 90]")
        need(self.head_turn_s >= 0, "head_turn_s must be >= 0")
        need(self.webhook_max_age_s > 0, "webhook_max_age_s must be > 0")
        need(self.retention_s > 0, "retention_s must be > 0")
        need(self.source_retry_max_s > 0, "source_retry_max_s must be > 0")
        need(self.handshake_timeout_s > 0, "handshake_timeout_s must be > 0")
        need(self.stats_interval_s > 0, "stats_interval_s must be > 0")
        need(self.max_connections >= 1, "max_connections must be >= 1")
        need(self.rate_limit_per_s > 0, "rate_limit_per_s must be > 0")
        need(self.rate_limit_burst >= 1, "rate_limit_burst must be >= 1")
        need(self.send_timeout_s > 0, "send_timeout_s must be > 0")
        need(self.source_timeout_s > 0, "source_timeout_s must be > 0")
        need(
            self.max_sessions >= 0,
            f"max_sessions must be >= 0 (0: {SESSIONS_PER_ANALYSIS_THREAD} per analysis thread)",
        )
        need(self.max_sessions_per_ip >= 1, "max_sessions_per_ip must be >= 1")
        need(self.session_idle_timeout_s > 0, "session_idle_timeout_s must be > 0")
        need(self.frame_cpu_budget_s > 0, "frame_cpu_budget_s must be > 0")
        need(self.session_cpu_share > 0, "session_cpu_share must be > 0")
        need(self.max_frame_bytes >= 1024, "max_frame_bytes must be >= 1024")
        need(self.max_frame_pixels >= 64 * 64, "max_frame_pixels must be >= 4096")
        need(self.max_fps > 0, "max_fps must be > 0")
        need(self.analysis_threads >= 0, "analysis_threads must be >= 0 (0: one per CPU)")
        need(self.max_message_fragments >= 1, "max_message_fragments must be >= 1")
        need(self.message_timeout_s > 0, "message_timeout_s must be > 0")
        need(self.max_inbound_bytes_per_s >= 1024, "max_inbound_bytes_per_s must be >= 1024")
        need(self.max_connections_per_ip >= 1, "max_connections_per_ip must be >= 1")
        need(self.max_handshakes_per_ip >= 1, "max_handshakes_per_ip must be >= 1")
        for o in options():
            if o.choices:
                value = getattr(self, o.name)
                need(value in o.choices, f"{o.name} must be one of {', '.join(o.choices)}")

    def _check_delivery(self) -> None:
        """Where sessions and events are kept, and where webhooks go."""
        need(bool(self.data_dir.strip()), "data_dir must not be empty")
        for url in self.webhook_urls:
            need(
                url.startswith(("http://", "https://")),
                f"webhook_url: {url!r} is not an http:// or https:// URL",
            )
        if self.webhook_urls:
            try:
                check_webhook_secret(self.webhook_secret)
            except ValueError as exc:
                raise SettingsError(f"webhook_url needs TRACKERD_WEBHOOK_SECRET: {exc}") from None

    def _check_access(self) -> None:
        """Who may connect: proxies, origins, the token, the signing keys, TLS."""
        try:
            self.proxies  # noqa: B018 (parsed here so that a bad entry fails at start-up)
        except ValueError as exc:
            raise SettingsError(f"trusted_proxies: {exc}") from None
        for origin in self.origins:
            need(
                origin == "*" or _ORIGIN.match(origin) is not None,
                f"allowed_origins: {origin!r} is not an origin like https://example.com[:port]",
            )
        need(
            all(c.isprintable() and not c.isspace() for c in self.token),
            "token must not contain spaces or control characters",
        )
        try:
            self.keys  # noqa: B018 (parsed here so that a bad entry fails at start-up)
        except ValueError as exc:
            raise SettingsError(f"signing_keys (TRACKERD_SIGNING_KEYS): {exc}") from None
        need(bool(self.certfile) or not self.keyfile, "keyfile needs certfile")

    @property
    def origins(self) -> tuple[str, ...]:
        """The allow-list, normalised (lower case, no trailing slash); empty means default."""
        return tuple(o.rstrip("/") for o in _items(self.allowed_origins))

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        """The webhook URLs, as given (a URL's path is case-sensitive)."""
        return tuple(url.strip() for url in self.webhook_url.split(",") if url.strip())

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host allow-list, lower case; empty means the default."""
        return _items(self.allowed_hosts)

    @property
    def proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The trusted proxies as networks (a single address is a /32 or /128)."""
        return tuple(ipaddress.ip_network(p, strict=False) for p in _items(self.trusted_proxies))

    @property
    def keys(self) -> dict[str, bytes]:
        """The session tokens' signing keys, kid → secret
        (:func:`trackerd.keys.signing_keys`)."""
        return signing_keys(self.signing_keys)

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (so the default Origin policy is localhost only)."""
        return self.host.lower() in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def tls(self) -> bool:
        return bool(self.certfile)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
        """Flags (``None`` = not given) over the environment over the defaults. An unknown
        ``TRACKERD_`` variable is refused: a misspelt one would otherwise be silently ignored.
        A value with choices is matched case-insensitively (``debug`` is ``DEBUG``)."""
        every = options()
        known = {o.env for o in every} | ENV_READ_ELSEWHERE
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            names = ", ".join(sorted(k for k in known if k.startswith(ENV_PREFIX)))
            raise SettingsError(f"unknown environment variable {unknown[0]}; known: {names}")
        values: dict[str, Any] = {}
        for o in every:
            value = flags.get(o.name)
            if value is None and o.env in environ:
                value = _convert(o.name, o.env, environ[o.env], o.kind)
            if value is None:
                continue
            values[o.name] = o.normalise(value) if isinstance(value, str) else value
        return cls(**values)


def _items(text: str) -> tuple[str, ...]:
    """The entries of a comma-separated setting, stripped and in lower case."""
    parts = (part.strip().lower() for part in text.split(","))
    return tuple(part for part in parts if part)


def _convert(name: str, env: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw.strip()) if kind is not str else raw
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise SettingsError(f"{name}: environment variable {env}={raw!r} is not {what}") from None

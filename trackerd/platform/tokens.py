"""Session tokens: a JWT (HS256) the platform's backend mints for one candidate, sans-IO.

The platform shares one or more secrets with trackerd (``TRACKERD_SIGNING_KEYS``: ``kid=secret``
pairs, so that a new key is added, tokens are minted with it, and the old one is removed once
the tokens it signed have expired: rotation without downtime). A token names the key that
signed it in its header's ``kid``, and carries:

- ``sid``: the interview or session id; it names the push session, so that the platform can
  match results to its interview;
- ``sub``: the candidate;
- ``exp`` and ``nbf``: Unix seconds; :data:`CLOCK_LEEWAY_S` of skew is forgiven;
- ``grants``: what the connection may do, a list of :data:`KNOWN_GRANTS` (``push``: send its
  own frames; ``stream``: the server's camera; ``observe``: watch a session's events, for later);
- ``metadata``, optional: a JSON object of at most :data:`MAX_METADATA_BYTES`, kept with the
  connection for the events that later report on it.

:func:`verify` is pure (the token, the keys and the time in; a :class:`Grant` or a
:class:`Rejected` out), so that every kind of failure is tested without a clock or a socket.
PyJWT does the parsing and the signature; trackerd checks ``exp`` and ``nbf`` itself against
the time it is given, rather than PyJWT's own reading of the clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from trackerd.keys import MAX_ID_CHARS
from trackerd.keys import identifier as _identifier

# Re-exported: the keys' format is parsed below the settings (:mod:`trackerd.keys`).
from trackerd.keys import signing_keys as signing_keys

if TYPE_CHECKING:
    from types import ModuleType

ALGORITHM: Final = "HS256"
KNOWN_GRANTS: Final = ("push", "stream", "observe")
REQUIRED_CLAIMS: Final = ("sid", "sub", "exp", "nbf", "grants")
CLOCK_LEEWAY_S: Final = 10.0
"""How far the platform's clock and this server's may disagree. NTP keeps servers within a
fraction of a second; 10 s covers a VM whose clock has drifted, and lengthens a token's life by
only as much (a platform that mints ``nbf = now`` would otherwise see a server a second behind
refuse the token it just made)."""
MAX_METADATA_BYTES: Final = 2048
"""The ``metadata`` claim, as compact JSON: a few ids and labels for the platform's events. It is
kept for as long as the connection lasts, so it is bounded."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one connection may do, and for whom: a verified token's claims."""

    grants: frozenset[str]
    sid: str | None = None
    """None without a session token (no token asked, or the shared one)."""
    sub: str | None = None
    expires_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    """The token's ``metadata`` object, read-only."""
    events_to_client: bool = False
    """The token's ``events_to_client``: whether this candidate sees its own episodes (the
    default is not to tell the candidate)."""

    def allows(self, grant: str) -> bool:
        return grant in self.grants


EVERYTHING: Final = Grant(frozenset(KNOWN_GRANTS))
"""No token asked, or the shared ``TRACKERD_TOKEN``: as before session tokens, all of it."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a token is refused: ``cause`` for /metrics (a fixed set), ``reason`` for people. Never
    repeats what the token says, beyond naming a claim."""

    cause: str
    reason: str


MALFORMED: Final = Rejected("token-malformed", "token malformed: not a JWT trackerd can read")
BAD_ALG: Final = Rejected("token-alg", f"token alg must be {ALGORITHM}")
UNKNOWN_KID: Final = Rejected("token-kid", "token kid names no current signing key")
BAD_SIGNATURE: Final = Rejected("token-signature", "token signature does not verify")
EXPIRED: Final = Rejected("token-expired", "token expired")
NOT_YET_VALID: Final = Rejected("token-not-yet-valid", "token not yet valid (nbf)")
NO_GRANT: Final = Rejected(
    "token-grant", f"token grants nothing this server knows ({', '.join(KNOWN_GRANTS)})"
)
TOO_MUCH_METADATA: Final = Rejected(
    "token-metadata", f"token metadata over {MAX_METADATA_BYTES} bytes"
)


def _bad_claim(claim: str, what: str) -> Rejected:
    return Rejected("token-claim", f"token claim {claim} {what}")


def load() -> ModuleType:
    """PyJWT, imported on first use: a server without signing keys never needs it, and its
    import (~45 ms, more where ``cryptography`` is installed) is start-up time. A server with keys
    calls this as it starts (:class:`trackerd.net.access.Access`), so that no connection waits
    for it."""
    import jwt

    return jwt


def verify(token: str | bytes, keys: Mapping[str, bytes], now: float) -> Grant | Rejected:
    """The grant ``token`` carries at Unix time ``now``, or why it is refused."""
    jwt = load()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return MALFORMED
    if header.get("alg") != ALGORITHM:
        return BAD_ALG  # "none" included: the algorithm is ours to choose, not the token's
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        return UNKNOWN_KID
    try:
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=[ALGORITHM],
            # exp and nbf are checked below against ``now``; no audience or issuer is asked.
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        return BAD_SIGNATURE
    except jwt.MissingRequiredClaimError as missing:
        return _bad_claim(missing.claim, "is missing")
    except jwt.InvalidTokenError:
        return MALFORMED
    return _granted(claims, now)


def _granted(claims: Mapping[str, Any], now: float) -> Grant | Rejected:
    """The checks on a token whose signature verified."""
    exp, nbf = claims["exp"], claims["nbf"]
    for name, value in (("exp", exp), ("nbf", nbf)):
        if not _seconds(value):
            return _bad_claim(name, "must be a number (Unix seconds)")
    if exp <= now - CLOCK_LEEWAY_S:
        return EXPIRED
    if nbf > now + CLOCK_LEEWAY_S:
        return NOT_YET_VALID
    for name in ("sid", "sub"):
        if not _identifier(claims[name]):
            return _bad_claim(name, f"must be 1-{MAX_ID_CHARS} printable characters, no spaces")
    grants = claims["grants"]
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        return _bad_claim("grants", "must be a list of strings")
    known = frozenset(grants) & frozenset(KNOWN_GRANTS)
    if not known:
        return NO_GRANT  # unknown ones beside a known one are ignored: newer servers may add some
    metadata = claims.get("metadata", {})
    if not isinstance(metadata, dict):
        return _bad_claim("metadata", "must be a JSON object")
    if len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        return TOO_MUCH_METADATA
    to_client = claims.get("events_to_client", False)
    if not isinstance(to_client, bool):
        return _bad_claim("events_to_client", "must be true or false")
    return Grant(
        known, claims["sid"], claims["sub"], float(exp), MappingProxyType(metadata), to_client
    )


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

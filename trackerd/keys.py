"""The configured secrets' formats: session tokens' signing keys and the webhooks' secret.

Pure parsers, here below the settings so that :class:`~trackerd.settings.Settings` refuses a bad
secret at start-up without importing the platform side that uses them
(:mod:`trackerd.platform.tokens`, :mod:`trackerd.platform.webhooks`, which import these).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

MIN_SIGNING_KEY_BYTES: Final = 32
"""HS256 is HMAC-SHA256: a key shorter than its 256-bit output weakens it (RFC 7518 §3.2)."""
MAX_ID_CHARS: Final = 128
"""A kid, and a token's ``sid`` and ``sub``: a UUID is 36, a platform's own ids are shorter
still."""


def identifier(value: object) -> bool:
    """A kid, a ``sid``, a ``sub``: 1 to ``MAX_ID_CHARS`` printable characters, no spaces."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_CHARS
        and all(c.isprintable() and not c.isspace() for c in value)
    )


def signing_keys(text: str) -> dict[str, bytes]:
    """``kid=secret[,kid=secret...]`` as kid → secret; ValueError saying what is wrong, which
    names a kid or an entry's place but never repeats a secret."""
    keys: dict[str, bytes] = {}
    for place, entry in enumerate(text.split(","), 1):
        if not entry.strip():
            continue
        kid, sep, secret = (part.strip() for part in entry.partition("="))
        if not sep or not kid:
            raise ValueError(f"entry {place} is not kid=secret (a non-empty kid, then =)")
        if not identifier(kid):
            raise ValueError(f"entry {place}: a kid is printable characters without spaces")
        if kid in keys:
            raise ValueError(f"kid {kid!r} is given twice")
        encoded = secret.encode()
        if len(encoded) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(
                f"the secret of kid {kid!r} is {len(encoded)} bytes; HS256 needs at least "
                f"{MIN_SIGNING_KEY_BYTES} (256 bits): make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        keys[kid] = encoded
    return keys


MIN_WEBHOOK_SECRET_BYTES: Final = 24
"""Standard Webhooks asks for 24 to 64 random bytes (Svix's own secrets are 24)."""


def check_webhook_secret(secret: str) -> bytes:
    """The signing key in ``whsec_`` then base64, or a :class:`ValueError` saying what is wrong
    with it (and not what it is). ``standardwebhooks`` itself skips characters that are not
    base64, so a mangled secret would sign with a key the receiver does not have."""
    if not secret.startswith("whsec_"):
        raise ValueError("the webhook secret must start with whsec_ (then base64)")
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        # Not chained: the cause's message may quote the secret.
        raise ValueError("the webhook secret must be whsec_ then base64") from None
    if len(key) < MIN_WEBHOOK_SECRET_BYTES:
        raise ValueError(
            f"the webhook secret must be whsec_ then base64 of at least {MIN_WEBHOOK_SECRET_BYTES} "
            f"random bytes (it holds {len(key)})"
        )
    return key

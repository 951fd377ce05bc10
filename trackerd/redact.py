"""Credentials out of text: :func:`redact` is applied to everything that may carry a stream URL
on its way out of the process (logs, ``status``, ``/healthz``, ``trackerd health``, refusals).

Its own module, importable without OpenCV or numpy: :mod:`trackerd.ops.logs` runs every record
through it (a safety net under the call sites, which redact too: ``status`` and ``/healthz`` do
not go through logging), and logging is set up before the server's dependencies load.

A URL is anything from ``scheme://`` (or ``scheme:/``) up to the next whitespace. In it:

- the *userinfo*: everything between ``//`` and the LAST ``@`` (a password may hold ``@``,
  ``:`` or ``/``, raw or percent-encoded) becomes ``***``. If that part holds ``/``, ``?`` or
  ``#``, the ``@`` may sit in a path or a query value instead, where what follows it could be
  the rest of a secret: then everything after ``scheme://`` becomes ``***``. Over-redacting a
  host beats leaking half a password.
- the value of every parameter whose name looks like a credential (:data:`CREDENTIAL_NAMES`,
  matched as a case-insensitive substring: ``X-Amz-Signature``, ``access_token``, ``apiKey``),
  after ``?``, ``&``, ``;``, ``#`` or ``/`` (some cameras take ``/user=admin&password=x`` in the
  path), becomes ``***``, up to the next ``&``, ``;`` or ``#``.

Not covered: a URL with whitespace inside it is cut at the whitespace. A server never runs with
one (:func:`trackerd.sources.check_source` refuses it without echoing it).
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

CREDENTIAL_NAMES: Final = (
    "pass",  # password, passwd, passphrase
    "pwd",
    "token",  # access_token, X-Amz-Security-Token
    "secret",
    "key",  # key, apikey, api_key
    "auth",  # auth, authorization, oauth
    "sig",  # sig, signature, X-Amz-Signature
    "cred",  # credential(s), X-Amz-Credential
    "user",  # user, username
    "login",
    "session",
)
"""Substrings that make a parameter's name a credential's. Broad on purpose: ``monkey=3``
loses its value too, which costs a log reader less than a key would cost its owner."""

_URL: Final = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*:/{1,2})(?P<rest>\S*)")
"""``scheme://``, or ``scheme:/`` (``rtsp:/user:pw@host`` is a typo that still carries a
password), then the rest up to whitespace. Not more slashes: a third is the userinfo's."""
_PARAMETER: Final = re.compile(r"[/?&;#](?P<name>[^=/?&;#]*)=")
_VALUE_END: Final = re.compile(r"[&;#]")
_AMBIGUOUS: Final = frozenset("/?#")


def redact(text: str) -> str:
    """``text`` with every URL's userinfo and credential parameters replaced by ``***``
    (see the module docstring). Text with no URL in it comes back unchanged, and redacting
    twice is redacting once."""
    if ":/" not in text:  # most log records: no URL at all
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    userinfo, at, tail = rest.rpartition("@")
    if at:
        if _AMBIGUOUS & set(userinfo):
            return scheme + MASK
        scheme += MASK + at
        rest = tail
    return scheme + _redact_parameters(rest)


def _redact_parameters(rest: str) -> str:
    """``rest`` with the value of each credential-like ``name=value`` masked. Values of other
    parameters are scanned too: ``?a=1?token=x`` has a token inside ``a``'s value."""
    out: list[str] = []
    done = 0
    for parameter in _PARAMETER.finditer(rest):
        if parameter.start() < done or not _is_credential(parameter["name"]):
            continue  # inside a value already masked, or not a credential
        end = _VALUE_END.search(rest, parameter.end())
        out += (rest[done : parameter.end()], MASK)
        done = end.start() if end else len(rest)
    out.append(rest[done:])
    return "".join(out)


def _is_credential(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in CREDENTIAL_NAMES)

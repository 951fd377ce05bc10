"""TLS for the listener (``certfile``/``keyfile``): the server's context, made once at start-up.

Here, on the network side, rather than in the app, so that ``trackerd health``
(:mod:`trackerd.ops.health`) loads the certificate the same way without importing the app.
"""

from __future__ import annotations

import ssl

from trackerd.settings import Settings, SettingsError


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None without ``certfile``. A file that will not load is a
    :class:`SettingsError` at start-up, not a failure at the first client."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 and up
    context.set_alpn_protocols(["http/1.1"])  # WebSocket upgrades are HTTP/1.1
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"certfile/keyfile: cannot load {settings.certfile}: {exc}") from None
    return context

"""The network side: connections, the WebSocket protocol, push sessions and the HTTP routes.

- :mod:`~trackerd.net.gate`: every TCP connection's way in (a slot, TLS, the request head,
  who may come in), with :mod:`~trackerd.net.peers`, :mod:`~trackerd.net.access`,
  :mod:`~trackerd.net.handshake` and :mod:`~trackerd.net.tls`;
- :mod:`~trackerd.net.server`: the WebSocket clients, over :mod:`~trackerd.net.framing`,
  :mod:`~trackerd.net.inbound` and :mod:`~trackerd.net.limits`;
- :mod:`~trackerd.net.sessions`: push sessions (the client's own frames, analysed here);
- :mod:`~trackerd.net.protocol`: the JSON messages, sans-IO;
- :mod:`~trackerd.net.web` and :mod:`~trackerd.net.page`: plain HTTP and the page.

Imports run one way: this side uses the capture, the hub, the platform side and vision; none of
them imports it (the hub is handed :func:`trackerd.net.protocol.eye_data` by the app). Nothing
is re-exported here, so that importing one module does not load the others.
"""

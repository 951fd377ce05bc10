"""The platform's side: what the interview platform's backend, the one party that must trust the
result, gets from trackerd.

- :mod:`~trackerd.platform.tokens`: the per-session JWT a platform mints for each candidate;
- :mod:`~trackerd.platform.episodes`: a session's observations turned into episodes;
- :mod:`~trackerd.platform.reports`: the session report and the events' bodies;
- :mod:`~trackerd.platform.store`: the SQLite database (sessions, reports, the webhook outbox);
- :mod:`~trackerd.platform.webhooks`: signed deliveries of the outbox, retried until a 2xx.

Imports run one way: the network side (:mod:`trackerd.net.server`,
:mod:`trackerd.net.sessions`) uses these, and they use nothing of it.
"""

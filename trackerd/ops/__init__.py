"""Operations: what an operator runs and reads, above the network side.

- :mod:`~trackerd.ops.metrics`: ``/metrics``, ``/healthz`` and the stats line, from the other
  parts' ``statistics()`` records;
- :mod:`~trackerd.ops.health`: ``trackerd health``, the set-up check;
- :mod:`~trackerd.ops.logs`: the log's formats;
- :mod:`~trackerd.ops.workers`: ``--workers N``, the supervisor and its processes.

Nothing is re-exported here: ``--workers``' supervisor imports only what it needs.
"""

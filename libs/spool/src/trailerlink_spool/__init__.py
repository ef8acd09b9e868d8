"""The trailer's object spool, shared by the services that read or clean it.

* :mod:`trailerlink_spool.layout` — where encrypted objects live under the spool root.
* :mod:`trailerlink_spool.part10` — the DICOM Part 10 envelope (preamble + file meta)
  around the dataset bytes as received.
* :mod:`trailerlink_spool.index` — the durable record of every object the gateway
  acknowledged (SQLite), with the event outbox in the same database so an object and
  the event announcing it are committed together.
* :mod:`trailerlink_spool.outbox` — the outbox table, published to Kafka, in order, once,
  by the shared :class:`trailerlink_events.outbox.OutboxPublisher`.
"""

"""Fleet mode: the monitor in the data centre.

It consumes the central heartbeat, procedure-step, object-received, upload-completed,
object-delivered and object-failed topics into its state (SQLite or PostgreSQL), exports
per-trailer gauges and the acquisition -> PACS latency, checks completeness (every image an
MPPS COMPLETED listed must reach PACS by a deadline) and answers support's HTTP API,
including the receiving end of the trailers' relay.

- :mod:`.store`: the fleet's state (no Kafka, no HTTP);
- :mod:`.handler`: the Kafka handler, completeness evaluation and the fleet file;
- :mod:`.api`: the HTTP routes for support and the relay.

This ``__init__`` imports nothing, so ``main`` keeps each mode's modules lazy.
"""

"""Agent mode: the monitor on a trailer.

Every N seconds a heartbeat (the trailer services' /metrics and the spool disk) goes into
the trailer's Kafka, where it waits while the link is down; a relay carries queued
heartbeats, MPPS events and the gateway's receipts to the data centre over HTTPS with the
trailer's certificate; and, when a gateway is configured, a synthetic canary proves the
path gateway -> uplink -> ingest -> PACS with a marked test image.

- :mod:`.heartbeat`: the heartbeat agent, the relay, the sequence file, certificates;
- :mod:`.canary`: the synthetic canary (pydicom, pynetdicom: the agent's alone).

Nothing here imports :mod:`trailerlink_monitor.fleet`, nor the fleet this package; this
``__init__`` imports nothing, so ``main`` keeps each mode's modules lazy.
"""

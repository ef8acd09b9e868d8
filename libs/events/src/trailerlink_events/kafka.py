"""Kafka plumbing, written once: a producer for events and an at-least-once consumer.

Guarantees a service gets from this module:

* :class:`EventProducer` publishes with ``acks=all`` and idempotence, checks the event
  type against the topic registry and carries W3C trace context in record headers.
* :class:`ConsumerRunner` hands each record to the service's handler and commits a
  partition's offset only after the handler returned for every record before it, so a
  crash at any point redelivers rather than loses (handlers must be idempotent).
  A record that keeps failing goes to the site's dead-letter topic with the reason,
  the attempt count and its origin in headers, and the partition moves on.
  On stop, the in-flight record is finished or abandoned uncommitted.

This module is the one place services, tools and tests import the plumbing from; the
code lives in modules cut along its seams:

* :mod:`trailerlink_events.headers`: the record header names (event type, dead-letter
  origin), a wire contract both ends and the dead-letter tooling share;
* :mod:`trailerlink_events.tracing`: trace context in record headers, and the span a
  consumed record is handled in;
* :mod:`trailerlink_events.producer`: :class:`EventProducer`;
* :mod:`trailerlink_events.consumer`: :class:`ConsumerRunner`, :class:`RetryPolicy`,
  what a handler sees and raises, :func:`decode_event`, the consumer's metrics;
* :mod:`trailerlink_events.admin`: :func:`create_topics`, :func:`list_topics`.

Every name importable from here before the split still is (private ones included:
tests and the test harnesses use a few), and the metrics are the same objects, created
once in the module that owns them.
"""

from __future__ import annotations

from trailerlink_events.admin import _until_served as _until_served
from trailerlink_events.admin import create_topics, list_topics
from trailerlink_events.consumer import CONSUMER_LAG as CONSUMER_LAG
from trailerlink_events.consumer import DEAD_LETTERS as DEAD_LETTERS
from trailerlink_events.consumer import HANDLER_FAILURES as HANDLER_FAILURES
from trailerlink_events.consumer import HANDLER_SECONDS as HANDLER_SECONDS
from trailerlink_events.consumer import MESSAGES_CONSUMED as MESSAGES_CONSUMED
from trailerlink_events.consumer import (
    ConsumerRunner,
    Delivery,
    DependencyUnavailable,
    PermanentError,
    RetryPolicy,
    decode_event,
)
from trailerlink_events.consumer import Handler as Handler
from trailerlink_events.consumer import _topic_metrics as _topic_metrics
from trailerlink_events.consumer import _topic_view as _topic_view
from trailerlink_events.consumer import _TopicView as _TopicView
from trailerlink_events.headers import DLQ_ATTEMPTS as DLQ_ATTEMPTS
from trailerlink_events.headers import DLQ_CONSUMER_GROUP as DLQ_CONSUMER_GROUP
from trailerlink_events.headers import DLQ_FAILED_AT as DLQ_FAILED_AT
from trailerlink_events.headers import DLQ_REASON as DLQ_REASON
from trailerlink_events.headers import DLQ_SOURCE_OFFSET as DLQ_SOURCE_OFFSET
from trailerlink_events.headers import DLQ_SOURCE_PARTITION as DLQ_SOURCE_PARTITION
from trailerlink_events.headers import DLQ_SOURCE_TOPIC as DLQ_SOURCE_TOPIC
from trailerlink_events.headers import EVENT_TYPE_HEADER as EVENT_TYPE_HEADER
from trailerlink_events.headers import _headers_to_dict as _headers_to_dict
from trailerlink_events.producer import MESSAGES_PRODUCED as MESSAGES_PRODUCED
from trailerlink_events.producer import EventProducer
from trailerlink_events.topics import registry
from trailerlink_events.tracing import _TRACE_CONTEXT as _TRACE_CONTEXT
from trailerlink_events.tracing import _canonical_parent as _canonical_parent
from trailerlink_events.tracing import _canonical_traceparent as _canonical_traceparent
from trailerlink_events.tracing import _context_from_headers as _context_from_headers
from trailerlink_events.tracing import _process_span as _process_span
from trailerlink_events.tracing import _RemoteParent as _RemoteParent
from trailerlink_events.tracing import _trace_headers as _trace_headers
from trailerlink_events.tracing import tracer as tracer

__all__ = [
    "ConsumerRunner",
    "Delivery",
    "DependencyUnavailable",
    "EventProducer",
    "PermanentError",
    "RetryPolicy",
    "create_topics",
    "decode_event",
    "list_topics",
    "registry",
]

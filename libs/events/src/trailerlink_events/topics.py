"""The topic registry (proto/topics.yaml), as code.

Code refers to topics through the constants below; the registry file is the single
source of truth for names, partitions, retention and which message each carries. An
import-time check fails loudly if a constant names a topic the registry lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

Site = Literal["trailer", "central"]
ANY_MESSAGE = "any"


@dataclass(frozen=True)
class Topic:
    """One topic's registry entry."""

    name: str
    site: Site
    message: str
    key: str
    partitions: int
    retention_ms: int
    cleanup_policy: str
    description: str

    @property
    def is_dead_letter(self) -> bool:
        return self.message == ANY_MESSAGE

    def kafka_configs(self) -> dict[str, str]:
        """Topic-level configs for creation (admin client, Strimzi KafkaTopic)."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


def _load_registry_text() -> str:
    try:
        return (resources.files("trailerlink_events._generated") / "topics.yaml").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "trailerlink_events is not generated: run `make gen` (scripts/gen_proto.py)"
        ) from exc


@cache
def registry() -> dict[str, Topic]:
    """All topics by name."""
    raw: dict[str, Any] = yaml.safe_load(_load_registry_text())
    topics = [Topic(**entry) for entry in raw["topics"]]
    by_name = {t.name: t for t in topics}
    if len(by_name) != len(topics):
        raise RuntimeError("proto/topics.yaml names a topic twice")
    return by_name


def topic(name: str) -> Topic:
    """The registry entry for ``name``; KeyError for an unknown topic."""
    return registry()[name]


def topics_for_site(site: Site) -> list[Topic]:
    """Topics that exist on a trailer broker or on the central cluster."""
    return [t for t in registry().values() if t.site == site]


def dead_letter_topic(site: Site) -> str:
    """The dead-letter topic of a site."""
    (dlq,) = [t.name for t in topics_for_site(site) if t.is_dead_letter]
    return dlq


# --- names used by code ----------------------------------------------------------
OBJECT_RECEIVED = "trailerlink.trailer.object-received.v1"
OBJECT_SEALED = "trailerlink.trailer.object-sealed.v1"
OBJECT_DELIVERED = "trailerlink.trailer.object-delivered.v1"
OBJECT_FAILED = "trailerlink.trailer.object-failed.v1"
WORKLIST_CHANGED = "trailerlink.trailer.worklist-changed.v1"
PROCEDURE_STEP = "trailerlink.trailer.procedure-step.v1"
DEMOGRAPHICS_CORRECTION = "trailerlink.trailer.demographics-correction.v1"
HEARTBEAT = "trailerlink.trailer.heartbeat.v1"
TRAILER_DEAD_LETTER = "trailerlink.trailer.dead-letter.v1"

CENTRAL_UPLOAD_COMPLETED = "trailerlink.central.upload-completed.v1"
CENTRAL_OBJECT_DELIVERED = "trailerlink.central.object-delivered.v1"
CENTRAL_OBJECT_FAILED = "trailerlink.central.object-failed.v1"
CENTRAL_PROCEDURE_STEP = "trailerlink.central.procedure-step.v1"
CENTRAL_OBJECT_RECEIVED = "trailerlink.central.object-received.v1"
CENTRAL_HEARTBEAT = "trailerlink.central.heartbeat.v1"
CENTRAL_DEAD_LETTER = "trailerlink.central.dead-letter.v1"

_unknown = {
    value
    for key, value in dict(globals()).items()
    if key.isupper() and isinstance(value, str) and value.startswith("trailerlink.")
} - set(registry())
if _unknown:
    raise RuntimeError(f"topic constants missing from proto/topics.yaml: {sorted(_unknown)}")

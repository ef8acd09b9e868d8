"""The tus ``Upload-Metadata`` an uplink sends, parsed and validated strictly.

The keys, their encoding and the ingest's strict parsing are the wire contract's
(:mod:`trailerlink_events.wire`, shared with the uplink); this module names them for the
ingest's code.
"""

from __future__ import annotations

from trailerlink_events.wire import MetadataError, UploadMetadata, parse_upload_metadata

__all__ = ["MetadataError", "UploadMetadata", "parse_upload_metadata"]

"""trailerlink ingest: central resumable-upload server, verification and PACS forwarding."""

__version__ = "0.1.0"

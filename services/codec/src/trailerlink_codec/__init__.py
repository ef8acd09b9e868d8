"""trailerlink codec: lossless compression and AES-256-GCM sealing for the data centre."""

__version__ = "0.1.0"

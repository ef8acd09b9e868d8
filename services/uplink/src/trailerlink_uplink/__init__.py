"""trailerlink uplink: store-and-forward sender over the WAN (tus)."""

__version__ = "0.1.0"

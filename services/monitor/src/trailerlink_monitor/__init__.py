"""trailerlink monitor: trailer agent and fleet monitor."""

__version__ = "0.1.0"

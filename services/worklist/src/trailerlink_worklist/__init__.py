"""trailerlink worklist: MWL/MPPS proxy to NBSS with an offline cache."""

__version__ = "0.1.0"

"""Streaming authenticated encryption shared by the spool (at rest) and sealed objects."""

"""Harnesses that start real peers for development, tests and the demo (dev-only)."""

"""What every ``trailerlinkctl`` command prints: tables and colours for people, one JSON
document with ``--json`` for scripts, and the error report that goes with a non-zero exit
code (the codes are :mod:`trailerlink_ctl.client`'s)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime

from trailerlink_ctl.client import CtlError


def colour(code: str, text: str) -> str:
    """``text`` in the ANSI colour ``code``, on a terminal and unless ``NO_COLOR`` is set."""
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    return f"\033[{code}m{text}\033[0m"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart, sized to the cells as they show (colour
    codes take no width)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(strip_colour(r[i])) for r in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in cells:
        lines.append(
            "  ".join(
                c + " " * (w - len(strip_colour(c))) for c, w in zip(row, widths, strict=True)
            )
        )
    return "\n".join(lines)


def strip_colour(text: str) -> str:
    """``text`` without ANSI colour codes."""
    return re.sub(r"\033\[[0-9;]*m", "", text)


def human_bytes(n: object) -> str:
    """A byte count in decimal units (``12.3 kB``); ``-`` when not a number."""
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def human_age(seconds: object) -> str:
    """A duration as ``45s``, ``12m`` or ``3h07m``; ``-`` when not a number."""
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def human_time(epoch: object) -> str:
    """Epoch seconds as a local ISO 8601 time; ``-`` when not a number."""
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def emit(args: argparse.Namespace, document: object, human: Callable[[], str]) -> None:
    """``document`` as JSON with ``--json``, else what ``human()`` makes of it."""
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(human())


def emit_error(args: argparse.Namespace, exc: CtlError) -> int:
    """Report a failed command (also on stdout as JSON with ``--json``); its exit code."""
    if args.json:
        print(json.dumps({"error": str(exc), "exit_code": exc.code}, sort_keys=True))
    print(f"trailerlinkctl: {exc}", file=sys.stderr)
    return exc.code

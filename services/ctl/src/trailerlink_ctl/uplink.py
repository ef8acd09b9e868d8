"""`trailerlinkctl uplink status|pause|resume|cap`: an operator's hold on a trailer's
sending, through the uplink's admin API; it overrides the bandwidth schedule until
resumed or ``--until``."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from typing import Any

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.output import emit, human_bytes, human_time

_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(b|bit|bps|b/s|bit/s)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


def parse_rate(text: str) -> int:
    """A rate as bytes per second: ``250000``, ``250kB``, ``2Mbit``, ``1.5MB/s``.

    Bare numbers and ``B`` are bytes/s; ``bit``/``bps`` are bits/s; k/M/G are decimal.
    """
    match = _RATE.match(text.strip())
    if not match:
        raise ValueError(f"malformed rate {text!r}: use e.g. 250000, 250kB, 2Mbit")
    number = float(match.group(1))
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    unit = (match.group(3) or "").lower()
    bits = unit.startswith("bit") or unit == "bps"
    rate = int(number * scale / (8 if bits else 1))
    if rate <= 0:
        raise ValueError(f"rate {text!r} must be positive (use `uplink resume` to lift a cap)")
    return rate


def parse_until(text: str, now: datetime | None = None) -> float:
    """``--until`` as epoch seconds: a duration (``30m``, ``2h``), a local ``HH:MM`` (the
    next one) or an ISO 8601 date-time. Must be in the future."""
    now = now or datetime.now().astimezone()
    text = text.strip()
    duration = _DURATION.match(text)
    if duration:
        seconds = (
            int(duration.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration.group(2)]
        )
        when = now + timedelta(seconds=seconds)
    elif re.match(r"^\d{1,2}:\d{2}$", text):
        hours, minutes = (int(p) for p in text.split(":"))
        if hours > 23 or minutes > 59:
            raise ValueError(f"malformed time {text!r}")
        when = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        if when <= now:
            when += timedelta(days=1)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"malformed time {text!r}: use 30m, 2h, 18:00 or 2026-11-28T18:00"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()
    if when <= now:
        raise ValueError(f"--until {text!r} is in the past")
    return when.timestamp()


def _uplink_human(doc: dict[str, Any]) -> str:
    lines = [
        f"paused            {'yes' if doc['paused'] else 'no'}"
        + (f" until {human_time(doc['paused_until'])}" if doc.get("paused_until") else "")
    ]
    cap = doc.get("cap_bytes_per_second")
    lines.append(
        "operator cap      "
        + (f"{human_bytes(cap)}/s" if cap else "none")
        + (f" until {human_time(doc['cap_until'])}" if cap and doc.get("cap_until") else "")
    )
    sched = doc["scheduled_cap_bytes_per_second"]
    eff = doc["effective_cap_bytes_per_second"]
    lines.append("scheduled cap     " + (f"{human_bytes(sched)}/s" if sched else "uncapped"))
    lines.append(
        "in force          "
        + ("paused" if doc["paused"] else f"{human_bytes(eff)}/s" if eff else "uncapped")
    )
    return "\n".join(lines)


def cmd_uplink(args: argparse.Namespace) -> int:
    api = Api(args.uplink_url, args.token_file, what="uplink")
    body: dict[str, object] = {}
    until = None
    if getattr(args, "until", None):
        try:
            until = parse_until(args.until)
        except ValueError as exc:
            raise CtlError(str(exc), USAGE) from None
    if args.uplink_cmd == "status":
        doc = api.request("GET", "/v1/admin/uplink", admin=True)
    elif args.uplink_cmd == "pause":
        doc = api.request("POST", "/v1/admin/uplink/pause", admin=True, json={"until": until})
    elif args.uplink_cmd == "resume":
        doc = api.request("POST", "/v1/admin/uplink/resume", admin=True, json={})
    else:
        try:
            body = {"bytes_per_second": parse_rate(args.rate), "until": until}
        except ValueError as exc:
            raise CtlError(str(exc), USAGE) from None
        doc = api.request("POST", "/v1/admin/uplink/cap", admin=True, json=body)
    emit(args, doc, lambda: _uplink_human(doc))
    return OK

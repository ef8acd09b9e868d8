"""`trailerlinkctl status [TRAILER]`: the fleet's (or one trailer's) state, from the
fleet monitor's heartbeats."""

from __future__ import annotations

import argparse
from typing import Any

from trailerlink_ctl.client import NOT_FOUND, OK, Api, CtlError
from trailerlink_ctl.output import colour, emit, human_age, human_bytes, table


def _trailer_state(t: dict[str, Any]) -> str:
    if "last_heartbeat_at" not in t:
        return colour("31", "never seen")
    age = t.get("heartbeat_age_seconds") or 0
    if age > 300:
        return colour("31", f"silent {human_age(age)}")
    if t.get("link_state") == "down":
        return colour("33", "link down")
    if t.get("failed_objects") or t.get("dead_letters"):
        # Before the canary: a failing canary often only echoes these, and they name why.
        return colour("31", "failures")
    if t.get("uplink_paused"):
        # Its link reads "up" and its canary fails: because an operator asked it to wait.
        return colour("33", "paused")
    if t.get("canary_ok") is False:
        return colour("33", "canary failing")
    return colour("32", "ok")


def _uplink_hold(t: dict[str, Any]) -> str:
    """The operator's hold on a trailer's uplink, as its heartbeat reports it."""
    if "uplink_paused" not in t:
        return "-"
    if t["uplink_paused"]:
        return "paused"
    cap = t.get("uplink_operator_cap_bytes_per_second") or 0
    return f"capped {human_bytes(cap)}/s" if cap else "sending"


def cmd_status(args: argparse.Namespace) -> int:
    doc = Api(args.monitor_url, args.token_file, what="fleet monitor").request(
        "GET", "/v1/trailers"
    )
    trailers = doc["trailers"]
    if args.trailer:
        trailers = [t for t in trailers if t["trailer_id"] == args.trailer]
        if not trailers:
            raise CtlError(
                f"unknown trailer {args.trailer!r}: not expected and never reported", NOT_FOUND
            )
    out = {"trailers": trailers}

    def human() -> str:
        rows = []
        for t in trailers:
            disk = f"{human_bytes(t['disk_free_bytes'])} free" if "disk_free_bytes" in t else "-"
            rows.append(
                [
                    t["trailer_id"],
                    _trailer_state(t),
                    human_age(t.get("heartbeat_age_seconds")),
                    t.get("backlog_objects", "-"),
                    human_bytes(t.get("backlog_bytes")),
                    human_age(t.get("oldest_unsent_age_seconds")),
                    t.get("link_state", "-"),
                    _uplink_hold(t),
                    f"{human_bytes(t.get('link_goodput_bytes_per_second'))}/s",
                    disk,
                    {True: "ok", False: "FAIL"}.get(t.get("canary_ok"), "-"),
                    t.get("failed_objects", "-"),
                    t.get("dead_letters", "-"),
                ]
            )
        text = table(
            [
                "TRAILER",
                "STATE",
                "HEARTBEAT",
                "BACKLOG",
                "BYTES",
                "OLDEST",
                "LINK",
                "UPLINK",
                "GOODPUT",
                "DISK",
                "CANARY",
                "FAILED",
                "DEAD LETTERS",
            ],
            rows,
        )
        if args.trailer and trailers[0].get("versions"):
            text += "\nversions: " + ", ".join(
                f"{k} {v}" for k, v in sorted(trailers[0]["versions"].items())
            )
        return text

    emit(args, out, human)
    return OK

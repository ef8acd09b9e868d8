"""`trailerlinkctl`: the support desk's and ops' commands.

Every command talks HTTP to a service (never to Kafka, SQLite or files), prints a table
for people or, with ``--json``, one JSON document for scripts (shapes in the README),
and exits with a code from :mod:`trailerlink_ctl.client`.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from trailerlink_ctl import __version__
from trailerlink_ctl.client import (
    CONFLICT,
    FAILED,
    NOT_FOUND,
    OK,
    USAGE,
    Api,
    CtlError,
)
from trailerlink_ctl.keys import add_keys_parser
from trailerlink_ctl.output import (
    colour,
    emit,
    emit_error,
    human_age,
    human_bytes,
    human_time,
    table,
)
from trailerlink_ctl.worklist import add_parser as add_worklist_parser

_ID = re.compile(r"^\d+:\d+$")
_TRAILER = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_UID = re.compile(r"^[0-9.]{1,64}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(b|bit|bps|b/s|bit/s)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


# --- parsing of values ------------------------------------------------------------------

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
        seconds = int(duration.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[
            duration.group(2)]
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
                f"malformed time {text!r}: use 30m, 2h, 18:00 or 2026-11-28T18:00") from None
        if when.tzinfo is None:
            when = when.astimezone()
    if when <= now:
        raise ValueError(f"--until {text!r} is in the past")
    return when.timestamp()


# --- commands -----------------------------------------------------------------------------

def _monitor(args: argparse.Namespace) -> Api:
    return Api(args.monitor_url, args.token_file, what="monitor")


def _uplink(args: argparse.Namespace) -> Api:
    return Api(args.uplink_url, args.token_file, what="uplink")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    doc = _monitor(args).request("GET", "/v1/admin/dlq", admin=True,
                                 params={"include_done": str(args.all).lower(),
                                         "limit": args.limit})
    emit(args, doc, lambda: f"{doc['topic']}: {len(doc['entries'])} entries\n" + table(
        ["ID", "STATUS", "SOURCE", "GROUP", "ATTEMPTS", "FAILED AT", "REASON"],
        [[e["id"], e["status"], e["source_topic"], e["consumer_group"], e["attempts"],
          e["failed_at"], (e["reason"] or "")[:60]] for e in doc["entries"]]))
    return OK


def cmd_dlq_show(args: argparse.Namespace) -> int:
    _check_ids([args.id])
    doc = _monitor(args).request("GET", f"/v1/admin/dlq/{args.id}", admin=True)

    def human() -> str:
        lines = [f"{k:16} {doc[k]}" for k in (
            "id", "topic", "status", "key", "event_type", "source_topic", "source_partition",
            "source_offset", "consumer_group", "attempts", "failed_at", "value_bytes", "reason")]
        for action in doc.get("actions") or []:
            lines.append(f"{action['action']:16} by {action['actor']} at "
                         f"{human_time(action['at'])}: {action['reason']}")
        return "\n".join(lines)

    emit(args, doc, human)
    return OK


def _check_ids(ids: Sequence[str]) -> None:
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise CtlError(f"dead-letter ids are <partition>:<offset>, not {', '.join(bad)}", USAGE)


def _dlq_act(args: argparse.Namespace, action: str) -> int:
    _check_ids(args.ids)
    api = _monitor(args)
    # Every id must exist (and be actionable) before anything is done: a typo changes nothing.
    for entry_id in args.ids:
        entry = api.request("GET", f"/v1/admin/dlq/{entry_id}", admin=True)
        if entry["status"] == "discarded":
            raise CtlError(f"dead letter {entry_id} was discarded already; nothing done",
                           CONFLICT)
    results: list[dict[str, object]] = []
    code = OK
    for entry_id in args.ids:
        try:
            done = api.request("POST", f"/v1/admin/dlq/{entry_id}/{action}", admin=True,
                               json={"reason": args.reason or ""})
            results.append({"ok": True, **done})
        except CtlError as exc:
            results.append({"ok": False, "id": entry_id, "error": str(exc)})
            code = FAILED
    emit(args, {"results": results}, lambda: "\n".join(
        f"{r['id']}: {r['action']} by {r['actor']}" if r["ok"] else f"{r['id']}: {r['error']}"
        for r in results))
    return code


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    return _dlq_act(args, "replay")


def cmd_dlq_discard(args: argparse.Namespace) -> int:
    if not args.reason or not args.reason.strip():
        raise CtlError("discard needs --reason TEXT", USAGE)
    return _dlq_act(args, "discard")


def _uplink_human(doc: dict[str, Any]) -> str:
    lines = [f"paused            {'yes' if doc['paused'] else 'no'}"
             + (f" until {human_time(doc['paused_until'])}" if doc.get("paused_until") else "")]
    cap = doc.get("cap_bytes_per_second")
    lines.append("operator cap      " + (f"{human_bytes(cap)}/s" if cap else "none")
                 + (f" until {human_time(doc['cap_until'])}" if cap and doc.get("cap_until")
                    else ""))
    sched = doc["scheduled_cap_bytes_per_second"]
    eff = doc["effective_cap_bytes_per_second"]
    lines.append("scheduled cap     " + (f"{human_bytes(sched)}/s" if sched else "uncapped"))
    lines.append("in force          " + ("paused" if doc["paused"] else
                                         f"{human_bytes(eff)}/s" if eff else "uncapped"))
    return "\n".join(lines)


def cmd_uplink(args: argparse.Namespace) -> int:
    api = _uplink(args)
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
        "GET", "/v1/trailers")
    trailers = doc["trailers"]
    if args.trailer:
        trailers = [t for t in trailers if t["trailer_id"] == args.trailer]
        if not trailers:
            raise CtlError(f"unknown trailer {args.trailer!r}: not expected and never reported",
                           NOT_FOUND)
    out = {"trailers": trailers}

    def human() -> str:
        rows = []
        for t in trailers:
            disk = (f"{human_bytes(t['disk_free_bytes'])} free" if "disk_free_bytes" in t
                    else "-")
            rows.append([t["trailer_id"], _trailer_state(t),
                         human_age(t.get("heartbeat_age_seconds")),
                         t.get("backlog_objects", "-"), human_bytes(t.get("backlog_bytes")),
                         human_age(t.get("oldest_unsent_age_seconds")),
                         t.get("link_state", "-"), _uplink_hold(t),
                         f"{human_bytes(t.get('link_goodput_bytes_per_second'))}/s", disk,
                         {True: "ok", False: "FAIL"}.get(t.get("canary_ok"), "-"),
                         t.get("failed_objects", "-"), t.get("dead_letters", "-")])
        text = table(["TRAILER", "STATE", "HEARTBEAT", "BACKLOG", "BYTES", "OLDEST",
                       "LINK", "UPLINK", "GOODPUT", "DISK", "CANARY", "FAILED",
                       "DEAD LETTERS"], rows)
        if args.trailer and trailers[0].get("versions"):
            text += "\nversions: " + ", ".join(
                f"{k} {v}" for k, v in sorted(trailers[0]["versions"].items()))
        return text

    emit(args, out, human)
    return OK


def cmd_trace(args: argparse.Namespace) -> int:
    uid = args.study or args.sop_uid
    if not uid or (args.study and args.sop_uid):
        raise CtlError("give either SOP_UID or --study STUDY_UID", USAGE)
    if not _UID.match(uid):
        raise CtlError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64)", USAGE)
    kind = "studies" if args.study else "instances"
    doc = Api(args.monitor_url, args.token_file, what="fleet monitor").request(
        "GET", f"/v1/audit/{kind}/{uid}")
    steps = sorted(doc["journey"], key=lambda s: (s["at"], s["sop_instance_uid"]))
    doc["journey"] = steps
    emit(args, doc, lambda: table(
        ["AT", "STAGE", "SERVICE", "TRAILER", "SOP INSTANCE UID", "DETAIL"],
        [[human_time(s["at"]), s["stage"], s["service"], s["trailer_id"], s["sop_instance_uid"],
          s["detail"]] for s in steps]))
    return OK


def _in(seconds: float) -> str:
    return f"overdue {human_age(-seconds)}" if seconds <= 0 else f"in {human_age(seconds)}"


def cmd_completeness(args: argparse.Namespace) -> int:
    if args.trailer and not _TRAILER.match(args.trailer):
        raise CtlError(f"trailer name {args.trailer!r} must be a DNS label (a-z, 0-9, '-')",
                       USAGE)
    if args.limit < 1:
        raise CtlError("--limit must be at least 1", USAGE)
    api = Api(args.monitor_url, args.token_file, what="fleet monitor")
    params: dict[str, object] = {"limit": args.limit}
    if args.trailer:
        params["trailer_id"] = args.trailer
    doc = api.request("GET", "/v1/completeness", params=params)
    if args.trailer and not doc["studies"]:
        known = {t["trailer_id"] for t in api.request("GET", "/v1/trailers")["trailers"]}
        if args.trailer not in known:
            raise CtlError(f"unknown trailer {args.trailer!r}: not expected, never reported "
                           "and no images listed", NOT_FOUND)

    def human() -> str:
        if not doc["studies"]:
            return ("every image an MPPS listed as taken is in PACS"
                    + (f" for {args.trailer}" if args.trailer else ""))
        current = time.time()
        trailers = table(["TRAILER", "MISSING", "PENDING"],
                          [[t["trailer_id"], t["missing"], t["pending"]]
                           for t in doc["trailers"]])
        studies = table(
            ["TRAILER", "STUDY INSTANCE UID", "MISSING", "PENDING", "ON TRAILER",
             "AT DATA CENTRE", "NOT RECEIVED", "TAKEN", "DEADLINE"],
            [[s["trailer_id"], s["study_instance_uid"], s["missing"], s["pending"],
              s["on_trailer"], s["at_data_centre"], s["not_received"], human_time(s["listed_at"]),
              _in(s["due_at"] - current)] for s in doc["studies"]])
        return f"{trailers}\n\n{studies}"

    emit(args, doc, human)
    return OK


def _ingest(args: argparse.Namespace) -> Api:
    return Api(args.ingest_url, args.token_file, what="ingest")


def secret_manifest(doc: dict[str, Any], namespace: str) -> str:
    """The trailer chart's client-certificate Secret (``client-tls``) for ``doc``."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return "\n".join([
        "apiVersion: v1", "kind: Secret", "metadata:",
        "  name: trailerlink-client-tls", f"  namespace: {namespace}",
        f"  labels: {{app.kubernetes.io/part-of: trailerlink, trailerlink/trailer-id: "
        f"{doc['trailer_id']}}}",
        "type: kubernetes.io/tls", "data:",
        f"  tls.crt: {b64(doc['certificate_pem'])}",
        f"  tls.key: {b64(doc['private_key_pem'])}",
        f"  ca.crt: {b64(doc['ca_pem'])}", ""])


def cmd_trailer(args: argparse.Namespace) -> int:
    if not _TRAILER.match(args.name):
        raise CtlError(f"trailer name {args.name!r} must be a DNS label (a-z, 0-9, '-')", USAGE)
    api = _ingest(args)
    if args.trailer_cmd == "enrol":
        doc = api.request("POST", f"/v1/admin/trailers/{args.name}/enrol", admin=True)
        manifest = secret_manifest(doc, args.namespace)
        out = {"trailer_id": doc["trailer_id"], "serial": doc["serial"],
               "not_after": doc["not_after"], "secret_manifest": manifest}
        emit(args, out, lambda: manifest.rstrip("\n"))
    else:
        doc = api.request("POST", f"/v1/admin/trailers/{args.name}/revoke", admin=True)
        emit(args, doc, lambda: f"{doc['trailer_id']}: revoked")
    return OK


def cmd_resend(args: argparse.Namespace) -> int:
    uid = args.study.strip()
    if not _UID.match(uid) or not re.match(r"^[0-9]+(\.[0-9]+)*$", uid):
        raise CtlError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64)", USAGE)
    if args.cancel:
        doc = _uplink(args).request("POST", "/v1/admin/resend/cancel", admin=True,
                                    json={"study_uid": uid, "reason": args.reason or ""})
        emit(args, doc, lambda: f"study {doc['study_uid']}: resend of {doc['count']} objects "
              f"cancelled by {doc['cancelled_by']}"
              + (f"; {len(doc['already_sent'])} already sent will still get their receipt"
                 if doc["already_sent"] else ""))
        return OK
    doc = _uplink(args).request("POST", "/v1/admin/resend", admin=True,
                                json={"study_uid": uid, "reason": args.reason or ""})
    emit(args, doc, lambda: f"study {doc['study_uid']}: {doc['count']} objects "
          f"({human_bytes(doc['bytes'])}) queued again by {doc['requested_by']}\n" + table(
              ["SOP INSTANCE UID", "SIZE", "KEY ID", "DATASET SHA-256"],
              [[o["sop_instance_uid"], human_bytes(o["sealed_size"]), o["key_id"],
                o["dataset_sha256"][:16] + "…"] for o in doc["objects"]]))
    return OK


# --- argument parsing -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="one JSON document on stdout (shapes in the README)")
    common.add_argument("--token-file", default=argparse.SUPPRESS,
                        help="admin token file (default: $TRAILERLINKCTL_TOKEN_FILE)")
    common.add_argument("--monitor-url", default=argparse.SUPPRESS,
                        help="monitor: the fleet monitor for status/trace, the site's monitor "
                        "for dlq (default: $TRAILERLINKCTL_MONITOR_URL or "
                        "http://127.0.0.1:9106)")
    common.add_argument("--ingest-url", default=argparse.SUPPRESS,
                        help="the data centre ingest's HTTP port (default: "
                        "$TRAILERLINKCTL_INGEST_URL or http://127.0.0.1:9104)")
    common.add_argument("--uplink-url", default=argparse.SUPPRESS,
                        help="the trailer's uplink (default: $TRAILERLINKCTL_UPLINK_URL or "
                        "http://127.0.0.1:9103)")

    parser = argparse.ArgumentParser(
        prog="trailerlinkctl", parents=[common],
        description="Operate trailerlink: fleet status, traces, completeness, dead letters, the "
        "uplink, resends, "
        "trailer certificates. "
        "Exit codes: 0 ok, 1 some operations failed, 2 bad arguments, 3 not found, "
        "4 missing or refused credentials, 5 service unreachable or failing, 6 conflict.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", parents=[common], help="fleet or one trailer's state",
                       description="Last heartbeat, backlog, oldest unsent, goodput, disk, "
                       "canary (and versions for one trailer), from the fleet monitor.")
    p.add_argument("trailer", nargs="?", metavar="TRAILER", help="one trailer id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("trace", parents=[common], help="an object's or a study's journey",
                       description="Every hop of an image (or of a study's images) with "
                       "times, from the fleet monitor's audit: taken (MPPS), received (the "
                       "gateway's own time), on_trailer (not yet sent, with its age), "
                       "uploaded, in_pacs or failed.")
    p.add_argument("sop_uid", nargs="?", metavar="SOP_UID", help="SOP Instance UID")
    p.add_argument("--study", metavar="STUDY_UID", help="Study Instance UID instead")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("completeness", parents=[common],
                       help="images taken but not in PACS, by trailer and study",
                       description="Images an MPPS listed as taken that are not in PACS: "
                       "per trailer, missing (past the deadline) and pending (within it); "
                       "per study, the same and where they are: on the trailer (the "
                       "gateway has them, not yet sent), at the data centre (uploaded, not "
                       "yet in PACS) or not received (no gateway receipt has reached the "
                       "data centre). From the fleet monitor.")
    p.add_argument("trailer", nargs="?", metavar="TRAILER", help="one trailer id")
    p.add_argument("--limit", type=int, default=1000, help="at most this many studies (1000)")
    p.set_defaults(func=cmd_completeness)

    dlq = sub.add_parser("dlq", parents=[common], help="a site's dead letters",
                         description="Dead letters of the site whose monitor --monitor-url "
                         "names (agent: the trailer's, fleet: the data centre's). Replays and "
                         "discards are audited (who, when, why).")
    dsub = dlq.add_subparsers(dest="dlq_cmd", required=True, metavar="ACTION")
    p = dsub.add_parser("list", parents=[common], help="pending dead letters")
    p.add_argument("--all", action="store_true", help="also replayed and discarded ones")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    p.set_defaults(func=cmd_dlq_list)
    p = dsub.add_parser("show", parents=[common], help="one dead letter and its audit trail")
    p.add_argument("id", metavar="ID", help="<partition>:<offset>")
    p.set_defaults(func=cmd_dlq_show)
    p = dsub.add_parser("replay", parents=[common],
                        help="publish dead letters to their source topic again")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--reason", default="", help="why (recorded)")
    p.set_defaults(func=cmd_dlq_replay)
    p = dsub.add_parser("discard", parents=[common], help="give dead letters up, with a reason")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--reason", required=True, help="why (recorded; required)")
    p.set_defaults(func=cmd_dlq_discard)

    up = sub.add_parser("uplink", parents=[common], help="pause, resume or cap the uplink",
                        description="Operator control of a trailer's sending; overrides the "
                        "configured bandwidth schedule until resumed or --until.")
    usub = up.add_subparsers(dest="uplink_cmd", required=True, metavar="ACTION")
    p = usub.add_parser("status", parents=[common], help="pause and caps in force")
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser("pause", parents=[common], help="stop sending")
    p.add_argument("--until", metavar="TIME", help="resume by itself: 30m, 2h, 18:00, ISO 8601")
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser("resume", parents=[common],
                        help="lift the operator's pause and cap (the schedule applies)")
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser("cap", parents=[common], help="cap the sending rate")
    p.add_argument("rate", metavar="RATE", help="bytes/s, or with a unit: 250kB, 2Mbit")
    p.add_argument("--until", metavar="TIME", help="lift by itself: 30m, 2h, 18:00, ISO 8601")
    p.set_defaults(func=cmd_uplink)
    tr = sub.add_parser("trailer", parents=[common], help="enrol or revoke a trailer",
                        description="Certificates and the ingest's access list.")
    tsub = tr.add_subparsers(dest="trailer_cmd", required=True, metavar="ACTION")
    p = tsub.add_parser("enrol", parents=[common],
                        help="issue a certificate, allow-list it, print the Secret manifest")
    p.add_argument("name", metavar="NAME", help="trailer id (DNS label)")
    p.add_argument("--namespace", default="trailerlink", help="of the Secret (trailerlink)")
    p.set_defaults(func=cmd_trailer)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a trailer at the ingest")
    p.add_argument("name", metavar="NAME", help="trailer id")
    p.set_defaults(func=cmd_trailer)

    add_worklist_parser(sub, common)

    p = sub.add_parser("resend", parents=[common], help="send a delivered study again",
                       description="Queue a study from the trailer's spool (still within "
                       "retention) for upload again, e.g. after a PACS restore. The ingest "
                       "does not store an object twice: same SOP Instance UID and SHA-256 "
                       "give a repeated receipt. A study sealed for a retired key is refused "
                       "(exit 6): re-send it from the modality. Asks the uplink "
                       "(--uplink-url); audited.")
    p.add_argument("--study", required=True, metavar="STUDY_UID", help="Study Instance UID")
    p.add_argument("--reason", default="", metavar="TEXT",
                   help="why (logged at the uplink; no patient data)")
    p.add_argument("--cancel", action="store_true",
                   help="take back a resend of the study: objects not yet sent return to "
                   "their state before it (already sent ones still get their receipt)")
    p.set_defaults(func=cmd_resend)

    add_keys_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.token_file = getattr(args, "token_file", None) or os.environ.get(
        "TRAILERLINKCTL_TOKEN_FILE")
    args.monitor_url = getattr(args, "monitor_url", None) or os.environ.get(
        "TRAILERLINKCTL_MONITOR_URL", "http://127.0.0.1:9106")
    args.ingest_url = getattr(args, "ingest_url", None) or os.environ.get(
        "TRAILERLINKCTL_INGEST_URL", "http://127.0.0.1:9104")
    args.uplink_url = getattr(args, "uplink_url", None) or os.environ.get(
        "TRAILERLINKCTL_UPLINK_URL", "http://127.0.0.1:9103")
    try:
        code = int(args.func(args))
    except CtlError as exc:
        code = emit_error(args, exc)
    sys.stdout.flush()
    return code


def run() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run()

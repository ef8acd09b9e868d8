"""`trailerlinkctl`: the support desk's and ops' commands.

Every command talks HTTP to a service (never to Kafka, SQLite or files), prints a table
for people or, with ``--json``, one JSON document for scripts (shapes in the README),
and exits with a code from :mod:`trailerlink_ctl.client`.

This module is the parser and the dispatch (and ``trailerlinkctl``'s entry point); each
command group lives in its own module, what they print in :mod:`trailerlink_ctl.output`.
Nothing in the package imports this module but ``__main__``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from trailerlink_ctl import __version__
from trailerlink_ctl.client import CtlError
from trailerlink_ctl.completeness import cmd_completeness
from trailerlink_ctl.dlq import cmd_dlq_discard, cmd_dlq_list, cmd_dlq_replay, cmd_dlq_show
from trailerlink_ctl.keys import add_keys_parser
from trailerlink_ctl.output import emit_error
from trailerlink_ctl.resend import cmd_resend
from trailerlink_ctl.status import cmd_status
from trailerlink_ctl.trace import cmd_trace
from trailerlink_ctl.trailer import cmd_trailer
from trailerlink_ctl.uplink import cmd_uplink
from trailerlink_ctl.worklist import add_parser as add_worklist_parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="one JSON document on stdout (shapes in the README)",
    )
    common.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        help="admin token file (default: $TRAILERLINKCTL_TOKEN_FILE)",
    )
    common.add_argument(
        "--monitor-url",
        default=argparse.SUPPRESS,
        help="monitor: the fleet monitor for status/trace, the site's monitor "
        "for dlq (default: $TRAILERLINKCTL_MONITOR_URL or "
        "http://127.0.0.1:9106)",
    )
    common.add_argument(
        "--ingest-url",
        default=argparse.SUPPRESS,
        help="the data centre ingest's HTTP port (default: "
        "$TRAILERLINKCTL_INGEST_URL or http://127.0.0.1:9104)",
    )
    common.add_argument(
        "--uplink-url",
        default=argparse.SUPPRESS,
        help="the trailer's uplink (default: $TRAILERLINKCTL_UPLINK_URL or http://127.0.0.1:9103)",
    )

    parser = argparse.ArgumentParser(
        prog="trailerlinkctl",
        parents=[common],
        description="Operate trailerlink: fleet status, traces, completeness, dead letters, the "
        "uplink, resends, "
        "trailer certificates. "
        "Exit codes: 0 ok, 1 some operations failed, 2 bad arguments, 3 not found, "
        "4 missing or refused credentials, 5 service unreachable or failing, 6 conflict.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "status",
        parents=[common],
        help="fleet or one trailer's state",
        description="Last heartbeat, backlog, oldest unsent, goodput, disk, "
        "canary (and versions for one trailer), from the fleet monitor.",
    )
    p.add_argument("trailer", nargs="?", metavar="TRAILER", help="one trailer id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "trace",
        parents=[common],
        help="an object's or a study's journey",
        description="Every hop of an image (or of a study's images) with "
        "times, from the fleet monitor's audit: taken (MPPS), received (the "
        "gateway's own time), on_trailer (not yet sent, with its age), "
        "uploaded, in_pacs or failed.",
    )
    p.add_argument("sop_uid", nargs="?", metavar="SOP_UID", help="SOP Instance UID")
    p.add_argument("--study", metavar="STUDY_UID", help="Study Instance UID instead")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "completeness",
        parents=[common],
        help="images taken but not in PACS, by trailer and study",
        description="Images an MPPS listed as taken that are not in PACS: "
        "per trailer, missing (past the deadline) and pending (within it); "
        "per study, the same and where they are: on the trailer (the "
        "gateway has them, not yet sent), at the data centre (uploaded, not "
        "yet in PACS) or not received (no gateway receipt has reached the "
        "data centre). From the fleet monitor.",
    )
    p.add_argument("trailer", nargs="?", metavar="TRAILER", help="one trailer id")
    p.add_argument("--limit", type=int, default=1000, help="at most this many studies (1000)")
    p.set_defaults(func=cmd_completeness)

    dlq = sub.add_parser(
        "dlq",
        parents=[common],
        help="a site's dead letters",
        description="Dead letters of the site whose monitor --monitor-url "
        "names (agent: the trailer's, fleet: the data centre's). Replays and "
        "discards are audited (who, when, why).",
    )
    dsub = dlq.add_subparsers(dest="dlq_cmd", required=True, metavar="ACTION")
    p = dsub.add_parser("list", parents=[common], help="pending dead letters")
    p.add_argument("--all", action="store_true", help="also replayed and discarded ones")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    p.set_defaults(func=cmd_dlq_list)
    p = dsub.add_parser("show", parents=[common], help="one dead letter and its audit trail")
    p.add_argument("id", metavar="ID", help="<partition>:<offset>")
    p.set_defaults(func=cmd_dlq_show)
    p = dsub.add_parser(
        "replay", parents=[common], help="publish dead letters to their source topic again"
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--reason", default="", help="why (recorded)")
    p.set_defaults(func=cmd_dlq_replay)
    p = dsub.add_parser("discard", parents=[common], help="give dead letters up, with a reason")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--reason", required=True, help="why (recorded; required)")
    p.set_defaults(func=cmd_dlq_discard)

    up = sub.add_parser(
        "uplink",
        parents=[common],
        help="pause, resume or cap the uplink",
        description="Operator control of a trailer's sending; overrides the "
        "configured bandwidth schedule until resumed or --until.",
    )
    usub = up.add_subparsers(dest="uplink_cmd", required=True, metavar="ACTION")
    p = usub.add_parser("status", parents=[common], help="pause and caps in force")
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser("pause", parents=[common], help="stop sending")
    p.add_argument("--until", metavar="TIME", help="resume by itself: 30m, 2h, 18:00, ISO 8601")
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser(
        "resume", parents=[common], help="lift the operator's pause and cap (the schedule applies)"
    )
    p.set_defaults(func=cmd_uplink)
    p = usub.add_parser("cap", parents=[common], help="cap the sending rate")
    p.add_argument("rate", metavar="RATE", help="bytes/s, or with a unit: 250kB, 2Mbit")
    p.add_argument("--until", metavar="TIME", help="lift by itself: 30m, 2h, 18:00, ISO 8601")
    p.set_defaults(func=cmd_uplink)
    tr = sub.add_parser(
        "trailer",
        parents=[common],
        help="enrol or revoke a trailer",
        description="Certificates and the ingest's access list.",
    )
    tsub = tr.add_subparsers(dest="trailer_cmd", required=True, metavar="ACTION")
    p = tsub.add_parser(
        "enrol",
        parents=[common],
        help="issue a certificate, allow-list it, print the Secret manifest",
    )
    p.add_argument("name", metavar="NAME", help="trailer id (DNS label)")
    p.add_argument("--namespace", default="trailerlink", help="of the Secret (trailerlink)")
    p.set_defaults(func=cmd_trailer)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a trailer at the ingest")
    p.add_argument("name", metavar="NAME", help="trailer id")
    p.set_defaults(func=cmd_trailer)

    add_worklist_parser(sub, common)

    p = sub.add_parser(
        "resend",
        parents=[common],
        help="send a delivered study again",
        description="Queue a study from the trailer's spool (still within "
        "retention) for upload again, e.g. after a PACS restore. The ingest "
        "does not store an object twice: same SOP Instance UID and SHA-256 "
        "give a repeated receipt. A study sealed for a retired key is refused "
        "(exit 6): re-send it from the modality. Asks the uplink "
        "(--uplink-url); audited.",
    )
    p.add_argument("--study", required=True, metavar="STUDY_UID", help="Study Instance UID")
    p.add_argument(
        "--reason", default="", metavar="TEXT", help="why (logged at the uplink; no patient data)"
    )
    p.add_argument(
        "--cancel",
        action="store_true",
        help="take back a resend of the study: objects not yet sent return to "
        "their state before it (already sent ones still get their receipt)",
    )
    p.set_defaults(func=cmd_resend)

    add_keys_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.token_file = getattr(args, "token_file", None) or os.environ.get(
        "TRAILERLINKCTL_TOKEN_FILE"
    )
    args.monitor_url = getattr(args, "monitor_url", None) or os.environ.get(
        "TRAILERLINKCTL_MONITOR_URL", "http://127.0.0.1:9106"
    )
    args.ingest_url = getattr(args, "ingest_url", None) or os.environ.get(
        "TRAILERLINKCTL_INGEST_URL", "http://127.0.0.1:9104"
    )
    args.uplink_url = getattr(args, "uplink_url", None) or os.environ.get(
        "TRAILERLINKCTL_UPLINK_URL", "http://127.0.0.1:9103"
    )
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

"""`trailerlinkctl dlq list|show|replay|discard`: a site's dead letters, through the
admin API of the monitor ``--monitor-url`` names (the trailer's or the data centre's).
Replays and discards are audited there (who, when, why)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from trailerlink_ctl.client import CONFLICT, FAILED, OK, USAGE, Api, CtlError
from trailerlink_ctl.output import emit, human_time, table

_ID = re.compile(r"^\d+:\d+$")


def _monitor(args: argparse.Namespace) -> Api:
    return Api(args.monitor_url, args.token_file, what="monitor")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    doc = _monitor(args).request(
        "GET",
        "/v1/admin/dlq",
        admin=True,
        params={"include_done": str(args.all).lower(), "limit": args.limit},
    )
    emit(
        args,
        doc,
        lambda: (
            f"{doc['topic']}: {len(doc['entries'])} entries\n"
            + table(
                ["ID", "STATUS", "SOURCE", "GROUP", "ATTEMPTS", "FAILED AT", "REASON"],
                [
                    [
                        e["id"],
                        e["status"],
                        e["source_topic"],
                        e["consumer_group"],
                        e["attempts"],
                        e["failed_at"],
                        (e["reason"] or "")[:60],
                    ]
                    for e in doc["entries"]
                ],
            )
        ),
    )
    return OK


def cmd_dlq_show(args: argparse.Namespace) -> int:
    _check_ids([args.id])
    doc = _monitor(args).request("GET", f"/v1/admin/dlq/{args.id}", admin=True)

    def human() -> str:
        lines = [
            f"{k:16} {doc[k]}"
            for k in (
                "id",
                "topic",
                "status",
                "key",
                "event_type",
                "source_topic",
                "source_partition",
                "source_offset",
                "consumer_group",
                "attempts",
                "failed_at",
                "value_bytes",
                "reason",
            )
        ]
        for action in doc.get("actions") or []:
            lines.append(
                f"{action['action']:16} by {action['actor']} at "
                f"{human_time(action['at'])}: {action['reason']}"
            )
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
            raise CtlError(f"dead letter {entry_id} was discarded already; nothing done", CONFLICT)
    results: list[dict[str, object]] = []
    code = OK
    for entry_id in args.ids:
        try:
            done = api.request(
                "POST",
                f"/v1/admin/dlq/{entry_id}/{action}",
                admin=True,
                json={"reason": args.reason or ""},
            )
            results.append({"ok": True, **done})
        except CtlError as exc:
            results.append({"ok": False, "id": entry_id, "error": str(exc)})
            code = FAILED
    emit(
        args,
        {"results": results},
        lambda: "\n".join(
            f"{r['id']}: {r['action']} by {r['actor']}" if r["ok"] else f"{r['id']}: {r['error']}"
            for r in results
        ),
    )
    return code


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    return _dlq_act(args, "replay")


def cmd_dlq_discard(args: argparse.Namespace) -> int:
    if not args.reason or not args.reason.strip():
        raise CtlError("discard needs --reason TEXT", USAGE)
    return _dlq_act(args, "discard")

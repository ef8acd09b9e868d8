"""`trailerlinkctl keys status|rotate|retire`: the data centre's sealing keys, through
the ingest's admin API (``/v1/admin/keys``; docs/adr/0004-sealing-key-rotation.md).

Rotate makes a new key current at the ingest; trailers fetch its public key with their
next key poll and seal new objects for it. The old private key stays until nothing
sealed with it is outstanding; `keys status` says what still needs each key, and
`keys retire` deletes one only when nothing does (exit 6 otherwise).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.output import colour, emit, human_time, table

_KEY_ID = re.compile(r"^dc-[0-9a-f]{16}$")


def _api(args: argparse.Namespace) -> Api:
    return Api(args.ingest_url, args.token_file, what="ingest")


def _status_human(doc: dict[str, Any]) -> str:
    rows = []
    for k in doc["keys"]:
        out = k["outstanding"]
        state = (
            colour("32", "current")
            if k["current"]
            else colour("33", "retirable")
            if k["retirable"]
            else "needed"
        )
        rows.append(
            [
                k["key_id"],
                state,
                human_time(k["created_at"]),
                k["public_key_fingerprint"][:16],
                out["uploads_in_progress"] + out["uploads_unverified"],
                out["trailers_unsent"],
                k.get("unresendable_if_retired", "-"),
            ]
        )
    lines = [
        table(
            [
                "KEY ID",
                "STATE",
                "CREATED",
                "FINGERPRINT",
                "AT INGEST",
                "UNSENT ON TRAILERS",
                "RESENDABLE",
            ],
            rows,
        )
    ]
    for k in doc["keys"]:
        if not k["current"] and k["blockers"]:
            lines.append(f"{k['key_id']} still needed: " + "; ".join(k["blockers"]))
    return "\n".join(lines)


def cmd_keys(args: argparse.Namespace) -> int:
    api = _api(args)
    if args.keys_cmd == "status":
        doc = api.request("GET", "/v1/admin/keys", admin=True)
        emit(args, doc, lambda: _status_human(doc))
    elif args.keys_cmd == "rotate":
        doc = api.request("POST", "/v1/admin/keys/rotate", admin=True)
        emit(
            args,
            doc,
            lambda: (
                f"new current sealing key {doc['key_id']} "
                f"(fingerprint {doc['public_key_fingerprint'][:16]}…); "
                f"{doc['previous_key_id'] or 'no key'} kept until nothing sealed with it is "
                "outstanding (see `keys status`)"
            ),
        )
    else:
        if not _KEY_ID.match(args.key_id):
            raise CtlError(
                f"{args.key_id!r} is not a key id (dc- and 16 lower-case hex digits)", USAGE
            )
        doc = api.request("POST", f"/v1/admin/keys/{args.key_id}/retire", admin=True)
        emit(
            args,
            doc,
            lambda: (
                f"{doc['key_id']}: private key deleted (retired); "
                f"{doc.get('unresendable_spool_copies', 0)} spool copies on trailers sealed "
                "with it can no longer be resent (`resend` refuses them)"
            ),
        )
    return OK


def add_keys_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``keys`` under the top-level sub-parsers."""
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="the data centre's sealing keys",
        description="Rotate the data centre's sealing key, see what still "
        "needs each key (uploads at the ingest, objects trailers report "
        "unsent), retire old ones. Talks to the ingest (--ingest-url); "
        "every change is audited.",
    )
    ksub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    p = ksub.add_parser("status", parents=[common], help="every key and what still needs it")
    p.set_defaults(func=cmd_keys)
    p = ksub.add_parser(
        "rotate", parents=[common], help="create a new key and make it current (trailers follow)"
    )
    p.set_defaults(func=cmd_keys)
    p = ksub.add_parser(
        "retire",
        parents=[common],
        help="delete an old private key (refused while anything needs it)",
    )
    p.add_argument("key_id", metavar="KEY_ID", help="dc-… key id from `keys status`")
    p.set_defaults(func=cmd_keys)

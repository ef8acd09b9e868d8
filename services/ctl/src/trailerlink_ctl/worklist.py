"""`trailerlinkctl worklist show`: what the modality on a trailer would see right now.

Reads the trailer worklist's admin API (``/v1/admin/worklist``), which answers from the
same cache as the modality's C-FIND. Names and birth dates are hidden and patient ids
masked unless ``--show-names`` is given; the worklist audits that request (operator,
time, day; not the names).
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import date
from typing import Any

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.output import emit, human_age, table

DEFAULT_URL = "http://127.0.0.1:9105"
_DAY = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def parse_date(text: str) -> str | None:
    """``--date`` as ``YYYY-MM-DD``; None for ``today`` (the trailer's today, which the
    worklist knows in its own time zone). ``CtlError(USAGE)`` for anything else."""
    text = text.strip()
    if text.lower() == "today":
        return None
    match = _DAY.match(text)
    if match:
        try:
            return date(*(int(g) for g in match.groups())).isoformat()
        except ValueError:
            pass  # no such day (2026-02-30)
    raise CtlError(f"malformed date {text!r}: use YYYY-MM-DD (e.g. 2026-11-28) or today", USAGE)


def _human(doc: dict[str, Any]) -> str:
    link = {True: "up", False: "DOWN", None: "-"}[doc.get("upstream_up")]
    head = (
        f"{doc['trailer_id'] or '-'} site {doc['site_code'] or '-'} {doc['date']}: "
        f"{len(doc['steps'])} steps; cache age {human_age(doc.get('cache_age_seconds'))}; "
        f"upstream {link}"
        + ("" if doc["names_shown"] else "; names hidden (--show-names, audited)")
    )
    rows = [
        [
            s["scheduled_time"],
            s["accession_number"],
            s["scheduled_procedure_step_id"],
            s["patient_name"] if doc["names_shown"] else "(hidden)",
            s["patient_id"],
            s["birth_date"] or "-",
            s["sex"] or "-",
            s["sps_status"],
            s["station_ae_title"],
            s["description"],
        ]
        for s in doc["steps"]
    ]
    return (
        head
        + "\n"
        + table(
            [
                "TIME",
                "ACCESSION",
                "SPS ID",
                "NAME",
                "PATIENT ID",
                "BIRTH",
                "SEX",
                "SPS STATUS",
                "STATION",
                "DESCRIPTION",
            ],
            rows,
        )
    )


def cmd_worklist_show(args: argparse.Namespace) -> int:
    day = parse_date(args.date) if args.date else None
    url = args.worklist_url or os.environ.get("TRAILERLINKCTL_WORKLIST_URL", DEFAULT_URL)
    params: dict[str, Any] = {"show_names": str(bool(args.show_names)).lower()}
    if day:
        params["date"] = day
    doc = Api(url, args.token_file, what="worklist").request(
        "GET", "/v1/admin/worklist", admin=True, params=params
    )
    emit(args, doc, lambda: _human(doc))
    return OK


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``worklist show`` on ``trailerlinkctl``'s subcommands."""
    wl = sub.add_parser(
        "worklist",
        parents=[common],
        help="a trailer's modality worklist",
        description="The trailer's worklist as its modality sees it, from "
        "the worklist service's admin API.",
    )
    wsub = wl.add_subparsers(dest="worklist_cmd", required=True, metavar="ACTION")
    p = wsub.add_parser(
        "show",
        parents=[common],
        help="the day's scheduled steps",
        description="A day's scheduled steps with the status the modality "
        "is shown. Names and birth dates hidden, patient ids masked, unless "
        "--show-names (audited by the worklist: who, when, which day).",
    )
    p.add_argument("--date", metavar="D", help="YYYY-MM-DD or today (default: the trailer's today)")
    p.add_argument(
        "--show-names",
        action="store_true",
        help="show names, patient ids and birth dates (audited)",
    )
    p.add_argument(
        "--worklist-url",
        default=None,
        help="the trailer's worklist HTTP port "
        f"(default: $TRAILERLINKCTL_WORKLIST_URL or {DEFAULT_URL})",
    )
    p.set_defaults(func=cmd_worklist_show)

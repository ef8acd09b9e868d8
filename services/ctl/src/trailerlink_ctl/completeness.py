"""`trailerlinkctl completeness [TRAILER]`: images an MPPS listed as taken that are not in
PACS, per trailer and per study, from the fleet monitor."""

from __future__ import annotations

import argparse
import time

from trailerlink_ctl.client import NOT_FOUND, OK, USAGE, Api, CtlError
from trailerlink_ctl.ids import TRAILER_ID
from trailerlink_ctl.output import emit, human_age, human_time, table


def _in(seconds: float) -> str:
    return f"overdue {human_age(-seconds)}" if seconds <= 0 else f"in {human_age(seconds)}"


def cmd_completeness(args: argparse.Namespace) -> int:
    if args.trailer and not TRAILER_ID.match(args.trailer):
        raise CtlError(f"trailer name {args.trailer!r} must be a DNS label (a-z, 0-9, '-')", USAGE)
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
            raise CtlError(
                f"unknown trailer {args.trailer!r}: not expected, never reported "
                "and no images listed",
                NOT_FOUND,
            )

    def human() -> str:
        if not doc["studies"]:
            return "every image an MPPS listed as taken is in PACS" + (
                f" for {args.trailer}" if args.trailer else ""
            )
        current = time.time()
        trailers = table(
            ["TRAILER", "MISSING", "PENDING"],
            [[t["trailer_id"], t["missing"], t["pending"]] for t in doc["trailers"]],
        )
        studies = table(
            [
                "TRAILER",
                "STUDY INSTANCE UID",
                "MISSING",
                "PENDING",
                "ON TRAILER",
                "AT DATA CENTRE",
                "NOT RECEIVED",
                "TAKEN",
                "DEADLINE",
            ],
            [
                [
                    s["trailer_id"],
                    s["study_instance_uid"],
                    s["missing"],
                    s["pending"],
                    s["on_trailer"],
                    s["at_data_centre"],
                    s["not_received"],
                    human_time(s["listed_at"]),
                    _in(s["due_at"] - current),
                ]
                for s in doc["studies"]
            ],
        )
        return f"{trailers}\n\n{studies}"

    emit(args, doc, human)
    return OK

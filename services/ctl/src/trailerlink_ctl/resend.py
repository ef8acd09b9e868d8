"""`trailerlinkctl resend --study STUDY_UID [--cancel]`: queue a delivered study from the
trailer's spool for upload again (or take that back), through the uplink's admin API."""

from __future__ import annotations

import argparse
import re

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.ids import DICOM_UID
from trailerlink_ctl.output import emit, human_bytes, table


def cmd_resend(args: argparse.Namespace) -> int:
    uid = args.study.strip()
    if not DICOM_UID.match(uid) or not re.match(r"^[0-9]+(\.[0-9]+)*$", uid):
        raise CtlError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64)", USAGE)
    uplink = Api(args.uplink_url, args.token_file, what="uplink")
    if args.cancel:
        doc = uplink.request(
            "POST",
            "/v1/admin/resend/cancel",
            admin=True,
            json={"study_uid": uid, "reason": args.reason or ""},
        )
        emit(
            args,
            doc,
            lambda: (
                f"study {doc['study_uid']}: resend of {doc['count']} objects "
                f"cancelled by {doc['cancelled_by']}"
                + (
                    f"; {len(doc['already_sent'])} already sent will still get their receipt"
                    if doc["already_sent"]
                    else ""
                )
            ),
        )
        return OK
    doc = uplink.request(
        "POST", "/v1/admin/resend", admin=True, json={"study_uid": uid, "reason": args.reason or ""}
    )
    emit(
        args,
        doc,
        lambda: (
            f"study {doc['study_uid']}: {doc['count']} objects "
            f"({human_bytes(doc['bytes'])}) queued again by {doc['requested_by']}\n"
            + table(
                ["SOP INSTANCE UID", "SIZE", "KEY ID", "DATASET SHA-256"],
                [
                    [
                        o["sop_instance_uid"],
                        human_bytes(o["sealed_size"]),
                        o["key_id"],
                        o["dataset_sha256"][:16] + "…",
                    ]
                    for o in doc["objects"]
                ],
            )
        ),
    )
    return OK

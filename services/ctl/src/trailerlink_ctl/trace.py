"""`trailerlinkctl trace SOP_UID | --study STUDY_UID`: an image's (or a study's images')
journey, from the fleet monitor's audit."""

from __future__ import annotations

import argparse

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.ids import DICOM_UID
from trailerlink_ctl.output import emit, human_time, table


def cmd_trace(args: argparse.Namespace) -> int:
    uid = args.study or args.sop_uid
    if not uid or (args.study and args.sop_uid):
        raise CtlError("give either SOP_UID or --study STUDY_UID", USAGE)
    if not DICOM_UID.match(uid):
        raise CtlError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64)", USAGE)
    kind = "studies" if args.study else "instances"
    doc = Api(args.monitor_url, args.token_file, what="fleet monitor").request(
        "GET", f"/v1/audit/{kind}/{uid}"
    )
    steps = sorted(doc["journey"], key=lambda s: (s["at"], s["sop_instance_uid"]))
    doc["journey"] = steps
    emit(
        args,
        doc,
        lambda: table(
            ["AT", "STAGE", "SERVICE", "TRAILER", "SOP INSTANCE UID", "DETAIL"],
            [
                [
                    human_time(s["at"]),
                    s["stage"],
                    s["service"],
                    s["trailer_id"],
                    s["sop_instance_uid"],
                    s["detail"],
                ]
                for s in steps
            ],
        ),
    )
    return OK

"""`trailerlinkctl trailer enrol|revoke NAME`: a trailer's client certificate and its
place on the ingest's access list, through the ingest's admin API."""

from __future__ import annotations

import argparse
import base64
from typing import Any

from trailerlink_ctl.client import OK, USAGE, Api, CtlError
from trailerlink_ctl.ids import TRAILER_ID
from trailerlink_ctl.output import emit


def secret_manifest(doc: dict[str, Any], namespace: str) -> str:
    """The trailer chart's client-certificate Secret (``client-tls``) for ``doc``."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return "\n".join(
        [
            "apiVersion: v1",
            "kind: Secret",
            "metadata:",
            "  name: trailerlink-client-tls",
            f"  namespace: {namespace}",
            f"  labels: {{app.kubernetes.io/part-of: trailerlink, trailerlink/trailer-id: "
            f"{doc['trailer_id']}}}",
            "type: kubernetes.io/tls",
            "data:",
            f"  tls.crt: {b64(doc['certificate_pem'])}",
            f"  tls.key: {b64(doc['private_key_pem'])}",
            f"  ca.crt: {b64(doc['ca_pem'])}",
            "",
        ]
    )


def cmd_trailer(args: argparse.Namespace) -> int:
    if not TRAILER_ID.match(args.name):
        raise CtlError(f"trailer name {args.name!r} must be a DNS label (a-z, 0-9, '-')", USAGE)
    api = Api(args.ingest_url, args.token_file, what="ingest")
    if args.trailer_cmd == "enrol":
        doc = api.request("POST", f"/v1/admin/trailers/{args.name}/enrol", admin=True)
        manifest = secret_manifest(doc, args.namespace)
        out = {
            "trailer_id": doc["trailer_id"],
            "serial": doc["serial"],
            "not_after": doc["not_after"],
            "secret_manifest": manifest,
        }
        emit(args, out, lambda: manifest.rstrip("\n"))
    else:
        doc = api.request("POST", f"/v1/admin/trailers/{args.name}/revoke", admin=True)
        emit(args, doc, lambda: f"{doc['trailer_id']}: revoked")
    return OK

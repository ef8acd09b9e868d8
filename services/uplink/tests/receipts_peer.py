"""A stand-in for the ingest's receipts endpoint (``GET /v1/receipts?after=<cursor>``),
answering in the wire contract's form (:mod:`trailerlink_events.wire`, as the ingest
does), for tests that run the uplink against tusd (which has no receipts). Tests add
receipts as the ingest would."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlparse

from trailerlink_events.wire import Receipt, encode_receipts_page


class ReceiptsPeer:
    def __init__(self) -> None:
        self.receipts: list[dict[str, object]] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                after = int(parse_qs(url.query).get("after", ["0"])[0] or 0)
                with peer._lock:
                    peer.requests.append(self.path)
                    rows = [r for r in peer.receipts if int(str(r["cursor"])) > after][:100]
                next_cursor = str(rows[-1]["cursor"]) if rows else str(after)
                body = json.dumps(
                    encode_receipts_page(rows, next_cursor, len(rows) == 100)
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/receipts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, outcome: str, sop: str, study: str, dataset_sha256: str, **extra: object) -> None:
        with self._lock:
            cursor = str(len(self.receipts) + 1)
            receipt = Receipt(
                cursor=cursor,
                upload_id=f"u{cursor}",
                sop_instance_uid=sop,
                study_instance_uid=study,
                dataset_sha256=dataset_sha256,
                outcome=outcome,
                stored_transfer_syntax_uid="1.2.840.10008.1.2.1",
                storage_committed=True,
                permanent=True,
                at=time.time(),
            )
            self.receipts.append({**receipt.to_json(), **extra})

    def __enter__(self) -> ReceiptsPeer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Ingest benchmarks (issue #5), each measured against its reference in the same run.

* ``ingest.verify_vs_decode``: unseal + decompress + verify (``open_sealed``: HPKE unwrap,
  AES-256-GCM chunks, JPEG-LS/zstd container, size and SHA-256 checks) of a sealed
  Hologic-size synthetic mammogram (3328 x 4096, 14 bits stored), in MB/s of original
  bytes on one core, against the same codec's bare decode of the very codestreams the
  container holds (captured from one ``open_sealed`` pass). Verification must decode the
  pixels, so the decoder is the floor; the ratio is what the rest of the path costs.
* ``ingest.concurrent_uploads``: one ingest process holds 200 slow uploads (each a PATCH
  trickling 1 KB/s over its own mTLS connection) while one fast upload of 96 MB runs;
  ratio = the fast upload's MB/s under that load / its MB/s alone. The ingest's RSS
  under load is in the notes (memory stays bounded: bodies stream to disk).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path

import requests
from trailerlink_ingest.devca import issue, make_ca
from trailerlink_ingest.metadata import UploadMetadata
from trailerlink_sealed import OpeningKey, OpeningKeyring, open_sealed, seal
from trailerlink_sealed.testdata import MGSpec, write_mg_file
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_ok
from trailerlink_testing.waiting import wait_until

from benchmarks import Benchmark, Row

WORK = Path(tempfile.gettempdir())
SLOW_UPLOADS = 200
SLOW_RATE = 1024  # bytes per second each
FAST_BYTES = 96 * 1024 * 1024


def _best_rate(fn, nbytes: int, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = max(best, nbytes / (time.perf_counter() - started) / 1e6)
    return best


def verify_vs_decode() -> Row:
    from trailerlink_sealed import codecs

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=WORK))
    try:
        key = OpeningKey.generate()
        original = work / "mg.dcm"
        write_mg_file(original, MGSpec(rows=4096, cols=3328, bits_stored=14, seed=3))
        sealed = work / "mg.sealed"
        result = seal(original, sealed, key.recipient)
        keyring = OpeningKeyring([key])
        size = original.stat().st_size

        def unseal_verify() -> None:
            for _ in open_sealed(sealed, keyring):
                pass

        # The codestreams the container holds, as the reader hands them to the decoder.
        captured: list[tuple[int, bytes]] = []
        bare_decode = codecs.decode

        def capture(codec: int, codestream: bytes | bytearray | memoryview):
            captured.append((codec, bytes(codestream)))
            return bare_decode(codec, codestream)

        codecs.decode = capture  # type: ignore[assignment]
        try:
            unseal_verify()
        finally:
            codecs.decode = bare_decode  # type: ignore[assignment]
        if not captured:
            raise RuntimeError("the sealed object holds no frame codestream")

        def decode_only() -> None:
            for codec, codestream in captured:
                bare_decode(codec, codestream)

        ours = _best_rate(unseal_verify, size)
        reference = _best_rate(decode_only, size)
        return Row(
            "ingest.verify_vs_decode",
            "unseal+decompress+verify MB/s/core vs bare decode of the same codestreams",
            round(ours, 1),
            round(reference, 1),
            "MB/s",
            ">=",
            0.8,
            f"{size / 1e6:.0f} MB synthetic MG sealed at {result.ratio:.2f}x "
            f"({result.codec}, the codec's default), {len(captured)} codestream(s); "
            "MB/s of original bytes, best of 3",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Env:
    def __init__(self, work: Path) -> None:
        ca = make_ca()
        ca.write(work / "ca.crt", work / "ca.key")
        issue(ca, "localhost", server=True, ip_addresses=["127.0.0.1"]).write(
            work / "server.crt", work / "server.key"
        )
        issue(ca, "trailer-bench").write(work / "client.crt", work / "client.key")
        self.key = OpeningKey.generate()
        keys = work / "keys"
        keys.mkdir()
        (keys / f"{self.key.key_id}.pem").write_bytes(self.key.to_pem())
        (work / "access.json").write_text(json.dumps({"allow": ["trailer-bench"]}))
        self.tus_port, self.http_port = free_port(), free_port()
        self.work = work
        self.env = {
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # tus needs no Kafka
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(self.http_port),
            "TRAILERLINK_TUS_HOST": "127.0.0.1",
            "TRAILERLINK_TUS_PORT": str(self.tus_port),
            "TRAILERLINK_DATA_DIR": str(work / "data"),
            "TRAILERLINK_STORAGE_DIR": str(work / "storage"),
            "TRAILERLINK_LEDGER_SQLITE_PATH": str(work / "ledger.sqlite3"),
            "TRAILERLINK_TLS_CERT_FILE": str(work / "server.crt"),
            "TRAILERLINK_TLS_KEY_FILE": str(work / "server.key"),
            "TRAILERLINK_TLS_CLIENT_CA_FILE": str(work / "ca.crt"),
            "TRAILERLINK_ACCESS_LIST_FILE": str(work / "access.json"),
            "TRAILERLINK_SEALING_KEYS_DIR": str(keys),
            "TRAILERLINK_MAX_CONCURRENT_UPLOADS": "1000",
            "TRAILERLINK_MAX_REQUESTS_PER_SECOND": "10000",
            "TRAILERLINK_REQUEST_BURST": "10000",
            "TRAILERLINK_LOG_LEVEL": "WARNING",
        }
        self.url = f"https://127.0.0.1:{self.tus_port}/files/"
        self.session = requests.Session()
        self.session.cert = (str(work / "client.crt"), str(work / "client.key"))
        self.session.verify = str(work / "ca.crt")
        self.session.headers["Tus-Resumable"] = "1.0.0"
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify

    def create(self, length: int) -> str:
        meta = UploadMetadata(
            sop_instance_uid=f"2.25.{int.from_bytes(os.urandom(12), 'big')}",
            study_instance_uid="2.25.1",
            dataset_sha256="0" * 64,
            sealed_size=length,
            key_id=self.key.key_id,
        )
        rsp = self.session.post(
            self.url,
            headers={"Upload-Length": str(length), "Upload-Metadata": meta.encode()},
            timeout=30,
        )
        rsp.raise_for_status()
        return rsp.headers["Location"]

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.work / "ca.crt"))
        context.load_cert_chain(str(self.work / "client.crt"), str(self.work / "client.key"))
        return context


def _fast_upload(env: _Env, blob: Path) -> None:
    location = env.create(FAST_BYTES)
    with open(blob, "rb") as f:
        rsp = env.session.patch(
            f"https://127.0.0.1:{env.tus_port}{location}",
            data=f,
            headers={
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(FAST_BYTES),
            },
            timeout=300,
        )
    rsp.raise_for_status()


async def _slow_upload(
    env: _Env, location: str, context: ssl.SSLContext, stop: asyncio.Event, connected: list[int]
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", env.tus_port, ssl=context)
    length = 1024 * 1024
    writer.write(
        (
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
    )
    connected.append(1)
    chunk = os.urandom(SLOW_RATE)
    while not stop.is_set():
        writer.write(chunk)
        await writer.drain()
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    writer.close()


def concurrent_uploads() -> Row:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=WORK))
    env = _Env(work)
    proc = ServiceProcess(
        [console_script("trailerlink-ingest")], env=env.env, log_path=work / "ingest.log"
    )
    blob = work / "blob"
    blob.write_bytes(os.urandom(FAST_BYTES))
    try:
        proc.start()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{env.http_port}/healthz"), 60, "ingest alive")
        wait_until(
            lambda: env.session.options(env.url, timeout=5).status_code == 204,
            60,
            "tus port serving",
        )
        solo = _best_rate(lambda: _fast_upload(env, blob), FAST_BYTES)
        locations = [env.create(1024 * 1024) for _ in range(SLOW_UPLOADS)]
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        connected: list[int] = []
        context = env.ssl_context()

        async def hold() -> None:
            await asyncio.gather(
                *(_slow_upload(env, loc, context, stop, connected) for loc in locations)
            )

        holder = threading.Thread(target=lambda: loop.run_until_complete(hold()), daemon=True)
        holder.start()
        wait_until(lambda: len(connected) == SLOW_UPLOADS, 120, "slow uploads connected")
        time.sleep(2)  # let every slow upload get a few 1 KB writes in (load, not a wait)
        loaded = _best_rate(lambda: _fast_upload(env, blob), FAST_BYTES)
        rss_mib = _rss_kib(proc.pid) / 1024
        loop.call_soon_threadsafe(stop.set)
        holder.join(30)
        return Row(
            "ingest.concurrent_uploads",
            f"fast 96 MB upload MB/s with {SLOW_UPLOADS} slow (1 KB/s) uploads held vs alone",
            round(loaded, 1),
            round(solo, 1),
            "MB/s",
            ">=",
            0.8,
            f"ingest RSS under load {rss_mib:.0f} MiB; {SLOW_UPLOADS} mTLS connections",
        )
    finally:
        proc.kill9()
        shutil.rmtree(work, ignore_errors=True)


BENCHMARKS = [
    Benchmark("ingest.verify_vs_decode", verify_vs_decode),
    Benchmark("ingest.concurrent_uploads", concurrent_uploads),
]

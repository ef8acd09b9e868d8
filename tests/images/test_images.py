"""What ops install: every service image, built here by `make images` (podman, the
repository's Dockerfile, a Debian-made base), runs as built — non-root, read-only root
filesystem, only its data volume writable — answers /healthz and /readyz against the
suite's real Kafka broker, and stops cleanly on SIGTERM.

Containers use the host network (never podman's bridge, which rewrites iptables) and
bind 127.0.0.1 only. Select these with ``-m images``; they build the images first
(cached: seconds when nothing changed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_sealed import OpeningKey
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import console_script, http_ok
from trailerlink_testing.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = ("gateway", "codec", "uplink", "worklist", "ingest", "monitor")
UID = 10001
CACHE = Path(os.environ.get("TRAILERLINK_CACHE", Path.home() / ".cache" / "trailerlink"))

pytestmark = [pytest.mark.images, pytest.mark.kafka]
# Folders of the data volume another service creates in a real deployment (the codec
# reads the gateway's spool on the trailer's shared volume).
SHARED_DIRS = {"codec": ("spool",)}


def _podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers" / "containers.conf")}
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """``make images``: service -> tag. No podman is a failure, not a skip: the suite
    installs it (scripts/system-packages.txt)."""
    assert shutil.which("podman"), "podman missing: make setup installs it"
    done = subprocess.run(
        [str(ROOT / "scripts" / "images.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, (
        f"make images failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    import tomllib

    version = tomllib.loads((ROOT / "services" / "gateway" / "pyproject.toml").read_text())[
        "project"
    ]["version"]
    return {s: f"localhost/trailerlink/{s}:{version}" for s in SERVICES}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the services read from Secrets: spool and worklist keys, sealing keys, a dev CA with the
    ingest's certificate and a trailer's, the access list, a fleet file. Readable by
    the image's user, as a Secret volume would be."""
    root = tmp_path_factory.mktemp("image-secrets")
    SpoolKey.generate().write_file(root / "spool.key")
    SpoolKey.generate().write_file(root / "worklist.key")  # the worklist cache's own key
    key = OpeningKey.generate()
    (root / "sealing-public").mkdir()
    (root / "sealing-public" / f"{key.key_id}.pem").write_bytes(key.recipient.to_pem())
    (root / "sealing-private").mkdir()
    (root / "sealing-private" / f"{key.key_id}.pem").write_bytes(key.to_pem())
    subprocess.run(
        [
            console_script("trailerlink-ingest"),
            "dev-ca",
            str(root / "pki"),
            "--trailer",
            "trailer-01",
            "--server-name",
            "localhost",
            "--server-ip",
            "127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    (root / "fleet.yaml").write_text("trailers: [trailer-01]\n")
    for path in [root, *root.rglob("*")]:
        os.chown(path, UID, UID)
    return root


def _env(service: str, kafka: str, ports: dict[str, int]) -> dict[str, str]:
    etc = "/etc/trailerlink/test"
    common = {
        "TRAILERLINK_HTTP_HOST": "127.0.0.1",
        "TRAILERLINK_HTTP_PORT": str(ports["http"]),
        "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "TRAILERLINK_TRAILER_ID": "trailer-01",
        "TRAILERLINK_KAFKA_CLIENT_ID": f"image-test-{service}",
        "TRAILERLINK_SHUTDOWN_GRACE_SECONDS": "5",
    }
    own = {
        "gateway": {
            "TRAILERLINK_DICOM_HOST": "127.0.0.1",
            "TRAILERLINK_DICOM_PORT": str(ports["other"]),
            "TRAILERLINK_DICOM_ALLOWED_PEERS": "MG1",
            "TRAILERLINK_SPOOL_KEY_FILE": f"{etc}/spool.key",
            "TRAILERLINK_SPOOL_MIN_FREE_BYTES": "1048576",
        },
        "codec": {
            "TRAILERLINK_SPOOL_KEY_FILE": f"{etc}/spool.key",
            "TRAILERLINK_SEALING_PUBLIC_KEYS": f"{etc}/sealing-public",
            "TRAILERLINK_CONSUMER_GROUP": f"codec-{uuid.uuid4().hex[:8]}",
        },
        "uplink": {
            "TRAILERLINK_INGEST_URL": "https://127.0.0.1:9",
            "TRAILERLINK_CLIENT_CERT_FILE": f"{etc}/pki/trailer-01.crt",
            "TRAILERLINK_CLIENT_KEY_FILE": f"{etc}/pki/trailer-01.key",
            "TRAILERLINK_CA_FILE": f"{etc}/pki/ca.crt",
            "TRAILERLINK_CONSUMER_GROUP": f"uplink-{uuid.uuid4().hex[:8]}",
        },
        "worklist": {
            "TRAILERLINK_DICOM_HOST": "127.0.0.1",
            "TRAILERLINK_DICOM_PORT": str(ports["other"]),
            "TRAILERLINK_UPSTREAM": "none",
            "TRAILERLINK_SITE_CODE": "TST01",
            "TRAILERLINK_STATION_AE_TITLES": "MG1",
            "TRAILERLINK_WORKLIST_KEY_FILE": f"{etc}/worklist.key",
        },
        "ingest": {
            "TRAILERLINK_TUS_HOST": "127.0.0.1",
            "TRAILERLINK_TUS_PORT": str(ports["other"]),
            "TRAILERLINK_STORAGE_DIR": "/var/lib/trailerlink/uploads",
            "TRAILERLINK_LEDGER_SQLITE_PATH": "/var/lib/trailerlink/ledger.sqlite3",
            "TRAILERLINK_TLS_CERT_FILE": f"{etc}/pki/server.crt",
            "TRAILERLINK_TLS_KEY_FILE": f"{etc}/pki/server.key",
            "TRAILERLINK_TLS_CLIENT_CA_FILE": f"{etc}/pki/ca.crt",
            "TRAILERLINK_ACCESS_LIST_FILE": f"{etc}/pki/access.json",
            "TRAILERLINK_SEALING_KEYS_DIR": f"{etc}/sealing-private",
            "TRAILERLINK_CONSUMER_GROUP": f"ingest-{uuid.uuid4().hex[:8]}",
        },
        "monitor": {
            "TRAILERLINK_MODE": "fleet",
            "TRAILERLINK_FLEET_FILE": f"{etc}/fleet.yaml",
            "TRAILERLINK_CONSUMER_GROUP": f"monitor-{uuid.uuid4().hex[:8]}",
        },
    }
    return {**common, **own[service]}


class _Container:
    def __init__(self, name: str) -> None:
        self.name = name

    def inspect(self) -> dict[str, object]:
        return json.loads(_podman("inspect", self.name).stdout)[0]

    def running(self) -> bool:
        state = self.inspect()["State"]
        return bool(state["Running"])  # type: ignore[index]

    def logs(self) -> str:
        done = _podman("logs", self.name, check=False)
        return done.stdout + done.stderr


@pytest.fixture
def run_image(tmp_path: Path, secrets: Path, kafka_bootstrap: str) -> Iterator[object]:
    started: list[_Container] = []

    def run(service: str, image: str) -> tuple[_Container, int]:
        data = tmp_path / f"{service}-data"
        data.mkdir()
        os.chown(data, UID, UID)
        for shared in SHARED_DIRS.get(service, ()):  # made by a neighbour on the trailer
            (data / shared).mkdir()
            os.chown(data / shared, UID, UID)
        ports = {"http": free_port(), "other": free_port()}
        name = f"tl-test-{service}-{uuid.uuid4().hex[:6]}"
        args = [
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--volume",
            f"{data}:/var/lib/trailerlink",
            "--volume",
            f"{secrets}:/etc/trailerlink/test:ro",
        ]
        for key, value in _env(service, kafka_bootstrap, ports).items():
            args += ["--env", f"{key}={value}"]
        _podman(*args, image)
        container = _Container(name)
        started.append(container)
        return container, ports["http"]

    yield run
    for container in started:
        _podman("rm", "--force", "--time", "5", container.name, check=False)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_read_only_as_non_root_answers_its_probes_and_stops_cleanly(
    service: str, images: dict[str, str], run_image
) -> None:
    container, http_port = run_image(service, images[service])
    config = container.inspect()
    assert config["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    assert config["Config"]["User"] == f"{UID}:{UID}"  # type: ignore[index]
    uid = _podman("exec", container.name, "python", "-c", "import os; print(os.getuid())")
    assert uid.stdout.strip() == str(UID)
    base = f"http://127.0.0.1:{http_port}"

    def ready() -> bool:
        if not container.running():
            raise AssertionError(f"{service} exited:\n{container.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as rsp:  # noqa: S310
                return rsp.status == 200
        except urllib.error.HTTPError as exc:  # 503 names the failing check
            raise AssertionError(f"{service} not ready: {exc.read()[:500]!r}") from None

    wait_until(lambda: http_ok(base + "/healthz") or ready(), 90, f"{service} alive")
    wait_until(ready, 90, f"{service} ready (its /readyz)", interval=0.5)
    # Nothing but the data volume and /tmp is writable.
    denied = _podman(
        "exec", container.name, "python", "-c", "open('/opt/trailerlink/venv/x', 'w')", check=False
    )
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    _podman("stop", "--time", "30", container.name, timeout=60)
    state = container.inspect()["State"]
    assert state["ExitCode"] == 0, container.logs()[-3000:]  # type: ignore[index]
    assert "service stopped" in container.logs()

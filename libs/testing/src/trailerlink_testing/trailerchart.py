"""The trailer chart on a :class:`~trailerlink_testing.realnode.RealNode`, as ops install
it: the namespace and Secrets first (docs/runbook.md, "Install a trailer"), then
``helm install --wait`` with the project's images, the uplink pointed at a
:class:`~trailerlink_testing.stack.CentralStack` on the node's address. Shared by the
real-node test and the ``cluster.real_node_study_seconds`` benchmark.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from typing import Any

import httpx

from trailerlink_testing.cluster import ROOT, Cluster, create_namespace
from trailerlink_testing.containers import image_for
from trailerlink_testing.dicom import SyntheticObject
from trailerlink_testing.kafka import KAFKA_VERSION
from trailerlink_testing.stack import CentralStack, parse_storescu
from trailerlink_testing.waiting import wait_until

NAMESPACE = "trailerlink"  # as docs/runbook.md installs it
RELEASE = "trailerlink"
GATEWAY_AE = "TRAILERLINK"


class InstallFailed(RuntimeError):
    """``helm install`` did not finish: helm's words and every pod's state."""


def _secret(name: str, data: dict[str, bytes], kind: str = "Opaque") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": kind,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _new_key() -> bytes:
    return base64.b64encode(secrets.token_bytes(32)) + b"\n"


def prepare_namespace(api: httpx.Client, central: CentralStack) -> None:
    """The namespace (Pod Security ``privileged`` enforced, since the gateway and the
    worklist bind hostPorts; ``restricted`` warned) and the Secrets the chart mounts:
    fresh spool and worklist keys, the data centre's sealing key, the trailer's client
    certificate and the CA of ``central`` (not the staff page's users: nothing here signs
    in to it)."""
    create_namespace(api, NAMESPACE, enforce="privileged")
    pki = central.pki
    sealing = {p.name: p.read_bytes() for p in central.sealing_public.glob("*.pem")}
    client_tls = {
        "tls.crt": (pki / f"{central.trailer_id}.crt").read_bytes(),
        "tls.key": (pki / f"{central.trailer_id}.key").read_bytes(),
    }
    for secret in (  # as the runbook makes them: keys are base64 text (head -c 32 | base64)
        _secret("trailerlink-spool-key", {"key": _new_key()}),
        _secret("trailerlink-worklist-key", {"key": _new_key()}),
        _secret("trailerlink-sealing-public-keys", sealing),
        _secret("trailerlink-client-tls", client_tls, kind="kubernetes.io/tls"),
        _secret("trailerlink-ca", {"ca.crt": (pki / "ca.crt").read_bytes()}),
    ):
        api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret).raise_for_status()


def pod_states(api: httpx.Client) -> str:
    """One line per pod of the namespace: phase and each container's state."""
    rsp = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
    lines = []
    for pod in rsp.json().get("items", []):
        statuses = pod.get("status", {}).get("containerStatuses") or []
        states = ", ".join(f"{s['name']}: {next(iter(s.get('state', {})), '?')}" for s in statuses)
        lines.append(f"{pod['metadata']['name']} {pod['status'].get('phase')} [{states}]")
    return "\n".join(lines)


def install(helm: str, cluster: Cluster, central: CentralStack, calling_ae: str) -> float:
    """``helm install --wait --wait-for-jobs`` of the trailer chart; the seconds it took.
    The gateway admits ``calling_ae``."""
    tag = image_for("trailerlink-gateway").rsplit(":", 1)[1]
    settings = {
        "trailerId": central.trailer_id,
        "image.registry": "localhost/trailerlink",
        "image.tag": tag,
        "kafka.image.repository": "localhost/trailerlink/kafka",
        "kafka.image.tag": KAFKA_VERSION,
        "uplink.ingestUrl": central.ingest_url,
        "gateway.allowedPeers": f"{{{calling_ae}}}",
        # The node's disk is this machine's, a few GiB free, not a trailer's 2 TB.
        "gateway.spoolMinFreeBytes": str(256 * 1024 * 1024),
        "persistence.spool.size": "2Gi",
        "kafka.persistence.size": "1Gi",
    }
    argv = [helm, "install", RELEASE, str(ROOT / "charts" / "trailer"), "-n", NAMESPACE]
    argv += ["--wait", "--wait-for-jobs", "--timeout", "8m"]
    for name, value in settings.items():
        argv += ["--set", f"{name}={value}"]
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, env=cluster.env(), timeout=600, check=False
    )
    if done.returncode != 0:
        raise InstallFailed(
            f"helm install failed:\n{done.stderr[-3000:]}\n{pod_states(cluster.client())}"
        )
    return time.monotonic() - started


def store_study(
    host: str, port: int, calling_ae: str, study: list[SyntheticObject], central: CentralStack
) -> float:
    """``storescu`` the study to the gateway at ``host:port``; the seconds from the first
    C-STORE until every image is in ``central``'s PACS."""
    started = time.monotonic()
    stored = subprocess.run(
        ["storescu", "-v", "-aet", calling_ae, "-aec", GATEWAY_AE, host, str(port)]
        + [str(o.path) for o in study],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # storescu exits 0 even when the gateway refuses a C-STORE: read each response.
    _acknowledged, refused = parse_storescu(stored.stdout + stored.stderr)
    if stored.returncode != 0 or refused:
        raise RuntimeError(
            f"storescu: {len(refused)} of {len(study)} not stored (exit {stored.returncode}):"
            f"\n{stored.stderr[-2000:]}"
        )
    wait_until(
        lambda: all(central.pacs.find_instance(o.sop_instance_uid) for o in study),
        600,
        f"the study's {len(study)} images in Orthanc",
        interval=0.1,
    )
    return time.monotonic() - started


__all__ = [
    "NAMESPACE",
    "RELEASE",
    "InstallFailed",
    "install",
    "pod_states",
    "prepare_namespace",
    "store_study",
]

"""The trailer on a real node: the trailer chart's pods run as containers (containerd,
runc, the kubelet, kube-proxy, CoreDNS; ``trailerlink_testing.realnode``) from the
project's images, and a study goes from ``storescu`` on the host into the gateway pod
through its hostPort, then gateway -> codec -> uplink (pods, with the chart's own Kafka
broker) -> the ingest and Orthanc on the host, and arrives byte-identical. Afterwards
the host is as it was: no KUBE-/CNI- iptables chain, bridge, veth, network namespace,
mount, cgroup or changed sysctl is left.

Needs root, podman and containerd (``make setup``); where they are missing it skips with
the reason, except in CI, where that is a failure.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chartkit import CHARTS, find_helm  # tests/charts, on sys.path by conftest
from trailerlink_testing.cluster import Cluster, ClusterUnavailable
from trailerlink_testing.containers import build_images
from trailerlink_testing.dicom import write_study
from trailerlink_testing.kafka import KAFKA_VERSION
from trailerlink_testing.realnode import NODE_IP, RealNode, host_changes, host_snapshot
from trailerlink_testing.stack import CentralStack
from trailerlink_testing.stack.modality import dataset_sha256
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.cluster_real

ROOT = Path(__file__).resolve().parents[2]
TRAILER_ID = "trailer-real-01"
NAMESPACE = "trailer"
RELEASE = "trailerlink"
CALLING_AE = "TLREALNODE"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + " — CI must run the trailer on a real node")
    pytest.skip(reason)


def _secret(name: str, data: dict[str, bytes], kind: str = "Opaque") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": kind,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _prepare_namespace(api: httpx.Client, central: CentralStack) -> None:
    """What ops create before installing (docs/runbook.md, "Install a trailer"): the
    namespace (Pod Security `privileged` enforced: hostPort; `restricted` warned) and the
    Secrets the chart mounts."""
    labels = {
        "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    rsp = api.post(
        "/api/v1/namespaces",
        json={
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": labels},
        },
    )
    assert rsp.status_code == 201, rsp.text
    pki = central.pki
    sealing = {p.name: p.read_bytes() for p in central.sealing_public.glob("*.pem")}
    for secret in (
        _secret("trailerlink-spool-key", {"key": secrets.token_bytes(32)}),
        _secret("trailerlink-worklist-key", {"key": secrets.token_bytes(32)}),
        _secret("trailerlink-sealing-public-keys", sealing),
        _secret(
            "trailerlink-client-tls",
            {
                "tls.crt": (pki / f"{TRAILER_ID}.crt").read_bytes(),
                "tls.key": (pki / f"{TRAILER_ID}.key").read_bytes(),
            },
            kind="kubernetes.io/tls",
        ),
        _secret("trailerlink-ca", {"ca.crt": (pki / "ca.crt").read_bytes()}),
    ):
        rsp = api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret)
        assert rsp.status_code == 201, rsp.text


def _pod_states(api: httpx.Client) -> str:
    rsp = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
    lines = []
    for pod in rsp.json().get("items", []):
        statuses = pod.get("status", {}).get("containerStatuses") or []
        states = ", ".join(f"{s['name']}: {next(iter(s.get('state', {})), '?')}" for s in statuses)
        lines.append(f"{pod['metadata']['name']} {pod['status'].get('phase')} [{states}]")
    return "\n".join(lines)


def _install(helm: str, cluster: Cluster, central: CentralStack, version: str) -> None:
    argv = [
        helm,
        "install",
        RELEASE,
        str(CHARTS / "trailer"),
        "--namespace",
        NAMESPACE,
        "--wait",
        "--wait-for-jobs",
        "--timeout",
        "8m",
        "--set",
        f"trailerId={TRAILER_ID}",
        "--set",
        "image.registry=localhost/trailerlink",
        "--set",
        f"image.tag={version}",
        "--set",
        "kafka.image.repository=localhost/trailerlink/kafka",
        "--set",
        f"kafka.image.tag={KAFKA_VERSION}",
        "--set",
        f"uplink.ingestUrl={central.ingest_url}",
        "--set",
        f"gateway.allowedPeers={{{CALLING_AE}}}",
        # The node's disk is this machine's: a few GiB free, not a trailer's 2 TB.
        "--set",
        "gateway.spoolMinFreeBytes=268435456",
        "--set",
        "persistence.spool.size=2Gi",
        "--set",
        "kafka.persistence.size=1Gi",
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=cluster.env(), timeout=600, check=False
    )
    if done.returncode != 0:
        pods = _pod_states(cluster.client())
        pytest.fail(f"helm install on the real node failed:\n{done.stderr[-3000:]}\n{pods}")


# On a fresh machine the first run builds the images (the JRE base by mmdebstrap) and the
# kubelet, kube-proxy and CoreDNS; later runs take about three minutes.
@pytest.mark.timeout(2400)
def test_a_study_stored_to_the_gateway_pod_reaches_pacs_byte_identical(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        _unavailable("a real node needs root (containerd, the kubelet, iptables)")
    for tool in ("podman", "containerd", "storescu"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is missing: run make setup")
    helm = find_helm()
    if helm is None:
        _unavailable("helm is not installed: run scripts/install-tools.sh")
    assert helm is not None
    build_images()
    done = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), "pause", "kafka"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version = build_version()

    before = host_snapshot()
    cluster = Cluster(tmp_path / "cluster", nodes=0)
    node = RealNode(cluster)
    central = CentralStack(tmp_path / "central", trailer_id=TRAILER_ID, tus_host=NODE_IP)
    try:
        try:
            cluster.start()
            node.start()
        except ClusterUnavailable as exc:
            _unavailable(str(exc))
        central.start()
        api = cluster.client()
        _prepare_namespace(api, central)
        _install(helm, cluster, central, version)

        study = write_study(tmp_path / "study", 4, patient=7, seed=11)
        started = time.monotonic()
        stored = subprocess.run(
            ["storescu", "-aet", CALLING_AE, "-aec", "TRAILERLINK", NODE_IP, "11112"]
            + [str(o.path) for o in study],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert stored.returncode == 0, stored.stderr[-2000:]
        expected = {o.sop_instance_uid: dataset_sha256(o.path.read_bytes()) for o in study}
        wait_until(
            lambda: all(central.pacs_dataset_sha256(sop) is not None for sop in expected),
            300,
            "the study's 4 images in Orthanc",
            interval=1.0,
        )
        elapsed = time.monotonic() - started
        found = {sop: central.pacs_dataset_sha256(sop) for sop in expected}
        assert found == expected
        print(f"real node: study stored to the gateway pod and in PACS in {elapsed:.1f} s")
    finally:
        node.stop()
        central.stop()
        cluster.stop()
    assert host_changes(before, node.directory) == []


def build_version() -> str:
    import tomllib

    project = tomllib.loads((ROOT / "services" / "gateway" / "pyproject.toml").read_text())
    return str(project["project"]["version"])

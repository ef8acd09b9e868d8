"""The trailer on a real node: the trailer chart's pods run as containers (containerd,
runc, the kubelet, kube-proxy, CoreDNS; ``trailerlink_testing.realnode``) from the
project's images, and a study goes from ``storescu`` on the host into the gateway pod
through its hostPort, then gateway -> codec -> uplink (pods, with the chart's own Kafka
broker, found through cluster DNS and a Service) -> the ingest and Orthanc on the host,
and arrives byte-identical. Afterwards the host is as it was: no KUBE-/CNI- iptables
chain, bridge, veth, network namespace, mount, cgroup or changed sysctl is left.

Needs root, podman and containerd (``make setup``); where they are missing it skips with
the reason, except in CI, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest
from trailerlink_testing import trailerchart
from trailerlink_testing.cluster import Cluster, ClusterUnavailable
from trailerlink_testing.dicom import write_study
from trailerlink_testing.realnode import (
    NODE_IP,
    RealNode,
    build_node_images,
    host_changes,
    host_snapshot,
)
from trailerlink_testing.stack import CentralStack
from trailerlink_testing.stack.modality import dataset_sha256

pytestmark = pytest.mark.cluster_real

TRAILER_ID = "trailer-real-01"
CALLING_AE = "TLREALNODE"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(reason + " — CI must run the trailer on a real node")
    pytest.skip(reason)


def _node_prerequisites() -> None:
    if os.geteuid() != 0:
        _unavailable("a real node needs root (containerd, the kubelet, iptables)")
    for tool in ("podman", "containerd", "storescu"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is missing: run make setup")
    build_node_images()


# On a fresh machine the first run builds the images (the JRE base by mmdebstrap) and the
# kubelet, kube-proxy and CoreDNS; later runs take about three minutes.
@pytest.mark.timeout(2400)
def test_a_study_stored_to_the_gateway_pod_reaches_pacs_byte_identical(
    tmp_path: Path, helm: str
) -> None:
    _node_prerequisites()
    before = host_snapshot()
    cluster = Cluster(tmp_path / "cluster", nodes=0)
    node = RealNode(cluster)
    central = CentralStack(tmp_path / "central", trailer_id=TRAILER_ID, tus_host=NODE_IP)
    with contextlib.ExitStack() as cleanup:  # each stop runs even if one before it fails
        cleanup.callback(cluster.stop)
        cleanup.callback(central.stop)
        cleanup.callback(node.stop)
        try:
            cluster.start()
            node.start()
        except ClusterUnavailable as exc:
            _unavailable(str(exc))
        central.start()
        trailerchart.prepare_namespace(cluster.client(), central)
        trailerchart.install(helm, cluster, central, CALLING_AE)

        study = write_study(tmp_path / "study", 4, patient=7, seed=11)
        # Through the gateway pod's hostPort on the node's address (the portmap plugin).
        trailerchart.store_study(NODE_IP, 11112, CALLING_AE, study, central)
        expected = {o.sop_instance_uid: dataset_sha256(o.path.read_bytes()) for o in study}
        assert {sop: central.pacs_dataset_sha256(sop) for sop in expected} == expected
    assert host_changes(before, node.directory) == []

"""Cluster benchmark: how long ops wait for `helm install --wait` of a trailer.

* ``cluster.trailer_install_seconds``: the trailer chart with its example values
  installed with ``--wait --wait-for-jobs`` on the project's single-machine Kubernetes
  (real API server, controllers and scheduler; kwok nodes, so no image is pulled and
  no process starts) against a 120 s budget. What it measures is the chart's own
  ordering: hooks, claims, rollouts and the topic Job, not container start-up.
* ``cluster.real_node_study_seconds``: a 4-view Hologic-size study from ``storescu`` to
  every image in Orthanc, with the trailer as the chart's pods on a real node
  (containerd, kubelet, kube-proxy; ``trailerlink_testing.realnode``), against the same
  study through the same services as host processes (``trailerlink_testing.stack``).
  The ingest and Orthanc are host processes in both. Two studies each; the mean.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trailerlink_testing import trailerchart
from trailerlink_testing.cluster import Cluster
from trailerlink_testing.dicom import HOLOGIC_COLUMNS, HOLOGIC_ROWS, write_study
from trailerlink_testing.realnode import NODE_IP, RealNode, build_node_images
from trailerlink_testing.stack import MODALITY_AE, CentralStack, TrailerStack, synthetic_day

from benchmarks import Benchmark, Row

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 120.0
STUDIES = 2

sys.path.insert(0, str(ROOT / "tests" / "charts"))
from chartkit import find_helm  # noqa: E402 - the chart tests' helm finder, one of it


def trailer_install_seconds() -> Row:
    helm = find_helm()
    if helm is None:
        raise RuntimeError("helm is not installed: run make setup")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, Cluster(Path(tmp)) as cluster:
        client = cluster.client()
        client.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trailer"}},
        ).raise_for_status()
        started = time.monotonic()
        subprocess.run(
            [
                helm,
                "install",
                "trailerlink",
                str(ROOT / "charts" / "trailer"),
                "-n",
                "trailer",
                "-f",
                str(ROOT / "charts" / "trailer" / "ci" / "example-values.yaml"),
                "--wait",
                "--wait-for-jobs",
                "--timeout",
                "10m",
            ],
            env=cluster.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
        seconds = time.monotonic() - started
    return Row(
        id="cluster.trailer_install_seconds",
        what="`helm install --wait --wait-for-jobs` of the trailer chart (example values) "
        "on the single-machine Kubernetes (kwok node) / 120 s",
        ours=seconds,
        reference=BUDGET_SECONDS,
        unit="s",
        goal_op="<=",
        goal=1.0,
        notes="real API server, controller-manager and scheduler; kwok marks pods Ready "
        "without starting containers, so image pulls and start-up are not in it",
    )


def _studies(directory: Path) -> list[list]:
    return [
        write_study(
            directory / f"study{i}", 4, rows=HOLOGIC_ROWS, columns=HOLOGIC_COLUMNS, seed=i * 4
        )
        for i in range(STUDIES)
    ]


def _on_real_node(work: Path, helm: str) -> tuple[list[float], float]:
    """Each study's seconds with the trailer's pods on a real node; the install's."""
    calling = "TLBENCH"
    with (
        Cluster(work / "cluster", nodes=0) as cluster,
        RealNode(cluster),
        CentralStack(work / "central", tus_host=NODE_IP) as central,
    ):
        trailerchart.prepare_namespace(cluster.client(), central)
        install = trailerchart.install(helm, cluster, central, calling)
        seconds = [
            trailerchart.store_study(NODE_IP, 11112, calling, study, central)
            for study in _studies(work / "node-studies")
        ]
    return seconds, install


def _on_processes(work: Path) -> list[float]:
    with (
        CentralStack(work / "central-p") as central,
        TrailerStack(work / "trailer-p", central, synthetic_day(1)) as trailer,
    ):
        return [
            trailerchart.store_study("127.0.0.1", trailer.gateway_port, MODALITY_AE, study, central)
            for study in _studies(work / "process-studies")
        ]


def real_node_study_seconds() -> Row:
    helm = find_helm()
    if helm is None:
        raise RuntimeError("helm is not installed: run make setup")
    build_node_images()
    with tempfile.TemporaryDirectory(prefix="bench-realnode-") as tmp:
        work = Path(tmp)
        on_node, install = _on_real_node(work, helm)
        on_processes = _on_processes(work)
    node_mean = sum(on_node) / len(on_node)
    process_mean = sum(on_processes) / len(on_processes)
    return Row(
        id="cluster.real_node_study_seconds",
        what="4-view Hologic-size study, storescu -> all in Orthanc: trailer chart's pods "
        "on a real node / the same services as processes",
        ours=node_mean,
        reference=process_mean,
        unit="s",
        goal_op="<=",
        goal=1.5,
        notes=f"node {', '.join(f'{s:.1f}' for s in on_node)} s; processes "
        f"{', '.join(f'{s:.1f}' for s in on_processes)} s; helm install --wait on the "
        f"node {install:.0f} s (images already in containerd)",
    )


BENCHMARKS = [
    Benchmark(id="cluster.trailer_install_seconds", run=trailer_install_seconds),
    Benchmark(id="cluster.real_node_study_seconds", run=real_node_study_seconds),
]

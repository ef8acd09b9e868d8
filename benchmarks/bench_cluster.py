"""Cluster benchmark: how long ops wait for `helm install --wait` of a trailer.

* ``cluster.trailer_install_seconds``: the trailer chart with its example values
  installed with ``--wait --wait-for-jobs`` on the project's single-machine Kubernetes
  (real API server, controllers and scheduler; kwok nodes, so no image is pulled and
  no process starts) against a 120 s budget. What it measures is the chart's own
  ordering: hooks, claims, rollouts and the topic Job, not container start-up.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trailerlink_testing.cluster import Cluster

from benchmarks import Benchmark, Row

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 120.0

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


BENCHMARKS = [Benchmark(id="cluster.trailer_install_seconds", run=trailer_install_seconds)]

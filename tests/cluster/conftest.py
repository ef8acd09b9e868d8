"""Fixtures of the cluster tests: one real API server for the session (kwok nodes).

The binaries are built by `make setup` (scripts/cluster-tools.sh, cached per version);
where they or helm are missing the tests skip with the reason, except in CI (CI=true),
where that is a failure: the charts must be installed on a real API server there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_testing.cluster import Cluster, ClusterUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))

from chartkit import HELM_VERSION, find_helm


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + " — CI must install the charts on a real API server")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        _unavailable(f"helm {HELM_VERSION} is not installed: run scripts/install-tools.sh")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    try:
        running = Cluster(directory).start()
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        yield running
    finally:
        running.stop()

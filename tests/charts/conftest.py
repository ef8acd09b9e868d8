"""Fixtures of the chart tests: real helm, each case rendered once per session.

helm comes from PATH or Go's bin directory, where scripts/install-tools.sh (run by
`make setup`) builds the pinned version. Where it is missing the tests skip with the
reason, except in CI (CI=true), where a missing helm is a failure: the charts must be
checked there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chartkit import HELM_VERSION, Renderer, find_helm


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        reason = (
            f"helm {HELM_VERSION} is not installed: run scripts/install-tools.sh "
            "(go install helm.sh/helm/v3/cmd/helm@" + HELM_VERSION + ")"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " — CI must check the charts")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def render(helm: str) -> Renderer:
    return Renderer(helm)

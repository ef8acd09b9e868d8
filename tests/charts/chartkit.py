"""Helpers of the chart tests: where things are, rendering with real helm, walking manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
CHART_NAMES = ("trailer", "central")
HELM_VERSION = "v3.22.0"
RELEASE = "trailerlink"
NAMESPACE = "trailerlink"
# The Kubernetes minor versions the charts are rendered for and validated against:
# K3s and data-centre clusters run one of these.
KUBE_VERSIONS = ("1.30.0", "1.33.0", "1.35.0")


def values_files(chart: str) -> list[str]:
    """ "" (the chart's defaults) plus every example values file in charts/<chart>/ci/."""
    return ["", *sorted(p.name for p in (CHARTS / chart / "ci").glob("*.yaml"))]


RENDER_CASES = [(chart, vf) for chart in CHART_NAMES for vf in values_files(chart)]


def find_helm() -> str | None:
    candidates = [shutil.which("helm")]
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidates.append(str(Path(gopath) / "bin" / "helm"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class Rendered:
    chart: str
    values_file: str
    kube_version: str
    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (doc,) = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        return doc

    @property
    def label(self) -> str:
        return f"{self.chart}[{self.values_file or 'defaults'}]@{self.kube_version}"


def helm_args(chart: str, values_file: str, kube_version: str) -> list[str]:
    args = [
        "template",
        RELEASE,
        str(CHARTS / chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ]
    if values_file:
        args += ["--values", str(CHARTS / chart / "ci" / values_file)]
    return args


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


class Renderer:
    """Renders each case once; tests share the result."""

    def __init__(self, helm: str) -> None:
        self.helm = helm
        self._cache: dict[tuple[str, str, str], Rendered] = {}

    def __call__(
        self, chart: str, values_file: str = "", kube_version: str = KUBE_VERSIONS[-1]
    ) -> Rendered:
        key = (chart, values_file, kube_version)
        if key not in self._cache:
            result = run_helm(self.helm, *helm_args(chart, values_file, kube_version))
            assert result.returncode == 0, f"helm template {key} failed:\n{result.stderr}"
            docs = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
            self._cache[key] = Rendered(chart, values_file, kube_version, docs)
        return self._cache[key]

    def all(self) -> list[Rendered]:
        return [self(c, vf, kv) for c, vf in RENDER_CASES for kv in KUBE_VERSIONS]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload, or None for other kinds."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads(rendered: Rendered) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, spec) for d in rendered.docs if (spec := pod_spec(d)) is not None]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())

"""Both charts on a real API server: install, upgrade, roll back and uninstall with
helm's --wait, for the defaults and every ci/ values file.

The server does what `helm template` cannot: admission (Pod Security `restricted`
where the chart allows it), RBAC, CRD schemas (prometheus-operator's real ones, Strimzi
stubs), hook Jobs that must finish, PVCs that must bind, LoadBalancer Services that
must get an address, Deployments and StatefulSets that must roll out. Pods run on kwok
nodes (no process starts): what is proved is that the objects are accepted, scheduled
and rolled out, not that the containers work (the image tests do that).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chartkit import CHARTS, values_files
from trailerlink_testing.cluster import Cluster, build_tools, create_namespace
from trailerlink_testing.waiting import wait_until

HERE = Path(__file__).resolve().parent
RELEASE = "trailerlink"
HOST_PORT = re.compile(r'hostPort \(container \\?"[^"\\]+\\?" uses hostPorts? [0-9, ]+\)')
INSTANCE = "app.kubernetes.io/instance"
CASES = [(chart, vf) for chart in ("trailer", "central") for vf in values_files(chart)]

# Namespaced collections a release can leave behind: (API path prefix, resource).
COLLECTIONS = [
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "services"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "persistentvolumeclaims"),
    ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "statefulsets"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("/apis/networking.k8s.io/v1", "ingresses"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("/apis/monitoring.coreos.com/v1", "servicemonitors"),
    ("/apis/monitoring.coreos.com/v1", "prometheusrules"),
    ("/apis/kafka.strimzi.io/v1beta2", "kafkas"),
    ("/apis/kafka.strimzi.io/v1beta2", "kafkanodepools"),
    ("/apis/kafka.strimzi.io/v1beta2", "kafkatopics"),
]


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> httpx.Client:
    """The API client, with the CRDs the central chart's objects need installed."""
    client = cluster.client()
    crds = [HERE / "crds" / "strimzi-stub.yaml"]
    crds += sorted(build_tools().prometheus_operator_crds.glob("*.yaml"))
    for path in crds:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                rsp = client.post(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=doc
                )
                assert rsp.status_code in (201, 409), rsp.text[:500]

    def established() -> bool:
        items = client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions").json()
        return all(
            any(
                c["type"] == "Established" and c["status"] == "True"
                for c in i.get("status", {}).get("conditions", [])
            )
            for i in items["items"]
        )

    wait_until(established, timeout=60, what="CRDs established")
    # Established is not yet served: a new resource's storage initialises after it.
    wait_until(
        lambda: all(
            client.get(f"{prefix}/{resource}").status_code == 200
            for prefix, resource in COLLECTIONS
        ),
        timeout=60,
        what="every collection served",
    )
    return client


def _helm(
    helm: str, cluster: Cluster, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env(),
        check=False,
    )


def _values(chart: str, values_file: str) -> dict[str, Any]:
    merged = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    if values_file:
        _merge(merged, yaml.safe_load((CHARTS / chart / "ci" / values_file).read_text()))
    return merged


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def pod_security_level(chart: str, values_file: str) -> str:
    """`restricted` wherever the chart allows it. The trailer in `lan.mode: hostPort`
    binds the node's DICOM ports, which every Pod Security level short of `privileged`
    forbids: that namespace enforces `privileged` and warns at `restricted`."""
    values = _values(chart, values_file)
    if chart == "trailer" and values.get("lan", {}).get("mode") == "hostPort":
        return "privileged"
    return "restricted"


def _restricted_violations(helm_stderr: str, chart: str, values_file: str) -> list[str]:
    """The API server's `restricted` warnings, less the hostPort the namespace's level
    allows on purpose: any other violation (privilege, capabilities, seccomp, root,
    volume types) is a chart defect."""
    allowed = HOST_PORT if pod_security_level(chart, values_file) == "privileged" else None
    found = []
    for line in helm_stderr.splitlines():
        if "would violate PodSecurity" not in line:
            continue
        reasons = line.split('":', 1)[-1] if '":' in line else line
        if allowed is not None:
            reasons = allowed.sub("", reasons)
        if reasons.strip(' ,"\\'):
            found.append(line)
    return found


def _prerequisites(api: httpx.Client, namespace: str, chart: str, values_file: str) -> None:
    """What ops create before installing (the chart's README says so): a claim named by
    `existingClaim`."""
    claim = _values(chart, values_file).get("ingest", {}).get("uploads", {}).get("existingClaim")
    if chart == "central" and claim:
        rsp = api.post(
            f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
            json={
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            },
        )
        assert rsp.status_code == 201, rsp.text
        # Ops install once the claim is bound. Installing sooner races kube-scheduler: a
        # pod tried while its claim is unbound waited, once here, for the scheduler's
        # 5-minute retry of unschedulable pods instead of the binding event.
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
        wait_until(
            lambda: api.get(path).json().get("status", {}).get("phase") == "Bound",
            60,
            f"claim {claim} bound",
            interval=0.2,
        )


def _items(api: httpx.Client, namespace: str, prefix: str, resource: str) -> list[dict[str, Any]]:
    rsp = api.get(f"{prefix}/namespaces/{namespace}/{resource}")
    assert rsp.status_code == 200, f"{resource}: {rsp.status_code} {rsp.text[:200]}"
    return rsp.json()["items"]


def _release_objects(api: httpx.Client, namespace: str) -> set[tuple[str, str]]:
    found = set()
    for prefix, resource in COLLECTIONS:
        for item in _items(api, namespace, prefix, resource):
            labels = item["metadata"].get("labels") or {}
            if labels.get(INSTANCE) == RELEASE:
                found.add((resource, item["metadata"]["name"]))
    return found


def _kept_by_design(manifest: str) -> set[tuple[str, str]]:
    """What `helm uninstall` leaves on purpose: objects annotated
    `helm.sh/resource-policy: keep` (the admin token, the spool, uploads and monitor
    volumes, Strimzi's Kafka and topics), the claims of StatefulSet volume templates
    (the trailer broker's log, which may hold events not yet published) and hook Jobs
    that remove themselves (`ttlSecondsAfterFinished`: the last run's logs stay a day).
    ``manifest`` is the release's manifest followed by its hooks."""
    kinds = {
        "Secret": "secrets",
        "PersistentVolumeClaim": "persistentvolumeclaims",
        "ConfigMap": "configmaps",
        "Kafka": "kafkas",
        "KafkaNodePool": "kafkanodepools",
        "KafkaTopic": "kafkatopics",
    }
    kept = set()
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        annotations = doc["metadata"].get("annotations") or {}
        if annotations.get("helm.sh/resource-policy") == "keep":
            kept.add((kinds[doc["kind"]], doc["metadata"]["name"]))
        if doc["kind"] == "Job" and "helm.sh/hook" in annotations:
            assert doc["spec"].get("ttlSecondsAfterFinished") is not None, doc["metadata"]["name"]
            kept.add(("jobs", doc["metadata"]["name"]))
        if doc["kind"] == "StatefulSet":
            for template in doc["spec"].get("volumeClaimTemplates", []):
                for i in range(doc["spec"].get("replicas", 1)):
                    kept.add(
                        (
                            "persistentvolumeclaims",
                            f"{template['metadata']['name']}-{doc['metadata']['name']}-{i}",
                        )
                    )
    return kept


def _not_ready(api: httpx.Client, namespace: str) -> str:
    """What kept --wait waiting: pods not Ready (with their conditions), claims not bound."""
    lines = []
    for pod in _items(api, namespace, "/api/v1", "pods"):
        status = pod.get("status", {})
        conditions = {
            c["type"]: (c["status"], c.get("message", "")) for c in status.get("conditions", [])
        }
        if conditions.get("Ready", ("False",))[0] != "True" and status.get("phase") != "Succeeded":
            lines.append(f"pod {pod['metadata']['name']}: {status.get('phase')} {conditions}")
    for claim in _items(api, namespace, "/api/v1", "persistentvolumeclaims"):
        if claim["status"].get("phase") != "Bound":
            lines.append(
                f"claim {claim['metadata']['name']}: {claim['status'].get('phase')} "
                f"class {claim['spec'].get('storageClassName')}"
            )
    return "\nnot ready:\n" + "\n".join(lines)


def _images(api: httpx.Client, namespace: str) -> set[str]:
    images = set()
    for resource in ("deployments", "statefulsets"):
        for item in _items(api, namespace, "/apis/apps/v1", resource):
            for container in item["spec"]["template"]["spec"]["containers"]:
                images.add(container["image"])
    return images


def _rolled_out(api: httpx.Client, namespace: str) -> None:
    """Every Deployment and StatefulSet fully rolled out, every claim bound, every
    LoadBalancer Service addressed — what --wait promised."""
    for resource in ("deployments", "statefulsets"):
        for item in _items(api, namespace, "/apis/apps/v1", resource):
            want = item["spec"].get("replicas", 1)
            status = item.get("status", {})
            what = (resource, item["metadata"]["name"], status)
            assert status.get("readyReplicas", 0) == want, what
            assert status.get("updatedReplicas", 0) == want, what
    for claim in _items(api, namespace, "/api/v1", "persistentvolumeclaims"):
        assert claim["status"]["phase"] == "Bound", claim["metadata"]["name"]
    for service in _items(api, namespace, "/api/v1", "services"):
        if service["spec"]["type"] == "LoadBalancer":
            assert service["status"]["loadBalancer"].get("ingress"), service["metadata"]["name"]


def _history(helm: str, cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    done = _helm(helm, cluster, "history", RELEASE, "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("chart", "values_file"), CASES, ids=[f"{c}-{vf or 'defaults'}" for c, vf in CASES]
)
def test_install_upgrade_rollback_uninstall(
    api: httpx.Client, cluster: Cluster, helm: str, chart: str, values_file: str
) -> None:
    case = (values_file or "defaults").removesuffix(".yaml")
    namespace = f"{chart}-{case}".replace("_", "-")[:50]
    create_namespace(api, namespace, pod_security_level(chart, values_file))
    _prerequisites(api, namespace, chart, values_file)
    base = [str(CHARTS / chart), "-n", namespace, "--wait", "--wait-for-jobs", "--timeout", "4m"]
    if values_file:
        base += ["-f", str(CHARTS / chart / "ci" / values_file)]

    installed = _helm(helm, cluster, "install", RELEASE, *base)
    assert installed.returncode == 0, installed.stderr + _not_ready(api, namespace)
    assert _restricted_violations(installed.stderr, chart, values_file) == []
    _rolled_out(api, namespace)
    first_images = _images(api, namespace)
    manifest = "\n---\n".join(
        _helm(helm, cluster, "get", part, RELEASE, "-n", namespace).stdout
        for part in ("manifest", "hooks")
    )

    # An upgrade that changes every image's tag and one setting.
    upgraded = _helm(
        helm,
        cluster,
        "upgrade",
        RELEASE,
        *base,
        "--set",
        "image.tag=0.1.1-upgrade-test",
        "--set",
        "logLevel=DEBUG",
    )
    assert upgraded.returncode == 0, upgraded.stderr
    _rolled_out(api, namespace)
    new_images = _images(api, namespace)
    ours = {i for i in new_images if "/trailerlink" in i or "trailerlink/" in i}
    assert ours and all(i.endswith(":0.1.1-upgrade-test") for i in ours), new_images

    rolled_back = _helm(
        helm,
        cluster,
        "rollback",
        RELEASE,
        "1",
        "-n",
        namespace,
        "--wait",
        "--wait-for-jobs",
        "--timeout",
        "4m",
    )
    assert rolled_back.returncode == 0, rolled_back.stderr
    _rolled_out(api, namespace)
    assert _images(api, namespace) == first_images
    assert [(h["revision"], h["status"]) for h in _history(helm, cluster, namespace)] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "deployed"),
    ]

    removed = _helm(
        helm, cluster, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m"
    )
    assert removed.returncode == 0, removed.stderr
    kept = _kept_by_design(manifest)
    wait_until(
        lambda: _release_objects(api, namespace) <= kept,
        timeout=60,
        what="only the documented objects left after uninstall",
    )


BAD_VALUES = [
    ("trailer", "trailerId=Trailer_042", "/trailerId"),
    ("trailer", "gateway.lanPort=70000", "/gateway/lanPort"),
    ("trailer", "kafka.persistence.size=lots", "/kafka/persistence/size"),
    ("central", "ingest.host=Bad_Host", "/ingest/host"),
    ("central", "kafka.strimzi.replicas=0", "/kafka/strimzi/replicas"),
]


@pytest.mark.parametrize(
    ("chart", "setting", "field"), BAD_VALUES, ids=[s for _, s, _ in BAD_VALUES]
)
def test_bad_values_are_refused_and_change_nothing(
    api: httpx.Client, cluster: Cluster, helm: str, chart: str, setting: str, field: str
) -> None:
    namespace = "bad-" + re.sub(r"[^a-z0-9]+", "-", setting.lower()).strip("-")[:40]
    create_namespace(api, namespace, "restricted")
    refused = _helm(
        helm,
        cluster,
        "install",
        RELEASE,
        str(CHARTS / chart),
        "-n",
        namespace,
        "--set",
        setting,
        "--wait",
        "--timeout",
        "1m",
    )
    assert refused.returncode != 0
    assert f"at '{field}'" in refused.stderr, refused.stderr
    assert _release_objects(api, namespace) == set()
    assert _helm(helm, cluster, "list", "-n", namespace, "-q").stdout.strip() == ""


def test_a_restricted_namespace_refuses_the_host_port_trailer(
    api: httpx.Client, cluster: Cluster, helm: str
) -> None:
    """The server enforces what the levels above claim: hostPort pods are refused in a
    `restricted` namespace (so the other cases really ran under `restricted`)."""
    namespace = "trailer-hostport-restricted"
    create_namespace(api, namespace, "restricted")
    failed = _helm(
        helm,
        cluster,
        "install",
        RELEASE,
        str(CHARTS / "trailer"),
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "20s",
    )
    assert failed.returncode != 0

    def refusals() -> list[str]:
        return [
            c.get("message", "")
            for rs in _items(api, namespace, "/apis/apps/v1", "replicasets")
            for c in rs.get("status", {}).get("conditions", [])
            if c["type"] == "ReplicaFailure"
        ]

    messages = wait_until(refusals, timeout=60, what="ReplicaSets report the refusal")
    assert any("violates PodSecurity" in m and "hostPort" in m for m in messages), messages
    pods = _items(api, namespace, "/api/v1", "pods")
    assert not [p for p in pods if p["metadata"]["name"].startswith(f"{RELEASE}-trailer-gateway")]
    assert _helm(helm, cluster, "uninstall", RELEASE, "-n", namespace, "--wait").returncode == 0

"""helm lint and helm template on every values file, every manifest validated offline.

Kubernetes' own resources are validated with kubernetes-validate (the upstream OpenAPI
schemas, bundled in the PyPI package, strict: unknown fields fail) for every Kubernetes
version in KUBE_VERSIONS. Custom resources have no schema there; they are listed in
CUSTOM_RESOURCES with how each is checked instead.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartkit import CHART_NAMES, CHARTS, KUBE_VERSIONS, RENDER_CASES, Renderer, run_helm

# Custom resources are not in Kubernetes' schemas. Their CRDs (Strimzi, Prometheus
# operator) are not available from a package registry this project can reach, so they
# are skipped for JSON-schema validation, by name, and checked by the tests named here.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "test_render.py: KRaft, node pools",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "test_render.py: KRaft, node pools",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "test_topics.py: equal to the registry",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "test_monitoring.py: promtool check",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "test_render.py: selects the metrics Services",
}


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_helm_lint_strict_on_defaults_and_examples(helm: str, chart: str) -> None:
    for values_file in (vf for c, vf in RENDER_CASES if c == chart):
        args = ["lint", str(CHARTS / chart), "--strict", "--kube-version", KUBE_VERSIONS[-1]]
        if values_file:
            args += ["--values", str(CHARTS / chart / "ci" / values_file)]
        result = run_helm(helm, *args)
        assert result.returncode == 0, f"{chart} {values_file}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(("chart", "values_file"), RENDER_CASES)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_version(
    render: Renderer, chart: str, values_file: str, kube_version: str
) -> None:
    rendered = render(chart, values_file, kube_version)
    assert rendered.docs, "rendered nothing"
    problems = []
    for doc in rendered.docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                f"at {'/'.join(str(p) for p in exc.path)}"
            )
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {key} has no schema "
                "for this version and is not a listed custom resource"
            )
    assert not problems, "\n".join(problems)


def test_names_are_unique_per_kind(render: Renderer) -> None:
    for rendered in (render(c, vf) for c, vf in RENDER_CASES):
        counts = Counter((d["kind"], d["metadata"]["name"]) for d in rendered.docs)
        assert [k for k, n in counts.items() if n > 1] == [], rendered.label


def test_trailer_chart_has_what_a_trailer_runs(render: Renderer) -> None:
    rendered = render("trailer")
    deployments = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    assert deployments == {
        f"trailerlink-{s}" for s in ("gateway", "codec", "uplink", "worklist", "monitor")
    }
    (kafka,) = rendered.of_kind("StatefulSet")
    assert kafka["spec"]["template"]["spec"]["containers"][0]["image"] == "apache/kafka:4.1.1"
    assert kafka["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    claims = {d["metadata"]["name"]: d for d in rendered.of_kind("PersistentVolumeClaim")}
    assert set(claims) == {"trailerlink-spool", "trailerlink-worklist"}
    for claim in claims.values():
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # gateway, codec and uplink share the one spool claim; the monitor reads it
    users = {}
    for dep in rendered.of_kind("Deployment"):
        for vol in dep["spec"]["template"]["spec"]["volumes"]:
            if vol.get("persistentVolumeClaim", {}).get("claimName") == "trailerlink-spool":
                users[dep["metadata"]["name"]] = vol["persistentVolumeClaim"].get("readOnly", False)
    assert users == {
        "trailerlink-gateway": False,
        "trailerlink-codec": False,
        "trailerlink-uplink": False,
        "trailerlink-monitor": True,
    }


def test_trailer_lan_modes(render: Renderer) -> None:
    host = render("trailer", "example-values.yaml")
    gateway = host.named("Deployment", "trailerlink-gateway")
    (port,) = [
        p
        for p in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]
        if p["name"] == "dicom"
    ]
    assert port == {"name": "dicom", "containerPort": 11112, "hostPort": 104, "protocol": "TCP"}
    assert not [s for s in host.of_kind("Service") if s["spec"].get("type") == "LoadBalancer"]

    lb = render("trailer", "loadbalancer-values.yaml")
    lan = {
        s["metadata"]["name"]: s
        for s in lb.of_kind("Service")
        if s["spec"].get("type") == "LoadBalancer"
    }
    assert set(lan) == {"trailerlink-gateway-lan", "trailerlink-worklist-lan"}
    assert lan["trailerlink-gateway-lan"]["spec"]["ports"][0]["port"] == 104
    assert lan["trailerlink-worklist-lan"]["spec"]["ports"][0]["port"] == 105
    gateway = lb.named("Deployment", "trailerlink-gateway")
    for p in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]:
        assert "hostPort" not in p


def test_central_chart_scales_the_ingest(render: Renderer) -> None:
    rendered = render("central")
    ingest = rendered.named("Deployment", "trailerlink-ingest")
    assert "replicas" not in ingest["spec"], "the HPA owns the replica count"
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "trailerlink-ingest"
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = rendered.of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == ingest["spec"]["selector"]["matchLabels"]


def test_central_client_certificates_are_verified_at_the_ingress_or_the_pod(
    render: Renderer,
) -> None:
    rendered = render("central")
    (ingress,) = rendered.of_kind("Ingress")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "on"
    assert (
        notes["nginx.ingress.kubernetes.io/auth-tls-secret"] == "trailerlink/trailerlink-trailer-ca"
    )
    assert notes["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"] == "true"
    policy = rendered.named("NetworkPolicy", "trailerlink-ingest")
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8443]
    # only the controller may reach the pod, so the certificate header cannot be forged
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }

    passthrough = render("central", "external-kafka-values.yaml")
    assert not passthrough.of_kind("Ingress")
    public = passthrough.named("Service", "trailerlink-ingest-public")
    assert public["spec"]["type"] == "LoadBalancer"
    assert public["spec"]["externalTrafficPolicy"] == "Local"


def test_strimzi_kafka_is_kraft_with_node_pools(render: Renderer) -> None:
    rendered = render("central")
    (kafka,) = rendered.of_kind("Kafka")
    (pool,) = rendered.of_kind("KafkaNodePool")
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["spec"]["storage"]["volumes"][0]["deleteClaim"] is False
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["min.insync.replicas"] == 2
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert (
        listener["networkPolicyPeers"][0]["podSelector"]["matchLabels"][
            "trailerlink.nhs.uk/kafka-client"
        ]
        == "true"
    )
    # the services bootstrap from the Strimzi cluster's service
    env = {
        e["name"]: e.get("value")
        for e in rendered.named("Deployment", "trailerlink-ingest")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert (
        env["TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS"]
        == "trailerlink-kafka-bootstrap.trailerlink.svc.cluster.local:9092"
    )
    external = render("central", "external-kafka-values.yaml")
    assert not external.of_kind("Kafka") and not external.of_kind("KafkaTopic")


def test_service_monitor_selects_the_metrics_services(render: Renderer) -> None:
    rendered = render("central", "example-values.yaml")
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in rendered.of_kind("Service") if wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in selected} == {
        "trailerlink-ingest",
        "trailerlink-monitor",
    }
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in selected:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_notes_render_with_next_steps(render: Renderer, helm: str, tmp_path: Path) -> None:
    # `helm template` leaves NOTES.txt out and `helm install --dry-run` needs a cluster,
    # so a copy of each chart renders its NOTES.txt as the body of a ConfigMap.
    for chart in CHART_NAMES:
        copy = tmp_path / chart
        shutil.copytree(CHARTS / chart, copy)
        notes = (copy / "templates" / "NOTES.txt").read_text()
        body = "".join(f"    {line}\n" for line in notes.splitlines())
        (copy / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n" + body
        )
        result = run_helm(
            helm,
            "template",
            "trailerlink",
            str(copy),
            "--namespace",
            "trailerlink",
            "--kube-version",
            KUBE_VERSIONS[-1],
            "--show-only",
            "templates/zz-notes.yaml",
        )
        assert result.returncode == 0, result.stderr
        text = yaml.safe_load(result.stdout)["data"]["notes"]
        assert "What to check next" in text
        assert "docs/runbook.md" in text
        assert "WARNING" in text  # the defaults are not a real site: the notes say so
        assert "<no value>" not in text


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (cores, or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_trailer_fits_a_small_edge_box(render: Renderer) -> None:
    # 4 cores and 8 GB at the least, K3s itself needing about 1 GB and half a core.
    requests_cpu = memory_limits = 0.0
    rendered = render("trailer", "example-values.yaml")
    for doc in rendered.docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            requests_cpu += _quantity(container["resources"]["requests"]["cpu"])
            memory_limits += _quantity(container["resources"]["limits"]["memory"])
    assert requests_cpu <= 3.5
    assert memory_limits <= 7 * 2**30

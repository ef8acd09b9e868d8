"""Policies over everything the charts render, for every values file.

Non-root, read-only, no capabilities; resources; probes on /healthz and /readyz; pinned
images; Secrets only by reference; every TRAILERLINK_* variable a real setting of the
service it is set on; HTTP ports as in the code.
"""

from __future__ import annotations

import base64
import importlib
import re
from typing import Any

import pytest
import yaml
from chartkit import CHARTS, RENDER_CASES, Renderer, workloads

SERVICES = ("gateway", "codec", "uplink", "worklist", "ingest", "monitor")
# A PEM block, a password assignment, or a DSN with a password in it.
PEM_OR_KEY = re.compile(
    r"-----BEGIN [A-Za-z ]+-----|password\s*[=:]\s*\S|"
    r"postgres(ql)?://[^\s:/]+:[^\s@/]+@",
    re.I,
)
# Variables that a container of ours reads that are not a settings field: the topic
# Job's script takes the bootstrap address from the common setting's variable.
JOB_ENV = {"create-topics": {"TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS"}}

CASES = pytest.mark.parametrize(("chart", "values_file"), RENDER_CASES)


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("init", c) for c in spec.get("initContainers", [])] + [
        ("main", c) for c in spec["containers"]
    ]


def _settings_fields(service: str) -> set[str]:
    main = importlib.import_module(f"trailerlink_{service}.main")
    settings_cls = next(
        v for k, v in vars(main).items() if k.endswith("Settings") and k != "ServiceSettings"
    )
    prefix = settings_cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}, settings_cls


@CASES
def test_every_container_runs_unprivileged(render: Renderer, chart: str, values_file: str) -> None:
    rendered = render(chart, values_file)
    for doc, spec in workloads(rendered):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, doc["metadata"]["name"]
        assert pod.get("runAsUser", 0) != 0
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        for _, c in _containers(spec):
            where = f"{doc['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("privileged") in (None, False), where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


@CASES
def test_every_container_has_requests_and_a_memory_limit(
    render: Renderer, chart: str, values_file: str
) -> None:
    for doc, spec in workloads(render(chart, values_file)):
        for _, c in _containers(spec):
            res = c.get("resources", {})
            where = f"{doc['metadata']['name']}/{c['name']}"
            assert res.get("requests", {}).keys() >= {"cpu", "memory"}, where
            assert "memory" in res.get("limits", {}), where


@CASES
def test_long_running_containers_have_probes(
    render: Renderer, chart: str, values_file: str
) -> None:
    for doc, spec in workloads(render(chart, values_file)):
        if doc["kind"] in ("Job", "CronJob"):
            continue
        for c in spec["containers"]:
            where = f"{doc['metadata']['name']}/{c['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{where} has no {probe}"
            if c["name"] in SERVICES:
                assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, where
                assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, where
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz", where
                # the readiness checks time out after 5 s inside the service
                assert c["readinessProbe"]["timeoutSeconds"] > 5, where


@CASES
def test_images_are_pinned(render: Renderer, chart: str, values_file: str) -> None:
    for _, spec in workloads(render(chart, values_file)):
        for _, c in _containers(spec):
            image = c["image"]
            name, _, digest = image.partition("@")
            repo, _, tag = name.rpartition(":")
            assert repo and "/" not in tag, f"{image}: no tag"
            assert tag != "latest", image
            assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image


def test_schema_default_tag_follows_the_chart(render: Renderer) -> None:
    rendered = render("trailer")
    images = {c["image"] for _, spec in workloads(rendered) for _, c in _containers(spec)}
    assert "registry.example.nhs.uk/trailerlink/gateway:0.1.0" in images
    assert "apache/kafka:4.1.1" in images


@CASES
def test_secrets_are_referenced_never_rendered(
    render: Renderer, chart: str, values_file: str
) -> None:
    rendered = render(chart, values_file)
    # The one Secret a chart may make is the admin token it generates (random, never
    # from values; kept on uninstall so the CLI's copy stays valid).
    for secret in rendered.of_kind("Secret"):
        assert secret["metadata"]["name"] == "trailerlink-admin-token", (
            "the charts create no Secret but the generated admin token"
        )
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        (token,) = secret["data"].values()
        assert len(base64.b64decode(token)) >= 32
        assert base64.b64decode(token).decode() not in (CHARTS / chart / "values.yaml").read_text()
    for cm in rendered.of_kind("ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert not PEM_OR_KEY.search(value), f"ConfigMap {cm['metadata']['name']}/{key}"
    for doc, spec in workloads(rendered):
        for _, c in _containers(spec):
            for env in c.get("env", []):
                value = str(env.get("value", ""))
                assert not PEM_OR_KEY.search(value), f"{doc['metadata']['name']} {env['name']}"


VALUES_FILES = sorted(
    str(p.relative_to(CHARTS)) for p in [*CHARTS.glob("*/values.yaml"), *CHARTS.glob("*/ci/*.yaml")]
)


@pytest.mark.parametrize("path", VALUES_FILES)
def test_values_files_hold_no_secret_material(path: str) -> None:
    text = (CHARTS / path).read_text()
    assert not PEM_OR_KEY.search(text)
    values = yaml.safe_load(text)
    # secrets.* are references: a name and maybe a key, nothing else
    for ref in (values.get("secrets") or {}).values():
        assert set(ref) <= {"name", "key", "oldKeys", "generate"}, ref
        assert isinstance(ref.get("generate", False), bool), ref
        assert all(isinstance(k, str) and len(k) < 64 for k in ref.get("oldKeys", [])), ref


@CASES
def test_env_vars_are_real_settings(render: Renderer, chart: str, values_file: str) -> None:
    for doc, spec in workloads(render(chart, values_file)):
        for _, c in _containers(spec):
            names = {e["name"] for e in c.get("env", []) if e["name"].startswith("TRAILERLINK_")}
            if c["name"] in JOB_ENV:
                assert names <= JOB_ENV[c["name"]], c["name"]
                continue
            if c["name"] not in SERVICES:
                assert not names, f"{c['name']} is not a trailerlink service"
                continue
            fields, _ = _settings_fields(c["name"])
            unknown = names - fields
            assert not unknown, (
                f"{doc['metadata']['name']} sets {sorted(unknown)}, which "
                f"trailerlink-{c['name']}'s settings do not have"
            )


@CASES
def test_http_ports_match_the_code(render: Renderer, chart: str, values_file: str) -> None:
    for _, spec in workloads(render(chart, values_file)):
        for c in spec["containers"]:
            if c["name"] not in SERVICES:
                continue
            _, settings_cls = _settings_fields(c["name"])
            default = settings_cls.model_fields["http_port"].default
            (http,) = [p for p in c["ports"] if p["name"] == "http"]
            assert http["containerPort"] == default, c["name"]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["TRAILERLINK_HTTP_PORT"] == str(default)


@CASES
def test_secret_volumes_name_the_values_secrets(
    render: Renderer, chart: str, values_file: str
) -> None:
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    if values_file:
        override = yaml.safe_load((CHARTS / chart / "ci" / values_file).read_text())
        values["secrets"] = {**values["secrets"], **(override.get("secrets") or {})}
        worklist = override.get("worklist", {})
        extra = {
            override.get("gateway", {}).get("tls", {}).get("secretName"),
            worklist.get("staff", {}).get("credentialsSecret", {}).get("name"),
            worklist.get("tls", {}).get("secretName"),
            worklist.get("upstream", {}).get("hl7Tls", {}).get("secretName"),
            worklist.get("hl7Out", {}).get("caSecret"),
        } - {None, ""}
    else:
        extra = set()
    allowed = {ref["name"] for ref in values["secrets"].values()} | extra
    for doc, spec in workloads(render(chart, values_file)):
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in allowed, doc["metadata"]["name"]
                assert vol["secret"].get("defaultMode", 0o644) & 0o022 == 0


@CASES
def test_default_deny_network_policy(render: Renderer, chart: str, values_file: str) -> None:
    rendered = render(chart, values_file)
    deny = rendered.named("NetworkPolicy", "trailerlink-default-deny")
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    # every pod of the release is under the default deny
    selector = deny["spec"]["podSelector"].get("matchLabels", {})
    for doc, _ in workloads(rendered):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_trailer_dicom_ports_admit_only_the_modality_network(render: Renderer) -> None:
    rendered = render("trailer", "example-values.yaml")
    for name, port in (("trailerlink-gateway", 11112), ("trailerlink-worklist", 11113)):
        policy = rendered.named("NetworkPolicy", name)
        dicom = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == port]
        assert dicom[0]["from"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    uplink = rendered.named("NetworkPolicy", "trailerlink-uplink")
    assert uplink["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "203.0.113.40/32"}}]

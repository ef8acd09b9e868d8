"""The charts wire what a deploy needs, checked against the services' settings classes.

Admin token into every service that has an admin API, the ingest's enrol CA and its
shared (ReadWriteMany) storage for uploads, access list and sealing keys, the trailer
monitor agent's scrape targets, relay URL and client certificate, the fleet monitor's
state and dashboards; and every file a chart points a setting at is really mounted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from chartkit import CHARTS, KUBE_VERSIONS, RENDER_CASES, ROOT, Renderer, run_helm, workloads
from test_policy import SERVICES, _settings_fields

CASES = pytest.mark.parametrize(("chart", "values_file"), RENDER_CASES)


def _values(chart: str, values_file: str = "") -> dict[str, Any]:
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    if values_file:
        override = yaml.safe_load((CHARTS / chart / "ci" / values_file).read_text()) or {}
        _merge(values, override)
    return values


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == name]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _source(
    spec: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[dict[str, Any], str] | None:
    """The volume a path in ``container`` lives on, and the path inside it."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            if best is None or len(root) > len(best[0]):
                best = (root, mount)
    if best is None:
        return None
    root, mount = best
    return volumes[mount["name"]], path[len(root) :].lstrip("/")


def _secret_file(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) that provides the file ``path``; fails if none does."""
    found = _source(spec, container, path)
    assert found, f"{container['name']}: nothing is mounted at {path}"
    volume, inner = found
    assert "secret" in volume, f"{container['name']}: {path} is not from a Secret"
    items = volume["secret"].get("items")
    if items is None:
        return volume["secret"]["secretName"], inner
    keys = {i["path"]: i["key"] for i in items}
    assert inner in keys, f"{container['name']}: {path} is not projected from the Secret"
    return volume["secret"]["secretName"], keys[inner]


def _claim(rendered: Any, spec: dict[str, Any], container: dict[str, Any], path: str) -> str:
    found = _source(spec, container, path)
    assert found, f"{container['name']}: nothing is mounted at {path}"
    volume, _ = found
    assert "persistentVolumeClaim" in volume, f"{container['name']}: {path} is not on a PVC"
    return volume["persistentVolumeClaim"]["claimName"]


def _template(helm: str, chart: str, *args: str) -> list[dict[str, Any]]:
    """``helm template`` of ``chart`` with extra arguments (--set, --show-only); the docs."""
    result = run_helm(
        helm,
        "template",
        "trailerlink",
        str(CHARTS / chart),
        "--namespace",
        "trailerlink",
        "--kube-version",
        KUBE_VERSIONS[-1],
        *args,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _deployment(docs: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    return next(
        d
        for d in docs
        if d["kind"] == "Deployment" and (name is None or d["metadata"]["name"] == name)
    )


def _services_with(field: str) -> set[str]:
    return {
        s
        for s in SERVICES
        if field.upper() in {f.removeprefix("TRAILERLINK_") for f in _settings_fields(s)[0]}
    }


# --- the admin token ----------------------------------------------------------------------


@CASES
def test_every_admin_api_gets_the_admin_token(
    render: Renderer, chart: str, values_file: str
) -> None:
    values = _values(chart, values_file)
    token = values["secrets"]["adminToken"]
    with_admin = _services_with("admin_token_file")
    assert {"uplink", "ingest", "monitor"} <= with_admin
    wired = set()
    for doc, spec in workloads(render(chart, values_file)):
        for c in spec["containers"]:
            if c["name"] not in with_admin:
                continue
            path = _env(c).get("TRAILERLINK_ADMIN_TOKEN_FILE")
            assert path, f"{doc['metadata']['name']} has an admin API but no admin token"
            assert _secret_file(spec, c, path) == (token["name"], token["key"])
            found = _source(spec, c, path)
            assert found and "subPath" not in json.dumps(c["volumeMounts"]), (
                "a subPath mount would not see a rotated token"
            )
            wired.add(c["name"])
    assert wired >= {"trailer": {"uplink", "monitor"}, "central": {"ingest", "monitor"}}[chart]
    assert (
        wired
        == {
            c["name"]
            for _, spec in workloads(render(chart, values_file))
            for c in spec["containers"]
        }
        & with_admin
    )


@pytest.mark.parametrize("chart", ["trailer", "central"])
def test_the_admin_token_is_generated_once_or_taken_as_it_is(helm: str, chart: str) -> None:
    (secret,) = _template(helm, chart, "--show-only", "templates/admin-token.yaml")
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert set(secret["data"]) == {"token"}
    # no cluster here: lookup finds nothing, so each render draws a new random token
    (again,) = _template(helm, chart, "--show-only", "templates/admin-token.yaml")
    assert again["data"]["token"] != secret["data"]["token"]
    template = (CHARTS / chart / "templates" / "admin-token.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template  # an installed token is kept on upgrade

    docs = _template(
        helm,
        chart,
        "--set",
        "secrets.adminToken.generate=false",
        "--set",
        "secrets.adminToken.name=ops-token",
    )
    assert not [d for d in docs if d["kind"] == "Secret"]
    names = {
        v["secret"]["secretName"]
        for d in docs
        if d["kind"] == "Deployment"
        for v in d["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "admin-token"
    }
    assert names == {"ops-token"}


# --- the ingest ---------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", ["", "example-values.yaml", "external-kafka-values.yaml"])
def test_ingest_has_its_enrol_ca_and_shared_storage(render: Renderer, values_file: str) -> None:
    rendered = render("central", values_file)
    values = _values("central", values_file)
    doc = rendered.named("Deployment", "trailerlink-ingest")
    spec = doc["spec"]["template"]["spec"]
    ingest = _container(doc, "ingest")
    env = _env(ingest)
    enrol = values["secrets"]["enrolCa"]["name"]
    assert _secret_file(spec, ingest, env["TRAILERLINK_ENROL_CA_CERT_FILE"]) == (enrol, "tls.crt")
    assert _secret_file(spec, ingest, env["TRAILERLINK_ENROL_CA_KEY_FILE"]) == (enrol, "tls.key")
    assert _secret_file(spec, ingest, env["TRAILERLINK_TLS_CLIENT_CA_FILE"]) == (
        values["secrets"]["trailerCa"]["name"],
        values["secrets"]["trailerCa"]["key"],
    )

    # Uploads, the access list and the sealing keys on the one ReadWriteMany claim.
    claims = {
        _claim(rendered, spec, ingest, env[name])
        for name in (
            "TRAILERLINK_STORAGE_DIR",
            "TRAILERLINK_ACCESS_LIST_FILE",
            "TRAILERLINK_SEALING_KEYS_DIR",
        )
    }
    assert len(claims) == 1
    (claim,) = claims
    existing = values["ingest"]["uploads"]["existingClaim"]
    if existing:
        assert claim == existing
        assert not [
            p
            for p in rendered.of_kind("PersistentVolumeClaim")
            if p["metadata"]["name"] == "trailerlink-ingest-shared"
        ]
    else:
        pvc = rendered.named("PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # per-replica scratch is not on the shared claim
    scratch, _ = _source(spec, ingest, "/var/lib/trailerlink/work")
    assert "emptyDir" in scratch
    # the seed writes the same list on the same claim
    (seed,) = spec["initContainers"]
    assert _claim(rendered, spec, seed, env["TRAILERLINK_ACCESS_LIST_FILE"]) == claim
    assert "access" in env["TRAILERLINK_ACCESS_LIST_FILE"] and "revoked" in seed["args"][0]
    fleet = rendered.named("ConfigMap", "trailerlink-fleet")
    assert json.loads(fleet["data"]["trailers.json"]) == sorted(set(values["trailers"]))
    # the ledger DSN from the database Secret, the PACS from values
    dsn = env["TRAILERLINK_LEDGER_DSN"]["secretKeyRef"]
    assert env["TRAILERLINK_LEDGER_SHARED"] == "true"  # an empty DSN stops the pod
    assert (dsn["name"], dsn["key"]) == (
        values["secrets"]["database"]["name"],
        values["secrets"]["database"]["key"],
    )
    assert env["TRAILERLINK_PACS_HOST"] == values["ingest"]["pacs"]["host"]
    assert env["TRAILERLINK_PACS_AE_TITLE"] == values["ingest"]["pacs"]["aeTitle"]
    source = "tls" if values["ingest"]["tlsTermination"] == "pod" else "proxy-header"
    assert env["TRAILERLINK_IDENTITY_SOURCE"] == source


def test_ingest_without_an_enrol_ca_has_no_enrolment(helm: str) -> None:
    doc = _deployment(
        _template(
            helm,
            "central",
            "--set",
            "secrets.enrolCa.name=",
            "--show-only",
            "templates/ingest.yaml",
        )
    )
    env = _env(_container(doc, "ingest"))
    assert "TRAILERLINK_ENROL_CA_CERT_FILE" not in env
    assert "enrol-ca" not in {v["name"] for v in doc["spec"]["template"]["spec"]["volumes"]}


# --- the trailer's monitor agent ------------------------------------------------------------


@pytest.mark.parametrize("values_file", ["", "example-values.yaml"])
def test_trailer_monitor_agent_scrapes_the_release_and_relays_with_the_trailer_cert(
    render: Renderer, values_file: str
) -> None:
    rendered = render("trailer", values_file)
    values = _values("trailer", values_file)
    doc = rendered.named("Deployment", "trailerlink-monitor")
    spec = doc["spec"]["template"]["spec"]
    agent = _container(doc, "monitor")
    env = _env(agent)
    assert env["TRAILERLINK_MODE"] == "agent"
    assert env["TRAILERLINK_TRAILER_ID"] == values["trailerId"]

    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    targets = dict(item.split("=", 1) for item in env["TRAILERLINK_SCRAPE_URLS"].split(","))
    assert set(targets) == {"gateway", "codec", "uplink", "worklist"}
    for component, url in targets.items():
        parsed = urlparse(url)
        host = parsed.hostname or ""
        assert host == f"trailerlink-{component}.trailerlink.svc.cluster.local", url
        service = services[host.split(".")[0]]
        assert {"name": "http", "port": parsed.port} == {
            k: v
            for k, v in next(p for p in service["spec"]["ports"] if p["name"] == "http").items()
            if k in ("name", "port")
        }
        assert parsed.path == "/metrics"
        workload = rendered.named("Deployment", f"trailerlink-{component}")
        http = next(p for p in _container(workload, component)["ports"] if p["name"] == "http")
        assert http["containerPort"] == parsed.port

    # Relay: the data centre's /v1/events on the ingest's host, which the central chart
    # routes to its fleet monitor.
    ingest_url = values["uplink"]["ingestUrl"].rstrip("/")
    assert env["TRAILERLINK_RELAY_URL"] == ingest_url + "/v1/events"
    # the trailer's client certificate and CA, the Secrets the uplink presents
    uplink = rendered.named("Deployment", "trailerlink-uplink")
    uspec = uplink["spec"]["template"]["spec"]
    for name, path in (
        ("TRAILERLINK_CLIENT_CERT_FILE", "/etc/trailerlink/client-tls/tls.crt"),
        ("TRAILERLINK_CLIENT_KEY_FILE", "/etc/trailerlink/client-tls/tls.key"),
        ("TRAILERLINK_CA_FILE", "/etc/trailerlink/ca/ca.crt"),
    ):
        assert _secret_file(spec, agent, env[name]) == _secret_file(
            uspec, _container(uplink, "uplink"), path
        )
    assert (
        _secret_file(spec, agent, env["TRAILERLINK_CLIENT_CERT_FILE"])[0]
        == values["secrets"]["clientTls"]["name"]
        == "trailerlink-client-tls"
    )  # what enrol prints
    # the agent may leave the trailer for the relay, where the uplink may
    policy = rendered.named("NetworkPolicy", "trailerlink-monitor")
    cidrs = {
        b["ipBlock"]["cidr"]
        for rule in policy["spec"]["egress"]
        for b in rule["to"]
        if "ipBlock" in b
    }
    assert set(values["uplink"]["egress"]["cidrs"]) <= cidrs


def test_central_routes_the_relay_to_the_fleet_monitor(render: Renderer) -> None:
    rendered = render("central")
    (ingress,) = rendered.of_kind("Ingress")
    paths = {
        p["path"]: p["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths["/v1/events"] == {"name": "trailerlink-monitor", "port": {"name": "http"}}
    monitor = rendered.named("Service", "trailerlink-monitor")
    assert "http" in {p["name"] for p in monitor["spec"]["ports"]}
    policy = rendered.named("NetworkPolicy", "trailerlink-monitor")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9106}]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }


# --- the fleet monitor ------------------------------------------------------------------


def test_fleet_monitor_keeps_its_state_and_reads_the_database_dsn(
    render: Renderer, helm: str
) -> None:
    rendered = render("central")
    values = _values("central")
    doc = rendered.named("Deployment", "trailerlink-monitor")
    spec = doc["spec"]["template"]["spec"]
    fleet = _container(doc, "monitor")
    env = _env(fleet)
    assert env["TRAILERLINK_MODE"] == "fleet"
    claim = _claim(rendered, spec, fleet, env["TRAILERLINK_DATA_DIR"])
    assert rendered.named("PersistentVolumeClaim", claim)["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    assert _secret_file(spec, fleet, env["TRAILERLINK_DATABASE_DSN_FILE"]) == (
        values["secrets"]["database"]["name"],
        values["secrets"]["database"]["key"],
    )
    assert env["TRAILERLINK_FLEET_FILE"] == "/etc/trailerlink/fleet/trailers.yaml"
    found = _source(spec, fleet, env["TRAILERLINK_FLEET_FILE"])
    assert found and found[0]["configMap"]["name"] == "trailerlink-fleet"

    doc = _deployment(
        _template(
            helm,
            "central",
            "--set",
            "monitor.stateStore=sqlite",
            "--show-only",
            "templates/monitor.yaml",
        )
    )
    assert "TRAILERLINK_DATABASE_DSN_FILE" not in _env(_container(doc, "monitor"))
    assert "database" not in {v["name"] for v in doc["spec"]["template"]["spec"]["volumes"]}


def test_every_dashboard_ships_with_the_grafana_sidecar_label(render: Renderer) -> None:
    rendered = render("central")
    values = _values("central")
    repo = sorted(p.name for p in (ROOT / "monitoring" / "dashboards").glob("*.json"))
    assert repo
    label = values["metrics"]["dashboards"]["label"]
    maps = {
        c["metadata"]["name"]: c
        for c in rendered.of_kind("ConfigMap")
        if label in c["metadata"]["labels"]
    }
    assert set(maps) == {f"trailerlink-dashboard-{n.removesuffix('.json')}" for n in repo}
    for name in repo:
        cm = maps[f"trailerlink-dashboard-{name.removesuffix('.json')}"]
        assert cm["metadata"]["labels"][label] == values["metrics"]["dashboards"]["labelValue"]
        assert json.loads(cm["data"][name])["uid"]


# --- every file a setting points at is there ----------------------------------------------

_PATH_SETTING = re.compile(r"^TRAILERLINK_\w+_(FILE|DIR)$")


@CASES
def test_every_file_setting_points_into_a_mount(
    render: Renderer, chart: str, values_file: str
) -> None:
    for doc, spec in workloads(render(chart, values_file)):
        for c in spec["containers"]:
            if c["name"] not in SERVICES:
                continue
            for name, value in _env(c).items():
                if not _PATH_SETTING.match(name) or not isinstance(value, str) or not value:
                    continue
                found = _source(spec, c, value)
                assert found, f"{doc['metadata']['name']}: {name}={value} is not mounted"
                volume, inner = found
                if "secret" in volume and name.endswith("_FILE"):
                    _secret_file(spec, c, value)
                if name.endswith("_FILE") and not inner:
                    pytest.fail(f"{name} names a mount point, not a file")


def test_the_canary_reaches_the_gateway_it_names(render: Renderer) -> None:
    rendered = render("trailer", "example-values.yaml")
    values = _values("trailer", "example-values.yaml")
    assert values["monitor"]["canary"]["enabled"]
    env = _env(_container(rendered.named("Deployment", "trailerlink-monitor"), "monitor"))
    gateway = _env(_container(rendered.named("Deployment", "trailerlink-gateway"), "gateway"))
    host = env["TRAILERLINK_CANARY_GATEWAY_HOST"]
    service = rendered.named("Service", host.split(".")[0])
    assert host == f"{service['metadata']['name']}.trailerlink.svc.cluster.local"
    dicom = next(p for p in service["spec"]["ports"] if p["name"] == "dicom")
    assert (
        str(dicom["port"])
        == env["TRAILERLINK_CANARY_GATEWAY_PORT"]
        == gateway["TRAILERLINK_DICOM_PORT"]
    )
    assert env["TRAILERLINK_CANARY_GATEWAY_AE_TITLE"] == gateway["TRAILERLINK_DICOM_AE_TITLE"]
    peers = gateway["TRAILERLINK_DICOM_ALLOWED_PEERS"].split(",")
    assert env["TRAILERLINK_CANARY_CALLING_AE_TITLE"] in peers
    assert set(values["gateway"]["allowedPeers"]) <= set(peers)
    # the policies let the agent's association through
    port = int(gateway["TRAILERLINK_DICOM_PORT"])
    agent_out = rendered.named("NetworkPolicy", "trailerlink-monitor")["spec"]["egress"]
    assert any({"protocol": "TCP", "port": port} in rule["ports"] for rule in agent_out)
    gateway_in = rendered.named("NetworkPolicy", "trailerlink-gateway")["spec"]["ingress"]
    assert any(
        {"protocol": "TCP", "port": port} in rule["ports"]
        and any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            == "monitor"
            for p in rule["from"]
        )
        for rule in gateway_in
    )

    off = render("trailer")
    env = _env(_container(off.named("Deployment", "trailerlink-monitor"), "monitor"))
    assert "TRAILERLINK_CANARY_GATEWAY_HOST" not in env
    gateway = _env(_container(off.named("Deployment", "trailerlink-gateway"), "gateway"))
    assert gateway["TRAILERLINK_DICOM_ALLOWED_PEERS"] == ""


def test_worklist_tls_files_come_from_the_named_secrets(helm: str, render: Renderer) -> None:
    rendered = render("trailer", "example-values.yaml")
    doc = rendered.named("Deployment", "trailerlink-worklist")
    spec, worklist = doc["spec"]["template"]["spec"], _container(doc, "worklist")
    env = _env(worklist)
    assert _secret_file(spec, worklist, env["TRAILERLINK_DICOM_TLS_CERT_FILE"]) == (
        "trailerlink-dicom-tls",
        "tls.crt",
    )
    assert env["TRAILERLINK_UPSTREAM_HL7_TLS"] == "true"
    assert _secret_file(spec, worklist, env["TRAILERLINK_UPSTREAM_HL7_TLS_CA_FILE"]) == (
        "trailerlink-trust-ca",
        "ca.crt",
    )

    doc = _deployment(
        _template(
            helm,
            "trailer",
            "--set",
            "worklist.upstream.kind=hl7",
            "--set",
            "worklist.upstream.hl7Tls.secretName=trust-hl7-tls",
            "--set",
            "worklist.upstream.hl7Tls.verifyClients=true",
            "--set",
            "worklist.tls.secretName=mwl-tls",
            "--set",
            "worklist.tls.verifyClients=true",
            "--show-only",
            "templates/worklist.yaml",
        )
    )
    spec, worklist = doc["spec"]["template"]["spec"], _container(doc, "worklist")
    env = _env(worklist)
    for name, secret, key in (
        ("TRAILERLINK_HL7_TLS_CERT_FILE", "trust-hl7-tls", "tls.crt"),
        ("TRAILERLINK_HL7_TLS_KEY_FILE", "trust-hl7-tls", "tls.key"),
        ("TRAILERLINK_HL7_TLS_CLIENT_CA_FILE", "trust-hl7-tls", "ca.crt"),
        ("TRAILERLINK_DICOM_TLS_KEY_FILE", "mwl-tls", "tls.key"),
        ("TRAILERLINK_DICOM_TLS_CLIENT_CA_FILE", "mwl-tls", "ca.crt"),
    ):
        assert _secret_file(spec, worklist, env[name]) == (secret, key), name
    assert "TRAILERLINK_UPSTREAM_HL7_TLS" not in env  # nothing goes out by HL7 here


def test_key_sync_writes_where_the_codec_reads(render: Renderer, helm: str) -> None:
    rendered = render("trailer")
    values = _values("trailer")
    codec_doc = rendered.named("Deployment", "trailerlink-codec")
    uplink_doc = rendered.named("Deployment", "trailerlink-uplink")
    cspec, codec = codec_doc["spec"]["template"]["spec"], _container(codec_doc, "codec")
    uspec, uplink = uplink_doc["spec"]["template"]["spec"], _container(uplink_doc, "uplink")
    keys = _env(codec)["TRAILERLINK_SEALING_PUBLIC_KEYS"]
    assert _env(uplink)["TRAILERLINK_SEALING_KEYS_SYNC_DIR"] == keys
    assert _env(uplink)["TRAILERLINK_KEYS_POLL_SECONDS"] == str(
        values["uplink"]["keySync"]["pollSeconds"]
    )
    # the same directory of the same claim in both pods, writable by the uplink
    assert _claim(rendered, cspec, codec, keys) == _claim(rendered, uspec, uplink, keys)
    assert not next(m for m in uplink["volumeMounts"] if m["name"] == "spool").get("readOnly")
    # seeded once from the Secret of public keys
    (seed,) = cspec["initContainers"]
    assert _claim(rendered, cspec, seed, keys) == _claim(rendered, cspec, codec, keys)
    assert (
        _source(cspec, seed, "/etc/trailerlink/sealing-keys")[0]["secret"]["secretName"]
        == values["secrets"]["sealingPublicKeys"]["name"]
    )
    assert keys in seed["args"][0]

    docs = {
        d["metadata"]["name"]: d
        for d in _template(helm, "trailer", "--set", "uplink.keySync.enabled=false")
        if d["kind"] == "Deployment"
    }
    codec_doc = docs["trailerlink-codec"]
    cspec, codec = codec_doc["spec"]["template"]["spec"], _container(codec_doc, "codec")
    assert "initContainers" not in cspec
    found = _source(cspec, codec, _env(codec)["TRAILERLINK_SEALING_PUBLIC_KEYS"])
    assert (
        found and found[0]["secret"]["secretName"] == values["secrets"]["sealingPublicKeys"]["name"]
    )
    assert "TRAILERLINK_SEALING_KEYS_SYNC_DIR" not in _env(
        _container(docs["trailerlink-uplink"], "uplink")
    )


def test_pacs_storage_commitment_reports_can_reach_the_ingest(render: Renderer) -> None:
    rendered = render("central", "example-values.yaml")
    values = _values("central", "example-values.yaml")
    commitment = values["ingest"]["pacs"]["storageCommitment"]
    assert commitment["enabled"]
    doc = rendered.named("Deployment", "trailerlink-ingest")
    ingest = _container(doc, "ingest")
    env = _env(ingest)
    assert env["TRAILERLINK_PACS_STORAGE_COMMITMENT"] == "true"
    port = int(env["TRAILERLINK_COMMITMENT_PORT"])
    assert {"name": "commitment", "containerPort": port, "protocol": "TCP"} in ingest["ports"]
    service = rendered.named("Service", "trailerlink-ingest-commitment")
    assert service["spec"]["type"] == commitment["service"]["type"]
    assert service["spec"]["selector"] == doc["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "commitment"
    rules = rendered.named("NetworkPolicy", "trailerlink-ingest")["spec"]["ingress"]
    (rule,) = [r for r in rules if {"protocol": "TCP", "port": port} in r["ports"]]
    assert [p["ipBlock"]["cidr"] for p in rule["from"]] == values["ingest"]["pacs"]["cidrs"]

    off = render("central")
    assert "TRAILERLINK_PACS_STORAGE_COMMITMENT" not in _env(
        _container(off.named("Deployment", "trailerlink-ingest"), "ingest")
    )
    assert "trailerlink-ingest-commitment" not in {
        s["metadata"]["name"] for s in off.of_kind("Service")
    }


def _run_seed(script: str, roots: dict[str, Path]) -> None:
    """Run an init container's Python with its absolute paths moved under tmp dirs."""
    for prefix, target in roots.items():
        script = script.replace(prefix, str(target))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)


def test_ingest_seed_creates_the_access_list_and_keys_once(
    render: Renderer, tmp_path: Path
) -> None:
    rendered = render("central", "example-values.yaml")
    spec = rendered.named("Deployment", "trailerlink-ingest")["spec"]["template"]["spec"]
    (seed,) = spec["initContainers"]
    fleet = rendered.named("ConfigMap", "trailerlink-fleet")["data"]["trailers.json"]
    shared, etc = tmp_path / "shared", tmp_path / "etc"
    (etc / "fleet").mkdir(parents=True)
    (etc / "fleet" / "trailers.json").write_text(fleet)
    (etc / "sealing-keys").mkdir()
    (etc / "sealing-keys" / "dc-00000000000000aa.pem").write_text("key a")
    shared.mkdir()
    roots = {"/var/lib/trailerlink-shared": shared, "/etc/trailerlink": etc}
    _run_seed(seed["args"][0], roots)
    access = json.loads((shared / "access" / "trailers.json").read_text())
    assert access == {"allow": json.loads(fleet), "revoked": [], "revoked_serials": []}
    assert (shared / "sealing-keys" / "dc-00000000000000aa.pem").read_text() == "key a"

    # enrol/revoke and keys rotate/retire happened meanwhile; a restart keeps their work
    access["allow"] = [t for t in access["allow"] if t != "trailer-007"] + ["trailer-099"]
    access["revoked"] = ["trailer-007"]
    (shared / "access" / "trailers.json").write_text(json.dumps(access))
    (shared / "sealing-keys" / "dc-00000000000000aa.pem").unlink()
    (shared / "sealing-keys" / "dc-00000000000000bb.pem").write_text("key b")
    _run_seed(seed["args"][0], roots)
    again = json.loads((shared / "access" / "trailers.json").read_text())
    assert "trailer-007" not in again["allow"] and again["revoked"] == ["trailer-007"]
    assert "trailer-099" in again["allow"]
    assert sorted(p.name for p in (shared / "sealing-keys").iterdir()) == [
        "dc-00000000000000bb.pem"
    ]


def test_codec_seed_fills_an_empty_key_directory_only(render: Renderer, tmp_path: Path) -> None:
    rendered = render("trailer")
    spec = rendered.named("Deployment", "trailerlink-codec")["spec"]["template"]["spec"]
    (seed,) = spec["initContainers"]
    spool, etc = tmp_path / "spool", tmp_path / "etc"
    (etc / "sealing-keys").mkdir(parents=True)
    (etc / "sealing-keys" / "dc-00000000000000aa.pem").write_text("public a")
    roots = {"/var/lib/trailerlink": spool, "/etc/trailerlink": etc}
    _run_seed(seed["args"][0], roots)
    synced = spool / "sealing-keys"
    assert (synced / "dc-00000000000000aa.pem").read_text() == "public a"
    # after a rotation the uplink's sync owns the directory: the seed leaves it alone
    (synced / "dc-00000000000000aa.pem").unlink()
    (synced / "dc-00000000000000bb.pem").write_text("public b")
    _run_seed(seed["args"][0], roots)
    assert sorted(p.name for p in synced.iterdir()) == ["dc-00000000000000bb.pem"]

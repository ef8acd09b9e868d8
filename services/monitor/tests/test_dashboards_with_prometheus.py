"""The dashboards and alert rules against what the services really export: a real
Prometheus scrapes a running fleet monitor and agent, every metric the rules and
dashboards name for them is there, each of their panels' queries answers with data, and
the completeness alert fires in that Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from trailerlink_events import topics
from trailerlink_events.messages import (
    Heartbeat,
    LinkState,
    ObjectDelivered,
    ObjectIdentity,
    PerformedInstance,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    new_meta,
    timestamp,
)
from trailerlink_testing.prometheus import PrometheusServer, prometheus_binary
from trailerlink_testing.scrape import publish_events, sample
from trailerlink_testing.waiting import wait_until

from .conftest import make_certificate

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
SUFFIXES = ("_bucket", "_sum", "_count", "_created")
# Metrics of services this test does not run (the ingest): their names are checked
# against the source by tests/charts/test_monitoring.py, here only reported.
NOT_RUN_HERE = ("trailerlink_ingest_",)


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b(trailerlink_[a-z0-9_]+)\b", expr))


def _base(name: str) -> str:
    return next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)


def _rule_exprs() -> list[str]:
    out = []
    for path in sorted((MONITORING / "rules").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [r["expr"] for r in group["rules"]]
    return out


def _panels() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in sorted((MONITORING / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out.append((path.name, panel["title"], [t["expr"] for t in panel["targets"]]))
    return out


@pytest.fixture(scope="module")
def fleet_with_traffic(module_monitors, topics_created: str):
    """One fleet monitor, one agent and one Prometheus for the module's tests."""
    if prometheus_binary() is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    start_monitor = module_monitors
    tmp_path = module_monitors.workdir
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    fleet_file = tmp_path / "trailers.yaml"
    fleet_file.write_text(f'trailers:\n  - "{trailer}"\n')
    _, fleet = start_monitor(
        "fleet",
        TRAILERLINK_FLEET_FILE=str(fleet_file),
        TRAILERLINK_COMPLETENESS_DEADLINE_SECONDS="1",
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    cert, _ = make_certificate(tmp_path, trailer, days=30)
    _, agent = start_monitor(
        "agent",
        TRAILERLINK_TRAILER_ID=f"{trailer}-agent",
        TRAILERLINK_SPOOL_DIR=str(spool),
        TRAILERLINK_CLIENT_CERT_FILE=str(cert),
        TRAILERLINK_CA_FILE=str(cert),
        TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS="0.5",
    )
    prom = PrometheusServer(
        tmp_path / "prometheus",
        {
            "trailerlink-monitor": [fleet.removeprefix("http://"), agent.removeprefix("http://")],
        },
        rule_files=sorted((MONITORING / "rules").glob("*.yaml")),
    )
    prom.start()
    try:
        prom.wait_for_targets_up()
        _traffic(topics_created, trailer)
        wait_until(
            lambda: (
                sample(fleet, "trailerlink_monitor_completeness_missing_images", trailer_id=trailer)
                == 1
            ),
            30,
            "fleet saw the traffic",
        )
        wait_until(
            lambda: sample(fleet, "trailerlink_kafka_dead_letters_total") is not None,
            30,
            "the bad record dead-lettered",
        )
        yield prom, fleet, agent, trailer
    finally:
        prom.stop()


def _traffic(bootstrap: str, trailer: str) -> None:
    now = datetime.now(UTC)
    study = "2.25." + str(uuid.uuid4().int)
    sops = ["2.25." + str(uuid.uuid4().int) for _ in range(2)]

    def heartbeat(seq: int) -> Heartbeat:
        hb = Heartbeat(
            meta=new_meta("monitor", trailer),
            sequence=seq,
            backlog_objects=3,
            backlog_bytes=3 << 20,
            oldest_unsent_age_seconds=120,
            disk_free_bytes=40 << 30,
            disk_total_bytes=100 << 30,
            link_state=LinkState.LINK_STATE_UP,
            link_goodput_bytes_per_second=250_000,
            worklist_cache_age_seconds=30,
            canary_ok=True,
            canary_seconds=95,
            canary_at=timestamp(now),
            client_certificate_not_after=timestamp(now + timedelta(days=10)),
        )
        hb.versions["gateway"] = "0.1.0"
        return hb

    def failing(hb: Heartbeat) -> Heartbeat:
        hb.failed_objects, hb.dead_letters = 2, 1  # on the trailer: seen only here
        return hb

    key = f"{trailer}/{study}"
    publish_events(
        bootstrap,
        [
            (topics.CENTRAL_HEARTBEAT, trailer, heartbeat(1)),
            (topics.CENTRAL_HEARTBEAT, trailer, failing(heartbeat(3))),  # 2 was lost
            (
                topics.CENTRAL_PROCEDURE_STEP,
                key,
                ProcedureStepUpdated(
                    meta=new_meta("worklist", trailer),
                    mpps_sop_instance_uid="2.25.1",
                    status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
                    study_instance_uid=study,
                    ended_at=timestamp(now),
                    performed_instances=[PerformedInstance(sop_instance_uid=s) for s in sops],
                ),
            ),
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                ObjectDelivered(
                    meta=new_meta("ingest", trailer),
                    object=ObjectIdentity(study_instance_uid=study, sop_instance_uid=sops[0]),
                    received_at=timestamp(now - timedelta(minutes=12)),
                    delivered_at=timestamp(now),
                ),
            ),
            # No trailer id: the fleet monitor dead-letters it.
            (topics.CENTRAL_HEARTBEAT, "x", Heartbeat(sequence=1)),
        ],
    )


def test_rules_and_dashboards_name_metrics_the_running_services_export(
    fleet_with_traffic,
) -> None:
    _, fleet, agent, _ = fleet_with_traffic
    exported = set()
    for base in (fleet, agent):
        text = httpx.get(f"{base}/metrics").text
        exported |= {_base(n) for n in re.findall(r"^(trailerlink_[a-z0-9_]+)", text, re.M)}
        lint = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            text=True,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    used = set()
    for expr in _rule_exprs() + [e for _, _, exprs in _panels() for e in exprs]:
        used |= {_base(n) for n in _names(expr)}
    checked = {n for n in used if not n.startswith(NOT_RUN_HERE)}
    assert checked - exported == set()
    assert "trailerlink_monitor_completeness_missing_images" in checked


def test_every_panel_of_the_running_services_answers_with_data(fleet_with_traffic) -> None:
    prom, _, _, trailer = fleet_with_traffic
    wanted = []
    for board, title, exprs in _panels():
        names = set().union(*(_names(e) for e in exprs))
        if any(n.startswith(NOT_RUN_HERE) for n in names):
            continue
        # Template variables as Grafana would fill them: this trailer, every job.
        wanted += [
            (board, title, e.replace("$trailer", trailer).replace("$job", ".+")) for e in exprs
        ]
    assert len(wanted) >= 20

    def empty() -> list[str]:
        return [f"{b}: {t}: {e}" for b, t, e in wanted if not prom.query(e)]

    # rate() and increase() need two scrapes after the traffic; wait, then name any gap.
    try:
        wait_until(lambda: not empty(), 45, "every panel query answered", interval=1)
    except Exception:
        pytest.fail("panels without data:\n" + "\n".join(empty()))


def test_the_completeness_alert_fires_in_prometheus(fleet_with_traffic) -> None:
    prom, _, _, trailer = fleet_with_traffic
    wait_until(
        lambda: prom.query(
            f'ALERTS{{alertname="TrailerlinkImagesMissingFromPacs", alertstate="firing", '
            f'trailer_id="{trailer}"}}'
        ),
        30,
        "TrailerlinkImagesMissingFromPacs firing",
    )


def test_the_certificate_alert_fires_in_prometheus(fleet_with_traffic) -> None:
    # The trailer's heartbeat said its client certificate expires in 10 days.
    prom, _, _, trailer = fleet_with_traffic
    wait_until(
        lambda: prom.query(
            f'ALERTS{{alertname="TrailerlinkCertificateExpiring", trailer_id="{trailer}"}}'
        ),
        30,
        "TrailerlinkCertificateExpiring pending or firing",
    )


@pytest.mark.parametrize(
    "alert", ["TrailerlinkTrailerObjectsFailed", "TrailerlinkTrailerDeadLetters"]
)
def test_trailer_failures_alert_from_the_first_heartbeat_in_prometheus(
    fleet_with_traffic, alert: str
) -> None:
    # The trailer's series were born with the failure in them: no increase() to see.
    prom, _, _, trailer = fleet_with_traffic
    wait_until(
        lambda: prom.query(
            f'ALERTS{{alertname="{alert}", alertstate="firing", trailer_id="{trailer}"}}'
        ),
        30,
        f"{alert} firing",
    )


def test_the_first_dead_letter_alerts_in_prometheus(fleet_with_traffic) -> None:
    # The fleet monitor dead-lettered one record of the heartbeat topic.
    prom, *_ = fleet_with_traffic
    wait_until(
        lambda: prom.query(
            f'ALERTS{{alertname="TrailerlinkDeadLetters", alertstate="firing", '
            f'topic="{topics.CENTRAL_HEARTBEAT}"}}'
        ),
        30,
        "TrailerlinkDeadLetters firing",
    )

"""The dashboards against the whole system, healthy and then in an incident: a real
Prometheus scrapes every service of both sites (job ``trailerlink-<component>``, as the
central chart's ServiceMonitor names them) and evaluates the repository's rules; every
panel of every generated dashboard must answer with data in both states, the fleet's top
row must read green when all is well and red/amber in the incident, and the operator's
pause and cap must show in the per-trailer table.

Grafana cannot run here, so the panels are drawn to PNG from the same query results
(``trailerlink_testing.panels``) for a person to look at: ``.run/dashboards/<state>/``
(the paths are listed at the end of the pytest run).

The incident, all at once: the trailer's uplink paused and capped by an operator while a
woman is screened (her images wait on the trailer past the completeness deadline, the
canary times out), and a second trailer of the fleet whose last heartbeat is 20 minutes
old (silent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from trailerlink_events import topics
from trailerlink_events.messages import Heartbeat, LinkState, new_meta, timestamp
from trailerlink_testing import panels
from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.prometheus import PrometheusServer, prometheus_binary
from trailerlink_testing.scrape import publish_events
from trailerlink_testing.stack import (
    CentralStack,
    SimulatedModality,
    TrailerStack,
    synthetic_day,
)
from trailerlink_testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
OUT = ROOT / ".run" / "dashboards"
SILENT = "trailer-quiet"  # in the fleet list; its last heartbeat is 20 minutes old
DEADLINE = 30  # the fleet's completeness deadline (s): an image later than this is missing
CANARY_DEADLINE = 20
TOKEN = "dashboards-test-admin-token"
WOMEN = 3
# Both sites and a Prometheus start for this module, and the incident waits out deadlines.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Watched:
    central: CentralStack
    trailer: TrailerStack
    modality: SimulatedModality
    prom: PrometheusServer

    @property
    def variables(self) -> dict[str, str]:
        """Template variables as Grafana fills them: this trailer, every job."""
        return {"trailer": self.central.trailer_id, "job": ".+", "datasource": "prometheus"}

    def admin(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        rsp = httpx.post(
            self.trailer.uplink.url(f"/v1/admin/uplink/{path}"),
            json=body or {},
            headers={"Authorization": f"Bearer {TOKEN}", "X-Trailerlink-Actor": "dashboards-test"},
            timeout=10,
        )
        rsp.raise_for_status()
        return rsp.json()


def _boards() -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text())
        for p in sorted((MONITORING / "dashboards").glob("*.json"))
    }


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    if prometheus_binary() is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    work = tmp_path_factory.mktemp("dashboards")
    token = work / "admin-token"
    token.write_text(TOKEN)
    central = CentralStack(
        work / "central",
        ingest_env={"TRAILERLINK_PACS_CANARY_AE_TITLE": "PACSTEST"},
        fleet_env={"TRAILERLINK_COMPLETENESS_DEADLINE_SECONDS": str(DEADLINE)},
        other_trailers=[SILENT],
    )
    central.pacs.extra_config["DicomCheckCalledAet"] = False  # the canary's test AE too
    with FaultProxy(("127.0.0.1", central.tus_port)) as link:
        trailer = TrailerStack(
            work / "trailer",
            central,
            synthetic_day(WOMEN, seed=11),
            ingest_url=f"https://127.0.0.1:{link.port}",
            uplink_env={"TRAILERLINK_ADMIN_TOKEN_FILE": str(token)},
            canary_env={
                "TRAILERLINK_CANARY_INTERVAL_SECONDS": "2",
                "TRAILERLINK_CANARY_TIMEOUT_SECONDS": str(CANARY_DEADLINE),
                "TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS": "1",
            },
        )
        with (
            trailer.booting(),
            central,
            trailer,
            SimulatedModality(trailer, work / "modality", rows=128, columns=104) as modality,
        ):
            modality.wait_for_worklist(WOMEN)
            jobs: dict[str, list[str]] = {}
            for name, service in [*central.services.items(), *trailer.services.items()]:
                component = "monitor" if name in ("fleet", "agent") else name
                jobs.setdefault(f"trailerlink-{component}", []).append(
                    f"{service.host}:{service.http_port}"
                )
            with PrometheusServer(
                work / "prometheus", jobs, rule_files=sorted((MONITORING / "rules").glob("*.yaml"))
            ) as prom:
                prom.wait_for_targets_up(60)
                yield Watched(central, trailer, modality, prom)


def _evaluate(w: Watched, board: dict) -> list[panels.PanelData]:
    return [panels.evaluate(w.prom.url, p, w.variables) for p in board["panels"]]


def _without_data(w: Watched) -> list[str]:
    gaps = []
    for name, board in _boards().items():
        for data in _evaluate(w, board):
            gaps += [f"{name}: {data.title}: {ref}" for ref in data.empty_targets()]
    return gaps


def _every_panel_answers(w: Watched) -> None:
    # rate() and increase() need two scrapes after the traffic: wait, then name any gap.
    try:
        wait_until(lambda: not _without_data(w), 60, "every panel query answered", interval=2)
    except Exception:
        pytest.fail("panels without data:\n" + "\n".join(_without_data(w)))


def _top_row(w: Watched) -> dict[str, tuple[float, str | None]]:
    """The fleet board's top row: title -> (value, threshold colour)."""
    board = _boards()["trailerlink-fleet"]
    out = {}
    for panel in board["panels"]:
        if panel["gridPos"]["y"] == 0:
            data = panels.evaluate(w.prom.url, panel, w.variables)
            value = data.series[0].last if data.series else math.nan
            out[panel["title"]] = (value, panels.display(value, panels.field_config(panel))[1])
    return out


def _render(w: Watched, state: str) -> list[Path]:
    written = []
    for name, board in _boards().items():
        written.append(
            panels.render(board, _evaluate(w, board), OUT / state / f"{name}.png", subtitle=state)
        )
    for path in written:
        print(f"dashboard drawn ({state}): {path}")
    return written


def test_healthy_every_panel_answers_and_the_top_row_is_green(watched: Watched) -> None:
    w = watched
    studies = [
        w.modality.screen(item, seed=i) for i, item in enumerate(w.modality.query_worklist()[:2])
    ]
    wait_until(lambda: all(s.confirmed for s in studies), 180, "both women committed", interval=0.5)
    fleet, trailer_id = w.central.fleet, w.central.trailer_id
    wait_until(
        lambda: (
            fleet.metric("trailerlink_monitor_objects_delivered_total", trailer_id=trailer_id) >= 8
        ),
        120,
        "8 images in PACS",
    )
    wait_until(
        lambda: fleet.metric("trailerlink_monitor_trailer_canary_ok", trailer_id=trailer_id) == 1,
        120,
        "a canary passed",
    )
    _every_panel_answers(w)

    def green() -> bool:
        top = _top_row(w)
        return len(top) == 4 and all(
            value == 0 and colour == "green" for value, colour in top.values()
        )

    # (A canary run slowed past its deadline by a busy machine reads amber until the next.)
    wait_until(green, 60, "the top row all green", interval=2)
    for path in _render(w, "healthy"):
        assert path.stat().st_size > 10_000


def _stale_heartbeat(trailer_id: str, minutes: float) -> Heartbeat:
    sent = datetime.now(UTC) - timedelta(minutes=minutes)
    hb = Heartbeat(
        meta=new_meta("monitor", trailer_id),
        sequence=1,
        backlog_objects=12,
        backlog_bytes=40 << 20,
        oldest_unsent_age_seconds=minutes * 60,
        link_state=LinkState.LINK_STATE_DOWN,
        disk_free_bytes=60 << 30,
        disk_total_bytes=100 << 30,
        canary_ok=True,
        canary_seconds=80,
        canary_at=timestamp(sent),
    )
    hb.meta.occurred_at.CopyFrom(timestamp(sent))
    return hb


def test_incident_every_panel_answers_and_the_top_row_turns_red(watched: Watched) -> None:
    w = watched
    fleet, trailer_id = w.central.fleet, w.central.trailer_id
    w.admin("cap", {"bytes_per_second": 250_000})
    w.admin("pause")
    try:
        # A second trailer last heard from 20 minutes ago.
        publish_events(
            w.central.broker.bootstrap,
            [(topics.CENTRAL_HEARTBEAT, SILENT, _stale_heartbeat(SILENT, 20))],
        )
        # A woman screened while the uplink is held: her images wait past the deadline.
        item = w.modality.query_worklist()[2]
        study = w.modality.screen(item, seed=5)
        # (Her storage commitment waits for PACS, so it cannot be what we wait for.)
        wait_until(lambda: len(study.sent) == 4, 60, "the held woman's images stored")
        wait_until(
            lambda: (
                fleet.metric(
                    "trailerlink_monitor_completeness_pending_images", trailer_id=trailer_id
                )
                + fleet.metric(
                    "trailerlink_monitor_completeness_missing_images", trailer_id=trailer_id
                )
                >= 4
            ),
            60,
            "the fleet expects her images (MPPS completed)",
        )
        wait_until(
            lambda: (
                fleet.metric("trailerlink_monitor_trailer_uplink_paused", trailer_id=trailer_id)
                == 1
            ),
            60,
            "the fleet sees the operator's pause",
        )

        def red() -> bool:
            top = _top_row(w)
            return all(value >= 1 for value, _ in top.values())

        wait_until(
            red,
            DEADLINE + CANARY_DEADLINE + 90,
            "silent, not delivering, canary failing and past deadline all raised",
            interval=2,
        )
        top = _top_row(w)
        assert all(colour in ("orange", "red") for _, colour in top.values()), top
        _every_panel_answers(w)
        # The per-trailer table names the operator's hold.
        table = next(p for p in _boards()["trailerlink-fleet"]["panels"] if p["type"] == "table")
        columns, rows = panels.table_rows(panels.evaluate(w.prom.url, table, w.variables))
        row = next(r for r in rows if r[columns.index("Trailer")][0] == trailer_id)
        cell = dict(zip(columns, (text for text, _ in row), strict=True))
        assert cell["Uplink"] == "paused", cell
        assert cell["Operator cap"] != "none", cell
        for path in _render(w, "incident"):
            assert path.stat().st_size > 10_000
    finally:
        w.admin("resume")

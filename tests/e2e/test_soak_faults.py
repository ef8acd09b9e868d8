"""Fault injection during a long run (`make soak`; skipped by the default `make test`):
at least 200 images through the whole chain while every service is killed with SIGKILL
at random moments and restarted, each Kafka broker is restarted, Orthanc is stopped for
minutes and the link is cut again and again, mid-chunk included. Then: every image the
modality saw succeed — counted per SOP UID over every attempt, including attempts whose
association failed after some successes — is in Orthanc exactly once and byte-identical,
every storage commitment is confirmed, no dead letter, the backlog is zero, the monitor
misses nothing."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_testing.stack import StudyResult
from trailerlink_testing.waiting import wait_until

from .conftest import System, _system

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.kafka,
    pytest.mark.skipif(
        os.environ.get("TRAILERLINK_SOAK") != "1", reason="long fault-injection run: `make soak`"
    ),
]

WOMEN = int(os.environ.get("SOAK_WOMEN", 50))  # x 4 views >= 200 images
PACS_OUTAGE_SECONDS = float(os.environ.get("SOAK_PACS_OUTAGE_SECONDS", 120))
RESTART_TIMEOUT_SECONDS = 300.0


@pytest.fixture(scope="module")
def soak_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from _system(tmp_path_factory.mktemp("soak"), WOMEN)


class Chaos(threading.Thread):
    """Kills, restarts and outages at random moments until stopped; logs what it did."""

    def __init__(self, system: System, seed: int = 10) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.done: list[str] = []
        self.error: BaseException | None = None

    def _pause(self, low: float, high: float) -> bool:
        return self.stop_event.wait(self.rng.uniform(low, high))

    def run(self) -> None:
        s = self.system
        services = {
            **{f"trailer/{k}": v for k, v in s.trailer.services.items()},
            **{f"central/{k}": v for k, v in s.central.services.items()},
        }
        actions = [
            *(("kill", name) for name in services for _ in range(2)),
            ("broker", "trailer"),
            ("broker", "central"),
            ("pacs", ""),
            *(("cut", "") for _ in range(6)),
        ]
        self.rng.shuffle(actions)
        try:
            for kind, name in actions:
                if self._pause(2, 8):
                    return
                if kind == "kill":
                    services[name].kill9()
                    self._pause(0.5, 3)
                    services[name].restart(timeout=RESTART_TIMEOUT_SECONDS)
                elif kind == "broker":
                    broker = s.trailer.broker if name == "trailer" else s.central.broker
                    broker.stop()
                    self._pause(1, 5)
                    # Replaying its log takes minutes on 2 cores shared with other suites.
                    broker.start(timeout=RESTART_TIMEOUT_SECONDS)
                elif kind == "pacs":
                    s.central.pacs.stop()
                    self.stop_event.wait(PACS_OUTAGE_SECONDS)
                    s.central.pacs.start(timeout=RESTART_TIMEOUT_SECONDS)
                else:
                    s.link.cut_after(self.rng.randint(1_000, 200_000))
                self.done.append(f"{time.strftime('%H:%M:%S')} {kind} {name}".strip())
        except BaseException as exc:  # reported by the test
            self.error = exc


def _screen_retrying(system: System, item, seed: int) -> list[StudyResult]:
    """The radiographer's way: if the gateway or worklist is down, repeat the study.

    Every attempt is kept: what the gateway acknowledged in an attempt that then failed
    (association aborted after some successes) must arrive as surely as the rest, so it
    is booked (``SimulatedModality.acknowledged``) and its commitment requested too.
    """
    attempts = [system.modality.screen(item, seed=seed, commit=False)]
    if attempts[0].failed or len(attempts[0].sent) < 4:

        def repeat() -> StudyResult | None:
            r = system.modality.screen(item, seed=seed, commit=False)
            attempts.append(r)
            return r if not r.failed and len(r.sent) == 4 else None

        wait_until(repeat, 300, "the study stored after a retry", interval=2)
    for study in attempts:
        if study.sent:
            system.screened.append(study)
            wait_until(
                lambda st=study: system.modality.request_commitment(st),
                300,
                "the commitment request accepted",
                interval=2,
            )
    return attempts


def test_nothing_acknowledged_is_lost_through_kills_restarts_and_outages(
    soak_system: System,
) -> None:
    s = soak_system
    items = s.modality.query_worklist()
    chaos = Chaos(s)
    chaos.start()
    try:
        for i, item in enumerate(items[:WOMEN]):
            _screen_retrying(s, item, seed=100 + i)
        chaos.join(timeout=1800)
    finally:
        chaos.stop_event.set()
        chaos.join(timeout=300)
    assert chaos.error is None, f"{chaos.error!r} after {chaos.done}"
    if not s.central.pacs.running():
        s.central.pacs.start()
    studies = s.screened
    must_arrive = dict(s.modality.acknowledged)  # every C-STORE Success, any attempt
    assert len(must_arrive) >= 200
    assert must_arrive == {sop: sha for st in studies for sop, sha in st.sent.items()}
    assert s.modality.acknowledged_twice_differently == []
    s.wait_confirmed(studies, timeout=1800)
    assert not any(st.commit_failed for st in studies)
    s.assert_each_exactly_once_byte_identical(must_arrive)
    wait_until(lambda: s.trailer.backlog_objects() == 0, 300, "uplink backlog empty")
    assert s.dead_letters() == (0, 0)  # none was provoked on purpose
    wait_until(
        lambda: s.central.fleet.metric("trailerlink_monitor_completeness_missing_images") == 0,
        120,
        "nothing missing",
    )


def test_zz_no_patient_data_in_the_soak_logs(soak_system: System) -> None:
    from trailerlink_testing.stack import booking_secrets, scan_logs_for

    logs: list[Path] = soak_system.trailer.log_files() + soak_system.central.log_files()
    assert scan_logs_for(logs, booking_secrets(soak_system.bookings)) == {}

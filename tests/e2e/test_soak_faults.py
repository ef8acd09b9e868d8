"""Fault injection during a long run (`make soak`; skipped by the default `make test`):
at least 200 images through the whole chain while every service is killed with SIGKILL
at random moments and restarted, each Kafka broker is restarted, Orthanc is stopped for
minutes and the link is cut again and again, mid-chunk included. Then: every image the
modality saw succeed is in Orthanc exactly once and byte-identical, every storage
commitment is confirmed, no dead letter, the backlog is zero, the monitor misses
nothing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_events.topics import CENTRAL_DEAD_LETTER, TRAILER_DEAD_LETTER
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.stack import StudyResult
from trailerlink_testing.waiting import ConditionTimeout, wait_until

from .conftest import System, _system

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.kafka,
    pytest.mark.skipif(os.environ.get("TRAILERLINK_SOAK") != "1",
                       reason="long fault-injection run: `make soak`"),
]

WOMEN = int(os.environ.get("SOAK_WOMEN", 50))  # x 4 views >= 200 images
PACS_OUTAGE_SECONDS = float(os.environ.get("SOAK_PACS_OUTAGE_SECONDS", 120))


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
        services = {**{f"trailer/{k}": v for k, v in s.trailer.services.items()},
                    **{f"central/{k}": v for k, v in s.central.services.items()}}
        actions = [*(("kill", name) for name in services for _ in range(2)),
                   ("broker", "trailer"), ("broker", "central"), ("pacs", ""),
                   *(("cut", "") for _ in range(6))]
        self.rng.shuffle(actions)
        try:
            for kind, name in actions:
                if self._pause(2, 8):
                    return
                if kind == "kill":
                    services[name].kill9()
                    self._pause(0.5, 3)
                    services[name].restart(timeout=120)
                elif kind == "broker":
                    broker = s.trailer.broker if name == "trailer" else s.central.broker
                    broker.stop()
                    self._pause(1, 5)
                    broker.start()
                elif kind == "pacs":
                    s.central.pacs.stop()
                    self.stop_event.wait(PACS_OUTAGE_SECONDS)
                    s.central.pacs.start()
                else:
                    s.link.cut_after(self.rng.randint(1_000, 200_000))
                self.done.append(f"{time.strftime('%H:%M:%S')} {kind} {name}".strip())
        except BaseException as exc:  # reported by the test
            self.error = exc


def _screen_retrying(system: System, item, seed: int) -> StudyResult:
    """The radiographer's way: if the gateway or worklist is down, try again."""
    study = system.modality.screen(item, seed=seed, commit=False)
    if study.failed or len(study.sent) < 4:
        # The radiographer repeats the study (new images; what was acknowledged of the
        # first attempt is checked no further here, only what ends up committed).
        again = wait_until(lambda: (r := system.modality.screen(item, seed=seed, commit=False))
                           and not r.failed and len(r.sent) == 4 and r, 300,
                           "the study stored after a retry", interval=2)
        study = again
    system.screened.append(study)
    wait_until(lambda: system.modality.request_commitment(study), 300,
               "the commitment request accepted", interval=2)
    return study


def _no_dead_letters(bootstrap: str, topic: str) -> list:
    try:
        return asyncio.run(read_events(bootstrap, topic, lambda seen: bool(seen), timeout=15))
    except ConditionTimeout:
        return []


def test_nothing_acknowledged_is_lost_through_kills_restarts_and_outages(
        soak_system: System) -> None:
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
    assert sum(len(st.sent) for st in studies) >= 200
    s.wait_confirmed(studies, timeout=1800)
    assert not any(st.commit_failed for st in studies)
    for st in studies:
        for sop, sha in st.sent.items():
            body = json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop}}).encode()
            req = urllib.request.Request(s.central.pacs.url + "/tools/find", data=body,  # noqa: S310
                                         method="POST")
            with urllib.request.urlopen(req, timeout=10) as rsp:  # noqa: S310 - local PACS
                assert len(json.loads(rsp.read())) == 1, f"{sop} not exactly once"
            assert s.central.pacs_dataset_sha256(sop) == sha, sop
    wait_until(lambda: s.trailer.backlog_objects() == 0, 300, "uplink backlog empty")
    assert _no_dead_letters(s.trailer.broker.bootstrap, TRAILER_DEAD_LETTER) == []
    assert _no_dead_letters(s.central.broker.bootstrap, CENTRAL_DEAD_LETTER) == []
    wait_until(lambda: s.central.fleet.metric(
        "trailerlink_monitor_completeness_missing_images") == 0, 120, "nothing missing")


def test_zz_no_patient_data_in_the_soak_logs(soak_system: System) -> None:
    from trailerlink_testing.stack import booking_secrets, scan_logs_for

    logs: list[Path] = soak_system.trailer.log_files() + soak_system.central.log_files()
    assert scan_logs_for(logs, booking_secrets(soak_system.bookings)) == {}

"""pytest fixtures shared by every test folder (loaded by the root conftest.py).

``kafka_broker``: one real KRaft broker per test session, on free ports, with every
registry topic of both sites created. Topics are shared by the whole session, so a
test uses its own consumer group (``unique_group``) and its own keys/UIDs, and reads
with :func:`trailerlink_testing.kafka_reader.read_events`.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trailerlink_testing.kafka import KafkaBroker

NETNS_DIR = Path("/run/netns")


def _mounted(point: Path) -> bool:
    """Whether ``point`` is a mount point (a bind mount on the same filesystem too, which
    os.path.ismount misses)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(point) for line in mountinfo)


@pytest.fixture(scope="session", autouse=True)
def _netns_mount_left_as_found() -> Iterator[None]:
    """The first `ip netns add` bind-mounts /run/netns onto itself and no `ip netns del`
    undoes it: once the session's namespaces are gone, unmount it if the session made it."""
    mounted_before = _mounted(NETNS_DIR)
    yield
    if not mounted_before and _mounted(NETNS_DIR) and not any(NETNS_DIR.iterdir()):
        subprocess.run(["umount", str(NETNS_DIR)], check=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running broker with the registry's topics; stopped at the end of the session."""
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka")))
    broker.start()
    try:
        broker.create_topics("trailer")
        broker.create_topics("central")
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """bootstrap.servers of the session broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def unique_group() -> str:
    """A consumer group id no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"

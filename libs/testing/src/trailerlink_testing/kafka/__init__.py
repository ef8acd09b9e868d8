"""Real Apache Kafka (KRaft) for development and tests: one node, or a replicated cluster.

The broker's jars come from Maven Central (``pom.xml`` beside this file, fetched with
``mvn dependency:copy-dependencies`` into a cache directory, never into the repo).
:class:`KafkaBroker` formats a fresh data directory, starts
``java -cp 'libs/*' kafka.Kafka server.properties`` and waits until an admin call
answers. ``python -m trailerlink_testing.kafka start|stop`` is what ``make kafka`` runs.
:class:`KafkaCluster` runs three such nodes as one cluster (each broker and controller,
a static three-voter quorum) with the data centre's durability settings: replication
factor 3 and ``min.insync.replicas=2``, so one broker can die without losing or refusing
anything acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from trailerlink_events.kafka import create_topics, list_topics
from trailerlink_events.topics import Site, topics_for_site

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceExited
from trailerlink_testing.waiting import wait_until

KAFKA_VERSION = "4.1.1"
READY_TIMEOUT_SECONDS = 90.0


def cache_dir() -> Path:
    """Where the broker's jars are cached (``TRAILERLINK_CACHE`` or ~/.cache/trailerlink)."""
    base = os.environ.get("TRAILERLINK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trailerlink"
    )
    return Path(base)


def ensure_kafka_jars() -> Path:
    """Return the directory holding the broker's jars, fetching them once if needed."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not fetch at once
        if marker.exists():
            return libs
        shutil.rmtree(libs, ignore_errors=True)
        pom = resources.files("trailerlink_testing.kafka") / "pom.xml"
        with resources.as_file(pom) as pom_path:
            subprocess.run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={libs}",
                    "-DincludeScope=runtime",
                    f"-Dkafka.version={KAFKA_VERSION}",
                ],
                check=True,
            )
        marker.write_text(KAFKA_VERSION)
    return libs


_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
# one node: every topic has one replica; a cluster: three, two of them in sync to
# acknowledge (acks=all), like the data centre's Kafka
default.replication.factor={replicas}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_insync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_insync}
min.insync.replicas={min_insync}
group.initial.rebalance.delay.ms=0
# topics exist only if the registry (proto/topics.yaml) says so
auto.create.topics.enable=false
num.partitions=1
# tests restart the broker: flush so a kill -9 loses nothing acknowledged
log.flush.interval.messages=1
"""

_LOG4J2 = """\
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1 with its own data directory.

    Alone by default; :class:`KafkaCluster` makes three that share a cluster id, a quorum
    (``voters``) and the replication settings.
    """

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        node_id: int = 1,
        voters: str | None = None,
        replicas: int = 1,
        min_insync: int = 1,
        cluster_id: str | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.node_id = node_id
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.replicas = replicas
        self.min_insync = min_insync
        self.cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.work_dir / "broker.pid"

    def _java(self, libs: Path, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def format(self) -> None:
        """Write the configuration and format a fresh, empty data directory."""
        libs = ensure_kafka_jars()
        data_dir = self.work_dir / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "server.properties").write_text(
            _SERVER_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.voters,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=data_dir,
                replicas=self.replicas,
                min_insync=self.min_insync,
            )
        )
        (self.work_dir / "log4j2.properties").write_text(
            _LOG4J2.format(log_file=self.log_file, level="INFO")
        )
        cluster_id = self.cluster_id or new_cluster_id()
        subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.work_dir / "server.properties"),
            ),
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = READY_TIMEOUT_SECONDS, wait: bool = True) -> None:
        """Start the broker (formatting first if never formatted); return when it answers
        (at once if not ``wait``: a cluster's node cannot answer before its quorum)."""
        if not (self.work_dir / "data" / "meta.properties").exists():
            self.format()
        libs = ensure_kafka_jars()
        out = open(self.work_dir / "stdout.log", "ab")
        self._process = subprocess.Popen(
            self._java(libs, "kafka.Kafka", str(self.work_dir / "server.properties")),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_file.write_text(str(self._process.pid))
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Block until an admin call (list topics) answers; raise if the broker died."""

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise ServiceExited(
                    f"kafka exited with {self._process.returncode}; see {self.log_file}"
                )
            asyncio.run(list_topics(self.bootstrap))
            return True

        # aiokafka logs every refused connection at ERROR while the broker boots.
        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        try:
            wait_until(answers, timeout, f"kafka at {self.bootstrap} to answer", interval=0.5)
        finally:
            client_log.setLevel(level)

    def create_topics(self, site: Site = "trailer") -> list[str]:
        """Create the registry's topics for ``site`` (idempotent)."""
        return asyncio.run(create_topics(self.bootstrap, site))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGTERM), or kill if it does not stop within ``timeout``."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """kill -9: the broker gets no chance to flush or deregister."""
        self._signal(signal.SIGKILL, 10.0)

    @property
    def running(self) -> bool:
        pid = self._pid()
        return pid is not None and _alive(pid)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        pid = self._pid()
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            if self._process is not None:
                self._process.poll()
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            if self._process is not None:
                self._process.wait(10)
        self._process = None
        self.pid_file.unlink(missing_ok=True)

    def _pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None


def new_cluster_id() -> str:
    """A fresh KRaft cluster id, from Kafka's own tool."""
    return subprocess.run(
        KafkaBroker(Path("."))._java(ensure_kafka_jars(), "kafka.tools.StorageTool", "random-uuid"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class KafkaCluster:
    """Three KRaft nodes on 127.0.0.1 as one cluster: replication factor 3,
    ``min.insync.replicas=2`` (the data centre's settings), a static quorum of three
    controllers. Any one node can be killed: the other two keep the quorum, elect
    partition leaders and accept acks=all writes."""

    def __init__(self, work_dir: Path, nodes: int = 3) -> None:
        ports = [(free_port(), free_port()) for _ in range(nodes)]
        voters = ",".join(f"{n + 1}@127.0.0.1:{c}" for n, (_, c) in enumerate(ports))
        self.work_dir = Path(work_dir)
        self.brokers = [
            KafkaBroker(
                self.work_dir / f"node-{n + 1}",
                port,
                controller_port,
                node_id=n + 1,
                voters=voters,
                replicas=min(3, nodes),
                min_insync=min(2, nodes),
            )
            for n, (port, controller_port) in enumerate(ports)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def broker(self, node_id: int) -> KafkaBroker:
        return self.brokers[node_id - 1]

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Format every node under one cluster id (first start only), start them all,
        return once every broker is registered with the cluster."""
        if not all((b.work_dir / "data" / "meta.properties").exists() for b in self.brokers):
            cluster_id = new_cluster_id()
            for b in self.brokers:
                b.cluster_id = cluster_id
                b.format()
        for b in self.brokers:
            b.start(wait=False)
        self.wait_brokers(len(self.brokers), timeout)

    def wait_brokers(self, count: int, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Block until ``count`` brokers are registered (a restarted node rejoined)."""
        live = [b.bootstrap for b in self.brokers if b.running]

        def registered() -> bool:
            for b in self.brokers:
                if b._process is not None and b._process.poll() is not None:
                    raise ServiceExited(f"kafka node {b.node_id} exited; see {b.log_file}")
            return asyncio.run(_registered_brokers(",".join(live))) >= count

        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        try:
            wait_until(registered, timeout, f"{count} kafka brokers registered", interval=0.5)
        finally:
            client_log.setLevel(level)

    def busiest_leader(self, topic: str) -> KafkaBroker:
        """The node leading the most partitions of ``topic``: the one whose death moves
        the most leaders (and so the one a fault test kills)."""
        leaders = asyncio.run(_partition_leaders(self.bootstrap, topic))
        return self.broker(collections.Counter(leaders).most_common(1)[0][0])

    def create_topics(self, site: Site = "central", timeout: float = 60.0) -> list[str]:
        """Create the registry's topics for ``site`` with three replicas each; return once
        every broker's metadata shows each partition on three in-sync replicas (creation
        returns when the controller has it, before the brokers do)."""
        created = asyncio.run(create_topics(self.bootstrap, site, replication_factor=3))
        expected = {t.name: t.partitions for t in topics_for_site(site)}

        def replicated() -> bool:
            described = asyncio.run(_describe(self.bootstrap, list(expected)))
            return all(
                len(described.get(name, [])) == count
                and all(len(p["isr"]) == 3 for p in described[name])
                for name, count in expected.items()
            )

        wait_until(replicated, timeout, f"{site} topics on three in-sync replicas", interval=0.2)
        return created

    def stop(self, timeout: float = 30.0) -> None:
        for b in self.brokers:
            b.stop(timeout)


async def _describe(bootstrap: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each topic's partitions as the cluster's metadata has them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return {t["topic"]: t["partitions"] for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def _partition_leaders(bootstrap: str, topic: str) -> list[int]:
    described = await _describe(bootstrap, [topic])
    leaders = [int(p["leader"]) for p in described.get(topic, [])]
    if not leaders:
        raise RuntimeError(f"no partition of {topic} in the cluster's metadata")
    return leaders


async def _registered_brokers(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return len(cluster["brokers"])
    finally:
        await admin.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trailerlink_testing.kafka", description="Dev Kafka broker (KRaft, one node)"
    )
    parser.add_argument("action", choices=["start", "stop", "fetch"])
    parser.add_argument("--dir", type=Path, default=Path(".run/kafka"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--site", choices=["trailer", "central", "both"], default="both")
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(ensure_kafka_jars())
        return 0
    broker = KafkaBroker(args.dir, args.port, args.controller_port)
    if args.action == "stop":
        broker.stop()
        print("kafka stopped")
        return 0
    if broker._pid() is not None and _alive(broker._pid() or 0):
        print(f"kafka already running at {broker.bootstrap}")
        broker.wait_ready()
    else:
        started = time.monotonic()
        broker.start()
        print(
            f"kafka ready at {broker.bootstrap} in {time.monotonic() - started:.1f}s "
            f"(log: {broker.log_file})"
        )
    sites: list[Site] = ["trailer", "central"] if args.site == "both" else [args.site]
    for site in sites:
        created = broker.create_topics(site)
        print(f"{site} topics: {len(created)} created")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())

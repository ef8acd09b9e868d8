"""The trailer chart's Kafka configuration is one Kafka 4.1 accepts.

The StorageTool parses and validates the whole broker configuration (KRaft roles,
quorum, listeners) before it formats, exactly as the chart's init container runs it; the
chart's log4j2 configuration is loaded on the way. Uses the project's Kafka jars
(Maven Central, `make setup`), no broker.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from chartkit import Renderer


@pytest.fixture(scope="module")
def kafka_config(render: Renderer) -> dict[str, str]:
    return render("trailer").named("ConfigMap", "trailerlink-kafka")["data"]


def _properties(text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def test_broker_settings_say_what_the_trailer_needs(kafka_config: dict[str, str]) -> None:
    props = _properties(kafka_config["server.properties"])
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.flush.interval.messages"] == "1"
    assert props["log.dirs"].startswith("/var/lib/kafka/data/")  # not the volume root
    assert (
        props["advertised.listeners"]
        == "PLAINTEXT://trailerlink-kafka.trailerlink.svc.cluster.local:9092"
    )
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key


def test_the_init_container_formats_once_with_the_charts_configuration(
    render: Renderer, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """Runs the init container's own script, with the image's paths mapped to a temp dir
    and kafka-storage.sh standing in as a wrapper over the same Kafka jars."""
    if shutil.which("java") is None or shutil.which("bash") is None:
        pytest.skip("no java or bash: run make setup")
    from trailerlink_testing.kafka import ensure_kafka_jars

    libs = ensure_kafka_jars()
    kafka = render("trailer").named("StatefulSet", "trailerlink-kafka")
    (init,) = kafka["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    config, data, bin_dir = tmp_path / "config", tmp_path / "data", tmp_path / "bin"
    for d in (config, data, bin_dir):
        d.mkdir()
    for name, text in kafka_config.items():
        (config / name).write_text(text.replace("/var/lib/kafka/data", str(data)))
    storage = bin_dir / "kafka-storage.sh"
    storage.write_text(  # what kafka-run-class.sh does with these variables
        "#!/bin/bash\n"
        f'exec java $KAFKA_HEAP_OPTS $KAFKA_LOG4J_OPTS -cp "{libs}/*" '
        'kafka.tools.StorageTool "$@"\n'
    )
    storage.chmod(0o755)

    def mapped(text: str) -> str:
        return (
            text.replace("/opt/kafka/bin/", f"{bin_dir}/")
            .replace("/etc/kafka/trailerlink", str(config))
            .replace("/var/lib/kafka/data", str(data))
        )

    command = [mapped(part) for part in [*init["command"], *init["args"]]]
    run_env = {"PATH": "/usr/bin:/bin", **{k: mapped(v) for k, v in env.items()}}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=run_env, check=False
        )

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    meta = data / "kraft" / "meta.properties"
    assert meta.is_file(), "the log directory was not formatted"
    formatted = meta.read_text()
    assert "cluster.id=" in formatted and "node.id=1" in formatted
    again = run()  # a restart: formatted storage is left alone
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already formatted" in again.stdout
    assert meta.read_text() == formatted
    # the broker's own log4j2 configuration loads without errors too
    check = subprocess.run(
        [str(storage), "random-uuid"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_LOG4J_OPTS": f"-Dlog4j2.configurationFile={config / 'log4j2.properties'}",
        },
        check=False,
    )
    assert check.returncode == 0
    assert "StatusLogger" not in check.stdout + check.stderr
    assert "StatusLogger" not in first.stdout + first.stderr

"""The charts' topics are the code's topic registry (proto/topics.yaml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from chartkit import CHARTS, ROOT, Renderer
from trailerlink_events.topics import topics_for_site


def test_central_chart_registry_copy_is_the_registry() -> None:
    copy = CHARTS / "central" / "files" / "topics.yaml"
    assert copy.read_bytes() == (ROOT / "proto" / "topics.yaml").read_bytes(), (
        "charts/central/files/topics.yaml is stale: run make charts-sync"
    )


def test_kafka_topics_are_the_central_registry(render: Renderer) -> None:
    rendered = render("central")
    chart = {t["spec"]["topicName"]: t for t in rendered.of_kind("KafkaTopic")}
    registry = {t.name: t for t in topics_for_site("central")}
    assert set(chart) == set(registry)
    for name, topic in registry.items():
        resource = chart[name]
        assert resource["metadata"]["name"] == name
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == "trailerlink"
        assert resource["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert resource["spec"]["partitions"] == topic.partitions
        assert resource["spec"]["replicas"] == 3
        # the KafkaTopic v1beta2 spec has these fields only (Strimzi's CRD is not vendored)
        assert set(resource["spec"]) <= {"partitions", "replicas", "config", "topicName"}
        assert {k: str(v) for k, v in resource["spec"]["config"].items()} == topic.kafka_configs()


def test_trailer_topic_job_creates_the_trailer_registry(render: Renderer) -> None:
    rendered = render("trailer")
    job = rendered.named("Job", "trailerlink-create-topics")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {
        "post-install",
        "post-upgrade",
    }
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "trailerlink_events.create_topics"]
    assert "--site=trailer" in container["command"]
    assert "--replication-factor=1" in container["command"]
    # it runs a service image: the registry it reads is that release's
    assert container["image"].startswith("registry.example.nhs.uk/trailerlink/monitor:")


def test_external_kafka_gets_the_topic_job(render: Renderer) -> None:
    rendered = render("central", "external-kafka-values.yaml")
    (job,) = rendered.of_kind("Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--site=central" in command and "--replication-factor=3" in command


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailerlink_events.create_topics", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.kafka
def test_topic_job_script_finds_every_trailer_topic_on_a_real_broker(
    kafka_bootstrap: str,
) -> None:
    # The session broker (shared with the whole suite) already has the registry's topics,
    # created by the same trailerlink_events.kafka.create_topics the script calls; here
    # the script must connect, create nothing and confirm every trailer topic exists.
    result = _run_script(
        "--site", "trailer", "--bootstrap-servers", kafka_bootstrap, "--deadline-seconds", "60"
    )
    assert result.returncode == 0, result.stderr
    trailer = topics_for_site("trailer")
    assert f"all {len(trailer)} trailer topics exist (0 created now)" in result.stderr


def test_topic_job_script_gives_up_at_its_deadline() -> None:
    result = _run_script(
        "--site", "trailer", "--bootstrap-servers", "127.0.0.1:9", "--deadline-seconds", "1"
    )
    assert result.returncode == 1
    assert "giving up" in result.stderr

"""The central chart's alert rules and dashboards are the repository's, and name real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chartkit import CHARTS, ROOT, Renderer

MONITORING = ROOT / "monitoring"
CHART_FILES = CHARTS / "central" / "files"
SUFFIXES = ("_bucket", "_sum", "_count", "_created")
PROMETHEUS_BUILTIN = {"up"}


def _rule_files() -> list[Path]:
    return sorted((MONITORING / "rules").glob("*.yaml"))


def _exported_metrics() -> set[str]:
    """Every trailerlink_* metric name the code declares (string literals in src/)."""
    names = set()
    for src in [*ROOT.glob("libs/*/src"), *ROOT.glob("services/*/src")]:
        for path in src.rglob("*.py"):
            names |= set(re.findall(r"[\"'](trailerlink_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(trailerlink_[a-z0-9_]+|up)\b(?=\s*[{\[)\s]|$)", expr))


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        import os

        reason = "promtool is not installed: run scripts/install-tools.sh (Debian prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_chart_rule_files_are_the_repositorys() -> None:
    repo = {p.name: p.read_bytes() for p in _rule_files()}
    chart = {p.name: p.read_bytes() for p in sorted((CHART_FILES / "rules").glob("*.yaml"))}
    assert repo, "monitoring/rules/ has no rule files"
    assert chart == repo, "charts/central/files/rules/ is stale: run make charts-sync"


def test_chart_dashboards_are_the_repositorys() -> None:
    repo = {p.name: p.read_bytes() for p in sorted((MONITORING / "dashboards").glob("*.json"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART_FILES / "dashboards").glob("*.json"))}
    assert repo and chart == repo, "charts/central/files/dashboards/ is stale: make charts-sync"


def test_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    # monitoring/dashboards.py is the source; the JSON is its output, never edited by hand.
    result = subprocess.run(
        [sys.executable, str(MONITORING / "dashboards.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("*.json"))}
    committed = {p.name: p.read_bytes() for p in sorted((MONITORING / "dashboards").glob("*.json"))}
    assert generated, "the generator wrote no dashboard"
    assert committed == generated, (
        "monitoring/dashboards/*.json differ from what monitoring/dashboards.py writes: "
        "change the generator, then make dashboards charts-sync"
    )


def _fleet_board() -> dict:
    return json.loads((MONITORING / "dashboards" / "trailerlink-fleet.json").read_text())


def test_the_fleet_top_row_is_four_traffic_lights() -> None:
    top = sorted(
        (p for p in _fleet_board()["panels"] if p["gridPos"]["y"] == 0),
        key=lambda p: p["gridPos"]["x"],
    )
    assert [p["title"] for p in top] == [
        "Trailers silent",
        "Trailers not delivering",
        "Canaries failing",
        "Images past deadline",
    ]
    for panel in top:
        assert panel["type"] == "stat"
        assert panel["options"]["colorMode"] == "background"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["color"] for s in steps] == ["green", "orange", "red"], panel["title"]
        assert steps[0]["value"] is None and 0 < steps[1]["value"] < steps[2]["value"]


def test_the_per_trailer_table_names_its_columns_with_units_and_mappings() -> None:
    (panel,) = [p for p in _fleet_board()["panels"] if p["type"] == "table"]
    organize = next(t["options"] for t in panel["transformations"] if t["id"] == "organize")
    names = organize["renameByName"]
    # Every query is a named column (no "Value #C" left for support to decode).
    assert {f"Value #{t['refId']}" for t in panel["targets"]} <= set(names)
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
    }
    assert set(names.values()) - {"Trailer"} == set(overrides)
    assert all("unit" in props for props in overrides.values())
    texts = {
        name: {r["text"] for m in props.get("mappings", []) for r in m["options"].values()}
        for name, props in overrides.items()
    }
    assert texts["Link"] == {"unknown", "up", "degraded", "down"}
    assert texts["Uplink"] == {"sending", "paused"}
    assert "none" in texts["Operator cap"] and "uncapped" in texts["Cap in force"]
    assert overrides["Last heartbeat"]["unit"] == "s"
    assert overrides["Backlog size"]["unit"] == "bytes"


def test_prometheus_rule_resource_holds_exactly_the_rule_files(render: Renderer) -> None:
    (rule,) = render("central").of_kind("PrometheusRule")
    expected = [g for p in _rule_files() for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected


def test_rendered_rules_pass_promtool(render: Renderer, tmp_path: Path) -> None:
    promtool = _promtool()
    (rule,) = render("central").of_kind("PrometheusRule")
    rendered = tmp_path / "rendered.rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    promtool = _promtool()
    tests = sorted((MONITORING / "rules" / "tests").glob("*.yaml"))
    assert tests
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=MONITORING / "rules" / "tests",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_name_only_metrics_the_code_exports() -> None:
    exported = _exported_metrics()
    assert "trailerlink_kafka_dead_letters_total" in exported
    used = set()
    for path in _rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used |= _metrics_in(rule["expr"])
                for metric in _metrics_in(rule["expr"]):
                    base = next((metric[: -len(s)] for s in SUFFIXES if metric.endswith(s)), metric)
                    assert metric in PROMETHEUS_BUILTIN or metric in exported or base in exported, (
                        f"{path.name}: {rule.get('alert')} uses {metric}"
                    )
    assert {"up", "trailerlink_kafka_dead_letters_total"} <= used


def test_dashboards_referenced_exist_and_name_real_metrics(render: Renderer) -> None:
    values = yaml.safe_load((CHARTS / "central" / "values.yaml").read_text())
    # an empty list installs every dashboard the chart carries
    listed = values["metrics"]["dashboards"]["files"] or sorted(
        p.name for p in (CHART_FILES / "dashboards").glob("*.json")
    )
    assert listed
    exported = _exported_metrics()
    rendered = render("central")
    maps = {c["metadata"]["name"]: c for c in rendered.of_kind("ConfigMap")}
    for name in listed:
        path = CHART_FILES / "dashboards" / name
        assert path.is_file(), f"values list {name}, which files/dashboards/ lacks"
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for metric in _metrics_in(target["expr"]):
                    base = next((metric[: -len(s)] for s in SUFFIXES if metric.endswith(s)), metric)
                    assert metric in PROMETHEUS_BUILTIN or base in exported or metric in exported, (
                        f"{name}: panel {panel['title']} uses {metric}"
                    )
        cm = maps[f"trailerlink-dashboard-{name.removesuffix('.json')}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][name]) == dashboard


def test_a_dashboard_listed_but_missing_fails_the_render(helm: str) -> None:
    result = subprocess.run(
        [
            helm,
            "template",
            "trailerlink",
            str(CHARTS / "central"),
            "--kube-version",
            "1.33.0",
            "--set",
            "metrics.dashboards.files={trailerlink-overview.json,no-such-board.json}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "no-such-board.json" in result.stderr

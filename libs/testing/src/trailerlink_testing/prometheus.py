"""A real Prometheus (Debian's ``/usr/bin/prometheus``) for tests: scrapes the given
targets every second and evaluates the given rule files.

    with PrometheusServer(tmp_path, {"trailerlink-monitor": ["127.0.0.1:9106"]},
                          rule_files=[...]) as prom:
        prom.wait_for_targets_up()
        prom.query('up{job="trailerlink-monitor"}')   # -> list of result dicts
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, http_ok
from trailerlink_testing.waiting import wait_until


def prometheus_binary() -> str | None:
    """Path of the prometheus server binary, or None when it is not installed."""
    return shutil.which("prometheus")


class PrometheusServer:
    """One Prometheus process with its own storage under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        jobs: Mapping[str, Sequence[str]],
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (Debian package prometheus)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.jobs = {job: list(targets) for job, targets in jobs.items()}
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.jobs.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = ServiceProcess(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            log_path=workdir / "prometheus.log",
        )

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self.process.start()
        self.process.wait_ready(f"{self.url}/-/ready", timeout)
        return self

    def stop(self) -> None:
        self.process.terminate(timeout=15)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (raises on a query error)."""
        rsp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = rsp.json()
        if body.get("status") != "success":
            raise ValueError(f"query failed: {expr}: {body.get('error')}")
        return body["data"]["result"]

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        """Until every configured target has been scraped successfully."""
        wanted = sum(len(t) for t in self.jobs.values())

        def all_up() -> bool:
            return (
                len([r for r in self.query("up == 1") if r["metric"].get("job") in self.jobs])
                >= wanted
            )

        wait_until(all_up, timeout, "every scrape target up", interval=0.25)

    def ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Every trailerlink service as a process (the workspace venv's console script, or its
container image): :class:`Service` with its HTTP port, starting one with its log in
``<stack dir>/logs/<service>.log``, waiting for several, restarting them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trailerlink_testing.containers import ContainerProcess, hand_over, image_for
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get, http_ok


@dataclass
class Service:
    """One trailerlink service subprocess with its HTTP port."""

    name: str
    proc: ServiceProcess
    http_port: int
    ports: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.proc.wait_ready(self.url("/readyz"), timeout)

    def ready(self) -> bool:
        return http_ok(self.url("/readyz"))

    def kill9(self) -> None:
        self.proc.kill9()

    def restart(self, timeout: float = 90.0) -> None:
        """Start again after a kill (same command and environment) and wait until ready."""
        if not self.proc.running():
            self.proc.start()
        self.wait_ready(timeout)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for line in http_get(self.url("/metrics")).splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total


def _start_service(
    name: str,
    script: str,
    env: dict[str, str],
    logs: Path,
    wait: bool = True,
    prefix: Sequence[str] = (),
    host: str = "127.0.0.1",
    runtime: str = "processes",
    mount: Path | None = None,
    site_env: Mapping[str, str] = {},
) -> Service:
    """Start ``script`` (``prefix`` first: e.g. ``ip netns exec NS``), its HTTP port on
    ``host``; with ``runtime="containers"`` its image instead, ``mount`` (the run
    directory every path in ``env`` is under) mounted at the same path. ``site_env``:
    what every service of the site gets (e.g. the trace exporter), after ``env``."""
    http_port = int(env.get("TRAILERLINK_HTTP_PORT") or free_port())
    full = {
        "TRAILERLINK_HTTP_HOST": host,
        "TRAILERLINK_HTTP_PORT": str(http_port),
        "TRAILERLINK_LOG_LEVEL": "INFO",
        **env,
        **site_env,
    }
    logs.mkdir(parents=True, exist_ok=True)
    proc: ServiceProcess
    if runtime == "containers":
        assert mount is not None and not prefix, "containers need a mount and no prefix"
        hand_over(mount)
        proc = ContainerProcess(
            f"tl-{name}-{http_port}", image_for(script), full, mount, log_path=logs / f"{name}.log"
        )
    else:
        proc = ServiceProcess(
            [*prefix, console_script(script)], env=full, log_path=logs / f"{name}.log"
        )
    proc.start()
    service = Service(name, proc, http_port, host=host)
    if wait:
        service.wait_ready()
    return service


def _wait_all_ready(services: Iterable[Service], timeout: float = 120.0) -> None:
    """Wait until every one of ``services`` (started together: their start-ups overlap)
    answers /readyz."""
    for service in services:
        service.wait_ready(timeout)


def restart_all(services: Iterable[Service], timeout: float = 120.0) -> None:
    """Start again every one of ``services`` that is not running, then wait for all."""
    services = list(services)
    for service in services:
        if not service.proc.running():
            service.proc.start()
    _wait_all_ready(services, timeout)

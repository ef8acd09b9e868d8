"""Run a trailerlink service from its image (`make images`) instead of the workspace
venv: what ops install, started the way a test or `make demo RUNTIME=containers` starts
the processes.

The container gets the host network (never podman's bridge, which rewrites iptables),
a read-only root with a tmpfs ``/tmp``, no capabilities, the image's own user (uid
10001), exactly the ``TRAILERLINK_*`` settings given, and one host folder mounted at the
same path: the run directory every path in those settings points into, owned by that
user. So the settings of the process version work unchanged.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path

from trailerlink_testing.procs import ServiceProcess

ROOT = Path(__file__).resolve().parents[4]
IMAGE_UID = 10001
CACHE = Path(os.environ.get("TRAILERLINK_CACHE", Path.home() / ".cache" / "trailerlink"))


def podman_env() -> dict[str, str]:
    """The environment podman runs with: the private containers.conf of `make images`."""
    return {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers" / "containers.conf")}


def image_for(script: str) -> str:
    """``trailerlink-gateway`` -> ``localhost/trailerlink/gateway:<version>``."""
    version = tomllib.loads((ROOT / "services" / "gateway" / "pyproject.toml").read_text())[
        "project"
    ]["version"]
    return f"localhost/trailerlink/{script.removeprefix('trailerlink-')}:{version}"


def build_images(*names: str) -> None:
    """`make images`, or only the images ``names`` (``scripts/images.sh pause kafka``);
    up to date in about a second when nothing changed."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "images.sh"), *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"images.sh {' '.join(names)} failed:\n{done.stderr[-2000:]}")


def hand_over(folder: Path) -> None:
    """Give ``folder`` (and everything in it) to the images' user, as a volume's
    fsGroup would: the containers read and write there."""
    for path in [folder, *folder.rglob("*")]:
        try:
            os.chown(path, IMAGE_UID, IMAGE_UID, follow_symlinks=False)
        except FileNotFoundError:  # a broker's segment rolled meanwhile
            continue


class ContainerProcess(ServiceProcess):
    """A service container, driven like a :class:`ServiceProcess`: ``start`` runs it
    attached (its output goes to ``log_path``), ``terminate`` is ``podman stop`` (SIGTERM,
    then KILL after the timeout), ``kill9`` is ``podman kill -s KILL``."""

    def __init__(
        self,
        name: str,
        image: str,
        settings: Mapping[str, str],
        mount: Path,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        argv = [
            "podman",
            "run",
            "--rm",
            "--name",
            name,
            "--network=host",
            "--read-only",
            "--tmpfs",
            "/tmp",  # noqa: S108 - the container's own /tmp, a tmpfs
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--volume",
            f"{mount}:{mount}",
        ]
        for key, value in settings.items():
            argv += ["--env", f"{key}={value}"]
        super().__init__([*argv, image], env=podman_env(), log_path=log_path)

    def _podman(self, *args: str) -> None:
        subprocess.run(
            ["podman", *args], env=podman_env(), capture_output=True, timeout=120, check=False
        )

    def start(self) -> ContainerProcess:
        self._podman("rm", "--force", self.name)  # a leftover of a killed run
        super().start()
        return self

    def kill9(self) -> None:
        self._podman("kill", "--signal", "KILL", self.name)
        super().kill9()

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.running():
            self._podman("stop", "--time", str(int(timeout)), self.name)
        return super().terminate(timeout)

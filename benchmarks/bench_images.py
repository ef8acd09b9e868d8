"""Image benchmarks: how much each service adds to its base, and how long `make images`
takes when nothing changed (podman's layer cache; a developer runs it all day).

Both run `scripts/images.sh` first (built once, cached); both need podman (make setup).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchmarks import Benchmark, Row

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TRAILERLINK_CACHE", Path.home() / ".cache" / "trailerlink"))
LAYERS_GOAL_MB = 150.0
REBUILD_GOAL_SECONDS = 10.0


def _images() -> float:
    """Run `make images`; seconds it took."""
    started = time.monotonic()
    subprocess.run(
        [str(ROOT / "scripts" / "images.sh")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return time.monotonic() - started


def _sizes() -> dict[str, float]:
    """Image reference -> size in MB (podman's, uncompressed)."""
    env = {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers" / "containers.conf")}
    out = subprocess.run(
        [
            "podman",
            "images",
            "--filter",
            "reference=localhost/trailerlink/*",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.Size}}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    sizes: dict[str, float] = {}
    for line in out.splitlines():
        ref, size = line.split(" ", 1)
        number, unit = size.split()
        sizes[ref] = float(number) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]
    return sizes


def size_mb() -> Row:
    _images()
    sizes = _sizes()
    base = max(v for k, v in sizes.items() if "/python-base:" in k)
    services = {k.split("/")[-1]: v for k, v in sizes.items() if "/python-base:" not in k}
    largest = max(services, key=lambda k: services[k])
    over = services[largest] - base
    listing = ", ".join(f"{k} {v - base:.0f}" for k, v in sorted(services.items()))
    return Row(
        id="images.size_mb",
        what="largest service image: MB over its base / 150 MB",
        ours=over,
        reference=LAYERS_GOAL_MB,
        unit="MB",
        goal_op="<=",
        goal=1.0,
        notes=f"{largest}: {services[largest]:.0f} MB on a {base:.0f} MB base (the local "
        f"Debian bookworm python3 base; podman sizes, uncompressed). MB over the base "
        f"per image: {listing}",
    )


def rebuild_seconds_no_change() -> Row:
    _images()  # whatever changed is built now
    seconds = _images()
    return Row(
        id="images.rebuild_seconds_no_change",
        what="`make images` again with nothing changed / 10 s",
        ours=seconds,
        reference=REBUILD_GOAL_SECONDS,
        unit="s",
        goal_op="<=",
        goal=1.0,
        notes="six images, each found up to date by its build-context digest (podman's "
        "layer cache alone replayed every step: about 35 s)",
    )


BENCHMARKS = [
    Benchmark(id="images.size_mb", run=size_mb),
    Benchmark(id="images.rebuild_seconds_no_change", run=rebuild_seconds_no_change),
]

"""A service's image holds exactly what its lock closure names, so every module a service
(or a lib it installs) imports must come from that closure.

Every process in the test suite runs from the one workspace venv, where everything is
installed; an image installs only ``uv sync --package <service>``. An import the
service's ``pyproject.toml`` does not declare (directly or through a lib) works in every
test and fails in the image at start-up. This test reads each service's closure from
the lock (``uv export --package``), maps every top-level import of the service's code
and of each workspace lib in that closure to the distribution that provides it, and
fails on any import from outside the closure.
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml"))
# Imports a lib makes only on a path some services never take: (module, file) -> why.
OPTIONAL = {
    (
        "psycopg",
        "libs/common/src/trailerlink_common/sqlstore.py",
    ): "imported inside SqlStore only with a postgresql:// DSN, which only the ingest and "
    "the fleet monitor accept (both declare psycopg)",
}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@cache
def _member_dirs() -> dict[str, Path]:
    """Workspace member distribution name -> its folder."""
    members = {}
    for pyproject in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]:
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        members[_canonical(name)] = pyproject.parent
    return members


@cache
def _closure(package: str) -> frozenset[str]:
    """Distributions ``uv sync --package <package> --no-dev`` installs (canonical names)."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    out = subprocess.run(
        [
            uv,
            "export",
            "--package",
            package,
            "--no-dev",
            "--frozen",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    by_dir = {path.resolve(): name for name, path in _member_dirs().items()}
    names = {_canonical(package)}
    for line in out.splitlines():
        line = line.split(";")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e ", "./")):
            folder = (ROOT / line.removeprefix("-e ").strip()).resolve()
            names.add(by_dir[folder])
        else:
            names.add(_canonical(line.split("==")[0]))
    return frozenset(names)


@cache
def _providers() -> dict[str, frozenset[str]]:
    """Top-level module -> the distributions that provide it (in the workspace venv),
    plus every workspace member's own package."""
    found = {
        k: frozenset(_canonical(d) for d in v)
        for k, v in importlib.metadata.packages_distributions().items()
    }
    for name, folder in _member_dirs().items():
        for package in (folder / "src").iterdir():
            if package.is_dir() and (package / "__init__.py").exists():
                found[package.name] = frozenset({name})
    return found


def _imports(folder: Path) -> set[tuple[str, str]]:
    """(top-level module, file) for every absolute import under ``folder``, skipping
    ``if TYPE_CHECKING`` blocks (not executed at run time)."""
    found: set[tuple[str, str]] = set()
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.add((name.split(".")[0], str(path.relative_to(ROOT))))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_every_import_of_a_service_comes_from_its_lock_closure(service: str) -> None:
    package = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())[
        "project"
    ]["name"]
    closure = _closure(package)
    providers = _providers()
    # The service's own code, and the code of every workspace lib its image installs.
    folders = [_member_dirs()[name] / "src" for name in sorted(closure) if name in _member_dirs()]
    outside = []
    for folder in folders:
        for module, where in sorted(_imports(folder)):
            if (
                module in sys.stdlib_module_names
                or module == "__future__"
                or (module, where) in OPTIONAL
            ):
                continue
            dists = providers.get(module)
            if dists is None:
                outside.append(f"{module} ({where}): no installed distribution provides it")
            elif not dists & closure:
                outside.append(
                    f"{module} ({where}) from {sorted(dists)}, not in {package}'s closure"
                )
    assert outside == [], (
        f"{package} imports what its image does not install "
        f"(declare it in services/{service}/pyproject.toml or the lib's): " + "; ".join(outside)
    )


def _closure_venv(package: str) -> Path:
    """A venv holding ``package``'s lock closure and nothing else (workspace members
    editable, so it follows the source tree), kept between runs outside the repository:
    ``uv sync`` brings it up to date in about a second."""
    import hashlib
    import os

    cache = Path(os.environ.get("TRAILERLINK_CACHE", Path.home() / ".cache" / "trailerlink"))
    venv = cache / "closure-venvs" / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12] / package
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [uv, "sync", "--package", package, "--no-dev", "--frozen", "--quiet"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


_IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not found.name.endswith("__main__"):
        importlib.import_module(found.name)
print("imported", sys.argv[1])
"""


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_of_a_service_imports_from_its_closure_alone(service: str) -> None:
    package = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())[
        "project"
    ]["name"]
    venv = _closure_venv(package)
    module = package.replace("-", "_")
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _IMPORT_EVERY_MODULE, module],
        cwd=ROOT / "services" / service,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        f"{module} does not import in a venv of its own lock "
        f"closure (what its image installs):\n"
        f"{done.stderr[-2000:]}"
    )

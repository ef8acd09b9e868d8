"""The house's layering, as a test: every import in the product's source is checked.

- a service never imports another service (what two need lives in ``libs/``);
- a lib never imports a service;
- ``trailerlink_testing`` (real-peer harnesses) is imported only by tests, benchmarks
  and scripts, never by product code.

Imports inside functions count too (``ast.walk``). Whether each import is *declared* by
the importing package is ``tests/test_packaging.py``'s rule.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {p.parent.name for p in ROOT.glob("services/*/pyproject.toml")}
SERVICE_PACKAGES = {f"trailerlink_{name}" for name in SERVICES}
TESTING = "trailerlink_testing"


def _sources(kind: str) -> list[tuple[str, Path]]:
    """(owner, file) for every product module of ``services`` or ``libs``."""
    return [
        (src.parent.name, path)
        for src in sorted(ROOT.glob(f"{kind}/*/src"))
        for path in sorted(src.rglob("*.py"))
    ]


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _violations(kind: str, allowed: Callable[[str, str], bool]) -> list[str]:
    out = []
    for owner, path in _sources(kind):
        for package in sorted(_imported_packages(path)):
            if not allowed(owner, package):
                out.append(f"{path.relative_to(ROOT)} imports {package}")
    return out


def test_no_service_imports_another_service() -> None:
    assert (
        _violations(
            "services",
            lambda owner, package: package not in SERVICE_PACKAGES - {f"trailerlink_{owner}"},
        )
        == []
    )


def test_no_lib_imports_a_service() -> None:
    assert _violations("libs", lambda _owner, package: package not in SERVICE_PACKAGES) == []


@pytest.mark.parametrize("kind", ["services", "libs"])
def test_product_code_never_imports_the_test_harnesses(kind: str) -> None:
    assert _violations(kind, lambda owner, package: package != TESTING or owner == "testing") == []


def test_the_rules_see_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    import trailerlink_gateway.scp\n    from trailerlink_ingest import tus\n"
    )
    assert _imported_packages(module) == {"trailerlink_gateway", "trailerlink_ingest"}

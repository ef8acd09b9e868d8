"""The hazard log's evidence is real: every test id it names exists, every hazard names
at least one test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "docs" / "safety" / "hazard-log.md"
TEST_ID = re.compile(r"`([\w/.\-]+\.py)::(test_\w+)`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_listed_test_id_exists() -> None:
    ids = TEST_ID.findall(LOG.read_text())
    assert ids, "the hazard log names no test"
    missing = []
    for file, name in ids:
        path = ROOT / file
        if not path.is_file() or name not in _test_names(path):
            missing.append(f"{file}::{name}")
    assert missing == [], f"hazard log names tests that do not exist: {missing}"


def test_every_hazard_names_a_test() -> None:
    sections = re.split(r"^## ", LOG.read_text(), flags=re.M)[1:]
    assert len(sections) >= 7
    for section in sections:
        assert TEST_ID.search(section), f"hazard without a test: {section.splitlines()[0]}"

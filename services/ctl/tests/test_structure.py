"""trailerlinkctl's modules import one way: ``cli`` (the parser and the dispatch, the
console script's module) imports the command groups, they import ``output`` and
``client``, and nothing but ``__main__`` imports ``cli``. Command modules once borrowed
``cli``'s private printing helpers through imports hidden in functions, which made
``cli`` and them a circle; these tests keep it from coming back (imports inside
functions count: ``ast.walk``)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

PACKAGE = "trailerlink_ctl"
HERE = Path(__file__).resolve().parent.parent
SRC = HERE / "src" / PACKAGE
# `python -m trailerlink_ctl` runs the same entry point as the console script.
ENTRY_POINTS = {f"{PACKAGE}.__main__"}


def _entry_module() -> str:
    scripts = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]["scripts"]
    return str(scripts["trailerlinkctl"].split(":")[0])


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> set[str]:
    """The package's own modules that ``path`` imports (``from pkg import mod`` counts as
    importing ``pkg.mod`` when that is a module; relative imports resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    own = {_module_name(p, root) for p in root.rglob("*.py")}
    return {name for name in found if name in own and name != module}


def _graph(root: Path) -> dict[str, set[str]]:
    return {_module_name(p, root): _imports(p, root) for p in sorted(root.rglob("*.py"))}


def _importers_of(target: str, root: Path) -> list[str]:
    return sorted(m for m, deps in _graph(root).items() if target in deps)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle in ``graph`` (its modules in order), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_console_script_is_the_cli_module() -> None:
    assert _entry_module() == f"{PACKAGE}.cli"


def test_only_the_entry_point_imports_the_cli_module() -> None:
    entry = _entry_module()
    assert set(_importers_of(entry, SRC)) <= ENTRY_POINTS


def test_the_package_has_no_import_circle() -> None:
    assert _cycle(_graph(SRC)) == []


def test_the_rules_see_every_way_of_importing_cli(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    root.mkdir()
    for name in ("__init__", "cli", "output"):
        (root / f"{name}.py").write_text("")
    ways = {
        "a": "def f():\n    from trailerlink_ctl.cli import main\n",
        "b": "def f():\n    from trailerlink_ctl import cli\n",
        "c": "import trailerlink_ctl.cli as c\n",
        "d": "from .cli import main\n",
        "e": "from . import cli\n",
        "fine": "from trailerlink_ctl import output\nfrom trailerlink_ctl.output import x\n",
    }
    for name, text in ways.items():
        (root / f"{name}.py").write_text(text)
    assert _importers_of(f"{PACKAGE}.cli", root) == [f"{PACKAGE}.{n}" for n in "abcde"]


def test_the_circle_check_finds_a_circle_through_a_function_import(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "cli.py").write_text("from trailerlink_ctl.keys import cmd_keys\n")
    (root / "keys.py").write_text("def cmd_keys():\n    from trailerlink_ctl.cli import _emit\n")
    assert _cycle(_graph(root)) == [f"{PACKAGE}.cli", f"{PACKAGE}.keys", f"{PACKAGE}.cli"]

"""The runbook and the alerts tell support to run commands: every ``trailerlinkctl``
command they name must be one the CLI accepts (parsed by its own parser, so a renamed
flag or a command that was never built fails here), and product docs carry no issue
numbers (they say what the system does, not which ticket brought it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from trailerlink_ctl.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERT_FILES = sorted((ROOT / "monitoring" / "rules").glob("*.yaml"))
PRODUCT_DOCS = [
    ROOT / "README.md",
    RUNBOOK,
    *sorted((ROOT / "services").glob("*/README.md")),
    *ALERT_FILES,
    *sorted((ROOT / "monitoring" / "dashboards").glob("*.json")),
]
# `trailerlinkctl ...` in an inline code span, or a code-block line starting with it.
_INLINE = re.compile(r"`(trailerlinkctl [^`]+)`")
_BLOCK_LINE = re.compile(r"^\s*(?:\$\s*)?(trailerlinkctl\s.+?)\s*(?:#.*)?$", re.M)
# In alert annotations the command is plain text, up to a closing bracket or a sentence.
_PLAIN = re.compile(r"(trailerlinkctl [a-z][^).;,`\"\n]*)")
_ISSUE = re.compile(r"\b[Ii]ssues? #\d+")


def _runbook_commands() -> list[str]:
    text = RUNBOOK.read_text()
    found = _INLINE.findall(text)
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S):
        found += _BLOCK_LINE.findall(block)
    return sorted(set(found))


def _alert_commands() -> list[str]:
    return sorted({m.strip() for f in ALERT_FILES for m in _PLAIN.findall(f.read_text())})


def _parses(command: str) -> None:
    """A whole invocation must parse; a bare command name in prose (no options, e.g.
    "`trailerlinkctl resend` refuses ...") must at least name a command that exists."""
    args = shlex.split(command)[1:]
    for i, arg in enumerate(args):  # the shell's part of the line is not the CLI's
        if arg in (">", ">>", "<", "|", "&&", "2>&1"):
            args = args[:i]
            break
    try:
        build_parser().parse_args(args)
        return
    except SystemExit as exc:
        if any(a.startswith("-") for a in args):
            raise AssertionError(f"trailerlinkctl does not accept: {command}") from exc
    try:
        build_parser().parse_args([*args, "--help"])
    except SystemExit as exc:
        if exc.code == 0:
            return
    raise AssertionError(f"trailerlinkctl has no command: {command}")


@pytest.mark.parametrize("command", _runbook_commands())
def test_every_runbook_command_is_one_the_cli_accepts(command: str) -> None:
    _parses(command)


@pytest.mark.parametrize("command", _alert_commands())
def test_every_command_an_alert_names_is_one_the_cli_accepts(command: str) -> None:
    _parses(command)


def test_the_runbook_names_commands_at_all() -> None:
    assert len(_runbook_commands()) >= 10


@pytest.mark.parametrize("doc", PRODUCT_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_product_docs_carry_no_issue_numbers(doc: Path) -> None:
    assert _ISSUE.findall(doc.read_text()) == []

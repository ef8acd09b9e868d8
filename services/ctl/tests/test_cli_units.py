"""Pure logic of trailerlinkctl and the shared admin guard: rates, times, help, the
token check (no services needed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from trailerlink_common.admin import ACTOR_HEADER, admin_guard
from trailerlink_ctl.cli import build_parser, main
from trailerlink_ctl.uplink import parse_rate, parse_until


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("250000", 250_000),
        ("250kB", 250_000),
        ("2Mbit", 250_000),
        ("1.5MB/s", 1_500_000),
        ("800kbps", 100_000),
        ("1 G", 1_000_000_000),
    ],
)
def test_rates_parse_to_bytes_per_second(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "0kB", "5kB/h", "1e6", "-5"])
def test_malformed_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_until_accepts_durations_clock_times_and_iso() -> None:
    now = datetime(2026, 11, 28, 17, 0).astimezone()
    assert parse_until("30m", now) == (now + timedelta(minutes=30)).timestamp()
    assert parse_until("18:00", now) == (now + timedelta(hours=1)).timestamp()
    assert parse_until("16:00", now) == (now + timedelta(hours=23)).timestamp()
    assert parse_until((now + timedelta(days=1)).isoformat(), now) > now.timestamp()
    for bad in ("yesterday", "25:00", "2001-01-01T00:00", "0s"):
        with pytest.raises(ValueError):
            parse_until(bad, now)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        [],
        ["status"],
        ["trace"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "discard"],
        ["uplink"],
        ["uplink", "status"],
        ["uplink", "pause"],
        ["uplink", "resume"],
        ["uplink", "cap"],
        ["trailer"],
        ["trailer", "enrol"],
        ["trailer", "revoke"],
    ]
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*command, "--help"])
        assert exit_.value.code == 0
        assert "usage: trailerlinkctl" in capsys.readouterr().out


def test_missing_token_is_exit_4_before_any_request(monkeypatch, capsys) -> None:
    monkeypatch.delenv("TRAILERLINKCTL_TOKEN_FILE", raising=False)
    # Port 9 (discard) is never contacted: the token is checked first.
    assert main(["dlq", "list", "--monitor-url", "http://127.0.0.1:9"]) == 4
    assert "TRAILERLINKCTL_TOKEN_FILE" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["one\ntwo\n", "with space", "tab\there"])
def test_a_token_file_that_is_not_one_token_is_exit_4(tmp_path: Path, capsys, content: str) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    # Port 9 (discard) is never contacted: the token is checked first.
    assert (
        main(["dlq", "list", "--monitor-url", "http://127.0.0.1:9", "--token-file", str(token)])
        == 4
    )
    err = capsys.readouterr().err
    assert "must hold one token" in err and content.strip() not in err


def _app(token_file: Path | None) -> TestClient:
    app = FastAPI()
    guard = Depends(admin_guard(token_file))

    @app.get("/admin")
    def admin(actor: str = guard) -> dict[str, str]:
        return {"actor": actor}

    return TestClient(app)


def test_admin_guard_off_without_a_token_file() -> None:
    assert _app(None).get("/admin", headers={"Authorization": "Bearer x"}).status_code == 404


def test_admin_guard_needs_the_right_bearer_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    client = _app(token)
    assert client.get("/admin").status_code == 401
    assert client.get("/admin", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/admin", headers={"Authorization": "Basic s3cret"}).status_code == 401
    ok = client.get("/admin", headers={"Authorization": "Bearer s3cret", ACTOR_HEADER: "jo.b"})
    assert ok.status_code == 200 and ok.json() == {"actor": "jo.b"}
    odd = client.get(
        "/admin", headers={"Authorization": "Bearer s3cret", ACTOR_HEADER: "x y; drop"}
    )
    assert odd.json() == {"actor": "unknown"}
    token.write_text("rotated")
    assert client.get("/admin", headers={"Authorization": "Bearer s3cret"}).status_code == 403
    token.unlink()
    assert client.get("/admin", headers={"Authorization": "Bearer rotated"}).status_code == 503

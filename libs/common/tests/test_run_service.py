"""run_service: a start-up error is one line on stderr and exit 2; else run()'s code."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from trailerlink_common.config import ConfigError
from trailerlink_common.service import Service, cannot_start, run_service


class FakeService:
    """Stands in for a Service: run() only counts its calls and returns a code."""

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.runs = 0

    def run(self) -> int:
        self.runs += 1
        return self.exit_code


def fake(exit_code: int = 0) -> FakeService:
    return FakeService(exit_code)


def failing(exc: BaseException) -> Callable[[], Service]:
    def build() -> Service:
        raise exc

    return build


@pytest.mark.parametrize("exit_code", [0, 1])
def test_the_services_exit_code_is_the_processs(
    exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    service = fake(exit_code)
    with pytest.raises(SystemExit) as stopped:
        run_service("demo", lambda: cast(Service, service))
    assert stopped.value.code == exit_code
    assert service.runs == 1
    assert capsys.readouterr().err == ""


def test_a_config_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    error = ConfigError("invalid configuration: TRAILERLINK_HTTP_PORT: too big")
    with pytest.raises(SystemExit) as stopped:
        run_service("demo", failing(error))
    assert stopped.value.code == 2
    # No chained exception either: nothing that prints this SystemExit shows the error.
    assert stopped.value.__cause__ is None and stopped.value.__suppress_context__
    err = capsys.readouterr().err
    assert err == "trailerlink-demo: invalid configuration: TRAILERLINK_HTTP_PORT: too big\n"


def test_the_sites_own_errors_and_wording(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_service(
            "demo",
            failing(FileNotFoundError(2, "No such file", "/etc/dsn")),
            (ConfigError, OSError),
            describe=cannot_start,
        )
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "trailerlink-demo: cannot start: FileNotFoundError: [Errno 2] No such file: '/etc/dsn'\n"
    )


def test_errors_not_named_are_bugs_and_keep_their_traceback() -> None:
    with pytest.raises(ValueError, match="a bug"):
        run_service("demo", failing(ValueError("a bug")))  # only ConfigError by default


def test_a_report_callback_replaces_the_printed_line(capsys: pytest.CaptureFixture[str]) -> None:
    reported: list[str] = []
    with pytest.raises(SystemExit) as stopped:
        run_service(
            "demo", failing(ConfigError("TLS file missing: /certs/ca.pem")), report=reported.append
        )
    assert stopped.value.code == 2
    assert reported == ["TLS file missing: /certs/ca.pem"]
    assert capsys.readouterr().err == ""

"""HTTP to the services' APIs, with the admin token; failures become :class:`CtlError`
carrying the exit code the command ends with."""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from typing import Any

import httpx

# Exit codes (documented in the README): scripts branch on these.
OK = 0
FAILED = 1  # some of several operations failed
USAGE = 2  # bad arguments (argparse uses 2 as well)
NOT_FOUND = 3  # unknown trailer, UID or dead-letter id
AUTH = 4  # no token, or the service refused it
UNAVAILABLE = 5  # service unreachable or failing
CONFLICT = 6  # the operation contradicts the current state (e.g. already discarded)

ACTOR_HEADER = "X-Trailerlink-Actor"
_TOKEN = re.compile(r"[!-~]+")  # visible ASCII, as an HTTP header value allows


class CtlError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def read_token(path: str | None) -> str:
    """The admin token from ``path``; CtlError(AUTH) naming what is missing."""
    if not path:
        raise CtlError("no admin token: set TRAILERLINKCTL_TOKEN_FILE or pass --token-file", AUTH)
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CtlError(f"cannot read token file {path}: {exc.strerror}", AUTH) from None
    if not token:
        raise CtlError(f"token file {path} is empty", AUTH)
    if not _TOKEN.fullmatch(token):
        # e.g. two lines, or a PEM pasted by mistake: it cannot go in a header, and saying
        # "unreachable" (as httpx's refusal of the header would) sends people the wrong way
        raise CtlError(
            f"token file {path} must hold one token: one line of printable "
            "characters without spaces",
            AUTH,
        )
    return token


def _actor() -> str:
    """The operator's login, reduced to what an HTTP header and an audit record carry."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)[:64] or "unknown"


class Api:
    """One service's HTTP API."""

    def __init__(
        self,
        base_url: str,
        token_file: str | None = None,
        timeout: float = 30.0,
        what: str = "service",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout
        self.what = what

    def request(
        self,
        method: str,
        path: str,
        *,
        admin: bool = False,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        headers = {ACTOR_HEADER: _actor()}
        if admin:
            headers["Authorization"] = f"Bearer {read_token(self.token_file)}"
        url = f"{self.base_url}{path}"
        try:
            response = httpx.request(
                method, url, headers=headers, json=json, params=params, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise CtlError(
                f"{self.what} at {self.base_url} unreachable: {exc}", UNAVAILABLE
            ) from None
        if response.status_code < 300:
            return response.json() if response.content else {}
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if not isinstance(detail, str):
            detail = str(detail)
        code = {401: AUTH, 403: AUTH, 404: NOT_FOUND, 409: CONFLICT, 400: USAGE, 422: USAGE}.get(
            response.status_code, UNAVAILABLE
        )
        if response.status_code == 404 and admin and "disabled" in detail:
            code = AUTH
        raise CtlError(f"{self.what}: {detail} (HTTP {response.status_code})", code)

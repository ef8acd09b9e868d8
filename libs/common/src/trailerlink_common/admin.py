"""Authentication of the services' admin APIs (what `trailerlinkctl` calls).

One shared bearer token, read from a file (a Kubernetes Secret mount), compared in
constant time. No file configured means the admin API does not exist: every admin
route answers 404. The caller names itself in ``X-Trailerlink-Actor`` (the operator's
login); that name goes into audit records. With one shared token it is a declaration,
not a proof: the token proves the caller is support, the actor says which person.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException, Request

ACTOR_HEADER = "X-Trailerlink-Actor"
_ACTOR_OK = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


def read_token(path: Path) -> str:
    """The token in ``path`` without surrounding whitespace; ``OSError`` if unreadable,
    ``ValueError`` if empty."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"admin token file {path} is empty")
    return token


def admin_guard(token_file: Path | None) -> Callable[[Request], str]:
    """A FastAPI dependency that admits only callers with the admin token.

    Returns the caller's actor name. Answers 404 when no token file is configured
    (the admin API is off), 401 without a bearer token, 403 for a wrong one, 503 if the
    configured file cannot be read. The file is read on each call, so a rotated Secret
    takes effect without a restart.
    """

    def guard(request: Request) -> str:
        if token_file is None:
            raise HTTPException(404, "admin API disabled (no admin token file configured)")
        try:
            expected = read_token(token_file)
        except (OSError, ValueError):
            raise HTTPException(503, "admin token file unreadable") from None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(
                401, "admin bearer token required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise HTTPException(403, "admin token not accepted")
        actor = request.headers.get(ACTOR_HEADER, "")
        return actor if _ACTOR_OK.match(actor) else "unknown"

    return guard

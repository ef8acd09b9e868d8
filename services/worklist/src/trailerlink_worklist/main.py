"""Entry point of ``trailerlink-worklist``.

trailerlink-worklist                      run the service (settings from TRAILERLINK_*)
trailerlink-worklist hash-password NAME   print a staff credentials line (asks for
                                          the password; reads stdin when piped)
"""

from __future__ import annotations

import getpass
import sys

from trailerlink_common.config import load_settings
from trailerlink_common.service import Service, run_service

from trailerlink_worklist import __version__
from trailerlink_worklist.settings import WorklistSettings


def _hash_password(name: str) -> int:
    from trailerlink_worklist.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 10:
        print("use at least 10 characters", file=sys.stderr)
        return 1
    print(f"{name}:{hash_password(password)}")
    return 0


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["hash-password"] and len(args) == 2:
        raise SystemExit(_hash_password(args[1]))
    if args:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    # A missing or wrong cache key, a bad variable: one line, exit 2 (run_service).
    run_service("worklist", _build)


def _build() -> Service:
    from trailerlink_worklist.app import WorklistApp

    settings = load_settings(WorklistSettings)
    service = Service("worklist", settings, version=__version__)
    WorklistApp(settings).register(service)
    return service

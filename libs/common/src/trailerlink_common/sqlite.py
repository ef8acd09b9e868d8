"""The one way a durable SQLite file is opened (the spool, the send queue, the worklist
cache, the dead-letter audit, every :class:`~trailerlink_common.sqlstore.SqlStore`).

Why: a trailer loses power without warning. A row a store has acknowledged (an object
accepted from the modality, a receipt recorded, a replay audited) must still be there
when it boots again. That takes the WAL journal with ``synchronous=FULL``: a commit
returns only once the WAL is fsynced. Opening the file in one place means a new store
cannot forget either pragma, nor the busy timeout that lets a second writer wait
instead of failing with "database is locked".
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

#: the values ``PRAGMA synchronous`` is given here; anything else is refused (it is
#: interpolated into SQL)
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

# ``name=value`` with plain words only: an extra pragma is interpolated into SQL too.
_PRAGMA = re.compile(r"[A-Za-z_]+=[A-Za-z0-9_]+")


def open_durable_sqlite(
    path: Path,
    *,
    synchronous: str = "FULL",
    busy_timeout_seconds: float = 30.0,
    extra_pragmas: Sequence[str] = (),
) -> sqlite3.Connection:
    """Open ``path`` (making its parent directory if missing) in WAL mode at the given
    ``synchronous`` level (``FULL`` unless a store can afford to lose its last commits
    on a power cut, as the monitor's fleet view can with ``NORMAL``).

    The connection is in autocommit mode (``isolation_level=None``): every store issues
    its own ``BEGIN IMMEDIATE`` / ``COMMIT``, so Python's sqlite3 never opens a
    transaction behind its back. It may be used from any thread
    (``check_same_thread=False``); the store serialises its use (a lock, or one
    connection per thread). ``busy_timeout_seconds`` is how long a statement waits for
    another connection's lock before "database is locked". ``extra_pragmas`` are
    ``name=value`` strings run after the journal and synchronous pragmas, in order
    (``"foreign_keys=ON"``, ``"secure_delete=ON"``).

    Raises :class:`ValueError`, before anything is created, for a ``synchronous`` level
    not in :data:`SYNCHRONOUS_LEVELS` or an extra pragma that is not ``name=value``.
    """
    level = synchronous.upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"SQLite synchronous level {synchronous!r}: expected one of "
            f"{', '.join(SYNCHRONOUS_LEVELS)}"
        )
    for pragma in extra_pragmas:
        if not _PRAGMA.fullmatch(pragma):
            raise ValueError(f"SQLite pragma {pragma!r}: expected name=value")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={level}")
        for pragma in extra_pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn

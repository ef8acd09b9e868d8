"""The compatibility baselines of the event contracts (proto/snapshots/events.v1.json)
and of the uplink-ingest HTTP contract's names (proto/snapshots/wire.v1.json,
trailerlink_events.wire).

    python scripts/proto_snapshot.py --write   accept the current contracts as baseline
    python scripts/proto_snapshot.py           check: breaking changes and unrecorded additions

`make proto-snapshot` runs --write after an intentional, compatible addition; it
refuses to record a breaking change. tests/test_proto_compat.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trailerlink_events import compat, wire
from trailerlink_events._generated import events_pb2

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "proto" / "snapshots" / "events.v1.json"
WIRE_SNAPSHOT = ROOT / "proto" / "snapshots" / "wire.v1.json"


def _one(path: Path, current: Any, breaking: Callable, additions: Callable, write: bool) -> int:
    baseline = json.loads(path.read_text()) if path.exists() else None
    broken = breaking(baseline, current) if baseline else []
    if broken:
        print(f"breaking changes against {path.name}:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
        return 0
    added = additions(baseline, current) if baseline else ["(no snapshot yet)"]
    if added:
        print(f"not in {path.name} yet (run make proto-snapshot):\n  " + "\n  ".join(added))
        return 1
    print(f"contracts match {path.name}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    events = compat.shape(events_pb2.DESCRIPTOR)
    failed = _one(SNAPSHOT, events, compat.breaking_changes, compat.additions, args.write)
    failed |= _one(WIRE_SNAPSHOT, wire.shape(), wire.breaking_changes, wire.additions, args.write)
    return failed


if __name__ == "__main__":
    raise SystemExit(main())

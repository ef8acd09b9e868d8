"""The compatibility baseline of the event contracts (proto/snapshots/events.v1.json).

    python scripts/proto_snapshot.py --write   accept the current contracts as baseline
    python scripts/proto_snapshot.py           check: breaking changes and unrecorded additions

`make proto-snapshot` runs --write after an intentional, compatible addition; it
refuses to record a breaking change. tests/test_proto_compat.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trailerlink_events._generated import events_pb2
from trailerlink_events.compat import additions, breaking_changes, shape

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "proto" / "snapshots" / "events.v1.json"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    current = shape(events_pb2.DESCRIPTOR)
    baseline = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else None
    broken = breaking_changes(baseline, current) if baseline else []
    if broken:
        print("breaking changes against the snapshot:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    if args.write:
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
        return 0
    added = additions(baseline, current) if baseline else ["(no snapshot yet)"]
    if added:
        print("not in the snapshot yet (run make proto-snapshot):\n  " + "\n  ".join(added))
        return 1
    print("contracts match the snapshot")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

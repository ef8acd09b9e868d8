"""Run benchmarks, print the table, write bench-results.json.

python -m benchmarks [--only ID_PREFIX] [--list]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import Benchmark, Row

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results.json"


def discover() -> list[Benchmark]:
    found: list[Benchmark] = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        found.extend(module.BENCHMARKS)
    return found


def table(rows: list[Row]) -> str:
    header = f"{'id':34} {'ours':>12} {'reference':>12} {'unit':10} {'ratio':>7} {'goal':>8} met"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.id:34} {r.ours:12.4g} {r.reference:12.4g} {r.unit:10} {r.ratio:7.3f} "
            f"{r.goal_op + ' ' + str(r.goal):>8} {'yes' if r.met else 'NO'}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", default="", help="run ids starting with this prefix")
    parser.add_argument("--list", action="store_true", help="list benchmark ids")
    args = parser.parse_args()
    selected = [b for b in discover() if b.id.startswith(args.only)]
    if args.list:
        print("\n".join(b.id for b in selected))
        return 0
    if not selected:
        print(f"no benchmark id starts with {args.only!r}", file=sys.stderr)
        return 2
    rows: list[Row] = []
    failed = 0
    for bench in selected:
        print(f"running {bench.id} ...", flush=True)
        try:
            rows.append(bench.run())
        except Exception:
            failed += 1
            traceback.print_exc()
            print(f"benchmark {bench.id} failed", file=sys.stderr)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.only else {}
    merged = {r["id"]: r for r in previous.get("rows", [])}
    merged.update({r.id: r.as_json() for r in rows})
    RESULTS.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {platform.python_implementation()} "
                f"{platform.python_version()}, {platform.system()}",
                "rows": sorted(merged.values(), key=lambda r: r["id"]),
            },
            indent=2,
        )
        + "\n"
    )
    print()
    print(table(rows))
    print(f"\nwritten {RESULTS.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

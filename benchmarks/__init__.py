"""The project's one benchmark harness (`make bench`).

Each ``benchmarks/bench_*.py`` module defines ``BENCHMARKS``: a list of
:class:`Benchmark`. A benchmark measures ours and the reference **in the same run**
and returns a :class:`Row`; the harness prints a table and writes
``bench-results.json`` at the repository root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table: ``ratio = ours / reference``."""

    id: str
    what: str
    ours: float
    reference: float
    unit: str
    goal_op: Literal[">=", "<="]
    goal: float
    notes: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def met(self) -> bool:
        return self.ratio >= self.goal if self.goal_op == ">=" else self.ratio <= self.goal

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("goal_op")
        data["ratio"] = round(self.ratio, 4)
        data["goal"] = f"{self.goal_op} {self.goal}"
        data["met"] = self.met
        return data


@dataclass(frozen=True)
class Benchmark:
    """A named measurement; ``run`` returns its row."""

    id: str
    run: Callable[[], Row]

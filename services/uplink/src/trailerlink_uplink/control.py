"""Operator control of sending: a pause and a cap set through the admin API
(`trailerlinkctl uplink ...`), each optionally until a time, kept across restarts.

The operator's cap is an upper bound on top of the bandwidth schedule (the lower of the
two applies); a pause holds every upload before its next piece, so at most the piece in
flight (a few kB of a PATCH body) still leaves after the call returns.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from trailerlink_common.durable import write_durably


@dataclass
class ControlState:
    paused: bool = False
    paused_until: float | None = None
    cap_bytes_per_second: int | None = None
    cap_until: float | None = None
    changed_by: str = ""
    changed_at: float | None = None


class OperatorControl:
    """The operator's pause and cap; persisted to ``path`` (JSON) on every change."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self.state = ControlState()
        if path.is_file():
            try:
                self.state = ControlState(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                self.state = ControlState()  # a damaged file must not stop sending for good

    def _save(self, actor: str) -> None:
        self.state.changed_by, self.state.changed_at = actor, self._clock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, json.dumps(asdict(self.state)).encode())

    def pause(self, until: float | None, actor: str) -> None:
        with self._lock:
            self.state.paused, self.state.paused_until = True, until
            self._save(actor)

    def cap(self, bytes_per_second: int, until: float | None, actor: str) -> None:
        if bytes_per_second <= 0:
            raise ValueError("a cap must be a positive number of bytes per second")
        with self._lock:
            self.state.cap_bytes_per_second, self.state.cap_until = bytes_per_second, until
            self._save(actor)

    def resume(self, actor: str) -> None:
        """Lift the pause and the operator's cap: the schedule alone applies again."""
        with self._lock:
            changed_by = self.state.changed_by
            self.state = ControlState(changed_by=changed_by)
            self._save(actor)

    def paused_now(self) -> bool:
        state = self.state
        return state.paused and (state.paused_until is None or self._clock() < state.paused_until)

    def cap_now(self) -> int | None:
        state = self.state
        if state.cap_bytes_per_second and (
            state.cap_until is None or self._clock() < state.cap_until
        ):
            return state.cap_bytes_per_second
        return None

    def effective_rate(self, scheduled: int) -> int:
        """The rate in force (bytes/s, 0 = uncapped) given the schedule's ``scheduled``."""
        cap = self.cap_now()
        if cap is None:
            return scheduled
        return cap if scheduled <= 0 else min(cap, scheduled)

    def snapshot(self, scheduled: int) -> dict[str, object]:
        """What the admin API answers (README: `uplink --json`)."""
        paused, cap = self.paused_now(), self.cap_now()
        return {
            "paused": paused,
            "paused_until": self.state.paused_until if paused else None,
            "cap_bytes_per_second": cap,
            "cap_until": self.state.cap_until if cap else None,
            "scheduled_cap_bytes_per_second": scheduled,
            "effective_cap_bytes_per_second": self.effective_rate(scheduled),
            "changed_by": self.state.changed_by,
            "changed_at": self.state.changed_at,
        }

"""Plain terminal output: one line per task state change, and the end-of-run summary."""

from __future__ import annotations

import contextlib
import sys
from typing import TextIO

from ..events import (
    Alert,
    ApprovalDecided,
    ApprovalRequested,
    CallRetried,
    Event,
    RetryScheduled,
    RunStarted,
    ScaleDecision,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)

__all__ = ["LineLog"]


class LineLog:
    """An EventSink printing one line per task state change."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.t0: float | None = None
        self.run_id = "RUN_ID"

    def emit(self, e: Event) -> None:
        if isinstance(e, RunStarted):
            self.t0, self.run_id = e.ts, e.run_id
            verb = "resumed" if e.session > 1 else "started"
            sim = " · SIMULATED (sim provider)" if e.simulated else ""
            done = f", {len(e.done)} already done" if e.done else ""
            self._print(
                f"run {e.run_id} {verb}: plan {e.plan} · {len(e.tasks)} tasks{done} · "
                f"{len(e.agents)} agents · policy {e.policy}{sim}"
            )
            return
        t = e.ts - (self.t0 or e.ts)
        if isinstance(e, ApprovalRequested | ApprovalDecided):
            self._print(f"[{t:7.2f}s] {self._approval(e)}")
        elif isinstance(e, TaskSucceeded):
            by = f"  by {e.agent}" if e.agent else ""  # a foreach template: its tasks did it
            self._print(f"[{t:7.2f}s] ✓ {e.task_id}{by}")
        elif isinstance(e, TaskFailed):
            self._print(
                f"[{t:7.2f}s] ✗ {e.task_id}  failed ({e.error_class}) after {e.attempts} "
                f"attempt{'s' if e.attempts != 1 else ''}: {e.error}"
            )
        elif isinstance(e, TaskSkipped):
            self._print(f"[{t:7.2f}s] - {e.task_id}  skipped: {e.reason}")
        elif isinstance(e, RetryScheduled) and e.error_class == "lost":
            self._print(f"[{t:7.2f}s] ↻ {e.task_id}  lost with its agent host; queued again")
        elif isinstance(e, RetryScheduled):
            self._print(
                f"[{t:7.2f}s] ↻ {e.task_id}  attempt {e.attempt_no} failed ({e.error_class}); "
                f"retry in {e.delay:.2f}s"
            )
        elif isinstance(e, CallRetried):
            self._print(
                f"[{t:7.2f}s] ↻ {e.task_id}  model call {e.turn} failed ({e.error_class}); "
                f"sent again in {e.delay:.2f}s, turns kept"
            )
        elif isinstance(e, Alert):
            self._print(f"[{t:7.2f}s] ! {e.kind}: {e.message}")
        elif isinstance(e, ScaleDecision):
            self._print(f"[{t:7.2f}s] ⇅ {e.role}  {e.action} {e.before} -> {e.after}: {e.reason}")

    def _approval(self, e: ApprovalRequested | ApprovalDecided) -> str:
        """``⏸ deploy  awaiting approval (...): phalanx approve RUN deploy``, or the
        decision: a log that nobody watches live still says who must act."""
        if isinstance(e, ApprovalRequested):
            return (
                f"⏸ {e.task_id}  awaiting approval ({e.reason}): "
                f"phalanx approve {self.run_id} {e.task_id} [--reject --reason TEXT]"
            )
        by = f" by {e.by}" if e.by else ""
        why = f": {e.reason}" if e.reason else ""
        return f"⏵ {e.task_id}  approval {e.decision.replace('_', ' ')}{by}{why}"

    def _print(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe never stops a run
            print(line, file=self.stream, flush=True)

"""Plain terminal output: one line per task state change, and the end-of-run summary."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, TextIO

from .events import (
    Alert,
    Event,
    RetryScheduled,
    RunStarted,
    ScaleDecision,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)
from .status import fmt_cost, fmt_duration

if TYPE_CHECKING:
    from .api import RunResult

__all__ = ["LineLog", "render_summary"]


class LineLog:
    """An EventSink printing one line per task state change."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.t0: float | None = None

    def emit(self, e: Event) -> None:
        if isinstance(e, RunStarted):
            self.t0 = e.ts
            verb = "resumed" if e.session > 1 else "started"
            sim = " · SIMULATED (sim provider)" if e.simulated else ""
            done = f", {len(e.done)} already done" if e.done else ""
            self._print(
                f"run {e.run_id} {verb}: plan {e.plan} · {len(e.tasks)} tasks{done} · "
                f"{len(e.agents)} agents · policy {e.policy}{sim}"
            )
            return
        t = e.ts - (self.t0 or e.ts)
        if isinstance(e, TaskSucceeded):
            self._print(f"[{t:7.2f}s] ✓ {e.task_id}  by {e.agent}")
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
        elif isinstance(e, Alert):
            self._print(f"[{t:7.2f}s] ! {e.kind}: {e.message}")
        elif isinstance(e, ScaleDecision):
            self._print(f"[{t:7.2f}s] ⇅ {e.role}  {e.action} {e.before} -> {e.after}: {e.reason}")

    def _print(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe never stops a run
            print(line, file=self.stream, flush=True)


def render_summary(r: RunResult) -> str:
    s = r.snapshot
    c = s.counts
    sim = " · SIMULATED (sim provider)" if r.simulated else ""
    u = s.usage
    lines = [
        f"run {r.run_id} {r.status} in {fmt_duration(s.elapsed)} ({s.elapsed:.2f}s){sim}",
        f"  tasks: {c.get('succeeded', 0)} succeeded, {c.get('failed', 0)} failed, "
        f"{c.get('skipped', 0)} skipped"
        + (f", {r.unfinished} not finished" if r.unfinished else "")
        + f" (of {s.total})",
        f"  attempts: {s.attempts} ({s.failed_attempts} failed) · tokens: "
        f"{u.input_tokens:,} in / {u.output_tokens:,} out · cost: {fmt_cost(u, r.simulated)}",
    ]
    if r.status in ("budget_exhausted", "error"):
        lines.append(f"  why: {s.reason}")
    elif r.status == "interrupted" and not s.reason.startswith("interrupted"):
        lines.append(f"  why: {s.reason.split(': resume with')[0]}")  # e.g. the cluster is gone
    if s.speedup is not None and s.busy_seconds > 0:
        lines.append(
            f"  speedup: {s.speedup:.1f}x over the sum of task times "
            f"({s.busy_seconds:.2f}s of work in {s.elapsed:.2f}s)"
        )
    if r.changes is not None:
        lines.append("  changed files (each agent on its own branch):")
        lines += [
            f"    {agent}: {', '.join(files) or 'nothing'}" for agent, files in r.changes.items()
        ]
        lines.append(f"  merge them with: phalanx merge {r.run_id}")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append(f"  outputs: {r.outputs_dir}/")
    lines.append(f"  journal: {r.journal_path} · details: phalanx status {r.run_id}")
    if r.status == "interrupted":
        lines.append(f"  resume with: phalanx resume {r.run_id}")
    return "\n".join(lines)

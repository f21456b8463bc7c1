"""A run's report as data: every task, attempt, alert and figure folded from the journal's
events (:func:`report_from_events`, :func:`build_report`); ``report`` renders it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..events import (
    AgentJoined,
    Alert,
    ApprovalDecided,
    ApprovalRequested,
    AttemptFinished,
    AttemptStarted,
    RunStarted,
    ScaleDecision,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)
from ..redaction import redact
from .metrics import BACKPRESSURE, Metrics, compute_metrics
from .progress import Progress

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = [
    "EXCERPT",
    "MAX_ROWS",
    "OUTCOME_COLOURS",
    "AlertRow",
    "Bar",
    "Report",
    "TaskRow",
    "build_report",
    "clean",
    "histogram",
    "report_from_events",
]

EXCERPT = 160  # characters of an output or error shown
MAX_ROWS = 2000  # tasks, alerts and Gantt rows beyond this are counted, not listed
OUTCOME_COLOURS: dict[str, str] = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "rate_limited": "#ef6c00",
    "cancelled": "#9e9e9e",
    "stale": "#6a1b9a",
    "lost": "#455a64",
    "running": "#1565c0",
}


def clean(text: str | None, limit: int = EXCERPT) -> str:
    """Redacted, one line, at most ``limit`` characters (an excerpt, never the whole)."""
    if not text:
        return ""
    flat = " ".join(redact(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- the report's data --------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class Bar:
    """One attempt on the timeline (times in active seconds since the run started)."""

    agent: str
    task_id: str
    attempt_id: int
    start: float
    end: float
    outcome: str  # a key of OUTCOME_COLOURS


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRow:
    id: str
    title: str
    state: str
    agent: str | None
    attempts: int
    error_class: str | None = None
    error: str = ""
    output: str = ""  # an excerpt


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertRow:
    at: float  # active seconds
    kind: str
    message: str
    agent: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AwaitingRow:
    """A task awaiting a person's approval when the report was made."""

    task: str
    since: float  # active seconds
    reason: str
    by: str
    command: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    metrics: Metrics
    bars: tuple[Bar, ...]
    tasks: tuple[TaskRow, ...]
    alerts: tuple[AlertRow, ...]
    completions: tuple[float, ...]  # active seconds of each TaskSucceeded, in order
    session_starts: tuple[float, ...]  # active seconds where sessions 2.. start
    agents: tuple[str, ...]
    title: str = ""
    baseline_run_id: str | None = None  # the run the speedup is measured against
    # tasks still awaiting a person's approval: task, since (active seconds), why, command
    awaiting: tuple[AwaitingRow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "title": self.title,
            "baseline_run_id": self.baseline_run_id,
            "run_id": m.run_id,
            "plan": m.plan,
            "status": m.status,
            "simulated": m.simulated,
            "metrics": m.to_dict(),
            "progress": Progress.of_counts(m.task_states).to_dict(),
            "tasks": [_asdict(t) for t in self.tasks],
            "alerts": [_asdict(a) for a in self.alerts],
            "awaiting_approval": [_asdict(w) for w in self.awaiting],
            "plots": {
                "timeline": [_asdict(b) for b in self.bars],
                "session_starts": list(self.session_starts),
                "tasks_done": [[t, i + 1] for i, t in enumerate(self.completions)],
                "cost_by_agent": {a: f.cost_usd for a, f in m.by_agent.items()},
                "latency_histogram": [
                    {"from": lo, "to": hi, "count": n} for lo, hi, n in histogram(m)
                ],
            },
        }


def _asdict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


class _Clock:
    """Maps a timestamp to active seconds (time inside sessions since the run began). An
    event belongs to the session last started before it in the journal, so the clocks of
    different sessions need not agree."""

    def __init__(self, spans: Sequence[tuple[float, float]]) -> None:
        self.spans = spans
        self.bases = [sum(end - start for start, end in spans[:i]) for i in range(len(spans))]
        self.k = -1  # the current session

    def next_session(self) -> float:
        """Moves to the next session; returns the active seconds where it starts."""
        self.k = min(self.k + 1, len(self.spans) - 1)
        return self.bases[self.k] if self.k >= 0 else 0.0

    def __call__(self, ts: float) -> float:
        if self.k < 0:
            return 0.0
        start, end = self.spans[self.k]
        return self.bases[self.k] + min(max(0.0, ts - start), end - start)


@dataclass(slots=True)
class _Task:
    title: str
    state: str = "pending"
    agent: str | None = None
    attempts: int = 0
    error_class: str | None = None
    error: str = ""


@dataclass(slots=True)
class _Collect:
    """One pass over the events for the timeline, tasks and alerts."""

    clock: _Clock
    bars: list[Bar] = field(default_factory=list)
    open: dict[int, AttemptStarted] = field(default_factory=dict)
    tasks: dict[str, _Task] = field(default_factory=dict)
    alerts: list[AlertRow] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    session_starts: list[float] = field(default_factory=list)
    agents: dict[str, None] = field(default_factory=dict)
    last_ts: float = 0.0
    awaiting: dict[str, AwaitingRow] = field(default_factory=dict)
    run_id: str = ""

    def emit(self, e: object) -> None:
        if isinstance(e, RunStarted):
            self._run_started(e)
        elif isinstance(e, AttemptStarted):
            self.open[e.attempt_id] = e
            t = self.tasks.setdefault(e.task_id, _Task(title=e.task_id))
            t.attempts, t.agent, t.state = e.attempt_no, e.agent, "running"
        elif isinstance(e, AttemptFinished):
            self._attempt_finished(e)
        elif isinstance(e, TaskSucceeded):
            self._task_end(e.task_id, "succeeded", None, "", e.agent)
            self.completions.append(self.clock(e.ts))
        elif isinstance(e, TaskFailed):
            self._task_end(e.task_id, "failed", e.error_class, e.error, None)
            self._alert(e.ts, "task", f"task {e.task_id} failed: {e.error_class}", None)
        elif isinstance(e, TaskSkipped):
            self._task_end(e.task_id, "skipped", "skipped", e.reason, None)
        else:
            self._other(e)
        ts = getattr(e, "ts", None)
        if isinstance(ts, float | int):
            self.last_ts = max(self.last_ts, float(ts))

    def _other(self, e: object) -> None:
        if isinstance(e, Alert):
            self._alert(e.ts, e.kind, e.message, e.agent)
        elif isinstance(e, AgentJoined):
            self.agents.setdefault(e.agent.name, None)
        elif isinstance(e, ScaleDecision) and e.action != "hold":  # breakers send Alerts
            text = f"{e.action} {e.role}: {e.before} -> {e.after} ({e.reason})"
            self._alert(e.ts, "scale", text, None)
        elif isinstance(e, ApprovalRequested | ApprovalDecided):
            self._approval(e)

    def _approval(self, e: ApprovalRequested | ApprovalDecided) -> None:
        """A wait for a person (listed until decided) or a decision (an alert row)."""
        if isinstance(e, ApprovalRequested):
            t = self.tasks.setdefault(e.task_id, _Task(title=e.task_id))
            t.state = "awaiting_approval"
            self.awaiting[e.task_id] = AwaitingRow(
                task=e.task_id,
                since=self.clock(e.since or e.ts),
                reason=e.reason,
                by=e.by,
                command=f"phalanx approve {self.run_id} {e.task_id}",
            )
            return
        self.awaiting.pop(e.task_id, None)
        if e.decision == "approved" and e.task_id in self.tasks:
            self.tasks[e.task_id].state = "pending"
        who = f" by {e.by}" if e.by and e.decision != "timed_out" else ""
        why = f" ({e.reason})" if e.reason else ""
        self._alert(e.ts, "approval", f"{e.task_id} {e.decision.replace('_', ' ')}{who}{why}", None)

    def _run_started(self, e: RunStarted) -> None:
        self._close_open("lost")
        start = self.clock.next_session()
        if self.clock.k > 0:
            self.session_starts.append(start)
        self.last_ts, self.run_id = e.ts, e.run_id
        for a in e.agents:
            self.agents.setdefault(a.name, None)
        for t in e.tasks:
            task = self.tasks.setdefault(t.id, _Task(title=t.title))
            task.title = t.title
            if task.state == "running":
                task.state = "pending"

    def _close_open(self, outcome: str) -> None:
        for a in self.open.values():
            self._bar(a, self.last_ts, outcome)
        self.open.clear()

    def _bar(self, a: AttemptStarted, end: float, outcome: str) -> None:
        self.bars.append(
            Bar(
                agent=a.agent,
                task_id=a.task_id,
                attempt_id=a.attempt_id,
                start=self.clock(a.ts),
                end=self.clock(max(end, a.ts)),
                outcome=outcome,
            )
        )

    def _attempt_finished(self, e: AttemptFinished) -> None:
        started = self.open.pop(e.attempt_id, None)
        if started is not None:
            self._bar(started, e.ts, _outcome(e))
        t = self.tasks.get(e.task_id)
        if t is None or e.ok or e.stale:
            return
        t.state = "pending"  # to be retried, re-run on resume, or failed by the next event
        if e.error_class != "cancelled":
            t.error_class, t.error = e.error_class, e.error or ""

    def _task_end(
        self, tid: str, state: str, cls: str | None, error: str, agent: str | None
    ) -> None:
        t = self.tasks.setdefault(tid, _Task(title=tid))
        t.state, t.error_class, t.error = state, cls, error
        self.awaiting.pop(tid, None)
        if agent is not None:
            t.agent = agent

    def _alert(self, ts: float, kind: str, message: str, agent: str | None) -> None:
        self.alerts.append(AlertRow(at=self.clock(ts), kind=kind, message=message, agent=agent))


def _outcome(e: AttemptFinished) -> str:
    if e.error_class == "cancelled":
        return "cancelled"
    if e.stale:
        return "stale"
    if e.ok:
        return "succeeded"
    return "rate_limited" if e.error_class in BACKPRESSURE else "failed"


def report_from_events(
    events: Iterable[object],
    *,
    outputs: Mapping[str, str] | None = None,
    title: str = "",
    baseline: Metrics | None = None,
    baseline_run_id: str | None = None,
) -> Report:
    """The report of a run from its events (and, optionally, task outputs to excerpt).
    ``baseline``: the metrics of a sequential run of the same plan, for a measured speedup
    (``baseline_run_id`` names it in the report)."""
    events = list(events)
    metrics = compute_metrics(events, baseline=baseline)
    collect = _Collect(clock=_Clock(metrics.session_spans))
    for e in events:
        collect.emit(e)
    collect._close_open("running")
    outs = outputs or {}
    tasks = tuple(
        TaskRow(
            id=tid,
            title=clean(t.title),
            state=t.state,
            agent=t.agent,
            attempts=t.attempts,
            error_class=t.error_class if t.state != "succeeded" else None,
            error=clean(t.error) if t.state != "succeeded" else "",
            output=clean(outs.get(tid)),
        )
        for tid, t in collect.tasks.items()
    )
    alerts = tuple(
        AlertRow(at=a.at, kind=clean(a.kind, 40), message=clean(a.message), agent=a.agent)
        for a in collect.alerts
    )
    return Report(
        metrics=metrics,
        bars=tuple(collect.bars),
        tasks=tasks,
        alerts=alerts,
        completions=tuple(collect.completions),
        session_starts=tuple(collect.session_starts),
        agents=tuple(collect.agents),
        title=clean(title, 200),
        baseline_run_id=baseline_run_id if baseline is not None else None,
        awaiting=tuple(replace(w, reason=clean(w.reason)) for w in collect.awaiting.values()),
    )


def build_report(journal: Journal, run_id: str, *, baseline: str | None = None) -> Report:
    """The report of a journaled run (a run id prefix is accepted); ``baseline``: a run id
    (or prefix) of the same plan run sequentially, to measure the speedup against."""
    rec = journal.get_run(run_id)
    outputs = {k: r.output for k, r in journal.results(rec.run_id).items()}
    events = (e for _, e in journal.read_events(rec.run_id))
    base_metrics, base_id = None, None
    if baseline is not None:
        base_id = journal.get_run(baseline).run_id
        base_metrics = compute_metrics(e for _, e in journal.read_events(base_id))
    report = report_from_events(
        events,
        outputs=outputs,
        title=f"{rec.plan_name} · {rec.run_id}",
        baseline=base_metrics,
        baseline_run_id=base_id,
    )
    return _with_liveness(journal, rec.run_id, report)


def _with_liveness(journal: Journal, run_id: str, report: Report) -> Report:
    """A run whose process is gone reports status ``stopped`` (liveness, from the journal)."""
    from .liveness import STOPPED, process_gone

    m = report.metrics
    if m.finished is not None or process_gone(journal, run_id) is None:
        return report
    return replace(report, metrics=replace(m, status=STOPPED))


def histogram(m: Metrics) -> list[tuple[float, float, int]]:
    """Task latency bins: about sqrt(n) equal bins (at most 20) over [min, max]."""
    samples = m.run.task_latency_samples
    if not samples:
        return []
    lo, hi = min(samples), max(samples)
    n = max(1, min(20, math.ceil(math.sqrt(len(samples)))))
    width = (hi - lo) / n if hi > lo else 1.0
    counts = [0] * n
    for s in samples:
        counts[min(n - 1, int((s - lo) / width))] += 1
    return [(lo + i * width, lo + (i + 1) * width, c) for i, c in enumerate(counts)]

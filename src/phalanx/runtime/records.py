"""What a run knows of its tasks: one ``TaskRecord`` per task, the ``Prior`` an earlier session
of a resumed run left in the journal, and the events built from them (the run's opening
``RunStarted``, an attempt's ``AttemptFinished``, the upstream results handed to a task).
Pure data and builders: nothing here emits, schedules or reads a clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cost import ZERO, Usage
from ..events import AgentInfo, AttemptFinished, RunStarted, TaskInfo, TasksAdded, TaskState
from ..exceptions import ErrorClass
from ..journal import RecordedLoop
from ..plan.model import Plan, Task
from .approvals import PriorWait
from .executor import AgentRunner, Outcome, Upstream
from .policies import AgentSlot

__all__ = [
    "DEFAULT_PROVIDER",
    "Prior",
    "TaskRecord",
    "attempt_cancelled",
    "attempt_finished",
    "load_records",
    "run_started",
    "tally",
    "upstream_of",
]

DEFAULT_PROVIDER = "local:smollm2"  # an agent's provider when neither it nor the plan says


@dataclass(slots=True)
class TaskRecord:
    """What the run knows of one task (for results and the summary)."""

    state: TaskState = "pending"
    output: str = ""
    agent: str | None = None
    attempt_id: int | None = None
    attempts: int = 0  # failed attempts so far (interrupted ones don't count)
    lost: int = 0  # attempts lost with their host (re-queued, not counted in attempts)
    usage: Usage = ZERO
    error_class: str | None = None  # an ErrorClass value (journal rows carry strings)
    error: str | None = None
    # the answer as this session's attempt parsed it in its style (``parsed_here``); an
    # earlier session's answer is parsed again from ``output`` when asked for
    parsed: Any = field(default=None, repr=False)
    parsed_here: bool = False


@dataclass(frozen=True, kw_only=True)
class Prior:
    """What earlier sessions of a resumed run left in the journal."""

    session: int = 1
    max_attempt_id: int = 0
    outputs: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)  # id->(out,agent,aid)
    terminal: Mapping[str, tuple[TaskState, str | None, str | None]] = field(default_factory=dict)
    failed_attempts: Mapping[str, int] = field(default_factory=dict)
    spent: Usage = ZERO  # tokens and cost of every earlier attempt (budgets span sessions)
    loops: Mapping[str, RecordedLoop] = field(default_factory=dict)  # interrupted agent loops
    approvals: Mapping[str, PriorWait] = field(default_factory=dict)  # journaled approval waits
    parsed: Mapping[str, Any] = field(default_factory=dict)  # id -> its parsed answer
    growth: Sequence[TasksAdded] = ()  # how the plan grew, in order


def load_records(plan: Plan, prior: Prior) -> dict[str, TaskRecord]:
    """A record per task of the plan, with what earlier sessions settled."""
    records: dict[str, TaskRecord] = {t.id: TaskRecord() for t in plan.tasks}
    for tid, (out, agent, aid) in prior.outputs.items():
        if tid in records:
            records[tid] = TaskRecord(state="succeeded", output=out, agent=agent, attempt_id=aid)
    for tid, (state, cls, err) in prior.terminal.items():
        if tid in records and records[tid].state != "succeeded":
            records[tid] = TaskRecord(state=state, error_class=cls, error=err)
    for tid, n in prior.failed_attempts.items():
        if tid in records:
            records[tid].attempts = n
    return records


def tally(records: Mapping[str, TaskRecord]) -> str:
    """``"3 failed, 7 succeeded"``: tasks counted by state, states in order."""
    counts: dict[str, int] = {}
    for r in records.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def upstream_of(
    task: Task,
    records: Mapping[str, TaskRecord],
    expanded: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Upstream, ...]:
    """The results of the tasks ``task`` needs, with their provenance; a need that is an
    expanded foreach template hands over its tasks' results (``expanded``), one by one."""
    if not task.needs:
        return ()
    expanded = expanded or {}
    needs = [m for n in task.needs for m in expanded.get(n, (n,))]
    return tuple(
        Upstream(
            task_id=n,
            agent=records[n].agent or "",
            attempt_id=records[n].attempt_id or 0,
            output=records[n].output,
        )
        for n in dict.fromkeys(needs)
        if n in records
    )


def run_started(
    plan: Plan,
    *,
    ts: float,
    run_id: str,
    session: int,
    simulated: bool,
    slots: Mapping[str, AgentSlot],
    runners: Mapping[str, AgentRunner],
    records: Mapping[str, TaskRecord],
    timed: bool = True,
    grows: Collection[str] = (),
) -> RunStarted:
    """The run's opening event: its fleet, its tasks and those already settled (``timed``:
    false when every model is simulated with zero latency)."""
    default = plan.provider or DEFAULT_PROVIDER
    agents = tuple(
        AgentInfo(
            name=a.name or "",
            role=a.role,
            provider=a.provider or default,
            style=a.style,
            skills=tuple(sorted(a.skills)),
            context_tokens=getattr(runners.get(a.name or ""), "context_tokens", 0),
        )
        for a in plan.agents
        if (a.name or "") in slots
    )
    tasks = tuple(
        TaskInfo(
            id=t.id,
            title=t.label,
            category=t.category,
            needs=t.needs,
            role=t.role,
            grows=t.id in grows,
        )
        for t in plan.tasks
    )
    return RunStarted(
        ts=ts,
        run_id=run_id,
        plan=plan.name,
        session=session,
        policy=plan.policy,
        simulated=simulated,
        agents=agents,
        tasks=tasks,
        done=tuple(k for k, r in records.items() if r.state != "pending"),
        timed=timed,
    )


def attempt_finished(o: Outcome, ts: float, stale: bool) -> AttemptFinished:
    """An attempt's result as an event (``stale``: superseded, recorded and ignored)."""
    return AttemptFinished(
        ts=ts,
        task_id=o.task_id,
        attempt_id=o.attempt_id,
        agent=o.agent,
        ok=o.ok,
        duration=o.duration,
        usage=o.usage,
        error_class=o.error_class,
        error=o.error,
        status=o.status,
        retry_after=o.retry_after,
        stale=stale,
        queued=o.queued,
    )


def attempt_cancelled(
    task_id: str, attempt_id: int, agent: str, ts: float, reason: str | None
) -> AttemptFinished:
    """An in-flight attempt the run cancelled (a budget ran out): its task goes back to
    pending."""
    return AttemptFinished(
        ts=ts,
        task_id=task_id,
        attempt_id=attempt_id,
        agent=agent,
        ok=False,
        duration=0.0,
        error_class=ErrorClass.CANCELLED,
        error=reason,
    )

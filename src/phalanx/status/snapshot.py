"""Status: a pure fold of the event stream into a snapshot, and its three text levels.

Level 1, one line per agent; level 2, teams (by role) with progress bars; level 3, the swarm:
active/capacity per role, task counts, total progress, ETA, tokens, cost and alerts. The
same snapshot feeds ``phalanx status``, the live terminal view and the web dashboard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..agents.spec import ROLES
from ..cost import ZERO, Usage
from ..events import (
    AgentJoined,
    AgentPlaced,
    AgentRetired,
    AgentState,
    AgentWaiting,
    Alert,
    ApprovalDecided,
    ApprovalRequested,
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    CallRetried,
    Event,
    RetryScheduled,
    RunFinished,
    RunStarted,
    RunStatus,
    TaskFailed,
    TasksAdded,
    TaskSkipped,
    TaskState,
    TaskSucceeded,
    ToolCalled,
    ToolInDoubt,
)
from ..journal import RunRecord
from .progress import Progress, failure_reason
from .speedup import Speedup, speedup_of

__all__ = [
    "IN_DOUBT_HANDLING",
    "STOPPED",
    "AgentStatus",
    "Failure",
    "Progress",
    "ShownStatus",
    "Snapshot",
    "StatusTracker",
    "as_stopped",
    "fold",
    "status_text",
]

STOPPED: Literal["stopped"] = "stopped"  # running in the journal, but its process is gone
ShownStatus = RunStatus | Literal["stopped"]
IN_DOUBT_HANDLING = {  # how a resume handled a tool call in doubt, as the views say it
    "rerun": "run again",
    "ask": "outcome unknown, the agent was told to check",
    "fail": "the attempt failed (retry.on_in_doubt: fail)",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """An agent's last failed attempt (kept until it next succeeds): the task, why
    (:func:`~phalanx.status.progress.failure_reason` of ``error_class`` and ``error``),
    how long the attempt ran, and whether the task failed for good (``final``: no retry
    left) or was queued again."""

    task_id: str
    task_title: str
    error_class: str
    error: str
    seconds: float
    final: bool = False

    def reason(self, limit: int | None = None) -> str:
        return failure_reason(self.error_class, self.error, limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task_id,
            "task_title": self.task_title,
            "error_class": self.error_class,
            "error": self.error,
            "reason": self.reason(),
            "seconds": self.seconds,
            "final": self.final,
        }


@dataclass(slots=True)
class AgentStatus:
    name: str
    role: str
    provider: str
    state: AgentState = "idle"
    task_id: str | None = None
    task_title: str = ""
    since: float = 0.0
    done: int = 0
    assigned: int = 0
    failures: int = 0
    busy: float = 0.0
    usage: Usage = ZERO
    waiting_until: float | None = None
    waiting_for: str = ""
    context_tokens: int = 0
    paused: bool = False  # its circuit breaker is open
    turn: int = 0  # model calls made so far on the current task
    max_turns: int = 0
    node: str = ""  # where a remote engine hosts it (a short Ray node id)
    tasks: Progress = field(
        default_factory=Progress
    )  # its tasks: running, or ended on its attempt (failed kept)
    failure: Failure | None = None  # its last attempt, when it failed (until one succeeds)


@dataclass(slots=True)
class _Task:
    title: str
    category: str
    needs: tuple[str, ...]
    state: TaskState = "queued"
    agent: str | None = None
    attempts: int = 0
    grows: bool = False  # may add tasks while unfinished (a foreach template, a spawner)


@dataclass(slots=True)
class Snapshot:
    run_id: str
    plan: str
    status: ShownStatus  # "stopped" only from as_stopped: the fold never says it
    simulated: bool
    started: float
    now: float
    agents: list[AgentStatus]
    counts: dict[str, int]
    total: int
    progress: float  # 0..1, terminal tasks / all
    eta_seconds: float | None
    usage: Usage
    attempts: int
    failed_attempts: int
    busy_seconds: float
    alerts: list[str] = field(default_factory=list)
    session: int = 1
    finished: float | None = None
    reason: str = ""  # why the run ended (RunFinished.reason)
    call_retries: int = 0  # model calls sent again inside their attempt (CallRetried)
    # tool calls a resume found started without a result, and how each was handled
    in_doubt: list[dict[str, Any]] = field(default_factory=list)
    tasks: Progress = field(default_factory=Progress)  # the progress model every view renders
    active_before: float = 0.0  # active seconds of the sessions before this one
    session_started: float = 0.0  # when this session started (its RunStarted)
    # a team's tasks that no agent holds (queued, waiting, retrying, skipped), by the team
    # whose role's categories take them: a team's bar is never full while its work waits
    unheld: dict[str, Progress] = field(default_factory=dict)
    # running tasks already longer than every finished one: the ETA is then a lower bound
    # (``eta_seconds``), or unknown (None) when nothing else is left
    eta_over: int = 0
    timed: bool = True  # false: every model simulated with zero latency (RunStarted.timed)
    last_event: float = 0.0  # the newest event's time (a stopped run's clock stops no earlier)
    # tasks awaiting a person's approval, oldest first: task, title, since, reason, by,
    # deadline, on_timeout, command (what decides it); the ETA leaves them and what needs
    # them out (``eta_waits``: how many tasks that is)
    awaiting: list[dict[str, Any]] = field(default_factory=list)
    eta_waits: int = 0
    # a task that may add tasks (a foreach template, a spawner) is unfinished: the total is
    # what is known so far, and the ETA is for the known tasks only
    growing: bool = False

    @property
    def elapsed(self) -> float:
        """Active time: every session's span (start to its last event or RunFinished); the
        downtime between sessions does not count."""
        end = self.finished or self.now
        return self.active_before + max(0.0, end - (self.session_started or self.started))

    @property
    def calendar(self) -> float:
        """Calendar time: the first session's start to now (or the end), downtime included."""
        return max(0.0, (self.finished or self.now) - self.started)

    @property
    def resumed(self) -> bool:
        """More than one session, with time between them: active and calendar time differ."""
        return self.session > 1 and self.calendar - self.elapsed >= 0.5

    def elapsed_text(self) -> str:
        """``30s`` or, after a resume, ``30s active (2m 00s calendar, 2 sessions)``."""
        if not self.resumed:
            return fmt_duration(self.elapsed)
        return (
            f"{fmt_duration(self.elapsed)} active ({fmt_duration(self.calendar)} calendar, "
            f"{self.session} sessions)"
        )

    @property
    def speedup(self) -> float | None:
        """Sum of attempt service times over active time: what running them one by one costs
        (None without timing to compare: see :attr:`speedup_claim`)."""
        return self.speedup_claim.value

    @property
    def speedup_claim(self) -> Speedup:
        """The speedup, or why none is claimed (a simulated zero-latency run, no timing)."""
        return speedup_of(self.busy_seconds, self.elapsed, timed=self.timed)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON data (``status --json``; the dashboard adds its views)."""
        return {
            "run_id": self.run_id,
            "plan": self.plan,
            "status": self.status,
            "reason": self.reason,
            "status_text": status_text(self.status, self.run_id),
            "simulated": self.simulated,
            "session": self.session,
            "started": self.started,
            "now": self.now,
            "finished": self.finished,
            "elapsed": self.elapsed,
            "active_seconds": self.elapsed,
            "calendar_seconds": self.calendar,
            **self._speedup_dict(),
            "counts": self.counts,
            "tasks": self.tasks.to_dict(),
            "total": self.total,
            "growing": self.growing,
            "progress": self.progress,
            "eta_seconds": self.eta_seconds,
            "eta_over_estimate": self.eta_over,
            "usage": self.usage.to_dict(),
            "attempts": self.attempts,
            "failed_attempts": self.failed_attempts,
            "call_retries": self.call_retries,
            "in_doubt": [dict(d) for d in self.in_doubt],
            "awaiting_approval": [dict(w) for w in self.awaiting],
            "eta_waits_on_approval": self.eta_waits,
            "alerts": list(self.alerts),
            "agents": [
                {
                    "name": a.name,
                    "role": a.role,
                    "state": a.state,
                    "task": a.task_id,
                    "done": a.done,
                    "assigned": a.assigned,
                    "failures": a.failures,
                    "tasks": a.tasks.to_dict(),
                    "failure": a.failure.to_dict() if a.failure else None,
                }
                for a in self.agents
            ],
        }

    def _speedup_dict(self) -> dict[str, Any]:
        claim = self.speedup_claim
        return {"speedup": claim.value, "speedup_reason": claim.reason or None}

    def agents_by_role(self) -> dict[str, list[AgentStatus]]:
        out: dict[str, list[AgentStatus]] = {}
        for a in self.agents:
            out.setdefault(a.role, []).append(a)
        return out


class StatusTracker:
    """Folds events into a snapshot, incrementally. Also an EventSink."""

    def __init__(self, eta_window: int = 50) -> None:
        self.run_id = ""
        self.plan = ""
        self.status: RunStatus = "running"
        self.simulated = False
        self.timed = True
        self.session = 1
        self.started = 0.0
        self.finished: float | None = None
        self.reason = ""
        self.session_start = 0.0
        self.session_busy = 0.0
        self.session_last = 0.0  # this session's last event so far
        self.active_before = 0.0  # active seconds of the sessions before this one
        self.last_ts = 0.0
        self.agents: dict[str, AgentStatus] = {}
        self.tasks: dict[str, _Task] = {}
        self.counts: dict[str, int] = {}
        self.usage = ZERO
        self.attempts = 0
        self.failed_attempts = 0
        self.call_retries = 0
        self.in_doubt: list[dict[str, Any]] = []
        self.awaiting: dict[str, dict[str, Any]] = {}  # task -> its wait for an approval
        self.busy = 0.0
        self.alerts: list[str] = []
        self._completions: deque[float] = deque(maxlen=eta_window)
        self._durations: deque[float] = deque(maxlen=eta_window)

    def seed(self, row: RunRecord) -> None:
        """A run with no event yet (its process died between its row and its first event):
        what its journal row says (its plan's tasks queued), so its views name it and show
        it stopped, or running. Nothing once an event was folded."""
        if self.run_id:
            return
        self.run_id, self.plan, self.simulated = row.run_id, row.plan_name, row.simulated
        self.started = self.last_ts = row.created_at
        for d in row.plan.get("tasks") or ():
            self._add_task_data(d)

    # -- folding ---------------------------------------------------------------------------
    def emit(self, e: Event) -> None:
        self.last_ts = max(self.last_ts, e.ts)
        if not isinstance(e, RunStarted):
            self.session_last = max(self.session_last, e.ts)
        fold = _FOLDS.get(type(e))
        if fold is not None:
            fold(self, e)

    def _task_succeeded(self, e: TaskSucceeded) -> None:
        self._set(e.task_id, "succeeded")
        self.awaiting.pop(e.task_id, None)
        t = self.tasks.get(e.task_id)
        if t is not None and e.agent:
            t.agent = e.agent
        self._completions.append(e.ts)

    def _task_failed(self, e: TaskFailed) -> None:
        self._set(e.task_id, "failed")
        self.awaiting.pop(e.task_id, None)
        t = self.tasks.get(e.task_id)
        a = self.agents.get(t.agent) if t is not None and t.agent else None
        if a is not None and a.failure is not None and a.failure.task_id == e.task_id:
            a.failure = replace(a.failure, error_class=e.error_class, error=e.error, final=True)
        self._completions.append(e.ts)
        self._alert(f"task {e.task_id} failed: {e.error_class}")

    def _task_skipped(self, e: TaskSkipped) -> None:
        self._set(e.task_id, "skipped")
        self.awaiting.pop(e.task_id, None)

    def _approval_requested(self, e: ApprovalRequested) -> None:
        """A task waits for a person: listed (with the command that decides it)."""
        self._set(e.task_id, "awaiting_approval")
        t = self.tasks.get(e.task_id)
        self.awaiting[e.task_id] = {
            "task": e.task_id,
            "title": t.title if t is not None else e.task_id,
            "since": e.since or e.ts,
            "reason": e.reason,
            "by": e.by,
            "deadline": e.deadline,
            "on_timeout": e.on_timeout,
            "command": f"phalanx approve {self.run_id} {e.task_id}",
        }

    def _approval_decided(self, e: ApprovalDecided) -> None:
        self.awaiting.pop(e.task_id, None)
        if e.decision == "approved":
            self._set(e.task_id, "queued")
        self._alert(
            f"approval: {e.task_id} {e.decision.replace('_', ' ')}"
            + (f" by {e.by}" if e.by and e.decision != "timed_out" else "")
            + (f" ({e.reason})" if e.reason else "")
        )

    def _retry_scheduled(self, e: RetryScheduled) -> None:
        self._set(e.task_id, "retrying")

    def _agent_waiting(self, e: AgentWaiting) -> None:
        a = self.agents.get(e.agent)
        if a is not None and a.task_id == e.task_id:
            a.waiting_until, a.waiting_for = e.until, f"{e.reason} ({e.key})"
        self._alert(f"rate limit: waiting on {e.key}")

    def _call_retried(self, e: CallRetried) -> None:
        """The agent waits to send its model call again: shown on its line until then."""
        self.call_retries += 1
        a = self.agents.get(e.agent)
        if a is not None and a.task_id == e.task_id:
            a.waiting_until = e.ts + e.delay
            a.waiting_for = f"retry of model call {e.turn} after {e.error_class}"
        self._alert(f"call retry: {e.error_class} on {e.agent} (task {e.task_id}, call {e.turn})")

    def _tool_in_doubt(self, e: ToolInDoubt) -> None:
        """A call a resume found started without a result: listed, and an alert."""
        self.in_doubt.append(
            {
                "task": e.task_id,
                "attempt": e.attempt_id,
                "from_attempt": e.from_attempt,
                "agent": e.agent,
                "tool": e.tool,
                "call_id": e.call_id,
                "turn": e.turn,
                "action": e.action,
            }
        )
        self._alert(
            f"in doubt: {e.tool} on {e.agent} (task {e.task_id}, call {e.turn}): "
            f"{IN_DOUBT_HANDLING[e.action]}"
        )

    def _alert_event(self, e: Alert) -> None:
        self._alert(f"{e.kind}: {e.message}")

    def _tool_called(self, e: ToolCalled) -> None:
        agent = self.agents.get(e.agent)
        if agent is not None and agent.task_id == e.task_id:
            agent.turn = max(agent.turn, e.turn)

    def _breaker_changed(self, e: BreakerChanged) -> None:
        for a in self.agents.values():
            if (e.scope == "agent" and a.name == e.key) or (
                e.scope == "provider" and a.provider == e.key
            ):
                a.paused = e.state == "open"

    def _agent_joined(self, e: AgentJoined) -> None:
        info = e.agent
        self.agents[info.name] = AgentStatus(
            name=info.name, role=info.role, provider=info.provider, since=e.ts
        )

    def _agent_retired(self, e: AgentRetired) -> None:
        if e.agent in self.agents:
            self.agents[e.agent].state = "retired"

    def _agent_placed(self, e: AgentPlaced) -> None:
        if e.agent in self.agents:
            self.agents[e.agent].node = e.node[:8]

    def _run_finished(self, e: RunFinished) -> None:
        """The run ended: no agent runs, waits or is paused any more (its breaker went with
        the session)."""
        self.status = e.status
        self.finished = e.ts
        self.reason = e.reason
        for a in self.agents.values():
            if a.state == "running":
                a.state, a.task_id, a.task_title = "idle", None, ""
            a.paused, a.waiting_until = False, None

    def _alert(self, text: str) -> None:
        if not self.alerts or self.alerts[-1] != text:
            self.alerts.append(text)
            del self.alerts[:-20]

    def _run_started(self, e: RunStarted) -> None:
        if self.started:  # the session before ended with its last event (or RunFinished)
            self.active_before += max(0.0, self.session_last - self.session_start)
        self.session_start, self.session_busy, self.session_last = e.ts, 0.0, e.ts
        self.run_id, self.plan, self.simulated, self.session = (
            e.run_id,
            e.plan,
            e.simulated,
            e.session,
        )
        self.status, self.finished = "running", None
        self.timed = e.timed
        if not self.started:
            self.started = e.ts
        self.agents = {
            a.name: self.agents.get(a.name)
            or AgentStatus(
                name=a.name, role=a.role, provider=a.provider, context_tokens=a.context_tokens
            )
            for a in e.agents
        }
        for a in self.agents.values():  # a new session: its circuit breakers start closed
            a.state, a.task_id, a.since, a.paused = "idle", None, e.ts, False
        for t in e.tasks:
            if t.id not in self.tasks:
                self._add_task(t.id, t.title, t.category, t.needs, t.grows)
        for tid, task in self.tasks.items():  # attempts cut short by a crash re-run
            if task.state in ("running", "retrying"):
                self._set(tid, "queued")

    def _add_task(
        self, tid: str, title: str, category: str, needs: tuple[str, ...], grows: bool
    ) -> None:
        self.tasks[tid] = _Task(title=title, category=category, needs=needs, grows=grows)
        self.counts["queued"] = self.counts.get("queued", 0) + 1

    def _add_task_data(self, d: Mapping[str, Any]) -> None:
        """A task given as plan data (a grown task, a plan's task), queued if it is new."""
        tid = str(d["id"])
        if tid not in self.tasks:
            needs = tuple(str(n) for n in d.get("needs") or ())
            title = str(d.get("title") or tid)
            category = str(d.get("category") or "other")
            self._add_task(tid, title, category, needs, bool(d.get("grows")))

    def _tasks_added(self, e: TasksAdded) -> None:
        """The plan grew: its new tasks are queued; the joins now need them."""
        for d in e.tasks:
            self._add_task_data(d)
        for j in e.joins:
            t = self.tasks.get(j)
            if t is not None:
                t.needs = (*t.needs, *e.ids)

    def _attempt_started(self, e: AttemptStarted) -> None:
        self.attempts += 1
        t = self.tasks.get(e.task_id)
        a = self.agents.get(e.agent)
        if t is not None:
            self._set(e.task_id, "running")
            t.agent, t.attempts = e.agent, e.attempt_no
        if a is not None:
            a.state, a.task_id, a.since = "running", e.task_id, e.ts
            a.turn, a.max_turns = 0, e.max_turns
            a.task_title = t.title if t else e.task_id
            a.assigned += 1

    def _attempt_finished(self, e: AttemptFinished) -> None:
        self.usage = self.usage + e.usage
        self.busy += e.duration
        self.session_busy += e.duration
        a = self.agents.get(e.agent)
        if e.error_class == "cancelled":  # stopped by the run (a budget), not a failure
            self._set(e.task_id, "queued")
        elif not e.ok:
            self.failed_attempts += 1
        else:
            self._durations.append(e.duration)
        if a is None:
            return
        a.busy += e.duration
        a.usage = a.usage + e.usage
        if a.task_id == e.task_id:
            a.state, a.task_id, a.task_title, a.since = "idle", None, "", e.ts
            a.waiting_until = None
        if e.ok and not e.stale:
            a.done += 1
            a.failure = None
        elif not e.ok:
            a.failures += 1
            a.assigned -= 1  # the task goes back to the queue
            if e.error_class != "cancelled":
                t = self.tasks.get(e.task_id)
                a.failure = Failure(
                    task_id=e.task_id,
                    task_title=t.title if t is not None else e.task_id,
                    error_class=str(e.error_class or ""),
                    error=e.error or "",
                    seconds=e.duration,
                )

    def _set(self, tid: str, state: TaskState) -> None:
        t = self.tasks.get(tid)
        if t is None or t.state == state:
            return
        self.counts[t.state] = self.counts.get(t.state, 0) - 1
        self.counts[state] = self.counts.get(state, 0) + 1
        t.state = state

    # -- the snapshot ----------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> Snapshot:
        now = self.finished or (now if now is not None else self.last_ts)
        total = len(self.tasks)
        terminal = sum(self.counts.get(s, 0) for s in ("succeeded", "failed", "skipped"))
        mine = self.agent_tasks()
        held = self.held_by_approvals()
        eta, over = self._eta(now, total - terminal - len(held), held)
        return Snapshot(
            run_id=self.run_id,
            plan=self.plan,
            status=self.status,
            simulated=self.simulated,
            started=self.started,
            now=now,
            finished=self.finished,
            agents=[_copy(a, now, mine.get(a.name, Progress())) for a in self.agents.values()],
            counts={k: v for k, v in self.counts.items() if v},
            total=total,
            progress=terminal / total if total else 0.0,
            eta_seconds=eta,
            eta_over=over,
            usage=self.usage,
            attempts=self.attempts,
            failed_attempts=self.failed_attempts,
            busy_seconds=self.busy,
            alerts=list(self.alerts[-5:]),
            session=self.session,
            reason=self.reason,
            call_retries=self.call_retries,
            in_doubt=[dict(d) for d in self.in_doubt],
            tasks=Progress.of_counts(self.counts),
            active_before=self.active_before,
            session_started=self.session_start,
            unheld=self.unheld_by_role(),
            timed=self.timed,
            last_event=self.last_ts,
            awaiting=sorted((dict(w) for w in self.awaiting.values()), key=lambda w: w["since"]),
            eta_waits=len(held),
            growing=self.status == "running"
            and any(t.grows and t.state not in _TERMINAL for t in self.tasks.values()),
        )

    def held_by_approvals(self) -> set[str]:
        """The unfinished tasks a person's decision holds: those awaiting approval and the
        ones that need them (directly or not). The ETA leaves them out: nobody can say when
        a person will answer."""
        if not self.awaiting:
            return set()
        deps: dict[str, list[str]] = {}
        for tid, t in self.tasks.items():
            for n in t.needs:
                deps.setdefault(n, []).append(tid)
        held: set[str] = set()
        stack = [tid for tid in self.awaiting if tid in self.tasks]
        while stack:
            tid = stack.pop()
            if tid in held or self.tasks[tid].state in ("succeeded", "failed", "skipped"):
                continue
            held.add(tid)
            stack.extend(deps.get(tid, ()))
        return held

    def agent_tasks(self) -> dict[str, Progress]:
        """Each agent's tasks: the one it runs and those that ended on its attempt
        (succeeded or failed: a failed task stays counted against its agent). A task whose
        attempt failed and that waits for a retry is back in the queue, no one's."""
        states: dict[str, list[str]] = {}
        for t in self.tasks.values():
            if t.agent is not None and t.state in ("running", "succeeded", "failed"):
                states.setdefault(t.agent, []).append(t.state)
        return {name: Progress.of_states(st) for name, st in states.items()}

    def unheld_by_role(self) -> dict[str, Progress]:
        """The tasks no agent holds (queued, waiting for their needs, waiting for a retry,
        skipped: the complement of :meth:`progress_by_agent`), each counted against the team
        whose role's categories take it (a role taking any category last), so that a team's
        counts keep its waiting work and its bar is not full while that work waits."""
        roles = list(dict.fromkeys(a.role for a in self.agents.values()))
        specific = [r for r in roles if r in ROLES and ROLES[r].categories]
        anything = next((r for r in roles if r in ROLES and not ROLES[r].categories), None)
        role_of: dict[str, str | None] = {}  # category -> its team (found once)
        counts: dict[str, dict[str, int]] = {}  # team -> its tasks by state
        for t in self.tasks.values():
            if t.agent is not None and t.state in ("running", "succeeded", "failed"):
                continue  # an agent's (progress_by_agent)
            if t.category in role_of:
                role = role_of[t.category]
            else:
                role = role_of[t.category] = next(
                    (r for r in specific if t.category in ROLES[r].categories), anything
                )
            if role is not None:
                by_state = counts.setdefault(role, {})
                by_state[t.state] = by_state.get(t.state, 0) + 1
        return {role: Progress.of_counts(by_state) for role, by_state in counts.items()}

    def _eta(
        self, now: float, remaining: int, held: set[str] | None = None
    ) -> tuple[float | None, int]:
        """The seconds left, and how many running tasks are already longer than every
        finished one ("over estimate"). Both from evidence only: the service times of the
        attempts that succeeded (the last 50) and the ages of the running ones, read at
        ``now``.

        A task's service time is estimated as the mean of the finished ones, the running
        tasks already over all of them counted in with their age (a lower bound of theirs),
        so the estimate grows while such a task goes on. A running task's time left is what
        the finished ones that outlasted its age ran longer (the mean of ``d - age`` over
        ``d > age``); one over every finished time has no evidence left: it counts 0 and
        the ETA is a lower bound (unknown when only such tasks are left). Remaining work =
        queued tasks x the estimate + the running ones' time left, over the parallelism
        observed (busy agent-seconds this session / its elapsed time), never below the
        remaining critical path. Unknown (None) until 3 attempts have succeeded; None once
        the run has finished. ``held``:
        the tasks a person's approval holds, left out (``remaining`` does not count them)."""
        if self.finished is not None:  # a finished run has no ETA (not "0s")
            return None, 0
        if remaining == 0:
            return 0.0, 0
        if len(self._durations) < 3:
            return None, 0
        done = sorted(self._durations)
        ages = {
            a.task_id: now - a.since
            for a in self.agents.values()
            if a.state == "running" and a.task_id is not None
        }
        over = [age for age in ages.values() if age >= done[-1]]
        mean = (sum(done) + sum(over)) / (len(done) + len(over))
        left = {tid: _time_left(done, age) for tid, age in ages.items()}
        elapsed = now - self.session_start
        busy = self.session_busy + sum(ages.values())
        if elapsed <= 0 or busy <= 0:
            return None, len(over)
        work = max(0, remaining - len(ages)) * mean + sum(left.values())
        eta = max(work / (busy / elapsed), self._critical_path_left(mean, left, held or set()))
        return (None if len(over) == remaining else eta), len(over)

    def _critical_path_left(
        self, mean: float, left: dict[str, float], held: Collection[str] = ()
    ) -> float:
        """The longest chain of unfinished tasks, in seconds: a running task's time left,
        ``mean`` for each other one (the tasks an approval holds left out)."""
        memo: dict[str, float] = {}
        deps: dict[str, list[str]] = {}
        for tid, t in self.tasks.items():
            for n in t.needs:
                deps.setdefault(n, []).append(tid)
        weight = {
            tid: left.get(tid, mean) if t.state == "running" else mean
            for tid, t in self.tasks.items()
            if t.state in ("queued", "running", "retrying") and tid not in held
        }
        if not deps:  # no task needs another: each chain is one task
            return max(weight.values(), default=0.0)
        return max((_chain(tid, deps, weight, memo) for tid in weight), default=0.0)


def _time_left(done: list[float], age: float) -> float:
    """A running task's expected time left: how much longer than ``age`` the finished
    attempts that outlasted it ran, on average (0 when none did: over every estimate)."""
    longer = [d - age for d in done if d > age]
    return sum(longer) / len(longer) if longer else 0.0


# what each event does to the status (events of other types change nothing)
_FOLDS: dict[type[Event], Callable[[StatusTracker, Any], None]] = {
    AttemptStarted: StatusTracker._attempt_started,
    AttemptFinished: StatusTracker._attempt_finished,
    TaskSucceeded: StatusTracker._task_succeeded,
    TaskFailed: StatusTracker._task_failed,
    TaskSkipped: StatusTracker._task_skipped,
    RetryScheduled: StatusTracker._retry_scheduled,
    AgentWaiting: StatusTracker._agent_waiting,
    CallRetried: StatusTracker._call_retried,
    Alert: StatusTracker._alert_event,
    ToolCalled: StatusTracker._tool_called,
    ToolInDoubt: StatusTracker._tool_in_doubt,
    BreakerChanged: StatusTracker._breaker_changed,
    AgentJoined: StatusTracker._agent_joined,
    AgentRetired: StatusTracker._agent_retired,
    AgentPlaced: StatusTracker._agent_placed,
    RunStarted: StatusTracker._run_started,
    RunFinished: StatusTracker._run_finished,
    ApprovalRequested: StatusTracker._approval_requested,
    ApprovalDecided: StatusTracker._approval_decided,
    TasksAdded: StatusTracker._tasks_added,
}
_TERMINAL = ("succeeded", "failed", "skipped")


def _chain(
    tid: str, deps: dict[str, list[str]], weight: dict[str, float], memo: dict[str, float]
) -> float:
    """The heaviest chain of unfinished tasks from ``tid`` (``weight``: the unfinished ones'
    seconds) through the tasks that need it."""
    stack = [(tid, False)]
    while stack:
        node, expanded = stack.pop()
        if node in memo:
            continue
        kids = [d for d in deps.get(node, ()) if d in weight]
        if expanded:
            memo[node] = weight[node] + max((memo[k] for k in kids), default=0.0)
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if k not in memo)
    return memo[tid]


def _copy(a: AgentStatus, now: float, tasks: Progress) -> AgentStatus:
    state = a.state
    if state == "running" and a.waiting_until is not None and now < a.waiting_until:
        state = "waiting"
    if state == "idle" and a.paused:
        state = "paused"
    return AgentStatus(
        name=a.name,
        role=a.role,
        provider=a.provider,
        state=state,
        task_id=a.task_id,
        task_title=a.task_title,
        since=a.since,
        done=a.done,
        assigned=a.assigned,
        failures=a.failures,
        busy=a.busy,
        usage=a.usage,
        waiting_until=a.waiting_until,
        waiting_for=a.waiting_for,
        context_tokens=a.context_tokens,
        paused=a.paused,
        turn=a.turn,
        max_turns=a.max_turns,
        node=a.node,
        tasks=tasks,
        failure=a.failure,
    )


def as_stopped(s: Snapshot, last_seen: float | None = None) -> Snapshot:
    """``s`` as the views show a run whose process is gone (liveness says so; the fold
    cannot know): status ``stopped``, no ETA, nothing running (what was running is queued,
    as a resume re-runs it), its clock stopped at ``last_seen`` (its last heartbeat) or its
    last event, whichever is later (a process killed between two heartbeats still did what
    its events say)."""
    counts = dict(s.counts)
    cut = counts.pop("running", 0) + counts.pop("retrying", 0)
    if cut:
        counts["queued"] = counts.get("queued", 0) + cut
    seen = max(last_seen or 0.0, s.last_event) or None
    now = s.now if seen is None else max(s.started, min(s.now, seen))
    agents = [  # an agent's task cut short goes back to the queue, as a failed attempt's does
        replace(
            a,
            state="idle",
            task_id=None,
            task_title="",
            waiting_until=None,
            turn=0,
            assigned=max(a.done, a.assigned - 1),
            tasks=replace(a.tasks, running=0),
        )
        if a.state in ("running", "waiting")
        else a
        for a in s.agents
    ]
    return replace(
        s,
        status=STOPPED,
        reason="process gone",
        eta_seconds=None,
        eta_over=0,
        counts=counts,
        tasks=Progress.of_counts(counts),
        now=now,
        agents=agents,
    )


def status_text(status: str, run_id: str) -> str:
    """A run's status as a person reads it: a stopped run's says how to resume it."""
    if status == STOPPED:
        return f"stopped (process gone) — phalanx resume {run_id}"
    return status


def fold(events: Iterable[Event]) -> Snapshot:
    """The snapshot of a run from its events (a pure function)."""
    tracker = StatusTracker()
    for e in events:
        tracker.emit(e)
    return tracker.snapshot()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"

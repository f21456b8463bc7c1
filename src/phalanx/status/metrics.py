"""Metrics of a run: a pure function of its events, like the status fold.

For the run, each role and each agent (:class:`Figures`): throughput, task and attempt
latency (mean, p50, p95), token efficiency, cost, utilisation, error rate (rate-limit
backpressure apart), communication overhead; for the run also scaling efficiency and the
speedup over a sequential run (:class:`Metrics`).

Definitions (times are seconds on the run's clock):

- **wall time** (active time): the sum of the run's session spans (``RunStarted`` to
  ``RunFinished``, or to the session's last event after a crash). The time between sessions
  does not count: throughput, latency, speedup and scaling efficiency all use it.
- **calendar time**: the first session's start to the last session's end, the downtime
  between sessions included (shown next to the wall time when they differ).
- **agent-seconds**: the time each agent was present (from a session's start or its
  ``AgentJoined`` to the session's end or its ``AgentRetired``), summed over agents.
- **throughput**: succeeded tasks per hour of wall time (per agent or role: the tasks that it
  succeeded, over the same wall time, so that the parts add up to the run).
- **task latency**: from a task's first ``AttemptStarted`` to its ``TaskSucceeded``, in wall
  time (gaps between sessions excluded); **attempt service time**: ``AttemptFinished.duration``
  of every attempt except those the run cancelled.
- **token efficiency**: output tokens of the attempts that produced a succeeded result over
  every token spent (all attempts, retries, failures, stale attempts, and communication).
- **cost**: the sum of known attempt costs; ``None`` when no attempt had a known cost
  (``unpriced_attempts`` counts attempts with tokens and no price).
- **utilisation**: busy time (the sum of attempt durations) over agent-seconds.
- **error rate**: failed attempts that were not rate limited over finished attempts (cancelled
  ones excluded); **backpressure rate**: rate-limited attempts over the same.
- **call retries**: model calls sent again inside their attempt after a retryable failure
  (``CallRetried``): the turns before them were kept, not replayed (``retry.call_attempts``).
- **communication overhead**: tokens of communication events over the tokens of attempts.
  Communication has no events yet; this is the hook: events whose ``type`` is one of
  :data:`COMMUNICATION_EVENTS` (``MessageSent``, ``ContextRead``, ``ContextWritten``, or
  any object or mapping with that ``type``) count their ``tokens`` (0 when absent) for
  their ``agent`` (or ``sender``).
- **work**: the service time of succeeded tasks (the durations of the attempts that produced
  the results): what a sequential run of the same tasks needs at least.
- **speedup**: work / wall time, an *estimate* of the speedup over a sequential run (it leaves
  out retries a sequential run would also need); given a ``baseline`` run (the same plan run
  with fewer agents, ideally one), the *measured* ratio of wall times, but only when the two
  runs are like for like (the same tasks with the same outcomes, see
  :mod:`phalanx.status.compare`): otherwise the estimate stays and ``comparison`` says what
  differs and compares the service time of the tasks that succeeded in both. No speedup
  (``None``, with ``speedup_reason``) without timing: a run whose models are all simulated
  with zero latency, or with almost no service time (:func:`phalanx.status.speedup.speedup_of`).
- **scaling efficiency**: work / agent-seconds (speedup per agent); with a like-for-like
  baseline, ``(baseline wall x baseline agents) / (wall x agents)``; ``None`` when no
  speedup is claimed.

Percentiles use the nearest-rank method: the p-th percentile of n sorted samples is the
sample at rank ``ceil(p / 100 * n)`` (1-based; rank 1 when that is 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._util import percentile
from ..cost import ZERO, Usage
from ..events import (
    AgentJoined,
    AgentRetired,
    ApprovalDecided,
    ApprovalRequested,
    AttemptFinished,
    AttemptStarted,
    CallRetried,
    RunFinished,
    RunStarted,
    TaskFailed,
    TasksAdded,
    TaskSkipped,
    TaskSucceeded,
)
from .compare import Comparison, NotComparable, compare_runs
from .speedup import speedup_of

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = [
    "BACKPRESSURE",
    "COMMUNICATION_EVENTS",
    "Figures",
    "Latency",
    "Metrics",
    "MetricsFeed",
    "compute_metrics",
    "metrics_from_journal",
    "percentile",
    "with_baseline",
]

BACKPRESSURE = frozenset({"rate_limited"})  # error classes that are backpressure, not faults
COMMUNICATION_EVENTS = frozenset({"message_sent", "context_read", "context_written"})
_HOUR = 3600.0


# -- small statistics ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    """A latency distribution's summary, in seconds (``None`` without samples)."""

    count: int = 0
    total: float = 0.0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        if not samples:
            return cls()
        total = sum(samples)
        return cls(
            count=len(samples),
            total=total,
            mean=total / len(samples),
            p50=percentile(samples, 50),
            p95=percentile(samples, 95),
            max=max(samples),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


# -- the figures of one scope (run, role or agent) ----------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class Figures:
    """Counts and sums of one scope; the rates are derived properties (``None`` when their
    denominator is zero)."""

    name: str
    agents: int
    wall_seconds: float
    agent_seconds: float
    tasks_succeeded: int
    attempts: int  # started, as status counts them
    finished_attempts: int  # finished, cancelled ones excluded
    failed_attempts: int  # not ok (rate-limited included, as status counts them)
    rate_limited_attempts: int
    cancelled_attempts: int
    busy_seconds: float
    work_seconds: float
    usage: Usage
    success_output_tokens: int
    communication_tokens: int
    unpriced_attempts: int
    task_latency: Latency
    attempt_latency: Latency
    task_latency_samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    call_retries: int = 0  # model calls sent again inside their attempt
    attempt_latency_samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    # failed attempts by error class (they add up to ``failed_attempts``)
    failed_by_class: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def cost_usd(self) -> float | None:
        return self.usage.cost_usd

    @property
    def spent_tokens(self) -> int:
        return self.usage.total_tokens + self.communication_tokens

    @property
    def throughput_per_hour(self) -> float | None:
        rate = _ratio(self.tasks_succeeded, self.wall_seconds)
        return None if rate is None else rate * _HOUR

    @property
    def utilisation(self) -> float | None:
        return _ratio(self.busy_seconds, self.agent_seconds)

    @property
    def error_rate(self) -> float | None:
        faults = self.failed_attempts - self.rate_limited_attempts
        return _ratio(faults, self.finished_attempts)

    @property
    def backpressure_rate(self) -> float | None:
        return _ratio(self.rate_limited_attempts, self.finished_attempts)

    @property
    def token_efficiency(self) -> float | None:
        return _ratio(self.success_output_tokens, self.spent_tokens)

    @property
    def communication_overhead(self) -> float | None:
        return _ratio(self.communication_tokens, self.usage.total_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "agents": self.agents,
            "wall_seconds": self.wall_seconds,
            "agent_seconds": self.agent_seconds,
            "tasks_succeeded": self.tasks_succeeded,
            "throughput_per_hour": self.throughput_per_hour,
            "attempts": self.attempts,
            "finished_attempts": self.finished_attempts,
            "failed_attempts": self.failed_attempts,
            "rate_limited_attempts": self.rate_limited_attempts,
            "cancelled_attempts": self.cancelled_attempts,
            "call_retries": self.call_retries,
            "error_rate": self.error_rate,
            "backpressure_rate": self.backpressure_rate,
            "busy_seconds": self.busy_seconds,
            "work_seconds": self.work_seconds,
            "utilisation": self.utilisation,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "unpriced_attempts": self.unpriced_attempts,
            "success_output_tokens": self.success_output_tokens,
            "communication_tokens": self.communication_tokens,
            "token_efficiency": self.token_efficiency,
            "communication_overhead": self.communication_overhead,
            "task_latency": self.task_latency.to_dict(),
            "attempt_latency": self.attempt_latency.to_dict(),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Metrics:
    """The metrics of one run: the run's :class:`Figures`, per role and per agent, and the
    run-wide speedup and scaling efficiency."""

    run_id: str
    plan: str
    status: str  # the last RunFinished status, "running" when none ("stopped": process gone)
    simulated: bool
    sessions: int
    started: float | None
    finished: float | None
    wall_seconds: float
    tasks_total: int
    task_states: Mapping[str, int]  # succeeded | failed | skipped | awaiting_approval | pending
    lost_attempts: int  # attempts a crash cut short (re-run by resume)
    run: Figures
    by_role: Mapping[str, Figures]
    by_agent: Mapping[str, Figures]
    agent_roles: Mapping[str, str]
    speedup: float | None
    scaling_efficiency: float | None
    session_spans: tuple[tuple[float, float], ...] = ()  # (start, end) of each session
    speedup_basis: Literal["estimate", "measured"] = "estimate"
    baseline_wall_seconds: float | None = None
    baseline_agents: float | None = None
    timed: bool = True  # false: every model simulated with zero latency (RunStarted.timed)
    speedup_reason: str = ""  # why no speedup is claimed (speedup None)
    growing: bool = False  # running, with a task that may still add tasks (issue 20)
    task_outcomes: Mapping[str, str] = field(default_factory=dict, compare=False)  # task -> state
    task_work: Mapping[str, float] = field(default_factory=dict, compare=False)  # its service s
    comparison: Comparison | None = None  # task by task against the baseline, when one is given

    @property
    def calendar_seconds(self) -> float:
        """The first session's start to the last session's end (downtime included)."""
        if not self.session_spans:
            return 0.0
        return max(0.0, max(e for _, e in self.session_spans) - self.session_spans[0][0])

    @property
    def agents(self) -> float:
        """Agents on average over the run (agent-seconds / wall time)."""
        return self.run.agent_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "plan": self.plan,
            "status": self.status,
            "simulated": self.simulated,
            "sessions": self.sessions,
            "session_spans": [list(span) for span in self.session_spans],
            "started": self.started,
            "finished": self.finished,
            "wall_seconds": self.wall_seconds,
            "active_seconds": self.wall_seconds,
            "calendar_seconds": self.calendar_seconds,
            "agents": self.agents,
            "tasks_total": self.tasks_total,
            "task_states": dict(self.task_states),
            "lost_attempts": self.lost_attempts,
            "speedup": self.speedup,
            "speedup_basis": self.speedup_basis,
            "speedup_reason": self.speedup_reason or None,
            "timed": self.timed,
            "growing": self.growing,
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "scaling_efficiency": self.scaling_efficiency,
            "baseline_wall_seconds": self.baseline_wall_seconds,
            "baseline_agents": self.baseline_agents,
            "run": self.run.to_dict(),
            "by_role": {k: v.to_dict() for k, v in self.by_role.items()},
            "by_agent": {
                k: {**v.to_dict(), "role": self.agent_roles.get(k, "")}
                for k, v in self.by_agent.items()
            },
        }


# -- the fold -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Acc:
    """Mutable sums of one scope while folding."""

    tasks_succeeded: int = 0
    attempts: int = 0
    finished: int = 0
    failed: int = 0
    rate_limited: int = 0
    cancelled: int = 0
    call_retries: int = 0
    busy: float = 0.0
    work: float = 0.0
    usage: Usage = ZERO
    success_output: int = 0
    comm_tokens: int = 0
    unpriced: int = 0
    task_latencies: list[float] = field(default_factory=list)
    attempt_latencies: list[float] = field(default_factory=list)
    failed_by_class: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Session:
    start: float
    end: float


class _Fold:
    """Walks the events once; :meth:`metrics` freezes the result."""

    def __init__(self) -> None:
        self.run_id = ""
        self.plan = ""
        self.status = "running"
        self.simulated = False
        self.timed = True
        self.finished: float | None = None
        self.sessions: list[_Session] = []
        self.open = False
        self.present: dict[str, float] = {}  # agent -> since when, in the open session
        self.agent_time: dict[str, float] = {}  # agent -> seconds present, closed intervals
        self.roles: dict[str, str] = {}
        self.task_ids: list[str] = []
        self.states: dict[str, str] = {}
        self.base = 0.0  # active seconds before the current session
        self.first_start: dict[str, float] = {}  # task -> active seconds of its first attempt
        self.running: dict[int, str] = {}  # attempt id -> task, until it finishes
        self.finished_attempts: dict[int, AttemptFinished] = {}
        self.lost = 0
        self.accs: dict[str, _Acc] = {}
        self.task_work: dict[str, float] = {}  # task -> service time of its result's attempt
        self.grows: set[str] = set()  # tasks that may add tasks (templates, spawners)

    # scopes: "" is the run, "role:NAME", "agent:NAME"
    def _scopes(self, agent: str | None) -> list[_Acc]:
        keys = [""]
        if agent is not None:
            keys += [f"role:{self.roles.setdefault(agent, '?')}", f"agent:{agent}"]
        return [self.accs.setdefault(k, _Acc()) for k in keys]

    def emit(self, e: object) -> None:
        ts = _get(e, "ts")
        if self.open and isinstance(ts, int | float) and not isinstance(e, RunStarted):
            self.sessions[-1].end = max(self.sessions[-1].end, float(ts))
        if isinstance(e, RunStarted):
            self._run_started(e)
        elif isinstance(e, AttemptStarted):
            self._attempt_started(e)
        elif isinstance(e, AttemptFinished):
            self._attempt_finished(e)
        elif isinstance(e, TaskSucceeded):
            self._task_succeeded(e)
        elif isinstance(e, TaskFailed | TaskSkipped):
            self.states[e.task_id] = "failed" if isinstance(e, TaskFailed) else "skipped"
        elif isinstance(e, RunFinished):
            self.status, self.finished = e.status, e.ts
            self._close(e.ts)
        else:
            self._other(e)

    def _other(self, e: object) -> None:
        """Agents joining and leaving, call retries, communication."""
        if isinstance(e, AgentJoined):
            self.roles[e.agent.name] = e.agent.role
            self._scopes(e.agent.name)
            self.present.setdefault(e.agent.name, e.ts)
        elif isinstance(e, AgentRetired):
            self._leave(e.agent, e.ts)
        elif isinstance(e, CallRetried):
            for acc in self._scopes(e.agent):
                acc.call_retries += 1
        elif isinstance(e, TasksAdded):  # the plan grew
            for d in e.tasks:
                if str(d["id"]) not in self.states:
                    self.task_ids.append(str(d["id"]))
                    self.states[str(d["id"])] = "pending"
                if d.get("grows"):
                    self.grows.add(str(d["id"]))
        elif _get(e, "type") in COMMUNICATION_EVENTS:
            self._communication(e)
        elif isinstance(e, ApprovalRequested):
            self.states[e.task_id] = "awaiting_approval"
        elif isinstance(e, ApprovalDecided) and e.decision == "approved":
            self.states[e.task_id] = "pending"

    def _leave(self, agent: str, ts: float) -> None:
        since = self.present.pop(agent, None)
        if since is not None:
            self.agent_time[agent] = self.agent_time.get(agent, 0.0) + max(0.0, ts - since)

    def _close(self, ts: float) -> None:
        for agent in list(self.present):
            self._leave(agent, ts)
        self.open = False

    def _run_started(self, e: RunStarted) -> None:
        if self.open:  # the last session crashed: it ended with its last event
            self._close(self.sessions[-1].end)
        self.run_id, self.plan, self.simulated, self.timed = e.run_id, e.plan, e.simulated, e.timed
        self.status, self.finished, self.open = "running", None, True
        self.lost += len(self.running)  # cut short by a crash: re-run, never finished
        self.running.clear()
        for a in e.agents:
            self.roles[a.name] = a.role
            self._scopes(a.name)
            self.present[a.name] = e.ts
        for t in e.tasks:
            if t.id not in self.states:
                self.task_ids.append(t.id)
                self.states[t.id] = "pending"
            if t.grows:
                self.grows.add(t.id)
        self.base = sum(s.end - s.start for s in self.sessions)
        self.sessions.append(_Session(e.ts, e.ts))

    def active(self, ts: float) -> float:
        """Active seconds at ``ts`` of the current session: the earlier sessions' spans plus
        the time since this one started (by event order, so clocks need not agree)."""
        return self.base + max(0.0, ts - self.sessions[-1].start) if self.sessions else 0.0

    def _attempt_started(self, e: AttemptStarted) -> None:
        self.first_start.setdefault(e.task_id, self.active(e.ts))
        self.running[e.attempt_id] = e.task_id
        for acc in self._scopes(e.agent):
            acc.attempts += 1

    def _attempt_finished(self, e: AttemptFinished) -> None:
        self.running.pop(e.attempt_id, None)
        self.finished_attempts[e.attempt_id] = e
        cancelled = e.error_class == "cancelled"
        for acc in self._scopes(e.agent):
            acc.busy += e.duration
            acc.usage = acc.usage + e.usage
            acc.unpriced += e.usage.total_tokens > 0 and e.usage.cost_usd is None
            if cancelled:
                acc.cancelled += 1
                continue
            acc.finished += 1
            acc.attempt_latencies.append(e.duration)
            if not e.ok:
                acc.failed += 1
                acc.rate_limited += e.error_class in BACKPRESSURE
                cls = str(e.error_class or "unknown")
                acc.failed_by_class[cls] = acc.failed_by_class.get(cls, 0) + 1

    def _task_succeeded(self, e: TaskSucceeded) -> None:
        self.states[e.task_id] = "succeeded"
        now = self.active(e.ts)
        latency = now - self.first_start.get(e.task_id, now)
        attempt = self.finished_attempts.get(e.attempt_id)
        if attempt is not None:
            self.task_work[e.task_id] = attempt.duration
        for acc in self._scopes(e.agent or None):  # a foreach template has no agent
            acc.tasks_succeeded += 1
            acc.task_latencies.append(latency)
            if attempt is not None:
                acc.work += attempt.duration
                acc.success_output += attempt.usage.output_tokens

    def _communication(self, e: object) -> None:
        tokens = _get(e, "tokens")
        agent = _get(e, "agent") or _get(e, "sender")
        n = int(tokens) if isinstance(tokens, int | float) else 0
        for acc in self._scopes(agent if isinstance(agent, str) else None):
            acc.comm_tokens += n

    # -- freezing --------------------------------------------------------------------------
    def metrics(self) -> Metrics:
        wall = sum(s.end - s.start for s in self.sessions)
        present = {a: self._present(a) for a in self.roles}
        by_agent = {a: _freeze(a, 1, wall, present[a], self.accs[f"agent:{a}"]) for a in self.roles}
        by_role = {
            role: _freeze(
                role,
                len(members),
                wall,
                sum(present[m] for m in members),
                self.accs[f"role:{role}"],
            )
            for role, members in _members(self.roles).items()
        }
        run = _freeze("run", len(self.roles), wall, sum(present.values()), self._scopes(None)[0])
        return self._assemble(wall, run, by_role, by_agent)

    def _present(self, agent: str) -> float:
        """Seconds the agent was present, an open session counted up to its last event."""
        since = self.present.get(agent)
        tail = max(0.0, self.sessions[-1].end - since) if since is not None else 0.0
        return self.agent_time.get(agent, 0.0) + tail

    def _assemble(
        self,
        wall: float,
        run: Figures,
        by_role: dict[str, Figures],
        by_agent: dict[str, Figures],
    ) -> Metrics:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state] = counts.get(state, 0) + 1
        speedup = speedup_of(run.work_seconds, wall, timed=self.timed)
        return Metrics(
            run_id=self.run_id,
            plan=self.plan,
            status=self.status,
            simulated=self.simulated,
            sessions=len(self.sessions),
            session_spans=tuple((s.start, s.end) for s in self.sessions),
            started=self.sessions[0].start if self.sessions else None,
            finished=self.finished,
            wall_seconds=wall,
            tasks_total=len(self.task_ids),
            task_states=counts,
            lost_attempts=self.lost,
            run=run,
            by_role=by_role,
            by_agent=by_agent,
            agent_roles=dict(self.roles),
            speedup=speedup.value,
            # speedup per agent: no more meaningful than the speedup without timing
            scaling_efficiency=_ratio(run.work_seconds, run.agent_seconds)
            if speedup.value is not None
            else None,
            timed=self.timed,
            speedup_reason=speedup.reason,
            growing=self.status == "running"
            and any(self.states.get(t) == "pending" for t in self.grows),
            task_outcomes={t: self.states[t] for t in self.task_ids},
            task_work={
                t: w for t, w in self.task_work.items() if self.states.get(t) == "succeeded"
            },
        )


def _get(e: object, name: str) -> object:
    if isinstance(e, Mapping):
        return e.get(name)
    return getattr(e, name, None)


def _members(roles: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for agent, role in roles.items():
        out.setdefault(role, []).append(agent)
    return out


def _freeze(name: str, agents: int, wall: float, agent_seconds: float, acc: _Acc) -> Figures:
    return Figures(
        name=name,
        agents=agents,
        wall_seconds=wall,
        agent_seconds=agent_seconds,
        tasks_succeeded=acc.tasks_succeeded,
        attempts=acc.attempts,
        finished_attempts=acc.finished,
        failed_attempts=acc.failed,
        rate_limited_attempts=acc.rate_limited,
        cancelled_attempts=acc.cancelled,
        busy_seconds=acc.busy,
        work_seconds=acc.work,
        usage=acc.usage,
        success_output_tokens=acc.success_output,
        communication_tokens=acc.comm_tokens,
        unpriced_attempts=acc.unpriced,
        task_latency=Latency.of(acc.task_latencies),
        attempt_latency=Latency.of(acc.attempt_latencies),
        task_latency_samples=tuple(acc.task_latencies),
        call_retries=acc.call_retries,
        attempt_latency_samples=tuple(acc.attempt_latencies),
        failed_by_class=dict(acc.failed_by_class),
    )


# -- public functions ---------------------------------------------------------------------
def compute_metrics(events: Iterable[object], *, baseline: Metrics | None = None) -> Metrics:
    """The metrics of a run from its events, in journal order (a pure function).

    ``events`` are :mod:`phalanx.events` objects; communication events (see
    :data:`COMMUNICATION_EVENTS`) may be any object or mapping with ``type``, ``tokens``
    and ``agent``. ``baseline``: the metrics of a sequential run of the same plan, to turn
    the speedup estimate into a measured ratio (see :func:`with_baseline`).
    """
    fold = _Fold()
    for e in events:
        fold.emit(e)
    metrics = fold.metrics()
    return with_baseline(metrics, baseline) if baseline is not None else metrics


def with_baseline(metrics: Metrics, baseline: Metrics) -> Metrics:
    """``metrics`` compared with ``baseline``, task by task (``comparison``). Only when the
    two runs are like for like (the same tasks, the same outcomes) are speedup and scaling
    efficiency measured against the baseline's wall (active) time; otherwise they stay
    estimates and the comparison says what differs. Raises :class:`NotComparable` (one
    line) when no task succeeded in both."""
    cmp = compare_runs(
        metrics.task_outcomes,
        metrics.task_work,
        baseline.task_outcomes,
        baseline.task_work,
        baseline_run_id=baseline.run_id,
    )
    if not cmp.matched:
        why = cmp.differences() or "neither run has a succeeded task"
        raise NotComparable(
            f"cannot compare run {metrics.run_id} with baseline {baseline.run_id}: "
            f"no task succeeded in both ({why})"
        )
    measured = dataclasses.replace(
        metrics,
        comparison=cmp,
        baseline_wall_seconds=baseline.wall_seconds,
        baseline_agents=baseline.agents,
    )
    if not cmp.like_for_like:
        return measured
    speedup = speedup_of(
        baseline.wall_seconds, metrics.wall_seconds, timed=metrics.timed and baseline.timed
    )
    capacity = metrics.wall_seconds * metrics.agents
    return dataclasses.replace(
        measured,
        speedup=speedup.value,
        speedup_reason=speedup.reason,
        scaling_efficiency=_ratio(baseline.wall_seconds * baseline.agents, capacity)
        if speedup.value is not None
        else None,
        speedup_basis="measured",
    )


class MetricsFeed:
    """The metrics of one journaled run, kept up to date incrementally: each :meth:`update`
    folds only the events written since the last one (``read_events(run_id, after=seq)``),
    never the whole journal again. ``events_read`` counts the events it has read."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seq = 0  # the last event folded
        self.events_read = 0
        self._fold = _Fold()

    def update(self, journal: Journal) -> Metrics:
        for seq, event in journal.read_events(self.run_id, after=self.seq):
            self._fold.emit(event)
            self.seq = seq
            self.events_read += 1
        return self._fold.metrics()


def metrics_from_journal(
    journal: Journal, run_id: str, *, baseline_run_id: str | None = None
) -> Metrics:
    """The metrics of a journaled run (a run id prefix is accepted, as everywhere); a run
    whose process is gone has status ``stopped``."""
    from .liveness import STOPPED, process_gone

    rec = journal.get_run(run_id)
    baseline = None
    if baseline_run_id is not None:
        base = journal.get_run(baseline_run_id)
        baseline = compute_metrics(e for _, e in journal.read_events(base.run_id))
    m = compute_metrics((e for _, e in journal.read_events(rec.run_id)), baseline=baseline)
    if m.finished is None and process_gone(journal, rec.run_id) is not None:
        m = dataclasses.replace(m, status=STOPPED)  # liveness, an input: the fold never says it
    return m

"""The orchestrator: one run's driver. Ready tasks -> policy -> engine -> outcomes -> events.

All decisions are delegated to pure pieces (``DagState``, ``ReadyQueue``, policies,
``decide_retry``); this module only wires them to the engine, the clock and the sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..agents.hooks import HookOutcome, HookRunner, from_config, payload
from ..agents.spec import AgentSpec, _name_candidates
from ..cost import ZERO, Usage
from ..events import (
    AgentInfo,
    AgentJoined,
    AgentRetired,
    AgentWaiting,
    Alert,
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    Event,
    EventSink,
    MessageSent,
    RetryScheduled,
    RunFinished,
    RunStarted,
    RunStatus,
    ScaleDecision,
    TaskFailed,
    TaskInfo,
    TaskSkipped,
    TaskStolen,
    TaskSucceeded,
)
from ..exceptions import ErrorClass
from ..ids import AgentName, TaskId
from ..plan.model import Plan, Task
from .breaker import CircuitBreaker
from .engine import Engine, EngineLost
from .executor import AgentRunner, Attempt, Outcome, Upstream
from .governor import Gate, RateGovernor
from .policies import (
    AgentSlot,
    FreeAgents,
    RoundRobin,
    can_serve,
    make_policy,
    pick_victim,
)
from .retry import decide_retry
from .router import LLMPolicy
from .scaling import AutoscaleConfig, RoleEvidence, ScaleChoice, decide_scale
from .scheduler import DagState, ReadyQueue, assign

__all__ = ["Orchestrator", "Prior", "RunGate", "TaskRecord"]

_NOT_HEALTH = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.VETOED,
        ErrorClass.CANCELLED,
        ErrorClass.BUDGET,
        ErrorClass.LOST,
    }
)
MAX_LOST = 3  # a task whose host dies this often under it fails (it may be what kills it)


@dataclass(slots=True)
class TaskRecord:
    """What the run knows of one task (for results and the summary)."""

    state: str = "pending"
    output: str = ""
    agent: str | None = None
    attempt_id: int | None = None
    attempts: int = 0  # failed attempts so far (interrupted ones don't count)
    lost: int = 0  # attempts lost with their host (re-queued, not counted in attempts)
    usage: Usage = ZERO
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Prior:
    """What earlier sessions of a resumed run left in the journal."""

    session: int = 1
    max_attempt_id: int = 0
    outputs: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)  # id->(out,agent,aid)
    terminal: Mapping[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    failed_attempts: Mapping[str, int] = field(default_factory=dict)
    spent: Usage = ZERO  # tokens and cost of every earlier attempt (budgets span sessions)


class Orchestrator:
    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        engine: Engine,
        runners: Mapping[str, AgentRunner],
        sinks: Sequence[EventSink],
        simulated: bool,
        prior: Prior | None = None,
        seed: int = 0,
        gate: RunGate | None = None,
        checkpoint: Callable[[], None] | None = None,
        hooks: HookRunner | None = None,
        runner_factory: Callable[[AgentSpec], AgentRunner] | None = None,
        comms: Any = None,
        router: LLMPolicy | None = None,
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.engine = engine
        self.runners = dict(runners)
        self.sinks = list(sinks)
        self.simulated = simulated
        self.prior = prior or Prior()
        self.rng = random.Random(seed)
        self.tasks = plan.task_map
        self.records: dict[str, TaskRecord] = {t.id: TaskRecord() for t in plan.tasks}
        self.slots = {
            a.name or "": AgentSlot(
                name=a.name or "",
                role=a.role,
                skills=a.skills,
                specialities=a.specialities,
                index=i,
                provider=a.provider or plan.provider or "local:smollm2",
            )
            for i, a in enumerate(plan.agents)
        }
        self.runner_factory = runner_factory
        self.comms = comms  # phalanx.comms.Comms, when agents may talk
        self.work_tokens: dict[str, int] = {}
        self._overhead_alerted: set[str] = set()
        self._since_overhead = 0
        self.governor: RateGovernor | None = None  # set by the run's gate
        self.scaling = plan.scaling
        self.scaler = _Scaler(self) if self.scaling is not None else None
        self.router = router if plan.policy == "llm" else None
        self.policy: Any = self.router or make_policy(plan.policy, len(self.slots))
        self.current: dict[str, int] = {}  # task -> its live attempt id (the fencing token)
        self.inflight: dict[int, AgentSlot] = {}  # attempt id -> the agent it occupies
        self.next_attempt_id = self.prior.max_attempt_id + 1
        self.status: RunStatus = "running"
        self.spent = self.prior.spent
        self.checkpoint = checkpoint or (lambda: None)  # called between event groups
        self.hooks = hooks or HookRunner()
        self.agent_hooks = {
            a.name or "": self.hooks.combined(from_config(list(a.hooks))) if a.hooks else self.hooks
            for a in plan.agents
        }
        self._hook_tasks: set[asyncio.Task[Any]] = set()
        self.breakers = {name: CircuitBreaker(plan.breaker) for name in self.slots}
        self.provider_breakers = {
            s.provider: CircuitBreaker(plan.breaker.for_provider()) for s in self.slots.values()
        }
        self._said_paused: set[str] = set()
        self._open_breakers = 0
        self.exhausted: str | None = None  # why a budget stopped new work
        if gate is not None:
            gate.bind(self)
        self.started = 0.0
        self._wall0 = 0.0
        self._mono0 = 0.0
        self._inbox: list[Outcome | EngineLost] = []
        self.engine_lost: str | None = None  # why the engine could run nothing more
        self._wake = asyncio.Event()
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._leases: dict[int, asyncio.TimerHandle] = {}  # attempt id -> its lease timer
        self._load_prior()
        self.dag = DagState(plan, {TaskId(k): r.state for k, r in self.records.items()})
        self.ready = ReadyQueue(plan)

    # -- clock and events ------------------------------------------------------------------
    def now(self) -> float:
        """Wall-clock seconds, advanced by the event loop's clock (virtual in tests)."""
        return self._wall0 + (asyncio.get_running_loop().time() - self._mono0)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def message_sent(self, event: MessageSent) -> None:
        """A message between agents: journal it and fire ``on_message``."""
        self.emit(event)
        if "on_message" in self.hooks.points():
            self._background(
                self._fire(
                    "on_message",
                    self.hooks,
                    event.sender,
                    message_id=event.message_id,
                    recipients=list(event.recipients),
                    kind=event.kind,
                    task_id=event.task_id,
                    tokens=event.tokens,
                )
            )

    def _load_prior(self) -> None:
        for tid, (out, agent, aid) in self.prior.outputs.items():
            if tid in self.records:
                self.records[tid] = TaskRecord(
                    state="succeeded", output=out, agent=agent, attempt_id=aid
                )
        for tid, (state, cls, err) in self.prior.terminal.items():
            if tid in self.records and self.records[tid].state != "succeeded":
                self.records[tid] = TaskRecord(state=state, error_class=cls, error=err)
        for tid, n in self.prior.failed_attempts.items():
            if tid in self.records:
                self.records[tid].attempts = n

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> RunStatus:
        loop = asyncio.get_running_loop()
        self._mono0, self._wall0 = loop.time(), time.time()
        self.started = self._wall0
        self._emit_started()
        if self.scaler is not None:
            self.scaler.schedule()
        if self.plan.limits.max_wall_seconds is not None:
            self._retry_handles.add(
                loop.call_later(self.plan.limits.max_wall_seconds, self._wall_time_up)
            )
        self._check_budget()
        for tid, cause in self.dag.orphans():
            self._skip(tid, cause)
        self._enqueue(self.dag.initially_ready())
        await self.engine.start(self.runners, self._deliver)
        try:
            await self._fire(
                "on_run_start",
                self.hooks,
                None,
                plan=self.plan.name,
                session=self.prior.session,
                tasks=len(self.plan.tasks),
                agents=[a.name for a in self.plan.agents],
            )
            await self._loop()
            if self.engine_lost:
                self.status = "interrupted"
            elif self.exhausted:
                self.status = "budget_exhausted"
            else:
                self.status = "succeeded" if self._all_succeeded() else "failed"
        except asyncio.CancelledError:
            self.status = "interrupted"
            raise
        except BaseException:
            self.status = "error"
            raise
        finally:
            for h in (*self._retry_handles, *self._leases.values()):
                h.cancel()
            await self.engine.stop()
            self._check_overhead(force=True)
            if self.router is not None:
                await self.router.close()
                self.emit(Alert(ts=self.now(), kind="router", message=self.router.summary()))
            await self._end_hooks()
            self.emit(RunFinished(ts=self.now(), status=self.status, reason=self._reason()))
        return self.status

    def _reason(self) -> str:
        if self.status == "interrupted":
            why = self.engine_lost or "interrupted"
            return why + ": resume with 'phalanx resume " + self.run_id + "'"
        if self.exhausted:
            return self.exhausted
        counts: dict[str, int] = {}
        for r in self.records.values():
            counts[r.state] = counts.get(r.state, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))

    def _all_succeeded(self) -> bool:
        return all(r.state == "succeeded" for r in self.records.values())

    def _emit_started(self) -> None:
        default = self.plan.provider or "local:smollm2"
        self.emit(
            RunStarted(
                ts=self.now(),
                run_id=self.run_id,
                plan=self.plan.name,
                session=self.prior.session,
                policy=self.plan.policy,
                simulated=self.simulated,
                agents=tuple(
                    AgentInfo(
                        name=a.name or "",
                        role=a.role,
                        provider=a.provider or default,
                        style=a.style,
                        skills=tuple(sorted(a.skills)),
                        context_tokens=getattr(self.runners.get(a.name or ""), "context_tokens", 0),
                    )
                    for a in self.plan.agents
                    if (a.name or "") in self.slots
                ),
                tasks=tuple(
                    TaskInfo(
                        id=t.id, title=t.label, category=t.category, needs=t.needs, role=t.role
                    )
                    for t in self.plan.tasks
                ),
                done=tuple(k for k, r in self.records.items() if r.state != "pending"),
            )
        )

    async def _loop(self) -> None:
        self._dispatch()
        while not self.dag.done and not (self.exhausted and not self.inflight):
            await self._wake.wait()
            self._wake.clear()
            inbox, self._inbox = self._inbox, []
            for outcome in inbox:
                if isinstance(outcome, EngineLost):
                    self.engine_lost = outcome.reason
                    return
                self._on_outcome(outcome)
            self._dispatch()
            self.checkpoint()

    def _deliver(self, outcome: Outcome | EngineLost) -> None:
        self._inbox.append(outcome)
        self._wake.set()

    # -- dispatch --------------------------------------------------------------------------
    def _enqueue(self, tids: Iterable[TaskId]) -> None:
        """Ready tasks go to the central pool, or to the local queue of their agent."""
        for tid in tids:
            pinned = self.tasks[tid].agent
            if pinned is not None and pinned in self.slots:
                self.slots[pinned].queue.append(self.tasks[tid])
            else:
                self.ready.push(tid)
                if self.router is not None:
                    self.router.prefetch(self.tasks[tid], list(self.slots.values()), self.run_id)

    def _dispatch(self) -> None:
        if self.exhausted:
            return  # a budget is spent: no new work, in-flight attempts finish
        free = []
        for agent in [s for s in self.slots.values() if self._may_start(s)]:
            if agent.queue:  # an agent's own queue first
                self._start(agent.queue.popleft().id, agent)
            else:
                free.append(agent)
        self._dispatch_pool(free)
        if self.plan.limits.work_stealing:
            self._steal(free)
        if self._open_breakers:
            self._say_if_all_paused()

    def _dispatch_pool(self, free: list[AgentSlot]) -> None:
        """The central pool's tasks to the free agents (``assign`` decides); ``free`` keeps
        the agents left free."""
        if not free or not len(self.ready):
            return
        pool = FreeAgents(free)
        for task, agent in assign(self.ready, pool, self.policy):
            self._start(task.id, agent)
        if len(pool) < len(free):
            free[:] = pool.remaining()

    def _steal(self, free: list[AgentSlot]) -> None:
        # only agents with a queue can be robbed (the same choices, without scanning the
        # whole fleet for every idle agent when nobody has a queue)
        agents = [a for a in self.slots.values() if a.queue]
        if not agents:
            return
        for thief in list(free):
            found = pick_victim(thief, agents)
            if found is None:
                continue
            victim, task = found
            victim.queue.remove(task)
            self.emit(
                TaskStolen(
                    ts=self.now(), task_id=task.id, from_agent=victim.name, to_agent=thief.name
                )
            )
            self._start(task.id, thief)
            free.remove(thief)

    def _may_start(self, slot: AgentSlot) -> bool:
        if not slot.free:
            return False
        provider = self.provider_breakers.get(slot.provider)
        return self.breakers[slot.name].allows() and (provider is None or provider.allows())

    def _start(self, tid: TaskId, agent: AgentSlot) -> None:
        task = self.tasks[tid]
        rec = self.records[tid]
        aid = self.next_attempt_id
        self.next_attempt_id += 1
        self.current[tid] = aid
        agent.running += 1
        self.inflight[aid] = agent
        self.breakers[agent.name].start_probe()
        if agent.provider in self.provider_breakers:
            self.provider_breakers[agent.provider].start_probe()
        self.dag.start(tid)
        rec.state = "running"
        self.emit(
            AttemptStarted(
                ts=self.now(),
                task_id=tid,
                attempt_id=aid,
                attempt_no=rec.attempts + 1,
                agent=agent.name,
                max_turns=task.max_turns or self._max_turns(agent.name),
            )
        )
        upstream = tuple(
            Upstream(
                task_id=n,
                agent=self.records[n].agent or "",
                attempt_id=self.records[n].attempt_id or 0,
                output=self.records[n].output,
            )
            for n in task.needs
        )
        attempt = Attempt(
            run_id=self.run_id,
            attempt_id=aid,
            attempt_no=rec.attempts + 1,
            task=task,
            agent=agent.name,
            upstream=upstream,
        )
        lease = self.plan.limits.lease_seconds
        if lease is not None:
            self._leases[aid] = asyncio.get_running_loop().call_later(
                lease, self._lease_expired, tid, aid, agent.name, lease
            )
        hooks = self.agent_hooks[agent.name]
        if "before_task" in hooks.points():
            self._background(self._vet_then_submit(attempt, hooks))
        else:
            self.engine.submit(attempt)

    def _lease_expired(self, tid: TaskId, aid: int, agent: str, lease: float) -> None:
        """An attempt still without a result after its lease (a stuck agent, a frozen
        coroutine, a stopped worker) fails as a timeout and its task is retried elsewhere;
        a result it sends later is stale (fenced by its attempt id) and ignored."""
        self._leases.pop(aid, None)
        if self.current.get(tid) != aid:
            return
        self._deliver(
            Outcome(
                attempt_id=aid,
                task_id=tid,
                agent=agent,
                ok=False,
                duration=lease,
                error_class=ErrorClass.TIMEOUT,
                error=f"no result within its lease of {lease:g}s; the task is reassigned",
            )
        )

    def _max_turns(self, agent: str) -> int:
        runner = self.runners.get(agent)
        return int(getattr(runner, "max_turns", 0) or 0)

    # -- outcomes --------------------------------------------------------------------------
    def _on_outcome(self, o: Outcome) -> None:
        lease = self._leases.pop(o.attempt_id, None)
        if lease is not None:
            lease.cancel()
        slot = self.inflight.pop(o.attempt_id, None)
        if slot is not None:  # an attempt this run no longer counts frees nothing
            slot.running -= 1
            slot.busy += o.duration
        stale = self.current.get(o.task_id) != o.attempt_id
        now = self.now()  # one instant for the outcome's events
        self.emit(
            AttemptFinished(
                ts=now,
                task_id=o.task_id,
                attempt_id=o.attempt_id,
                agent=o.agent,
                ok=o.ok,
                duration=o.duration,
                usage=o.usage,
                error_class=o.error_class.value if o.error_class else None,
                error=o.error,
                status=o.status,
                retry_after=o.retry_after,
                stale=stale,
            )
        )
        if stale:
            return  # a superseded attempt: its result is recorded and ignored
        del self.current[o.task_id]
        self._record_breakers(o)
        self.work_tokens[o.agent] = self.work_tokens.get(o.agent, 0) + o.usage.total_tokens
        self._check_overhead()
        rec = self.records[o.task_id]
        rec.usage = rec.usage + o.usage
        tid = TaskId(o.task_id)
        if slot is not None and slot.running == 0:
            slot.idle_since = now
        if o.ok:
            self.slots[o.agent].done += 1
            if self.scaler is not None:
                self.scaler.completed(self.slots[o.agent].role)
            rec.state, rec.output, rec.agent, rec.attempt_id = (
                "succeeded",
                o.output,
                o.agent,
                o.attempt_id,
            )
            rec.error_class = rec.error = None  # earlier failed attempts are in the journal
            self.emit(
                TaskSucceeded(
                    ts=now,
                    task_id=tid,
                    attempt_id=o.attempt_id,
                    agent=o.agent,
                    output=o.output,
                    parsed=o.parsed,
                )
            )
            self._after_hooks(o, False)
            self._enqueue(self.dag.succeed(tid))
            return
        if o.error_class is ErrorClass.LOST and rec.lost < MAX_LOST:
            self._requeue_lost(tid, o)
            return
        rec.attempts += 1
        rec.error_class, rec.error = (o.error_class.value if o.error_class else None), o.error
        assert o.error_class is not None
        decision = decide_retry(
            o.error_class,
            attempt_no=rec.attempts,
            max_attempts=self.tasks[tid].max_attempts,
            retry_after=o.retry_after,
            base=self.plan.retry.base_seconds,
            cap=self.plan.retry.cap_seconds,
            rng=self.rng,
        )
        self._after_hooks(o, decision.retry)
        if decision.retry:
            self._retry(tid, decision.delay, o.error_class)
            return
        rec.state = "failed"
        self.emit(
            TaskFailed(
                ts=self.now(),
                task_id=tid,
                error_class=o.error_class.value,
                error=f"{o.error} ({decision.reason})",
                attempts=rec.attempts,
                status=o.status,
            )
        )
        for d in self.dag.fail(tid):
            self._skip(d, tid)

    def _requeue_lost(self, tid: TaskId, o: Outcome) -> None:
        """An attempt that died with its host: run the task again at once, on a new attempt
        id, without counting it against ``max_attempts``."""
        self.records[tid].lost += 1
        self._after_hooks(o, True)
        self._retry(tid, 0.0, ErrorClass.LOST)

    def _retry(self, tid: TaskId, delay: float, cls: ErrorClass) -> None:
        rec = self.records[tid]
        rec.state = "retrying"
        self.dag.requeue(tid)
        self.emit(
            RetryScheduled(
                ts=self.now(),
                task_id=tid,
                attempt_no=rec.attempts,
                delay=delay,
                error_class=cls.value,
            )
        )
        self._schedule_retry(tid, delay)

    def _skip(self, tid: TaskId, cause: TaskId) -> None:
        rec = self.records[tid]
        rec.state = "skipped"
        rec.error_class = "skipped"
        rec.error = f"upstream task {cause!r} did not succeed"
        self.emit(TaskSkipped(ts=self.now(), task_id=tid, upstream=cause, reason=rec.error))

    def _schedule_retry(self, tid: TaskId, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._retry_handles.discard(handle)
            self._enqueue([tid])
            self._wake.set()

        handle = loop.call_later(delay, fire)
        self._retry_handles.add(handle)

    # -- budgets and waits -----------------------------------------------------------------
    def _check_budget(self) -> None:
        lim, spent = self.plan.limits, self.spent
        if self.exhausted:
            return
        if lim.max_usd is not None and (spent.cost_usd or 0.0) >= lim.max_usd:
            self._exhaust(
                f"budget exhausted: spent ${spent.cost_usd or 0:.4f} of "
                f"limits.max_usd ${lim.max_usd:g}"
            )
        elif lim.max_tokens is not None and spent.total_tokens >= lim.max_tokens:
            self._exhaust(
                f"budget exhausted: used {spent.total_tokens:,} tokens of "
                f"limits.max_tokens {lim.max_tokens:,}"
            )

    def _exhaust(self, reason: str) -> None:
        self.exhausted = reason
        self.emit(Alert(ts=self.now(), kind="budget", message=reason))
        self._wake.set()

    def _wall_time_up(self) -> None:
        if self.exhausted:
            return
        limit = self.plan.limits.max_wall_seconds
        self._exhaust(f"budget exhausted: limits.max_wall_seconds {limit:g}s reached")
        for aid, slot in list(self.inflight.items()):  # stop in-flight work now
            self.engine.cancel(aid)
            del self.inflight[aid]
            slot.running -= 1
            tid = next(t for t, a in self.current.items() if a == aid)
            del self.current[tid]
            self.records[tid].state = "pending"
            self.emit(
                AttemptFinished(
                    ts=self.now(),
                    task_id=tid,
                    attempt_id=aid,
                    agent=slot.name,
                    ok=False,
                    duration=0.0,
                    error_class="cancelled",
                    error=self.exhausted,
                )
            )

    def _on_wait(self, agent: str, task_id: str, key: str, seconds: float) -> None:
        if self.scaler is not None:
            self.scaler.waited.add(agent)
        self.emit(
            AgentWaiting(
                ts=self.now(),
                agent=agent,
                task_id=task_id,
                reason="rate limit",
                key=key,
                until=self.now() + seconds,
            )
        )

    def spend(self, usage: Usage) -> None:
        self.spent = self.spent + usage
        self._check_budget()

    # -- communication overhead ------------------------------------------------------------
    def _check_overhead(self, force: bool = False) -> None:
        """Alert once (per agent and for the run) when communication tokens pass
        ``limits.comm_overhead_warning`` of work tokens. Checked every max(20, agents)
        attempts, once agents have communicated at all."""
        self._since_overhead += 1
        if self.comms is None or not self.comms.has_traffic:
            return
        if self._since_overhead < max(20, len(self.slots)) and not force:
            return
        self._since_overhead = 0
        limit = self.plan.limits.comm_overhead_warning
        report = self.comms.overhead(self.work_tokens)
        over = [
            (a.agent, a.ratio) for a in report.agents if a.ratio is not None and a.ratio > limit
        ]
        if report.ratio is not None and report.ratio > limit:
            over.append(("", report.ratio))
        for agent, ratio in over:
            if agent in self._overhead_alerted:
                continue
            self._overhead_alerted.add(agent)
            who = f"agent {agent}" if agent else "the run"
            self.emit(
                Alert(
                    ts=self.now(),
                    kind="overhead",
                    agent=agent or None,
                    message=(
                        f"communication overhead of {who} is {ratio:.0%} of work tokens "
                        f"(warning at {limit:.0%})"
                    ),
                )
            )

    # -- circuit breakers ------------------------------------------------------------------
    def _record_breakers(self, o: Outcome) -> None:
        """Count an attempt against its agent's and provider's breakers. Backpressure (429),
        vetoes, cancellations and budget stops say nothing about the agent's health."""
        if o.error_class in _NOT_HEALTH:
            return
        slot = self.slots[o.agent]
        pairs: tuple[tuple[Literal["agent", "provider"], str, CircuitBreaker], ...] = (
            ("agent", o.agent, self.breakers[o.agent]),
            ("provider", slot.provider, self.provider_breakers[slot.provider]),
        )
        for scope, key, breaker in pairs:
            changed = breaker.record(o.ok, self.now())
            if changed is not None:
                self._breaker_changed(scope, key, breaker)

    def _breaker_changed(
        self, scope: Literal["agent", "provider"], key: str, breaker: CircuitBreaker
    ) -> None:
        self._open_breakers = sum(
            b.state == "open" for b in (*self.breakers.values(), *self.provider_breakers.values())
        )
        rate = breaker.error_rate
        if breaker.state == "open":
            reason = (
                f"error rate {rate:.0%} over the last {len(breaker.outcomes)} attempts"
                if breaker.outcomes
                else "the half-open probe failed"
            )
            who = f"agent {key}" if scope == "agent" else f"every agent on {key}"
            self.emit(
                Alert(
                    ts=self.now(),
                    kind="breaker",
                    message=f"{who} paused: {reason}; probe in {breaker.config.cooldown:g}s",
                    agent=key,
                )
            )
            asyncio.get_running_loop().call_later(
                breaker.config.cooldown, self._breaker_cooldown, scope, key, breaker
            )
        else:
            reason = "probe succeeded" if breaker.state == "closed" else "cooldown over"
        self.emit(
            BreakerChanged(
                ts=self.now(),
                scope=scope,
                key=key,
                state=breaker.state,
                error_rate=rate,
                window=len(breaker.outcomes),
                reason=reason,
            )
        )
        hooks = self.agent_hooks.get(key, self.hooks)
        if "on_breaker" in hooks.points():
            self._background(
                self._fire(
                    "on_breaker",
                    hooks,
                    key if scope == "agent" else None,
                    scope=scope,
                    key=key,
                    state=breaker.state,
                    reason=reason,
                )
            )
        if breaker.state == "closed":
            self._said_paused.clear()

    def _breaker_cooldown(
        self, scope: Literal["agent", "provider"], key: str, breaker: CircuitBreaker
    ) -> None:
        if breaker.poll(self.now()) is not None:
            self._breaker_changed(scope, key, breaker)
            self._wake.set()

    def _say_if_all_paused(self) -> None:
        """When no agent that could take the waiting work may start, say so once."""
        kinds = {(b.role, b.skills) for b in self.ready.buckets.values() if b.heap}
        kinds |= {(t.role, t.skills) for s in self.slots.values() for t in s.queue}
        for role, skills in kinds:
            able = [s for s in self.slots.values() if can_serve(s, role, skills)]
            if able and not any(self._healthy(s) for s in able):
                label = role or "any role"
                if label not in self._said_paused:
                    self._said_paused.add(label)
                    self.emit(
                        Alert(
                            ts=self.now(),
                            kind="breaker",
                            message=(
                                f"every agent that can take {label!r} tasks is paused by an open "
                                "circuit breaker; work resumes when a probe succeeds"
                            ),
                        )
                    )

    def _healthy(self, slot: AgentSlot) -> bool:
        provider = self.provider_breakers.get(slot.provider)
        return self.breakers[slot.name].state != "open" and (
            provider is None or provider.state != "open"
        )

    # -- hooks -----------------------------------------------------------------------------
    async def _fire(
        self, point: str, hooks: HookRunner, agent: str | None, **fields: Any
    ) -> HookOutcome:
        if point not in hooks.points():
            return HookOutcome()
        outcome = await hooks.fire(point, payload(point, run_id=self.run_id, agent=agent, **fields))
        for failure in outcome.failures:
            self.emit(failure.alert(self.now(), agent))
        return outcome

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def _vet_then_submit(self, attempt: Attempt, hooks: HookRunner) -> None:
        verdict = await self._fire(
            "before_task",
            hooks,
            attempt.agent,
            task=_task_info(attempt.task),
            attempt=attempt.attempt_no,
        )
        if attempt.attempt_id not in self.inflight:
            return  # the run stopped this attempt meanwhile
        if verdict.veto:
            self._deliver(
                Outcome(
                    attempt_id=attempt.attempt_id,
                    task_id=attempt.task.id,
                    agent=attempt.agent,
                    ok=False,
                    duration=0.0,
                    error_class=ErrorClass.VETOED,
                    error=f"vetoed by a before_task hook: {verdict.reason}",
                )
            )
        else:
            self.engine.submit(attempt)

    def _after_hooks(self, o: Outcome, retrying: bool) -> None:
        hooks = self.agent_hooks.get(o.agent, self.hooks)
        points = hooks.points()
        if "after_task" not in points and "on_error" not in points:
            return  # nobody listens: the payload is not built
        task = _task_info(self.tasks[TaskId(o.task_id)])
        if o.ok and "after_task" in points:
            self._background(
                self._fire(
                    "after_task",
                    hooks,
                    o.agent,
                    task=task,
                    output=o.output[:4000],
                    usage=o.usage.to_dict(),
                )
            )
        elif not o.ok and "on_error" in points:
            self._background(
                self._fire(
                    "on_error",
                    hooks,
                    o.agent,
                    task=task,
                    error_class=str(o.error_class),
                    error=o.error,
                    retrying=retrying,
                )
            )

    async def _end_hooks(self) -> None:
        """Let hook calls in flight finish (bounded), then fire on_run_end."""
        if self._hook_tasks:
            await asyncio.wait(list(self._hook_tasks), timeout=30)
        if "on_run_end" in self.hooks.points():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self._fire(
                        "on_run_end", self.hooks, None, status=self.status, reason=self._reason()
                    )


class RunGate(Gate):
    """The gate a run gives its executors: the governor, the run's spend, events."""

    def __init__(self, governor: RateGovernor) -> None:
        self.governor = governor
        self.orchestrator: Orchestrator | None = None

    def bind(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        orchestrator.governor = self.governor
        self.governor.on_wait = orchestrator._on_wait

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        return await self.governor.acquire(key, tokens, agent=agent, task_id=task_id)

    def settle(self, ticket: object, tokens: int) -> None:
        self.governor.settle(ticket, tokens)

    def pause(self, key: str, seconds: float) -> None:
        self.governor.pause(key, seconds)

    def governs(self, key: str) -> bool:
        limit = self.governor.limit_for(key)
        return limit is not None and (limit.rpm is not None or limit.tpm is not None)

    def spend(self, usage: Usage) -> None:
        if self.orchestrator is not None:
            self.orchestrator.spend(usage)

    def stopped(self) -> str | None:
        return self.orchestrator.exhausted if self.orchestrator is not None else None

    def note(self, event: type[Event], **fields: Any) -> None:
        if self.orchestrator is not None:
            self.orchestrator.emit(event(ts=self.orchestrator.now(), **fields))


def _task_info(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.label,
        "category": t.category,
        "role": t.role,
        "prompt": t.prompt[:2000],
    }


class _Scaler:
    """The autoscaler's bookkeeping: evidence per role each interval, and its decisions
    applied to the orchestrator's fleet (decisions themselves are ``decide_scale``).

    With ``limits.min_eval_score``, a role whose spec has no eval, or whose last eval pass
    rate is below it, is held at ``start_agents``: the run says so once at the start (a
    ``hold`` decision and an ``eval_gate`` alert), and every growth it would have made
    becomes that hold."""

    def __init__(self, orch: Orchestrator) -> None:
        assert orch.scaling is not None
        self.o = orch
        self.cfg: AutoscaleConfig = orch.scaling
        self.templates: dict[str, AgentSpec] = {}
        self.reserve: dict[str, list[AgentSpec]] = {}
        self.done: dict[str, int] = {}
        self.waited: set[str] = set()
        self.before_growth: dict[str, tuple[int, float]] = {}
        self.last_reason: dict[str, str] = {}
        self.granted: dict[str, int] = {}  # governor grants per key at the last tick
        self.gated = self._eval_gate()  # role -> (why it may not grow, numbers)
        self.refused: str | None = None  # why the engine could not place the last agent
        self._announced = False
        self._trim()

    def _eval_gate(self) -> dict[str, tuple[str, dict[str, float]]]:
        """Roles held by ``limits.min_eval_score``: those with a spec that has no eval or
        whose last eval pass rate is below it (the spec's ``options["eval_score"]``, set
        from the agent library's eval history)."""
        floor = self.o.plan.limits.min_eval_score
        if floor is None:
            return {}
        keep = max(1, self.cfg.start_agents)
        held = f"held at {keep} agent{'s' if keep > 1 else ''}"
        out: dict[str, tuple[str, dict[str, float]]] = {}
        for a in self.o.plan.agents:
            if a.role in out:
                continue
            who = str(a.options.get("agent") or f"the {a.role} spec")
            score = a.options.get("eval_score")
            if score is None:
                why = f"{who} has no eval, below limits.min_eval_score {floor:g}: {held}"
                out[a.role] = (why, {"min_eval_score": floor})
            elif float(score) < floor:
                why = (
                    f"{who}: last eval pass rate {float(score):.2f} is below "
                    f"limits.min_eval_score {floor:g}: {held}"
                )
                out[a.role] = (why, {"eval_score": float(score), "min_eval_score": floor})
        return out

    def _announce_gate(self) -> None:
        self._announced = True
        for role, (why, numbers) in self.gated.items():
            n = sum(1 for s in self.o.slots.values() if s.role == role)
            self.last_reason[role] = why
            now = self.o.now()
            self.o.emit(
                ScaleDecision(
                    ts=now, action="hold", role=role, before=n, after=n, reason=why, numbers=numbers
                )
            )
            self.o.emit(Alert(ts=now, kind="eval_gate", message=f"{role}: {why}"))

    def _trim(self) -> None:
        """Start small: ``start_agents`` per role; the plan's other agents wait in reserve."""
        kept: dict[str, int] = {}
        for a in self.o.plan.agents:
            self.templates.setdefault(a.role, a)
            if kept.get(a.role, 0) < max(1, self.cfg.start_agents):
                kept[a.role] = kept.get(a.role, 0) + 1
            else:
                self.reserve.setdefault(a.role, []).append(a)
                del self.o.slots[a.name or ""]
        self.next_index = len(self.o.plan.agents)

    def completed(self, role: str) -> None:
        self.done[role] = self.done.get(role, 0) + 1

    def schedule(self) -> None:
        if not self._announced:
            self._announce_gate()
        loop = asyncio.get_running_loop()
        self.o._retry_handles.add(loop.call_later(self.cfg.interval, self.tick))

    def tick(self) -> None:
        if self.o.dag.done:
            return
        for role in self.templates:
            evidence = self.evidence(role)
            self.apply(role, decide_scale(evidence, self.cfg), evidence)
        self.done.clear()
        self.waited.clear()
        self.granted = dict(self.o.governor.granted_by_key) if self.o.governor else {}
        self.schedule()
        self.o._wake.set()

    def evidence(self, role: str) -> RoleEvidence:
        o, now = self.o, self.o.now()
        agents = [s for s in o.slots.values() if s.role == role]
        probe = agents[0] if agents else _slot_for(self.templates[role], 0, "")
        queued = sum(
            len(b.heap) for b in o.ready.buckets.values() if can_serve(probe, b.role, b.skills)
        )
        queued += sum(len(s.queue) for s in agents)
        idle = [s for s in agents if s.running == 0 and not s.queue and not s.paused]
        cap = o.plan.limits.max_agents
        requests, headroom = self._rates(probe.provider)
        return RoleEvidence(
            role=role,
            active=len(agents),
            waiting=max(0, queued - len(idle)),
            throughput=self.done.get(role, 0) / self.cfg.interval,
            before_growth=self.before_growth.get(role),
            rate_limited=any(s.name in self.waited for s in agents),
            budget_left=o.exhausted is None,
            room=(cap if cap is not None else 100_000) - len(o.slots),
            idle=tuple((s.name, now - s.idle_since) for s in idle),
            requests=requests,
            rate_headroom=headroom,
        )

    def _rates(self, key: str) -> tuple[float, float | None]:
        """Requests/s on ``key`` over the last interval, and what its rpm limit leaves."""
        gov = self.o.governor
        if gov is None:
            return 0.0, None
        used = (gov.granted_by_key.get(key, 0) - self.granted.get(key, 0)) / self.cfg.interval
        limit = gov.limit_for(key)
        if limit is None or limit.rpm is None:
            return used, None
        return used, limit.rpm / 60.0 - used

    def apply(self, role: str, choice: ScaleChoice, e: RoleEvidence) -> None:
        before = e.active
        if choice.action == "add" and role in self.gated:
            why, numbers = self.gated[role]
            choice = ScaleChoice(action="hold", reason=why, numbers={**choice.numbers, **numbers})
        if choice.action == "add":
            added = 0
            while added < choice.count and self.add(role):
                added += 1
            self.before_growth[role] = (before, e.throughput)
            if added < choice.count and self.refused is not None:  # no room: say so
                choice = ScaleChoice(
                    action="add" if added else "hold",
                    reason=f"wanted {choice.count} more, added {added}: {self.refused}",
                    numbers={**choice.numbers, "wanted": choice.count, "added": added},
                )
        elif choice.action == "retire":
            for name in choice.retire:
                self.o.slots.pop(name, None)
                if self.o.comms is not None:
                    self.o.comms.remove_agent(name)
                self.o.emit(AgentRetired(ts=self.o.now(), agent=name, reason=choice.reason))
        after = sum(1 for s in self.o.slots.values() if s.role == role)
        if choice.action == "hold" and self.last_reason.get(role) == choice.reason:
            return  # say a hold once, not every interval
        self.last_reason[role] = choice.reason
        self.o.emit(
            ScaleDecision(
                ts=self.o.now(),
                action=choice.action,
                role=role,
                before=before,
                after=after,
                reason=choice.reason,
                numbers=dict(choice.numbers),
            )
        )
        hooks = self.o.hooks
        if choice.action != "hold" and "on_scale" in hooks.points():
            self.o._background(
                self.o._fire(
                    "on_scale",
                    hooks,
                    None,
                    role=role,
                    action=choice.action,
                    before=before,
                    after=after,
                    reason=choice.reason,
                )
            )

    def add(self, role: str) -> bool:
        o = self.o
        self.refused = None
        spare = self.reserve.get(role)
        from_reserve = bool(spare)
        if spare:
            spec = spare.pop(0)
        else:
            taken = {*o.slots, *o.runners}
            name = next(n for n in _name_candidates() if n not in taken)
            spec = dataclasses.replace(self.templates[role], name=AgentName(name))
        name = spec.name or ""
        runner = o.runners.get(name)
        if runner is None:
            if o.runner_factory is None:
                return False
            runner = o.runners[name] = o.runner_factory(spec)
        self.refused = o.engine.add_agent(name, runner)
        if self.refused is not None:  # no room for it (a remote engine's cluster is full)
            if from_reserve:
                self.reserve[role].insert(0, spec)
            else:
                o.runners.pop(name, None)
            return False
        slot = _slot_for(spec, self.next_index, o.plan.provider or "local:smollm2")
        self.next_index += 1
        slot.idle_since = o.now()
        o.slots[name] = slot
        o.breakers[name] = CircuitBreaker(o.plan.breaker)
        o.provider_breakers.setdefault(slot.provider, CircuitBreaker(o.plan.breaker.for_provider()))
        o.agent_hooks.setdefault(name, o.hooks)
        if o.comms is not None:
            o.comms.add_agent(name, spec.role)
        if isinstance(o.policy, RoundRobin):
            o.policy.fleet_size = max(o.policy.fleet_size, self.next_index)
        o.emit(
            AgentJoined(
                ts=o.now(),
                agent=AgentInfo(
                    name=name,
                    role=spec.role,
                    provider=slot.provider,
                    style=spec.style,
                    skills=tuple(sorted(spec.skills)),
                    context_tokens=runner.context_tokens,
                ),
            )
        )
        return True


def _slot_for(spec: AgentSpec, index: int, default_provider: str) -> AgentSlot:
    return AgentSlot(
        name=spec.name or "",
        role=spec.role,
        skills=spec.skills,
        specialities=spec.specialities,
        index=index,
        provider=spec.provider or default_provider,
    )

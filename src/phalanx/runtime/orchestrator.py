"""The orchestrator: one run's driver. Ready tasks -> policy -> engine -> outcomes -> events.

All decisions are delegated to pure pieces (``DagState``, ``ReadyQueue``, policies,
``decide_retry``, ``decide_scale``) and the bookkeeping to small ones it calls: which agent
takes which ready task (``dispatch``), task records and states (``progress``, ``records``),
live attempts and leases (``attempts``), circuit breakers (``breakers``), budgets
(``budgets``), the autoscaler (``autoscaler``), hooks (``run_hooks``) and communication
overhead (``overhead``). This module only wires them to the engine, the clock and the sinks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..agents.hooks import HookRunner
from ..agents.sandbox import sandbox_warning
from ..agents.spec import AgentSpec
from ..agents.toolspec import ToolResult
from ..cost import Usage
from ..events import (
    AgentWaiting,
    Alert,
    AttemptStarted,
    Event,
    EventSink,
    MessageSent,
    RunFinished,
    RunStatus,
)
from ..exceptions import ErrorClass
from ..ids import TaskId
from ..journal import Decision, RecordedLoop
from ..plan.model import Plan
from .approvals import ApprovalDesk, DecisionStore, MemoryDecisions
from .attempts import AttemptLedger
from .autoscaler import Autoscaler, slot_for
from .breakers import FleetBreakers
from .budgets import Budget
from .dispatch import Dispatcher
from .engine import Engine, EngineLost
from .executor import AgentRunner, Attempt, Outcome
from .gate import RunGate
from .governor import RateGovernor
from .growth import Growth, grow_plan, growing, refused
from .overhead import OverheadWatch
from .policies import AgentSlot, make_policy
from .progress import Progress
from .records import (
    DEFAULT_PROVIDER,
    Prior,
    TaskRecord,
    attempt_cancelled,
    attempt_finished,
    run_started,
    upstream_of,
)
from .router import LLMPolicy
from .run_hooks import RunHooks, task_info, vetoed
from .scheduler import ReadyQueue

__all__ = ["Orchestrator", "Prior", "RunGate", "TaskRecord"]

MAX_LOST = 3  # a task whose host dies this often under it fails (it may be what kills it)


class Orchestrator:
    """Drives one run (one session of it) from its plan to a final status."""

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
        commit: Callable[[], None] | None = None,
        hooks: HookRunner | None = None,
        runner_factory: Callable[[AgentSpec], AgentRunner] | None = None,
        comms: Any = None,
        router: LLMPolicy | None = None,
        timed: bool = True,
        decisions: DecisionStore | None = None,
    ) -> None:
        self.prior = prior or Prior()
        plan = grow_plan(plan, self.prior.growth)  # a resumed run's plan, as it had grown
        self.plan, self.run_id, self.engine = plan, run_id, engine
        self.runners, self.sinks, self.simulated = dict(runners), list(sinks), simulated
        self.timed = timed  # false: every model is simulated with zero latency
        self.rng, self.tasks = random.Random(seed), plan.task_map
        self.progress = Progress(plan, self.prior, self.rng, now=self.now, emit=self.emit)
        self.records, self.dag = self.progress.records, self.progress.dag
        self.ready = ReadyQueue(plan)
        self.runner_factory = runner_factory
        self.comms = comms  # phalanx.comms.Comms, when agents may talk
        self.checkpoint = checkpoint or (lambda: None)  # called between event groups
        self._commit = commit or (lambda: None)  # writes and commits what was emitted
        self.status: RunStatus = "running"
        self.governor: RateGovernor | None = None  # set by the run's gate
        self._init_fleet(hooks or HookRunner(), router)
        self.progress.tasks = self.tasks  # one map of tasks, grown in place
        self.growth = Growth(
            self,
            self.prior.growth,
            self.prior.parsed,
            succeed=lambda o: self.progress.succeeded(o, self.now()),
            fail=lambda tid, o: self.progress.failed(tid, o, "foreach"),
        )
        self._sources = {t.foreach_source[0] for t in plan.tasks if t.foreach_source}
        self.attempts = AttemptLedger(
            self.prior.max_attempt_id + 1, plan.limits.lease_seconds, self._deliver
        )
        self.budget = Budget(plan.limits, self.prior.spent, self._on_exhausted)
        if gate is not None:
            gate.bind(self)
        self.started = self._wall0 = self._mono0 = 0.0
        self._clock: Callable[[], float] = _loop_time  # the loop's clock, once it runs
        self._inbox: list[Outcome | EngineLost] = []
        self.engine_lost: str | None = None  # why the engine could run nothing more
        self._wake = asyncio.Event()
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._loops = dict(self.prior.loops)  # interrupted loops the next attempts continue
        self.approvals = ApprovalDesk(
            plan,
            run_id,
            decisions if decisions is not None else MemoryDecisions(),
            prior=self.prior.approvals,
            now=self.now,
            emit=self.emit,
            park=self.progress.awaiting,
            resolve=self._decided,
        )
        self.approvals.tasks = self.tasks  # the run's one map of tasks, grown in place

    def _init_fleet(self, hooks: HookRunner, router: LLMPolicy | None) -> None:
        """The agents' slots (trimmed by the autoscaler), hooks, policy and breakers."""
        plan, default = self.plan, self.plan.provider or DEFAULT_PROVIDER
        self.slots = {a.name or "": slot_for(a, i, default) for i, a in enumerate(plan.agents)}
        self.overhead = OverheadWatch(
            self.comms, plan.limits.comm_overhead_warning, now=self.now, emit=self.emit
        )
        self.scaling = plan.scaling
        self.scaler = Autoscaler(self, self.scaling) if self.scaling is not None else None
        self.router = router if plan.policy == "llm" else None
        self.policy: Any = self.router or make_policy(plan.policy, len(self.slots))
        self.hooks = RunHooks(
            hooks, plan.agents, run_id=self.run_id, now=self.now, emit=self.emit,
            env_pass=plan.env_pass,
        )  # fmt: skip
        self.breakers = FleetBreakers(
            plan.breaker,
            self.slots,
            now=self.now,
            emit=self.emit,
            wake=self.wake,
            on_change=self.hooks.breaker,
        )
        self.dispatcher = Dispatcher(
            plan,
            self.slots,
            self.ready,
            self.breakers,
            policy=self.policy,
            router=self.router,
            run_id=self.run_id,
            now=self.now,
            emit=self.emit,
            start=self._start,
        )
        self.dispatcher.tasks = self.tasks  # the run's one map of tasks, grown in place

    # -- clock, events and timers ----------------------------------------------------------
    def now(self) -> float:
        """Wall-clock seconds, advanced by the event loop's clock (virtual in tests)."""
        return self._wall0 + (self._clock() - self._mono0)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def commit(self) -> None:
        """Make the events emitted so far durable now (a tool that writes is about to run;
        called from an executor, never inside an event group)."""
        self._commit()

    def message_sent(self, event: MessageSent) -> None:
        """A message between agents: journal it and fire ``on_message``."""
        self.emit(event)
        self.hooks.message(event)

    def wake(self) -> None:
        self._wake.set()

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` after ``delay`` seconds, unless the run ends first."""
        self._retry_handles.add(asyncio.get_running_loop().call_later(delay, callback))

    @property
    def exhausted(self) -> str | None:
        """Why a budget stopped new work (None while none has)."""
        return self.budget.exhausted

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> RunStatus:
        self._begin()
        await self.engine.start(self.runners, self._deliver)
        try:
            await self.hooks.run_start(self.plan, self.prior.session)
            await self._loop()
            self.status = self._final_status()
        except asyncio.CancelledError:
            self.status = "interrupted"
            raise
        except BaseException:
            self.status = "error"
            raise
        finally:
            await self._finish()
        return self.status

    def _begin(self) -> None:
        """Start the clock, say the run started, and queue the tasks ready at the start."""
        loop = asyncio.get_running_loop()
        self._mono0, self._wall0 = loop.time(), time.time()
        self._clock = loop.time
        self.started = self._wall0
        self.emit(
            run_started(
                self.plan,
                ts=self.now(),
                run_id=self.run_id,
                session=self.prior.session,
                simulated=self.simulated,
                slots=self.slots,
                runners=self.runners,
                records=self.records,
                timed=self.timed,
                grows=growing(self.plan, self.plan.tasks, self.growth.depth),
            )
        )
        self._warn_unsandboxed()
        self._warn_model_limits()
        if self.scaler is not None:
            self.scaler.schedule()
        if self.plan.limits.max_wall_seconds is not None:
            self.later(self.plan.limits.max_wall_seconds, self._wall_time_up)
        self.budget.check()
        self.progress.skip_orphans()
        self.dispatcher.affinity = {
            TaskId(tid): loop.agent for tid, loop in self._loops.items() if loop.agent in self.slots
        }
        self.dispatcher.enqueue(self.approvals.admit(self.growth.route(self.dag.initially_ready())))

    def _warn_unsandboxed(self) -> None:
        """A warning at the start when allowed commands will run outside bubblewrap (the
        plan says ``sandbox: none``) or cannot run at all (``bwrap`` is missing)."""
        commands = self.plan.commands
        warning = sandbox_warning(commands.allow, commands.sandbox)
        if warning is not None:
            self.emit(Alert(ts=self.now(), kind="sandbox", message=warning))

    def _warn_model_limits(self) -> None:
        """A warning at the start for each thing an agent asks of its model that the model
        may not manage (a tiny local model with many tools, a style longer than its output
        budget), naming the agents (clones share one line)."""
        agents: dict[str, list[str]] = {}
        for name, runner in self.runners.items():
            for line in runner.advice():
                agents.setdefault(f"{runner.provider.name}: {line}", []).append(name)
        for line, names in agents.items():
            who = "agent " + names[0] if len(names) == 1 else "agents " + ", ".join(names)
            self.emit(
                Alert(
                    ts=self.now(),
                    kind="model",
                    message=f"{who} on {line}",
                    agent=names[0] if len(names) == 1 else None,
                )
            )

    async def _finish(self) -> None:
        """Stop timers and the engine, raise the last alerts, fire the end hooks, and say
        the run finished."""
        for h in self._retry_handles:
            h.cancel()
        self.approvals.close()
        self.growth.release_all()
        self.attempts.cancel_leases()
        await self.engine.stop()
        self.overhead.check(len(self.slots), force=True)
        if self.router is not None:
            await self.router.close()
            self.emit(Alert(ts=self.now(), kind="router", message=self.router.summary()))
        await self.hooks.end(self.status, self._reason)
        self.emit(RunFinished(ts=self.now(), status=self.status, reason=self._reason()))

    def _final_status(self) -> RunStatus:
        if self.engine_lost:
            return "interrupted"
        if self.exhausted:
            return "budget_exhausted"
        return "succeeded" if self.progress.all_succeeded() else "failed"

    def _reason(self) -> str:
        if self.status == "interrupted":
            why = self.engine_lost or "interrupted"
            return why + ": resume with 'phalanx resume " + self.run_id + "'"
        return self.exhausted or self.progress.tally()

    async def _loop(self) -> None:
        self._dispatch()
        while not self.dag.done and not (self.exhausted and not self.attempts.inflight):
            await self._wake.wait()
            self._wake.clear()
            inbox, self._inbox = self._inbox, []
            for outcome in inbox:
                if isinstance(outcome, EngineLost):
                    self.engine_lost = outcome.reason
                    return
                self._on_outcome(outcome)
            self.growth.check()
            self._dispatch()
            self.checkpoint()

    def _deliver(self, outcome: Outcome | EngineLost) -> None:
        self._inbox.append(outcome)
        self._wake.set()

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if not self.exhausted:  # a budget is spent: no new work, in-flight attempts finish
            self.dispatcher.round()

    def _start(self, tid: TaskId, agent: AgentSlot) -> None:
        task, rec = self.tasks[tid], self.records[tid]
        aid = self.attempts.open(tid, agent)
        self.breakers.start_probe(agent)
        self.progress.running(tid)
        runner = self.runners.get(agent.name)
        self.emit(
            AttemptStarted(
                ts=self.now(),
                task_id=tid,
                attempt_id=aid,
                attempt_no=rec.attempts + 1,
                agent=agent.name,
                max_turns=task.max_turns or int(getattr(runner, "max_turns", 0) or 0),
            )
        )
        attempt = Attempt(
            run_id=self.run_id,
            attempt_id=aid,
            attempt_no=rec.attempts + 1,
            task=task,
            agent=agent.name,
            upstream=upstream_of(task, self.records, self.growth.expanded),
            resume=self._resumable(tid, agent.name),
        )
        self.attempts.lease(tid, aid, agent.name)
        hooks = self.hooks.for_agent(agent.name)
        if "before_task" in hooks.points():
            self.hooks.background(self._vet_then_submit(attempt, hooks))
        else:
            self.engine.submit(attempt)

    def _resumable(self, tid: TaskId, agent: str) -> RecordedLoop | None:
        """The interrupted loop the task's first attempt of this session continues: on the
        agent that ran it, or on any agent when they all share one workspace."""
        loop = self._loops.pop(tid, None)
        if loop is None or (loop.agent != agent and self.plan.isolation != "none"):
            return None
        return loop

    async def _vet_then_submit(self, attempt: Attempt, hooks: HookRunner) -> None:
        tid = attempt.task.id
        verdict = await self.hooks.fire(
            "before_task",
            hooks,
            attempt.agent,
            task=task_info(attempt.task),
            attempt=attempt.attempt_no,
            approval=self.approvals.payload(tid),
        )
        if attempt.attempt_id not in self.attempts.inflight:
            return  # the run stopped this attempt meanwhile
        if verdict.veto:
            self._deliver(vetoed(attempt, verdict.reason))
        elif verdict.ask and not self.approvals.approved(tid):
            self._ask(attempt, verdict.reason, verdict.hook)
        else:  # an ask about an approved task: the decision stands
            self.engine.submit(attempt)

    # -- approvals -------------------------------------------------------------------------
    def _ask(self, attempt: Attempt, reason: str, hook: str) -> None:
        """A ``before_task`` hook asked for an approval: the attempt gives its agent back
        (cancelled, not counted) and the task waits for a person's decision."""
        tid, slot = self.attempts.drop(attempt.attempt_id)
        self.breakers.cancel_probe(slot)
        now = self.now()
        slot.idle_since = now if slot.running == 0 else slot.idle_since
        self.emit(attempt_cancelled(tid, attempt.attempt_id, slot.name, now, "awaiting approval"))
        self.approvals.wait(TaskId(tid), reason, f"hook:{hook}" if hook else "hook")
        self._wake.set()

    def _decided(self, tid: TaskId, d: Decision) -> None:
        """A waiting task's decision: approved, it is queued; rejected, it is skipped (and
        what needs it); timed out, it fails or is skipped (``approval_on_timeout``)."""
        if d.decision == "approved":
            self.progress.approved(tid)
            self.dispatcher.enqueue([tid])
        elif d.decision == "rejected":
            why = f"approval rejected by {d.by or 'someone'}"
            why += f": {d.reason}" if d.reason else ""
            self.progress.refused(tid, why, fail=False)
        else:
            fail = self.tasks[tid].approval_on_timeout == "fail"
            self.progress.refused(tid, d.reason or "approval timed out", fail=fail)
        self._wake.set()

    # -- outcomes --------------------------------------------------------------------------
    def _on_outcome(self, o: Outcome) -> None:
        slot, stale = self.attempts.close(o)
        now = self.now()  # one instant for the outcome's events
        self.emit(attempt_finished(o, now, stale))
        if stale:
            return  # a superseded attempt: its result is recorded and ignored
        self.attempts.settle(o.task_id)
        self.breakers.record(o, self.slots)
        self.overhead.worked(o.agent, o.usage.total_tokens)
        self.overhead.check(len(self.slots))
        rec = self.records[o.task_id]
        rec.usage = rec.usage + o.usage
        if slot is not None and slot.running == 0:
            slot.idle_since = now
        if o.ok:
            self._succeeded(o, now)
        elif o.error_class is ErrorClass.LOST and rec.lost < MAX_LOST:
            self._requeue_lost(TaskId(o.task_id), o)
        else:
            self._failed(TaskId(o.task_id), o)

    def _succeeded(self, o: Outcome, now: float) -> None:
        self.slots[o.agent].done += 1
        if self.scaler is not None:
            self.scaler.completed(self.slots[o.agent].role)
        if o.task_id in self._sources:
            self.growth.parsed[o.task_id] = o.parsed
        ready = self.growth.route(self.progress.succeeded(o, now))  # templates expand here
        self.hooks.after_task(o, self.tasks[TaskId(o.task_id)], False)
        self.dispatcher.enqueue(self.approvals.admit(ready))

    def _failed(self, tid: TaskId, o: Outcome) -> None:
        """A failed attempt: retry the task, or fail it (and skip what depends on it)."""
        decision = self.progress.attempt_failed(tid, o)
        self.hooks.after_task(o, self.tasks[tid], decision.retry)
        if decision.retry:
            assert o.error_class is not None
            self._retry(tid, decision.delay, o.error_class)
        else:
            self.progress.failed(tid, o, decision.reason)

    def _requeue_lost(self, tid: TaskId, o: Outcome) -> None:
        """An attempt that died with its host: run the task again at once, on a new attempt
        id, without counting it against ``max_attempts``."""
        self.records[tid].lost += 1
        self.hooks.after_task(o, self.tasks[tid], True)
        self._retry(tid, 0.0, ErrorClass.LOST)

    def _retry(self, tid: TaskId, delay: float, cls: ErrorClass) -> None:
        self.progress.retrying(tid, delay, cls)

        def fire() -> None:
            self._retry_handles.discard(handle)
            self.dispatcher.enqueue([tid])
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._retry_handles.add(handle)

    # -- budgets and waits -----------------------------------------------------------------
    def spend(self, usage: Usage) -> None:
        self.budget.spend(usage)

    def _on_exhausted(self, reason: str) -> None:
        self.emit(Alert(ts=self.now(), kind="budget", message=reason))
        self.growth.release_all()  # spawners waiting for subtasks that will not run go on
        self._wake.set()

    # -- growth ----------------------------------------------------------------------------
    async def spawn(
        self, task_id: str, attempt_id: int, call: str, arguments: Mapping[str, Any]
    ) -> ToolResult:
        """A ``spawn_tasks`` call of an attempt (``call``: its place in the loop): the
        subtasks join the DAG in the event group of the call's answer; with ``wait`` the
        answer comes once they have ended (the caller's agent is free meanwhile)."""
        e, ready, why = self.growth.spawn(task_id, attempt_id, call, arguments)
        if e is None:
            return refused(why)
        self.dispatcher.enqueue(ready)
        self._wake.set()
        if not e.wait:
            return ToolResult(ok=True, content=e.result)
        slot = self.attempts.inflight.get(attempt_id)
        if slot is not None:
            slot.running -= 1
        try:
            await self.growth.wait_for(e.ids)
        finally:
            if slot is not None and self.attempts.inflight.get(attempt_id) is slot:
                slot.running += 1
        return ToolResult(ok=True, content=e.result + "\n\n" + self.growth.results(e.ids))

    def _wall_time_up(self) -> None:
        """``max_wall_seconds`` passed: no new work, and the attempts in flight stop now."""
        if not self.budget.wall_time_up():
            return
        for aid in list(self.attempts.inflight):
            self.engine.cancel(aid)
            tid, slot = self.attempts.drop(aid)
            self.records[tid].state = "pending"
            self.emit(attempt_cancelled(tid, aid, slot.name, self.now(), self.exhausted))

    def on_wait(self, agent: str, task_id: str, key: str, seconds: float) -> None:
        """An agent waits for a rate permit (the governor calls this)."""
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


def _loop_time() -> float:
    return asyncio.get_running_loop().time()

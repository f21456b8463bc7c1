"""The autoscaler: sizes a run's fleet per role while it runs. Every ``interval`` it collects
each role's evidence (work waiting, throughput, rate-limit waits and headroom, budget, room
under ``max_agents``, idle agents), asks the pure ``decide_scale`` (``scaling.py``) what to
do, and applies the answer: agents join from the plan's reserve or as clones of the role's
template (placed by the engine, which may refuse), idle ones retire, and every decision is
said once as a ``ScaleDecision`` with its reason and numbers. The run is seen through
``Fleet``, a protocol the orchestrator satisfies, so this module does not import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from ..agents.spec import AgentSpec, _name_candidates
from ..events import AgentInfo, AgentJoined, AgentRetired, Alert, Event, ScaleDecision
from ..ids import AgentName
from ..plan.model import Plan
from .breakers import FleetBreakers
from .engine import Engine
from .executor import AgentRunner
from .governor import RateGovernor
from .policies import AgentSlot, RoundRobin, can_serve
from .records import DEFAULT_PROVIDER
from .run_hooks import RunHooks
from .scaling import AutoscaleConfig, RoleEvidence, ScaleChoice, decide_scale
from .scheduler import DagState, ReadyQueue

__all__ = ["Autoscaler", "Fleet", "slot_for"]


class Fleet(Protocol):
    """What the autoscaler needs of the run whose fleet it sizes."""

    plan: Plan
    slots: dict[str, AgentSlot]
    runners: dict[str, AgentRunner]
    runner_factory: Callable[[AgentSpec], AgentRunner] | None
    engine: Engine
    comms: Any
    policy: Any
    governor: RateGovernor | None
    breakers: FleetBreakers
    hooks: RunHooks
    dag: DagState
    ready: ReadyQueue

    @property
    def exhausted(self) -> str | None: ...

    def now(self) -> float: ...

    def emit(self, event: Event) -> None: ...

    def later(self, delay: float, callback: Callable[[], None]) -> None: ...

    def wake(self) -> None: ...


class Autoscaler:
    """The autoscaler's bookkeeping: evidence per role each interval, and its decisions
    applied to the run's fleet (decisions themselves are ``decide_scale``).

    With ``limits.min_eval_score``, a role whose spec has no eval, or whose last eval pass
    rate is below it, is held at ``start_agents``: the run says so once at the start (a
    ``hold`` decision and an ``eval_gate`` alert), and every growth it would have made
    becomes that hold."""

    def __init__(self, fleet: Fleet, cfg: AutoscaleConfig) -> None:
        self.o = fleet
        self.cfg = cfg
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

    # -- the start ---------------------------------------------------------------------------
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

    # -- each interval -----------------------------------------------------------------------
    def completed(self, role: str) -> None:
        self.done[role] = self.done.get(role, 0) + 1

    def schedule(self) -> None:
        if not self._announced:
            self._announce_gate()
        self.o.later(self.cfg.interval, self.tick)

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
        self.o.wake()

    def evidence(self, role: str) -> RoleEvidence:
        o, now = self.o, self.o.now()
        agents = [s for s in o.slots.values() if s.role == role]
        probe = agents[0] if agents else slot_for(self.templates[role], 0, "")
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

    # -- applying a decision -----------------------------------------------------------------
    def apply(self, role: str, choice: ScaleChoice, e: RoleEvidence) -> None:
        before = e.active
        if choice.action == "add" and role in self.gated:
            why, numbers = self.gated[role]
            choice = ScaleChoice(action="hold", reason=why, numbers={**choice.numbers, **numbers})
        if choice.action == "add":
            choice = self._grow(role, choice, e)
        elif choice.action == "retire":
            self._retire(choice)
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
        if choice.action != "hold":
            self.o.hooks.scaled(role, choice.action, before, after, choice.reason)

    def _grow(self, role: str, choice: ScaleChoice, e: RoleEvidence) -> ScaleChoice:
        """Add up to ``choice.count`` agents; the choice as it turned out."""
        added = 0
        while added < choice.count and self.add(role):
            added += 1
        self.before_growth[role] = (e.active, e.throughput)
        if added < choice.count and self.refused is not None:  # no room: say so
            return ScaleChoice(
                action="add" if added else "hold",
                reason=f"wanted {choice.count} more, added {added}: {self.refused}",
                numbers={**choice.numbers, "wanted": choice.count, "added": added},
            )
        return choice

    def _retire(self, choice: ScaleChoice) -> None:
        for name in choice.retire:
            self.o.slots.pop(name, None)
            if self.o.comms is not None:
                self.o.comms.remove_agent(name)
            self.o.emit(AgentRetired(ts=self.o.now(), agent=name, reason=choice.reason))

    def add(self, role: str) -> bool:
        """One more agent of ``role``, if a runner can be made and the engine places it."""
        o = self.o
        self.refused = None
        spec, from_reserve = self._next_spec(role)
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
        self._join(spec, runner)
        return True

    def _next_spec(self, role: str) -> tuple[AgentSpec, bool]:
        """The next agent of ``role``: from the reserve (True), or a fresh clone (False)."""
        spare = self.reserve.get(role)
        if spare:
            return spare.pop(0), True
        taken = {*self.o.slots, *self.o.runners}
        name = next(n for n in _name_candidates() if n not in taken)
        return dataclasses.replace(self.templates[role], name=AgentName(name)), False

    def _join(self, spec: AgentSpec, runner: AgentRunner) -> None:
        """A placed agent joins the fleet: its slot, breakers, hooks and mailbox."""
        o, name = self.o, spec.name or ""
        slot = slot_for(spec, self.next_index, o.plan.provider or DEFAULT_PROVIDER)
        self.next_index += 1
        slot.idle_since = o.now()
        o.slots[name] = slot
        o.breakers.add(slot)
        o.hooks.add_agent(name)
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


def slot_for(spec: AgentSpec, index: int, default_provider: str) -> AgentSlot:
    """The scheduler's view of an agent made from its spec."""
    return AgentSlot(
        name=spec.name or "",
        role=spec.role,
        skills=spec.skills,
        specialities=spec.specialities,
        index=index,
        provider=spec.provider or default_provider,
    )

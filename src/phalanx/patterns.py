"""Patterns: thin builders over the one scheduler — a pipeline is a chain in the DAG, a team
is tasks routed by role, a swarm is like agents with a distribution policy.

    Pipeline({"analyze": AgentSpec(style="yaml"), "implement": AgentSpec(style="concise")},
             provider="sim").run_sync("add password reset")
    Team({"researcher": AgentSpec(style="yaml"), "coder": AgentSpec()}).run_sync(tasks)
    Swarm(size=10, roles=["researcher", "coder"], provider="sim").run_sync(["...", "..."])
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from .agents.spec import AgentSpec, assign_names
from .api import RunOptions, RunResult, run
from .ids import AgentName, TaskId
from .plan.model import Limits, Plan, Task

__all__ = ["AgentPipeline", "AgentSwarm", "Pipeline", "Swarm", "Team"]

Stages = Mapping[str, AgentSpec] | Sequence[tuple[str, AgentSpec]]


class _Runnable:
    """Shared by the patterns: ``plan(work)`` then run it (async or sync)."""

    state: str | os.PathLike[str] | None = None

    def plan(self, work: Any) -> Plan:
        raise NotImplementedError

    async def run(self, work: Any, **kwargs: Unpack[RunOptions]) -> RunResult:
        """Run this pattern on ``work``; keywords as for :func:`phalanx.run`."""
        kwargs.setdefault("state", self.state)
        return await run(self.plan(work), **kwargs)

    def run_sync(self, work: Any, **kwargs: Unpack[RunOptions]) -> RunResult:
        """:meth:`run` for code without an event loop."""
        return asyncio.run(self.run(work, **kwargs))


class Pipeline(_Runnable):
    """The strategy's ``AgentPipeline``: one agent per stage, each stage's task needs the
    previous one, so every stage receives the results before it (context hand-off)."""

    def __init__(
        self,
        stages: Stages,
        *,
        provider: str | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        name: str = "pipeline",
        state: str | os.PathLike[str] | None = None,
    ) -> None:
        pairs = list(stages.items()) if isinstance(stages, Mapping) else list(stages)
        self.stages = [
            (stage, spec if spec.role != "generalist" else dataclasses.replace(spec, role=stage))
            for stage, spec in pairs
        ]
        self.provider, self.providers, self.name, self.state = provider, providers, name, state

    def plan(self, work: str) -> Plan:
        tasks = []
        for i, (stage, spec) in enumerate(self.stages):
            needs = (TaskId(self.stages[i - 1][0]),) if i else ()
            tasks.append(
                Task(
                    id=TaskId(stage),
                    title=f"{stage}: {work}"[:80],
                    prompt=f"Stage '{stage}' of the work: {work}",
                    needs=needs,
                    role=spec.role,
                )
            )
        return Plan.build(
            agents=[s for _, s in self.stages],
            tasks=tasks,
            name=self.name,
            provider=self.provider,
            providers=self.providers,
        )

    def execute(self, work: str, **kwargs: Unpack[RunOptions]) -> dict[str, str]:
        """The strategy's ``execute``: each stage's output, by stage."""
        result = self.run_sync(work, **kwargs)
        return {stage: result.tasks[stage].output for stage, _ in self.stages}


AgentPipeline = Pipeline


class Team(_Runnable):
    """Task specialisation: one agent per role (or a list of them); tasks are routed by
    their ``role`` and, for the rest, by best fit of category and skills."""

    def __init__(
        self,
        members: Mapping[str, AgentSpec | Sequence[AgentSpec]],
        *,
        policy: str = "best_fit",
        provider: str | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        name: str = "team",
        state: str | os.PathLike[str] | None = None,
    ) -> None:
        self.agents: list[AgentSpec] = []
        for role, spec in members.items():
            for s in [spec] if isinstance(spec, AgentSpec) else spec:
                self.agents.append(dataclasses.replace(s, role=role))
        self.agents = assign_names(self.agents)
        self.policy, self.provider, self.providers = policy, provider, providers
        self.name, self.state = name, state

    def plan(self, work: Sequence[Task]) -> Plan:
        return Plan.build(
            agents=self.agents,
            tasks=list(work),
            name=self.name,
            policy=self.policy,
            provider=self.provider,
            providers=self.providers,
        )


class Swarm(_Runnable):
    """The strategy's ``AgentSwarm``: ``size`` agents with generated names (roles cycled from
    ``roles``); ``distribute_work`` assigns task i to agent i % size (round-robin), and idle
    agents still steal from busy ones.

    ``spec`` may name a saved agent (``"reviewer@2"``, see :mod:`phalanx.plan.library`). With
    ``min_eval_score`` the swarm "scales only if performance is good": it starts with
    ``start_agents`` agents per role (default 1) and the autoscaler grows it towards ``size``
    only when the spec's last eval pass rate reaches the score; otherwise the run's
    ``scale_decision`` and ``eval_gate`` alert say why it stays small. ``start_agents`` alone
    turns the autoscaler on without the gate."""

    def __init__(
        self,
        size: int = 3,
        *,
        spec: AgentSpec | str | None = None,
        agents: Sequence[AgentSpec] | None = None,
        roles: Sequence[str] = (),
        policy: str = "round_robin",
        provider: str | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        name: str = "swarm",
        state: str | os.PathLike[str] | None = None,
        min_eval_score: float | None = None,
        start_agents: int | None = None,
    ) -> None:
        self.styles: dict[str, Any] = {}
        self.prices: dict[str, Any] = {}
        saved_providers: dict[str, Any] = {}
        if isinstance(spec, str):
            from .plan.library import load

            saved = load(spec)
            spec = saved.agent_spec()
            self.styles = {k: dict(v) for k, v in saved.styles.items()}
            self.prices = dict(saved.prices)
            saved_providers = {k: dict(v) for k, v in saved.providers.items()}
        base = spec or AgentSpec()
        clones = list(agents) if agents is not None else base.clone(size)
        if roles:
            clones = [
                dataclasses.replace(a, role=roles[i % len(roles)]) for i, a in enumerate(clones)
            ]
        self.agents = assign_names(clones)
        self.policy, self.provider, self.name, self.state = policy, provider, name, state
        self.providers = {**saved_providers, **(providers or {})}
        if min_eval_score is not None and start_agents is None:
            start_agents = 1
        self.limits = Limits(min_eval_score=min_eval_score, start_agents=start_agents)

    def distribute_work(self, tasks: Sequence[str | Task]) -> Plan:
        """The plan that assigns ``tasks`` round-robin over the swarm."""
        names = [AgentName(a.name or "") for a in self.agents]
        built = [
            t if isinstance(t, Task) else Task(id=TaskId(f"task-{i + 1}"), prompt=t)
            for i, t in enumerate(tasks)
        ]
        pinned = [
            t if t.agent or t.role else dataclasses.replace(t, agent=names[i % len(names)])
            for i, t in enumerate(built)
        ]
        return Plan.build(
            agents=self.agents,
            tasks=pinned,
            name=self.name,
            policy=self.policy,
            provider=self.provider,
            providers=self.providers,
            styles=self.styles,
            prices=self.prices,
            limits=self.limits,
        )

    def plan(self, work: Sequence[str | Task]) -> Plan:
        return self.distribute_work(work)


AgentSwarm = Swarm

"""Assembling a run from its plan: each agent's runner (provider, tools, context, workspace),
the agents' workspaces and worktrees, and the end of an isolated run (each agent's branch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from ..agents.context import load_context
from ..agents.spec import AgentSpec
from ..agents.styles import Styles
from ..agents.tools import ToolContext, ToolSpec
from ..agents.workspace import Workspace
from ..comms import Comms
from ..cost import price_for
from ..events import Alert
from ..exceptions import PlanError, UsageError
from ..journal import Journal
from ..plan.model import DEFAULT_PROVIDER, Plan
from ..providers import Provider, ProviderRecipe, split_provider
from ..runtime.executor import AgentRunner
from ..runtime.governor import Gate
from ..runtime.orchestrator import Orchestrator

__all__ = [
    "RunnerFactory",
    "agent_tool",
    "agent_workspaces",
    "finish_isolation",
    "run_workspace",
    "state_dir_of",
    "worktrees_dir",
]


class RunnerFactory:
    """Builds an agent's executor: its provider, tools in its workspace, its context.
    Used for the plan's agents and for those the autoscaler adds."""

    def __init__(
        self,
        plan: Plan,
        providers: Mapping[str, Provider],
        gate: Gate,
        workspaces: Mapping[str, Workspace],
        tools: Mapping[str, ToolSpec],
        comms: Comms | None = None,
        *,
        seed: int = 0,
        custom: frozenset[str] = frozenset(),
        styles: Styles | None = None,
    ) -> None:
        self.plan, self.providers, self.gate, self.comms = plan, providers, gate, comms
        self.styles = styles if styles is not None else Styles(plan.own_styles())
        self.workspaces, self.tools = workspaces, tools
        self.seed, self.custom = seed, custom  # custom providers travel as objects
        self.default_workspace = next(iter(workspaces.values()))

    def __call__(self, a: AgentSpec) -> AgentRunner:
        plan = self.plan
        workspace = self.workspaces.get(a.name or "", self.default_workspace)
        ctx = ToolContext(
            workspace=workspace,
            allowed_commands=frozenset(plan.commands.allow),
            command_timeout=plan.commands.timeout,
            sandbox=plan.commands.sandbox,
            network=plan.commands.network,
            cpu_seconds=plan.commands.cpu,
            memory_mb=plan.commands.memory,
            env_pass=frozenset(plan.env_pass),
            agent=a.name or "",
            comms=self.comms,
        )
        name = a.provider or plan.provider or DEFAULT_PROVIDER
        try:
            bundle = load_context(
                a.context,
                workspace,
                max_tokens=a.context_max_tokens,
                where=f"context of agent {a.name}",
            )
        except PlanError as exc:
            raise PlanError(exc.detail, file=plan.source, field=exc.field) from None
        return AgentRunner(
            a,
            self.providers[name],
            split_provider(name)[1],
            gate=self.gate,
            key=name,
            price=price_for(name, plan.prices),
            tools={t: agent_tool(plan, self.tools, t, a.name or "") for t in a.tools},
            tool_context=ctx,
            context=bundle.text,
            context_tokens=bundle.tokens,
            max_turns=a.max_turns,
            max_prompt_tokens=plan.limits.max_prompt_tokens,
            retry=plan.retry,
            comms=self.comms,
            styles=self.styles,
            recipe=None
            if name in self.custom
            else ProviderRecipe(name=name, options=self.plan.providers, seed=self.seed),
        )


def agent_tool(plan: Plan, tools: Mapping[str, ToolSpec], name: str, agent: str) -> ToolSpec:
    if name not in tools:
        raise PlanError(
            f"unknown tool {name!r} for agent {agent} (known: {', '.join(sorted(tools))})",
            file=plan.source,
            field="agents.tools",
        )
    return tools[name]


def agent_workspaces(
    plan: Plan, run_id: str, workspace: Path, journal: Journal
) -> dict[str, Workspace]:
    """Every agent's sandbox: the run's workspace, or with ``isolation: worktree`` a git
    worktree of it on a branch of its own."""
    names = [a.name or "" for a in plan.agents]
    if plan.isolation != "worktree":
        shared = Workspace(workspace, create=True)
        return dict.fromkeys(names, shared)
    from ..agents import isolation

    paths = isolation.prepare(workspace, run_id, names, worktrees_dir(journal, run_id))
    return {n: Workspace(p) for n, p in paths.items()}


def worktrees_dir(journal: Journal, run_id: str) -> Path:
    return state_dir_of(journal) / "runs" / run_id / "worktrees"


def finish_isolation(
    plan: Plan, run_id: str, journal: Journal, orch: Orchestrator
) -> dict[str, list[str]] | None:
    """Commit each agent's worktree on its branch and say what changed (merging stays the
    user's decision: ``phalanx merge RUN_ID``)."""
    if plan.isolation != "worktree":
        return None
    from ..agents import isolation

    root = worktrees_dir(journal, run_id)
    changed: dict[str, list[str]] | None = None
    try:
        changed = isolation.finish(root)
        isolation.cleanup(root)
        message = (
            isolation.render_changes(changed).replace("\n", "; ")
            + f" · merge with: phalanx merge {run_id}"
        )
    except UsageError as exc:
        message = str(exc)
    journal.append(
        run_id, orch.prior.session, Alert(ts=time.time(), kind="isolation", message=message)
    )
    return changed


def run_workspace(plan: Plan, run_dir: Path, override: str | os.PathLike[str] | None) -> Path:
    """The agents' sandbox: the argument, the plan's ``workspace`` (relative to the plan
    file), or a fresh folder beside the run's outputs."""
    if override is not None:
        return Path(override).resolve()
    if plan.workspace:
        base = (
            Path(plan.source).resolve().parent
            if plan.source and Path(plan.source).is_file()
            else Path.cwd()
        )
        return (base / plan.workspace).resolve()
    return (run_dir / "workspace").resolve()


def state_dir_of(journal: Journal) -> Path:
    return journal.path.parent

"""Assembling a run from its plan: each agent's runner (provider, tools, context, workspace),
the agents' workspaces and worktrees, and the end of an isolated run (each agent's branch).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Mapping
from pathlib import Path

from ..agents.context import load_context
from ..agents.mcp import MCP_PREFIX
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
    "agent_tools",
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
        tools, denied = agent_tools(plan, self.tools, a)
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
            tools=tools,
            denied=denied,
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


def agent_tools(
    plan: Plan, tools: Mapping[str, ToolSpec], a: AgentSpec
) -> tuple[dict[str, ToolSpec], frozenset[str]]:
    """An agent's tools from its ``tools`` list, and the run's other tools (refused to it as
    ``tool_not_allowed``). Each entry is a tool name, or ``mcp:SERVER/TOOL`` where TOOL may
    be a glob (``mcp:files/*``; ``mcp:files`` is every tool of server files); an entry
    starting with ``!`` takes the tools it matches away again (a deny list)."""
    agent = a.name or ""
    allowed: dict[str, ToolSpec] = {}
    for entry in a.tools:
        if entry.startswith("!"):
            continue
        if entry.startswith(MCP_PREFIX):
            allowed.update(_mcp_tools(plan, tools, entry, agent))
        else:
            allowed[entry] = agent_tool(plan, tools, entry, agent)
    for entry in a.tools:
        if entry.startswith("!"):
            for name in [n for n, spec in allowed.items() if _matches(entry[1:], n, spec)]:
                del allowed[name]
    return allowed, frozenset(tools) - frozenset(allowed)


def _mcp_pattern(entry: str) -> str:
    return entry if "/" in entry else entry + "/*"


def _matches(pattern: str, name: str, spec: ToolSpec) -> bool:
    if pattern.startswith(MCP_PREFIX):
        return bool(spec.origin) and fnmatch.fnmatchcase(spec.origin, _mcp_pattern(pattern))
    return fnmatch.fnmatchcase(name, pattern)


def _mcp_tools(
    plan: Plan, tools: Mapping[str, ToolSpec], entry: str, agent: str
) -> dict[str, ToolSpec]:
    """The MCP tools ``entry`` names; an exact name (no glob) that matches none is an error
    listing the server's tools."""
    pattern = _mcp_pattern(entry)
    found = {n: s for n, s in tools.items() if s.origin and fnmatch.fnmatchcase(s.origin, pattern)}
    if not found and not any(c in pattern for c in "*?["):
        server = pattern[len(MCP_PREFIX) :].partition("/")[0]
        prefix = f"{MCP_PREFIX}{server}/"
        known = sorted(
            s.origin[len(prefix) :] for s in tools.values() if s.origin.startswith(prefix)
        )
        raise PlanError(
            f"{entry!r} for agent {agent}: server {server} has no such tool "
            f"(its tools: {', '.join(known) or 'none'})",
            file=plan.source,
            field="agents.tools",
        )
    return found


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

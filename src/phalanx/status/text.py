"""The status as text: the three levels (agent lines, team bars, the swarm panel) and the
little formatters they share, all rendered from a :class:`Snapshot`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..agents.spec import ROLES
from ..cost import Usage
from .progress import Progress
from .snapshot import (
    IN_DOUBT_HANDLING,
    STOPPED,
    AgentStatus,
    Snapshot,
    fmt_duration,
    status_text,
)

__all__ = [
    "agent_bar",
    "agent_line",
    "agent_progress",
    "bar",
    "fmt_cost",
    "progress_counts",
    "render_swarm_status",
    "render_text",
    "swarm_lines",
    "team_line",
    "team_progress",
    "team_title",
    "title_line",
]

_ICONS = {
    "research": "🔍",
    "architecture": "📐",
    "implementation": "💻",
    "testing": "🧪",
    "documentation": "📚",
}


def bar(fraction: float, width: int = 10) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def fmt_cost(usage: Usage, simulated: bool) -> str:
    if usage.cost_usd is None:
        return "n/a (simulated)" if simulated else "unknown"
    return f"${usage.cost_usd:.4f}"


def agent_line(a: AgentStatus, now: float) -> str:
    task = a.task_title or "-"
    state = f"waiting: {a.waiting_for}" if a.state == "waiting" else a.state
    if a.state == "running" and a.turn:
        state += f" (turn {a.turn}/{a.max_turns})" if a.max_turns else f" (turn {a.turn})"
    line = f"Agent: {a.name} | Task: {task} | {fmt_duration(max(0.0, now - a.since))} | {state}"
    return line + (f" | node {a.node}" if a.node else "")


def _turn_share(a: AgentStatus) -> float:
    """The current task's share of its turns used, when known (below 1 until it ends)."""
    if a.state in ("running", "waiting") and a.max_turns and a.turn:
        return min(a.turn / a.max_turns, 0.99)
    return 0.0


def agent_progress(a: AgentStatus) -> float:
    """The agent's tasks done (terminal) / its tasks, plus the current task's share of its
    turns when known."""
    if not a.tasks.total:
        return 0.0
    return min(1.0, (a.tasks.done + _turn_share(a)) / a.tasks.total)


def agent_bar(a: AgentStatus, width: int = 10) -> str:
    """An agent's bar from its :class:`Progress` (a failed task shows as ✗, never █)."""
    return a.tasks.bar(width, running_share=_turn_share(a))


def progress_counts(p: Progress, fraction: float) -> str:
    """``100% (4/4)``; with failures or skips, the headline instead: ``4/4 done · 1 failed``."""
    if p.troubled:
        return p.headline()
    return f"{fraction * 100:.0f}% ({p.done}/{p.total})"


def team_progress(agents: Iterable[AgentStatus]) -> Progress:
    """A team's tasks: the sum of its agents' (none dropped)."""
    total = Progress()
    for a in agents:
        total = total + a.tasks
    return total


def team_title(role: str, agents: Sequence[AgentStatus], unheld: Progress | None = None) -> str:
    """``Coder team:``, with its headline and bar when a task of it failed or was skipped
    (``unheld``: its skipped tasks no agent ran)."""
    p = team_progress(agents) + (unheld or Progress())
    head = f"{role.capitalize()} team:"
    return f"{head} {p.headline()} [{p.bar()}]" if p.troubled else head


def team_line(a: AgentStatus) -> str:
    """A level-2 line: the agent, what it does, its bar and counts."""
    what = a.task_title or ("idle" if a.state == "idle" else a.state)
    ctx = f" · context {a.context_tokens:,} tokens" if a.context_tokens else ""
    counts = progress_counts(a.tasks, agent_progress(a))
    return f"- {a.name}: {what} [{agent_bar(a)}] {counts}{ctx}"


def title_line(s: Snapshot) -> str:
    """The first line: run, plan, status, and the headline when a task failed or skipped."""
    head = f" · {s.tasks.headline()}" if s.tasks.troubled else ""
    sim = " · SIMULATED (sim provider)" if s.simulated else ""
    return f"Run {s.run_id} · plan {s.plan} · {status_text(s.status, s.run_id)}{head}{sim}"


def render_text(s: Snapshot, *, max_agents: int = 40) -> str:
    """The three status levels as plain text."""
    out = [title_line(s), "", "Level 1 · agents"]
    for a in s.agents[:max_agents]:
        out.append("  " + agent_line(a, s.now))
    if len(s.agents) > max_agents:
        out.append(f"  … and {len(s.agents) - max_agents} more agents")
    out += ["", "Level 2 · teams"]
    shown = 0
    for role, agents in s.agents_by_role().items():
        out.append(f"  {team_title(role, agents, s.unheld.get(role))}")
        for a in agents:
            if shown >= max_agents:
                break
            shown += 1
            out.append(f"    {team_line(a)}")
    out += ["", "Level 3 · swarm"]
    out += ["  " + line for line in swarm_lines(s)]
    return "\n".join(out)


def render_swarm_status(s: Snapshot) -> str:
    """The strategy's ``render_swarm_status``: level 3 as text (see :func:`swarm_lines`)."""
    return "\n".join(swarm_lines(s))


def _in_doubt_text(s: Snapshot) -> str:
    """``run_command on Ada (task t, call 3): run again; ...``: the in-doubt tool calls."""
    return "; ".join(
        f"{d['tool']} on {d['agent']} (task {d['task']}, call {d['turn']}): "
        + IN_DOUBT_HANDLING.get(d["action"], d["action"])
        for d in s.in_doubt[:5]
    )


def swarm_lines(s: Snapshot) -> list[str]:
    """Level 3: active/capacity per role, task counts, progress, ETA, tokens, cost, alerts."""
    out = []
    for role, agents in s.agents_by_role().items():
        cats = ROLES[role].categories if role in ROLES else frozenset()
        icon = next((_ICONS[c] for c in sorted(cats) if c in _ICONS), "🤖")
        active = sum(1 for a in agents if a.state in ("running", "waiting"))
        out.append(f"{icon} {role.capitalize()}: {active}/{len(agents)} active")
    p = s.tasks
    if p.troubled:  # failures first, every count apart
        out.append(f"Tasks: {p.breakdown()} (of {p.total})")
        done = f"{p.headline()} [{p.bar(20)}]"
    else:
        out.append(
            f"Tasks: {p.succeeded} done · {p.running} running · "
            f"{p.waiting + p.pending} queued · 0 failed · 0 skipped (of {p.total})"
        )
        done = f"{p.fraction * 100:.0f}%"
    eta = (
        status_text(s.status, s.run_id)
        if s.status == STOPPED
        else f"ETA: {fmt_duration(s.eta_seconds)}"
    )
    out.append(
        f"Total progress: {done} · {eta} · "
        f"elapsed {s.elapsed_text()} · tokens {s.usage.total_tokens:,} · "
        f"cost {fmt_cost(s.usage, s.simulated)}"
    )
    if s.call_retries:
        out.append(f"Call retries: {s.call_retries} (model calls sent again, turns kept)")
    if s.in_doubt:
        out.append(f"In doubt: {len(s.in_doubt)} tool call(s) at resume: " + _in_doubt_text(s))
    if s.alerts:
        out.append("Alerts: " + " | ".join(s.alerts))
    return out

"""The status as text: the three levels (agent lines, team bars, the swarm panel) and the
little formatters they share, all rendered from a :class:`Snapshot`.

:func:`layout` lays the levels out for a terminal of a given size: columns aligned, long
titles and reasons cut with ``…`` (names and numbers never), long lines broken at their
``·`` and, when a height is given, the less important lines dropped first so that the swarm
panel (progress, ETA, failures, alerts) always shows: first the agents' rows under their
teams, then older alerts, the agent lines of idle agents (failed and busy ones stay) and
the per-role activity line. :func:`render_text` (``phalanx status``) and the live view
(:mod:`phalanx.status.tui`) both render it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len

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
    "Layout",
    "agent_bar",
    "agent_line",
    "agent_progress",
    "agent_state",
    "awaiting_lines",
    "bar",
    "eta_text",
    "fit",
    "fmt_cost",
    "layout",
    "progress_counts",
    "render_swarm_status",
    "render_text",
    "swarm_lines",
    "team_line",
    "team_progress",
    "team_title",
    "title_line",
    "wrap",
]

_ICONS = {
    "research": "🔍",
    "architecture": "📐",
    "implementation": "💻",
    "testing": "🧪",
    "documentation": "📚",
}
_SEP = " · "
MAX_ALERTS = 5  # the newest alerts the swarm level lists


def bar(fraction: float, width: int = 10) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def fmt_cost(usage: Usage, simulated: bool) -> str:
    if usage.cost_usd is None:
        return "n/a (simulated)" if simulated else "unknown"
    return f"${usage.cost_usd:.4f}"


def fmt_seconds(seconds: float) -> str:
    """An attempt's duration: ``17.7s`` under a minute, else as :func:`fmt_duration`."""
    return f"{seconds:.1f}s" if seconds < 59.95 else fmt_duration(seconds)


# -- fitting text to a width ---------------------------------------------------------------
def fit(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` terminal cells (wide characters count 2), ``…`` where it
    is cut; unchanged when it fits or ``width`` is None."""
    if width is None or cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    out = text
    while out and cell_len(out) > width - 1:
        out = out[:-1]
    return out.rstrip() + "…"


def wrap(text: str, width: int | None, indent: str = "  ") -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at its `` · `` (a broken line
    ends in `` ·``, the next starts with ``indent``); a part longer than a line is cut."""
    if width is None or cell_len(text) <= width:
        return [text]
    parts = text.split(_SEP)
    lines: list[str] = []
    line = parts[0]
    for i, part in enumerate(parts[1:], 2):
        room = width if i == len(parts) else width - 2  # a broken line ends in " ·"
        if cell_len(line + _SEP + part) <= room:
            line += _SEP + part
        else:
            lines.append(line + " ·")
            line = indent + part
    lines.append(line)
    return [fit(x, width) for x in lines]


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_len(text))


# -- level 1: agents -------------------------------------------------------------------------
def _failure_shown(a: AgentStatus) -> bool:
    """The agent's last attempt failed and it has not started another."""
    return a.failure is not None and a.state in ("idle", "paused")


def _word(a: AgentStatus) -> str:
    """The agent's state in one word: ``failed`` while its task that failed for good is its
    last attempt."""
    if a.failure is not None and a.failure.final and a.state == "idle":
        return "failed"
    return a.state


def _state_parts(a: AgentStatus) -> tuple[str, str]:
    """An agent's state, and the reason of its failed attempt when it shows one."""
    if a.state == "waiting":
        return f"waiting: {a.waiting_for}", ""
    if a.state == "running":
        if not a.turn:
            return "running", ""
        return (
            f"running (turn {a.turn}/{a.max_turns})" if a.max_turns else f"running (turn {a.turn})"
        ), ""
    f = a.failure
    if f is None or not _failure_shown(a):
        return a.state, ""
    head = "paused · " if a.state == "paused" else ""
    head += f"{'failed' if f.final else 'attempt failed'} after {fmt_seconds(f.seconds)}"
    return head, f.reason()


def agent_state(a: AgentStatus, limit: int | None = None) -> str:
    """What an agent does: ``running (turn 2/4)``, ``waiting: rate limit (KEY)``, or after
    a failed attempt ``failed after 17.7s · server_error: 503 upstream overloaded``
    (``attempt failed ...`` when the task was queued again; ``paused · ...`` while its
    breaker is open): the error class and one-line error, cut to fit ``limit``."""
    head, reason = _state_parts(a)
    return fit(f"{head}{_SEP}{reason}" if reason else head, limit)


def _task_of(a: AgentStatus) -> str:
    if a.task_title:
        return a.task_title
    if a.failure is not None and _failure_shown(a):
        return a.failure.task_title
    return "-"


def _agent_head(a: AgentStatus, now: float, name_w: int, task_w: int, time_w: int) -> str:
    task = _task_of(a)
    if task_w:
        task = _pad(fit(task, task_w), task_w)
    took = fmt_duration(max(0.0, now - a.since)).rjust(time_w)
    return f"Agent: {_pad(a.name, name_w)} | Task: {task} | {took} | "


def agent_line(
    a: AgentStatus,
    now: float,
    *,
    width: int | None = None,
    name_width: int = 0,
    task_width: int = 0,
    time_width: int = 0,
) -> str:
    """``Agent: NAME | Task: TITLE | 12s | STATE`` (the strategy's level 1); the time is how
    long the agent has been in its state. With the widths, the columns are padded to line
    up and the title cut to ``task_width``; with ``width``, the state (its failure reason)
    is cut to fit."""
    head = _agent_head(a, now, name_width, task_width, time_width)
    node = f" | node {a.node}" if a.node else ""
    room = None if width is None else width - cell_len(head) - len(node)
    return fit(head + agent_state(a, room) + node, width)


def _agent_lines(
    a: AgentStatus, now: float, width: int | None, widths: tuple[int, int, int], wrap: bool
) -> list[str]:
    """An agent's line; with ``wrap``, a failure reason that would be cut goes whole (to
    the width) on a line of its own under it."""
    line = agent_line(
        a, now, width=width, name_width=widths[0], task_width=widths[1], time_width=widths[2]
    )
    head, reason = _state_parts(a)
    start = _agent_head(a, now, *widths)
    whole = cell_len(start + agent_state(a)) + (len(f" | node {a.node}") if a.node else 0)
    if not (wrap and reason and width is not None and whole > width):
        return [line]
    return [fit(f"{start}{head} ·", width), fit("    " + reason, width)]


def _priority(a: AgentStatus) -> int:
    """Which agents keep their line when not all fit: a failure, then busy, then the rest."""
    if a.failure is not None and a.failure.final and _failure_shown(a):
        return 0
    if a.state in ("running", "waiting"):
        return 1
    if _failure_shown(a) or a.state == "paused":
        return 2
    return 3


def _pick(agents: Sequence[AgentStatus], n: int) -> list[AgentStatus]:
    """``n`` of ``agents`` by :func:`_priority`, in their order."""
    if n >= len(agents):
        return list(agents)
    ranked = sorted(range(len(agents)), key=lambda i: (_priority(agents[i]), i))[: max(0, n)]
    return [agents[i] for i in sorted(ranked)]


def _widths(agents: Sequence[AgentStatus], now: float, width: int | None) -> tuple[int, int, int]:
    """Level 1's columns: the names', the titles' and the times'. The titles give way
    first: to 12 cells when then every state and reason fits whole, else so that the
    states keep 24 cells (a longer reason continues on a line of its own)."""
    name_w = max(cell_len(a.name) for a in agents)
    time_w = max(len(fmt_duration(max(0.0, now - a.since))) for a in agents)
    task_w = max(cell_len(_task_of(a)) for a in agents)
    if width is not None:
        room = width - len("Agent:  | Task:  |  | ") - name_w - time_w
        whole = room - max(cell_len(agent_state(a)) for a in agents)
        if whole >= min(task_w, 12):
            return name_w, min(task_w, whole), time_w
        heads = max(cell_len(_state_parts(a)[0]) for a in agents)
        task_w = max(min(task_w, 12), min(task_w, room - max(heads, 24)))
    return name_w, task_w, time_w


def _blocks(
    agents: Sequence[AgentStatus],
    now: float,
    width: int | None,
    wrap: Sequence[bool],
    widths: tuple[int, int, int] | None = None,
) -> list[list[str]]:
    widths = widths or (_widths(agents, now, width) if agents else (0, 0, 0))
    return [_agent_lines(a, now, width, widths, w) for a, w in zip(agents, wrap, strict=True)]


def agent_lines(
    agents: Sequence[AgentStatus],
    now: float,
    width: int | None,
    hidden: int = 0,
    *,
    wrap_reasons: bool = True,
) -> list[str]:
    """Level 1: one aligned line per agent (``hidden``: agents left out, said last); a
    failure reason too long for its line continues on the next with ``wrap_reasons``."""
    if not agents:
        return [f"… {hidden} agents" if hidden else "no agents"]
    out = [x for b in _blocks(agents, now, width, [wrap_reasons] * len(agents)) for x in b]
    return out + ([f"… and {hidden} more agents"] if hidden else [])


def _level1(s: Snapshot, agents: Sequence[AgentStatus], width: int | None, room: int) -> list[str]:
    """Level 1 in ``room`` lines: when not all fit, the agents by :func:`_priority` (a
    failure and its reason first), the rest counted on the last line."""
    hidden = len(s.agents) - len(agents)
    if not agents:
        return agent_lines(agents, s.now, width, hidden)
    widths = _widths(agents, s.now, width)  # every agent's: a block's lines are known here
    blocks = _blocks(agents, s.now, width, [True] * len(agents), widths)
    if sum(len(b) for b in blocks) + (1 if hidden else 0) <= room:
        return [x for b in blocks for x in b] + ([f"… and {hidden} more agents"] if hidden else [])
    budget, wrap = room - 1, {}
    for i in sorted(range(len(agents)), key=lambda i: (_priority(agents[i]), i)):
        if budget <= 0:
            break
        wrap[i] = len(blocks[i]) <= budget  # else its line alone, the reason cut
        budget -= len(blocks[i]) if wrap[i] else 1
    shown = [agents[i] for i in sorted(wrap)]
    flags = [wrap[i] for i in sorted(wrap)]
    lines = [x for b in _blocks(shown, s.now, width, flags, widths) for x in b]
    return lines + [f"… and {len(s.agents) - len(shown)} more agents"]


# -- level 2: teams --------------------------------------------------------------------------
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


def _doing(a: AgentStatus) -> str:
    return a.task_title or _word(a)


def _agent_counts(a: AgentStatus) -> str:
    ctx = f" · context {a.context_tokens:,} tokens" if a.context_tokens else ""
    return progress_counts(a.tasks, agent_progress(a)) + ctx


def team_line(a: AgentStatus) -> str:
    """A level-2 line: the agent, what it does, its bar and counts."""
    return f"- {a.name}: {_doing(a)} [{agent_bar(a)}] {_agent_counts(a)}"


def _team_rows(
    s: Snapshot, shown: Sequence[AgentStatus] | None
) -> list[tuple[str, str, str, bool]]:
    """Level 2 as rows (label, bar, counts, is-a-team): each team, then its agents that are
    in ``shown`` (all when None). A team shows its bar and headline when a task of it
    failed or was skipped (as :func:`team_title`), else only what its agents did and do:
    they hold only some of its tasks (not the queued ones), so a bar of theirs alone would
    read as the team's progress."""
    rows = []
    keep = None if shown is None else {id(a) for a in shown}
    for role, agents in s.agents_by_role().items():
        p = team_progress(agents) + s.unheld.get(role, Progress())
        label = f"{role.capitalize()} team:"
        if p.troubled:
            rows.append((label, p.bar(), p.headline(), True))
        else:
            rows.append((label, "", f"{p.succeeded} succeeded · {p.running} running", True))
        for a in agents:
            if keep is None or id(a) in keep:
                rows.append((f"  - {a.name}: {_doing(a)}", agent_bar(a), _agent_counts(a), False))
    return rows


def team_lines(s: Snapshot, shown: Sequence[AgentStatus] | None, width: int | None) -> list[str]:
    """Level 2: the team rows and agent rows, their bars in one column."""
    rows = _team_rows(s, shown)
    label_w = max((cell_len(r[0]) for r in rows), default=0)
    if width is not None:  # the bar and the counts keep their room; labels give way
        counts_w = max((cell_len(r[2]) for r in rows), default=0)
        label_w = min(label_w, max(16, width - 14 - min(counts_w, 30)))
    out = []
    for label, cells, counts, is_team in rows:
        name = fit(label, label_w) if is_team else _fit_label(label, label_w)
        bar_cell = f"[{cells}]" if cells else " " * 12  # a team without a bar: its counts
        out.append(fit(f"{_pad(name, label_w)} {bar_cell} {counts}".rstrip(), width))
    if shown is not None and len(shown) < len(s.agents):
        out.append(f"… {len(s.agents) - len(shown)} agents' rows not shown (see level 1)")
    return out


def _fit_label(label: str, width: int) -> str:
    """An agent row's label cut in what it does, never in its name."""
    name, _, doing = label.partition(": ")
    room = width - cell_len(name) - 2
    return f"{name}: {fit(doing, room)}" if room >= 4 else fit(label, width)


# -- level 3: the swarm ------------------------------------------------------------------------
def title_line(s: Snapshot) -> str:
    """The first line: run, plan, status, and the headline when a task failed or skipped."""
    head = f" · {s.tasks.headline()}" if s.tasks.troubled or s.tasks.awaiting else ""
    sim = " · SIMULATED (sim provider)" if s.simulated else ""
    return f"Run {s.run_id} · plan {s.plan} · {status_text(s.status, s.run_id)}{head}{sim}"


def eta_text(s: Snapshot) -> str:
    """``ETA: 12s``; ``ETA: >12s (1 running over estimate)`` while a task runs longer than
    every finished one (a lower bound), ``ETA: unknown`` before any evidence; a stopped
    run's status instead; empty for a finished run (it has no ETA)."""
    if s.status == STOPPED:
        return status_text(s.status, s.run_id)
    if s.finished is not None:
        return ""
    if s.eta_waits:
        return _eta_with_approvals(s)
    if s.growing:  # the plan may still add tasks: the ETA covers the known ones
        return _eta_plain(s) + " (for the known tasks; still growing)"
    return _eta_plain(s)


def _eta_plain(s: Snapshot) -> str:
    if s.eta_over:
        over = f"({s.eta_over} running over estimate)"
        if s.eta_seconds is None:
            return f"ETA: unknown {over}"
        return f"ETA: >{fmt_duration(s.eta_seconds)} {over}"
    return f"ETA: {fmt_duration(s.eta_seconds)}"


def _eta_with_approvals(s: Snapshot) -> str:
    """``ETA: 12s + waits on a person (1 approval)``: the ETA of the work no approval holds;
    ``ETA: waits on a person (1 approval)`` when nothing else is left."""
    person = f"waits on a person ({len(s.awaiting)} approval{'s' if len(s.awaiting) != 1 else ''})"
    rest = s.tasks.total - s.tasks.done - s.eta_waits
    if rest <= 0:
        return f"ETA: {person}"
    if s.eta_seconds is None:
        return f"ETA: unknown + {person}"
    lower = ">" if s.eta_over else ""
    return f"ETA: {lower}{fmt_duration(s.eta_seconds)} + {person}"


def awaiting_lines(s: Snapshot, limit: int = 5) -> list[str]:
    """``awaiting approval: deploy (since 12s) — phalanx approve RUN deploy``, one per task
    a person's decision holds (oldest first; the rest counted)."""
    out = []
    for w in s.awaiting[:limit]:
        since = fmt_duration(max(0.0, s.now - w["since"]))
        why = "" if w["by"] == "plan" else f", {w['reason']}"
        left = ""
        if w.get("deadline") is not None:
            left = f", {w['on_timeout']} in {fmt_duration(max(0.0, w['deadline'] - s.now))}"
        out.append(f"awaiting approval: {w['task']} (since {since}{why}{left}) — {w['command']}")
    if len(s.awaiting) > limit:
        out.append(f"… {len(s.awaiting) - limit} more awaiting approval")
    return out


def _role_parts(s: Snapshot) -> list[str]:
    out = []
    for role, agents in s.agents_by_role().items():
        cats = ROLES[role].categories if role in ROLES else frozenset()
        icon = next((_ICONS[c] for c in sorted(cats) if c in _ICONS), "🤖")
        active = sum(1 for a in agents if a.state in ("running", "waiting"))
        out.append(f"{icon} {role.capitalize()}: {active}/{len(agents)} active")
    return out


def _task_lines(s: Snapshot) -> tuple[str, str]:
    p = s.tasks
    growing = " (growing)" if s.growing else ""
    if p.troubled:  # failures first, every count apart
        tasks = f"Tasks: {p.breakdown()} (of {p.total}{growing})"
        done = f"{p.headline()} [{p.bar(20)}]"
    else:
        person = f" · {p.awaiting} awaiting approval" if p.awaiting else ""
        tasks = (
            f"Tasks: {p.succeeded} done · {p.running} running · "
            f"{p.waiting + p.pending - p.awaiting} queued{person} · 0 failed · 0 skipped"
            f" (of {p.total}{growing})"
        )
        done = (
            f"{p.fraction * 100:.0f}% ({p.done}/{p.total} done{growing})"
            if growing
            else f"{p.fraction * 100:.0f}%"
        )
    eta = eta_text(s)
    total = (
        f"Total progress: {done} · {eta + ' · ' if eta else ''}"
        f"elapsed {s.elapsed_text()} · tokens {s.usage.total_tokens:,} · "
        f"cost {fmt_cost(s.usage, s.simulated)}"
    )
    return tasks, total


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


def swarm_lines(
    s: Snapshot, width: int | None = None, *, max_alerts: int = MAX_ALERTS, roles: bool = True
) -> list[str]:
    """Level 3: active/capacity per role, task counts, progress, ETA, tokens, cost, alerts.

    Without ``width``: one line each (a line per role, the alerts on one line). With it,
    as a terminal shows it: the roles on one line, long lines broken at their ``·``, the
    newest ``max_alerts`` alerts a line each (cut to fit), ``roles`` False leaves the role
    line out."""
    tasks, total = _task_lines(s)
    retries = (
        f"Call retries: {s.call_retries} (model calls sent again, turns kept)"
        if s.call_retries
        else ""
    )
    doubt = (
        f"In doubt: {len(s.in_doubt)} tool call(s) at resume: " + _in_doubt_text(s)
        if s.in_doubt
        else ""
    )
    extra = [*awaiting_lines(s), *(line for line in (retries, doubt) if line)]
    if width is None:
        out = [*_role_parts(s), tasks, total, *extra]
        return out + (["Alerts: " + " | ".join(s.alerts)] if s.alerts else [])
    out = wrap(_SEP.join(_role_parts(s)), width) if roles and s.agents else []
    for line in (tasks, total, *extra):
        out += wrap(line, width)
    return out + _alert_lines(s.alerts, width, max_alerts)


def _alert_lines(alerts: Sequence[str], width: int, n: int) -> list[str]:
    shown = list(alerts[-n:]) if n > 0 else []
    if not shown:
        return []
    earlier = len(alerts) - len(shown)
    head = f"Alerts (+{earlier} earlier): " if earlier else "Alerts: "
    lines = [fit(head + shown[0], width)]
    return lines + [fit(" " * len("Alerts: ") + a, width) for a in shown[1:]]


# -- the three levels for a terminal ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Layout:
    """The three levels as lines for a terminal: the title (broken to fit) and each level's
    lines, every line within its width."""

    title: list[str]
    agents: list[str]
    teams: list[str]
    swarm: list[str]

    @property
    def height(self) -> int:
        return len(self.title) + len(self.agents) + len(self.teams) + len(self.swarm)


def layout(
    s: Snapshot,
    *,
    width: int | None = None,
    title_width: int | None = None,
    height: int | None = None,
    chrome: int = 0,
    max_agents: int = 40,
) -> Layout:
    """The levels of ``s`` for a terminal: each level's lines at most ``width`` cells, the
    title at most ``title_width``; with ``height``, at most ``height`` lines together with
    ``chrome`` (the renderer's own: headings, borders, blank lines). What gives way first:
    the agents' rows under their teams, older alerts, the lines of idle agents, the role
    line; the swarm's progress, ETA, failures and newest alert stay."""
    title = wrap(title_line(s), title_width)
    agents = s.agents[:max_agents]
    if height is None:
        return Layout(
            title,
            agent_lines(agents, s.now, width, hidden=len(s.agents) - len(agents)),
            team_lines(s, agents if len(agents) < len(s.agents) else None, width),
            swarm_lines(s, width if width is not None else 10**6),
        )
    room = height - chrome - len(title)
    teams = len(s.agents_by_role())
    hidden = len(s.agents) - len(agents)
    want = min(len(agent_lines(agents, s.now, width, hidden)), 6)  # level 1's lines, or 6
    for alerts, roles in ((MAX_ALERTS, True), (2, True), (1, True), (1, False)):
        swarm = swarm_lines(s, width or 10**6, max_alerts=alerts, roles=roles)
        free = room - len(swarm) - teams
        if free >= want:
            break
    level1 = _level1(s, agents, width, free)
    left = free - len(level1)
    n2 = len(s.agents) if left >= len(s.agents) else max(0, left - 1)
    level2 = team_lines(s, _pick(agents, n2) if n2 < len(s.agents) else None, width)
    over = len(title) + len(level1) + len(level2) + len(swarm) + chrome - height
    if over > 0:  # a terminal too small even for that: the team rows give way
        level2 = level2[: max(0, len(level2) - over)]
    return Layout(title, level1, level2, swarm)


def render_text(
    s: Snapshot, *, max_agents: int = 40, width: int | None = None, height: int | None = None
) -> str:
    """The three status levels as plain text; within ``width`` x ``height`` when given (a
    terminal's size: see :func:`layout`)."""
    inner = None if width is None else width - 2  # the levels' lines are indented by 2
    lay = layout(s, width=inner, title_width=width, height=height, chrome=6, max_agents=max_agents)
    if height is not None and lay.height + 6 > height:  # too small for all: the swarm only
        return "\n".join([*lay.title, "Level 3 · swarm", *("  " + x for x in lay.swarm)])
    out = [*lay.title, "", "Level 1 · agents"]
    out += ["  " + line for line in lay.agents]
    out += ["", "Level 2 · teams"]
    out += ["  " + line for line in lay.teams]
    out += ["", "Level 3 · swarm"]
    out += ["  " + line for line in lay.swarm]
    return "\n".join(out)

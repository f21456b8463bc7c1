"""What the dashboard shows, as data: a run folded from the journal and its JSON and text.

:class:`RunView` feeds a run's events to the status fold and keeps the attempt spans of the
timeline (:class:`Span`). :func:`snapshot_json` is the page's whole state (the three status
levels' strings, numbers, spans); :func:`agent_detail` the drill-down of one agent (prompt and
last output redacted, then cut by :func:`excerpt`); :func:`metrics_text` the Prometheus text
of ``/metrics``. Nothing here knows about HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...events import AttemptFinished, AttemptStarted, Event, RunFinished, RunStarted
from ...journal import Journal, RunRecord
from ...redaction import redact
from ..liveness import process_gone
from ..metrics import metrics_from_journal
from ..prometheus import prometheus_text
from ..snapshot import AgentStatus, Snapshot, StatusTracker, as_stopped
from ..text import (
    agent_line,
    agent_progress,
    fmt_cost,
    swarm_lines,
    team_line,
    team_progress,
    team_title,
    title_line,
)

__all__ = [
    "EXCERPT",
    "MAX_AGENT_LINES",
    "RunView",
    "Span",
    "agent_detail",
    "agent_json",
    "excerpt",
    "full_view",
    "metrics_text",
    "snapshot_json",
    "team_line",
]

EXCERPT = 800  # characters of a prompt or output shown in the drill-down
MAX_AGENT_LINES = 500


# -- following a run: the status fold plus attempt spans for the timeline ---------------------
@dataclass(slots=True)
class Span:
    """One attempt on the timeline."""

    id: int
    agent: str
    task: str
    no: int
    start: float
    end: float | None = None
    state: str = "running"  # running | succeeded | failed | cancelled | stale | lost

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "task": self.task,
            "no": self.no,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "state": self.state,
        }


def _outcome(e: AttemptFinished) -> str:
    if e.error_class == "cancelled":
        return "cancelled"
    if e.stale:
        return "stale"
    return "succeeded" if e.ok else "failed"


@dataclass
class RunView:
    """A run folded from its journal events: the status tracker and the attempt spans."""

    run_id: str
    tracker: StatusTracker = field(default_factory=StatusTracker)
    spans: dict[int, Span] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    seq: int = 0
    started: RunStarted | None = None
    gone: float | None = None  # its process is gone: its last heartbeat (0.0: unknown)

    def feed(self, journal: Journal) -> bool:
        """Read the events after the last one seen, and ask whether the run's process is
        still there; True when there were new events or that answer changed."""
        before, was = self.seq, self.gone is not None
        for seq, event in journal.read_events(self.run_id, after=self.seq):
            self.emit(event)
            self.seq = seq
        finished = self.tracker.finished is not None
        self.gone = None if finished else process_gone(journal, self.run_id)
        return self.seq != before or was != (self.gone is not None)

    def emit(self, e: Event) -> None:
        self.tracker.emit(e)
        if isinstance(e, AttemptStarted):
            self._put(
                Span(id=e.attempt_id, agent=e.agent, task=e.task_id, no=e.attempt_no, start=e.ts)
            )
        elif isinstance(e, AttemptFinished):
            done = self.spans.get(e.attempt_id)
            if done is not None:
                done.end, done.state = e.ts, _outcome(e)
                self.dirty.add(done.id)
        elif isinstance(e, RunStarted | RunFinished):
            if isinstance(e, RunStarted):
                self.started = e
            self._close_open(e.ts)  # attempts cut short by a crash or the end

    def _put(self, span: Span) -> None:
        self.spans[span.id] = span
        self.dirty.add(span.id)

    def _close_open(self, ts: float) -> None:
        for span in self.spans.values():
            if span.end is None:
                span.end, span.state = max(ts, span.start), "lost"
                self.dirty.add(span.id)

    def take_dirty(self) -> list[Span]:
        out = [self.spans[i] for i in sorted(self.dirty)]
        self.dirty.clear()
        return out

    def snapshot(self) -> Snapshot:
        """The fold now; a run whose process is gone as stopped (liveness is an input)."""
        snap = self.tracker.snapshot(now=time.time())
        return snap if self.gone is None else as_stopped(snap, self.gone or None)


def full_view(journal: Journal, run_id: str) -> RunView:
    """The run folded from all its events so far."""
    view = RunView(run_id)
    view.feed(journal)
    return view


# -- JSON ------------------------------------------------------------------------------------


def agent_json(a: AgentStatus, now: float) -> dict[str, Any]:
    """One agent as JSON: its level-1 line and its numbers."""
    return {
        "name": a.name,
        "role": a.role,
        "provider": a.provider,
        "state": a.state,
        "task_id": a.task_id,
        "task_title": a.task_title,
        "line": agent_line(a, now),
        "done": a.done,
        "assigned": a.assigned,
        "failures": a.failures,
        "progress": agent_progress(a),
        "tasks": a.tasks.to_dict(),
        "busy_seconds": a.busy,
        "usage": a.usage.to_dict(),
        "context_tokens": a.context_tokens,
    }


def _teams_json(s: Snapshot) -> list[dict[str, Any]]:
    teams = []
    for role, agents in s.agents_by_role().items():
        unheld = s.unheld.get(role)
        p = team_progress(agents) + unheld if unheld else team_progress(agents)
        teams.append(
            {
                "role": role,
                "title": team_title(role, agents, unheld),
                "progress": p.fraction,  # done (terminal) over its tasks
                "tasks": p.to_dict(),  # the counts and the bar's segments
                "lines": [team_line(a) for a in agents[:MAX_AGENT_LINES]],
            }
        )
    return teams


def snapshot_json(
    s: Snapshot, spans: Sequence[Span] = (), *, reset: bool = False
) -> dict[str, Any]:
    """The snapshot as JSON for the page: numbers, the three levels' strings, and the
    attempt spans (all of them with ``reset``, else those changed since the last send)."""
    return {
        **s.to_dict(),
        "title": title_line(s),
        "cost": fmt_cost(s.usage, s.simulated),
        "agents": [agent_json(a, s.now) for a in s.agents[:MAX_AGENT_LINES]],
        "more_agents": max(0, len(s.agents) - MAX_AGENT_LINES),
        "teams": _teams_json(s),
        "swarm": swarm_lines(s),
        "spans": [sp.to_json() for sp in spans],
        "reset": reset,
    }


# -- the drill-down: one agent's prompt, last output and attempts -------------------------------
def excerpt(text: str | None, limit: int = EXCERPT) -> str:
    """Redacted first, then cut: a secret is never half shown."""
    clean = redact(text or "")
    return clean if len(clean) <= limit else clean[:limit] + " …"


def _task_prompt(rec: RunRecord, task_id: str) -> str:
    for t in rec.plan.get("tasks", ()):
        if isinstance(t, dict) and t.get("id") == task_id:
            return str(t.get("prompt") or "")
    return ""


def agent_detail(journal: Journal, rec: RunRecord, name: str) -> dict[str, Any] | None:
    """The drill-down JSON of agent ``name`` in run ``rec``; None when it has no such agent."""
    view = full_view(journal, rec.run_id)
    snap = view.snapshot()
    agent = next((a for a in snap.agents if a.name == name), None)
    if agent is None:
        return None
    spans = [s for s in view.spans.values() if s.agent == name]
    infos = view.started.agents if view.started else ()
    info = next((a for a in infos if a.name == name), None)
    out = agent_json(agent, snap.now)
    out["run_id"], out["now"] = rec.run_id, snap.now
    out["style"] = info.style if info else ""
    out["skills"] = list(info.skills) if info else []
    out["prompt"] = _prompt_json(view, rec, agent, spans)
    out["last_output"] = _last_output(journal, rec.run_id, spans)
    out["attempts"] = [s.to_json() for s in spans[-10:]]
    return out


def _prompt_json(
    view: RunView, rec: RunRecord, agent: AgentStatus, spans: list[Span]
) -> dict[str, Any] | None:
    task_id = agent.task_id or (spans[-1].task if spans else None)
    if task_id is None:
        return None
    titles = {t.id: t.title for t in view.started.tasks} if view.started else {}
    return {
        "task_id": task_id,
        "title": excerpt(titles.get(task_id, task_id), 200),
        "current": agent.task_id is not None,
        "excerpt": excerpt(_task_prompt(rec, task_id)),
    }


def _last_output(journal: Journal, run_id: str, spans: list[Span]) -> dict[str, Any] | None:
    done = [s for s in spans if s.state == "succeeded"]
    if not done:
        return None
    row = journal.results(run_id).get(done[-1].task)
    if row is None:
        return None
    return {"task_id": row.task_id, "excerpt": excerpt(row.output)}


# -- /metrics ----------------------------------------------------------------------------------
def metrics_text(journal: Journal, run_id: str) -> str:
    """The run's Prometheus text (the one writer: :mod:`phalanx.status.prometheus`)."""
    return prometheus_text(metrics_from_journal(journal, run_id), run_id)

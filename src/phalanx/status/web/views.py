"""What the dashboard shows, as data: a run folded from the journal and its JSON and text.

:class:`RunView` feeds a run's events to the status fold and keeps what the page shows beside
it: the attempt spans of the timeline (:class:`Span`) and the tasks that failed or were
skipped, with why (:class:`Problem`: the journal's error class and its one-line error,
redacted where it arose). :func:`snapshot_json` is the page's whole state as numbers and
plain fields (the progress model's counts and segments per run, team and agent; each failure's
reason); the page draws its own HTML bars and tables from them. The ``phalanx status`` text
lines (``swarm``, an agent's ``line``, a team's ``title`` and ``lines``) ride along for API
clients; the page never draws them. :func:`agent_detail` is the drill-down of one agent
(prompt and last output redacted, then cut by :func:`excerpt`); :func:`metrics_text` the
Prometheus text of ``/metrics``. Nothing here knows about HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._util import one_line
from ...events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)
from ...journal import Journal, RunRecord
from ...redaction import redact
from ..liveness import process_gone
from ..progress import failure_reason
from ..prometheus import PrometheusExporter
from ..snapshot import (
    STOPPED,
    AgentStatus,
    Snapshot,
    StatusTracker,
    as_stopped,
    fmt_duration,
    status_text,
)
from ..text import (
    agent_line,
    agent_progress,
    eta_text,
    fmt_cost,
    swarm_lines,
    team_line,
    team_progress,
    team_title,
)

__all__ = [
    "EXCERPT",
    "MAX_AGENT_LINES",
    "MAX_PROBLEMS",
    "REASON_CHARS",
    "Problem",
    "RunView",
    "Span",
    "agent_detail",
    "agent_json",
    "excerpt",
    "full_view",
    "metrics_text",
    "page_title",
    "snapshot_json",
    "team_line",
]

EXCERPT = 800  # characters of a prompt or output shown in the drill-down
MAX_AGENT_LINES = 500
MAX_PROBLEMS = 200  # failed and skipped tasks listed on the page (the counts keep them all)
AGENT_FAILURES = 3  # failed tasks named per agent
REASON_CHARS = 200  # a failure's reason: one line of at most this many characters


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
    reason: str = ""  # a failed attempt's error class and one-line error

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "task": self.task,
            "no": self.no,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "state": self.state,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Problem:
    """A task that failed or was skipped, or an agent's last failed attempt, and why. The
    error text is the journal's: redacted where the error arose, shown on one line."""

    task: str
    state: str  # failed | skipped | attempt (a failed attempt, its task maybe retried)
    agent: str | None
    error_class: str
    error: str
    ts: float
    attempts: int = 0
    upstream: str = ""  # a skipped task: the failed task it depended on

    @property
    def reason(self) -> str:
        return failure_reason(self.error_class, self.error, REASON_CHARS)

    def to_json(self, title: str = "") -> dict[str, Any]:
        return {
            "task": self.task,
            "title": excerpt(title or self.task, 200),
            "state": self.state,
            "agent": self.agent,
            "error_class": self.error_class,
            "error": one_line(self.error, REASON_CHARS),
            "reason": self.reason,
            "attempts": self.attempts,
            "upstream": self.upstream,
        }


def _class(value: object) -> str:
    return str(getattr(value, "value", value) or "")


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
    problems: dict[str, Problem] = field(default_factory=dict)  # by task: failed or skipped
    agent_errors: dict[str, Problem] = field(default_factory=dict)  # an agent's last failure
    last_agent: dict[str, str] = field(default_factory=dict)  # a task's last attempt's agent

    def feed(self, journal: Journal) -> bool:
        """Read the events after the last one seen, and ask whether the run's process is
        still there; True when there were new events or that answer changed."""
        before, was = self.seq, self.gone is not None
        for seq, event in journal.read_events(self.run_id, after=self.seq):
            self.emit(event)
            self.seq = seq
        if not self.seq:  # no event yet: what the run's row says
            self.tracker.seed(journal.get_run(self.run_id))
        finished = self.tracker.finished is not None
        self.gone = None if finished else process_gone(journal, self.run_id)
        return self.seq != before or was != (self.gone is not None)

    def emit(self, e: Event) -> None:
        self.tracker.emit(e)
        step = _STEPS.get(type(e))
        if step is not None:
            step(self, e)

    def _attempt_started(self, e: AttemptStarted) -> None:
        self._put(Span(id=e.attempt_id, agent=e.agent, task=e.task_id, no=e.attempt_no, start=e.ts))
        self.last_agent[e.task_id] = e.agent
        self.problems.pop(e.task_id, None)  # run again (a resume): no longer a failure

    def _attempt_finished(self, e: AttemptFinished) -> None:
        outcome = _outcome(e)
        failed = outcome == "failed"
        reason = failure_reason(e.error_class, e.error, REASON_CHARS) if failed else ""
        done = self.spans.get(e.attempt_id)
        if done is not None:
            done.end, done.state, done.reason = e.ts, outcome, reason
            self.dirty.add(done.id)
        if failed:
            self.agent_errors[e.agent] = Problem(
                task=e.task_id,
                state="attempt",
                agent=e.agent,
                error_class=_class(e.error_class),
                error=redact(e.error or ""),  # redacted where it arose; again, for the page
                ts=e.ts,
            )

    def _task_failed(self, e: TaskFailed) -> None:
        self.problems[e.task_id] = Problem(
            task=e.task_id,
            state="failed",
            agent=self.last_agent.get(e.task_id),
            error_class=_class(e.error_class),
            error=redact(e.error),
            ts=e.ts,
            attempts=e.attempts,
        )

    def _task_skipped(self, e: TaskSkipped) -> None:
        self.problems[e.task_id] = Problem(
            task=e.task_id,
            state="skipped",
            agent=None,
            error_class="",
            error=redact(e.reason),
            ts=e.ts,
            upstream=e.upstream,
        )

    def _task_succeeded(self, e: TaskSucceeded) -> None:
        self.problems.pop(e.task_id, None)

    def _run_edge(self, e: RunStarted | RunFinished) -> None:
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

    def titles(self) -> dict[str, str]:
        return {t.id: t.title for t in self.started.tasks} if self.started else {}

    def page_json(self, spans: Sequence[Span], *, reset: bool = False) -> dict[str, Any]:
        """The page's state now: :func:`snapshot_json` with this run's failures."""
        return snapshot_json(
            self.snapshot(),
            spans,
            reset=reset,
            problems=list(self.problems.values()),
            agent_errors=self.agent_errors,
            titles=self.titles(),
        )


# what each event adds to the view beyond the status fold
_STEPS: dict[type[Event], Callable[[RunView, Any], None]] = {
    AttemptStarted: RunView._attempt_started,
    AttemptFinished: RunView._attempt_finished,
    TaskFailed: RunView._task_failed,
    TaskSkipped: RunView._task_skipped,
    TaskSucceeded: RunView._task_succeeded,
    RunStarted: RunView._run_edge,
    RunFinished: RunView._run_edge,
}


def full_view(journal: Journal, run_id: str) -> RunView:
    """The run folded from all its events so far."""
    view = RunView(run_id)
    view.feed(journal)
    return view


# -- JSON ------------------------------------------------------------------------------------
def page_title(s: Snapshot) -> str:
    """``Run ID · plan P · STATUS`` (a stopped run's with its resume hint), the headline when
    a task failed or was skipped, and whether it is simulated: plain text."""
    head = f" · {s.tasks.headline()}" if s.tasks.troubled or s.tasks.awaiting else ""
    sim = " · SIMULATED (sim provider)" if s.simulated else ""
    return f"Run {s.run_id} · plan {s.plan} · {status_text(s.status, s.run_id)}{head}{sim}"


def agent_json(
    a: AgentStatus,
    now: float,
    failed: Sequence[Problem] = (),
    last_error: Problem | None = None,
) -> dict[str, Any]:
    """One agent as JSON: its numbers, its tasks' progress, and its failures with reasons
    (``failed``: the tasks that failed on its attempt; ``last_error``: its last failed
    attempt). ``line`` is its ``phalanx status`` line, for API clients."""
    return {
        "name": a.name,
        "role": a.role,
        "provider": a.provider,
        "state": a.state,
        "task_id": a.task_id,
        "task_title": a.task_title,
        "seconds": max(0.0, now - a.since),
        "turn": a.turn,
        "max_turns": a.max_turns,
        "waiting_for": a.waiting_for if a.state == "waiting" else "",
        "node": a.node,
        "line": agent_line(a, now),
        "done": a.done,
        "assigned": a.assigned,
        "failures": a.failures,
        "progress": agent_progress(a),
        "tasks": a.tasks.to_dict(),
        "busy_seconds": a.busy,
        "usage": a.usage.to_dict(),
        "context_tokens": a.context_tokens,
        "failed_tasks": [{"task": p.task, "reason": p.reason} for p in failed[-AGENT_FAILURES:]],
        "last_error": None if last_error is None else last_error.to_json(),
    }


def _teams_json(s: Snapshot) -> list[dict[str, Any]]:
    teams = []
    for role, agents in s.agents_by_role().items():
        unheld = s.unheld.get(role)
        p = team_progress(agents) + unheld if unheld else team_progress(agents)
        teams.append(
            {
                "role": role,
                "label": f"{role.capitalize()} team",
                "size": len(agents),
                "active": sum(1 for a in agents if a.state in ("running", "waiting")),
                "progress": p.fraction,  # done (terminal) over its tasks
                "tasks": p.to_dict(),  # the counts and the bar's segments
                "title": team_title(role, agents, unheld),
                "lines": [team_line(a) for a in agents[:MAX_AGENT_LINES]],
            }
        )
    return teams


def _failed_by_agent(problems: Sequence[Problem]) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    for p in sorted(problems, key=lambda p: p.ts):
        if p.state == "failed" and p.agent:
            out.setdefault(p.agent, []).append(p)
    return out


def _problems_json(problems: Sequence[Problem], titles: Mapping[str, str]) -> list[Any]:
    """Failed tasks first, then skipped ones, each in the order it happened."""
    shown = sorted(problems, key=lambda p: (p.state != "failed", p.ts))[:MAX_PROBLEMS]
    return [p.to_json(titles.get(p.task, "")) for p in shown]


def _times_json(s: Snapshot) -> dict[str, Any]:
    if s.status == STOPPED:
        eta = "none: " + status_text(s.status, s.run_id)
    elif s.finished is not None:
        eta = "finished"
    elif s.eta_waits:
        eta = eta_text(s).removeprefix("ETA: ")
    else:
        eta = fmt_duration(s.eta_seconds)
        eta += " (for the known tasks; still growing)" if s.growing else ""
    return {"elapsed_text": s.elapsed_text(), "eta_text": eta}


def snapshot_json(
    s: Snapshot,
    spans: Sequence[Span] = (),
    *,
    reset: bool = False,
    problems: Sequence[Problem] = (),
    agent_errors: Mapping[str, Problem] | None = None,
    titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The snapshot as JSON for the page: the progress model's numbers and segments for the
    run, each team and each agent; the failed and skipped tasks with their reasons
    (``problems``; ``agent_errors``: each agent's last failed attempt); the attempt spans
    (all of them with ``reset``, else those changed since the last send). ``swarm``, a
    team's ``title``/``lines`` and an agent's ``line`` are ``phalanx status``'s text, for
    API clients: the page draws its own bars and tables."""
    mine = _failed_by_agent(problems)
    errors = agent_errors or {}
    return {
        **s.to_dict(),
        "title": page_title(s),
        "headline": s.tasks.headline() + (" (growing)" if s.growing else ""),
        **_times_json(s),
        "cost": fmt_cost(s.usage, s.simulated),
        "agents": [
            agent_json(a, s.now, mine.get(a.name, ()), errors.get(a.name))
            for a in s.agents[:MAX_AGENT_LINES]
        ],
        "more_agents": max(0, len(s.agents) - MAX_AGENT_LINES),
        "teams": _teams_json(s),
        "problems": _problems_json(problems, titles or {}),
        "more_problems": max(0, len(problems) - MAX_PROBLEMS),
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
    failed = _failed_by_agent(list(view.problems.values())).get(name, [])
    out = agent_json(agent, snap.now, failed, view.agent_errors.get(name))
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
    titles = view.titles()
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
def metrics_text(journal: Journal, run_id: str, exporter: PrometheusExporter | None = None) -> str:
    """The run's Prometheus text (the one writer: :mod:`phalanx.status.prometheus`).
    ``exporter``: the app's, whose per-run fold reads only the events since the last scrape
    (default: a new one, reading the whole run)."""
    return (exporter or PrometheusExporter()).text(journal, journal.get_run(run_id).run_id)

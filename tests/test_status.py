"""Status is a pure fold of events; the text view shows the three levels with true numbers."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import phalanx
from conftest import sim_plan
from phalanx.cost import Usage
from phalanx.events import (
    AgentInfo,
    Alert,
    AttemptFinished,
    AttemptStarted,
    Event,
    RetryScheduled,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskInfo,
    TaskSkipped,
    TaskSucceeded,
    event_from_dict,
    event_to_dict,
)
from phalanx.journal import Journal
from phalanx.status.snapshot import fold
from phalanx.status.text import render_text

AGENTS = (
    AgentInfo(name="Cipher", role="coder", provider="sim"),
    AgentInfo(name="Quantum", role="coder", provider="sim"),
    AgentInfo(name="Nova", role="tester", provider="sim"),
)
TASKS = (
    TaskInfo(id="auth", title="implementing auth", category="implementation"),
    TaskInfo(id="db", title="database", category="implementation"),
    TaskInfo(id="tests", title="test suite", category="testing", needs=("auth", "db")),
    TaskInfo(id="docs", title="docs", category="documentation", needs=("tests",)),
)


def _events() -> list[Event]:
    u = Usage(input_tokens=100, output_tokens=50)
    return [
        RunStarted(
            ts=100.0,
            run_id="r1",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=AGENTS,
            tasks=TASKS,
        ),
        AttemptStarted(ts=100.0, task_id="auth", attempt_id=1, attempt_no=1, agent="Cipher"),
        AttemptStarted(ts=100.0, task_id="db", attempt_id=2, attempt_no=1, agent="Quantum"),
        AttemptFinished(
            ts=101.0,
            task_id="db",
            attempt_id=2,
            agent="Quantum",
            ok=False,
            duration=1.0,
            error_class="server_error",
            error="500",
        ),
        RetryScheduled(ts=101.0, task_id="db", attempt_no=1, delay=0.5, error_class="server_error"),
        AttemptStarted(ts=101.5, task_id="db", attempt_id=3, attempt_no=2, agent="Quantum"),
        AttemptFinished(
            ts=102.0, task_id="auth", attempt_id=1, agent="Cipher", ok=True, duration=2.0, usage=u
        ),
        TaskSucceeded(ts=102.0, task_id="auth", attempt_id=1, agent="Cipher"),
    ]


def test_fold_mid_run() -> None:
    s = fold(_events())
    assert s.counts == {"succeeded": 1, "running": 1, "queued": 2}
    assert s.progress == 0.25
    assert s.attempts == 3 and s.failed_attempts == 1
    assert s.usage.total_tokens == 150
    by = {a.name: a for a in s.agents}
    assert (by["Cipher"].state, by["Cipher"].done) == ("idle", 1)
    assert (by["Quantum"].state, by["Quantum"].task_id) == ("running", "db")
    assert by["Quantum"].failures == 1
    assert by["Nova"].state == "idle"
    assert s.eta_seconds is None  # not enough evidence yet


def failed_events() -> list[Event]:
    """The run of :func:`_events`, where ``db`` fails and ``tests`` and ``docs`` are skipped."""
    return _events() + [
        AttemptFinished(
            ts=103.0,
            task_id="db",
            attempt_id=3,
            agent="Quantum",
            ok=False,
            duration=1.5,
            error_class="auth",
            error="401",
        ),
        TaskFailed(ts=103.0, task_id="db", error_class="auth", error="401", attempts=2),
        TaskSkipped(ts=103.0, task_id="tests", upstream="db", reason="upstream"),
        TaskSkipped(ts=103.0, task_id="docs", upstream="db", reason="upstream"),
        RunFinished(ts=103.5, status="failed"),
    ]


def test_fold_failure_and_skip_and_finish() -> None:
    evs = failed_events()
    s = fold(evs)
    assert s.counts == {"succeeded": 1, "failed": 1, "skipped": 2}
    assert s.progress == 1.0 and s.status == "failed"
    assert s.elapsed == 3.5
    assert s.busy_seconds == 4.5
    assert any("db failed" in a for a in s.alerts)


def test_render_has_three_levels_with_numbers() -> None:
    s = fold(_events())
    text = render_text(s)
    assert "Agent: Quantum | Task: database | " in text
    assert "| running" in text
    assert "Coder team:" in text and "Tester team:" in text
    assert re.search(r"\n    - Cipher: idle +\[██████████\] 100% \(1/1\)\n", text)
    assert "💻 Coder: 1/2 active" in text
    assert "🧪 Tester: 0/1 active" in text
    assert "Tasks: 1 done · 1 running · 2 queued · 0 failed · 0 skipped (of 4)" in text
    assert "Total progress: 25%" in text
    assert "SIMULATED" in text


def test_resumed_run_folds_both_sessions() -> None:
    evs = _events()[:3] + [
        # crash: no RunFinished; the resumed session starts again
        RunStarted(
            ts=200.0,
            run_id="r1",
            plan="p",
            session=2,
            policy="best_fit",
            simulated=True,
            agents=AGENTS,
            tasks=TASKS,
        ),
        AttemptStarted(ts=200.0, task_id="auth", attempt_id=4, attempt_no=1, agent="Cipher"),
    ]
    s = fold(evs)
    assert s.session == 2
    assert s.counts == {"running": 1, "queued": 3}  # db's lost attempt went back to the queue
    by = {a.name: a for a in s.agents}
    assert by["Quantum"].state == "idle"
    assert by["Cipher"].state == "running"


def test_events_roundtrip_through_json() -> None:
    for e in _events():
        assert event_from_dict(event_to_dict(e)) == e


def test_status_from_journal_matches_the_run(state: Path) -> None:
    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(30, agents=3, deps="layered")))
    j = Journal(state / "journal.sqlite")
    s = fold(e for _, e in j.read_events(result.run_id))
    assert s.counts == {"succeeded": 30}
    assert s.usage == result.usage
    assert sum(a.done for a in s.agents) == 30
    assert s.status == "succeeded"
    db = sqlite3.connect(state / "journal.sqlite")
    (n,) = db.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ?", (result.run_id,)).fetchone()
    assert s.attempts == n


def test_cli_status_prints_three_levels(state: Path, capsys: object) -> None:
    from phalanx.cli.app import main

    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(10, agents=2)))
    assert main(["status", result.run_id]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    for level in ("Level 1", "Level 2", "Level 3"):
        assert level in out
    assert "Tasks: 10 done" in out
    assert main(["status", result.run_id[:10]]) == 0  # a unique prefix works


def test_rate_limit_wait_shows_as_waiting_until_it_ends() -> None:
    from phalanx.events import AgentWaiting
    from phalanx.status.snapshot import StatusTracker

    tracker = StatusTracker()
    for e in _events()[:3]:
        tracker.emit(e)
    tracker.emit(
        AgentWaiting(
            ts=100.5,
            agent="Cipher",
            task_id="auth",
            reason="rate limit",
            key="anthropic:claude-x",
            until=130.0,
        )
    )
    s = tracker.snapshot(now=110.0)
    by = {a.name: a for a in s.agents}
    assert by["Cipher"].state == "waiting"
    text = render_text(s)
    assert "| waiting: rate limit (anthropic:claude-x)" in text
    assert "rate limit: waiting on anthropic:claude-x" in text  # alert
    assert "💻 Coder: 2/2 active" in text
    later = {a.name: a for a in tracker.snapshot(now=131.0).agents}
    assert later["Cipher"].state == "running"


def test_cli_report_writes_each_format(state: Path, capsys: object) -> None:
    from phalanx.cli.app import main

    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(12, agents=3, deps="layered")))
    assert main(["report", result.run_id]) == 0
    html = state / "runs" / result.run_id / "report.html"
    assert html.read_text().count("<svg") == 4
    assert main(["report", "--format", "json", "-o", "-"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert '"run_id": "' + result.run_id in out
    assert main(["report", result.run_id, "--format", "md", "-o", str(state / "r.md")]) == 0
    assert (state / "r.md").read_text().startswith("# phalanx report")


def test_golden_render_with_a_breaker_trip() -> None:
    from phalanx.events import BreakerChanged

    events = [
        *_events(),
        Alert(
            ts=102.5,
            kind="breaker",
            agent="Quantum",
            message="agent Quantum paused: error rate 80% over the last 5 attempts",
        ),
        BreakerChanged(
            ts=102.5, scope="agent", key="Quantum", state="open", error_rate=0.8, window=5
        ),
        AttemptFinished(
            ts=103.0,
            task_id="db",
            attempt_id=3,
            agent="Quantum",
            ok=False,
            duration=1.5,
            error_class="server_error",
            error="500",
        ),
        RetryScheduled(ts=103.0, task_id="db", attempt_no=2, delay=0.5, error_class="server_error"),
    ]
    text = render_text(fold(events))
    assert text == GOLDEN_BREAKER


GOLDEN_BREAKER = """\
Run r1 · plan p · running · SIMULATED (sim provider)

Level 1 · agents
  Agent: Cipher  | Task: -        | 1s | idle
  Agent: Quantum | Task: database | 0s | paused · attempt failed after 1.5s · server_error: 500
  Agent: Nova    | Task: -        | 3s | idle

Level 2 · teams
  Coder team:                      1 succeeded · 0 running
    - Cipher: idle    [██████████] 100% (1/1)
    - Quantum: paused [░░░░░░░░░░] 0% (0/0)
  Tester team:                     0 succeeded · 0 running
    - Nova: idle      [░░░░░░░░░░] 0% (0/0)

Level 3 · swarm
  💻 Coder: 0/2 active · 🧪 Tester: 0/1 active
  Tasks: 1 done · 0 running · 3 queued · 0 failed · 0 skipped (of 4)
  Total progress: 25% · ETA: unknown · elapsed 3s · tokens 150 · cost n/a (simulated)
  Alerts: breaker: agent Quantum paused: error rate 80% over the last 5 attempts"""


def test_current_task_turns_show_as_progress() -> None:
    from phalanx.events import ToolCalled
    from phalanx.status.snapshot import StatusTracker
    from phalanx.status.text import agent_progress

    tracker = StatusTracker()
    for e in _events()[:2]:
        tracker.emit(e)
    tracker.emit(
        AttemptStarted(
            ts=100.0, task_id="db", attempt_id=9, attempt_no=1, agent="Quantum", max_turns=4
        )
    )
    tracker.emit(
        ToolCalled(
            ts=100.5, task_id="db", attempt_id=9, agent="Quantum", tool="read_file", ok=True, turn=2
        )
    )
    s = tracker.snapshot(now=101.0)
    q = next(a for a in s.agents if a.name == "Quantum")
    assert agent_progress(q) == 0.5  # 0 done of 1 assigned, half its turns used
    assert "| running (turn 2/4)" in render_text(s)

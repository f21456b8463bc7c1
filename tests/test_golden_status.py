"""Golden renders of the three status levels, as a user reads them in a terminal.

One journal, written with fixed timestamps, holds a run with succeeded, failed (with its
reason), skipped, running and pending tasks; a second case is the same run stopped (its
owner on another host, its heartbeat long stale). Each is rendered by ``phalanx status``
(:func:`render_text`) and by the live view (:func:`render_rich`, into a no-colour console)
at 80x24 and 160x50, and compared exactly with ``tests/golden/*.txt``. To rewrite them after
a deliberate change: ``PHALANX_UPDATE_GOLDEN=1 pytest tests/test_golden_status.py`` (then
read every file as a user would before committing it).

Nothing depends on the machine: fixed clock, ids and durations; the console's size is set.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from rich.console import Console

from phalanx.cost import Usage
from phalanx.events import (
    AgentInfo,
    Alert,
    AttemptFinished,
    AttemptStarted,
    CallRetried,
    Event,
    RetryScheduled,
    RunStarted,
    TaskFailed,
    TaskInfo,
    TaskSkipped,
    TaskSucceeded,
    ToolCalled,
)
from phalanx.journal import Journal, Owner
from phalanx.status.liveness import STALE_AFTER, live_snapshot
from phalanx.status.snapshot import Snapshot, StatusTracker
from phalanx.status.text import render_text
from phalanx.status.tui import render_rich

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PHALANX_UPDATE_GOLDEN") == "1"
RUN_ID = "20250301-120000-a1b2"
T0 = 1_740_830_400.0  # 2025-03-01 12:00:00 UTC: every timestamp is T0 + seconds
NOW = T0 + 48.0  # when the view is drawn
SIZES = ((80, 24), (160, 50))

AGENTS = (
    AgentInfo(name="Atlas", role="analyzer", provider="anthropic"),
    AgentInfo(name="Cipher", role="migrator", provider="anthropic"),
    AgentInfo(name="Quantum", role="migrator", provider="anthropic"),
    AgentInfo(name="Nova", role="tester", provider="anthropic"),
    AgentInfo(name="Lyra", role="documenter", provider="anthropic"),
)
TASKS = (
    TaskInfo(id="map", title="map the package's HTTP calls", category="research"),
    TaskInfo(id="inventory", title="inventory the tests that mock requests", category="research"),
    TaskInfo(
        id="session", title="port the session layer to httpx.Client", category="implementation"
    ),
    TaskInfo(
        id="stream",
        title="port the streaming downloads",
        category="implementation",
        needs=("map",),
    ),
    TaskInfo(id="retry", title="port the retry adapter", category="implementation"),
    TaskInfo(id="auth", title="port the auth hooks", category="implementation"),
    TaskInfo(
        id="test-session",
        title="test the session layer",
        category="testing",
        needs=("session",),
    ),
    TaskInfo(
        id="test-stream",
        title="test the streaming downloads",
        category="testing",
        needs=("stream",),
    ),
    TaskInfo(
        id="doc-stream",
        title="document the streaming changes",
        category="documentation",
        needs=("test-stream",),
    ),
    TaskInfo(
        id="changelog",
        title="write the changelog entry",
        category="documentation",
        needs=("retry", "auth", "test-session"),
    ),
)
OVERLOADED = "anthropic: HTTP 503: upstream overloaded, try again later"


def _usage(tokens: int) -> Usage:
    return Usage(input_tokens=tokens, output_tokens=tokens // 4, cost_usd=tokens * 3e-6)


def _start(t: float, task: str, attempt: int, agent: str, no: int = 1) -> AttemptStarted:
    return AttemptStarted(
        ts=T0 + t, task_id=task, attempt_id=attempt, attempt_no=no, agent=agent, max_turns=8
    )


def _ok(t: float, task: str, attempt: int, agent: str, took: float) -> list[Event]:
    return [
        AttemptFinished(
            ts=T0 + t,
            task_id=task,
            attempt_id=attempt,
            agent=agent,
            ok=True,
            duration=took,
            usage=_usage(2000),
        ),
        TaskSucceeded(ts=T0 + t, task_id=task, attempt_id=attempt, agent=agent),
    ]


def _overloaded(t: float, attempt: int) -> AttemptFinished:
    return AttemptFinished(
        ts=T0 + t,
        task_id="stream",
        attempt_id=attempt,
        agent="Quantum",
        ok=False,
        duration=17.7,
        usage=_usage(1200),
        error_class="overloaded",
        error=OVERLOADED,
        status=503,
    )


def events() -> list[Event]:
    """The run at T0 + 48 s: 3 succeeded, ``stream`` failed (overloaded, twice) and its 2
    dependants skipped, 2 running (Cipher on turn 3 of 8, Nova), 2 pending."""
    return [
        RunStarted(
            ts=T0,
            run_id=RUN_ID,
            plan="migrate-requests-to-httpx",
            session=1,
            policy="best_fit",
            simulated=False,
            agents=AGENTS,
            tasks=TASKS,
        ),
        _start(0.0, "map", 1, "Atlas"),
        _start(0.0, "session", 2, "Cipher"),
        *_ok(8.0, "map", 1, "Atlas", 8.0),
        _start(8.0, "inventory", 3, "Atlas"),
        _start(8.0, "stream", 4, "Quantum"),
        *_ok(12.0, "session", 2, "Cipher", 12.0),
        *_ok(14.0, "inventory", 3, "Atlas", 6.0),
        _overloaded(25.7, 4),
        RetryScheduled(
            ts=T0 + 25.7, task_id="stream", attempt_no=1, delay=2.0, error_class="overloaded"
        ),
        _start(27.7, "stream", 5, "Quantum", no=2),
        _start(40.0, "retry", 6, "Cipher"),
        CallRetried(
            ts=T0 + 41.0,
            task_id="retry",
            attempt_id=6,
            agent="Cipher",
            turn=2,
            retry=1,
            error_class="rate_limited",
            delay=1.5,
        ),
        ToolCalled(
            ts=T0 + 43.0,
            task_id="retry",
            attempt_id=6,
            agent="Cipher",
            tool="read_file",
            ok=True,
            turn=3,
        ),
        _start(44.0, "test-session", 7, "Nova"),
        _overloaded(45.4, 5),
        TaskFailed(
            ts=T0 + 45.4,
            task_id="stream",
            error_class="overloaded",
            error=f"{OVERLOADED} (gave up after 2 attempts)",
            attempts=2,
            status=503,
        ),
        TaskSkipped(
            ts=T0 + 45.4,
            task_id="test-stream",
            upstream="stream",
            reason="upstream task 'stream' did not succeed",
        ),
        TaskSkipped(
            ts=T0 + 45.4,
            task_id="doc-stream",
            upstream="stream",
            reason="upstream task 'stream' did not succeed",
        ),
        Alert(
            ts=T0 + 46.0,
            kind="budget",
            message="80% of the run's token budget used (40,000 of 50,000)",
        ),
    ]


def _journal(state: Path, owner: Owner) -> Journal:
    journal = Journal(state / "journal.sqlite")
    journal.create_run(
        run_id=RUN_ID,
        plan_name="migrate-requests-to-httpx",
        plan_source=None,
        plan={},
        options={},
        simulated=False,
        task_count=len(TASKS),
    )
    session = journal.begin_session(RUN_ID, owner)
    for e in events():
        journal.append(RUN_ID, session, e)
    journal.flush()
    db = sqlite3.connect(state / "journal.sqlite", timeout=30)
    with db:  # its last heartbeat: just before the view is drawn
        db.execute("UPDATE runs SET heartbeat_at = ?", (NOW - 1.0,))
    db.close()
    return journal


def _snapshot(state: Path, *, stopped: bool) -> Snapshot:
    """The run as ``phalanx status`` folds it from the journal. Its owner is on another
    host, so only its heartbeat says whether it lives: fresh at ``NOW`` (running), or
    stale when the view is drawn later (stopped, the clock stopped at the heartbeat)."""
    owner = Owner(pid=4242, host="golden-host.invalid", start=None)
    journal = _journal(state, owner)
    try:
        tracker = StatusTracker()
        for _, e in journal.read_events(RUN_ID):
            tracker.emit(e)
        seen = NOW + STALE_AFTER + 50.0 if stopped else NOW
        return live_snapshot(journal, tracker.snapshot(now=NOW), now=seen)
    finally:
        journal.close()


def live_text(s: Snapshot, width: int, height: int) -> str:
    """The live view as a ``width`` x ``height`` terminal shows it, colours left out."""
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        record=True,
        color_system=None,
        force_terminal=False,
        legacy_windows=False,
        _environ={},
    )
    console.print(render_rich(s, width=width, height=height))
    return console.export_text(styles=False)


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: PHALANX_UPDATE_GOLDEN=1 writes it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize("case", ["running", "stopped"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_golden_status_text(tmp_path: Path, case: str, width: int, height: int) -> None:
    s = _snapshot(tmp_path, stopped=case == "stopped")
    text = render_text(s, width=width, height=height) + "\n"
    lines = text.splitlines()
    assert len(lines) <= height and max(len(line) for line in lines) <= width
    _check(f"status-{case}-{width}x{height}.txt", text)


@pytest.mark.parametrize("case", ["running", "stopped"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_golden_live_view(tmp_path: Path, case: str, width: int, height: int) -> None:
    s = _snapshot(tmp_path, stopped=case == "stopped")
    text = live_text(s, width, height)
    assert len(text.splitlines()) <= height
    _check(f"live-{case}-{width}x{height}.txt", text)


# -- phalanx status on a terminal ------------------------------------------------------------
@pytest.fixture
def failed_run(state: Path) -> str:
    """A finished sim run of 12 agents in which some tasks failed (injected auth faults)."""
    import phalanx
    from conftest import sim_plan

    plan = sim_plan(36, agents=12, faults={"auth": 0.2}, max_attempts=1, seed=3)
    result = phalanx.run_sync(phalanx.Plan.from_dict(plan))
    assert result.status == "failed"
    return result.run_id


def _fake_terminal(monkeypatch: pytest.MonkeyPatch, columns: int, lines: int) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((columns, lines)))


@pytest.mark.parametrize("watch", [False, True])
def test_cli_status_fits_the_terminal(
    failed_run: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    watch: bool,
) -> None:
    """On an 80x24 terminal no line of ``phalanx status`` wraps; ``--watch`` (redrawn in
    place) fits its height too, the swarm level included; a pipe gets every line whole."""
    from phalanx.cli.app import main

    _fake_terminal(monkeypatch, 80, 24)
    assert main(["status", failed_run, *(["--watch"] if watch else [])]) == 0
    out = capsys.readouterr().out.removeprefix("\x1b[2J\x1b[H")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "Level 3 · swarm" in out and "Total progress:" in out and " failed" in out
    if watch:
        assert len(lines) <= 24, out
    else:
        assert "… and" not in out  # every agent's line: it is printed, not redrawn

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["status", failed_run]) == 0
    assert any(len(line) > 80 for line in capsys.readouterr().out.splitlines())


# -- the reason on the agent line ------------------------------------------------------------
def test_the_agent_line_names_the_reason_redacted_and_cut_to_fit() -> None:
    from phalanx.status.progress import failure_reason
    from phalanx.status.text import agent_line

    tracker = StatusTracker()
    for e in events()[:5]:  # started; Quantum's attempt on "stream" is yet to come
        tracker.emit(e)
    secret = "sk-ant-api03-" + "x" * 24
    tracker.emit(_start(8.0, "stream", 4, "Quantum"))
    tracker.emit(
        AttemptFinished(
            ts=T0 + 25.7,
            task_id="stream",
            attempt_id=4,
            agent="Quantum",
            ok=False,
            duration=17.7,
            error_class="auth",
            error=f"HTTP 401: invalid x-api-key {secret}\n(check the key)",
        )
    )
    tracker.emit(
        TaskFailed(
            ts=T0 + 25.7,
            task_id="stream",
            error_class="auth",
            error=f"HTTP 401: invalid x-api-key {secret}\n(check the key) (auth is not retryable)",
            attempts=1,
        )
    )
    q = next(a for a in tracker.snapshot(now=T0 + 30.0).agents if a.name == "Quantum")
    line = agent_line(q, T0 + 30.0)
    assert line == (
        "Agent: Quantum | Task: port the streaming downloads | 4s | failed after 17.7s · "
        "auth: HTTP 401: invalid x-api-key [redacted] (check the key) (auth is not retryable)"
    )
    assert secret not in line and "\n" not in line
    short = agent_line(q, T0 + 30.0, width=80, task_width=16)
    assert (
        short == "Agent: Quantum | Task: port the stream… | 4s | failed after 17.7s · auth: HTTP…"
    )
    assert failure_reason("overloaded", "503 upstream\noverloaded", 20) == "overloaded: 503 ups…"
    assert failure_reason(None, None) == "failed" and failure_reason("timeout", "") == "timeout"
    data = q.failure.to_dict() if q.failure else {}
    assert (data["error_class"], data["final"], data["seconds"]) == ("auth", True, 17.7)

"""Run liveness: a run whose process is gone is shown as stopped, with the way to resume it,
and two processes never drive one run.

The end-to-end test starts a real ``phalanx run`` on a slow sim plan, asks ``phalanx
resume`` while it is alive (refused), SIGKILLs it, and reads ``phalanx runs`` and ``phalanx
status`` (text and JSON) within 10 s; then ``phalanx resume`` finishes it. Every wait is
bounded and every process started is killed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from conftest import alive, new_run, sim_plan, write_plan
from phalanx.cli.app import main
from phalanx.exceptions import UsageError
from phalanx.journal import SCHEMA_VERSION, Journal, Owner
from phalanx.status.liveness import (
    STALE_AFTER,
    live_snapshot,
    owner_alive,
    process_start,
    run_summaries,
    shown_status,
    this_process,
)
from phalanx.status.snapshot import StatusTracker, as_stopped, fold
from phalanx.status.text import render_text
from phalanx.status.web import create_app
from test_status import _events

pytestmark = pytest.mark.timeout(180)

START_TIMEOUT = 30.0  # until the run has an owner and a first success (start-up included)
VIEW_DEADLINE = 10.0  # from the kill until every view has said "stopped"
RUN_TIMEOUT = 60.0  # a resume to its end
CLI_TIMEOUT = 30.0  # one short command (runs, status)
RUN_ID = "alive-1"
HINT = f"stopped (process gone) — phalanx resume {RUN_ID}"
R1_HINT = "stopped (process gone) — phalanx resume r1"  # the run of test_status._events


# -- helpers -----------------------------------------------------------------------------------
def _cmd(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx", "--state-dir", str(state), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def _phalanx(state: Path, *args: str, timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
    done = subprocess.run(
        _cmd(state, *args),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=_env(),
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``phalanx`` subprocesses (output to files: no pipe can stall them); any still
    alive at the end of the test is killed and reaped."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(state: Path, *args: str) -> subprocess.Popen[bytes]:
        state.mkdir(parents=True, exist_ok=True)
        with (state / "run.log").open("ab") as log:
            p = subprocess.Popen(
                _cmd(state, *args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
            )
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


def _row(state: Path, run_id: str) -> dict[str, Any]:
    db = sqlite3.connect(state / "journal.sqlite", timeout=30)
    try:
        db.row_factory = sqlite3.Row
        run = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        done = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ? AND state = 'succeeded'", (run_id,)
        ).fetchone()[0]
    finally:
        db.close()
    return {} if run is None else {**dict(run), "done": done}


def _wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def _started(state: Path, proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    def check() -> bool:
        assert proc.poll() is None, (state / "run.log").read_text()
        if not (state / "journal.sqlite").exists():
            return False
        row = _row(state, RUN_ID)
        return bool(row) and row["owner_pid"] == proc.pid and row["done"] >= 1

    return check


def _runs_row(out: str, run_id: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(run_id))


# -- end to end: kill, see it stopped, resume refused while alive, resume after -----------------
def test_a_killed_run_is_shown_stopped_and_resumes(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "state"
    # 2 agents x 12 tasks x 2.5 s: about 15 s of work, so still running when killed
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(12, agents=2, latency_ms=2500))
    proc = spawn(state, "run", str(plan), "--no-tui", "--run-id", RUN_ID)
    _wait_for(_started(state, proc), "an owned run with a first success", START_TIMEOUT)

    row = _row(state, RUN_ID)
    assert (row["owner_host"], row["owner_session"]) == (socket.gethostname(), 1)
    assert row["owner_start"] == process_start(proc.pid)
    first_beat = row["heartbeat_at"]
    _wait_for(lambda: _row(state, RUN_ID)["heartbeat_at"] > first_beat, "a second heartbeat", 10.0)

    # alive: shown running, and a second driver is refused with one line naming the pid
    assert " running " in _runs_row(_ok(state, "runs"), RUN_ID)
    rc, out, err = _phalanx(state, "resume", RUN_ID)
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and f"pid {proc.pid}" in err
    assert socket.gethostname() in err
    assert _row(state, RUN_ID)["sessions"] == 1  # the refusal changed nothing
    assert proc.poll() is None

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed = time.monotonic()
    _views_say_stopped(state)
    assert time.monotonic() - killed < VIEW_DEADLINE
    report = json.loads(_ok(state, "report", RUN_ID, "--format", "json"))
    assert report["status"] == report["metrics"]["status"] == "stopped"

    time.sleep(max(0.0, 1.0 - (time.monotonic() - killed)))  # downtime of at least 1 s
    rc, out, err = _phalanx(state, "resume", RUN_ID, "--no-tui", "--json", timeout=RUN_TIMEOUT)
    assert rc == 0, (out, err)
    assert f"run {RUN_ID} succeeded" in err  # the summary is on stderr
    # the resumed run is timed on its active time; the calendar time keeps the downtime
    assert "active (" in err and "calendar, 2 sessions)" in err, err
    result = json.loads(out)
    assert result["calendar_seconds"] - result["active_seconds"] >= 0.9
    _views_say_succeeded(state)


def _ok(state: Path, *args: str) -> str:
    """``phalanx ARGS``' stdout; it must exit 0."""
    rc, out, err = _phalanx(state, *args)
    assert rc == 0, (args, out, err)
    return out


def _views_say_stopped(state: Path) -> None:
    assert HINT in _runs_row(_ok(state, "runs"), RUN_ID)

    (run,) = (r for r in json.loads(_ok(state, "runs", "--json")) if r["run_id"] == RUN_ID)
    assert (run["status"], run["status_text"]) == ("stopped", HINT)
    assert "running" not in run["states"] and sum(run["states"].values()) == 12

    text = _ok(state, "status", RUN_ID)
    assert text.splitlines()[0].startswith(f"Run {RUN_ID} · plan sim-12 · {HINT}")
    assert "ETA" not in text and "| running" not in text
    assert " 0 running " in text and ": 0/2 active" in text

    snap = json.loads(_ok(state, "status", RUN_ID, "--json"))
    assert (snap["status"], snap["status_text"]) == ("stopped", HINT)
    assert snap["reason"] == "process gone"
    assert snap["eta_seconds"] is None and "running" not in snap["counts"]
    assert {a["state"] for a in snap["agents"]} == {"idle"}


def _views_say_succeeded(state: Path) -> None:
    (run,) = (r for r in json.loads(_ok(state, "runs", "--json")) if r["run_id"] == RUN_ID)
    assert (run["status"], run["status_text"], run["owner"]) == ("succeeded", "succeeded", None)
    assert run["sessions"] == 2 and run["states"] == {"succeeded": 12}
    snap = json.loads(_ok(state, "status", RUN_ID, "--json"))
    assert (snap["status"], snap["counts"]) == ("succeeded", {"succeeded": 12})
    text = _ok(state, "status", RUN_ID)
    assert "· plan sim-12 · succeeded" in text and "stopped" not in text
    assert "Tasks: 12 done" in text


# -- the dashboard: run list and snapshot --------------------------------------------------------
def _stopped_journal(state: Path, *, heartbeat: float) -> Journal:
    """A journal holding run ``r1`` (``test_status._events``) mid-way, its owner a process
    that has exited, its last heartbeat at ``heartbeat``."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    journal = new_run(Journal(state / "journal.sqlite"), "r1", task_count=4)
    gone = Owner(pid=dead.pid, host=socket.gethostname(), start="0:0")
    session = journal.begin_session("r1", gone)
    for e in _events():
        journal.append("r1", session, e)
    journal.flush()
    db = sqlite3.connect(state / "journal.sqlite", timeout=30)
    with db:
        db.execute("UPDATE runs SET heartbeat_at = ?", (heartbeat,))
    db.close()
    return journal


def test_the_dashboard_shows_a_stopped_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _stopped_journal(state, heartbeat=102.5).close()
    app = create_app(state, token="liveness-token-0123456789")
    headers = {"Authorization": "Bearer liveness-token-0123456789"}
    with TestClient(app, base_url="http://127.0.0.1:8123") as client:
        runs = client.get("/api/runs", headers=headers).json()
        assert [(r["status"], r["status_text"]) for r in runs] == [("stopped", R1_HINT)]
        snap = client.get("/api/snapshot", headers=headers).json()
    assert snap["status"] == "stopped"
    assert snap["title"] == f"Run r1 · plan p · {R1_HINT} · SIMULATED (sim provider)"
    assert snap["eta_seconds"] is None and "running" not in snap["counts"]
    assert not any("ETA" in line for line in snap["swarm"])
    assert snap["now"] == 102.5  # its clock stopped at the last heartbeat


def test_a_run_killed_before_its_first_event_is_shown_stopped_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its process died between the run's row and its first event: `phalanx status` (no
    id: the latest run), `--json` and the dashboard name it, show it stopped with its
    resume hint and its plan's tasks queued (they failed with "no run ''" before)."""
    state = tmp_path / "state"
    monkeypatch.setenv("PHALANX_STATE_DIR", str(state))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    journal = Journal(state / "journal.sqlite")
    plan = {"tasks": [{"id": "a", "title": "first"}, {"id": "b", "needs": ["a"]}]}
    journal.create_run(run_id="r0", plan_name="p", plan_source=None, plan=plan, options={},
                       simulated=True, task_count=2)  # fmt: skip
    journal.begin_session("r0", Owner(pid=dead.pid, host=socket.gethostname(), start="0:0"))
    journal.close()
    hint = "stopped (process gone) — phalanx resume r0"

    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Run r0 · plan p · {hint}")
    assert "2 queued" in text and "(of 2)" in text
    assert main(["status", "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert (snap["run_id"], snap["status"], snap["status_text"]) == ("r0", "stopped", hint)
    assert snap["counts"] == {"queued": 2}

    app = create_app(state, token="liveness-token-0123456789")
    headers = {"Authorization": "Bearer liveness-token-0123456789"}
    with TestClient(app, base_url="http://127.0.0.1:8123") as client:
        web = client.get("/api/snapshot", headers=headers).json()
    assert web["status"] == "stopped"
    assert web["title"] == f"Run r0 · plan p · {hint} · SIMULATED (sim provider)"


# -- the decision itself -------------------------------------------------------------------------
def test_owner_alive_same_host_asks_the_process() -> None:
    me = this_process()
    assert me.pid == os.getpid() and me.host == socket.gethostname() and me.start
    assert owner_alive(me)
    # the pid lives but is another process (a reused pid): gone, whatever the heartbeat
    assert not owner_alive(Owner(pid=me.pid, host=me.host, start="x:1", heartbeat=time.time()))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = Owner(pid=child.pid, host=me.host, start=process_start(child.pid))
        assert owner_alive(owner)
        child.kill()
        _wait_for(lambda: not alive(child.pid), "the child to die", 10.0)
        assert not owner_alive(owner)  # a zombie not yet reaped is gone too
    finally:
        child.kill()
        child.wait(timeout=10)
    assert not owner_alive(owner)


def test_owner_alive_elsewhere_asks_the_heartbeat() -> None:
    now = 1000.0
    far = Owner(pid=1, host="another-host.invalid", start="b:1", heartbeat=now - 2)
    assert owner_alive(far, now)
    assert not owner_alive(Owner(pid=1, host=far.host, heartbeat=now - STALE_AFTER - 1), now)
    assert not owner_alive(Owner(pid=1, host=far.host), now)  # never beat: unknown


def test_shown_status() -> None:
    me = this_process()
    assert shown_status("running", me) == "running"
    assert shown_status("running", None) == "stopped"  # no owner: a journal older than owners
    assert shown_status("running", Owner(pid=me.pid, host=me.host, start="x:1")) == "stopped"
    gone = Owner(pid=me.pid, host=me.host, start="x:1")
    assert shown_status("succeeded", gone) == "succeeded"
    assert shown_status("interrupted", None) == "interrupted"


def test_the_fold_stays_pure_and_the_stopped_view_has_no_eta() -> None:
    tracker = StatusTracker()
    for e in _events():
        tracker.emit(e)
    live = tracker.snapshot(now=101.0)
    assert live.status == "running" and live.counts.get("running")
    stopped = as_stopped(live, last_seen=100.8)
    assert tracker.snapshot(now=101.0) == live  # the fold is unchanged by the view
    assert stopped.status == "stopped" and stopped.eta_seconds is None
    assert "running" not in stopped.counts
    assert sum(stopped.counts.values()) == sum(live.counts.values())
    # the clock stops at the later of the heartbeat (100.8) and the last event (102.0),
    # never past the view's own now (101.0)
    assert live.last_event == 102.0
    assert all(a.state != "running" for a in stopped.agents) and stopped.now == 101.0
    text = render_text(stopped)
    assert "ETA" not in text and "· stopped (process gone) — phalanx resume r1" in text
    assert fold(_events()).status == "running"


def test_live_snapshot_reads_liveness_from_the_journal(tmp_path: Path) -> None:
    journal = _stopped_journal(tmp_path / "state", heartbeat=102.5)
    try:
        snap = fold(e for _, e in journal.read_events("r1"))
        assert live_snapshot(journal, snap).status == "stopped"
        assert [r["status"] for r in run_summaries(journal)] == ["stopped"]
        # a live owner (this process) takes it over: running again
        journal.begin_session("r1", this_process(), alive=owner_alive)
        assert live_snapshot(journal, snap).status == "running"
        assert [r["status"] for r in run_summaries(journal)] == ["running"]
    finally:
        journal.close()


# -- two processes never drive one run ---------------------------------------------------------
def test_begin_session_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    journal = _stopped_journal(tmp_path / "state", heartbeat=102.5)
    try:
        n = journal.begin_session("r1", this_process(), alive=owner_alive)
        assert n == 2
        rec = journal.get_run("r1")
        assert rec.owner is not None and rec.owner.pid == os.getpid() and rec.owner.session == 2
        with pytest.raises(UsageError, match=rf"pid {os.getpid()} on {socket.gethostname()}"):
            journal.begin_session("r1", this_process(), alive=owner_alive)
        assert journal.get_run("r1").sessions == 2  # refused: nothing changed
        journal.heartbeat("r1", 1)  # an old session's beat changes nothing
        assert journal.get_run("r1").owner == rec.owner
        journal.release("r1", 2)
        assert journal.get_run("r1").owner is None
    finally:
        journal.close()


# -- the schema: a journal of version 1 is migrated in place ------------------------------------
_V1_RUNS = """CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, plan_name TEXT NOT NULL, plan_source TEXT,
    plan_json TEXT NOT NULL, options_json TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', simulated INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 0, task_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
)"""


def test_a_version_1_journal_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute(_V1_RUNS)
    db.execute(
        "INSERT INTO runs VALUES ('old', 'p', NULL, '{}', '{}', 'running', '', 1, 1, 3, 1.0,"
        " 2.0, NULL)"
    )
    db.commit()
    db.close()
    journal = Journal(path)
    try:
        rec = journal.get_run("old")
        assert (rec.status, rec.sessions, rec.owner) == ("running", 1, None)
        assert [r["status_text"] for r in run_summaries(journal)] == [
            "stopped (process gone) — phalanx resume old"
        ]
        journal.begin_session("old", this_process(), alive=owner_alive)
        assert journal.get_run("old").owner is not None
    finally:
        journal.close()
    check = sqlite3.connect(path)
    try:
        (version,) = check.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    finally:
        check.close()
    assert version == SCHEMA_VERSION == "4"  # 1 -> 2 -> 3 -> 4
    Journal(path).close()  # opening a migrated journal again changes nothing


def test_a_stopped_runs_clock_keeps_its_last_event_in_every_view() -> None:
    """Killed between two heartbeats: the clock of ``phalanx status`` (live_snapshot ->
    as_stopped) stops at the last event, not at the earlier heartbeat."""
    from phalanx.events import RunStarted, TaskInfo, TaskSucceeded
    from phalanx.status.snapshot import StatusTracker, as_stopped

    tracker = StatusTracker()
    tasks = tuple(TaskInfo(id=t, title=t, category="code") for t in ("a", "b"))
    tracker.emit(
        RunStarted(
            ts=100.0,
            run_id="r",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=(),
            tasks=tasks,
        )
    )
    tracker.emit(TaskSucceeded(ts=104.5, task_id="a", agent="x", attempt_id=1))
    snap = as_stopped(tracker.snapshot(now=200.0), last_seen=101.0)  # heartbeat at 101 s
    assert snap.now == 104.5 and snap.status == "stopped"

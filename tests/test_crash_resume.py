"""Crash and interrupt safety, for real: ``phalanx run`` in a subprocess, killed with SIGKILL
at a random moment or stopped with SIGINT/SIGTERM, then ``phalanx resume``. The journal is
checked with sqlite3 directly, never through phalanx itself."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import sim_plan, write_plan
from phalanx.journal import PROCESS_ENV

TERMINAL = {"succeeded", "failed", "skipped"}
MAX_ATTEMPTS = 3  # sim_plan's default per task
START_TIMEOUT = 20.0  # until the first task line (interpreter start-up included)
RUN_TIMEOUT = 30.0  # a whole run or resume
STOP_TIMEOUT = 5.0  # from SIGINT/SIGTERM to exit


# -- subprocess handling -------------------------------------------------------------------
def _cmd(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx", "--state-dir", str(state), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def _is_task_line(line: str) -> bool:
    return line.startswith("[") and "s] " in line


def _not_progress(stderr: str) -> list[str]:
    """The lines of stderr that are not progress (task lines, the run's start line, the
    summary: ``run ...`` and its indented lines): warnings and errors."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not (_is_task_line(line) or line.startswith(("run ", "  ")))
    ]


@dataclass
class Proc:
    """A ``phalanx`` subprocess whose stdout/stderr are drained by threads (no pipe stalls),
    with a wait for its first task line."""

    popen: subprocess.Popen[bytes]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        for stream, sink, q in (
            (self.popen.stdout, self.out, None),
            (self.popen.stderr, self.err, self.lines),  # progress: stderr,
        ):
            threading.Thread(target=self._drain, args=(stream, sink, q), daemon=True).start()

    @staticmethod
    def _drain(stream: Any, sink: list[str], q: queue.Queue[str] | None) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            if q is not None:
                q.put(line)
        stream.close()

    def wait_first_task_line(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if _is_task_line(self.lines.get(timeout=left)):
                    return
            except queue.Empty:
                break
        raise AssertionError(
            f"no task line within {timeout}s (rc={self.popen.poll()}): "
            f"stdout={self.out[-5:]} stderr={self.err[-5:]}"
        )

    def wait(self, timeout: float) -> int:
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            raise AssertionError(
                f"phalanx did not exit within {timeout}s: stdout={self.out[-5:]} "
                f"stderr={self.err[-5:]}"
            ) from None
        self._join_drains()
        return rc

    def _join_drains(self) -> None:
        # The drain threads end at EOF; give them a moment to collect the last lines.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
            self.popen.stdout is not None
            and self.popen.stdout.closed
            and self.popen.stderr is not None
            and self.popen.stderr.closed
        ):
            time.sleep(0.01)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start ``phalanx`` subprocesses; any still alive at the end of the test is killed."""
    procs: list[Proc] = []

    def start(state: Path, *args: str) -> Proc:
        p = subprocess.Popen(
            _cmd(state, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,  # its own process group: a terminal's Ctrl-C can be sent
        )
        proc = Proc(p)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)


def _resume(spawn: Any, state: Path, rid: str) -> tuple[int, Proc, float]:
    t0 = time.monotonic()
    proc = spawn(state, "resume", rid)
    rc = proc.wait(RUN_TIMEOUT)
    return rc, proc, time.monotonic() - t0


# -- reading the journal -------------------------------------------------------------------
@dataclass
class Journal:
    """A snapshot of one run's rows, read with sqlite3 alone."""

    run: dict[str, Any]
    tasks: dict[str, dict[str, Any]]  # task_id -> {state, needs, error_class}
    results: dict[str, dict[str, Any]]  # task_id -> {attempt_id, created_at, output}
    result_rows: int
    attempts: list[dict[str, Any]]
    succeeded_events: dict[str, int]  # task_id -> number of task_succeeded events
    integrity: str

    def attempts_of(self, tid: str) -> list[dict[str, Any]]:
        return [a for a in self.attempts if a["task_id"] == tid]

    @property
    def succeeded(self) -> set[str]:
        return {t for t, r in self.tasks.items() if r["state"] == "succeeded"}


def read_journal(state: Path, rid: str) -> Journal:
    db = sqlite3.connect(state / "journal.sqlite", timeout=30)
    try:
        db.row_factory = sqlite3.Row
        run = db.execute("SELECT * FROM runs WHERE run_id = ?", (rid,)).fetchone()
        assert run is not None, f"run {rid} is not in the journal"
        tasks = {
            r["task_id"]: {
                "state": r["state"],
                "needs": json.loads(r["needs_json"]),
                "error_class": r["error_class"],
            }
            for r in db.execute("SELECT * FROM tasks WHERE run_id = ?", (rid,))
        }
        rows = db.execute(
            "SELECT task_id, attempt_id, created_at, output FROM results WHERE run_id = ?", (rid,)
        ).fetchall()
        attempts = [
            dict(r)
            for r in db.execute(
                "SELECT attempt_id, task_id, session, started_at, outcome FROM attempts"
                " WHERE run_id = ? ORDER BY attempt_id",
                (rid,),
            )
        ]
        succeeded_events: dict[str, int] = {}
        for (data,) in db.execute(
            "SELECT data FROM events WHERE run_id = ? AND type = 'task_succeeded'", (rid,)
        ):
            tid = json.loads(data)["task_id"]
            succeeded_events[tid] = succeeded_events.get(tid, 0) + 1
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        return Journal(
            run=dict(run),
            tasks=tasks,
            results={r["task_id"]: dict(r) for r in rows},
            result_rows=len(rows),
            attempts=attempts,
            succeeded_events=succeeded_events,
            integrity=integrity,
        )
    finally:
        db.close()


def assert_finished_consistently(j: Journal, state: Path, rid: str, n_tasks: int) -> None:
    """Every invariant a finished run must satisfy, whatever happened on its way."""
    assert j.integrity == "ok"
    assert len(j.tasks) == n_tasks
    not_terminal = {t: r["state"] for t, r in j.tasks.items() if r["state"] not in TERMINAL}
    assert not not_terminal, f"tasks left unfinished: {not_terminal}"
    assert j.run["status"] == ("succeeded" if len(j.succeeded) == n_tasks else "failed")

    # Exactly one result per succeeded task, none for the others.
    assert set(j.results) == j.succeeded
    assert j.result_rows == len(j.succeeded)

    # At most one successful attempt per task; a succeeded task's is the one its result names.
    by_task: dict[str, list[int]] = {}
    for a in j.attempts:
        if a["outcome"] == "succeeded":
            by_task.setdefault(a["task_id"], []).append(a["attempt_id"])
    twice = {t: ids for t, ids in by_task.items() if len(ids) > 1}
    assert not twice, f"tasks that succeeded more than once: {twice}"
    assert set(by_task) == j.succeeded
    for tid in j.succeeded:
        assert by_task[tid] == [j.results[tid]["attempt_id"]], tid
    twice_logged = {t: n for t, n in j.succeeded_events.items() if n > 1}
    assert not twice_logged, f"task_succeeded logged more than once: {twice_logged}"
    assert set(j.succeeded_events) == j.succeeded

    # The retry budget holds across sessions: attempts lost to a crash don't count, failed
    # ones are neither forgotten nor exceeded.
    for tid, row in j.tasks.items():
        failed = sum(1 for a in j.attempts_of(tid) if a["outcome"] == "failed")
        assert failed <= MAX_ATTEMPTS, f"{tid}: {failed} failed attempts"
        if row["state"] == "failed":
            assert failed >= 1, tid
            if row["error_class"] == "server_error":  # retryable: it used its whole budget
                assert failed == MAX_ATTEMPTS, f"{tid} gave up after {failed} attempts"

    # Dependency order: a task succeeds only after all its needs did, and none of its
    # attempts (in any session) started before each need's result was recorded.
    for tid, row in j.tasks.items():
        if row["state"] == "succeeded":
            failed_needs = [n for n in row["needs"] if n not in j.succeeded]
            assert not failed_needs, f"{tid} succeeded although {failed_needs} did not"
        elif row["state"] == "skipped":
            assert any(n not in j.succeeded for n in row["needs"]), f"{tid} skipped for nothing"
        for a in j.attempts_of(tid):
            for need in row["needs"]:
                assert need in j.results, f"{tid} attempt {a['attempt_id']} ran before {need}"
                assert a["started_at"] >= j.results[need]["created_at"], (
                    f"{tid} attempt {a['attempt_id']} started before its need {need} succeeded"
                )

    # One output file per succeeded task, holding the journaled output.
    outputs = state / "runs" / rid / "outputs"
    files = {p.name.split(".")[0]: p for p in outputs.iterdir()}
    assert set(files) == j.succeeded
    assert len(files) == len(j.succeeded)
    for tid, path in files.items():
        assert path.read_text(encoding="utf-8") == j.results[tid]["output"], tid


def assert_prior_kept(before: Journal, after: Journal, resume_progress: str) -> None:
    """What an earlier session finished is kept as is and not run again."""
    for tid, res in before.results.items():
        assert after.results[tid] == res, f"{tid}: its result changed on resume"
        rerun = [a for a in after.attempts_of(tid) if a["session"] > before.run["sessions"]]
        assert not rerun, f"{tid} succeeded before the resume but was run again: {rerun}"
    for tid, row in before.tasks.items():
        if row["state"] in ("failed", "skipped"):
            assert after.tasks[tid]["state"] == row["state"], tid
            rerun = [a for a in after.attempts_of(tid) if a["session"] > before.run["sessions"]]
            assert not rerun, f"{tid} was {row['state']} before the resume but was run again"
    # Nor reported again as a fresh success by the resumed session.
    resumed_ok = {
        line.split("✓", 1)[1].split()[0]
        for line in resume_progress.splitlines()
        if _is_task_line(line) and "✓" in line
    }
    assert not resumed_ok & set(before.results)


def _plan(tmp_path: Path, n: int, **kwargs: Any) -> str:
    return str(write_plan(tmp_path / "plan.yaml", sim_plan(n, deps="layered", **kwargs)))


# -- 1. kill -9 at a random moment, then resume ---------------------------------------------
KILL_TASKS = 300
FAULTS = {"server_error": 0.04, "auth": 0.01}


@pytest.mark.parametrize(
    ("seed", "faults"),
    [(1, None), (2, None), (3, None), (4, FAULTS), (5, FAULTS)],
)
def test_sigkill_then_resume(
    tmp_path: Path, state: Path, spawn: Any, seed: int, faults: dict[str, float] | None
) -> None:
    _kill_then_resume(tmp_path, state, spawn, seed, faults)


@pytest.mark.parametrize("seed", [11, 12])
def test_sigkill_then_resume_with_the_journals_writer_process(
    tmp_path: Path, state: Path, spawn: Any, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, with every batch committed by the journal's writer process (a large
    run's, from its first batch here): killed with its parent, it leaves nothing half
    written and commits nothing after it."""
    monkeypatch.setenv(PROCESS_ENV, "0")
    _kill_then_resume(tmp_path, state, spawn, seed, FAULTS)


def _kill_then_resume(
    tmp_path: Path, state: Path, spawn: Any, seed: int, faults: dict[str, float] | None
) -> None:
    rid = f"kill-{seed}"
    plan = _plan(tmp_path, KILL_TASKS, agents=8, latency_ms=45, faults=faults, seed=seed)
    proc = spawn(state, "run", plan, "--run-id", rid)
    proc.wait_first_task_line()
    time.sleep(random.Random(seed).uniform(0.3, 2.0))
    proc.popen.send_signal(signal.SIGKILL)
    rc = proc.wait(10)
    # -9 normally; 0/1 only if the run had already ended by itself.
    assert rc in (-signal.SIGKILL, 0, 1), proc.stderr

    before = read_journal(state, rid)
    assert before.integrity == "ok"
    assert set(before.results) == before.succeeded  # written in one transaction

    rc, res, _ = _resume(spawn, state, rid)
    after = read_journal(state, rid)
    all_ok = len(after.succeeded) == KILL_TASKS
    assert rc == (0 if all_ok else 1), res.stderr
    if faults is None:
        assert rc == 0, res.stderr[-2000:]
    assert _not_progress(res.stderr) == [], res.stderr  # no warning, no error
    if before.run["status"] == "succeeded":  # it ended before the kill: nothing to resume
        assert after.run == before.run, res.stderr
    else:
        assert after.run["sessions"] == before.run["sessions"] + 1
    assert_finished_consistently(after, state, rid, KILL_TASKS)
    assert_prior_kept(before, after, res.stderr)


def test_sigkill_of_the_resume_too(tmp_path: Path, state: Path, spawn: Any) -> None:
    """A crash of the resumed session is survived like the first one."""
    rid = "kill-twice"
    plan = _plan(tmp_path, KILL_TASKS, agents=8, latency_ms=45, faults=FAULTS, seed=7)
    proc = spawn(state, "run", plan, "--run-id", rid)
    proc.wait_first_task_line()
    time.sleep(0.4)
    proc.popen.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = read_journal(state, rid)

    again = spawn(state, "resume", rid)
    again.wait_first_task_line()
    time.sleep(0.4)
    again.popen.send_signal(signal.SIGKILL)
    again.wait(10)
    second = read_journal(state, rid)
    assert second.integrity == "ok"
    assert set(second.results) == second.succeeded
    assert_prior_kept(first, second, again.stderr)

    rc, res, _ = _resume(spawn, state, rid)
    after = read_journal(state, rid)
    assert rc == (0 if len(after.succeeded) == KILL_TASKS else 1), res.stderr
    assert after.run["sessions"] == 3
    assert_finished_consistently(after, state, rid, KILL_TASKS)
    assert_prior_kept(second, after, res.stderr)
    assert_prior_kept(first, after, res.stderr)


# -- 2. Ctrl-C / SIGTERM: exit 130 / 143, resumable, resume finishes ------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume(tmp_path: Path, state: Path, spawn: Any, sig: int) -> None:
    _interrupt_then_resume(tmp_path, state, spawn, sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_of_the_whole_group_with_the_journals_writer_process(
    tmp_path: Path, state: Path, spawn: Any, sig: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a terminal reaches every process of the group: the journal's writer process
    lets its run stop cleanly (it ignores the signal and ends when the run ends)."""
    monkeypatch.setenv(PROCESS_ENV, "0")
    _interrupt_then_resume(tmp_path, state, spawn, sig, group=True)


def _interrupt_then_resume(
    tmp_path: Path, state: Path, spawn: Any, sig: int, *, group: bool = False
) -> None:
    rid = f"int-{signal.Signals(sig).name}"
    n = 300
    plan = _plan(tmp_path, n, agents=8, latency_ms=45)
    proc = spawn(state, "run", plan, "--run-id", rid)
    proc.wait_first_task_line()
    time.sleep(0.3)
    assert proc.popen.poll() is None, "the run ended before it could be interrupted"
    t0 = time.monotonic()
    if group:
        os.killpg(proc.popen.pid, sig)
    else:
        proc.popen.send_signal(sig)
    rc = proc.wait(STOP_TIMEOUT)
    assert time.monotonic() - t0 < STOP_TIMEOUT
    assert rc == (143 if sig == signal.SIGTERM else 130), proc.stderr[-2000:]
    assert f"phalanx resume {rid}" in proc.stderr, proc.stderr

    before = read_journal(state, rid)
    assert before.integrity == "ok"
    assert before.run["status"] == "interrupted"
    assert 0 < len(before.results) < n
    # A clean stop flushed the journal: every success it reported is in it.
    reported = {
        line.split("✓", 1)[1].split()[0] for line in proc.err if _is_task_line(line) and "✓" in line
    }
    assert reported == set(before.results)
    # ... and wrote the outputs of the tasks done so far.
    outputs = state / "runs" / rid / "outputs"
    assert {p.name.split(".")[0] for p in outputs.iterdir()} == set(before.results)

    rc, res, _ = _resume(spawn, state, rid)
    assert rc == 0, res.stderr[-2000:]
    after = read_journal(state, rid)
    assert after.run["status"] == "succeeded"
    assert after.run["sessions"] == 2
    assert_finished_consistently(after, state, rid, n)
    assert_prior_kept(before, after, res.stderr)


# -- 3. resuming a finished run does nothing ------------------------------------------------
def test_resume_of_finished_run_runs_nothing(tmp_path: Path, state: Path, spawn: Any) -> None:
    rid, n = "done", 150
    plan = _plan(tmp_path, n, agents=8, latency_ms=20)
    proc = spawn(state, "run", plan, "--run-id", rid)
    assert proc.wait(RUN_TIMEOUT) == 0, proc.stderr
    before = read_journal(state, rid)
    assert_finished_consistently(before, state, rid, n)

    rc, res, wall = _resume(spawn, state, rid)
    assert rc == 0, res.stderr[-2000:]
    assert wall < 15, f"resume of a finished run took {wall:.1f}s"
    after = read_journal(state, rid)
    assert after.attempts == before.attempts
    assert after.results == before.results
    assert after.run["status"] == "succeeded"
    assert after.run == before.run  # no new session, the same times: nothing changed
    assert after.succeeded_events == before.succeeded_events
    assert_finished_consistently(after, state, rid, n)
    assert_prior_kept(before, after, res.stderr)
    assert not [line for line in res.out if _is_task_line(line)], res.stderr
    assert res.err == [f"run {rid} already succeeded; nothing to resume"]


# -- 4. dependency order in an ordinary run -------------------------------------------------
def test_layered_run_respects_dependency_order(tmp_path: Path, state: Path, spawn: Any) -> None:
    rid, n = "layered", 200
    plan = _plan(tmp_path, n, agents=8, latency_ms=10)
    proc = spawn(state, "run", plan, "--run-id", rid)
    assert proc.wait(RUN_TIMEOUT) == 0, proc.stderr
    j = read_journal(state, rid)
    assert_finished_consistently(j, state, rid, n)
    assert j.run["sessions"] == 1
    assert len(j.attempts) == n  # no faults: one attempt per task
    assert any(row["needs"] for row in j.tasks.values())  # the check above had edges to check
    # The printed order agrees: no task is reported before its needs.
    order = [
        line.split("✓", 1)[1].split()[0] for line in proc.err if _is_task_line(line) and "✓" in line
    ]
    assert len(order) == n
    pos = {tid: i for i, tid in enumerate(order)}
    for tid, row in j.tasks.items():
        for need in row["needs"]:
            assert pos[need] < pos[tid], f"{tid} reported before its need {need}"


def test_status_watch_follows_a_live_run_from_another_process(tmp_path: Path) -> None:
    """`phalanx status RUN --watch` reads the journal while another process writes it."""
    state = tmp_path / "state"
    # ~3 s of run: the watcher, a new process, starts well before the end even on a busy machine
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(60, agents=4, latency_ms=200))
    env = {**os.environ, "PHALANX_STATE_DIR": str(state)}
    cmd = [sys.executable, "-m", "phalanx"]
    runner = subprocess.Popen(
        [*cmd, "run", str(plan), "--run-id", "watched", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _has_run(state, "watched") and time.monotonic() < deadline:
            time.sleep(0.05)
        watch = subprocess.run(
            [*cmd, "status", "watched", "--watch", "--interval", "0.2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        runner.wait(timeout=60)
    assert watch.returncode == 0, watch.stderr
    frames = watch.stdout.count("Level 3")
    assert frames >= 2  # it redrew while the run went on
    assert "Tasks: 60 done" in watch.stdout.rsplit("Level 1", 1)[-1]


def _has_run(state: Path, run_id: str) -> bool:
    try:
        db = sqlite3.connect(state / "journal.sqlite", timeout=1)
        try:
            row = db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return row is not None


# -- many crashes: random moments and commit boundaries of a 500-task run ------------------
CRASH_TASKS = 500


def _crash_and_resume(
    tmp_path: Path, state: Path, spawn: Any, rid: str, kill_at: float | None
) -> None:
    plan = _plan(tmp_path, CRASH_TASKS, agents=8, latency_ms=8)
    proc = spawn(state, "run", plan, "--run-id", rid)
    if kill_at is not None:
        proc.wait_first_task_line()
        time.sleep(kill_at)
        proc.popen.send_signal(signal.SIGKILL)
    rc = proc.wait(RUN_TIMEOUT)
    assert rc in (-signal.SIGKILL, 0), proc.stderr
    before = read_journal(state, rid)
    assert before.integrity == "ok"
    assert set(before.results) == before.succeeded
    rc, res, _ = _resume(spawn, state, rid)
    assert rc == 0, res.stderr[-2000:]
    after = read_journal(state, rid)
    assert len(after.succeeded) == CRASH_TASKS
    assert_finished_consistently(after, state, rid, CRASH_TASKS)
    assert_prior_kept(before, after, res.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("point", range(20))
def test_sigkill_at_random_points(tmp_path: Path, state: Path, spawn: Any, point: int) -> None:
    """SIGKILL at 20 random moments of a 500-task run; each resume ends it exactly."""
    kill_at = random.Random(1000 + point).uniform(0.0, 0.8)
    _crash_and_resume(tmp_path, state, spawn, f"crash-{point}", kill_at)


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["inline", "process"])
@pytest.mark.parametrize("commits", [1, 2, 3, 5, 8, 13])
def test_sigkill_at_commit_boundaries(
    tmp_path: Path,
    state: Path,
    spawn: Any,
    commits: int,
    writer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies right after its Nth committed batch of events (the run lasts ~1.3 s:
    about 25 batches of 50 ms), committed in its own thread or by the journal's writer
    process (which then kills its parent right after that commit)."""
    monkeypatch.setenv("PHALANX_TEST_KILL_AFTER_COMMITS", str(commits))
    monkeypatch.setenv(PROCESS_ENV, "0" if writer == "process" else "")
    plan = _plan(tmp_path, CRASH_TASKS, agents=8, latency_ms=20)
    rid = f"boundary-{commits}-{writer}"
    proc = spawn(state, "run", plan, "--run-id", rid)
    assert proc.wait(RUN_TIMEOUT) == -signal.SIGKILL, proc.stderr
    monkeypatch.delenv("PHALANX_TEST_KILL_AFTER_COMMITS")
    before = read_journal(state, rid)
    assert before.integrity == "ok"
    assert set(before.results) == before.succeeded
    rc, res, _ = _resume(spawn, state, rid)
    assert rc == 0, res.stderr[-2000:]
    after = read_journal(state, rid)
    assert len(after.succeeded) == CRASH_TASKS
    assert_finished_consistently(after, state, rid, CRASH_TASKS)
    assert_prior_kept(before, after, res.stderr)

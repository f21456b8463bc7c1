"""The journal's writer process (issue 22): a large run's batches are committed by a process
of the journal's own, on another core. The tables end exactly as when committed in the
caller's thread (``flush()`` returning once everything handed over is committed, a batch
that fails rolled back whole and raised once: tests/test_journal_writer.py, for the thread
and the process); a writer that is gone is raised, never silent;
it dies with its parent and commits nothing for a dead one; results are told to
``on_commit`` only once committed; a journal used from another thread never starts one."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import new_run, sim_plan, writer_process_ready
from phalanx import Plan
from phalanx.events import AttemptStarted, Event, RunStarted, TaskInfo, TaskSucceeded
from phalanx.exceptions import JournalError
from phalanx.journal import PROCESS_ENV, Journal, _ProcessWriter

SRC = Path(__file__).resolve().parents[1] / "src"


def _journal(path: Path, **kw: Any) -> Journal:
    journal = Journal(path, **kw)
    new_run(journal, "r", task_count=3)
    journal.append(
        "r",
        1,
        RunStarted(
            ts=1.0, run_id="r", plan="p", session=1, policy="best_fit", simulated=True,
            agents=(), tasks=tuple(TaskInfo(id=f"t{i}", title="t", category="other")
                                   for i in range(3)),
        ),
    )  # fmt: skip
    return journal


def _success(journal: Journal, task: str, aid: int, output: str = "ok") -> None:
    journal.append(
        "r", 1, AttemptStarted(ts=2.0, task_id=task, attempt_id=aid, attempt_no=1, agent="a")
    )
    journal.append(
        "r", 1, TaskSucceeded(ts=3.0, task_id=task, attempt_id=aid, agent="a", output=output)
    )


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def _dump(path: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}
        out["runs"] = [repr(r) for r in db.execute("SELECT status, reason, finished_at FROM runs")]
        return out  # (a run's row is made with the time it was made at)
    finally:
        db.close()


def test_the_tables_end_as_when_committed_in_the_callers_thread(
    tmp_path: Path, state: Path
) -> None:
    import phalanx

    rec = _Recorder()
    data = sim_plan(60, agents=4, faults={"server_error": 0.2, "auth": 0.05}, max_attempts=2)
    asyncio.run(phalanx.run(Plan.from_dict(data), state=state, sinks=[rec]))
    assert {"attempt_finished", "task_failed", "retry_scheduled"} <= {e.type for e in rec.events}
    for name, after in (("inline.sqlite", None), ("process.sqlite", 0)):
        journal = Journal(tmp_path / name, batch_size=16, process_after=after)
        new_run(journal, "r", task_count=60)
        for e in rec.events:
            journal.append("r", 1, e)
            journal.flush_if_full()
        journal.close()
    assert _dump(tmp_path / "process.sqlite") == _dump(tmp_path / "inline.sqlite")


def test_results_are_told_only_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = writer_process_ready(_journal(path, process_after=0))
    told: list[tuple[str, bool]] = []

    def on_commit(rows: list[tuple[Any, ...]]) -> None:
        other = sqlite3.connect(path)
        try:
            for row in rows:
                found = other.execute("SELECT 1 FROM results WHERE task_id = ?", (row[1],))
                told.append((row[1], found.fetchone() is not None))
        finally:
            other.close()

    journal.on_commit = on_commit
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)
    journal.flush()
    assert isinstance(journal._writer, _ProcessWriter)
    assert sorted(told) == [("t0", True), ("t1", True), ("t2", True)]
    journal.close()


def test_a_writer_process_that_is_gone_is_raised_not_silent(tmp_path: Path) -> None:
    journal = writer_process_ready(_journal(tmp_path / "j.sqlite", process_after=0))
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    writer = journal._writer
    assert isinstance(writer, _ProcessWriter)
    writer._proc.kill()
    writer._proc.wait()
    _success(journal, "t1", 2)
    with pytest.raises(JournalError, match="writer process is gone"):
        journal.flush()
    with pytest.raises(JournalError):
        journal.close()


def test_it_dies_with_its_parent_and_commits_nothing_for_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import writer_process_ready
        from test_journal_process import _journal, _success
        journal = writer_process_ready(
            _journal(__import__("pathlib").Path({str(path)!r}), process_after=0))
        _success(journal, "t0", 1)
        journal.flush(wait=False)
        journal.flush()
        print(journal._writer._proc.pid, flush=True)
        i = 1
        while True:  # hands batches over until killed
            journal.append("r", 1, __import__("phalanx.events", fromlist=["x"]).AttemptStarted(
                ts=2.0, task_id="t1", attempt_id=i + 1, attempt_no=i, agent="a"))
            journal.flush(wait=False)
            i += 1
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.3)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    parent.stdout.close()
    assert _gone(child)
    db = sqlite3.connect(path)
    try:
        before = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        time.sleep(0.3)
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == before
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert before >= 2
    finally:
        db.close()


def test_a_journal_used_from_another_thread_commits_there(tmp_path: Path) -> None:
    """The process dies with the thread that started it: only the main thread starts one."""
    seen: list[object] = []

    def work() -> None:
        journal = _journal(tmp_path / "j.sqlite", process_after=0)
        _success(journal, "t0", 1)
        journal.flush(wait=False)
        seen.append(journal._writer or journal._starting)
        journal.close()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [None]


def test_a_small_journal_never_starts_one_and_the_environment_can_say_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROCESS_ENV, raising=False)
    journal = _journal(tmp_path / "a.sqlite")  # the default: after 4,096 rows
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    assert journal._writer is None
    journal.close()
    monkeypatch.setenv(PROCESS_ENV, "")
    journal = _journal(tmp_path / "b.sqlite")
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)
    assert journal._writer is None and journal._process_after is None
    journal.close()


def test_a_forked_copy_never_writes_into_its_parents_pipe(tmp_path: Path) -> None:
    journal = writer_process_ready(_journal(tmp_path / "j.sqlite", process_after=0))
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    assert isinstance(journal._writer, _ProcessWriter)
    pid = os.fork()
    if pid == 0:  # the copy: refused, never silent, and the parent's pipe untouched
        try:
            _success(journal, "t1", 2)
            journal.flush(wait=False)
        except JournalError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _success(journal, "t2", 3)
    journal.flush()
    assert set(journal.results("r")) == {"t0", "t2"}
    journal.close()


def test_a_journal_told_to_expect_many_rows_starts_the_process_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started when the run says how many rows it expects, the process is ready for the
    run's first batch (its plan's tasks), which no longer commits in the run's thread."""
    monkeypatch.delenv(PROCESS_ENV, raising=False)
    journal = _journal(tmp_path / "j.sqlite")  # the default: after 4,096 rows
    journal.expect(30_000)  # a run of 10,000 tasks
    starting = journal._starting
    assert starting is not None  # before any batch
    deadline = time.monotonic() + 20
    while starting.ready() is not True:  # (what a run's setup gives it, before its batches)
        assert time.monotonic() < deadline, "the writer process never said it was ready"
        time.sleep(0.005)
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    assert isinstance(journal._writer, _ProcessWriter)
    assert journal._inline_rows == 0  # nothing committed in this thread
    journal.flush()
    assert set(journal.results("r")) == {"t0"}
    journal.close()


def test_a_journal_expecting_few_rows_starts_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROCESS_ENV, raising=False)
    journal = _journal(tmp_path / "j.sqlite")
    journal.expect(300)  # a run of 100 tasks
    assert journal._starting is None
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    assert journal._writer is None and journal._inline_rows > 0
    journal.close()


# -- found by a review: each test failed before its fix -------------------------------------


def test_a_forked_copy_does_not_take_the_starting_processes_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy forked while the process starts (a tool or hook forking during a run's first
    moments) must not read its "ready": the run would then commit everything itself."""
    monkeypatch.delenv(PROCESS_ENV, raising=False)
    journal = _journal(tmp_path / "j.sqlite")
    journal.expect(30_000)  # the process starts now, before any batch
    starting = journal._starting
    assert starting is not None
    pid = os.fork()
    if pid == 0:
        time.sleep(1.0)  # the process has said it is ready by now
        try:
            starting.ready()  # what the copy's flush(wait=False) asks first
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while starting.ready() is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    try:
        assert isinstance(journal._writer, _ProcessWriter)
    finally:
        journal.close()


def test_a_process_with_over_1024_files_open_still_uses_its_writer(tmp_path: Path) -> None:
    """select() cannot watch a file number of 1024 or more; a fleet's sockets get there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"this process may open {hard} files at most")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        journal = writer_process_ready(_journal(tmp_path / "j.sqlite", process_after=0))
        _success(journal, "t0", 1)
        journal.flush(wait=False)
        assert isinstance(journal._writer, _ProcessWriter) and journal._writer._from > 1024
        journal.flush()
        assert set(journal.results("r")) == {"t0"}
        journal.close()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _Answer:
    """A value only an sqlite3 adapter knows (marshal does not)."""

    def __init__(self, text: str) -> None:
        self.text = text


def test_a_value_only_an_adapter_knows_is_committed_in_turn_and_told_right(
    tmp_path: Path,
) -> None:
    sqlite3.register_adapter(_Answer, lambda a: a.text)
    path = tmp_path / "j.sqlite"
    journal = writer_process_ready(_journal(path, process_after=0))
    told: list[str] = []
    journal.on_commit = lambda rows: told.extend(r[1] for r in rows)
    _success(journal, "t0", 1)
    journal.flush(wait=False)
    _success(journal, "t1", 2, output=_Answer("adapted"))  # type: ignore[arg-type]
    journal.flush(wait=False)
    _success(journal, "t2", 3)
    journal.flush()
    assert told == ["t0", "t1", "t2"]
    assert journal.results("r")["t1"].output == "adapted"
    journal.close()


def test_a_hook_that_raises_leaves_the_next_results_told_right(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = writer_process_ready(_journal(path, process_after=0))
    told: list[list[str]] = []

    def hook(rows: list[tuple[Any, ...]]) -> None:
        told.append([r[1] for r in rows])
        if len(told) == 1:
            raise RuntimeError("the hook failed once")

    journal.on_commit = hook
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the writer waits: the three batches go in one commit
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)
    time.sleep(0.3)
    lock.execute("ROLLBACK")
    lock.close()
    with pytest.raises(RuntimeError, match="failed once"):
        journal.flush()
    _success(journal, "t9", 9)
    journal.flush()
    assert told[-1] == ["t9"]
    assert isinstance(journal._writer, _ProcessWriter) and not journal._writer._inflight
    journal.close()


def test_a_row_sqlite_cannot_bind_fails_its_batch_not_the_writer(tmp_path: Path) -> None:
    journal = writer_process_ready(_journal(tmp_path / "j.sqlite", process_after=0))
    _success(journal, "t0", 1, output="half an emoji: \ud83d")  # an unpaired surrogate
    journal.flush(wait=False)
    with pytest.raises(Exception, match=r"surrogate|encode"):
        journal.flush()
    _success(journal, "t1", 2)
    journal.flush()  # the writer goes on
    assert set(journal.results("r")) == {"t1"}
    journal.close()


def test_its_input_ended_by_a_live_parent_it_exits(tmp_path: Path) -> None:
    journal = writer_process_ready(_journal(tmp_path / "j.sqlite", process_after=0))
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)
    writer = journal._writer
    assert isinstance(writer, _ProcessWriter)
    os.close(writer._to)  # no goodbye
    assert writer._proc.wait(timeout=10) == 0
    with pytest.raises(JournalError):
        journal.close()


def test_a_writer_that_cannot_start_costs_nothing_but_the_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "writer.py"
    broken.write_text("import sys; sys.exit(3)\n")
    monkeypatch.setattr(_ProcessWriter, "SCRIPT", broken)
    journal = _journal(tmp_path / "j.sqlite", process_after=0)
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)
        time.sleep(0.1)
    assert journal._writer is None  # it never said it was ready: committed here
    journal.flush()
    assert set(journal.results("r")) == {"t0", "t1", "t2"}
    journal.close()

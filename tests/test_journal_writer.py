"""The journal's writer thread: batches handed over without waiting are committed in order,
``flush()`` returns only once everything handed over is committed (another connection sees
it), a batch that fails is rolled back whole and its error raised to the next caller, reads
see what was handed over, and ``close`` ends the thread."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conftest import new_run, writer_process_ready
from phalanx.events import AttemptStarted, RunStarted, TaskInfo, TaskSucceeded
from phalanx.journal import THREAD_ENV, Journal, _ProcessWriter


def _journal(path: Path) -> Journal:
    return _started(Journal(path, writer_thread=True))


def _journal_default(path: Path) -> Journal:
    """A journal as a run opens it, with a run row and one batch flushed (a writer thread,
    if any, starts at the first batch)."""
    journal = _started(Journal(path))
    journal.flush()
    return journal


def _started(journal: Journal) -> Journal:
    new_run(journal, "r", task_count=3)
    journal.append(
        "r",
        1,
        RunStarted(
            ts=1.0,
            run_id="r",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=(),
            tasks=tuple(TaskInfo(id=f"t{i}", title="t", category="other") for i in range(3)),
        ),
    )
    return journal


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "phalanx-journal"]


def _success(journal: Journal, task: str, aid: int) -> None:
    journal.append(
        "r", 1, AttemptStarted(ts=2.0, task_id=task, attempt_id=aid, attempt_no=1, agent="a")
    )
    journal.append("r", 1, TaskSucceeded(ts=3.0, task_id=task, attempt_id=aid, agent="a"))


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_flush_returns_once_committed_and_close_ends_the_writer(
    tmp_path: Path, writer: str
) -> None:
    """The same for the writer thread and for the writer process (tests/test_journal_process.py
    has the process's own)."""
    before = len(_writers())
    journal = (
        _journal(tmp_path / "j.sqlite")
        if writer == "thread"
        else writer_process_ready(_started(Journal(tmp_path / "j.sqlite", process_after=0)))
    )
    for i in range(3):
        _success(journal, f"t{i}", i + 1)
        journal.flush(wait=False)  # handed over, in order
    if writer == "thread":
        assert len(_writers()) == before + 1
    else:
        assert isinstance(journal._writer, _ProcessWriter)
        pid = journal._writer._proc.pid
    assert set(journal.results("r")) == {"t0", "t1", "t2"}  # a read sees what was handed over
    _success(journal, "t0", 9)  # a second success of t0: its batch must fail whole
    journal.flush(wait=False)
    journal.append(
        "r", 1, AttemptStarted(ts=4.0, task_id="t1", attempt_id=10, attempt_no=2, agent="a")
    )
    with pytest.raises(sqlite3.IntegrityError):  # raised once, to the next caller
        journal.flush()
    journal.flush()  # later batches go on
    other = sqlite3.connect(tmp_path / "j.sqlite")  # committed: another connection sees it
    try:
        ids = [r[0] for r in other.execute("SELECT attempt_id FROM attempts ORDER BY 1")]
        assert ids == [1, 2, 3, 10]
        results = other.execute("SELECT task_id, attempt_id FROM results ORDER BY 1").fetchall()
        assert results == [("t0", 1), ("t1", 2), ("t2", 3)]
    finally:
        other.close()
    journal.close()
    assert len(_writers()) == before
    if writer == "process":
        with pytest.raises(ProcessLookupError):  # ended and waited for
            os.kill(pid, 0)


def test_a_journal_that_only_reads_starts_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = _journal(path)
    journal.close()
    before = len(_writers())
    reader = Journal(path, writer_thread=True)
    try:
        assert reader.get_run("r").status == "created"
        assert len(_writers()) == before
    finally:
        reader.close()


def test_the_writer_thread_is_off_unless_the_environment_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off by default (on 2 cores it cost CPU and saved no wall time: docs/benchmarks.md);
    $PHALANX_JOURNAL_THREAD=1 turns it on."""
    before = len(_writers())
    monkeypatch.delenv(THREAD_ENV, raising=False)
    plain = _journal_default(tmp_path / "a.sqlite")
    assert len(_writers()) == before
    plain.close()
    monkeypatch.setenv(THREAD_ENV, "1")
    threaded = _journal_default(tmp_path / "b.sqlite")
    assert len(_writers()) == before + 1
    threaded.close()
    assert len(_writers()) == before


def test_batches_committed_together_then_one_by_one_write_the_same_rows(
    tmp_path: Path,
) -> None:
    """When batches committed together fail, each is committed again on its own, with the
    rows it had (found by a review: the retry wrote a second success over the first)."""
    path = tmp_path / "j.sqlite"
    journal = _journal(path)
    journal.flush()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the thread waits: both batches go in one commit
    journal.append(
        "r", 1, AttemptStarted(ts=2.0, task_id="t0", attempt_id=1, attempt_no=1, agent="a")
    )
    journal.append(
        "r", 1, TaskSucceeded(ts=3.0, task_id="t0", attempt_id=1, agent="a", output="ok")
    )
    journal.flush(wait=False)
    journal.append(
        "r", 1, AttemptStarted(ts=2.0, task_id="t0", attempt_id=2, attempt_no=2, agent="a")
    )
    journal.append(
        "r", 1, TaskSucceeded(ts=3.0, task_id="t0", attempt_id=2, agent="a", output="dup")
    )
    journal.flush(wait=False)
    time.sleep(0.3)
    lock.execute("ROLLBACK")
    lock.close()
    with pytest.raises(sqlite3.IntegrityError):
        journal.flush()
    assert {k: r.output for k, r in journal.results("r").items()} == {"t0": "ok"}
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT attempt_id FROM attempts").fetchall() == [(1,)]
    finally:
        other.close()
    journal.close()

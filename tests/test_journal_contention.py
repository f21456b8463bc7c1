"""The journal under contention: 64 concurrent writers x 1000 events, 0 ``database is locked``.

64 processes (spawned, so each has its own interpreter, SQLite connection and file locks)
open their own :class:`Journal` on one file and append 1000 events each for their own run,
flushing in batches of varying size (one ``BEGIN IMMEDIATE`` transaction per batch), all
released at once. Every event must land, in order, and the file must pass
``PRAGMA integrity_check``. A second test does the same with 64 threads in one process.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from phalanx.events import AttemptFinished, AttemptStarted, ToolCalled
from phalanx.journal import Journal

WRITERS = 64
EVENTS = 1000


def _events(run: str, n: int) -> list[Any]:
    out: list[Any] = []
    attempt = 0
    while len(out) < n:
        attempt += 1
        now = time.time()
        out.append(
            AttemptStarted(
                ts=now, task_id=f"t{attempt}", attempt_id=attempt, attempt_no=1, agent=run
            )
        )
        out.append(
            ToolCalled(
                ts=now,
                task_id=f"t{attempt}",
                attempt_id=attempt,
                agent=run,
                tool="read_file",
                ok=True,
                turn=len(out),
            )
        )
        out.append(
            AttemptFinished(
                ts=now,
                task_id=f"t{attempt}",
                attempt_id=attempt,
                agent=run,
                ok=False,
                duration=0.0,
                error_class="server_error",
                error="boom",
            )
        )
    return out[:n]


def _write(path: str, index: int, start: Any) -> None:
    """One writer: its own Journal; flushes in batches of 1..97 events."""
    run = f"run-{index:02d}"
    try:
        journal = Journal(path)
        start.wait(60)
        batch = 1 + (index * 7) % 97
        for k, event in enumerate(_events(run, EVENTS), 1):
            journal.append(run, 1, event)
            if k % batch == 0:
                journal.flush()
        journal.close()
    except BaseException:
        Path(f"{path}.err-{index}").write_text(traceback.format_exc())
        raise


def _check(path: Path) -> None:
    errors = sorted(path.parent.glob(f"{path.name}.err-*"))
    assert not errors, errors[0].read_text()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    (total,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    assert total == WRITERS * EVENTS
    per_run = dict(db.execute("SELECT run_id, COUNT(*) FROM events GROUP BY run_id").fetchall())
    assert per_run == {f"run-{i:02d}": EVENTS for i in range(WRITERS)}
    for i in range(0, WRITERS, 9):  # each writer's events are in its own order
        turns = [
            t
            for (t,) in db.execute(
                "SELECT json_extract(data, '$.turn') FROM events WHERE run_id = ?"
                " AND type = 'tool_called' ORDER BY seq",
                (f"run-{i:02d}",),
            )
        ]
        assert turns == sorted(turns) and len(turns) == len(set(turns))
    (attempts,) = db.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'failed'").fetchone()
    assert attempts == WRITERS * (EVENTS // 3)
    db.close()


def test_64_processes_x_1000_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()  # the schema exists before the writers race
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_write, args=(str(path), i, start), daemon=True) for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join(240)
    wall = time.perf_counter() - t0
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"writers still running after 240 s: {alive}"
    _check(path)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    print(f"\n64 processes x 1000 events: {wall:.2f}s after release")


def test_64_threads_x_1000_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    start = threading.Event()
    threads = [
        threading.Thread(target=_write, args=(str(path), i, start), daemon=True)
        for i in range(WRITERS)
    ]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join(240)
    wall = time.perf_counter() - t0
    assert not any(t.is_alive() for t in threads)
    _check(path)
    print(f"\n64 threads x 1000 events: {wall:.2f}s after release")

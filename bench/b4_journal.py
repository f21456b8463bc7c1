"""B4: journal throughput. The events of a real run (10,000 tasks: attempt started, attempt
finished, task succeeded, ...) are pushed through ``Journal.append`` with the run's flush
rule (``flush_if_full`` between events, a final ``flush``), into a fresh journal; events per
second sustained. Baseline: raw ``sqlite3`` ``executemany`` of the same rows (the events
table's rows, already serialised) into the same schema, same pragmas, one transaction per
batch of the journal's batch size. Target: >= 0.5x the baseline. The journal is opened as
a run opens it: its first 4,096 rows are committed in the caller's thread, the rest by its
writer process, on another core, which checkpoints the WAL when it has nothing to commit
(the raw baseline checkpoints inside its commits, SQLite's default); the final ``flush``
returns once everything is committed.

The journal also keeps the ``attempts``, ``tasks`` and ``results`` tables; the note says
what replaying every statement it sent (those tables' rows too, pre-serialised) costs raw,
which splits its time into SQLite's and its own."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phalanx import Plan
from phalanx.events import Event, event_to_json
from phalanx.journal import _SCHEMA, PROCESS_AFTER, Journal

from .common import (
    Config,
    Row,
    log,
    median,
    paired,
    phalanx_wall,
    profile,
    settle,
    sim_plan,
    spread,
    state_dir,
)

TARGET = 0.5
RUN_ID = "bench-b4"


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def capture(n_tasks: int, agents: int) -> list[Event]:
    """Every event of one sim run, in order."""
    rec = _Recorder()
    with state_dir() as d:
        asyncio.run(phalanx_wall(Plan.from_dict(sim_plan(n_tasks, agents, name="b4")), d, [rec]))
    return rec.events


def open_journal(folder: str, *, process_after: int | None = PROCESS_AFTER) -> Journal:
    """The journal as a run opens it (its writer process after ``process_after`` rows)."""
    journal = Journal(Path(folder) / "journal.sqlite", process_after=process_after)
    journal.create_run(
        run_id=RUN_ID,
        plan_name="b4",
        plan_source=None,
        plan={},
        options={},
        simulated=True,
        task_count=0,
    )
    return journal


def push(journal: Journal, events: Sequence[Event]) -> None:
    """What a run does with its events: append each, flush when a batch is full, and at
    the end."""
    for e in events:
        journal.append(RUN_ID, 1, e)
        journal.flush_if_full()
    journal.flush()


def journal_seconds(events: Sequence[Event], folder: str) -> float:
    journal = open_journal(folder)
    settle()
    t0 = time.perf_counter()
    push(journal, events)
    wall = time.perf_counter() - t0
    journal.close()
    return wall


def _raw_db(folder: str, name: str) -> sqlite3.Connection:
    db = sqlite3.connect(Path(folder) / name, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    return db


def raw_seconds(rows: Sequence[tuple[Any, ...]], folder: str, batch: int) -> float:
    db = _raw_db(folder, "raw.sqlite")
    settle()
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO events (run_id, session, ts, type, data) VALUES (?, ?, ?, ?, ?)",
            rows[i : i + batch],
        )
        db.execute("COMMIT")
    wall = time.perf_counter() - t0
    db.close()
    return wall


class _Recording:
    """A connection that records every statement sent through it (with its rows)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.calls: list[tuple[str, list[tuple[Any, ...]]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.calls.append((sql, [tuple(params)]))
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = [tuple(r) for r in rows]
        self.calls.append((sql, rows))
        return self.db.executemany(sql, rows)

    def close(self) -> None:
        self.db.close()


def recorded_statements(events: Sequence[Event], folder: str) -> list[tuple[str, list[Any]]]:
    """Every statement the journal sends to write ``events``, rows included (its batches
    written in this thread, so that they go through the recorded connection)."""
    journal = open_journal(folder, process_after=None)
    recording = _Recording(journal._db)
    journal._db = recording  # type: ignore[assignment]
    push(journal, events)
    journal.close()
    return recording.calls


def replay_seconds(calls: Sequence[tuple[str, list[Any]]], folder: str) -> float:
    """Those statements replayed raw (``execute``/``executemany``, rows pre-serialised)."""
    db = _raw_db(folder, "replay.sqlite")
    db.execute(
        "INSERT INTO runs (run_id, plan_name, plan_json, options_json, status, created_at,"
        " updated_at) VALUES (?, 'b4', '{}', '{}', 'running', 0, 0)",
        (RUN_ID,),
    )
    settle()
    t0 = time.perf_counter()
    for sql, rows in calls:
        if len(rows) == 1 and not sql.startswith("INSERT INTO events"):
            db.execute(sql, rows[0])
        else:
            db.executemany(sql, rows)
    wall = time.perf_counter() - t0
    db.close()
    return wall


def run(cfg: Config) -> list[Row]:
    n_tasks, agents = cfg.size((10_000, 100), (100, 10))
    events = capture(n_tasks, agents)
    rows = [(RUN_ID, 1, e.ts, e.type, event_to_json(e)) for e in events]
    batch = int(inspect.signature(Journal).parameters["batch_size"].default)
    n = len(events)
    log(f"B4: {n:,} events captured from a {n_tasks:,}-task run")
    ours, base = [], []
    for i in range(cfg.repeats):
        with state_dir() as d:
            base.append(n / raw_seconds(rows, d, batch))
        with state_dir() as d:
            ours.append(n / journal_seconds(events, d))
        log(f"B4 run {i + 1}/{cfg.repeats}: raw {base[-1]:,.0f}/s, journal {ours[-1]:,.0f}/s")
    with state_dir() as d:
        calls = recorded_statements(events, d)
    replay = []
    for _ in range(cfg.repeats):
        with state_dir() as d:
            replay.append(n / replay_seconds(calls, d))
    statements = sum(len(r) for _, r in calls)
    b, p = median(base), median(ours)
    row = Row(
        id="B4",
        title=f"journal throughput: {n:,} events of a {n_tasks:,}-task run into SQLite",
        figure=f"{p:,.0f} events/s",
        baseline=f"{b:,.0f} events/s (raw executemany of the same rows, pre-serialised)",
        ratio=paired(ours, base),
        target=f">= {TARGET:g}x baseline",
        passed=paired(ours, base) >= TARGET,
        note=f"Journal {spread(ours, 'events/s', '{:,.0f}')}; raw "
        f"{spread(base, 'events/s', '{:,.0f}')}. A run writes "
        f"{n / n_tasks:.1f} events per task, so the journal keeps up with "
        f"{p / (n / n_tasks):,.0f} tasks/s. Besides the event rows the journal keeps the "
        f"attempts, tasks and results tables in the same transactions: {statements:,} rows "
        f"and updates in all, events included (an attempt that starts and ends in one batch "
        f"is one insert, a task's updates one update). Replaying exactly those statements "
        f"raw, pre-serialised (checkpoints inside the commits), sustains "
        f"{median(replay):,.0f} events/s "
        f"({median(replay) / b:.2f}x the baseline): that is what SQLite's work alone "
        f"allows. The journal encodes the events and folds the updates in the caller's "
        f"thread; after its first {PROCESS_AFTER:,} rows its writer process commits the "
        f"batches on another core and checkpoints the WAL when idle (the raw baseline "
        f"inside its commits); the figure ends when the final flush has committed."
        + (
            f" Why it misses: SQLite's work alone for those statements is "
            f"{median(replay) / b:.2f}x the baseline, under the {TARGET:g}x target, with no "
            "Python at all: the target cannot be met while the journal keeps the derived "
            "tables (what resume and status read) in the same transactions as the events."
            if median(replay) / b < TARGET
            else ""
        ),
        data={
            "events": n,
            "tasks": n_tasks,
            "journal_eps": ours,
            "raw_eps": base,
            "replay_eps": replay,
            "statement_rows": statements,
        },
    )
    if not row.passed and cfg.profile:
        with state_dir() as d:
            journal = open_journal(d)
            row.profile = profile(
                lambda: push(journal, events), f"Journal.append + flush of {n:,} events"
            )
            journal.close()
    return [row]

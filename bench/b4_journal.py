"""B4: journal throughput. The events of a real run (10,000 tasks: attempt started, attempt
finished, task succeeded, ...) are pushed through ``Journal.append`` with the run's flush
rule (``flush_if_full`` between events, a final ``flush``), into a fresh journal; events per
second sustained. Baseline: raw ``sqlite3`` ``executemany`` of the same rows (the events
table's rows, already serialised) into the same schema, same pragmas, one transaction per
batch of the journal's batch size. Target: >= 0.5x the baseline."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phalanx import Plan
from phalanx.events import Event, event_to_dict
from phalanx.journal import _SCHEMA, Journal, _dumps

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


def open_journal(folder: str) -> Journal:
    journal = Journal(Path(folder) / "journal.sqlite")
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


def raw_seconds(rows: Sequence[tuple[Any, ...]], folder: str, batch: int) -> float:
    db = sqlite3.connect(Path(folder) / "raw.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
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


def run(cfg: Config) -> list[Row]:
    n_tasks, agents = cfg.size((10_000, 100), (100, 10))
    events = capture(n_tasks, agents)
    rows = [(RUN_ID, 1, e.ts, e.type, _dumps(event_to_dict(e))) for e in events]
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
        f"{p / (n / n_tasks):,.0f} tasks/s.",
        data={"events": n, "tasks": n_tasks, "journal_eps": ours, "raw_eps": base},
    )
    if not row.passed and cfg.profile:
        with state_dir() as d:
            journal = open_journal(d)
            row.profile = profile(
                lambda: push(journal, events), f"Journal.append + flush of {n:,} events"
            )
            journal.close()
    return [row]

"""A run's plan lies in a row of its own (``run_plans``, schema 4): SQLite rewrites a whole
row on every update, and a run's row is updated by every session, heartbeat and status
change, so a 10,000-task plan (~1.5 MB of JSON) there cost 20-30 ms a change (issue 22).
A journal of schema 3 keeps its runs' plans when it is brought up to date."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import journal_sql, rewind_journal, sim_plan
from phalanx.exceptions import UsageError
from phalanx.journal import SCHEMA_VERSION, Journal
from phalanx.status.liveness import this_process

_PLAN = sim_plan(2000, agents=4)


def _new(journal: Journal, run_id: str, plan: dict = _PLAN) -> None:  # type: ignore[type-arg]
    journal.create_run(
        run_id=run_id, plan_name="p", plan_source=None, plan=plan, options={"seed": 1},
        simulated=True, task_count=len(plan["tasks"]),
    )  # fmt: skip


def test_the_plan_is_kept_apart_from_the_runs_row_and_read_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        _new(journal, "r1")
        _new(journal, "r2", sim_plan(3, agents=1))
        db = sqlite3.connect(tmp_path / "journal.sqlite")
        try:
            sizes = dict(db.execute("SELECT run_id, length(plan_json) FROM runs").fetchall())
            kept = dict(db.execute("SELECT run_id, length(plan_json) FROM run_plans").fetchall())
        finally:
            db.close()
        assert sizes == {"r1": 0, "r2": 0}  # the row every update rewrites stays small
        assert kept["r1"] > 100_000
        rec = journal.get_run("r1")
        assert rec.plan == json.loads(json.dumps(_PLAN))  # as given (JSON types)
        assert rec.options == {"seed": 1}
        assert [r.run_id for r, _ in journal.list_runs()] == ["r2", "r1"]
        assert journal.latest_run().plan["tasks"] == sim_plan(3, agents=1)["tasks"]
        with pytest.raises(UsageError, match="ambiguous"):  # a prefix names both
            journal.get_run("r")
    finally:
        journal.close()


def test_updates_of_a_runs_row_no_longer_rewrite_its_plan(tmp_path: Path) -> None:
    """A session, a heartbeat, the run's end and the owner's release change the run's row
    (its owner columns set, then cleared: the row changes size, and SQLite writes it
    again whole). Before, each such write took the plan with it: ~330 pages of WAL (4 KB
    each) for this plan, and a checkpoint of the lot soon after."""
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    try:
        _new(journal, "big", sim_plan(10_000, agents=4))
        before = os.path.getsize(f"{path}-wal")
        n = journal.begin_session("big", this_process())
        journal.heartbeat("big", n)
        journal.release("big", n)
        n = journal.begin_session("big", this_process())
        grown = (os.path.getsize(f"{path}-wal") - before) // 4096
        assert grown < 20, f"the run's row updates wrote {grown} pages"
        assert journal.get_run("big").sessions == 2
    finally:
        journal.close()


def test_a_schema_3_journal_keeps_its_plans(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    _new(journal, "old", sim_plan(5, agents=2))
    journal.close()
    rewind_journal(  # back to schema 3: the plan in the runs row
        path,
        "3",
        "UPDATE runs SET plan_json = (SELECT plan_json FROM run_plans WHERE run_id = 'old')",
        "DROP TABLE run_plans",
    )
    journal = Journal(path)
    try:
        assert journal.get_run("old").plan["tasks"] == sim_plan(5, agents=2)["tasks"]
    finally:
        journal.close()
    (version,) = journal_sql(path, "SELECT value FROM meta WHERE key = 'schema'")
    (left,) = journal_sql(path, "SELECT plan_json FROM runs WHERE run_id = 'old'")
    assert version == SCHEMA_VERSION == "4"
    assert left == ""  # moved, not copied
    again = Journal(path)  # opening it again changes nothing
    try:
        assert again.get_run("old").plan["tasks"] == sim_plan(5, agents=2)["tasks"]
    finally:
        again.close()


def test_a_run_an_older_process_created_after_the_migration_is_read(tmp_path: Path) -> None:
    """A phalanx of schema 3 that had the file open before another process migrated it
    still writes its plan into the runs row: that run is listed and read as before."""
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    plan = sim_plan(2, agents=1)
    db = sqlite3.connect(path)
    try:
        db.execute(
            "INSERT INTO runs (run_id, plan_name, plan_source, plan_json, options_json, status,"
            " simulated, task_count, created_at, updated_at)"
            " VALUES ('old', 'p', NULL, ?, '{}', 'running', 1, 2, 1.0, 1.0)",
            (json.dumps(plan),),
        )
        db.commit()
    finally:
        db.close()
    journal = Journal(path)
    try:
        assert [r.run_id for r, _ in journal.list_runs()] == ["old"]
        assert journal.get_run("old").plan["tasks"] == plan["tasks"]
        assert journal.latest_run().run_id == "old"
    finally:
        journal.close()

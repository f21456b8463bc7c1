"""The journal: SQLite (WAL), the single source of truth of every run.

Tables: ``runs`` (and ``run_plans``, each run's plan: the runs row changes often, and
SQLite writes a changed row whole), ``agents``, ``tasks``, ``attempts`` (one row per
attempt id, the fencing token), ``results`` (at most one per task: its primary key is the
task), ``approvals`` (at most one decision per task: whoever decides first, a person or the
timeout, wins; written by any process, read by the run's owner), and ``events`` (the
append-only log that status folds). Events are buffered and written in batches, one
transaction per batch, in order, by the caller's thread; a large run's (past
:data:`PROCESS_AFTER` rows) by the journal's writer process (``journal/writer.py``, on
another core: :class:`_ProcessWriter`; started as soon as the run says it expects that
many, :meth:`Journal.expect`); with ``$PHALANX_JOURNAL_THREAD=1`` by a writer thread with
its own connection. ``flush()`` waits for the commit; the run's periodic flushes do not. A
crash loses at most the tail not yet committed, which resume then redoes (at-least-once
attempts, exactly-once success).
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import fcntl
import json
import marshal
import os
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import (
    AgentTurn,
    ApprovalDecided,
    ApprovalRequested,
    AttemptFinished,
    AttemptStarted,
    Event,
    LoopResumed,
    RunFinished,
    RunStarted,
    TaskFailed,
    TasksAdded,
    TaskSkipped,
    TaskSucceeded,
    ToolCalled,
    ToolInDoubt,
    ToolStarted,
    event_from_dict,
    event_to_json,
)
from ..exceptions import JournalError, UsageError
from ..redaction import redact

__all__ = [
    "Decision",
    "Journal",
    "Owner",
    "RecordedCall",
    "RecordedLoop",
    "RecordedTurn",
    "ResultRow",
    "RunRecord",
]

SCHEMA_VERSION = "4"
# How a journal of an older schema becomes the current one: its statements, by version.
_MIGRATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    # 1 -> 2: a run records the process driving it (its owner) and that process's heartbeat
    "1": (
        "2",
        tuple(
            f"ALTER TABLE runs ADD COLUMN {column}"
            for column in (
                "owner_pid INTEGER",
                "owner_host TEXT",
                "owner_start TEXT",
                "owner_session INTEGER",
                "heartbeat_at REAL",
            )
        ),
    ),
    # 2 -> 3: the tool journal (tables agent_turns and tool_calls, made by _SCHEMA)
    "2": ("3", ()),
    # 3 -> 4: a run's plan moves to a row of its own (run_plans, made by _SCHEMA): SQLite
    # writes a row again whole when an update changes its size, as a session's start, the
    # run's end and the owner's release do (a 10,000-task plan's JSON, ~1.5 MB, went into
    # the WAL each time: 990 pages for those of one run; tests/test_journal_plans.py)
    "3": (
        "4",
        (
            "INSERT OR IGNORE INTO run_plans (run_id, plan_json)"
            " SELECT run_id, plan_json FROM runs WHERE plan_json != ''",
            "UPDATE runs SET plan_json = '' WHERE plan_json != ''",
        ),
    ),
}
# Crash tests set this to kill the process right after its Nth commit (a commit boundary).
_KILL_AFTER_COMMITS = int(os.environ.get("PHALANX_TEST_KILL_AFTER_COMMITS", "0") or 0)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, plan_name TEXT NOT NULL, plan_source TEXT,
    plan_json TEXT NOT NULL, options_json TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', simulated INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 0, task_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,
    owner_pid INTEGER, owner_host TEXT, owner_start TEXT, owner_session INTEGER,
    heartbeat_at REAL
);
CREATE TABLE IF NOT EXISTS run_plans (run_id TEXT PRIMARY KEY, plan_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    run_id TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, provider TEXT NOT NULL,
    style TEXT NOT NULL, skills_json TEXT NOT NULL, PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, task_id TEXT NOT NULL, title TEXT NOT NULL, category TEXT NOT NULL,
    needs_json TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    current_attempt INTEGER, agent TEXT, error_class TEXT, error TEXT, updated_at REAL,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, attempt_id INTEGER NOT NULL, task_id TEXT NOT NULL,
    attempt_no INTEGER NOT NULL, agent TEXT NOT NULL, session INTEGER NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, outcome TEXT NOT NULL DEFAULT 'running',
    error_class TEXT, error TEXT, status INTEGER, retry_after REAL,
    input_tokens INTEGER, output_tokens INTEGER, cache_read_tokens INTEGER,
    cache_write_tokens INTEGER, cost_usd REAL,
    PRIMARY KEY (run_id, attempt_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_success_per_task
    ON attempts (run_id, task_id) WHERE outcome = 'succeeded';
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, task_id TEXT NOT NULL, attempt_id INTEGER NOT NULL,
    agent TEXT NOT NULL, output TEXT NOT NULL, parsed_json TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, session INTEGER NOT NULL,
    ts REAL NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL, task_id TEXT NOT NULL, decision TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL NOT NULL, PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS agent_turns (
    run_id TEXT NOT NULL, attempt_id INTEGER NOT NULL, turn INTEGER NOT NULL,
    task_id TEXT NOT NULL, agent TEXT NOT NULL, text TEXT NOT NULL, calls_json TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (run_id, attempt_id, turn)
);
CREATE TABLE IF NOT EXISTS tool_calls (
    run_id TEXT NOT NULL, attempt_id INTEGER NOT NULL, turn INTEGER NOT NULL,
    idx INTEGER NOT NULL, task_id TEXT NOT NULL, agent TEXT NOT NULL, call_id TEXT NOT NULL,
    tool TEXT NOT NULL, writes INTEGER NOT NULL, args_digest TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, ok INTEGER, error_code TEXT, error TEXT,
    result_digest TEXT, result TEXT, duration REAL, from_attempt INTEGER,
    PRIMARY KEY (run_id, attempt_id, turn, idx)
);
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Owner:
    """The process driving a run: its pid, host name and start (an opaque token, equal
    only for the same process: a reused pid has another), the session it drives, and its
    last heartbeat (wall-clock time)."""

    pid: int
    host: str
    start: str | None = None
    session: int = 0
    heartbeat: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    run_id: str
    plan_name: str
    plan_source: str | None
    plan: dict[str, Any]
    options: dict[str, Any]
    status: str
    reason: str
    simulated: bool
    sessions: int
    task_count: int
    created_at: float
    updated_at: float
    finished_at: float | None
    owner: Owner | None = None  # while a process drives it (released when it ends)


_RUN_COLUMNS = (
    "run_id, plan_name, plan_source, COALESCE(run_plans.plan_json, runs.plan_json),"
    " options_json, status, reason, simulated, sessions, task_count, created_at, updated_at,"
    " finished_at"
)
_OWNER_COLUMNS = "owner_pid, owner_host, owner_start, owner_session, heartbeat_at"
# the plan from its own row (runs.plan_json is left empty: see the 3 -> 4 migration), else
# from the runs row (a run created by a process of schema 3 that had the file open before
# another migrated it)
_SELECT_RUNS = (
    f"SELECT {_RUN_COLUMNS}, {_OWNER_COLUMNS} FROM runs LEFT JOIN run_plans USING (run_id)"
)


def _owner(r: Sequence[Any]) -> Owner | None:
    """The owner from its five columns (none when no pid is recorded)."""
    if r[0] is None:
        return None
    return Owner(pid=r[0], host=r[1] or "", start=r[2], session=r[3] or 0, heartbeat=r[4])


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """A decision on a task awaiting approval: ``approved``, ``rejected`` or ``timed_out``,
    why, by whom (``cli``, ``dashboard``, ``api``, ``timeout``) and when."""

    task_id: str
    decision: str
    reason: str = ""
    by: str = ""
    at: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultRow:
    task_id: str
    attempt_id: int
    agent: str
    output: str
    parsed: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordedCall:
    """One tool call of a recorded model turn: ``done`` (its result is ``result``),
    ``in_doubt`` (it started and has no result) or ``not_started``."""

    index: int
    call_id: str
    tool: str
    arguments: Mapping[str, Any]
    state: str = "not_started"
    ok: bool = False
    result: str = ""
    error_code: str | None = None
    writes: bool = True
    args_digest: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordedTurn:
    """A model turn that asked for tools: what the model said, and its calls in order."""

    turn: int
    text: str
    calls: tuple[RecordedCall, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordedLoop:
    """The journaled agent loop of an interrupted attempt (what a resume continues)."""

    task_id: str
    attempt_id: int
    agent: str
    turns: tuple[RecordedTurn, ...]

    @property
    def in_doubt(self) -> list[tuple[RecordedTurn, RecordedCall]]:
        return [(t, c) for t in self.turns for c in t.calls if c.state == "in_doubt"]


def driven_by(run_id: str, owner: Owner) -> str:
    """The one line that refuses a run another live process drives."""
    return (
        f"run {run_id} is being driven by pid {owner.pid} on {owner.host or 'an unknown host'}"
        f" (session {owner.session}): wait for it to end, or stop it, then resume"
    )


def _recorded_call(index: int, call: Mapping[str, Any], row: Sequence[Any] | None) -> RecordedCall:
    """A call of a recorded turn, with what its ``tool_calls`` row says of it (if any)."""
    base = RecordedCall(
        index=index,
        call_id=str(call.get("id", "")),
        tool=str(call.get("name", "")),
        arguments=call.get("arguments") or {},
    )
    if row is None:
        return base
    finished, ok, result, code, writes, digest = row
    return RecordedCall(
        index=index,
        call_id=base.call_id,
        tool=base.tool,
        arguments=base.arguments,
        state="done" if finished is not None else "in_doubt",
        ok=bool(ok),
        result=result or "",
        error_code=code,
        writes=bool(writes),
        args_digest=digest,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


_json_str = json.encoder.encode_basestring_ascii  # what _dumps makes of a str, without its detour


def _event_text(e: Event) -> str:
    data = event_to_json(e)
    # errors and answers are redacted where they arise; a run's task titles come from the
    # plan as written, so they are checked here
    # (a grown task's prompt may come from a model: checked too)
    return redact(data) if e.type in ("run_started", "tasks_added") else data


THREAD_ENV = "PHALANX_JOURNAL_THREAD"  # 1: the journal commits its batches in a thread
# After how many event rows committed in the caller's thread a journal hands its batches to
# a writer process (empty: never); the crash tests set 0 to put every run through it
PROCESS_ENV = "PHALANX_JOURNAL_PROCESS_AFTER"
PROCESS_AFTER = 4096


class Journal:
    """One SQLite file holding every run of a project (``.phalanx/journal.sqlite``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 4096,
        writer_thread: bool | None = None,
        process_after: int | None = -1,
    ) -> None:
        """``writer_thread``: batches are committed by a thread of the journal's own (started
        at the first batch, joined by :meth:`close`), off the caller's thread; without it
        every flush writes in the caller's thread. Default: off, unless
        ``$PHALANX_JOURNAL_THREAD`` is 1. Measured on 2 cores (docs/benchmarks.md), the
        thread saves no wall time on a busy event loop and costs CPU: Python's sqlite3
        gives up the GIL for every row, so the loop and the writer hand it back and forth
        (a run on a fast disk with model latency gains ~10% wall time with it).

        ``process_after``: once this many event rows are committed in the caller's thread,
        this batch's included (a large run), the batches handed over without waiting
        (``flush(wait=False)``, as a run does between its commits) go to a writer process
        of the journal's own, which commits them on another core (:class:`_ProcessWriter`;
        no GIL shared). ``None``: never; default :data:`PROCESS_AFTER`, or
        ``$PHALANX_JOURNAL_PROCESS_AFTER`` (empty: never). Only from the main thread, and
        never with ``writer_thread``."""
        if writer_thread is None:
            writer_thread = os.environ.get(THREAD_ENV, "") == "1"
        if process_after == -1:
            after = os.environ.get(PROCESS_ENV, str(PROCESS_AFTER)).strip()
            process_after = int(after) if after else None
        self._process_after = None if writer_thread else process_after
        self._inline_rows = 0  # event rows committed in the caller's thread
        self._expected = 0  # event rows the caller expects to write (see expect)
        self.path = Path(path)
        self.batch_size = batch_size
        # Events are encoded and their table writes folded as they come: the buffer holds
        # only plain rows (no event objects kept alive until the flush)
        self._rows: list[tuple[str, int, float, str, str]] = []
        self._writes = _Writes()
        self._ops: list[_Writes | tuple[str, RunStarted | RunFinished]] = []
        self._threaded = writer_thread
        self._writer: _Writer | _ProcessWriter | None = None
        self._starting: _ProcessWriter | None = None  # started, not yet ready
        # Told the result rows of each batch once it is committed (a run's output files)
        self.on_commit: Callable[[list[tuple[Any, ...]]], None] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(self.path)
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._init_schema()
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the journal: {exc}") from None

    def _init_schema(self) -> None:
        with self._tx():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                return
            version = row[0]
            while version in _MIGRATIONS:  # an older journal: brought up to date, in place
                version, statements = _MIGRATIONS[version]
                for stmt in statements:
                    self._db.execute(stmt)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
            if version != SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: journal schema {version} is not {SCHEMA_VERSION}; "
                    "use a new --state-dir"
                )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Flush (committed when this returns), stop the writer thread, close."""
        try:
            self.flush()
        finally:
            for writer in (self._writer, self._starting):
                if writer is not None:
                    writer.stop()
            self._writer = self._starting = None
            self._db.close()

    def _written(self) -> None:
        """Wait until every batch handed to the writer is committed (what a read of the
        tables the events write must see); a no-op without one."""
        if self._writer is not None:
            self._writer.wait()

    # -- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        run_id: str,
        plan_name: str,
        plan_source: str | None,
        plan: Mapping[str, Any] | str,
        options: Mapping[str, Any],
        simulated: bool,
        task_count: int,
    ) -> None:
        """A new run's row. ``plan``: its data, or that data's JSON text already made
        (``phalanx.plan.file.plan_json``)."""
        now = time.time()
        text = plan if isinstance(plan, str) else _dumps(plan)
        try:
            with self._tx():
                self._db.execute(
                    "INSERT INTO runs (run_id, plan_name, plan_source, plan_json, options_json,"
                    " status, simulated, task_count, created_at, updated_at)"
                    " VALUES (?, ?, ?, '', ?, 'created', ?, ?, ?, ?)",
                    (
                        run_id,
                        plan_name,
                        plan_source,
                        _dumps(options),
                        int(simulated),
                        task_count,
                        now,
                        now,
                    ),
                )
                self._db.execute(  # a key pasted into a prompt is not kept
                    "INSERT INTO run_plans (run_id, plan_json) VALUES (?, ?)",
                    (run_id, redact(text)),
                )
        except sqlite3.IntegrityError:
            raise UsageError(f"run {run_id!r} already exists in {self.path}") from None

    def begin_session(
        self,
        run_id: str,
        owner: Owner | None = None,
        *,
        alive: Callable[[Owner], bool] | None = None,
    ) -> int:
        """Start the run's next session, driven by ``owner`` (recorded with the new session
        number and a first heartbeat). With ``alive``, the recorded owner is asked first, in
        the same transaction: while it lives the run is refused (:class:`UsageError`, one
        line naming its pid and host), so two processes never drive one run."""
        now = time.time()
        with self._tx():
            if alive is not None:
                self._refuse_if_driven(run_id, alive)
            self._db.execute(
                "UPDATE runs SET sessions = sessions + 1, status = 'running', updated_at = ?,"
                " finished_at = NULL WHERE run_id = ?",
                (now, run_id),
            )
            (n,) = self._db.execute(
                "SELECT sessions FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if owner is not None:
                self._db.execute(
                    f"UPDATE runs SET ({_OWNER_COLUMNS}) = (?, ?, ?, ?, ?) WHERE run_id = ?",
                    (owner.pid, owner.host, owner.start, n, now, run_id),
                )
        return int(n)

    def _refuse_if_driven(self, run_id: str, alive: Callable[[Owner], bool]) -> None:
        row = self._db.execute(
            f"SELECT {_OWNER_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        owner = _owner(row) if row is not None else None
        if owner is not None and alive(owner):
            raise UsageError(driven_by(run_id, owner))

    def heartbeat(self, run_id: str, session: int) -> None:
        """Say the run's owner (of ``session``) is still there; a no-op once another session
        has taken the run over."""
        try:
            self._db.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND owner_session = ?",
                (time.time(), run_id, session),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: heartbeat of run {run_id}: {exc}") from None

    def release(self, run_id: str, session: int) -> None:
        """The owner of ``session`` stops driving the run (its last heartbeat is kept)."""
        self._db.execute(
            "UPDATE runs SET owner_pid = NULL, owner_host = NULL, owner_start = NULL,"
            " heartbeat_at = ? WHERE run_id = ? AND owner_session = ?",
            (time.time(), run_id, session),
        )

    def run_state(self, run_id: str) -> tuple[str, Owner | None]:
        """A run's status and owner only (cheap enough to ask four times a second)."""
        self._written()
        row = self._db.execute(
            f"SELECT status, {_OWNER_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path} (see 'phalanx runs')")
        return str(row[0]), _owner(row[1:])

    def get_run(self, run_id: str) -> RunRecord:
        self._written()
        rows = self._db.execute(
            f"{_SELECT_RUNS} WHERE run_id = ? OR run_id LIKE ? ORDER BY run_id",
            (run_id, run_id.replace("%", "") + "%"),
        ).fetchall()
        exact = [r for r in rows if r[0] == run_id]
        if exact:
            rows = exact
        if not rows:
            raise UsageError(f"no run {run_id!r} in {self.path} (see 'phalanx runs')")
        if len(rows) > 1:
            raise UsageError(f"run id {run_id!r} is ambiguous: {', '.join(r[0] for r in rows)}")
        return self._record(rows[0])

    def latest_run(self) -> RunRecord:
        self._written()
        row = self._db.execute(f"{_SELECT_RUNS} ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is None:
            raise UsageError(f"no runs yet in {self.path}")
        return self._record(row)

    def list_runs(self, limit: int = 50) -> list[tuple[RunRecord, dict[str, int]]]:
        self._written()
        rows = self._db.execute(
            f"{_SELECT_RUNS} ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(self._record(r), self.task_counts(r[0])) for r in rows]

    def task_counts(self, run_id: str) -> dict[str, int]:
        self._written()
        return dict(
            self._db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state", (run_id,)
            ).fetchall()
        )

    @staticmethod
    def _record(r: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            run_id=r[0],
            plan_name=r[1],
            plan_source=r[2],
            plan=json.loads(r[3]),
            options=json.loads(r[4]),
            status=r[5],
            reason=r[6],
            simulated=bool(r[7]),
            sessions=r[8],
            task_count=r[9],
            created_at=r[10],
            updated_at=r[11],
            finished_at=r[12],
            owner=_owner(r[13:18]),
        )

    # -- reading a run's state -------------------------------------------------------------
    def results(self, run_id: str) -> dict[str, ResultRow]:
        self._written()
        rows = self._db.execute(
            "SELECT task_id, attempt_id, agent, output, parsed_json FROM results WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return {
            r[0]: ResultRow(
                task_id=r[0],
                attempt_id=r[1],
                agent=r[2],
                output=r[3],
                parsed=json.loads(r[4]) if r[4] is not None else None,
            )
            for r in rows
        }

    def task_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        self._written()
        cur = self._db.execute(
            "SELECT task_id, state, attempts, agent, error_class, error FROM tasks"
            " WHERE run_id = ?",
            (run_id,),
        )
        return {
            r[0]: {
                "state": r[1],
                "attempts": r[2],
                "agent": r[3],
                "error_class": r[4],
                "error": r[5],
            }
            for r in cur.fetchall()
        }

    def finished_attempts(self, run_id: str) -> dict[str, int]:
        """Per task, how many attempts ended in failure (crash-interrupted ones don't count)."""
        self._written()
        return dict(
            self._db.execute(
                "SELECT task_id, COUNT(*) FROM attempts WHERE run_id = ? AND outcome = 'failed'"
                " GROUP BY task_id",
                (run_id,),
            ).fetchall()
        )

    def max_attempt_id(self, run_id: str) -> int:
        self._written()
        (n,) = self._db.execute(
            "SELECT COALESCE(MAX(attempt_id), 0) FROM attempts WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(n)

    def interrupted_loops(self, run_id: str) -> dict[str, RecordedLoop]:
        """Per task without a result: the journaled loop of its last interrupted attempt
        (outcome ``running`` or ``lost``, with recorded turns, no finished attempt after it)."""
        done = set(self.results(run_id))
        out: dict[str, RecordedLoop] = {}
        rows = self._db.execute(
            "SELECT task_id, attempt_id, agent, outcome FROM attempts WHERE run_id = ?"
            " ORDER BY attempt_id DESC",
            (run_id,),
        ).fetchall()
        closed: set[str] = set(done)
        for tid, aid, agent, outcome in rows:
            if tid in closed:
                continue
            if outcome not in ("running", "lost"):
                closed.add(tid)  # a finished attempt: the next one starts afresh
                continue
            loop = self.recorded_loop(run_id, aid, tid, agent)
            if loop is not None:
                out[tid] = loop
                closed.add(tid)
        return out

    def recorded_loop(
        self, run_id: str, attempt_id: int, task_id: str = "", agent: str = ""
    ) -> RecordedLoop | None:
        """An attempt's recorded model turns and tool calls (None when it has none)."""
        self._written()
        turns = self._db.execute(
            "SELECT turn, text, calls_json FROM agent_turns WHERE run_id = ? AND attempt_id = ?"
            " ORDER BY turn",
            (run_id, attempt_id),
        ).fetchall()
        if not turns:
            return None
        calls = {
            (r[0], r[1]): r[2:]
            for r in self._db.execute(
                "SELECT turn, idx, finished_at, ok, result, error_code, writes, args_digest"
                " FROM tool_calls WHERE run_id = ? AND attempt_id = ?",
                (run_id, attempt_id),
            )
        }
        recorded = tuple(
            RecordedTurn(
                turn=turn,
                text=text,
                calls=tuple(
                    _recorded_call(i, c, calls.get((turn, i)))
                    for i, c in enumerate(json.loads(calls_json))
                ),
            )
            for turn, text, calls_json in turns
        )
        return RecordedLoop(task_id=task_id, attempt_id=attempt_id, agent=agent, turns=recorded)

    def tool_calls(self, run_id: str) -> list[dict[str, Any]]:
        """The run's tool journal: one row per tool call, in the order they started."""
        self._written()
        cur = self._db.execute(
            "SELECT * FROM tool_calls WHERE run_id = ? ORDER BY started_at, attempt_id, turn, idx",
            (run_id,),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- approvals -------------------------------------------------------------------------
    def decide(self, run_id: str, d: Decision) -> tuple[Decision, bool]:
        """Record ``d`` unless the task already has a decision: the decision that stands,
        and whether it is ``d`` (one transaction, so of two deciders exactly one wins).
        Any process may call this while the run's owner writes its events."""
        try:
            with self._tx():
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, d.task_id, d.decision, d.reason, d.by, d.at),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: approval of {d.task_id}: {exc}") from None
        return self.decisions(run_id)[d.task_id], cur.rowcount == 1

    def decisions(self, run_id: str) -> dict[str, Decision]:
        """Every decision taken on the run's approvals (cheap: polled while a task waits)."""
        rows = self._db.execute(
            "SELECT task_id, decision, reason, decided_by, decided_at FROM approvals"
            " WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return {
            r[0]: Decision(task_id=r[0], decision=r[1], reason=r[2], by=r[3], at=r[4]) for r in rows
        }

    def growth(self, run_id: str) -> list[TasksAdded]:
        """How the run's plan grew, in order (what a resume rebuilds its DAG from)."""
        self._written()
        cur = self._db.execute(
            "SELECT data FROM events WHERE run_id = ? AND type = 'tasks_added' ORDER BY seq",
            (run_id,),
        )
        out = []
        for (data,) in cur:
            event = event_from_dict(json.loads(data))
            assert isinstance(event, TasksAdded)
            out.append(event)
        return out

    def read_events(self, run_id: str, after: int = 0) -> Iterator[tuple[int, Event]]:
        self._written()
        cur = self._db.execute(
            "SELECT seq, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after),
        )
        for seq, data in cur:
            yield seq, event_from_dict(json.loads(data))

    # -- writing events --------------------------------------------------------------------
    def append(self, run_id: str, session: int, event: Event) -> None:
        """Buffer an event. Never flushes by itself: an event group (an attempt's end and its
        task's success) must land in one transaction, so writers flush at group boundaries.

        The event is encoded now and its table writes folded into the pending ones
        (:class:`_Writes`): an attempt started and finished in one batch becomes one insert
        with its final values, a task's successive updates one update with the final value
        of each column. A run's start or end keeps its place in the order (the writes
        folded before it are written before it)."""
        self._rows.append((run_id, session, event.ts, event.type, _event_text(event)))
        fold = _FOLD.get(type(event))
        if fold is not None:
            fold(self._writes, run_id, session, event)
        elif isinstance(event, RunStarted | RunFinished):
            self._ops += (self._writes, (run_id, event))
            self._writes = _Writes()

    def flush_if_full(self) -> None:
        """Hand the buffer to the writer when it holds a batch (committed in the
        background); call only between event groups."""
        if len(self._rows) >= self.batch_size:
            self.flush(wait=False)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self, *, wait: bool = True) -> None:
        """Write the buffered events and their table writes in one transaction, in order;
        the tables end exactly as if every event had been applied one by one (rows go in
        with one ``executemany`` per statement). Call only between event groups.

        With the writer thread the batch is handed to it; ``wait`` (the default): return
        once it and every batch before it are committed (what a caller about to run a tool
        that writes needs); ``wait=False``: return at once (batches are committed in the
        order they were handed over). A batch that failed to commit (rolled back whole)
        raises its error here, in the next call."""
        if self._rows:
            batch = (self._rows, [*self._ops, self._writes])
            self._rows, self._ops, self._writes = [], [], _Writes()
            if (
                self._writer is None
                and not self._threaded
                and not self._go_process(len(batch[0]), wait)
            ):
                results = _results_of([batch]) if self.on_commit is not None else None
                _commit(self._db, [batch])
                self._inline_rows += len(batch[0])
                if results and self.on_commit is not None:
                    self.on_commit(results)
                return
            if self._writer is None:
                self._writer = _Writer(self.path, self)
                self._db.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints
                weakref.finalize(self, self._writer.stop)
            self._writer.submit(batch)
        if self._writer is not None:
            if wait:
                self._writer.wait()
            else:
                self._writer.check()

    def expect(self, rows: int) -> None:
        """The caller expects to write about ``rows`` event rows (a run: three per task): as
        many as ``process_after`` or more, and the writer process is started now, so that
        it is ready for the first batch handed over without waiting (a run's first holds
        its plan's tasks), instead of the batch that reaches that count."""
        self._expected = rows
        after = self._process_after
        if after is not None and self._writer is None and max(self._inline_rows, rows) >= after:
            self._start_process()

    def _go_process(self, rows: int, wait: bool) -> bool:
        """Whether this batch (of ``rows`` event rows) goes to the writer process: once the
        rows committed here and this batch's reach ``process_after`` (or :meth:`expect`
        said they will), the process is started, and this thread goes on committing until
        it says it is ready."""
        starting = self._starting
        if starting is not None:
            ready = starting.ready()
            if ready is None:  # it ended before it was ready: nothing was handed to it
                self._starting = None
                starting.stop()
            if not ready or wait:
                return False
            self._starting, self._writer = None, starting
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints
            return True
        after = self._process_after
        if after is None or wait or max(self._inline_rows + rows, self._expected) < after:
            return False
        self._start_process()
        return False

    def _start_process(self) -> None:
        """Start the writer process (one try); this thread commits until it is ready."""
        if threading.current_thread() is not threading.main_thread():
            return  # the process dies with the thread that started it
        self._process_after = None  # one try
        if not _ProcessWriter.SCRIPT.is_file():  # installed inside an archive: no script
            return
        try:
            self._starting = _ProcessWriter(self.path, self)
        except OSError:
            return  # no process to be had: the caller's thread goes on committing
        weakref.finalize(self, self._starting.stop)

    def _commit_statements(self, batches: Sequence[list[tuple[str, list[Any]]]]) -> None:
        """Batches already turned into statements, committed here in one transaction."""
        _commit_statements(self._db, batches)


_Batch = tuple[
    list[tuple[str, int, float, str, str]], list["_Writes | tuple[str, RunStarted | RunFinished]"]
]


def _results_of(batches: Sequence[_Batch]) -> list[tuple[Any, ...]]:
    """The result rows (run, task, attempt, agent, output, parsed, at) of ``batches``."""
    return [r for _, ops in batches for op in ops if isinstance(op, _Writes) for r in op.results]


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to the journal (WAL; a commit is durable once it returns, short of a
    power loss; other connections wait up to 30 s for a write lock)."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    return db


# Commits made by this process (the crash tests' fault injection counts them).
_commits = 0
_commits_lock = threading.Lock()


def _commit(db: sqlite3.Connection, batches: Sequence[_Batch]) -> None:
    """Write ``batches`` (events rows, then their folded table writes, in order) in one
    transaction: all of it or, on an error, none of it."""
    with _Transaction(db):
        _write_batches(db, batches)
    _committed()


def _commit_statements(
    db: sqlite3.Connection, batches: Sequence[list[tuple[str, list[Any]]]]
) -> None:
    """Batches already turned into statements (:class:`_Statements`), in one transaction."""
    with _Transaction(db):
        for statements in batches:
            for sql, rows in statements:
                db.executemany(sql, rows)
    _committed()


def _committed() -> None:
    global _commits
    with _commits_lock:
        _commits += 1
        if _commits == _KILL_AFTER_COMMITS:  # fault injection for the crash tests
            os.kill(os.getpid(), signal.SIGKILL)


def _write_batches(db: Any, batches: Sequence[_Batch]) -> None:
    """The statements of ``batches``, sent to ``db`` (a connection, or a
    :class:`_Statements` that keeps them for the writer process)."""
    for rows, ops in batches:
        db.executemany(
            "INSERT INTO events (run_id, session, ts, type, data) VALUES (?, ?, ?, ?, ?)", rows
        )
        for op in ops:
            if isinstance(op, _Writes):
                op.apply(db)
            else:
                _apply_run_event(db, *op)


def _statements_of(batch: _Batch) -> list[tuple[str, list[Any]]]:
    """A batch's statements, as data (its folded writes are emptied as they are read)."""
    statements = _Statements()
    _write_batches(statements, [batch])
    return statements.out


class _Statements:
    """Statements kept as data (``[(sql, rows), ...]``) instead of run: a batch as the
    writer process takes it."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.out.append((sql, [tuple(params)]))

    def executemany(self, sql: str, rows: Any) -> None:
        rows = rows if type(rows) is list else list(rows)
        if rows:
            self.out.append((sql, rows))


def _plain(value: Any) -> Any:
    """``value`` as the builtin type ``marshal`` takes (a str or int subclass, an enum), the
    value SQLite would store for it."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value] if isinstance(value, list) else tuple(map(_plain, value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


def _apply_run_event(db: sqlite3.Connection, run_id: str, e: RunStarted | RunFinished) -> None:
    if isinstance(e, RunStarted):
        _apply_run_started(db, run_id, e)
    else:
        db.execute(
            "UPDATE runs SET status = ?, reason = ?, finished_at = ?, updated_at = ?"
            " WHERE run_id = ?",
            (e.status, e.reason, e.ts, e.ts, run_id),
        )


class _Writer:
    """The journal's writer thread: commits the batches handed to it, in order, on a
    connection of its own (the caller's thread goes on meanwhile). Batches waiting when it
    gets to them are committed together, in one transaction (each event group still lies
    whole in one batch). A batch that fails is rolled back whole (the others are committed
    each on its own then) and its error is raised, once, to the next caller of :meth:`wait`
    or :meth:`check`.

    It also checkpoints the WAL (copies it into the database file, and syncs both), which
    SQLite would otherwise do inside a commit once the WAL passes 1,000 pages: here when it
    has nothing to commit, after ``CHECKPOINT_ROWS`` event rows, or between commits after
    ``FORCE_CHECKPOINT_ROWS`` of them when it never idles (so the WAL stays bounded)."""

    MAX_QUEUED = 8  # batches handed over and not yet taken: beyond, the caller waits
    CHECKPOINT_ROWS = 4096
    FORCE_CHECKPOINT_ROWS = 65536

    def __init__(self, path: Path, journal: Journal) -> None:
        self._journal = weakref.ref(journal)  # whose on_commit is told what was committed
        self._db = _connect(path)
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint
        self._unchecked = 0  # event rows committed since the last checkpoint
        self._cv = threading.Condition()
        self._queue: list[_Batch] = []
        self._handed = 0  # batches handed over
        self._done = 0  # batches committed (or failed)
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="phalanx-journal", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        with self._cv:
            while len(self._queue) >= self.MAX_QUEUED and self._thread.is_alive():
                self._cv.wait()
            self._queue.append(batch)
            self._handed += 1
            self._cv.notify_all()

    def wait(self) -> None:
        """Return once every batch handed over so far is committed."""
        with self._cv:
            target = self._handed
            while self._done < target and self._thread.is_alive():
                self._cv.wait()
            lost = self._done < target  # its thread is gone (a forked child): never silent
        self.check()
        if lost:
            raise JournalError("the journal's writer thread is gone: batches not committed")

    def check(self) -> None:
        with self._cv:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        """Commit what is queued, end the thread, close its connection (idempotent)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._queue and not self._stopping:
                        self._cv.wait()
                    if not self._queue:
                        return
                    batches, self._queue = self._queue, []
                    self._cv.notify_all()  # room in the queue
                error = self._write(batches)
                with self._cv:
                    self._done += len(batches)
                    if error is not None and self._error is None:
                        self._error = error
                    self._cv.notify_all()
                    idle = not self._queue
                if error is None:
                    self._unchecked += sum(len(rows) for rows, _ in batches)
                self._checkpoint(idle)
        finally:
            self._checkpoint(True)
            self._db.close()

    def _write(self, batches: list[_Batch]) -> BaseException | None:
        """Commit ``batches`` in one transaction; if that fails, each on its own (so a
        batch that fails takes no other down with it). The first error, for the caller."""
        journal = self._journal()
        hook = journal.on_commit if journal is not None else None
        done = [(_statements_of(b), _results_of([b]) if hook is not None else None)
                for b in batches]  # fmt: skip
        return self._commit_each(done, hook)

    def _commit_each(
        self,
        done: list[tuple[list[tuple[str, list[Any]]], list[tuple[Any, ...]] | None]],
        hook: Callable[[list[tuple[Any, ...]]], None] | None,
    ) -> BaseException | None:
        """Commit batches turned into statements (once: a retry writes the same rows) in one
        transaction; if that fails, each on its own. The first error, for the caller."""
        try:
            _commit_statements(self._db, [statements for statements, _ in done])
        except BaseException as exc:  # kept for the caller (its thread raises it)
            if len(done) == 1:
                return exc
            errors = [self._commit_each([one], hook) for one in done]
            return next((e for e in errors if e is not None), None)
        if hook is not None:
            for _, results in done:
                if results:
                    hook(results)
        return None

    def _checkpoint(self, idle: bool) -> None:
        limit = self.CHECKPOINT_ROWS if idle else self.FORCE_CHECKPOINT_ROWS
        if self._unchecked >= limit or (idle and self._stopping and self._unchecked):
            self._unchecked = 0
            with contextlib.suppress(sqlite3.Error):  # a busy file: the next one catches up
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")


class _ProcessWriter:
    """The journal's writer process (``phalanx/journal/writer.py``): the interface of
    :class:`_Writer`, with the batches committed by another process, so that SQLite's work
    runs on another core and shares no GIL with the event loop (the thread did, and cost
    more than it saved: docs/benchmarks.md).

    The journal starts it and goes on committing in its own thread until the process says
    it is ready (:meth:`ready`): a process that cannot start costs nothing but the try.
    A batch goes over a pipe as data (its statements and rows, ``marshal``-encoded), never
    waited on: what the pipe does not take now waits in memory and goes at the next call
    (beyond ``MAX_BACKLOG`` bytes the caller waits). A batch with a value ``marshal`` does
    not take (what only an sqlite3 adapter knows) is committed in the caller's thread once
    every batch before it is. The process answers each batch in order, committed or failed;
    the journal's ``on_commit`` is told of a batch's results when its answer is read (at
    the next flush, or a wait). A failed batch is raised, once, by the next :meth:`wait` or
    :meth:`check`; a process that is gone raises :class:`JournalError` (never silent). It
    dies with this process (``PR_SET_PDEATHSIG``) and, its input ended without a goodbye,
    commits nothing more: a run killed mid-way is resumed by another process with nothing
    still being written for the dead one."""

    SCRIPT = Path(__file__).with_name("writer.py")
    MAX_BACKLOG = 64 << 20  # bytes handed over and not yet in the pipe: beyond, wait

    def __init__(self, path: Path, journal: Journal) -> None:
        self._journal = weakref.ref(journal)
        with _commits_lock:
            commits = _commits
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(self.SCRIPT), str(path.resolve()),
             str(os.getpid()), str(commits), str(_KILL_AFTER_COMMITS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to, self._from = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups on both sides
            fcntl.fcntl(self._to, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(self._from, False)
        os.set_blocking(self._to, False)
        # poll (not select: any fd number): the answers, room in the pipe, or both
        self._in_poll, self._out_poll, self._both = select.poll(), select.poll(), select.poll()
        self._in_poll.register(self._from, select.POLLIN)
        self._out_poll.register(self._to, select.POLLOUT)
        self._both.register(self._from, select.POLLIN)
        self._both.register(self._to, 0)
        self._out = bytearray()  # frames the pipe has not taken yet
        self._buf = bytearray()
        self._inflight: collections.deque[list[tuple[Any, ...]] | None] = collections.deque()
        self._token = 0
        self._ready = False
        self._error: BaseException | None = None
        self._gone = False
        self._pid = os.getpid()  # a forked copy of this object must not share the pipe

    def ready(self) -> bool | None:
        """Whether the process has said it is ready (its connection open); None: it ended
        before (nothing was handed to it)."""
        if os.getpid() != self._pid:
            return False  # a forked copy: the answers are its parent's to read
        if not self._ready and not self._gone:
            self._read(block=False)
        return True if self._ready else None if self._gone else False

    def submit(self, batch: _Batch) -> None:
        journal = self._journal()
        hook = journal.on_commit if journal is not None else None
        results = _results_of([batch]) if hook is not None else None
        statements = _statements_of(batch)
        try:
            data = _frame(("B", statements))
        except ValueError:  # a value only an sqlite3 adapter knows: committed here, in turn
            self.wait()
            assert journal is not None
            journal._commit_statements([statements])
            if results and hook is not None:
                hook(results)
            return
        self._inflight.append(results)
        self._send(data)
        self._read(block=False)

    def wait(self) -> None:
        """Return once every batch handed over so far is committed."""
        self._token += 1
        self._send(_frame(("S", self._token)))
        while not self._read(block=True, token=self._token):
            pass
        self.check()

    def check(self) -> None:
        self._mine()
        if not self._gone:
            self._drain()
            self._read(block=False)
        error, self._error = self._error, None
        if error is not None:
            raise error
        if self._gone:
            raise JournalError("the journal's writer process is gone: batches not committed")

    def stop(self) -> None:
        """Commit what was handed over, end the process (idempotent)."""
        if os.getpid() != self._pid:
            return  # a forked copy: the process is its parent's to end
        if self._proc.returncode is None and not self._gone:
            with contextlib.suppress(OSError, JournalError):
                self._send(_frame(("C",)))
                while self._out and not self._gone:
                    self._out_poll.poll()
                    self._drain()
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 60.0  # its output ends when it exits (no polling wait)
        with contextlib.suppress(OSError):
            while (left := deadline - time.monotonic()) > 0:
                if self._in_poll.poll(left * 1000) and not os.read(self._from, 1 << 16):
                    break
        if self._proc.poll() is None and time.monotonic() >= deadline:
            self._proc.kill()
        self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()  # type: ignore[union-attr]

    def _mine(self) -> None:
        if os.getpid() != self._pid:
            raise JournalError("the journal's writer process is its parent's (a forked copy)")

    def _send(self, frame: bytes) -> None:
        if self._gone:
            raise JournalError("the journal's writer process is gone: batches not committed")
        self._mine()
        self._out += frame  # one step: an interrupt never leaves half a frame
        self._drain()
        while len(self._out) > self.MAX_BACKLOG and not self._gone:
            self._out_poll.poll()
            self._drain()
        if self._gone:
            raise JournalError("the journal's writer process is gone: batches not committed")

    def _drain(self) -> None:
        """Put into the pipe what it takes now."""
        try:
            while self._out:
                del self._out[: os.write(self._to, self._out)]
        except BlockingIOError:
            pass
        except OSError:
            self._gone = True

    def _read(self, *, block: bool, token: int = 0) -> bool:
        """Take the answers there are (with ``block``: wait for at least one more, putting
        the rest of what was handed over into the pipe meanwhile); whether ``token``'s
        came."""
        while True:
            if block:
                self._both.modify(self._to, select.POLLOUT if self._out else 0)
                events = dict(self._both.poll())
                if self._to in events:
                    self._drain()
                if self._from not in events:
                    if self._gone:
                        return True
                    continue
            try:
                chunk = os.read(self._from, 1 << 16)
            except BlockingIOError:
                return False
            if not chunk:  # the process ended
                self._gone = True
                return True
            self._buf += chunk
            found = self._answers(token)
            if found or not block:
                return found

    def _answers(self, token: int) -> bool:
        found = False
        told: list[list[tuple[Any, ...]]] = []
        while len(self._buf) >= 4:
            (n,) = struct.unpack_from("<I", self._buf)
            if len(self._buf) < 4 + n:
                break
            msg: Any = marshal.loads(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
            if msg[0] == "K":  # every entry taken before any hook runs (a hook may raise)
                for _ in range(msg[1]):
                    results = self._inflight.popleft()
                    if results:
                        told.append(results)
            elif msg[0] == "E":
                self._inflight.popleft()
                if self._error is None:
                    self._error = _error_named(msg[1], msg[2])
            elif msg[0] == "R":
                self._ready = True
            elif msg[0] == "A" and msg[1] == token:
                found = True
        journal = self._journal()
        if told and journal is not None and journal.on_commit is not None:
            for results in told:
                journal.on_commit(results)
        return found


def _frame(msg: tuple[Any, ...]) -> bytes:
    """A message for the writer process: its length, then it (``marshal``); ValueError for
    a value ``marshal`` does not take even as its plain type."""
    try:
        data = marshal.dumps(msg)
    except ValueError:  # a str subclass or an enum in a row: as plain values
        data = marshal.dumps(_plain(msg))
    return struct.pack("<I", len(data)) + data


def _error_named(name: str, message: str) -> BaseException:
    """The writer process's error as this process raises it: the same sqlite3 or builtin
    exception when it takes a message alone, else a JournalError naming it."""
    kind = getattr(sqlite3, name, None) or getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except TypeError:  # (UnicodeEncodeError and the like take more than a message)
            pass
    return JournalError(f"{name}: {message}")


def _apply_run_started(db: sqlite3.Connection, run_id: str, e: RunStarted) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO agents VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                a.name,
                a.role,
                a.provider,
                a.style,
                _dumps(list(a.skills)) if a.skills else "[]",
            )
            for a in e.agents
        ],
    )
    db.executemany(
        "INSERT OR IGNORE INTO tasks (run_id, task_id, title, category, needs_json, state)"
        " VALUES (?, ?, ?, ?, ?, 'pending')",
        [
            (run_id, t.id, t.title, t.category, _dumps(list(t.needs)) if t.needs else "[]")
            for t in e.tasks
        ],
    )
    # Attempts cut short by a crash are not failures: they simply re-run.
    db.execute(
        "UPDATE attempts SET outcome = 'lost' WHERE run_id = ? AND outcome = 'running'",
        (run_id,),
    )
    db.execute(
        "UPDATE tasks SET state = 'pending' WHERE run_id = ? AND state IN ('running', 'retrying')",
        (run_id,),
    )


_ATTEMPT_COLUMNS = (
    "run_id", "attempt_id", "task_id", "attempt_no", "agent", "session", "started_at",
    "finished_at", "outcome", "error_class", "error", "status", "retry_after", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
)  # fmt: skip
_FINISH_COLUMNS = _ATTEMPT_COLUMNS[7:]  # what an attempt's end sets
_AT = {c: i for i, c in enumerate(_ATTEMPT_COLUMNS)}
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_ATTEMPT_COLUMNS))})"
)
_INSERT_RESULT = (
    "INSERT INTO results (run_id, task_id, attempt_id, agent, output, parsed_json, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


_INSERT_TURN = "INSERT OR REPLACE INTO agent_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_CALL = (
    "INSERT OR REPLACE INTO tool_calls VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COPY_TURNS = (
    "INSERT OR IGNORE INTO agent_turns SELECT run_id, ?, turn, task_id, agent, text,"
    " calls_json, created_at FROM agent_turns WHERE run_id = ? AND attempt_id = ?"
)
_COPY_CALLS = (
    "INSERT OR IGNORE INTO tool_calls SELECT run_id, ?, turn, idx, task_id, agent, call_id,"
    " tool, writes, args_digest, started_at, finished_at, ok, error_code, error,"
    " result_digest, result, duration, COALESCE(from_attempt, attempt_id) FROM tool_calls"
    " WHERE run_id = ? AND attempt_id = ? AND finished_at IS NOT NULL"
)


class _Writes:
    """One flush's table writes, folded. Every update the events make is ``SET column =
    value`` on one row found by its key, so successive updates of a row are one update with
    the last value of each column, and an update of a row inserted in the same batch is
    part of that insert: the tables end as if the events were applied one by one. Inserts
    keep their order and every row, so a second success of a task still violates its
    unique key and rolls the whole batch back."""

    __slots__ = (
        "attempt_rows",
        "attempt_updates",
        "copies",
        "new_attempts",
        "new_tasks",
        "results",
        "task_updates",
        "tool_rows",
        "tool_updates",
        "turn_rows",
    )

    def __init__(self) -> None:
        # Rows are tuples of plain values, which the garbage collector stops tracking: a
        # batch waiting for its flush adds nothing for the collector to walk.
        self.attempt_rows: list[tuple[Any, ...]] = []  # inserts, in order (a duplicate fails)
        self.new_attempts: dict[tuple[str, int], int] = {}  # key -> its insert's position
        self.attempt_updates: dict[tuple[str, int], dict[str, Any]] = {}
        self.task_updates: dict[tuple[str, str], dict[str, Any]] = {}
        self.results: list[tuple[Any, ...]] = []
        self.new_tasks: list[tuple[Any, ...]] = []  # tasks the plan grew by
        # the tool journal: model turns, tool calls started, their ends, resumed loops
        self.turn_rows: list[tuple[Any, ...]] = []
        self.tool_rows: list[tuple[Any, ...]] = []
        self.tool_updates: dict[tuple[str, int, int, int], dict[str, Any]] = {}
        self.copies: list[tuple[str, int, int]] = []

    def attempt_started(self, run_id: str, session: int, e: AttemptStarted) -> None:
        self.new_attempts[(run_id, e.attempt_id)] = len(self.attempt_rows)
        self.attempt_rows.append((
            run_id, e.attempt_id, e.task_id, e.attempt_no, e.agent, session, e.ts,
            None, "running", None, None, None, None, None, None, None, None, None,
        ))  # fmt: skip
        self._task(run_id, e.task_id).update(
            state="running",
            attempts=e.attempt_no,
            current_attempt=e.attempt_id,
            agent=e.agent,
            updated_at=e.ts,
        )

    def attempt_finished(self, run_id: str, session: int, e: AttemptFinished) -> None:
        key = (run_id, e.attempt_id)
        if e.stale:  # a late result of a superseded attempt: keep why it was superseded
            self._attempt(key, {"outcome": "stale"})
            return
        u = e.usage
        cancelled = e.error_class == "cancelled"
        outcome = (  # a lost attempt (its host died) does not count against max_attempts
            "cancelled"
            if cancelled
            else "succeeded"
            if e.ok
            else "lost"
            if e.error_class == "lost"
            else "failed"
        )
        values = (
            e.ts, outcome, e.error_class, e.error, e.status, e.retry_after, u.input_tokens,
            u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cost_usd,
        )  # fmt: skip
        i = self.new_attempts.get(key)
        if i is not None:
            self.attempt_rows[i] = self.attempt_rows[i][:7] + values
        else:
            self._attempt(key, dict(zip(_FINISH_COLUMNS, values, strict=True)))
        if not e.ok and not cancelled:
            self._task(run_id, e.task_id).update(
                state="retrying", error_class=e.error_class, error=e.error, updated_at=e.ts
            )

    def task_succeeded(self, run_id: str, session: int, e: TaskSucceeded) -> None:
        parsed = e.parsed
        if parsed is not None:  # a text style's answer is a string: JSON's own fast path
            parsed = _json_str(parsed) if type(parsed) is str else _dumps(parsed)
        self.results.append((run_id, e.task_id, e.attempt_id, e.agent, e.output, parsed, e.ts))
        self._task(run_id, e.task_id).update(
            state="succeeded", error_class=None, error=None, updated_at=e.ts
        )

    def tasks_added(self, run_id: str, session: int, e: TasksAdded) -> None:
        self.new_tasks.extend(
            (run_id, str(t["id"]), str(t.get("title") or ""), str(t.get("category") or "other"),
             _dumps(list(t.get("needs") or ())))
            for t in e.tasks
        )  # fmt: skip

    def task_failed(self, run_id: str, session: int, e: TaskFailed) -> None:
        self._task(run_id, e.task_id).update(
            state="failed", error_class=e.error_class, error=e.error, updated_at=e.ts
        )

    def task_skipped(self, run_id: str, session: int, e: TaskSkipped) -> None:
        self._task(run_id, e.task_id).update(
            state="skipped", error_class="skipped", error=e.reason, updated_at=e.ts
        )

    def approval_requested(self, run_id: str, session: int, e: ApprovalRequested) -> None:
        self._task(run_id, e.task_id).update(state="awaiting_approval", updated_at=e.ts)

    def approval_decided(self, run_id: str, session: int, e: ApprovalDecided) -> None:
        if e.decision == "approved":  # back in the queue; a rejection's skip says the rest
            self._task(run_id, e.task_id).update(state="pending", updated_at=e.ts)

    def agent_turn(self, run_id: str, session: int, e: AgentTurn) -> None:
        calls = redact(_dumps(list(e.calls)))  # a key the model wrote is not kept
        self.turn_rows.append(
            (run_id, e.attempt_id, e.turn, e.task_id, e.agent, redact(e.text), calls, e.ts)
        )

    def tool_started(self, run_id: str, session: int, e: ToolStarted) -> None:
        self.tool_rows.append((
            run_id, e.attempt_id, e.turn, e.index, e.task_id, e.agent, e.call_id, e.tool,
            int(e.writes), e.args_digest, e.ts, None, None, None, None, None, None, None, None,
        ))  # fmt: skip

    def tool_called(self, run_id: str, session: int, e: ToolCalled) -> None:
        self.tool_updates[(run_id, e.attempt_id, e.turn, e.index)] = {
            "finished_at": e.ts,
            "ok": int(e.ok),
            "error_code": e.error_code,
            "error": e.error,
            "result_digest": e.result_digest,
            "result": redact(e.content),
            "duration": e.duration,
        }

    def tool_in_doubt(self, run_id: str, session: int, e: ToolInDoubt) -> None:
        if e.action != "ask":  # a rerun journals its own call; a failure ends the attempt
            return
        self.tool_rows.append((
            run_id, e.attempt_id, e.turn, e.index, e.task_id, e.agent, e.call_id, e.tool, 1,
            e.args_digest, e.ts, e.ts, 0, "in_doubt", "outcome unknown", "", e.content, 0.0,
            e.from_attempt,
        ))  # fmt: skip

    def loop_resumed(self, run_id: str, session: int, e: LoopResumed) -> None:
        self.copies.append((run_id, e.attempt_id, e.from_attempt))

    def _task(self, run_id: str, task_id: str) -> dict[str, Any]:
        key = (run_id, task_id)
        update = self.task_updates.get(key)
        if update is None:
            update = self.task_updates[key] = {}
        return update

    def _attempt(self, key: tuple[str, int], values: dict[str, Any]) -> None:
        i = self.new_attempts.get(key)
        if i is not None:
            row = list(self.attempt_rows[i])
            for column, value in values.items():
                row[_AT[column]] = value
            self.attempt_rows[i] = tuple(row)
        else:
            self.attempt_updates.setdefault(key, {}).update(values)

    def apply(self, db: sqlite3.Connection) -> None:
        """Write what was folded (inserts first: an update may name a row they add)."""
        if self.new_tasks:
            db.executemany(
                "INSERT OR IGNORE INTO tasks (run_id, task_id, title, category, needs_json,"
                " state) VALUES (?, ?, ?, ?, ?, 'pending')",
                self.new_tasks,
            )
            self.new_tasks = []
        if self.attempt_rows:
            db.executemany(_INSERT_ATTEMPT, self.attempt_rows)
        if self.results:
            db.executemany(_INSERT_RESULT, self.results)
        self._apply_tools(db)
        _update(db, "attempts", ("run_id", "attempt_id"), self.attempt_updates)
        _update(db, "tasks", ("run_id", "task_id"), self.task_updates)
        self.attempt_rows, self.results = [], []
        self.new_attempts, self.attempt_updates, self.task_updates = {}, {}, {}

    def _apply_tools(self, db: sqlite3.Connection) -> None:
        """The tool journal: a resumed attempt's copy of the turns and results it replays
        (first), then new turns and calls, then the calls' ends."""
        for run_id, attempt_id, source in self.copies:
            db.execute(_COPY_TURNS, (attempt_id, run_id, source))
            db.execute(_COPY_CALLS, (attempt_id, run_id, source))
        if self.turn_rows:
            db.executemany(_INSERT_TURN, self.turn_rows)
        if self.tool_rows:
            db.executemany(_INSERT_CALL, self.tool_rows)
        _update(db, "tool_calls", ("run_id", "attempt_id", "turn", "idx"), self.tool_updates)
        self.copies, self.turn_rows, self.tool_rows, self.tool_updates = [], [], [], {}


def _update(
    db: sqlite3.Connection,
    table: str,
    key: tuple[str, ...],
    updates: Mapping[tuple[Any, ...], dict[str, Any]],
) -> None:
    """``UPDATE table SET ... WHERE key`` for every row, one ``executemany`` per list of
    columns (a row's columns in the order its events first set them: a few shapes)."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for k, values in updates.items():
        rows = groups.get(tuple(values))
        if rows is None:
            rows = groups[tuple(values)] = []
        rows.append((*values.values(), *k))
    where = " AND ".join(f"{c} = ?" for c in key)
    for cols, rows in groups.items():
        sets = ", ".join(f"{c} = ?" for c in cols)
        db.executemany(f"UPDATE {table} SET {sets} WHERE {where}", rows)


_FOLD: dict[type[Any], Any] = {
    AttemptStarted: _Writes.attempt_started,
    AttemptFinished: _Writes.attempt_finished,
    TaskSucceeded: _Writes.task_succeeded,
    TaskFailed: _Writes.task_failed,
    TaskSkipped: _Writes.task_skipped,
    ApprovalRequested: _Writes.approval_requested,
    ApprovalDecided: _Writes.approval_decided,
    TasksAdded: _Writes.tasks_added,
    AgentTurn: _Writes.agent_turn,
    ToolStarted: _Writes.tool_started,
    ToolCalled: _Writes.tool_called,
    ToolInDoubt: _Writes.tool_in_doubt,
    LoopResumed: _Writes.loop_resumed,
}


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

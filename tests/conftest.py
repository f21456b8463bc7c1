"""Shared fixtures. An autouse guard fails any attempt to reach a non-loopback address."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise AssertionError(f"test tried to reach a remote address: {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _no_remote_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh state dir (journal + outputs), also exported as $PHALANX_STATE_DIR."""
    d = tmp_path / "state"
    monkeypatch.setenv("PHALANX_STATE_DIR", str(d))
    yield d


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A project and a user agent library of the test's own (never the real home)."""
    from phalanx.plan.library import Library

    monkeypatch.setenv("PHALANX_AGENTS_DIR", str(tmp_path / "project-agents"))
    monkeypatch.setenv("PHALANX_USER_AGENTS", str(tmp_path / "user-agents"))
    monkeypatch.chdir(tmp_path)
    yield Library()


# Debian's chromium for the browser tests (driven by Playwright; no browser is downloaded)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def write_plan(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def sim_plan(
    n_tasks: int,
    *,
    agents: int = 1,
    latency_ms: float = 0,
    faults: dict[str, float] | None = None,
    deps: str = "none",
    max_attempts: int = 3,
    seed: int = 0,
    retry_after: float = 0.0,
    backoff: float = 0.01,
    breaker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A plan dict on the sim provider. ``deps``: none | chain | layered (each task needs up
    to two tasks of the previous layer of 10). Circuit breakers are off when faults are
    injected, unless ``breaker`` says otherwise."""
    tasks = []
    for i in range(n_tasks):
        needs: list[str] = []
        if deps == "chain" and i:
            needs = [f"t{i - 1}"]
        elif deps == "layered" and i >= 10:
            layer_start = (i // 10 - 1) * 10
            needs = sorted({f"t{layer_start + (i % 10)}", f"t{layer_start + (i * 7) % 10}"})
        tasks.append(
            {"id": f"t{i}", "prompt": f"do part {i}", "needs": needs, "max_attempts": max_attempts}
        )
    return {
        "name": f"sim-{n_tasks}",
        "provider": "sim",
        "providers": {
            "sim": {
                "latency": {"distribution": "fixed", "ms": latency_ms},
                "faults": faults or {},
                "seed": seed,
                "retry_after": retry_after,
            }
        },
        "retry": {"base_seconds": backoff, "cap_seconds": backoff * 10},
        # fault-injection plans measure retries; breakers are tested on their own
        "breaker": breaker or {"enabled": not faults},
        "agents": [{"role": "generalist", "count": agents}],
        "tasks": tasks,
    }


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def wait_dead(pids: list[int], within: float = 3.0) -> list[int]:
    """The pids still alive after waiting up to ``within`` seconds for all to die."""
    deadline = time.monotonic() + within
    while (still := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return still


def new_run(journal: Any, run_id: str = "r", task_count: int = 0) -> Any:
    """A simulated run's row in ``journal`` (plan ``p``, no options): for tests that write
    a journal by hand. Returns the journal."""
    journal.create_run(
        run_id=run_id,
        plan_name="p",
        plan_source=None,
        plan={},
        options={},
        simulated=True,
        task_count=task_count,
    )
    return journal


def writer_process_ready(journal: Any) -> Any:
    """Hand ``journal``'s buffer over (a journal opened with ``process_after=0`` starts its
    writer process then, committing that batch itself) and wait until the process is ready:
    the next ``flush(wait=False)`` goes to it. Returns the journal."""
    journal.flush(wait=False)
    starting = journal._starting
    assert starting is not None, "no writer process was started"
    deadline = time.monotonic() + 20
    while starting.ready() is not True:
        assert starting.ready() is not None, "the writer process ended before it was ready"
        assert time.monotonic() < deadline, "the writer process never said it was ready"
        time.sleep(0.005)
    return journal


def rows(state: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Rows of a query on the journal in ``state``."""
    db = sqlite3.connect(state / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def events(state: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    """The journaled events of one type of a run, in order, as dicts."""
    found = rows(
        state, "SELECT data FROM events WHERE run_id=? AND type=? ORDER BY seq", run_id, kind
    )
    return [json.loads(r["data"]) for r in found]


def rewind_journal(path: Path, version: str, *statements: str) -> None:
    """Make the journal at ``path`` one of schema ``version`` again: ``statements`` undo
    what the later schemas added (to test its migration when it is opened)."""
    db = sqlite3.connect(path)
    try:
        for sql in statements:
            db.execute(sql)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        db.commit()
    finally:
        db.close()


def journal_sql(path: Path, sql: str, *args: Any) -> Any:
    """The first row of ``sql`` on the journal at ``path``, read on a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchone()
    finally:
        db.close()

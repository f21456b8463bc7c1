"""Is a run still driven? Its liveness, decided from the journal alone.

A running run records its owner (pid, host name, the process's start, session) and a
heartbeat every :data:`HEARTBEAT_EVERY` seconds. A run the journal says is ``running`` is
shown as running only while that owner lives: on the same host its pid must be alive (not a
zombie) and still the same process (its start unchanged: a reused pid has another); on
another host, or where the start cannot be read, its heartbeat must be younger than
:data:`STALE_AFTER` seconds. Otherwise it is ``stopped`` (process gone), resumable with
``phalanx resume RUN_ID``. Every view (``phalanx runs``, ``phalanx status``, the dashboard)
asks :func:`shown_status`; the status fold itself never knows (liveness is not an event).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from ..journal import Journal, Owner
from .snapshot import STOPPED, Snapshot, as_stopped, status_text

__all__ = [
    "HEARTBEAT_EVERY",
    "STALE_AFTER",
    "STOPPED",
    "live_snapshot",
    "owner_alive",
    "process_gone",
    "process_start",
    "run_summaries",
    "shown_status",
    "this_process",
]

HEARTBEAT_EVERY = 2.0  # seconds between a driving process's heartbeats
STALE_AFTER = 10.0  # a heartbeat older than this: the owner is gone (when it cannot be asked)
_PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque token (boot id and clock ticks since
    boot, from ``/proc``): equal only for the same process. None where it cannot be read
    (no such process, or no ``/proc``)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime
    except (OSError, IndexError):
        return None
    return f"{_boot_id()}:{ticks}"


def this_process() -> Owner:
    """The owner this process records for a run it drives."""
    pid = os.getpid()
    return Owner(pid=pid, host=socket.gethostname(), start=process_start(pid))


def _pid_running(pid: int) -> bool:
    """Process ``pid`` exists and is not a zombie waiting for its parent."""
    if pid <= 0:  # 0 and negatives name process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    try:
        state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _fresh(owner: Owner, now: float) -> bool:
    return owner.heartbeat is not None and now - owner.heartbeat < STALE_AFTER


def owner_alive(owner: Owner, now: float | None = None) -> bool:
    """Whether the process that recorded itself as a run's owner still runs it."""
    now = time.time() if now is None else now
    if owner.host != socket.gethostname():
        return _fresh(owner, now)
    if not _pid_running(owner.pid):
        return False
    start = process_start(owner.pid)
    if owner.start is None or start is None:  # cannot tell a reused pid: ask the heartbeat
        return _fresh(owner, now)
    return start == owner.start


def shown_status(status: str, owner: Owner | None, now: float | None = None) -> str:
    """The status every view shows: the journal's, except that a ``running`` run whose owner
    is gone (or unknown: a journal older than owners) is ``stopped``."""
    if status != "running" or (owner is not None and owner_alive(owner, now)):
        return status
    return STOPPED


def process_gone(journal: Journal, run_id: str, now: float | None = None) -> float | None:
    """When run ``run_id`` is running in the journal but its process is gone: its last
    heartbeat (``0.0`` when none is known); None while it is not stopped."""
    status, owner = journal.run_state(run_id)
    if shown_status(status, owner, now) != STOPPED:
        return None
    return (owner.heartbeat or 0.0) if owner is not None else 0.0


def live_snapshot(journal: Journal, snap: Snapshot, now: float | None = None) -> Snapshot:
    """``snap`` (a run's fold) as its views show it: stopped when its process is gone."""
    if snap.finished is not None:
        return snap
    seen = process_gone(journal, snap.run_id, now)
    return snap if seen is None else as_stopped(snap, seen or None)


def _cut_short(counts: dict[str, int]) -> dict[str, int]:
    out = dict(counts)
    cut = out.pop("running", 0) + out.pop("retrying", 0)
    if cut:
        out["pending"] = out.get("pending", 0) + cut
    return out


def run_summaries(journal: Journal, limit: int = 50) -> list[dict[str, Any]]:
    """The newest runs as plain data (``phalanx runs --json``, the dashboard's run list):
    ``status`` is :func:`shown_status`; ``status_text`` what a person reads (a stopped run's
    says how to resume it); ``owner`` the process driving it, if any."""
    now = time.time()
    out = []
    for r, counts in journal.list_runs(limit):
        status = shown_status(r.status, r.owner, now)
        if status == STOPPED:  # what was running is pending again, as a resume will have it
            counts = _cut_short(counts)
        owner = r.owner
        out.append(
            {
                "run_id": r.run_id,
                "plan": r.plan_name,
                "status": status,
                "status_text": status_text(status, r.run_id),
                "tasks": r.task_count,
                "states": counts,
                "created_at": r.created_at,
                "simulated": r.simulated,
                "sessions": r.sessions,
                "owner": None
                if owner is None
                else {
                    "pid": owner.pid,
                    "host": owner.host,
                    "session": owner.session,
                    "heartbeat": owner.heartbeat,
                },
            }
        )
    return out

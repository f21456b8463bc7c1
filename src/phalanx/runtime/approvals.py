"""Approvals that pause one branch: a ready task with ``approval: required`` (or one a
``before_task`` hook asked about) waits in ``awaiting_approval`` for a person's decision,
taking no agent, while the rest of the DAG runs on; only what needs it waits with it.

The decisions live in the journal's ``approvals`` table (a :class:`DecisionStore`): any
process writes one (``phalanx approve``, the dashboard, :func:`phalanx.approve`), the first
decision on a task wins, and the run polls the table every :data:`POLL_SECONDS` while a
task waits, so a decision is picked up within about half a second; one taken while no
process drives the run is picked up by ``phalanx resume``. ``approval_timeout`` ends a wait
by recording a ``timed_out`` decision through the same table (a person's decision that got
there first stands), which fails or skips the task (``approval_on_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..events import Alert, ApprovalDecided, ApprovalRequested, Event, TaskSucceeded
from ..exceptions import PhalanxError, UsageError
from ..ids import TaskId
from ..journal import Decision, Journal, RunRecord
from ..plan.model import Plan

__all__ = [
    "POLL_SECONDS",
    "ApprovalDesk",
    "DecisionStore",
    "MemoryDecisions",
    "PriorWait",
    "PriorWaits",
    "approval_command",
    "record_decision",
]

POLL_SECONDS = 0.5  # how often a run with a waiting task reads the decisions


class DecisionStore(Protocol):
    """Where decisions are recorded (the journal, or :class:`MemoryDecisions`)."""

    def decide(self, run_id: str, d: Decision) -> tuple[Decision, bool]: ...

    def decisions(self, run_id: str) -> dict[str, Decision]: ...


class MemoryDecisions:
    """Decisions kept in this process (a run without a journal; tests)."""

    def __init__(self) -> None:
        self._by_run: dict[str, dict[str, Decision]] = {}

    def decide(self, run_id: str, d: Decision) -> tuple[Decision, bool]:
        mine = self._by_run.setdefault(run_id, {})
        won = d.task_id not in mine
        if won:
            mine[d.task_id] = d
        return mine[d.task_id], won

    def decisions(self, run_id: str) -> dict[str, Decision]:
        return dict(self._by_run.get(run_id, {}))


@dataclass(frozen=True, kw_only=True, slots=True)
class PriorWait:
    """A wait an earlier session of a resumed run journaled: when it began, why, who asked,
    and whether its decision was journaled too (then it is not said again)."""

    since: float
    reason: str
    by: str
    decided: bool = False


class PriorWaits:
    """Folds a run's journaled events into its waits (for a resume): each task's first
    journaled wait, and whether its decision was journaled."""

    def __init__(self) -> None:
        self.waits: dict[str, PriorWait] = {}

    def emit(self, e: Event) -> None:
        if isinstance(e, ApprovalRequested):
            w = self.waits.get(e.task_id)
            if w is None or w.decided:  # asked again after a decision: a new wait
                self.waits[e.task_id] = PriorWait(since=e.since or e.ts, reason=e.reason, by=e.by)
        elif isinstance(e, ApprovalDecided) and e.task_id in self.waits:
            w = self.waits[e.task_id]
            self.waits[e.task_id] = PriorWait(since=w.since, reason=w.reason, by=w.by, decided=True)
        elif isinstance(e, TaskSucceeded):
            self.waits.pop(e.task_id, None)


@dataclass(slots=True)
class _Wait:
    since: float
    reason: str
    by: str
    deadline: float | None
    timer: asyncio.TimerHandle | None = None


def approval_command(run_id: str, task_id: str) -> str:
    """The command that decides a wait, as the views print it."""
    return f"phalanx approve {run_id} {task_id}"


class ApprovalDesk:
    """The run's waiting tasks and the decisions on them. Each decision is said once
    (``ApprovalDecided``); ``resolve`` is called for a decided wait (approved, rejected or
    timed out) that the run must act on; the desk itself changes no task."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        store: DecisionStore,
        *,
        prior: Mapping[str, PriorWait],
        now: Callable[[], float],
        emit: Callable[[Event], None],
        park: Callable[[TaskId], None],
        resolve: Callable[[TaskId, Decision], None],
    ) -> None:
        self.tasks, self.run_id, self.store = plan.task_map, run_id, store
        self.prior = dict(prior)
        self.now, self.emit, self._park, self._resolve = now, emit, park, resolve
        self.waiting: dict[TaskId, _Wait] = {}
        self.decided: dict[str, Decision] = {}
        self._poller: asyncio.TimerHandle | None = None
        self._broken = False
        if any(t.approval for t in plan.tasks) or self.prior:
            self.decided = store.decisions(run_id)

    # -- gating ----------------------------------------------------------------------------
    def approved(self, tid: str) -> bool:
        d = self.decided.get(tid)
        return d is not None and d.decision == "approved"

    def payload(self, tid: str) -> dict[str, Any] | None:
        """The task's decision as a ``before_task`` hook sees it (None: none yet)."""
        d = self.decided.get(tid)
        if d is None:
            return None
        return {"decision": d.decision, "reason": d.reason, "by": d.by, "at": d.at}

    def admit(self, tids: Iterable[TaskId]) -> list[TaskId]:
        """The ready tasks that may run now; the others wait for (or get) their decision."""
        go: list[TaskId] = []
        for tid in tids:
            task, before = self.tasks[tid], self.prior.get(tid)
            if task.approval is None and before is None:
                go.append(tid)
                continue
            d = self.decided.get(tid)
            if d is not None:  # decided while no process ran: said now, unless it was
                if before is None or not before.decided:
                    self._say(tid, d)
                if d.decision == "approved":
                    go.append(tid)
                else:
                    self._resolve(tid, d)
            elif before is not None:
                self.wait(tid, before.reason, before.by, since=before.since)
            else:
                self.wait(tid, "approval: required", "plan")
        return go

    def wait(self, tid: TaskId, reason: str, by: str, *, since: float | None = None) -> None:
        """``tid`` waits for a decision from now (or from ``since``, a resumed wait)."""
        self._park(tid)
        task, now = self.tasks[tid], self.now()
        start = now if since is None else since
        timeout = task.approval_timeout
        deadline = start + timeout if timeout is not None else None
        w = self.waiting[tid] = _Wait(since=start, reason=reason, by=by, deadline=deadline)
        self.emit(
            ApprovalRequested(
                ts=now,
                task_id=tid,
                reason=reason,
                by=by,
                since=start,
                deadline=deadline,
                on_timeout=task.approval_on_timeout,
            )
        )
        loop = asyncio.get_running_loop()
        if deadline is not None:
            w.timer = loop.call_later(max(0.0, deadline - now), self._timed_out, tid)
        if self._poller is None:
            self._poller = loop.call_later(POLL_SECONDS, self.poll)

    # -- decisions -------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the decisions; act on those for waiting tasks; poll again while any waits."""
        self._poller = None
        if not self.waiting:
            return
        try:
            self.decided = self.store.decisions(self.run_id)
        except PhalanxError as exc:  # a busy or broken journal: said once, tried again
            self._say_broken(exc)
        for tid in [t for t in self.waiting if t in self.decided]:
            self._settle(tid, self.decided[tid])
        if self.waiting:
            self._poller = asyncio.get_running_loop().call_later(POLL_SECONDS, self.poll)

    def _timed_out(self, tid: TaskId) -> None:
        w = self.waiting.get(tid)
        if w is None:
            return
        w.timer = None
        timeout = self.tasks[tid].approval_timeout or 0.0
        mine = Decision(
            task_id=tid,
            decision="timed_out",
            reason=f"no decision within approval_timeout {timeout:g}s",
            by="timeout",
            at=self.now(),
        )
        try:
            d, _ = self.store.decide(self.run_id, mine)
        except PhalanxError as exc:
            self._say_broken(exc)
            w.timer = asyncio.get_running_loop().call_later(POLL_SECONDS, self._timed_out, tid)
            return
        self.decided[tid] = d
        self._settle(tid, d)

    def _settle(self, tid: TaskId, d: Decision) -> None:
        w = self.waiting.pop(tid)
        if w.timer is not None:
            w.timer.cancel()
        self._say(tid, d)
        self._resolve(tid, d)

    def _say(self, tid: TaskId, d: Decision) -> None:
        self.emit(
            ApprovalDecided(
                ts=self.now(),
                task_id=tid,
                decision=d.decision,  # type: ignore[arg-type]
                reason=d.reason,
                by=d.by,
            )
        )

    def _say_broken(self, exc: PhalanxError) -> None:
        if not self._broken:
            self._broken = True
            message = f"cannot read decisions: {exc}"
            self.emit(Alert(ts=self.now(), kind="approval", message=message))

    def close(self) -> None:
        """The run ends: no more polls or timeouts (the waits stay in the journal)."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for w in self.waiting.values():
            if w.timer is not None:
                with contextlib.suppress(Exception):
                    w.timer.cancel()


def record_decision(
    journal: Journal,
    run_id: str,
    task_id: str,
    *,
    approve: bool,
    reason: str = "",
    by: str = "api",
) -> tuple[RunRecord, Decision]:
    """Decide a task awaiting approval (``run_id`` may be a unique prefix): the run and the
    decision recorded. Refused (:class:`UsageError`, one line) for an unknown run or task,
    a task that is not awaiting approval, or one already decided. The run's process picks
    the decision up within :data:`POLL_SECONDS`; with none running, ``phalanx resume``."""
    rec = journal.get_run(run_id)
    rows = journal.task_rows(rec.run_id)
    if task_id not in rows:
        known = ", ".join(sorted(rows)[:10])
        raise UsageError(f"run {rec.run_id} has no task {task_id!r} (tasks: {known})")
    before = journal.decisions(rec.run_id).get(task_id)
    if before is None and rows[task_id]["state"] != "awaiting_approval":
        raise UsageError(
            f"task {task_id} of run {rec.run_id} is not awaiting approval"
            f" (it is {rows[task_id]['state']})"
        )
    mine = Decision(
        task_id=task_id,
        decision="approved" if approve else "rejected",
        reason=" ".join(reason.split())[:500],
        by=by,
        at=time.time(),
    )
    d, won = journal.decide(rec.run_id, mine)
    if not won:
        raise UsageError(f"task {task_id} of run {rec.run_id} was already {_said(d)}")
    return rec, d


def _said(d: Decision) -> str:
    word = {"timed_out": "timed out"}.get(d.decision, d.decision)
    who = f" by {d.by}" if d.by and d.decision != "timed_out" else ""
    return word + who + (f" ({d.reason})" if d.reason else "")

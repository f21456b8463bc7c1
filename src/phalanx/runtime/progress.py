"""Task progress: each task's record (``TaskRecord``) and its state in the DAG
(``DagState``), moved together, with the event that says each move: running, succeeded
(dependants may become ready), retrying, failed (dependants are skipped) or skipped. A
failed attempt is counted here and ``decide_retry`` asked whether the task gets another;
when and where it runs again is the run's business.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..events import Event, RetryScheduled, TaskFailed, TaskSkipped, TaskSucceeded
from ..exceptions import ErrorClass
from ..ids import TaskId
from ..plan.model import Plan
from .executor import Outcome
from .records import Prior, load_records, tally
from .retry import RetryDecision, decide_retry
from .scheduler import DagState

__all__ = ["Progress"]


class Progress:
    """The records and DAG state of one run's tasks."""

    def __init__(
        self,
        plan: Plan,
        prior: Prior,
        rng: random.Random,
        *,
        now: Callable[[], float],
        emit: Callable[[Event], None],
    ) -> None:
        self.plan, self.tasks, self.rng = plan, plan.task_map, rng
        self.records = load_records(plan, prior)
        self.dag = DagState(plan, {TaskId(k): r.state for k, r in self.records.items()})
        self.now, self.emit = now, emit

    def all_succeeded(self) -> bool:
        return all(r.state == "succeeded" for r in self.records.values())

    def tally(self) -> str:
        return tally(self.records)

    def running(self, tid: TaskId) -> None:
        self.dag.start(tid)
        self.records[tid].state = "running"

    def succeeded(self, o: Outcome, now: float) -> list[TaskId]:
        """The task's attempt succeeded: the tasks that became ready."""
        tid, rec = TaskId(o.task_id), self.records[o.task_id]
        rec.state, rec.output, rec.agent, rec.attempt_id = (
            "succeeded",
            o.output,
            o.agent,
            o.attempt_id,
        )
        rec.error_class = rec.error = None  # earlier failed attempts are in the journal
        rec.parsed, rec.parsed_here = o.parsed, True
        self.emit(
            TaskSucceeded(
                ts=now,
                task_id=tid,
                attempt_id=o.attempt_id,
                agent=o.agent,
                output=o.output,
                parsed=o.parsed,
            )
        )
        return self.dag.succeed(tid)

    def attempt_failed(self, tid: TaskId, o: Outcome) -> RetryDecision:
        """Count a failed attempt; whether the task gets another."""
        rec = self.records[tid]
        rec.attempts += 1
        rec.agent = o.agent  # a failed task is its last attempt's agent's, as status says
        rec.error_class, rec.error = (o.error_class.value if o.error_class else None), o.error
        assert o.error_class is not None
        return decide_retry(
            o.error_class,
            attempt_no=rec.attempts,
            max_attempts=self.tasks[tid].max_attempts,
            retry_after=o.retry_after,
            base=self.plan.retry.base_seconds,
            cap=self.plan.retry.cap_seconds,
            rng=self.rng,
        )

    def retrying(self, tid: TaskId, delay: float, cls: ErrorClass) -> None:
        rec = self.records[tid]
        rec.state = "retrying"
        self.dag.requeue(tid)
        self.emit(
            RetryScheduled(
                ts=self.now(),
                task_id=tid,
                attempt_no=rec.attempts,
                delay=delay,
                error_class=cls,
            )
        )

    def failed(self, tid: TaskId, o: Outcome, why: str) -> None:
        """The task failed for good (``why``: the retry decision); its dependants skip."""
        rec = self.records[tid]
        rec.state = "failed"
        assert o.error_class is not None
        self.emit(
            TaskFailed(
                ts=self.now(),
                task_id=tid,
                error_class=o.error_class,
                error=f"{o.error} ({why})",
                attempts=rec.attempts,
                status=o.status,
            )
        )
        for d in self.dag.fail(tid):
            self.skip(d, tid)

    def skip(self, tid: TaskId, cause: TaskId) -> None:
        rec = self.records[tid]
        rec.state = "skipped"
        rec.error_class = "skipped"
        rec.error = f"upstream task {cause!r} did not succeed"
        self.emit(TaskSkipped(ts=self.now(), task_id=tid, upstream=cause, reason=rec.error))

    def awaiting(self, tid: TaskId) -> None:
        """The task waits for a person's decision (its ``ApprovalRequested`` is the desk's)."""
        self.dag.park(tid)
        self.records[tid].state = "awaiting_approval"

    def approved(self, tid: TaskId) -> None:
        self.dag.requeue(tid)
        self.records[tid].state = "pending"

    def refused(self, tid: TaskId, reason: str, *, fail: bool) -> None:
        """A rejected (or timed-out) approval: the task is skipped, or with ``fail`` fails
        as a timeout; only what needs it is skipped with it."""
        rec = self.records[tid]
        if fail:
            rec.state, rec.error_class, rec.error = "failed", ErrorClass.TIMEOUT.value, reason
            self.emit(
                TaskFailed(
                    ts=self.now(),
                    task_id=tid,
                    error_class=ErrorClass.TIMEOUT,
                    error=reason,
                    attempts=rec.attempts,
                )
            )
            downstream = self.dag.fail(tid)
        else:
            rec.state, rec.error_class, rec.error = "skipped", "skipped", reason
            self.emit(TaskSkipped(ts=self.now(), task_id=tid, upstream=tid, reason=reason))
            downstream = self.dag.reject(tid)
        for d in downstream:
            self.skip(d, tid)

    def skip_orphans(self) -> None:
        """Tasks whose upstream failed or was skipped in an earlier session."""
        for tid, cause in self.dag.orphans():
            self.skip(tid, cause)

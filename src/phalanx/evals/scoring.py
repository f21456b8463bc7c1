"""Scoring a finished eval run: when each task could run, when its first attempt started and
when it ended, its service time (its model calls) apart from its queue wait (before its
first attempt, and inside its attempts for rate-limit permits or a provider's pool) and how
often its answer was re-asked, read from the run's journal on its active clock (the time
between the sessions of a resumed run does not count) (:func:`read_timings`); then the
``command`` checks run side by side, each in its case's sandbox, and every check of every
case run scored into one :class:`~phalanx.evals.report.CaseRun` per case run (:func:`score`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..agents.styles import Styles
from ..api import RunResult, TaskResult
from ..events import (
    AttemptFinished,
    AttemptStarted,
    OutputRejected,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)
from ..journal import Journal
from .build import Build, Slot
from .checks import Check, check_one, run_command
from .report import CaseRun

CommandOutcomes = Mapping[tuple[int, int], tuple[bool, str] | None]  # (slot, check) -> its outcome


@dataclass(slots=True)
class Timing:
    """A task's times, in active seconds since the run started."""

    start: float | None = None  # its first attempt's start
    end: float | None = None
    rejected: int = 0
    ready: float | None = None  # when it could run: its session's start, or its needs' end
    service: float = 0.0  # its attempts' model calls (AttemptFinished.duration)
    queued: float = 0.0  # its attempts' waits for capacity (AttemptFinished.queued)

    @property
    def latency(self) -> float | None:
        """First attempt's start to the end (queue wait inside the attempts included)."""
        return None if self.start is None or self.end is None else self.end - self.start

    @property
    def queue_wait(self) -> float | None:
        """Ready to its first attempt's start, plus its attempts' waits for capacity."""
        if self.start is None:
            return None
        before = self.start - self.ready if self.ready is not None else 0.0
        return max(0.0, before) + self.queued

    @property
    def service_time(self) -> float | None:
        return None if self.start is None else self.service


class _Timings:
    """One pass over a run's events: every task's :class:`Timing` on the active clock."""

    def __init__(self) -> None:
        self.out: dict[str, Timing] = {}
        self.needs: dict[str, tuple[str, ...]] = {}
        self.done: dict[str, float] = {}  # task -> active seconds of its success
        self.base = 0.0  # active seconds before the current session
        self.session: tuple[float, float] | None = None  # (its start ts, its last ts)
        self.finished = 0.0

    def active(self, ts: float) -> float:
        if self.session is None:
            return 0.0
        start, last = self.session
        self.session = (start, max(last, ts))
        return self.base + max(0.0, ts - start)

    def emit(self, e: object) -> None:
        if isinstance(e, RunStarted):
            if self.session is not None:
                self.base += max(0.0, self.session[1] - self.session[0])
            self.session = (e.ts, e.ts)
            self.needs.update({t.id: t.needs for t in e.tasks})
        elif isinstance(e, AttemptStarted):
            t = self.out.setdefault(e.task_id, Timing())
            if t.start is None:
                t.start = self.active(e.ts)
                ends = [self.done.get(n, 0.0) for n in self.needs.get(e.task_id, ())]
                t.ready = max([self.base, *ends])
        elif isinstance(e, AttemptFinished):
            t = self.out.setdefault(e.task_id, Timing())
            t.service += e.duration
            t.queued += e.queued
        else:
            self._other(e)

    def _other(self, e: object) -> None:
        if isinstance(e, TaskSucceeded | TaskFailed | TaskSkipped):
            end = self.active(e.ts)
            self.out.setdefault(e.task_id, Timing()).end = end
            if isinstance(e, TaskSucceeded):
                self.done[e.task_id] = end
        elif isinstance(e, OutputRejected):
            self.out.setdefault(e.task_id, Timing()).rejected += 1
        elif isinstance(e, RunFinished):
            self.finished = e.ts


def read_timings(journal_path: Path, run_id: str) -> tuple[dict[str, Timing], float]:
    """Per task: when it could run, its first attempt's start, its end, its service time
    and queue wait, and its re-asks (active seconds); and the run's end (a timestamp)."""
    journal = Journal(journal_path)
    try:
        return timings_from_events(e for _, e in journal.read_events(run_id))
    finally:
        journal.close()


def timings_from_events(events: Iterable[object]) -> tuple[dict[str, Timing], float]:
    """:func:`read_timings` of a run's events, in journal order (a pure function)."""
    fold = _Timings()
    for e in events:
        fold.emit(e)
    return fold.out, fold.finished


async def score(build: Build, result: RunResult, timings: Mapping[str, Timing]) -> list[CaseRun]:
    """Every case run of ``build``, scored on ``result``, in the order of its slots."""
    commands = await _run_commands(build, result)
    styles = Styles(build.plan.own_styles())  # the eval run's styles
    return [
        _case_run(si, slot, result, timings.get(slot.task_id, Timing()), commands, styles)
        for si, slot in enumerate(build.slots)
    ]


async def _run_commands(build: Build, result: RunResult) -> CommandOutcomes:
    """The command checks of the case runs whose task succeeded, as many at once as there
    are CPUs; None for the others."""
    workers = asyncio.Semaphore(max(1, (os.cpu_count() or 2)))

    async def command(check: Check, slot: Slot) -> tuple[bool, str] | None:
        if result.tasks[slot.task_id].state != "succeeded":
            return None
        async with workers:
            return await asyncio.to_thread(
                run_command, check.argv, slot.workspace, check.timeout, build.plan.env_pass
            )

    pending = {
        (si, ci): asyncio.ensure_future(command(c, slot))
        for si, slot in enumerate(build.slots)
        for ci, c in enumerate(slot.case.checks)
        if c.kind == "command"
    }
    if pending:
        await asyncio.gather(*pending.values())
    return {key: future.result() for key, future in pending.items()}


def _case_run(
    si: int,
    slot: Slot,
    result: RunResult,
    timing: Timing,
    commands: CommandOutcomes,
    styles: Styles,
) -> CaseRun:
    tr = result.tasks[slot.task_id]
    checks = tuple(
        check_one(
            c,
            tr,
            style=slot.style,
            latency=timing.latency,
            rejected=timing.rejected,
            command=commands.get((si, ci)),
            judge=_judge_task(slot, c, result),
            styles=styles,
        )
        for ci, c in enumerate(slot.case.checks)
    )
    ok = tr.state == "succeeded"
    return CaseRun(
        variant=chr(ord("a") + slot.variant),
        case=slot.case.id,
        repeat=slot.repeat,
        task_id=slot.task_id,
        agent=slot.agent,
        state=tr.state,
        passed=ok and all(c.ok for c in checks),
        checks=checks,
        output=tr.output,
        usage=tr.usage,
        latency=timing.latency,
        service=timing.service_time,
        queue_wait=timing.queue_wait,
        style_valid=ok and timing.rejected == 0,
        reasks=timing.rejected,
        error=None if ok else f"{tr.error_class}: {tr.error}" if tr.error_class else None,
        workspace=str(slot.workspace),
        judged=all(result.tasks[j].state != "pending" for _, j in slot.judges),
    )


def _judge_task(slot: Slot, check: Check, result: RunResult) -> TaskResult | None:
    """The judge task of a judge check; None for another kind."""
    if check.kind != "judge":
        return None
    ci = next(i for i, c in enumerate(slot.case.checks) if c is check)
    return result.tasks[dict(slot.judges)[ci]]

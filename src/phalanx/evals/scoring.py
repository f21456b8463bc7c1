"""Scoring a finished eval run: when each task's first attempt started, when it ended and how
often its answer was re-asked, read from the run's journal (:func:`read_timings`); then the
``command`` checks run side by side, each in its case's sandbox, and every check of every
case run scored into one :class:`~phalanx.evals.report.CaseRun` per case run (:func:`score`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..agents.styles import Styles
from ..api import RunResult, TaskResult
from ..events import (
    AttemptStarted,
    OutputRejected,
    RunFinished,
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
    start: float | None = None
    end: float | None = None
    rejected: int = 0

    @property
    def latency(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start


def read_timings(journal_path: Path, run_id: str) -> tuple[dict[str, Timing], float]:
    """Per task: its first attempt's start, its end and its re-asks; and the run's end."""
    out: dict[str, Timing] = {}
    finished = 0.0
    journal = Journal(journal_path)
    try:
        for _, e in journal.read_events(run_id):
            if isinstance(e, AttemptStarted):
                t = out.setdefault(e.task_id, Timing())
                t.start = e.ts if t.start is None else t.start
            elif isinstance(e, TaskSucceeded | TaskFailed | TaskSkipped):
                out.setdefault(e.task_id, Timing()).end = e.ts
            elif isinstance(e, OutputRejected):
                out.setdefault(e.task_id, Timing()).rejected += 1
            elif isinstance(e, RunFinished):
                finished = e.ts
    finally:
        journal.close()
    return out, finished


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

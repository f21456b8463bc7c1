"""The Engine seam and the local asyncio engine.

An engine hosts agents and runs attempts on them; it decides nothing. The orchestrator
``submit``s an attempt to a named agent and receives each :class:`Outcome` through the
callback given to ``start`` (the results stream), on the event loop that started it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..exceptions import ErrorClass
from ..redaction import redact
from .executor import AgentRunner, Attempt, Outcome, failed

__all__ = ["Engine", "EngineLost", "LocalEngine", "OnOutcome"]


@dataclass(frozen=True, slots=True)
class EngineLost:
    """Delivered instead of an outcome when an engine can run nothing more (its cluster is
    gone). The run stops as interrupted; ``phalanx resume`` continues it."""

    reason: str


OnOutcome = Callable[[Outcome | EngineLost], None]


class Engine(Protocol):
    """Hosts agents and runs attempts on them. ``add_agent`` returns None once the agent
    is placed, or why it cannot be (a remote engine whose cluster has no room)."""

    name: str

    async def start(self, runners: Mapping[str, AgentRunner], on_outcome: OnOutcome) -> None: ...

    def submit(self, attempt: Attempt) -> None: ...

    def add_agent(self, name: str, runner: AgentRunner) -> str | None: ...

    def cancel(self, attempt_id: int) -> bool: ...

    async def stop(self) -> None: ...


class LocalEngine:
    """Every agent is a coroutine on this event loop; each attempt is one asyncio task."""

    name = "local"

    def __init__(self) -> None:
        self._runners: dict[str, AgentRunner] = {}
        self._on_outcome: OnOutcome | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}

    async def start(self, runners: Mapping[str, AgentRunner], on_outcome: OnOutcome) -> None:
        self._runners = dict(runners)
        self._on_outcome = on_outcome

    def add_agent(self, name: str, runner: AgentRunner) -> str | None:
        self._runners[name] = runner
        return None

    def submit(self, attempt: Attempt) -> None:
        runner = self._runners[attempt.agent]
        task = asyncio.get_running_loop().create_task(self._run(runner, attempt))
        self._inflight[attempt.attempt_id] = task

    async def _run(self, runner: AgentRunner, attempt: Attempt) -> None:
        try:
            outcome = await runner.run(attempt)
        except Exception as exc:  # a bug under the executor: the attempt fails, never hangs
            why = redact(f"{type(exc).__name__}: {exc}")[:500]
            outcome = failed(attempt, ErrorClass.INTERNAL, why)
        finally:
            self._inflight.pop(attempt.attempt_id, None)
        assert self._on_outcome is not None
        self._on_outcome(outcome)

    def cancel(self, attempt_id: int) -> bool:
        task = self._inflight.pop(attempt_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def stop(self) -> None:
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

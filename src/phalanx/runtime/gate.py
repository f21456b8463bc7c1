"""The run's gate: what a run hands its executors between them and the world. It wraps the
run's rate governor (permits, settling, pauses on a 429) and reports back to the run that
bound it: tokens and cost spent (so budgets see them), whether a budget has stopped new
work, and events the executors note. The run is seen through ``GateHost``, a protocol the
orchestrator satisfies, so this module does not import it.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..cost import Usage
from ..events import Event
from .governor import Gate, RateGovernor

__all__ = ["GateHost", "RunGate"]


class GateHost(Protocol):
    """What the gate needs of the run it serves."""

    governor: RateGovernor | None

    @property
    def exhausted(self) -> str | None: ...

    def now(self) -> float: ...

    def emit(self, event: Event) -> None: ...

    def spend(self, usage: Usage) -> None: ...

    def on_wait(self, agent: str, task_id: str, key: str, seconds: float) -> None: ...

    def commit(self) -> None: ...

    async def spawn(self, task_id: str, attempt_id: int, call: str, arguments: Any) -> Any: ...


class RunGate(Gate):
    """The gate a run gives its executors: the governor, the run's spend, events."""

    def __init__(self, governor: RateGovernor) -> None:
        self.governor = governor
        self.orchestrator: GateHost | None = None

    def bind(self, orchestrator: GateHost) -> None:
        self.orchestrator = orchestrator
        orchestrator.governor = self.governor
        self.governor.on_wait = orchestrator.on_wait

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        return await self.governor.acquire(key, tokens, agent=agent, task_id=task_id)

    def settle(self, ticket: object, tokens: int) -> None:
        self.governor.settle(ticket, tokens)

    def pause(self, key: str, seconds: float) -> None:
        self.governor.pause(key, seconds)

    def release(self, ticket: object) -> None:
        self.governor.release(ticket)

    def learn(self, key: str, rate: object) -> None:
        self.governor.learn(key, rate)

    def governs(self, key: str) -> bool:
        limit = self.governor.limit_for(key)
        return limit is not None and (limit.rpm is not None or limit.tpm is not None)

    def spend(self, usage: Usage) -> None:
        if self.orchestrator is not None:
            self.orchestrator.spend(usage)

    def stopped(self) -> str | None:
        return self.orchestrator.exhausted if self.orchestrator is not None else None

    def note(self, event: type[Event], **fields: Any) -> None:
        if self.orchestrator is not None:
            self.orchestrator.emit(event(ts=self.orchestrator.now(), **fields))

    async def commit(self) -> None:
        if self.orchestrator is not None:
            self.orchestrator.commit()

    async def spawn(self, task_id: str, attempt_id: int, call: str, arguments: Any) -> Any:
        if self.orchestrator is None:
            return None
        return await self.orchestrator.spawn(task_id, attempt_id, call, arguments)

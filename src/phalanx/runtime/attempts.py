"""Live attempts: the run's fencing tokens. Each task being worked on has one current attempt
id (a result carrying any other id is stale: recorded and ignored); each attempt in flight
occupies its agent until its outcome arrives; and with ``limits.lease_seconds`` each has a
lease, after which it fails as a timeout (delivered like any outcome) and its task is
retried elsewhere. Attempt ids grow across sessions of a resumed run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..exceptions import ErrorClass
from .executor import Outcome
from .policies import AgentSlot

__all__ = ["AttemptLedger"]


class AttemptLedger:
    """Current attempt per task, the agent each in-flight attempt occupies, and leases."""

    def __init__(
        self, first_id: int, lease_seconds: float | None, expired: Callable[[Outcome], None]
    ) -> None:
        self.current: dict[str, int] = {}  # task -> its live attempt id (the fencing token)
        self.inflight: dict[int, AgentSlot] = {}  # attempt id -> the agent it occupies
        self.next_id = first_id
        self.lease_seconds = lease_seconds
        self._leases: dict[int, asyncio.TimerHandle] = {}  # attempt id -> its lease timer
        self._expired = expired  # where an expired lease's timeout outcome goes

    def open(self, tid: str, agent: AgentSlot) -> int:
        """A new attempt of ``tid`` on ``agent``: its id, now the task's current one."""
        aid = self.next_id
        self.next_id += 1
        self.current[tid] = aid
        agent.running += 1
        self.inflight[aid] = agent
        return aid

    def lease(self, tid: str, aid: int, agent: str) -> None:
        lease = self.lease_seconds
        if lease is not None:
            self._leases[aid] = asyncio.get_running_loop().call_later(
                lease, self._lease_expired, tid, aid, agent, lease
            )

    def _lease_expired(self, tid: str, aid: int, agent: str, lease: float) -> None:
        """An attempt still without a result after its lease (a stuck agent, a frozen
        coroutine, a stopped worker) fails as a timeout and its task is retried elsewhere;
        a result it sends later is stale (fenced by its attempt id) and ignored."""
        self._leases.pop(aid, None)
        if self.current.get(tid) != aid:
            return
        self._expired(
            Outcome(
                attempt_id=aid,
                task_id=tid,
                agent=agent,
                ok=False,
                duration=lease,
                error_class=ErrorClass.TIMEOUT,
                error=f"no result within its lease of {lease:g}s; the task is reassigned",
            )
        )

    def close(self, o: Outcome) -> tuple[AgentSlot | None, bool]:
        """An outcome arrived: its lease ends and its agent is freed. Returns that agent
        (None for an attempt the run no longer counts) and whether the outcome is stale."""
        lease = self._leases.pop(o.attempt_id, None)
        if lease is not None:
            lease.cancel()
        slot = self.inflight.pop(o.attempt_id, None)
        if slot is not None:  # an attempt this run no longer counts frees nothing
            slot.running -= 1
            slot.busy += o.duration
        return slot, self.current.get(o.task_id) != o.attempt_id

    def settle(self, tid: str) -> None:
        """The task's current attempt is over: it has none until the next one opens."""
        del self.current[tid]

    def drop(self, aid: int) -> tuple[str, AgentSlot]:
        """Stop counting an in-flight attempt the run cancelled: its task and agent."""
        slot = self.inflight.pop(aid)
        slot.running -= 1
        tid = next(t for t, a in self.current.items() if a == aid)
        del self.current[tid]
        return tid, slot

    def cancel_leases(self) -> None:
        for handle in self._leases.values():
            handle.cancel()

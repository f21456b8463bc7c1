"""Dispatch: ready tasks to agents. A ready task pinned to an agent waits in that agent's own
queue; the others wait in the central pool (``ReadyQueue``). Each round, every agent that
may start (free, and its breakers allow it) takes the head of its own queue first; the
pool's tasks go to the agents left free as the policy decides (``assign``); then idle agents
steal queued tasks from busier ones (``limits.work_stealing``). When open breakers pause
every agent able to take waiting work, that is said once. The dispatcher starts nothing
itself: it hands each (task, agent) pair to the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..events import Event, TaskStolen
from ..ids import TaskId
from ..plan.model import Plan
from .breakers import FleetBreakers
from .policies import AgentSlot, FreeAgents, pick_victim
from .router import LLMPolicy
from .scheduler import ReadyQueue, assign

__all__ = ["Dispatcher"]


class Dispatcher:
    """Which agent starts which ready task, one round at a time."""

    def __init__(
        self,
        plan: Plan,
        slots: dict[str, AgentSlot],
        ready: ReadyQueue,
        breakers: FleetBreakers,
        *,
        policy: Any,
        router: LLMPolicy | None,
        run_id: str,
        now: Callable[[], float],
        emit: Callable[[Event], None],
        start: Callable[[TaskId, AgentSlot], None],
    ) -> None:
        self.tasks = plan.task_map
        self.work_stealing = plan.limits.work_stealing
        self.slots, self.ready, self.breakers = slots, ready, breakers
        self.policy, self.router, self.run_id = policy, router, run_id
        self.now, self.emit, self.start = now, emit, start
        # tasks that go back to an agent once: a resumed run's interrupted loops, to the
        # agent whose loop (and workspace) they continue
        self.affinity: dict[TaskId, str] = {}

    def enqueue(self, tids: Iterable[TaskId]) -> None:
        """Ready tasks go to the central pool, or to the local queue of their agent."""
        for tid in tids:
            pinned = self.tasks[tid].agent or self.affinity.pop(tid, None)
            if pinned is not None and pinned in self.slots:
                self.slots[pinned].queue.append(self.tasks[tid])
            else:
                self.ready.push(tid)
                if self.router is not None:
                    self.router.prefetch(self.tasks[tid], list(self.slots.values()), self.run_id)

    def round(self) -> None:
        """Start what can start now."""
        free = []
        for agent in [s for s in self.slots.values() if s.free and self.breakers.allows(s)]:
            if agent.queue:  # an agent's own queue first
                self.start(agent.queue.popleft().id, agent)
            else:
                free.append(agent)
        self._pool(free)
        if self.work_stealing:
            self._steal(free)
        if self.breakers.open:
            self.breakers.say_if_all_paused(self.ready, self.slots)

    def _pool(self, free: list[AgentSlot]) -> None:
        """The central pool's tasks to the free agents (``assign`` decides); ``free`` keeps
        the agents left free."""
        if not free or not len(self.ready):
            return
        pool = FreeAgents(free)
        for task, agent in assign(self.ready, pool, self.policy):
            self.start(task.id, agent)
        if len(pool) < len(free):
            free[:] = pool.remaining()

    def _steal(self, free: list[AgentSlot]) -> None:
        # only agents with a queue can be robbed (the same choices, without scanning the
        # whole fleet for every idle agent when nobody has a queue)
        agents = [a for a in self.slots.values() if a.queue]
        if not agents:
            return
        for thief in list(free):
            found = pick_victim(thief, agents)
            if found is None:
                continue
            victim, task = found
            victim.queue.remove(task)
            self.emit(
                TaskStolen(
                    ts=self.now(), task_id=task.id, from_agent=victim.name, to_agent=thief.name
                )
            )
            self.start(task.id, thief)
            free.remove(thief)

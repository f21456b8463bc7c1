"""Assignment policies: which agent takes a ready task. Pure decisions over agent views.

``round_robin`` rotates through the fleet, ``least_loaded`` picks the agent with the least
work (then the fewest tasks done, then the least busy time), ``best_fit`` picks the best
specialisation match (role, task category, skills), ties to the least loaded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..plan import Task

__all__ = [
    "AgentSlot",
    "BestFit",
    "LeastLoaded",
    "Policy",
    "RoundRobin",
    "can_serve",
    "fit_score",
    "make_policy",
    "pick_victim",
]


@dataclass(slots=True, eq=False)
class AgentSlot:
    """The scheduler's live view of one agent (mutated by the orchestrator only)."""

    name: str
    role: str
    skills: frozenset[str]
    specialities: frozenset[str]
    index: int
    capacity: int = 1  # attempts it may run at once
    running: int = 0
    done: int = 0
    busy: float = 0.0
    paused: bool = False
    provider: str = ""
    queue: deque[Task] = field(default_factory=deque)  # tasks assigned to it, not started
    idle_since: float = 0.0

    @property
    def load(self) -> int:
        return self.running + len(self.queue)

    @property
    def free(self) -> bool:
        return not self.paused and self.running < self.capacity


def can_serve(agent: AgentSlot, role: str | None, skills: frozenset[str]) -> bool:
    return (role is None or agent.role == role) and skills <= agent.skills


def pick_victim(thief: AgentSlot, agents: Sequence[AgentSlot]) -> tuple[AgentSlot, Task] | None:
    """Work stealing: the most loaded other agent with a queued task the thief can serve,
    and that task (the most recently queued one: the owner keeps the head of its queue)."""
    best: tuple[AgentSlot, Task] | None = None
    for victim in agents:
        if victim is thief or not victim.queue:
            continue
        if best is not None and len(victim.queue) <= len(best[0].queue):
            continue
        task = next((t for t in reversed(victim.queue) if can_serve(thief, t.role, t.skills)), None)
        if task is not None:
            best = (victim, task)
    return best


def fit_score(task: Task, agent: AgentSlot) -> int:
    """Specialisation match: role 4, task category among the agent's specialities 2,
    1 per shared skill. The strategy's ``calculate_fit``."""
    score = 0
    if task.role is not None and agent.role == task.role:
        score += 4
    if task.category in agent.specialities:
        score += 2
    score += len(task.skills & agent.skills)
    return score


def _load_key(a: AgentSlot) -> tuple[int, int, float, int]:
    return (a.load, a.done, a.busy, a.index)


class Policy(Protocol):
    name: str

    def pick(self, task: Task, candidates: Sequence[AgentSlot]) -> AgentSlot: ...


class RoundRobin:
    """Agent ``i % n`` in turn: the next candidate at or after the cursor, cyclically."""

    name = "round_robin"

    def __init__(self, fleet_size: int) -> None:
        self.fleet_size = max(1, fleet_size)
        self.cursor = 0

    def pick(self, task: Task, candidates: Sequence[AgentSlot]) -> AgentSlot:
        n, c = self.fleet_size, self.cursor
        best = min(candidates, key=lambda a: (a.index - c) % n)
        self.cursor = (best.index + 1) % n
        return best


class LeastLoaded:
    name = "least_loaded"

    def pick(self, task: Task, candidates: Sequence[AgentSlot]) -> AgentSlot:
        return min(candidates, key=_load_key)


class BestFit:
    name = "best_fit"

    def pick(self, task: Task, candidates: Sequence[AgentSlot]) -> AgentSlot:
        """The highest :func:`fit_score`, ties to the least loaded (one pass, no key
        objects unless a candidate is at least as fit as the best so far)."""
        role, category, skills = task.role, task.category, task.skills
        best = candidates[0]
        best_key = (-fit_score(task, best), *_load_key(best))
        for a in candidates[1:]:
            score = 4 if role is not None and a.role == role else 0
            if category in a.specialities:
                score += 2
            if skills:
                score += len(skills & a.skills)
            if -score > best_key[0]:
                continue
            key = (-score, *_load_key(a))
            if key < best_key:
                best, best_key = a, key
        return best


def make_policy(name: str, fleet_size: int) -> Policy:
    if name == "round_robin":
        return RoundRobin(fleet_size)
    if name == "least_loaded":
        return LeastLoaded()
    if name in ("best_fit", "llm"):  # "llm" without a router model: its fallback
        return BestFit()
    raise ValueError(f"unknown policy {name!r}")

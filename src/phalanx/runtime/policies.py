"""Assignment policies: which agent takes a ready task. Pure decisions over agent views.

``round_robin`` rotates through the fleet, ``least_loaded`` picks the agent with the least
work (then the fewest tasks done, then the least busy time), ``best_fit`` picks the best
specialisation match (role, task category, skills), ties to the least loaded.

Every policy picks from a list of candidates (``pick``). A dispatch round indexes its free
agents in a :class:`FreeAgents` pool instead, and ``least_loaded`` and ``best_fit`` pick from
the pool (``pick_from``) without looking at every agent: the same choices, in time that
grows with the kinds of agents, not their number.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..plan.model import Task

__all__ = [
    "AgentSlot",
    "BestFit",
    "FreeAgents",
    "LeastLoaded",
    "Policy",
    "RoundRobin",
    "balance_load",
    "can_serve",
    "fit_score",
    "make_policy",
    "match_task_to_agent",
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


# The strategy's balance_load (move a queued task from an overloaded agent to an idle one)
# is work stealing: an idle agent takes from the most loaded queue it can serve.
balance_load = pick_victim


def match_task_to_agent(task: Task, agents: Sequence[AgentSlot]) -> AgentSlot | None:
    """The strategy's ``match_task_to_agent``: of the agents that can serve ``task``, the
    one with the highest :func:`fit_score` (the least loaded on a tie); None if none can."""
    able = [a for a in agents if can_serve(a, task.role, task.skills)]
    if not able:
        return None
    return max(able, key=lambda a: (fit_score(task, a), [-x for x in _load_key(a)]))


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


_Entry = tuple[int, int, float, int, AgentSlot]  # an agent under its _load_key
_Score = Callable[[Task, AgentSlot], int]


class FreeAgents:
    """The free agents of one dispatch round, indexed for its decisions.

    Agents of one kind (role, skills, specialities) can serve the same tasks and fit each
    task equally, so a decision compares kinds, not agents: each kind keeps its agents in
    a heap by :func:`_load_key`, and each question (the task's role, skills and category)
    keeps a heap of the kinds that can serve it, by (-score, their best agent's load key).
    Taking an agent only ever makes its kind's best agent worse, so a kind whose entry is
    out of date is re-queued when it reaches the top. A question's heap is built the first
    time it is asked in the round (O(kinds)); after that a decision costs O(log kinds)
    amortised, and makes the same choice as scanning every candidate. The pool assumes
    what holds during a round: agents change only by being taken."""

    __slots__ = ("_able", "_agents", "_heaps", "_kind", "_queries", "_reps", "_taken", "size")

    def __init__(self, agents: Iterable[AgentSlot]) -> None:
        self._agents = list(agents)
        kinds: dict[tuple[str, frozenset[str], frozenset[str]], int] = {}
        self._heaps: list[list[_Entry]] = []
        self._kind: dict[AgentSlot, int] = {}  # agent -> its kind
        for a in self._agents:
            k = kinds.get((a.role, a.skills, a.specialities))
            if k is None:
                k = kinds[(a.role, a.skills, a.specialities)] = len(self._heaps)
                self._heaps.append([])
            self._kind[a] = k
            self._heaps[k].append((a.running + len(a.queue), a.done, a.busy, a.index, a))
        for heap in self._heaps:
            heapq.heapify(heap)
        self._reps = [heap[0][4] for heap in self._heaps]  # one agent standing for its kind
        self._taken: set[AgentSlot] = set()  # taken from inside a heap (removed lazily)
        self._able: dict[tuple[str | None, frozenset[str]], list[int]] = {}
        self._queries: dict[tuple[object, ...], list[tuple[int, int, int, float, int, int]]] = {}
        self.size = len(self._agents)

    def __len__(self) -> int:
        return self.size

    def take(self, agent: AgentSlot) -> None:
        """``agent`` got a task this round: it is no longer free."""
        heap = self._heaps[self._kind[agent]]
        if heap[0][4] is agent:  # the best of its kind (a pick from the pool): gone now
            heapq.heappop(heap)
        else:
            self._taken.add(agent)
        self.size -= 1

    def remaining(self) -> list[AgentSlot]:
        """The agents not taken, in the order the pool was given them."""
        free = {id(entry[4]) for heap in self._heaps for entry in heap} if self.size else set()
        return [a for a in self._agents if id(a) in free and a not in self._taken]

    def candidates(self, role: str | None, skills: frozenset[str]) -> list[AgentSlot]:
        """The free agents that can serve (role, skills): what a policy's ``pick`` sees."""
        taken = self._taken
        return [
            entry[4]
            for k in self._able_kinds(role, skills)
            for entry in self._heaps[k]
            if entry[4] not in taken
        ]

    def best(self, task: Task, score: _Score | None) -> AgentSlot | None:
        """The free agent that can serve ``task`` with the highest ``score`` (all equal when
        None), ties to the least loaded by :func:`_load_key`; None when none can."""
        heaps = self._heaps
        key = (task.role, task.skills, task.category, score)
        queue = self._queries.get(key)
        if queue is None:
            queue = self._queries[key] = []
            for k in self._able_kinds(task.role, task.skills):
                head = self._head(heaps[k])
                if head is not None:
                    fit = score(task, self._reps[k]) if score is not None else 0
                    queue.append((-fit, head[0], head[1], head[2], head[3], k))
            heapq.heapify(queue)
        while queue:
            top = queue[0]
            heap = heaps[top[5]]
            head = (heap[0] if heap else None) if not self._taken else self._head(heap)
            if head is None:
                heapq.heappop(queue)
            elif head[3] != top[4]:  # its best agent was taken: queue it again as it is now
                heapq.heapreplace(queue, (top[0], head[0], head[1], head[2], head[3], top[5]))
            else:
                return head[4]
        return None

    def _head(self, heap: list[_Entry]) -> _Entry | None:
        taken = self._taken
        while heap and heap[0][4] in taken:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _able_kinds(self, role: str | None, skills: frozenset[str]) -> list[int]:
        able = self._able.get((role, skills))
        if able is None:
            able = self._able[(role, skills)] = [
                k for k, rep in enumerate(self._reps) if can_serve(rep, role, skills)
            ]
        return able


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

    def pick_from(self, task: Task, pool: FreeAgents) -> AgentSlot | None:
        """:meth:`pick` over the pool's agents that can serve ``task`` (None: none can)."""
        return pool.best(task, None)


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

    def pick_from(self, task: Task, pool: FreeAgents) -> AgentSlot | None:
        """:meth:`pick` over the pool's agents that can serve ``task`` (None: none can)."""
        return pool.best(task, fit_score)


def make_policy(name: str, fleet_size: int) -> Policy:
    if name == "round_robin":
        return RoundRobin(fleet_size)
    if name == "least_loaded":
        return LeastLoaded()
    if name in ("best_fit", "llm"):  # "llm" without a router model: its fallback
        return BestFit()
    raise ValueError(f"unknown policy {name!r}")

"""The DAG's live state and the ready queue: pure data structures, no I/O, no clock."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ..ids import TaskId
from ..plan.model import Plan, Task
from .policies import AgentSlot, FreeAgents, Policy

__all__ = ["DagState", "ReadyQueue", "assign"]

TERMINAL = frozenset({"succeeded", "failed", "skipped"})


class DagState:
    """Which tasks are waiting, ready or terminal, updated one completion at a time (O(1)
    amortised per edge). Terminal states given at construction come from a resumed run."""

    def __init__(self, plan: Plan, terminal: Mapping[TaskId, str] | None = None) -> None:
        self.tasks = plan.task_map
        self.dependants = plan.dependants()
        self.state: dict[TaskId, str] = {tid: "pending" for tid in self.tasks}
        for tid, st in (terminal or {}).items():
            if tid in self.state and st in TERMINAL:
                self.state[tid] = st
        self.waiting: dict[TaskId, int] = {
            t.id: sum(1 for n in set(t.needs) if self.state[n] != "succeeded")
            for t in self.tasks.values()
        }
        self.remaining = sum(1 for s in self.state.values() if s not in TERMINAL)

    def initially_ready(self) -> list[TaskId]:
        return [t for t, s in self.state.items() if s == "pending" and self.waiting[t] == 0]

    def orphans(self) -> list[tuple[TaskId, TaskId]]:
        """Pending tasks behind an already failed/skipped task (after a resume): (task, cause)."""
        out: list[tuple[TaskId, TaskId]] = []
        for tid, st in list(self.state.items()):
            if st in ("failed", "skipped"):
                out.extend((d, tid) for d in self._skip_from(tid))
        return out

    def add(self, task: Task) -> None:
        """A task the plan grew by (its needs are tasks already known)."""
        self.tasks[task.id] = task
        self.state[task.id] = "pending"
        self.dependants[task.id] = []
        for n in set(task.needs):
            self.dependants[n].append(task.id)
        self.waiting[task.id] = sum(1 for n in set(task.needs) if self.state[n] != "succeeded")
        self.remaining += 1

    def join(self, tid: TaskId, needs: Iterable[TaskId]) -> None:
        """``tid`` (not started) now also needs ``needs``, new tasks."""
        for n in needs:
            self.dependants[n].append(tid)
            self.waiting[tid] += self.state[n] != "succeeded"

    def is_ready(self, tid: TaskId) -> bool:
        return self.state[tid] == "pending" and self.waiting[tid] == 0

    def start(self, tid: TaskId) -> None:
        self.state[tid] = "running"

    def requeue(self, tid: TaskId) -> None:
        self.state[tid] = "pending"

    def park(self, tid: TaskId) -> None:
        """``tid`` waits for a person's decision (not terminal: the run waits for it)."""
        self.state[tid] = "awaiting_approval"

    def reject(self, tid: TaskId) -> list[TaskId]:
        """``tid`` is skipped (its approval was refused); returns the tasks downstream,
        now skipped too."""
        self._finish(tid, "skipped")
        return self._skip_from(tid)

    def succeed(self, tid: TaskId) -> list[TaskId]:
        """Mark ``tid`` succeeded; return the dependants that became ready."""
        self._finish(tid, "succeeded")
        ready = []
        for d in self.dependants[tid]:
            self.waiting[d] -= 1
            if self.waiting[d] == 0 and self.state[d] == "pending":
                ready.append(d)
        return ready

    def fail(self, tid: TaskId) -> list[TaskId]:
        """Mark ``tid`` failed; return every not-yet-terminal task downstream (now skipped)."""
        self._finish(tid, "failed")
        return self._skip_from(tid)

    def _skip_from(self, tid: TaskId) -> list[TaskId]:
        skipped: list[TaskId] = []
        stack = list(self.dependants[tid])
        while stack:
            d = stack.pop()
            if self.state[d] in TERMINAL:
                continue
            self._finish(d, "skipped")
            skipped.append(d)
            stack.extend(self.dependants[d])
        return skipped

    def _finish(self, tid: TaskId, state: str) -> None:
        if self.state[tid] not in TERMINAL:
            self.remaining -= 1
        self.state[tid] = state

    @property
    def done(self) -> bool:
        return self.remaining == 0


@dataclass(slots=True)
class _Bucket:
    role: str | None
    skills: frozenset[str]
    heap: list[tuple[int, int, int, TaskId]] = field(default_factory=list)


class ReadyQueue:
    """Ready tasks by eligibility (role, skills), each bucket ordered by priority, then the
    longest remaining critical path, then plan order."""

    def __init__(self, plan: Plan) -> None:
        cp = plan.critical_path()
        self._rank = {t.id: (-t.priority, -cp[t.id], i) for i, t in enumerate(plan.tasks)}
        self._tasks = plan.task_map
        self.buckets: dict[tuple[str | None, frozenset[str]], _Bucket] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, task: Task) -> None:
        """A task the plan grew by: ranked by its priority, after the plan's tasks."""
        self._tasks[task.id] = task
        self._rank[task.id] = (-task.priority, -1, len(self._rank))

    def push(self, tid: TaskId) -> None:
        t = self._tasks[tid]
        key = (t.role, t.skills)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(role=t.role, skills=t.skills)
        heapq.heappush(bucket.heap, (*self._rank[tid], tid))
        self._size += 1

    def extend(self, tids: Iterable[TaskId]) -> None:
        for t in tids:
            self.push(t)

    def heads(self) -> list[tuple[_Bucket, Task]]:
        """Each non-empty bucket with its best task, best first."""
        heads = [(b.heap[0], b) for b in self.buckets.values() if b.heap]
        heads.sort(key=lambda x: x[0])
        return [(b, self._tasks[h[3]]) for h, b in heads]

    def task_ids(self) -> list[TaskId]:
        return [entry[3] for b in self.buckets.values() for entry in b.heap]

    def pop(self, bucket: _Bucket) -> Task:
        tid = heapq.heappop(bucket.heap)[3]
        self._size -= 1
        return self._tasks[tid]


def assign(ready: ReadyQueue, pool: FreeAgents, policy: Policy) -> Iterator[tuple[Task, AgentSlot]]:
    """One dispatch round's decisions, in order: the best-ranked ready task that some free
    agent can serve goes to the agent ``policy`` picks among those, until no free agent can
    serve any ready task. Each pair is popped from ``ready`` and taken from ``pool`` before
    it is yielded; the caller changes neither while it iterates.

    The buckets' best tasks wait in a heap; a bucket that no free agent can serve is set
    aside for the round (the pool only shrinks), so a decision costs O(log buckets) plus the
    policy's pick (``pick_from`` when it has one, else ``pick`` over the candidates)."""
    pick_from = getattr(policy, "pick_from", None)
    tasks = ready._tasks
    heads = [(b.heap[0], i, b) for i, b in enumerate(ready.buckets.values()) if b.heap]
    heapq.heapify(heads)
    while heads and pool.size:
        entry, i, bucket = heads[0]
        task = tasks[entry[3]]
        agent: AgentSlot | None
        if pick_from is not None:
            agent = pick_from(task, pool)
        else:
            candidates = pool.candidates(bucket.role, bucket.skills)
            agent = policy.pick(task, candidates) if candidates else None
        if agent is None:
            heapq.heappop(heads)  # nobody free can serve this bucket this round
            continue
        ready.pop(bucket)
        pool.take(agent)
        if bucket.heap:
            heapq.heapreplace(heads, (bucket.heap[0], i, bucket))
        else:
            heapq.heappop(heads)
        yield task, agent

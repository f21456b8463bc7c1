"""The indexed dispatch (``FreeAgents`` + ``assign``) makes exactly the decisions of the
plain one: take the best-ranked ready bucket that some free agent can serve, let the
policy pick among the free agents that can serve it, repeat. Random fleets and queues,
every built-in policy, several rounds with the agents' loads changing between them."""

from __future__ import annotations

import random

import pytest

from phalanx import AgentSpec, Plan, Task
from phalanx.ids import TaskId
from phalanx.runtime.policies import (
    AgentSlot,
    BestFit,
    FreeAgents,
    LeastLoaded,
    Policy,
    RoundRobin,
    can_serve,
)
from phalanx.runtime.scheduler import ReadyQueue, assign

ROLES = ("coder", "tester", "reviewer")
SKILLS = ("py", "sql", "go", "web")
CATEGORIES = ("implementation", "testing", "research", "documentation")


def _world(seed: int) -> tuple[Plan, list[AgentSlot]]:
    rng = random.Random(seed)
    slots = [
        AgentSlot(
            name=f"a{i}",
            role=rng.choice(ROLES),
            skills=frozenset(rng.sample(SKILLS, rng.randrange(3))),
            specialities=frozenset(rng.sample(CATEGORIES, rng.randrange(3))),
            index=i,
            capacity=rng.choice([1, 1, 2]),
            done=rng.randrange(4),
            busy=rng.choice([0.0, 1.0, 2.5]),
        )
        for i in range(rng.randrange(1, 30))
    ]
    for s in slots:
        s.running = rng.randrange(s.capacity)
    specs = [
        AgentSpec(name=s.name, role=s.role, skills=s.skills)
        for s in slots  # type: ignore[arg-type]
    ]
    tasks = []
    for i in range(rng.randrange(1, 80)):
        owner = rng.choice(slots)
        tasks.append(
            Task(
                id=TaskId(f"t{i}"),
                prompt="p",
                role=owner.role if rng.random() < 0.4 else None,
                skills=frozenset(
                    rng.sample(sorted(owner.skills), rng.randrange(len(owner.skills) + 1))
                ),
                category=rng.choice(CATEGORIES),
                priority=rng.choice([0, 0, 1]),
            )
        )
    return Plan.build(agents=specs, tasks=tasks), slots


def _reference(ready: ReadyQueue, free: list[AgentSlot], policy: Policy) -> list[tuple[str, str]]:
    """The dispatch loop as it was: every bucket head, every candidate, every decision."""
    out = []
    while free and len(ready):
        for bucket, task in ready.heads():
            candidates = [a for a in free if can_serve(a, bucket.role, bucket.skills)]
            if candidates:
                ready.pop(bucket)
                agent = policy.pick(task, candidates)
                out.append((task.id, agent.name))
                free.remove(agent)
                break
        else:
            break
    return out


def _indexed(ready: ReadyQueue, free: list[AgentSlot], policy: Policy) -> list[tuple[str, str]]:
    pool = FreeAgents(free)
    out = [(task.id, agent.name) for task, agent in assign(ready, pool, policy)]
    free[:] = pool.remaining()
    return out


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "best_fit"])
@pytest.mark.parametrize("seed", range(40))
def test_indexed_dispatch_decides_like_the_plain_one(policy: str, seed: int) -> None:
    plan, slots = _world(seed)
    runs = []
    for dispatch in (_reference, _indexed):
        agents = [
            AgentSlot(
                name=s.name,
                role=s.role,
                skills=s.skills,
                specialities=s.specialities,
                index=s.index,
                capacity=s.capacity,
                running=s.running,
                done=s.done,
                busy=s.busy,
            )
            for s in slots
        ]
        chosen: Policy = {
            "round_robin": RoundRobin(len(agents)),
            "least_loaded": LeastLoaded(),
            "best_fit": BestFit(),
        }[policy]
        ready = ReadyQueue(plan)
        waiting = [t.id for t in plan.tasks]
        by_name = {a.name: a for a in agents}
        steps = []
        order = random.Random(seed)
        for _ in range(12):  # rounds; between them tasks get ready and agents finish
            now_ready = order.randrange(len(waiting) + 1)
            ready.extend(waiting[:now_ready])
            del waiting[:now_ready]
            free = [a for a in agents if a.free]
            picked = dispatch(ready, free, chosen)
            steps.append((picked, [a.name for a in free]))
            for _, name in picked:
                by_name[name].running += 1
            for a in agents:
                if a.running and order.random() < 0.6:
                    a.running -= 1
                    a.done += 1
                    a.busy += order.choice([0.5, 1.0])
        runs.append(steps)
    assert runs[0] == runs[1]
    assert any(picked for picked, _ in runs[0])


def test_a_pool_answers_none_when_nobody_free_can_serve() -> None:
    a = AgentSlot(
        name="a", role="coder", skills=frozenset({"py"}), specialities=frozenset(), index=0
    )
    pool = FreeAgents([a])
    task = Task(id=TaskId("t"), prompt="p", skills=frozenset({"go"}))
    assert BestFit().pick_from(task, pool) is None
    assert pool.candidates(None, frozenset({"go"})) == []
    ok = Task(id=TaskId("u"), prompt="p", skills=frozenset({"py"}))
    assert BestFit().pick_from(ok, pool) is a
    pool.take(a)
    assert BestFit().pick_from(ok, pool) is None and pool.remaining() == [] and len(pool) == 0

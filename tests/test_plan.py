"""Plans as values: building from Python, validation, dependency order, critical path and
resizing the fleet."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from conftest import sim_plan
from phalanx import AgentSpec, Limits, Plan, PlanError, Task, decompose_project, load_plan
from phalanx.ids import TaskId
from phalanx.plan.file import plan_json, plan_to_dict

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "feature-team.yaml"


def task(tid: str, *needs: str, skills: Iterable[str] = (), **kw: Any) -> Task:
    needs_ = tuple(TaskId(n) for n in needs)
    return Task(id=TaskId(tid), prompt=f"do {tid}", needs=needs_, skills=frozenset(skills), **kw)


def build(*tasks: Task, agents: list[AgentSpec] | None = None, **kw: Any) -> Plan:
    return Plan.build(agents=agents or [AgentSpec()], tasks=list(tasks), **kw)


def assert_topological(plan: Plan, order: list[TaskId]) -> None:
    assert sorted(order) == sorted(t.id for t in plan.tasks)
    pos = {tid: i for i, tid in enumerate(order)}
    for t in plan.tasks:
        for n in t.needs:
            assert pos[n] < pos[t.id], f"{t.id} comes before {n}, which it needs"


CHAIN = (task("t0"), task("t1", "t0"), task("t2", "t1"), task("t3", "t2"))
DIAMOND = (task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c"))

# -- building ----------------------------------------------------------------------------------


def test_build_names_every_agent_once_and_keeps_given_names() -> None:
    plan = build(task("a"), agents=[AgentSpec(), AgentSpec(name="Nova"), AgentSpec()])
    names = [a.name for a in plan.agents]
    assert all(names)
    assert len(set(names)) == 3
    assert names[1] == "Nova"
    again = build(task("a"), agents=[AgentSpec(), AgentSpec(name="Nova"), AgentSpec()])
    assert [a.name for a in again.agents] == names  # a resumed run gets the same names


@pytest.mark.parametrize("tid", ["a", "9", "A.b_c-1", "x" * 128])
def test_valid_task_ids(tid: str) -> None:
    assert build(task(tid)).tasks[0].id == tid


def test_from_dict_builds_a_valid_plan() -> None:
    plan = Plan.from_dict(sim_plan(5, agents=3, deps="chain"))
    assert [t.id for t in plan.tasks] == ["t0", "t1", "t2", "t3", "t4"]
    assert len(plan.agents) == 3
    assert plan.critical_path()["t0"] == 5


def test_plan_file_round_trips_through_plan_to_dict() -> None:
    """What a resumed run is rebuilt from is the same plan."""
    plan = load_plan(str(EXAMPLE))
    again = Plan.from_dict(plan_to_dict(plan), source=plan.source)
    assert again == plan
    assert [a.name for a in again.agents] == [a.name for a in plan.agents]


def test_plan_json_is_json_dumps_of_plan_to_dict() -> None:
    """The run's journal row holds ``plan_json``: the same text as the general encoder's,
    for plain tasks (the hand-made encoder) and tasks with a typed output, an approval,
    a foreach or odd values (``json.dumps``, for that task only)."""
    import dataclasses
    import json

    from phalanx.plan.model import Task

    plans = [load_plan(str(p)) for p in sorted(EXAMPLE.parent.glob("*.yaml"))]
    assert plans
    odd = Plan.from_dict(
        {
            "name": "odd",
            "provider": "sim",
            "agents": [{"role": "coder", "name": "coder-1", "skills": ["b", "z"]}],
            "tasks": [
                {"id": "a", "prompt": 'é "quoted"\n\u2028', "title": "T", "skills": ["z", "b"]},
                {"id": "b", "prompt": "p", "needs": ["a"], "role": "coder", "priority": 3,
                 "timeout": 2.5, "max_turns": 4, "style": "json", "agent": "coder-1"},
                {"id": "c", "prompt": "p", "approval": "required", "approval_timeout": 60},
                {"id": "d", "prompt": "p", "schema": {"type": "object"}},
                {"id": "e", "prompt": "p", "needs": ["d"], "foreach": "d.items"},
            ],
        }
    )  # fmt: skip
    inf = dataclasses.replace(odd.tasks[1], timeout=float("inf"))  # not JSON: the general one
    flag = dataclasses.replace(odd.tasks[1], priority=True)  # type: ignore[arg-type]
    odd = dataclasses.replace(odd, tasks=(*odd.tasks, inf, flag, Task(id="f", prompt="x")))
    for plan in [*plans, odd]:
        want = json.dumps(plan_to_dict(plan), separators=(",", ":"), default=str)
        assert plan_json(plan) == want, plan.name


# -- validation --------------------------------------------------------------------------------

coder, tester = AgentSpec(role="coder", skills=frozenset({"python"})), AgentSpec(role="tester")

INVALID = [
    pytest.param({"agents": [], "tasks": [task("a")]}, "agents", "agent", id="no-agents"),
    pytest.param({"tasks": []}, "tasks", "task", id="no-tasks"),
    pytest.param({"tasks": [task("a")], "policy": "nope"}, "policy", "nope", id="policy"),
    pytest.param({"tasks": [task("a"), task("a")]}, "tasks[1].id", "'a'", id="duplicate-id"),
    pytest.param({"tasks": [task("bad id")]}, "tasks[0].id", "bad id", id="id-with-space"),
    pytest.param({"tasks": [task("-a")]}, "tasks[0].id", "-a", id="id-starts-with-dash"),
    pytest.param({"tasks": [task("")]}, "tasks[0].id", "invalid", id="empty-id"),
    pytest.param({"tasks": [task("x" * 129)]}, "tasks[0].id", "invalid", id="id-too-long"),
    pytest.param({"tasks": [task("a\n")]}, "tasks[0].id", "invalid", id="id-trailing-newline"),
    pytest.param(
        {"tasks": [task("a"), task("b", "a", "zz")]}, "tasks[1].needs", "zz", id="unknown-need"
    ),
    pytest.param({"tasks": [task("a", "a")]}, "tasks[0].needs", "itself", id="needs-itself"),
    pytest.param(
        {"tasks": [task("a", "b"), task("b", "a")]},
        "tasks[0].needs",
        "a -> b -> a",
        id="cycle",
    ),
    pytest.param(
        {"tasks": [task("z", "x"), task("x", "y"), task("y", "x"), task("free")]},
        "tasks[1].needs",
        "x -> y -> x",
        id="cycle-behind-a-task",
    ),
    pytest.param(
        {"tasks": [task("a", role="reviewer")], "agents": [coder, tester]},
        "tasks[0].role",
        "reviewer",
        id="role",
    ),
    pytest.param(
        {"tasks": [task("a", skills={"rust"})], "agents": [coder]},
        "tasks[0].skills",
        "rust",
        id="skills",
    ),
    pytest.param(
        {
            "tasks": [task("a", role="tester", skills=frozenset({"python"}))],
            "agents": [coder, tester],
        },
        "tasks[0].skills",
        "tester",
        id="skills-of-another-role",
    ),
    pytest.param(
        {"tasks": [task("a", max_attempts=0)]}, "tasks[0].max_attempts", "1", id="max-attempts"
    ),
    pytest.param(
        {"tasks": [task("a", category="cooking")]}, "tasks[0].category", "cooking", id="category"
    ),
    pytest.param(
        {"tasks": [task("a")], "agents": [AgentSpec(name="Bo"), AgentSpec(name="Bo")]},
        "agents[1].name",
        "Bo",
        id="duplicate-agent-name",
    ),
    pytest.param(
        {"tasks": [task("a")], "agents": [AgentSpec()] * 3, "limits": Limits(max_agents=2)},
        "limits.max_agents",
        "2",
        id="max-agents",
    ),
]


@pytest.mark.parametrize(("kwargs", "field", "says"), INVALID)
def test_build_rejects_invalid_plans(kwargs: dict[str, Any], field: str, says: str) -> None:
    kwargs = {"agents": [AgentSpec()], **kwargs}
    with pytest.raises(PlanError) as caught:
        Plan.build(**kwargs, source="mine.py")
    err = caught.value
    assert err.field == field
    assert err.file == "mine.py"
    assert says in err.detail
    assert str(err).startswith("mine.py")
    assert "\n" not in str(err)


def test_an_unvalidated_cycle_is_named_by_topological_order_and_critical_path() -> None:
    plan = build(task("a"), task("b"))
    cyclic = dataclasses.replace(plan, tasks=(task("a", "b"), task("b", "c"), task("c", "a")))
    for query in (cyclic.topological_order, cyclic.critical_path):
        with pytest.raises(PlanError, match="a -> b -> c -> a"):
            query()


# -- order and critical path -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tasks",
    [
        pytest.param(CHAIN, id="chain"),
        pytest.param(DIAMOND, id="diamond"),
        pytest.param(tuple(reversed(CHAIN)), id="needs-listed-after"),
        pytest.param((task("a"), task("b", "a", "a")), id="duplicate-need"),
        pytest.param((task("x"), task("y"), task("z")), id="independent"),
    ],
)
def test_topological_order_puts_needs_first(tasks: tuple[Task, ...]) -> None:
    plan = build(*tasks)
    order = plan.topological_order()
    assert_topological(plan, order)
    assert plan.topological_order() == order  # deterministic


def test_topological_order_of_a_layered_plan() -> None:
    plan = Plan.from_dict(sim_plan(60, deps="layered"))
    assert_topological(plan, plan.topological_order())


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        pytest.param(CHAIN, {"t0": 4, "t1": 3, "t2": 2, "t3": 1}, id="chain"),
        pytest.param(DIAMOND, {"a": 3, "b": 2, "c": 2, "d": 1}, id="diamond"),
        pytest.param((task("x"), task("y")), {"x": 1, "y": 1}, id="independent"),
        pytest.param(
            (task("a"), task("b", "a"), task("c", "b"), task("d", "a")),
            {"a": 3, "b": 2, "c": 1, "d": 1},
            id="long-and-short-branch",
        ),
    ],
)
def test_critical_path(tasks: tuple[Task, ...], expected: dict[str, int]) -> None:
    assert build(*tasks).critical_path() == expected


def test_example_plan_order_critical_path_and_categories() -> None:
    plan = load_plan(str(EXAMPLE))
    assert_topological(plan, plan.topological_order())
    assert plan.critical_path() == {
        "research-users": 4,
        "design-api": 3,
        "implement-tokens": 2,
        "implement-email": 2,
        "test-flow": 1,
        "document": 1,
    }
    assert plan.dependants()["design-api"] == ["implement-tokens", "implement-email", "document"]
    groups = decompose_project(plan)
    assert {c: [t.id for t in ts] for c, ts in groups.items()} == {
        "research": ["research-users"],
        "architecture": ["design-api"],
        "implementation": ["implement-tokens", "implement-email"],
        "testing": ["test-flow"],
        "documentation": ["document"],
        "other": [],
    }


# -- resizing the fleet ------------------------------------------------------------------------

TEAM = [
    AgentSpec(role="designer", style="yaml"),
    AgentSpec(role="implementer", skills=frozenset({"python"})),
    AgentSpec(role="implementer", skills=frozenset({"python"})),  # same spec as the one above
    AgentSpec(role="validator", style="table"),
]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (3, {"designer": 1, "implementer": 1, "validator": 1}),
        (4, {"designer": 2, "implementer": 1, "validator": 1}),
        (8, {"designer": 3, "implementer": 3, "validator": 2}),
        (30, {"designer": 10, "implementer": 10, "validator": 10}),
    ],
)
def test_with_agent_count_spreads_n_over_the_distinct_specs(
    n: int, expected: dict[str, int]
) -> None:
    plan = build(task("a"), agents=TEAM)
    resized = plan.with_agent_count(n)
    assert len(resized.agents) == n
    assert Counter(a.role for a in resized.agents) == expected
    assert len({a.name for a in resized.agents}) == n
    assert all(a.name for a in resized.agents)
    for a in resized.agents:  # each clone keeps its spec
        assert a.skills == ({"python"} if a.role == "implementer" else set())
        assert a.style == {"designer": "yaml", "validator": "table"}.get(a.role, "text")
    assert [a.name for a in plan.with_agent_count(n).agents] == [a.name for a in resized.agents]
    assert len(plan.agents) == 4  # the original is untouched


def test_with_agent_count_treats_specs_differing_only_by_name_as_one() -> None:
    plan = build(task("a"), agents=[AgentSpec(name="Ann"), AgentSpec(name="Bob")])
    assert len(plan.with_agent_count(1).agents) == 1


@pytest.mark.parametrize(
    ("n", "field"),
    [(0, "--agents"), (-1, "--agents"), (2, "--agents"), (5, "limits.max_agents")],
)
def test_with_agent_count_rejects(n: int, field: str) -> None:
    plan = build(task("a"), agents=TEAM, limits=Limits(max_agents=4), source="team.yaml")
    with pytest.raises(PlanError) as caught:
        plan.with_agent_count(n)
    assert caught.value.field == field
    assert caught.value.file == "team.yaml"


def test_with_overrides() -> None:
    plan = build(task("a"), agents=[AgentSpec(), AgentSpec(provider="sim:other")])
    changed = plan.with_overrides(policy="round_robin", provider="sim", agents=3)
    assert changed.policy == "round_robin"
    assert changed.provider == "sim"
    assert [a.provider for a in changed.agents] == ["sim", "sim", "sim"]
    assert plan.with_overrides() == plan
    with pytest.raises(PlanError) as caught:
        plan.with_overrides(policy="nope")
    assert caught.value.field == "--policy"

"""Coordination at scale: work stealing and circuit breakers (virtual clock, sim models)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.cost import Usage
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.providers.base import Completion, CompletionRequest
from phalanx.runtime.breaker import BreakerConfig, CircuitBreaker
from phalanx.runtime.policies import AgentSlot, pick_victim
from phalanx.testing import run_virtual


def _events(state: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(state / "journal.sqlite")
    rows = db.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, kind)
    )
    return [json.loads(d) for (d,) in rows]


# -- work stealing ------------------------------------------------------------------------


def _skewed(stealing: bool) -> Plan:
    names = ["A", "B", "C", "D", "E"]
    tasks = [
        Task(id=f"t{i}", prompt="work", agent="A" if i < 90 else names[1 + i % 4])  # type: ignore[arg-type]
        for i in range(100)
    ]
    return Plan.build(
        agents=[AgentSpec(name=n, provider="sim") for n in names],  # type: ignore[arg-type]
        tasks=tasks,
        providers={"sim": {"latency": {"ms": 1000}}},
        limits=phalanx.Limits(work_stealing=stealing),
    )


def test_work_stealing_balances_a_skewed_assignment(state: Path) -> None:
    balanced_ideal = 100 / 5 * 1.0  # seconds: 100 one-second tasks on 5 agents
    stolen = run_virtual(phalanx.run(_skewed(stealing=True)))
    kept = run_virtual(phalanx.run(_skewed(stealing=False)))
    print(f"makespan with stealing {stolen.wall_seconds:.1f}s, without {kept.wall_seconds:.1f}s")
    assert stolen.status == kept.status == "succeeded"
    assert stolen.wall_seconds <= 1.2 * balanced_ideal
    assert kept.wall_seconds >= 85  # agent A alone works through its 90 tasks
    steals = _events(state, stolen.run_id, "task_stolen")
    assert steals and all(s["from_agent"] == "A" for s in steals)
    per_agent: dict[str, int] = {}
    for t in stolen.tasks.values():
        per_agent[t.agent or ""] = per_agent.get(t.agent or "", 0) + 1
    assert max(per_agent.values()) <= 24


def test_pick_victim_prefers_the_longest_queue_and_respects_roles() -> None:
    def slot(name: str, role: str, queued: list[Task]) -> AgentSlot:
        s = AgentSlot(name=name, role=role, skills=frozenset(), specialities=frozenset(), index=0)
        s.queue.extend(queued)
        return s

    coder_task = Task(id="c", prompt="x", role="coder")  # type: ignore[arg-type]
    any_task = Task(id="a", prompt="x")  # type: ignore[arg-type]
    thief = slot("T", "tester", [])
    short = slot("S", "coder", [any_task])
    long = slot("L", "coder", [any_task, coder_task, coder_task])
    victim, task = pick_victim(thief, [thief, short, long]) or (None, None)
    assert victim is long and task is any_task  # the only task a tester may take
    assert pick_victim(thief, [thief, slot("X", "coder", [coder_task])]) is None


# -- circuit breakers ---------------------------------------------------------------------


def test_breaker_state_machine() -> None:
    b = CircuitBreaker(BreakerConfig(window=10, threshold=0.5, min_volume=4, cooldown=5))
    for ok in (True, False, False):
        assert b.record(ok, 0) is None  # under min_volume
    assert b.record(False, 1) == "open"
    assert not b.allows() and b.poll(3) is None
    assert b.poll(6) == "half_open" and b.allows()
    b.start_probe()
    assert not b.allows()  # exactly one probe
    assert b.record(False, 6.5) == "open"
    assert b.poll(11.5) == "half_open"
    b.start_probe()
    assert b.record(True, 12) == "closed" and b.allows() and b.error_rate == 0


class Flaky:
    """Fails 80% of calls until ``heals_at`` (virtual seconds), then always answers."""

    name, simulated = "flaky", True

    def __init__(self, heals_at: float) -> None:
        self.heals_at = heals_at
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.0)
        self.calls += 1
        if loop.time() < self.heals_at and self.calls % 5 != 0:
            raise ProviderError("boom", error_class=ErrorClass.SERVER_ERROR, status=500)
        return Completion(text="ok", usage=Usage(input_tokens=5, output_tokens=5))

    async def aclose(self) -> None:
        return None


def test_flaky_agent_trips_its_breaker_others_finish_and_a_probe_closes_it(
    state: Path,
) -> None:
    plan = Plan.build(
        agents=[
            AgentSpec(name="Flaky", provider="flaky"),  # type: ignore[arg-type]
            *AgentSpec(provider="sim").clone(3),
        ],
        tasks=[Task(id=f"t{i}", prompt="x", max_attempts=6) for i in range(150)],  # type: ignore[arg-type]
        providers={"sim": {"latency": {"ms": 1000}}},
        policy="round_robin",
        breaker=BreakerConfig(window=10, threshold=0.5, min_volume=4, cooldown=10),
        retry=phalanx.plan.model.RetryConfig(base_seconds=0.1, cap_seconds=1),
    )
    flaky = Flaky(heals_at=30.0)
    breaker_hooks: list[dict[str, Any]] = []
    result = run_virtual(
        phalanx.run(
            plan, custom_providers={"flaky": flaky}, hooks=[{"on_breaker": breaker_hooks.append}]
        )
    )
    assert ("Flaky", "open") in [(h["key"], h["state"]) for h in breaker_hooks]
    assert result.status == "succeeded"
    changes = [
        (e["key"], e["state"])
        for e in _events(state, result.run_id, "breaker_changed")
        if e["scope"] == "agent"
    ]
    assert changes[0] == ("Flaky", "open")
    assert ("Flaky", "half_open") in changes
    assert changes[-1] == ("Flaky", "closed")  # a probe succeeded after it healed
    alerts = [a["message"] for a in _events(state, result.run_id, "alert")]
    assert any(a.startswith("agent Flaky paused: error rate") for a in alerts)
    status_alerts = [a for a in result.snapshot.alerts if a.startswith("breaker: ")]
    assert any(a.startswith("breaker: agent Flaky paused") for a in status_alerts), status_alerts
    # while it was open, the other agents did the work
    by_agent: dict[str, int] = {}
    for t in result.tasks.values():
        by_agent[t.agent or ""] = by_agent.get(t.agent or "", 0) + 1
    assert by_agent.get("Flaky", 0) < 150 / 4


def test_the_run_says_plainly_when_every_agent_of_a_role_is_paused(state: Path) -> None:
    plan = Plan.build(
        agents=[
            AgentSpec(role="reviewer", provider="flaky"),
            AgentSpec(role="coder", provider="sim"),
        ],
        tasks=[Task(id=f"r{i}", prompt="x", role="reviewer", max_attempts=8) for i in range(6)],  # type: ignore[arg-type]
        breaker=BreakerConfig(window=10, threshold=0.5, min_volume=3, cooldown=5),
        retry=phalanx.plan.model.RetryConfig(base_seconds=0.1, cap_seconds=1),
    )
    result = run_virtual(phalanx.run(plan, custom_providers={"flaky": Flaky(heals_at=40.0)}))
    alerts = [a["message"] for a in _events(state, result.run_id, "alert")]
    assert any(
        "every agent that can take 'reviewer' tasks is paused by an open circuit breaker" in a
        for a in alerts
    )
    assert result.status == "succeeded"  # it healed, a probe closed the breaker, work resumed


@pytest.mark.parametrize("cls", ["rate_limited"])
def test_backpressure_does_not_trip_a_breaker(state: Path, cls: str) -> None:
    data = {
        "provider": "sim",
        "providers": {"sim": {"faults": {cls: 0.9}, "retry_after": 0.01}},
        "retry": {"base_seconds": 0.01, "cap_seconds": 0.02},
        "breaker": {"window": 10, "min_volume": 3, "threshold": 0.5},
        "agents": [{"count": 2}],
        "tasks": [{"id": f"t{i}", "prompt": "x", "max_attempts": 60} for i in range(5)],
    }
    result = phalanx.run_sync(Plan.from_dict(data))
    assert _events(state, result.run_id, "breaker_changed") == []


# -- autoscaling --------------------------------------------------------------------------


def test_autoscaler_grows_stops_at_the_rate_limit_and_shrinks(state: Path) -> None:
    data = {
        "provider": "sim",
        "providers": {"sim": {"latency": {"ms": 1000}}},
        "limits": {"max_agents": 32, "rate_limits": {"sim": {"rpm": 240}}},
        "autoscale": {"start_agents": 1, "interval": 5, "retire_after": 8, "min_gain": 0.5},
        "agents": [{"role": "worker"}],
        "tasks": [{"id": f"t{i}", "prompt": "x"} for i in range(500)]
        # then a tail of 20 one-at-a-time tasks: the backlog drains, most agents go idle
        + [{"id": "c0", "prompt": "x", "needs": [f"t{i}" for i in range(500)]}]
        + [{"id": f"c{i}", "prompt": "x", "needs": [f"c{i - 1}"]} for i in range(1, 20)],
    }
    scaled: list[dict[str, Any]] = []
    result = run_virtual(phalanx.run(Plan.from_dict(data), hooks=[{"on_scale": scaled.append}]))
    assert result.status == "succeeded"
    decisions = _events(state, result.run_id, "scale_decision")
    assert [s["action"] for s in scaled] == [
        d["action"] for d in decisions if d["action"] != "hold"
    ]
    adds = [d for d in decisions if d["action"] == "add"]
    holds = [d for d in decisions if d["action"] == "hold"]
    retires = [d for d in decisions if d["action"] == "retire"]
    assert adds and adds[0]["before"] == 1 and adds[0]["after"] == 2  # start small, grow
    peak = max(d["after"] for d in decisions)
    # 240 requests/min = 4 one-second calls at once: more than ~8 agents cannot help
    assert 4 <= peak <= 8, peak
    assert any(
        "rate-limit headroom" in h["reason"] or "last agents added" in h["reason"] for h in holds
    ), holds
    assert retires and retires[-1]["after"] <= min(2, peak - 1)  # it shrank as work drained
    for d in decisions:
        assert d["reason"] and "active" in d["numbers"] and "waiting" in d["numbers"]
    joined = _events(state, result.run_id, "agent_joined")
    assert len(joined) == peak - 1
    print(
        f"peak {peak} agents, makespan {result.wall_seconds:.0f}s (virtual),",
        [(d["action"], d["before"], d["after"]) for d in decisions],
    )


def test_scale_decisions_are_pure_and_explained() -> None:
    from phalanx.runtime.scaling import (
        AutoscaleConfig,
        RoleEvidence,
        agents_needed,
        decide_scale,
        hybrid_scale,
        scale_horizontally,
        scale_vertically,
    )

    cfg = AutoscaleConfig(start_agents=1, min_gain=0.5, retire_after=10)
    grow = decide_scale(RoleEvidence(role="r", active=2, waiting=50, throughput=2, room=10), cfg)
    assert (grow.action, grow.count) == ("add", 2)  # start small, then double
    capped = decide_scale(RoleEvidence(role="r", active=8, waiting=50, throughput=8, room=3), cfg)
    assert capped.count == 3
    full = decide_scale(RoleEvidence(role="r", active=8, waiting=50, throughput=8, room=0), cfg)
    assert full.action == "hold" and "max_agents" in full.reason
    # grew 4 -> 8 but throughput only went 4 -> 4.4: 0.1 per added agent < 0.5 x 1.0
    flat = decide_scale(
        RoleEvidence(
            role="r", active=8, waiting=50, throughput=4.4, before_growth=(4, 4.0), room=10
        ),
        cfg,
    )
    assert flat.action == "hold" and flat.numbers["marginal_gain"] == 0.1
    limited = decide_scale(
        RoleEvidence(
            role="r", active=4, waiting=50, throughput=4, requests=4, rate_headroom=0.5, room=10
        ),
        cfg,
    )
    assert limited.action == "hold" and "rate-limit headroom" in limited.reason
    drained = decide_scale(
        RoleEvidence(
            role="r", active=4, waiting=0, throughput=1, idle=(("a", 12.0), ("b", 3.0), ("c", 30.0))
        ),
        cfg,
    )
    assert drained.action == "retire" and drained.retire == ("a", "c")
    assert agents_needed(10, 3) == 4
    spec = AgentSpec(role="coder")
    assert len(scale_horizontally(spec, workload=10, agent_capacity=3)) == 4
    better = scale_vertically(spec, tools=("read_file",), style="concise", provider="sim")
    assert better.tools == ("read_file",) and better.style == "concise"
    clones = hybrid_scale(spec, 3, style="yaml")
    assert len(clones) == 3 and all(c.style == "yaml" and c.name is None for c in clones)


# -- patterns -----------------------------------------------------------------------------


def test_pipeline_hands_each_stage_the_one_before(state: Path) -> None:
    from phalanx import Pipeline

    pipe = Pipeline(
        {
            "analyze": AgentSpec(style="yaml"),
            "design": AgentSpec(style="html"),
            "implement": AgentSpec(style="concise"),
        },
        provider="sim",
    )
    plan = pipe.plan("password reset")
    assert [t.needs for t in plan.tasks] == [(), ("analyze",), ("design",)]
    assert [a.role for a in plan.agents] == ["analyze", "design", "implement"]
    outputs = pipe.execute("password reset")
    assert list(outputs) == ["analyze", "design", "implement"]
    assert outputs["design"].startswith("<section>")  # the design stage answers in html


def test_team_routes_by_role_and_swarm_assigns_round_robin(state: Path) -> None:
    from phalanx import Swarm, Team

    team = Team(
        {"researcher": AgentSpec(style="yaml"), "coder": [AgentSpec(), AgentSpec()]}, provider="sim"
    )
    result = team.run_sync(
        [
            Task(id="r", prompt="survey", role="researcher"),  # type: ignore[arg-type]
            Task(id="c1", prompt="code", role="coder", needs=("r",)),  # type: ignore[arg-type]
            Task(id="c2", prompt="code", role="coder", needs=("r",)),  # type: ignore[arg-type]
        ]
    )
    roles = {a.name: a.role for a in team.agents}
    assert roles[result.tasks["r"].agent or ""] == "researcher"
    assert {roles[result.tasks[c].agent or ""] for c in ("c1", "c2")} == {"coder"}
    swarm = Swarm(size=4, roles=["researcher", "coder"], provider="sim")
    plan = swarm.distribute_work([f"item {i}" for i in range(8)])
    assert [t.agent for t in plan.tasks] == [a.name for a in swarm.agents] * 2
    assert [a.role for a in swarm.agents] == ["researcher", "coder"] * 2


# -- AI-driven distribution ---------------------------------------------------------------


class Router:
    name, simulated = "router", True

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.asked += 1
        if self.answer is None:
            raise ProviderError("router down", error_class=ErrorClass.SERVER_ERROR)
        return Completion(
            text=json.dumps({"agent": self.answer}), usage=Usage(input_tokens=50, output_tokens=5)
        )

    async def aclose(self) -> None:
        return None


def _routed_plan() -> Plan:
    return Plan.build(
        agents=[AgentSpec(name=n, provider="sim") for n in ("A", "B", "C")],  # type: ignore[arg-type]
        tasks=[Task(id=f"t{i}", prompt="x") for i in range(30)],  # type: ignore[arg-type]
        providers={"sim": {"latency": {"ms": 100}}},
        policy="llm",
        router=phalanx.plan.model.RouterConfig(provider="router"),
    )


def test_llm_policy_uses_the_routers_pick_and_falls_back(state: Path) -> None:
    router = Router("C")
    result = run_virtual(phalanx.run(_routed_plan(), custom_providers={"router": router}))
    assert result.status == "succeeded"
    assert router.asked >= 27  # every task that had a choice was asked about
    alerts = [a["message"] for a in _events(state, result.run_id, "alert")]
    placed = [a for a in alerts if a.startswith("the router model placed ")]
    assert len(placed) == 1, alerts
    routed = int(placed[0].split()[4])
    # agents free up together here, so each round the router's pick (C) takes the first
    # task and best_fit places the rest: the router placed about one task in three
    assert 8 <= routed <= 12, placed


def test_llm_policy_survives_a_failing_router(state: Path) -> None:
    router = Router(None)
    result = run_virtual(phalanx.run(_routed_plan(), custom_providers={"router": router}))
    assert result.status == "succeeded"
    alerts = [a["message"] for a in _events(state, result.run_id, "alert")]
    assert any("placed 0 of 30 tasks" in a and "failed" in a for a in alerts), alerts


# -- leases: a stuck agent's task moves on -------------------------------------------------


class Freezer:
    """Freezes the first attempt of task "x" (until ``thaw_at``, or forever), then answers."""

    name, simulated = "freezer", True

    def __init__(self, thaw_at: float | None) -> None:
        self.thaw_at = thaw_at
        self.frozen = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.task_id == "x" and request.attempt_no == 1:
            self.frozen += 1
            if self.thaw_at is None:
                await asyncio.Event().wait()  # a frozen coroutine
            loop = asyncio.get_running_loop()
            await asyncio.sleep(self.thaw_at - loop.time())
            return Completion(text="LATE", usage=Usage(input_tokens=1, output_tokens=1))
        await asyncio.sleep(1.0)
        return Completion(
            text=f"ok {request.task_id}", usage=Usage(input_tokens=1, output_tokens=1)
        )

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("thaw_at", [None, 6.0])
def test_a_stuck_attempt_is_reassigned_after_its_lease(state: Path, thaw_at: float | None) -> None:
    plan = Plan.build(
        agents=AgentSpec(provider="freezer").clone(3),
        tasks=[Task(id="x", prompt="x"), *[Task(id=f"t{i}", prompt="y") for i in range(40)]],  # type: ignore[arg-type]
        limits=phalanx.Limits(lease_seconds=5.0),
        retry=phalanx.plan.model.RetryConfig(base_seconds=0.1, cap_seconds=0.2),
    )
    freezer = Freezer(thaw_at)
    result = run_virtual(phalanx.run(plan, custom_providers={"freezer": freezer}))
    assert result.status == "succeeded" and freezer.frozen == 1
    assert result.tasks["x"].output == "ok x"  # the reassigned attempt's answer, not LATE
    db = sqlite3.connect(state / "journal.sqlite")
    rows = db.execute(
        "SELECT attempt_no, outcome, error FROM attempts WHERE run_id = ? AND task_id = 'x'"
        " ORDER BY attempt_id",
        (result.run_id,),
    ).fetchall()
    assert rows[0][0] == 1 and "lease of 5s" in (rows[0][2] or "")
    assert [r[1] for r in rows].count("succeeded") == 1
    (results,) = db.execute(
        "SELECT COUNT(*) FROM results WHERE run_id = ? AND task_id = 'x'", (result.run_id,)
    ).fetchone()
    assert results == 1
    if thaw_at is not None:  # the late answer came back, fenced off by its attempt id
        assert rows[0][1] == "stale"

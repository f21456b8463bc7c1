"""The core runtime end to end on the sim provider: DAG order, concurrency, faults, retries,
partial failure, fencing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx import AgentSpec, Plan, Task
from phalanx.exceptions import RETRYABLE, ErrorClass
from phalanx.runtime.engine import LocalEngine
from phalanx.runtime.executor import Attempt, Outcome


def _db(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "journal.sqlite")


def assert_dependency_order(state: Path, run_id: str) -> None:
    """Every attempt of a task started after each task it needs had its result committed."""
    db = _db(state)
    needs = {
        tid: json.loads(n)
        for tid, n in db.execute(
            "SELECT task_id, needs_json FROM tasks WHERE run_id = ?", (run_id,)
        )
    }
    done_at = dict(
        db.execute("SELECT task_id, created_at FROM results WHERE run_id = ?", (run_id,))
    )
    starts = db.execute(
        "SELECT task_id, started_at FROM attempts WHERE run_id = ?", (run_id,)
    ).fetchall()
    assert starts
    for tid, started in starts:
        for n in needs[tid]:
            assert n in done_at, f"{tid} ran although {n} never succeeded"
            assert started >= done_at[n], f"{tid} started before {n} finished"


@pytest.mark.parametrize("agents", [1, 4, 32])
def test_200_task_dag_runs_on_n_agents(state: Path, agents: int) -> None:
    plan = Plan.from_dict(sim_plan(200, agents=agents, latency_ms=2, deps="layered"))
    result = phalanx.run_sync(plan, seed=agents)
    assert result.status == "succeeded", result.summary()
    assert len(result.tasks) == 200
    assert all(t.state == "succeeded" for t in result.tasks.values())
    assert {t.agent for t in result.tasks.values()} <= {a.name for a in plan.agents}
    used = {t.agent for t in result.tasks.values()}
    assert len(used) == agents  # every agent took work
    assert_dependency_order(state, result.run_id)
    states = dict(
        _db(state).execute(
            "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state",
            (result.run_id,),
        )
    )
    assert states == {"succeeded": 200}


def test_concurrency_is_real(state: Path) -> None:
    """200 independent 50 ms tasks: 50 agents are at least 10x faster than 1 agent."""

    def wall(n_agents: int) -> float:
        plan = Plan.from_dict(sim_plan(200, agents=n_agents, latency_ms=50))
        t0 = time.perf_counter()
        result = phalanx.run_sync(plan)
        assert result.status == "succeeded"
        return time.perf_counter() - t0

    one, fifty = wall(1), wall(50)
    print(f"1 agent {one:.2f}s, 50 agents {fifty:.2f}s, ratio {one / fifty:.1f}x")
    assert one / fifty >= 10


def test_retryable_faults_are_survived(state: Path) -> None:
    """30% retryable faults, 6 attempts, 1000 tasks: >= 99% succeed; failures say why."""
    faults = {"rate_limited": 0.1, "server_error": 0.1, "overloaded": 0.05, "timeout": 0.05}
    plan = Plan.from_dict(
        sim_plan(1000, agents=50, faults=faults, max_attempts=6, retry_after=0.02, seed=7)
    )
    result = phalanx.run_sync(plan, seed=7)
    ok = sum(t.ok for t in result.tasks.values())
    print(f"{ok}/1000 succeeded, {result.snapshot.failed_attempts} failed attempts")
    assert ok >= 990
    assert result.snapshot.failed_attempts > 200  # the faults really happened
    db = _db(state)
    for tid, cls, attempts in db.execute(
        "SELECT task_id, error_class, attempts FROM tasks WHERE run_id = ? AND state='failed'",
        (result.run_id,),
    ):
        assert cls in {c.value for c in RETRYABLE}
        assert attempts == 6, tid
    # no wait shorter than Retry-After
    for (data,) in db.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = 'retry_scheduled'",
        (result.run_id,),
    ):
        ev = json.loads(data)
        if ev["error_class"] == "rate_limited":
            assert ev["delay"] >= 0.02


@pytest.mark.parametrize("cls", ["auth", "bad_request", "context_length", "quota_exhausted"])
def test_non_retryable_faults_are_never_retried(state: Path, cls: str) -> None:
    plan = Plan.from_dict(sim_plan(200, agents=10, faults={cls: 0.3}, max_attempts=6))
    result = phalanx.run_sync(plan)
    failed = [t for t in result.tasks.values() if t.state == "failed"]
    assert 20 < len(failed) < 120
    assert result.status == "failed" and result.exit_code == 1
    for t in failed:
        assert t.error_class == cls
        assert t.attempts == 1
    (retries,) = (
        _db(state)
        .execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'retry_scheduled'",
            (result.run_id,),
        )
        .fetchone()
    )
    assert retries == 0


def test_partial_failure_skips_only_dependants(state: Path) -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="sim")],
        tasks=[
            Task(id="a", prompt="a"),
            Task(id="bad", prompt="b", max_attempts=2),
            Task(id="after-bad", prompt="c", needs=("bad",)),
            Task(id="after-after", prompt="d", needs=("after-bad", "a")),
            Task(id="after-a", prompt="e", needs=("a",)),
        ],
        providers={"sim": {"faults": {}}},
    )

    class FailOne:
        name, simulated = "sim", True

        async def complete(self, request: Any) -> Any:
            from phalanx.providers.sim import SimProvider

            if request.task_id == "bad":
                raise phalanx.ProviderError("boom", error_class=ErrorClass.SERVER_ERROR, status=500)
            return await SimProvider().complete(request)

    import phalanx.api as api

    orig = api.resolve_provider
    api.resolve_provider = lambda *a, **k: FailOne()  # type: ignore[assignment]
    try:
        result = phalanx.run_sync(plan)
    finally:
        api.resolve_provider = orig
    states = {k: t.state for k, t in result.tasks.items()}
    assert states == {
        "a": "succeeded",
        "bad": "failed",
        "after-bad": "skipped",
        "after-after": "skipped",
        "after-a": "succeeded",
    }
    assert result.tasks["bad"].attempts == 2
    assert "bad" in (result.tasks["after-after"].error or "") or "after-bad" in (
        result.tasks["after-after"].error or ""
    )
    assert result.exit_code == 1


def test_downstream_prompt_receives_upstream_results_with_provenance(state: Path) -> None:
    seen: dict[str, str] = {}

    class Recorder:
        name, simulated = "sim", True

        async def complete(self, request: Any) -> Any:
            from phalanx.providers.base import Completion

            seen[request.task_id] = request.messages[-1].content
            return Completion(text=f"result of {request.task_id}", simulated=True)

    plan = Plan.build(
        agents=[
            AgentSpec(role="designer", provider="sim"),
            AgentSpec(role="coder", provider="sim"),
        ],
        tasks=[
            Task(id="design", prompt="design it", role="designer"),
            Task(id="build", prompt="build it", role="coder", needs=("design",)),
        ],
    )
    import phalanx.api as api

    orig = api.resolve_provider
    api.resolve_provider = lambda *a, **k: Recorder()  # type: ignore[assignment]
    try:
        result = phalanx.run_sync(plan)
    finally:
        api.resolve_provider = orig
    assert result.status == "succeeded"
    designer = result.tasks["design"].agent
    assert "### design (by " + str(designer) + ")" in seen["build"]
    assert "result of design" in seen["build"]
    assert "build it" in seen["build"]
    assert "design" not in seen["design"].split("design it", 1)[1]


def test_outputs_are_written_and_marked_simulated(state: Path) -> None:
    result = phalanx.run_sync("examples/feature-team.yaml", provider="sim")
    assert result.simulated
    files = sorted(p.name for p in result.outputs_dir.iterdir())
    assert [f.rsplit(".", 1)[0] for f in files] == sorted(result.tasks)
    for p in result.outputs_dir.iterdir():
        text = p.read_text()
        assert "simulated" in text
    assert "SIMULATED" in result.summary()
    assert (result.outputs_dir / "design-api.yaml").exists()  # the designer answers in yaml


class _StaleEngine(LocalEngine):
    """Delivers a forged late result for an old attempt id before the real one."""

    def submit(self, attempt: Attempt) -> None:
        assert self._on_outcome is not None
        self._on_outcome(
            Outcome(
                attempt_id=attempt.attempt_id - 1000,
                task_id=attempt.task.id,
                agent=attempt.agent,
                ok=True,
                duration=0.0,
                output="STALE",
            )
        )
        super().submit(attempt)


def test_late_result_of_superseded_attempt_is_ignored(state: Path) -> None:
    plan = Plan.from_dict(sim_plan(5, agents=1))

    async def go() -> phalanx.RunResult:
        return await phalanx.run(plan, engine=_StaleEngine())

    result = asyncio.run(go())
    assert all(t.output != "STALE" for t in result.tasks.values())
    assert all(t.ok for t in result.tasks.values())
    db = _db(state)
    (stale,) = db.execute(
        "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'attempt_finished'"
        " AND json_extract(data, '$.stale') = 1",
        (result.run_id,),
    ).fetchone()
    assert stale == 5
    (results,) = db.execute(
        "SELECT COUNT(*) FROM results WHERE run_id = ?", (result.run_id,)
    ).fetchone()
    assert results == 5


def test_journal_allows_one_success_per_task(state: Path) -> None:
    result = phalanx.run_sync(Plan.from_dict(sim_plan(3)))
    db = _db(state)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO results VALUES (?, 't0', 99, 'x', 'again', NULL, 0)", (result.run_id,)
        )


def test_swarm_api_round_robin(state: Path) -> None:
    swarm = phalanx.Swarm(size=4, provider="sim")
    result = swarm.run_sync([f"item {i}" for i in range(8)])
    assert result.status == "succeeded"
    per_agent: dict[str, int] = {}
    for t in result.tasks.values():
        per_agent[t.agent or ""] = per_agent.get(t.agent or "", 0) + 1
    assert sorted(per_agent.values()) == [2, 2, 2, 2]
    assert set(per_agent) == {"Cipher", "Nova", "Quantum", "Phoenix"}

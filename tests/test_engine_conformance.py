"""The engine conformance suite: the same behaviour on every engine.

Each test runs on the local engine and on the Ray engine (a local Ray with 2 CPUs, started
once for the module and shut down after it): ordering, hand-off, retries, partial
failure, cancellation, budgets, messaging through the driver and resume. The journal is
read with sqlite3 directly.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx.cost import Usage
from phalanx.plan import Plan
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.testing import EchoProvider

ENGINES = ["local", "ray"]
TIMEOUT = 60  # seconds for any one run


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
        _node_ip_address="127.0.0.1",
        # the providers defined in this file travel to the hosts by reference; the hosts
        # import the phalanx the driver runs (a worktree's, not another installed copy)
        runtime_env={
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).parent), str(Path(phalanx.__file__).parents[1])]
                )
            }
        },
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


def go(plan: Plan | dict[str, Any], engine: str, state: Path, **kw: Any) -> phalanx.RunResult:
    p = plan if isinstance(plan, Plan) else Plan.from_dict(plan)

    async def main() -> phalanx.RunResult:
        async with asyncio.timeout(TIMEOUT):
            return await phalanx.run(p, engine=engine, state=state, **kw)

    return asyncio.run(main())


def db(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "journal.sqlite")


def events(state: Path, run_id: str) -> list[tuple[int, str, str]]:
    """(seq, type, json) of every event of the run, in order."""
    with db(state) as c:
        return c.execute(
            "SELECT seq, type, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()


def successes_per_task(state: Path, run_id: str) -> dict[str, int]:
    with db(state) as c:
        return dict(
            c.execute(
                "SELECT task_id, COUNT(*) FROM attempts WHERE run_id = ? AND outcome = 'succeeded'"
                " GROUP BY task_id",
                (run_id,),
            ).fetchall()
        )


# -- ordering ------------------------------------------------------------------------------
def test_dependencies_start_only_after_their_needs_succeed(engine: str, state: Path) -> None:
    r = go(sim_plan(60, agents=4, latency_ms=5, deps="layered"), engine, state)
    assert r.status == "succeeded"
    with db(state) as c:
        started = dict(
            c.execute(
                "SELECT task_id, MIN(started_at) FROM attempts WHERE run_id = ? GROUP BY task_id",
                (r.run_id,),
            ).fetchall()
        )
        done = dict(
            c.execute(
                "SELECT task_id, finished_at FROM attempts"
                " WHERE run_id = ? AND outcome = 'succeeded'",
                (r.run_id,),
            ).fetchall()
        )
    plan = Plan.from_dict(sim_plan(60, agents=4, deps="layered"))
    for t in plan.tasks:
        for n in t.needs:
            assert done[n] <= started[t.id], (t.id, n)
    assert successes_per_task(state, r.run_id) == {t.id: 1 for t in plan.tasks}


def test_one_agent_takes_ready_tasks_in_priority_order(engine: str, state: Path) -> None:
    data = sim_plan(6, agents=1)
    for i, t in enumerate(data["tasks"]):
        t["priority"] = i  # the last task first
    r = go(data, engine, state)
    assert r.status == "succeeded"
    starts = [e for e in events(state, r.run_id) if e[1] == "attempt_started"]
    order = [phalanx_json(e[2])["task_id"] for e in starts]
    assert order == ["t5", "t4", "t3", "t2", "t1", "t0"]


def phalanx_json(text: str) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(text)
    return value


# -- hand-off ------------------------------------------------------------------------------
def test_results_are_handed_to_dependants(engine: str, state: Path) -> None:
    plan = Plan.from_dict(
        {
            "provider": "echo",
            "agents": [{"role": "generalist", "count": 3}],
            "tasks": [
                {"id": "a", "prompt": "first"},
                {"id": "b", "prompt": "second"},
                {"id": "c", "prompt": "join", "needs": ["a", "b"]},
                {"id": "d", "prompt": "last", "needs": ["c", "a"]},
            ],
        }
    )
    r = go(plan, engine, state, custom_providers={"echo": EchoProvider(delay=0.01)})
    assert r.status == "succeeded"
    assert r.tasks["c"].output == "c[a[]; b[]]"
    assert r.tasks["d"].output == "d[c[a[]; b[]]; a[]]"


# -- retries -------------------------------------------------------------------------------
def test_retryable_faults_are_retried_until_success(engine: str, state: Path) -> None:
    data = sim_plan(40, agents=4, faults={"server_error": 0.3}, max_attempts=10, seed=3)
    r = go(data, engine, state)
    assert r.status == "succeeded"
    assert successes_per_task(state, r.run_id) == {f"t{i}": 1 for i in range(40)}
    with db(state) as c:
        (failed,) = c.execute(
            "SELECT COUNT(*) FROM attempts WHERE run_id = ? AND outcome = 'failed'", (r.run_id,)
        ).fetchone()
        (ids,) = c.execute(
            "SELECT COUNT(DISTINCT attempt_id) FROM attempts WHERE run_id = ?", (r.run_id,)
        ).fetchone()
    retries = [e for e in events(state, r.run_id) if e[1] == "retry_scheduled"]
    assert failed > 0 and len(retries) == failed
    assert ids == 40 + failed  # every retry is a new attempt id


# -- partial failure -----------------------------------------------------------------------
def test_a_failed_task_skips_only_its_dependants(engine: str, state: Path) -> None:
    plan = Plan.from_dict(
        {
            "provider": "sim",
            "providers": {"sim:broken": {"faults": {"bad_request": 1.0}}},
            "agents": [
                {"role": "generalist", "name": "Good", "count": 1},
                {"role": "generalist", "name": "Bad", "provider": "sim:broken"},
            ],
            "tasks": [
                {"id": "ok1", "prompt": "x", "agent": "Good"},
                {"id": "bad", "prompt": "x", "agent": "Bad", "max_attempts": 4},
                {"id": "after_bad", "prompt": "x", "needs": ["bad"], "agent": "Good"},
                {"id": "after_ok", "prompt": "x", "needs": ["ok1"], "agent": "Good"},
            ],
        }
    )
    r = go(plan, engine, state)
    assert r.status == "failed"
    states = {k: v.state for k, v in r.tasks.items()}
    assert states == {
        "ok1": "succeeded",
        "bad": "failed",
        "after_bad": "skipped",
        "after_ok": "succeeded",
    }
    assert r.tasks["bad"].attempts == 1  # bad_request is never retried
    assert r.tasks["bad"].error_class == "bad_request"


# -- cancellation --------------------------------------------------------------------------
# Ray hosts take about 2.2 s to start (Ray 2.60, 2 cores): a budget that falls before they
# run anything would cancel nothing. The budget must fall while the attempts are in flight.
WALL_BUDGET = {"local": 1.5, "ray": 5.0}
STARTED_BY = {"local": 1.2, "ray": 4.0}  # seconds after which some tasks have succeeded


def test_wall_time_budget_cancels_in_flight_attempts(engine: str, state: Path) -> None:
    data = sim_plan(8, agents=4, latency_ms=30_000)
    data["limits"] = {"max_wall_seconds": WALL_BUDGET[engine]}
    r = go(data, engine, state)
    assert r.status == "budget_exhausted"
    with db(state) as c:
        outcomes = dict(
            c.execute(
                "SELECT outcome, COUNT(*) FROM attempts WHERE run_id = ? GROUP BY outcome",
                (r.run_id,),
            ).fetchall()
        )
    assert outcomes == {"cancelled": 4}
    assert r.wall_seconds < WALL_BUDGET[engine] + 8.5


def test_an_interrupted_run_resumes_to_exactly_one_success_per_task(
    engine: str, state: Path
) -> None:
    data = sim_plan(30, agents=3, latency_ms=100, deps="chain")

    async def interrupted() -> str:
        task = asyncio.create_task(
            phalanx.run(Plan.from_dict(data), engine=engine, state=state, run_id="cut")
        )
        await asyncio.sleep(STARTED_BY[engine])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cut"

    asyncio.run(interrupted())
    before = successes_per_task(state, "cut")
    assert 0 < len(before) < 30

    async def resumed() -> phalanx.RunResult:
        async with asyncio.timeout(TIMEOUT):
            return await phalanx.resume("cut", state=state, engine=engine)

    r = asyncio.run(resumed())
    assert r.status == "succeeded"
    assert successes_per_task(state, "cut") == {f"t{i}": 1 for i in range(30)}


# -- budgets -------------------------------------------------------------------------------
def test_token_budget_stops_new_work(engine: str, state: Path) -> None:
    data = sim_plan(200, agents=4, latency_ms=20)
    data["limits"] = {"max_tokens": 2_000}
    r = go(data, engine, state)
    assert r.status == "budget_exhausted"
    used = r.usage.total_tokens
    done = sum(1 for t in r.tasks.values() if t.ok)
    assert used >= 2_000
    assert done < 200
    # at most the calls already in flight when the budget was reached run past it
    per_call = max(t.usage.total_tokens for t in r.tasks.values() if t.ok)
    assert used <= 2_000 + 4 * per_call


# -- messaging runs on the driver ----------------------------------------------------------
def _tool_then_answer(tool: str, args: dict[str, Any]) -> Any:
    def step(request: CompletionRequest) -> Completion:
        if request.messages[-1].role == "tool":  # the tool answered: report what it said
            return Completion(
                text="saw: " + request.messages[-1].content,
                usage=Usage(input_tokens=1, output_tokens=1),
            )
        return Completion(
            text="",
            tool_calls=(ToolCall(id="c1", name=tool, arguments=args),),
            usage=Usage(input_tokens=1, output_tokens=1),
        )

    return step


class _ToolScript:
    """Stateless: each task's step depends only on its own request (safe on any host)."""

    simulated = True
    name = "toolscript"

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.task_id == "write":
            return _tool_then_answer("context_put", {"key": "api/schema", "value": "v42"})(request)
        return _tool_then_answer("context_get", {"key": "api/schema"})(request)

    async def aclose(self) -> None:
        return None


def test_shared_context_tools_run_on_the_driver(engine: str, state: Path) -> None:
    plan = Plan.from_dict(
        {
            "provider": "toolscript",
            "agents": [{"role": "generalist", "count": 2, "tools": ["context_put", "context_get"]}],
            "tasks": [
                {"id": "write", "prompt": "store the schema"},
                {"id": "read", "prompt": "read the schema", "needs": ["write"]},
            ],
        }
    )
    r = go(plan, engine, state, custom_providers={"toolscript": _ToolScript()})
    assert r.status == "succeeded", r.tasks
    assert r.tasks["write"].output == "saw: stored api/schema (v1)"
    assert "v42" in r.tasks["read"].output
    tools = [phalanx_json(e[2]) for e in events(state, r.run_id) if e[1] == "tool_called"]
    assert sorted(t["tool"] for t in tools) == ["context_get", "context_put"]
    assert all(t["ok"] for t in tools)
    with db(state) as c:  # the tool journal, wherever the agents ran (context_put writes:
        journaled = c.execute(  # on a Ray host its start is committed through the driver)
            "SELECT tool, writes, finished_at IS NOT NULL FROM tool_calls WHERE run_id = ?"
            " ORDER BY tool",
            (r.run_id,),
        ).fetchall()
    assert journaled == [("context_get", 0, 1), ("context_put", 1, 1)]


# -- a plan that grows while it runs (issue 20) ---------------------------------------------
def test_a_growing_dag_expands_and_spawns_the_same_way(engine: str, state: Path) -> None:
    from growmodel import GrowModel
    from test_grow import grow_plan

    r = go(grow_plan(), engine, state, custom_providers={"grow": GrowModel(items=6)})
    assert r.status == "succeeded", r.summary()
    assert sorted(t for t in r.tasks if t.startswith("migrate[")) == [
        f"migrate[{i}]" for i in range(6)
    ]
    assert r.tasks["report"].output == "done report (6 upstream)"
    assert r.tasks["split"].output.startswith("collected: spawned 3 subtask(s)")
    assert all(r.tasks[f"split.{i}"].ok for i in (1, 2, 3))
    with db(state) as c:
        grown = c.execute(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'tasks_added'", (r.run_id,)
        ).fetchone()[0]
        wins = c.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM attempts WHERE run_id = ?"
            " AND outcome = 'succeeded'",
            (r.run_id,),
        ).fetchone()
    assert grown == 2 and wins[0] == wins[1] == len(r.tasks) - 1  # the template: no attempt


# -- one rate governor for every agent, wherever it runs -----------------------------------
def test_a_retry_after_pauses_the_key_for_every_agent(engine: str, state: Path) -> None:
    data = sim_plan(30, agents=3, latency_ms=5, faults={"rate_limited": 0.15}, seed=5)
    data["providers"]["sim"]["retry_after"] = 0.3
    data["tasks"] = [{**t, "max_attempts": 10} for t in data["tasks"]]
    r = go(data, engine, state)
    assert r.status == "succeeded"
    kinds = [e[1] for e in events(state, r.run_id)]
    assert "retry_scheduled" in kinds
    waits = [phalanx_json(e[2]) for e in events(state, r.run_id) if e[1] == "agent_waiting"]
    assert waits and all(w["key"] == "sim" and w["reason"] == "rate limit" for w in waits)


# -- an engine that loses its cluster ------------------------------------------------------
class _LosesItsCluster:
    """The local engine, until it has delivered ``after`` outcomes: then it reports that
    it can run nothing more (what the Ray engine does when the cluster stops answering)."""

    name = "flaky"

    def __init__(self, after: int) -> None:
        from phalanx.runtime.engine import LocalEngine

        self.inner = LocalEngine()
        self.after = after
        self.delivered = 0

    async def start(self, runners: Any, on_outcome: Any) -> None:
        from phalanx.runtime.engine import EngineLost

        def deliver(outcome: Any) -> None:
            self.delivered += 1
            on_outcome(outcome)
            if self.delivered == self.after:
                on_outcome(EngineLost("the Ray cluster stopped answering: test"))

        await self.inner.start(runners, deliver)

    def submit(self, attempt: Any) -> None:
        self.inner.submit(attempt)

    def add_agent(self, name: str, runner: Any) -> str | None:
        return self.inner.add_agent(name, runner)

    def cancel(self, attempt_id: int) -> bool:
        return self.inner.cancel(attempt_id)

    async def stop(self) -> None:
        await self.inner.stop()


def test_losing_the_engine_ends_the_run_interrupted_and_resume_finishes_it(
    state: Path,
) -> None:
    data = sim_plan(40, agents=4, latency_ms=20)
    r = asyncio.run(
        phalanx.run(Plan.from_dict(data), state=state, engine=_LosesItsCluster(after=10))
    )
    assert r.status == "interrupted"
    assert r.exit_code == 130
    assert "the Ray cluster stopped answering" in r.snapshot.reason
    assert f"phalanx resume {r.run_id}" in r.snapshot.reason
    assert 10 <= len(successes_per_task(state, r.run_id)) < 40
    again = asyncio.run(phalanx.resume(r.run_id, state=state, engine="local"))
    assert again.status == "succeeded"
    assert successes_per_task(state, r.run_id) == {f"t{i}": 1 for i in range(40)}


# -- fencing: a late result of a superseded attempt ----------------------------------------
class _SlowFirstTry:
    """t0's first attempt answers after 3 s; everything else after ``delay``."""

    simulated = True
    name = "slowfirst"

    async def complete(self, request: CompletionRequest) -> Completion:
        slow = request.task_id == "t0" and request.attempt_no == 1
        await asyncio.sleep(3.0 if slow else 0.4)
        return Completion(
            text=f"{request.task_id} try {request.attempt_no}",
            usage=Usage(input_tokens=1, output_tokens=1),
        )

    async def aclose(self) -> None:
        return None


def test_a_late_result_after_the_lease_is_fenced_off(engine: str, state: Path) -> None:
    tasks = [{"id": "t0", "prompt": "x", "agent": "Slow", "max_attempts": 3}]
    tasks += [
        {"id": f"t{i}", "prompt": "x", "agent": "Busy", "needs": [f"t{i - 1}"] if i > 1 else []}
        for i in range(1, 11)
    ]  # keeps the run going ~4 s, past the slow answer
    plan = Plan.from_dict(
        {
            "provider": "slowfirst",
            "limits": {"lease_seconds": 1.0},
            "retry": {"base_seconds": 0.01, "cap_seconds": 0.05},
            "agents": [
                {"role": "generalist", "name": "Slow"},
                {"role": "generalist", "name": "Busy"},
            ],
            "tasks": tasks,
        }
    )
    r = go(plan, engine, state, custom_providers={"slowfirst": _SlowFirstTry()})
    assert r.status == "succeeded"
    assert r.tasks["t0"].output == "t0 try 2"
    with db(state) as c:
        outcomes = [
            o
            for (o,) in c.execute(
                "SELECT outcome FROM attempts WHERE run_id = ? AND task_id = 't0'"
                " ORDER BY attempt_id",
                (r.run_id,),
            )
        ]
    assert outcomes == ["stale", "succeeded"]


# -- the autoscaler on a full cluster --------------------------------------------------------
def test_the_autoscaler_says_when_the_cluster_has_no_room(ray_cluster: None, state: Path) -> None:
    data = sim_plan(80, agents=1, latency_ms=300)
    data["autoscale"] = {"start_agents": 1, "interval": 1}
    data["limits"] = {"max_agents": 8}
    # one agent per host and one CPU per host: this 2-CPU Ray has room for two agents
    data["engine"] = {"kind": "ray", "agents_per_host": 1, "host_cpus": 1}
    r = go(data, "ray", state)
    assert r.status == "succeeded"
    decisions = [phalanx_json(e[2]) for e in events(state, r.run_id) if e[1] == "scale_decision"]
    refused = [d for d in decisions if "no room for another agent host" in d["reason"]]
    assert refused, decisions
    assert "needs 1 CPU" in refused[0]["reason"] and "0 CPU free" in refused[0]["reason"]
    assert refused[0]["numbers"]["added"] < refused[0]["numbers"]["wanted"]
    placed = {phalanx_json(e[2])["host"] for e in events(state, r.run_id) if e[1] == "agent_placed"}
    assert len(placed) == 2  # never more hosts than the cluster has room for


# -- per-role resources for agent hosts ------------------------------------------------------
def test_per_role_resources_size_the_hosts(ray_cluster: None, state: Path) -> None:
    data = sim_plan(20, agents=4, latency_ms=20)
    # four hosts of one CPU each do not fit this 2-CPU Ray: the run says so at once
    data["engine"] = {"kind": "ray", "hosts": 4}
    with pytest.raises(phalanx.UsageError, match=r"4 agent hosts need 4 CPU .* 2 CPU free"):
        go(data, "ray", state)
    # the role's own request (half a CPU per host) makes them fit
    data["engine"] = {"kind": "ray", "hosts": 4, "roles": {"generalist": {"num_cpus": 0.5}}}
    r = go(data, "ray", state)
    assert r.status == "succeeded"
    hosts = {phalanx_json(e[2])["host"] for e in events(state, r.run_id) if e[1] == "agent_placed"}
    assert len(hosts) == 4

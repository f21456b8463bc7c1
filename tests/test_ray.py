"""The Ray engine on a real multi-node cluster on this machine (``ray.cluster_utils``: a
head and two worker nodes, each its own raylet): agents spread over the nodes, a host
killed with SIGKILL mid-run, a worker node removed mid-run. Everything is bounded in time
and the cluster is shut down after the module."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
import phalanx.status.snapshot
from conftest import sim_plan
from phalanx.events import AgentPlaced, Event, TaskSucceeded
from phalanx.plan import Plan

ray = pytest.importorskip("ray")

RUN_TIMEOUT = 120


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    c.add_node(num_cpus=2)
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="error")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


class _Watch:
    """A sink that keeps placements and calls ``when`` once ``after`` tasks succeeded."""

    def __init__(self, after: int, when: Callable[[_Watch], None]) -> None:
        self.placed: dict[str, AgentPlaced] = {}
        self.succeeded = 0
        self.after, self.when, self.fired = after, when, False

    def emit(self, event: Event) -> None:
        if isinstance(event, AgentPlaced):
            self.placed[event.agent] = event
        elif isinstance(event, TaskSucceeded):
            self.succeeded += 1
            if self.succeeded >= self.after and not self.fired:
                self.fired = True
                self.when(self)


def go(data: dict[str, Any], state: Path, **kw: Any) -> phalanx.RunResult:
    async def main() -> phalanx.RunResult:
        async with asyncio.timeout(RUN_TIMEOUT):
            return await phalanx.run(Plan.from_dict(data), engine="ray", state=state, **kw)

    return asyncio.run(main())


def rows(state: Path, sql: str, *args: Any) -> list[Any]:
    with sqlite3.connect(state / "journal.sqlite") as c:
        return c.execute(sql, args).fetchall()


def placements(state: Path, run_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(d)
        for (d,) in rows(
            state,
            "SELECT data FROM events WHERE run_id = ? AND type = 'agent_placed' ORDER BY seq",
            run_id,
        )
    ]


def assert_exactly_once(state: Path, run_id: str, n: int) -> None:
    ok = dict(
        rows(
            state,
            "SELECT task_id, COUNT(*) FROM attempts WHERE run_id = ? AND outcome = 'succeeded'"
            " GROUP BY task_id",
            run_id,
        )
    )
    assert ok == {f"t{i}": 1 for i in range(n)}


def test_importing_phalanx_never_imports_ray() -> None:
    code = "import sys, phalanx, phalanx.api, phalanx.cli.app; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_agents_spread_over_three_nodes(cluster: Any, state: Path) -> None:
    data = sim_plan(300, agents=12, latency_ms=5, deps="layered")
    data["engine"] = {"kind": "ray", "hosts": 3}
    r = go(data, state)
    assert r.status == "succeeded"
    assert_exactly_once(state, r.run_id, 300)
    placed = placements(state, r.run_id)
    node_of = {p["agent"]: p["node"] for p in placed}
    assert len(node_of) == 12
    assert len(set(node_of.values())) == 3  # one host on each node
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert set(node_of.values()) <= alive
    worked = rows(
        state,
        "SELECT agent, COUNT(*) FROM attempts WHERE run_id = ? GROUP BY agent",
        r.run_id,
    )
    nodes_that_worked = {node_of[agent] for agent, n in worked if n}
    assert len(nodes_that_worked) == 3
    # the status shows where each agent runs
    assert {a.node for a in r.snapshot.agents} == {n[:8] for n in node_of.values()}
    assert "| node " in phalanx.status.text.render_text(r.snapshot)


def _lost_and_requeued(state: Path, run_id: str) -> int:
    lost = rows(
        state,
        "SELECT task_id, attempt_id FROM attempts WHERE run_id = ? AND error_class = 'lost'",
        run_id,
    )
    assert lost, "the fault hit no attempt in flight"
    for task_id, attempt_id in lost:  # each lost attempt was followed by a new one
        later = rows(
            state,
            "SELECT COUNT(*) FROM attempts WHERE run_id = ? AND task_id = ? AND attempt_id > ?",
            run_id,
            task_id,
            attempt_id,
        )
        assert later[0][0] >= 1
    requeued = rows(
        state,
        "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'retry_scheduled'"
        " AND json_extract(data, '$.error_class') = 'lost'",
        run_id,
    )
    assert requeued[0][0] == len(lost)
    return len(lost)


def test_a_host_killed_with_sigkill_is_replaced_and_its_attempts_requeued(
    cluster: Any, state: Path
) -> None:
    data = sim_plan(300, agents=9, latency_ms=60)
    data["engine"] = {"kind": "ray", "hosts": 3}
    victim: dict[str, Any] = {}

    def kill(w: _Watch) -> None:
        p = next(iter(w.placed.values()))
        victim.update(host=p.host, pid=p.pid)
        os.kill(p.pid, signal.SIGKILL)

    r = go(data, state, sinks=[_Watch(60, kill)])
    assert r.status == "succeeded", r.snapshot
    assert_exactly_once(state, r.run_id, 300)
    _lost_and_requeued(state, r.run_id)
    again = [
        p
        for p in placements(state, r.run_id)
        if p["host"] == victim["host"] and p["reason"].startswith("host restarted")
    ]
    assert again and all(p["pid"] != victim["pid"] for p in again)


def test_a_worker_node_removed_mid_run(cluster: Any, state: Path) -> None:
    data = sim_plan(300, agents=9, latency_ms=60)
    data["engine"] = {"kind": "ray", "hosts": 3}
    head = cluster.head_node.node_id

    def remove(w: _Watch) -> None:
        node = next(p.node for p in w.placed.values() if p.node != head)
        worker = next(n for n in cluster.worker_nodes if n.node_id == node)
        cluster.remove_node(worker, allow_graceful=False)

    try:
        r = go(data, state, sinks=[_Watch(60, remove)])
    finally:
        cluster.add_node(num_cpus=2)  # give the module its three nodes back
        cluster.wait_for_nodes()
    assert r.status == "succeeded", r.snapshot
    assert_exactly_once(state, r.run_id, 300)
    _lost_and_requeued(state, r.run_id)


def test_lost_attempts_do_not_count_against_max_attempts(cluster: Any, state: Path) -> None:
    """A task with max_attempts 1 still succeeds after its host is killed under it."""
    data = sim_plan(60, agents=3, latency_ms=500, max_attempts=1)
    data["engine"] = {"kind": "ray", "hosts": 3}

    def kill(w: _Watch) -> None:
        os.kill(next(iter(w.placed.values())).pid, signal.SIGKILL)

    r = go(data, state, sinks=[_Watch(6, kill)])
    assert r.status == "succeeded", r.snapshot
    assert_exactly_once(state, r.run_id, 60)
    n = _lost_and_requeued(state, r.run_id)
    outcomes = dict(
        rows(state, "SELECT outcome, COUNT(*) FROM attempts WHERE run_id = ? GROUP BY 1", r.run_id)
    )
    assert outcomes == {"succeeded": 60, "lost": n}

"""B5: the Ray engine. Two figures, each measured in a fresh child process:

* **B5** per-task overhead: 2,000 independent zero-latency tasks on 8 agents with the
  journal on, against ``ray.util.ActorPool`` of 8 actors making the same fake call
  (``SimProvider.complete``), on the same local Ray (2 CPUs). Both include creating their
  actors. Target: <= 1.5x the baseline per task.
* **B5m** memory: 1,000 agents on a 3-node local cluster (``ray.cluster_utils``: a head
  and two worker nodes of 2 CPUs each) running a 5,000-task sim plan. The figure is the
  peak, over the run, of the summed proportional set size (PSS: shared pages split among
  the processes sharing them) of every Ray process: GCS, raylets, agent hosts and Ray's
  helper processes. Target: < 4 GiB.

``python -m bench.b5_ray --child overhead|memory ...`` is one measurement."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import ROOT, BenchError, Config, Row, log, median, spread, state_dir

TARGET_RATIO = 1.5
TARGET_GIB = 4.0
_QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}


# -- the child: B5 ---------------------------------------------------------------------------
def _actor_pool_seconds(ray: Any, n: int, actors: int) -> float:
    from ray.util import ActorPool

    from phalanx.providers.base import CompletionRequest, Message
    from phalanx.providers.sim import SimProvider

    @ray.remote
    class FakeModel:
        def __init__(self) -> None:
            self.provider = SimProvider(options={"latency": 0})

        async def call(self, i: int) -> Any:
            return await self.provider.complete(
                CompletionRequest(
                    model="sim",
                    messages=(
                        Message(role="system", content="You are Cipher, the generalist."),
                        Message(role="user", content=f"do part {i}"),
                    ),
                    task_id=f"t{i}",
                    agent=f"a{i % actors}",
                )
            )

    t0 = time.perf_counter()
    pool = ActorPool([FakeModel.remote() for _ in range(actors)])  # type: ignore[attr-defined]
    done = sum(1 for _ in pool.map(lambda a, i: a.call.remote(i), range(n)))
    wall = time.perf_counter() - t0
    for a in pool._idle_actors:
        ray.kill(a)
    if done != n:
        raise BenchError(f"ActorPool returned {done} of {n} results")
    return wall


def _phalanx_seconds(n: int, agents: int) -> float:
    import phalanx
    from phalanx import Plan

    from .common import sim_plan

    plan = Plan.from_dict({**sim_plan(n, agents, name="b5"), "engine": {"kind": "ray"}})
    with state_dir() as d:
        t0 = time.perf_counter()
        result = asyncio.run(phalanx.run(plan, state=d))
        wall = time.perf_counter() - t0
    if result.status != "succeeded":
        raise BenchError(f"B5 run ended {result.status}: {result.snapshot.reason}")
    return wall


def overhead_child(n: int, agents: int, repeats: int) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", **_QUIET)
    try:
        _phalanx_seconds(50, agents)  # warm: worker processes, imports
        _actor_pool_seconds(ray, 50, agents)
        ours, base = [], []
        for _ in range(repeats):
            base.append(_actor_pool_seconds(ray, n, agents))
            ours.append(_phalanx_seconds(n, agents))
    finally:
        ray.shutdown()
    return {"ours": ours, "base": base, "n": n, "agents": agents}


# -- the child: B5m --------------------------------------------------------------------------
def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _pss_rss(pid: int) -> tuple[int, int]:
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return pss, rss


class _Sampler(threading.Thread):
    """Every 0.5 s: the summed PSS and RSS of every process below this one (the cluster)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_pss = self.peak_rss = 0
        self.peak_procs = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.wait(0.5):
            pids = _descendants(me)
            sizes = [_pss_rss(p) for p in pids]
            pss, rss = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_procs = pss, len(pids)
            self.peak_rss = max(self.peak_rss, rss)


def memory_child(agents: int, tasks: int, workers: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    import phalanx
    from phalanx import Plan

    from .common import sim_plan

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    sampler = _Sampler()
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="error")
        plan = Plan.from_dict({**sim_plan(tasks, agents, name="b5m"), "engine": {"kind": "ray"}})
        sampler.start()
        with state_dir() as d:
            t0 = time.perf_counter()
            result = asyncio.run(phalanx.run(plan, state=d))
            wall = time.perf_counter() - t0
            nodes = len({p["node"] for p in _placements(d, result.run_id)})
        if result.status != "succeeded":
            raise BenchError(f"B5m run ended {result.status}: {result.snapshot.reason}")
    finally:
        sampler.stop.set()
        sampler.join()
        ray.shutdown()
        cluster.shutdown()
    return {
        "agents": agents,
        "tasks": tasks,
        "nodes": nodes,
        "wall": wall,
        "peak_pss": sampler.peak_pss,
        "peak_rss": sampler.peak_rss,
        "procs": sampler.peak_procs,
    }


def _placements(state: str, run_id: str) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(Path(state) / "journal.sqlite") as c:
        rows = c.execute(
            "SELECT data FROM events WHERE run_id = ? AND type = 'agent_placed'", (run_id,)
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


# -- the suite's side --------------------------------------------------------------------------
def _spawn(*args: str, timeout: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.b5_ray", "--child", *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"B5 child {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def run(cfg: Config) -> list[Row]:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        return [_not_run("B5"), _not_run("B5m")]
    n = cfg.size(2000, 200)
    o = _spawn("overhead", str(n), "8", str(cfg.repeats))
    ours = [w / n * 1e6 for w in o["ours"]]
    base = [w / n * 1e6 for w in o["base"]]
    ratio = median([a / b for a, b in zip(ours, base, strict=True)])
    log(f"B5: {median(ours):.0f} us/task vs ActorPool {median(base):.0f} us/task ({ratio:.2f}x)")
    b5 = Row(
        id="B5",
        title=f"Ray engine per-task overhead, {n:,} tasks, 8 agents, zero latency",
        figure=f"{median(ours):.0f} µs/task",
        baseline=f"ray.util.ActorPool (8 actors): {median(base):.0f} µs/task",
        ratio=ratio,
        target=f"<= {TARGET_RATIO:g}x baseline",
        passed=ratio <= TARGET_RATIO,
        note=f"phalanx {spread(ours, 'µs')}, ActorPool {spread(base, 'µs')}; both include "
        "creating their actors; phalanx also journals every event and runs its scheduler, "
        "governor and budgets on the driver. Local Ray, 2 CPUs: 2 agent hosts.",
        data=o,
    )
    agents, tasks = cfg.size(1000, 50), cfg.size(5000, 200)
    m = _spawn("memory", str(agents), str(tasks), "2")
    gib = m["peak_pss"] / 2**30
    log(f"B5m: {agents} agents, {tasks} tasks on {m['nodes']} nodes: peak {gib:.2f} GiB PSS")
    b5m = Row(
        id="B5m",
        title=f"Ray memory: {agents:,} agents, {tasks:,} tasks, 3-node local cluster",
        figure=f"{gib:.2f} GiB (PSS of {m['procs']} Ray processes, peak)",
        baseline=f"{TARGET_GIB:g} GiB (issue 8's bound)",
        ratio=gib / TARGET_GIB,
        target=f"< {TARGET_GIB:g} GiB",
        passed=gib < TARGET_GIB,
        note=f"Agents placed on {m['nodes']} nodes (6 agent hosts, one per CPU); the run took "
        f"{m['wall']:.1f} s. Summed RSS (shared pages counted once per process) peaked at "
        f"{m['peak_rss'] / 2**30:.2f} GiB. One actor per agent would be 1,000 processes "
        "(~96 MiB each measured for issue 8: ~9.6 GiB).",
        data=m,
    )
    return [b5, b5m]


def _not_run(bid: str) -> Row:
    return Row(
        id=bid,
        title="Ray engine",
        figure="-",
        baseline="-",
        target="-",
        verdict_text="not run: Ray is not installed (pip install 'phalanx[ray]')",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs="+", required=True)
    args = ap.parse_args()
    kind, *rest = args.child
    if kind == "overhead":
        out = overhead_child(int(rest[0]), int(rest[1]), int(rest[2]))
    else:
        out = memory_child(int(rest[0]), int(rest[1]), int(rest[2]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

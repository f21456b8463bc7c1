"""B3: memory of idle agents. A run with 10,000 agents and one task: once its attempt has
started, 9,999 agents sit idle with everything the runtime keeps per agent (spec, runner,
slot, breaker, status, comms). Measured in a fresh process: resident memory then, minus
the same process before the plan was built (interpreter + phalanx imported and warmed by a
one-task run, no agents). Target: <= 10 KB per agent.

Each measurement is a child process: ``python -m bench.b3_memory --child N [--trace]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import phalanx
from phalanx import Plan
from phalanx.events import AttemptStarted, Event

from .common import (
    ROOT,
    BenchError,
    Config,
    Row,
    log,
    median,
    phalanx_wall,
    settle,
    sim_plan,
    spread,
    state_dir,
)

TARGET_KB = 10.0


def rss_bytes() -> int:
    """Resident memory now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class _Started:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def emit(self, event: Event) -> None:
        if isinstance(event, AttemptStarted):
            self.event.set()


async def _idle_fleet(plan: Plan, trace: bool) -> dict[str, Any]:
    probe = _Started()
    with state_dir() as d:
        t0 = time.perf_counter()
        run = asyncio.create_task(phalanx.run(plan, state=d, sinks=[probe]))
        await probe.event.wait()
        startup = time.perf_counter() - t0
        await asyncio.sleep(0.2)  # the journal flushes its buffer (every 50 ms)
        settle()
        out: dict[str, Any] = {"rss": rss_bytes(), "startup_s": startup}
        if trace:
            snap = tracemalloc.take_snapshot()
            stats = snap.statistics("filename")
            out["traced"] = sum(s.size for s in stats)
            out["by_file"] = [(_rel(s.traceback[0].filename), s.size) for s in stats[:8]]
        result = await run
        if result.status != "succeeded":
            raise BenchError(f"the idle-fleet run ended {result.status}")
    return out


def _rel(path: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.basename(path)


def child(n: int, trace: bool) -> dict[str, Any]:
    with state_dir() as d:  # warm: lazy imports and caches belong to the baseline
        asyncio.run(phalanx_wall(Plan.from_dict(sim_plan(1, 1, name="b3-warm")), d))
    settle()
    base = rss_bytes()
    if trace:
        tracemalloc.start()
    plan = Plan.from_dict(sim_plan(1, n, latency_ms=1000, name="b3-idle"))
    out = asyncio.run(_idle_fleet(plan, trace))
    out["base_rss"] = base
    out["n"] = n
    return out


def _spawn(n: int, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.b3_memory", "--child", str(n)] + (
        ["--trace"] if trace else []
    )
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise BenchError(f"B3 child failed: {proc.stderr.strip()[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def run(cfg: Config) -> list[Row]:
    n = cfg.size(10_000, 200)
    samples = []
    for i in range(cfg.repeats):
        samples.append(_spawn(n, trace=False))
        s = samples[-1]
        log(
            f"B3 run {i + 1}/{cfg.repeats}: base {s['base_rss'] / 2**20:.1f} MiB, "
            f"with {n:,} idle agents {s['rss'] / 2**20:.1f} MiB"
        )
    per_agent = [(s["rss"] - s["base_rss"]) / n / 1024 for s in samples]
    base = median([s["base_rss"] for s in samples])
    kb = median(per_agent)
    traced = _spawn(n, trace=True)
    log(f"B3 traced run: {traced['traced'] / n / 1024:.2f} KB/agent of Python objects")
    sites = " · ".join(f"`{f}` {size / n / 1024:.2f} KB" for f, size in traced["by_file"][:5])
    row = Row(
        id="B3",
        title=f"memory: {n:,} agents created and idle",
        figure=f"{kb:.2f} KB/agent (RSS +{kb * n / 1024:.1f} MiB)",
        baseline=f"{base / 2**20:.1f} MiB RSS (interpreter + phalanx imported, no agents)",
        ratio=(base + kb * 1024 * n) / base,
        target=f"<= {TARGET_KB:g} KB per agent",
        passed=kb <= TARGET_KB,
        note=f"RSS per agent {spread(per_agent, 'KB')}. tracemalloc (live Python objects) "
        f"{traced['traced'] / n / 1024:.2f} KB/agent; by allocating file: {sites}. "
        f"The run took {median([s['startup_s'] for s in samples]):.1f} s from start to its "
        f"first attempt with {n:,} agents.",
        data={"n": n, "samples": samples, "kb_per_agent": per_agent, "traced": traced},
    )
    if not row.passed:
        row.profile = "tracemalloc by allocating file (KB per agent): " + sites
    return [row]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", type=int, required=True)
    ap.add_argument("--trace", action="store_true")
    args = ap.parse_args()
    print(json.dumps(child(args.child, args.trace)))


if __name__ == "__main__":
    main()

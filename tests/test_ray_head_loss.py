"""Losing the Ray head mid-run: ``phalanx run --engine ray`` (a subprocess connected to a
2-node local cluster) ends the run cleanly as interrupted (exit 130, journal consistent)
instead of waiting for Ray to end the process, and ``phalanx resume --engine local``
finishes it: every task succeeds exactly once. Bounded in time; the cluster is shut down."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sim_plan, write_plan

pytest.importorskip("ray")

TASKS = 40


def test_losing_the_head_interrupts_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    plan = write_plan(tmp_path / "plan.yaml", sim_plan(TASKS, agents=4, latency_ms=1000))
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    proc: subprocess.Popen[str] | None = None
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        cmd = [sys.executable, "-m", "phalanx", "--state-dir", str(state), "run", str(plan)]
        cmd += ["--engine", "ray", "--address", cluster.address, "--no-tui", "--run-id", "hl"]
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        done = 0
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            done += "✓" in line
            if done >= 6 or time.monotonic() > deadline:
                break
        assert done >= 6, "the run did not get going"
        cluster.remove_node(cluster.head_node, allow_graceful=False)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 130, out[-2000:]
        assert "the Ray head has not answered" in out
        assert "resume with: phalanx resume hl" in out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        cluster.shutdown()

    with sqlite3.connect(state / "journal.sqlite") as c:
        (status,) = c.execute("SELECT status FROM runs WHERE run_id = 'hl'").fetchone()
    assert status == "interrupted"
    again = subprocess.run(
        [sys.executable, "-m", "phalanx", "--state-dir", str(state), "resume", "hl"]
        + ["--engine", "local", "--no-tui", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    with sqlite3.connect(state / "journal.sqlite") as c:
        ok = dict(
            c.execute(
                "SELECT task_id, COUNT(*) FROM attempts WHERE run_id = 'hl'"
                " AND outcome = 'succeeded' GROUP BY task_id"
            ).fetchall()
        )
    assert ok == {f"t{i}": 1 for i in range(TASKS)}

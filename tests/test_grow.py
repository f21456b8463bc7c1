"""Plans that grow while they run (issue 20, items 1-3 and 5): a foreach template expanded
over an upstream's structured answer, agents that spawn subtasks with ``spawn_tasks``,
growth journaled with its provenance, and resumes after ``kill -9`` that neither lose nor
duplicate grown tasks."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import events, rows
from growmodel import GrowModel
from phalanx import AgentSpec, Plan, Task
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.providers.base import Completion, CompletionRequest
from phalanx.status.metrics import compute_metrics
from phalanx.status.snapshot import fold
from phalanx.status.text import _task_lines, eta_text
from phalanx.status.web.views import snapshot_json

FILES = {"type": "object", "required": ["files"], "properties": {"files": {"type": "array"}}}


def grow_plan(**limits: Any) -> dict[str, Any]:
    """analyze (20 files) -> migrate[0..20) -> report; plus a spawner of 3 subtasks."""
    return {
        "name": "grow",
        "limits": limits,
        "agents": [
            {"role": "analyzer", "provider": "grow"},
            {"role": "migrator", "provider": "grow", "tools": ["spawn_tasks"]},
            {"role": "migrator", "provider": "grow", "tools": ["spawn_tasks"]},
        ],
        "tasks": [
            {"id": "analyze", "role": "analyzer", "prompt": "List modules.", "schema": FILES},
            {
                "id": "migrate",
                "role": "migrator",
                "foreach": "analyze.files",
                "prompt": "Migrate {item} to the new API.",
                "title": "migrate {item}",
            },
            {"id": "report", "role": "analyzer", "needs": ["migrate"], "prompt": "Report."},
            {"id": "split", "role": "migrator", "prompt": "SPAWN 3 parts."},
        ],
    }


def _run(plan: dict[str, Any], model: GrowModel | None = None) -> phalanx.RunResult:
    return phalanx.run_sync(Plan.from_dict(plan), custom_providers={"grow": model or GrowModel()})


def _order(state: Path, run_id: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in rows(state, "SELECT type, data FROM events WHERE run_id=? ORDER BY seq", run_id)
    ]


def test_an_analyzer_answer_of_20_items_grows_20_migrate_tasks(state: Path) -> None:
    result = _run(grow_plan())
    assert result.status == "succeeded", result.summary()
    migrated = sorted(t for t in result.tasks if t.startswith("migrate["))
    assert migrated == sorted(f"migrate[{i}]" for i in range(20))
    assert all(result.tasks[t].ok and result.tasks[t].attempts == 1 for t in migrated)
    assert result.tasks["migrate"].ok and result.tasks["migrate"].attempts == 0  # a template
    # the prompt and title come from the item
    assert result.tasks["migrate[7]"].output == "done migrate[7] (1 upstream)"
    # report ran after all 20, with each one's result handed over
    assert result.tasks["report"].output == "done report (20 upstream)"
    starts = {e["task_id"]: e["ts"] for e in events(state, result.run_id, "attempt_started")}
    ends = {e["task_id"]: e["ts"] for e in events(state, result.run_id, "task_succeeded")}
    assert starts["report"] >= max(ends[t] for t in migrated)
    # one growth event, with its provenance, journaled with analyze's success
    (grown,) = [e for e in events(state, result.run_id, "tasks_added") if e["kind"] == "foreach"]
    assert grown["group"] == "migrate"
    assert grown["by_task"] == "analyze"
    analyze = next(
        e for e in events(state, result.run_id, "task_succeeded") if e["task_id"] == "analyze"
    )
    assert grown["by_attempt"] == analyze["attempt_id"] and grown["items"] == 20
    assert [t["id"] for t in grown["tasks"]] == [f"migrate[{i}]" for i in range(20)]
    assert grown["tasks"][3]["prompt"] == "Migrate src/m3.py to the new API."
    # the journal's task table has them all, one success each
    n = rows(
        state, "SELECT COUNT(*) FROM tasks WHERE run_id=? AND state='succeeded'", result.run_id
    )
    assert n[0][0] == 1 + 20 + 1 + 1 + 1 + 3  # analyze, 20, template, report, split, parts
    dup = rows(
        state,
        "SELECT task_id, COUNT(*) FROM attempts WHERE run_id=? AND outcome='succeeded'"
        " GROUP BY task_id HAVING COUNT(*) > 1",
        result.run_id,
    )
    assert dup == []


def test_foreach_by_key_an_empty_list_and_max_items(state: Path) -> None:
    plan = grow_plan()
    empty = _run(plan, GrowModel(items=0))
    assert empty.status == "succeeded", empty.summary()
    assert not [t for t in empty.tasks if t.startswith("migrate[")]
    assert empty.tasks["migrate"].ok and empty.tasks["report"].output == "done report (0 upstream)"

    plan["tasks"][1]["max_items"] = 5
    over = _run(plan, GrowModel(items=6))
    assert over.status == "failed"
    assert over.tasks["migrate"].state == "failed"
    assert "6 items, over max_items 5" in (over.tasks["migrate"].error or "")
    assert over.tasks["report"].state == "skipped"
    alerts = [a["message"] for a in events(state, over.run_id, "alert") if a["kind"] == "growth"]
    assert any("max_items" in a for a in alerts)


def test_foreach_key_names_the_expanded_tasks(state: Path) -> None:
    plan = grow_plan()
    plan["tasks"][1]["foreach_key"] = "path"
    plan["tasks"][1]["prompt"] = "Migrate {item.path} (owner {item.owner})."
    result = _run(plan, GrowModel(items=2, objects=True))
    assert result.status == "succeeded", result.summary()
    assert {"migrate[src_m0.py]", "migrate[src_m1.py]"} <= set(result.tasks)
    (grown,) = [e for e in events(state, result.run_id, "tasks_added") if e["kind"] == "foreach"]
    assert grown["tasks"][1]["prompt"] == "Migrate src/m1.py (owner team1)."

    plan["tasks"][1]["prompt"] = "Migrate {item.nope}."
    bad = _run(plan, GrowModel(items=2, objects=True))
    assert bad.tasks["migrate"].state == "failed" and "no field 'nope'" in (
        bad.tasks["migrate"].error or ""
    )


def test_a_python_task_can_be_a_template(state: Path) -> None:
    plan = Plan.build(
        agents=[AgentSpec(role="analyzer", provider="grow")],
        tasks=[
            Task(id="analyze", prompt="List.", output_type=FILES),
            Task(id="migrate", prompt="Migrate {item}.", foreach="analyze.files"),
            Task(id="report", prompt="Report.", needs=("migrate",)),
        ],
    )
    assert plan.task_map["migrate"].needs == ("analyze",)  # the source is a need
    result = phalanx.run_sync(plan, custom_providers={"grow": GrowModel(items=4)})
    assert result.status == "succeeded", result.summary()
    assert result.tasks["report"].output == "done report (4 upstream)"


def test_an_agent_spawns_subtasks_and_waits_for_them(state: Path) -> None:
    result = _run(grow_plan())
    split = result.tasks["split"]
    assert split.ok and split.output.startswith("collected: spawned 3 subtask(s): split.1")
    for i in (1, 2, 3):
        assert result.tasks[f"split.{i}"].output == f"done split.{i} (0 upstream)"
        assert f"### split.{i} (succeeded)\ndone split.{i}" in split.output
    (spawn,) = [e for e in events(state, result.run_id, "tasks_added") if e["kind"] == "spawn"]
    started = [
        e for e in events(state, result.run_id, "attempt_started") if e["task_id"] == "split"
    ]
    assert spawn["by_task"] == "split" and spawn["by_attempt"] == started[0]["attempt_id"]
    assert spawn["call"] == "1.0" and spawn["wait"] is True
    # the spawn is journaled right after the call's (committed) start: nothing between
    order = _order(state, result.run_id)
    i = next(i for i, (t, d) in enumerate(order) if t == "tasks_added" and '"spawn"' in d)
    assert order[i - 1][0] == "tool_started" and '"spawn_tasks"' in order[i - 1][1]


class _FailsAfterSpawning(GrowModel):
    """The spawner's first attempt fails on the call after its spawn (a 500)."""

    async def complete(self, request: CompletionRequest) -> Completion:
        tool_done = any(m.role == "tool" for m in request.messages)
        if request.task_id == "split" and request.attempt_no == 1 and tool_done:
            raise ProviderError("boom", error_class=ErrorClass.SERVER_ERROR, status=500)
        return await super().complete(request)


def test_a_retried_spawning_attempt_does_not_spawn_twice(state: Path) -> None:
    plan = grow_plan()
    plan["retry"] = {"call_attempts": 1, "base_seconds": 0.01}
    result = _run(plan, _FailsAfterSpawning())
    assert result.status == "succeeded", result.summary()
    assert result.tasks["split"].attempts == 2
    spawns = [e for e in events(state, result.run_id, "tasks_added") if e["kind"] == "spawn"]
    assert len(spawns) == 1  # the second attempt's call got the recorded answer
    assert sorted(t for t in result.tasks if t.startswith("split.")) == [
        "split.1",
        "split.2",
        "split.3",
    ]
    assert result.tasks["split"].output.startswith("collected: spawned 3 subtask(s)")


def test_spawning_is_bounded_by_depth_and_tasks(state: Path) -> None:
    plan = grow_plan(max_depth=2, max_tasks=40)
    plan["tasks"] = [{"id": "root", "role": "migrator", "prompt": "SPAWN 2 RECURSE"}]
    result = _run(plan)
    ids = sorted(result.tasks)
    assert "root.1.1" in ids and not any(t.count(".") > 2 for t in ids), ids  # depth 2
    assert len(ids) == 1 + 2 + 4
    alerts = [a["message"] for a in events(state, result.run_id, "alert") if a["kind"] == "growth"]
    assert len(alerts) == 4 and all("max_depth" in a for a in alerts)
    codes = [
        r[0] for r in rows(state, "SELECT error_code FROM tool_calls WHERE run_id=?", result.run_id)
    ]
    assert codes.count("spawn_refused") == 4

    plan = grow_plan(max_depth=10, max_tasks=10)
    plan["tasks"] = [{"id": "root", "role": "migrator", "prompt": "SPAWN 2 RECURSE"}]
    result = _run(plan)
    assert len(result.tasks) <= 10
    alerts = [a["message"] for a in events(state, result.run_id, "alert") if a["kind"] == "growth"]
    assert alerts and all("max_tasks" in a for a in alerts)


class _Clocked(GrowModel):
    """Notes when each model call arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.times.append(asyncio.get_running_loop().time())
        return await super().complete(request)


def test_spawned_work_at_every_depth_stays_under_the_governors_rpm(state: Path) -> None:
    plan = grow_plan(max_depth=2, rate_limits={"grow": {"rpm": 4, "window": 0.5}})
    plan["tasks"] = [{"id": "root", "role": "migrator", "prompt": "SPAWN 2 RECURSE"}]
    model = _Clocked()
    result = _run(plan, model)
    assert result.status == "succeeded", result.summary()
    assert len(result.tasks) == 7 and len(model.times) == 14  # 2 calls each, 3 depths
    worst = max(sum(1 for u in model.times if t <= u < t + 0.5 - 0.01) for t in model.times)
    assert worst <= 4, sorted(round(t - model.times[0], 3) for t in model.times)


def test_status_says_a_run_still_grows(state: Path) -> None:
    result = _run(grow_plan())
    evs = [e for _, e in phalanx.journal.Journal(result.journal_path).read_events(result.run_id)]
    first = next(i for i, e in enumerate(evs) if e.type == "tasks_added" and e.kind == "foreach")
    during = fold(evs[: first + 1])
    assert during.growing and during.total >= 4 + 20
    assert eta_text(during).endswith("(for the known tasks; still growing)")
    tasks_line, total_line = _task_lines(during)
    assert f"(of {during.total} (growing))" in tasks_line and "done (growing))" in total_line
    page = snapshot_json(during)
    assert page["growing"] and page["headline"].endswith(" (growing)")
    assert page["eta_text"].endswith("still growing)")
    assert compute_metrics(evs[: first + 1]).growing
    end = fold(evs)
    assert not end.growing and end.total == 4 + 20 + 3
    assert "(growing)" not in _task_lines(end)[0] and not compute_metrics(evs).growing


# -- kill -9 during expansion and spawning, then resume ------------------------------------
DRIVER = """
import asyncio, json, sys
sys.path.insert(0, {tests!r})
import phalanx
from growmodel import GrowModel

mode, state, run_id = sys.argv[1:4]
model = {{"grow": GrowModel(delay=0.03)}}
if mode == "run":
    plan = phalanx.Plan.from_dict(json.loads(open(sys.argv[4]).read()))
    phalanx.run_sync(plan, state=state, run_id=run_id, custom_providers=model, flush_interval=0.01)
else:
    asyncio.run(phalanx.resume(run_id, state=state, custom_providers=model, flush_interval=0.01))
"""
KILLS = 10
EXPECTED = {"analyze", "migrate", "report", "split", "split.1", "split.2", "split.3"} | {
    f"migrate[{i}]" for i in range(20)
}


def _events_so_far(journal: Path, run_id: str) -> int:
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(journal, timeout=1)
        try:
            return int(
                db.execute("SELECT COUNT(*) FROM events WHERE run_id=?", (run_id,)).fetchone()[0]
            )
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _driver(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    script = tmp / "driver.py"
    if not script.exists():
        script.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _kill_at(proc: subprocess.Popen[bytes], journal: Path, run_id: str, events_: int) -> int:
    """SIGKILL once the run has journaled ``events_`` events (or it ended first)."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if _events_so_far(journal, run_id) >= events_:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.003)
    proc.wait(timeout=10)
    assert proc.stderr is not None
    proc.stderr.close()
    return _events_so_far(journal, run_id)


def _grown_unfinished(journal: Path, run_id: str) -> set[str]:
    """The growths journaled whose tasks had not all ended when the run was killed."""
    db = sqlite3.connect(journal)
    try:
        out = set()
        for (data,) in db.execute(
            "SELECT data FROM events WHERE run_id=? AND type='tasks_added'", (run_id,)
        ):
            e = json.loads(data)
            done = db.execute(
                "SELECT COUNT(*) FROM results WHERE run_id=? AND task_id LIKE ?",
                (run_id, e["group"] + "_%"),
            ).fetchone()[0]
            if done < len(e["tasks"]):
                out.add(e["kind"])
        return out
    finally:
        db.close()


def _check_grown_once(journal: Path, run_id: str, k: int) -> None:
    """The run ended with exactly the expected tasks, one success each, grown once."""
    db = sqlite3.connect(journal)

    def q(sql: str) -> list[Any]:
        return db.execute(sql, (run_id,)).fetchall()

    try:
        assert {r[0] for r in q("SELECT task_id FROM results WHERE run_id=?")} == EXPECTED
        assert {r[0] for r in q("SELECT task_id FROM tasks WHERE run_id=?")} == EXPECTED
        assert q("SELECT DISTINCT state FROM tasks WHERE run_id=?") == [("succeeded",)]
        won = q(
            "SELECT task_id, COUNT(*) FROM attempts WHERE run_id=? AND outcome='succeeded'"
            " GROUP BY task_id"
        )
        assert sorted(t for t, n in won if n == 1) == sorted(EXPECTED - {"migrate"})
        assert all(n == 1 for _, n in won)
        grown = q("SELECT data FROM events WHERE run_id=? AND type='tasks_added'")
        kinds = sorted(json.loads(d)["kind"] for (d,) in grown)
        assert kinds == ["foreach", "spawn"], (k, kinds)  # grown once each, never twice
        assert q("SELECT status FROM runs WHERE run_id=?") == [("succeeded",)]
    finally:
        db.close()


@pytest.mark.slow
def test_kill_9_during_growth_then_resume_neither_loses_nor_duplicates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(grow_plan()))
    journal = state / "journal.sqlite"
    rng = random.Random(20)
    t0 = time.monotonic()
    killed_at = []
    windows: list[str] = []  # kills that fell after a growth and before its tasks ended
    for k in range(KILLS):
        run_id = f"grow-{k}"
        target = rng.randrange(4, 80)  # the run journals ~86 events in all
        run = _driver(tmp_path, "run", str(state), run_id, str(plan))
        killed_at.append((target, _kill_at(run, journal, run_id, target)))
        windows += _grown_unfinished(journal, run_id)
        resume = _driver(tmp_path, "resume", str(state), run_id)
        _, err = resume.communicate(timeout=60)
        assert resume.returncode == 0, err.decode()[-2000:]
        _check_grown_once(journal, run_id, k)
    took = time.monotonic() - t0
    print(f"{KILLS} kills at (target, journaled) events {killed_at} in {took:.1f}s; {windows}")
    assert "foreach" in windows and "spawn" in windows  # kills fell inside both growths
    assert took < 120

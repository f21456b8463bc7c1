"""Hooks inside a real run: lifecycle order, a command hook's veto, a crashing hook."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import phalanx
from conftest import sim_plan, write_plan
from phalanx import Plan
from phalanx.agents.hooks import Hooks
from phalanx.cli.app import main


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def _add(self, payload: dict[str, Any]) -> None:
        task = payload.get("task") or {}
        self.calls.append((payload["point"], task.get("id")))

    def on_run_start(self, payload: dict[str, Any]) -> None:
        self._add(payload)

    async def before_task(self, payload: dict[str, Any]) -> None:
        self._add(payload)

    def after_task(self, payload: dict[str, Any]) -> None:
        self._add(payload)

    def on_error(self, payload: dict[str, Any]) -> None:
        self._add(payload)

    def on_run_end(self, payload: dict[str, Any]) -> None:
        self._add(payload)
        assert payload["status"] == "succeeded"


def test_lifecycle_points_fire_in_order(state: Path) -> None:
    data = sim_plan(3, agents=1, deps="chain", faults={}, max_attempts=3)
    rec = Recorder()
    result = phalanx.run_sync(Plan.from_dict(data), hooks=[rec])
    assert result.status == "succeeded"
    assert rec.calls == [
        ("on_run_start", None),
        ("before_task", "t0"),
        ("after_task", "t0"),
        ("before_task", "t1"),
        ("after_task", "t1"),
        ("before_task", "t2"),
        ("after_task", "t2"),
        ("on_run_end", None),
    ]


def test_on_error_fires_for_a_failed_attempt(state: Path) -> None:
    data = sim_plan(20, agents=2, faults={"server_error": 0.5}, max_attempts=5, seed=3)
    errors: list[dict[str, Any]] = []
    result = phalanx.run_sync(Plan.from_dict(data), hooks=[{"on_error": errors.append}])
    assert errors, "faults were injected: some attempt failed"
    assert all(e["error_class"] == "server_error" for e in errors)
    assert result.snapshot.failed_attempts == len(errors)


def test_command_hook_vetoes_a_task_and_a_crashing_hook_is_reported(
    state: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.jsonl"
    guard = tmp_path / "guard.py"
    guard.write_text(
        "import json, sys\n"
        "event = json.load(sys.stdin)\n"
        f"open({str(seen)!r}, 'a').write(json.dumps(event) + '\\n')\n"
        "if event['task']['id'] == 't1':\n"
        "    sys.stderr.write('t1 touches production')\n"
        "    sys.exit(2)\n"
    )
    data = sim_plan(4, agents=2)
    data["tasks"][3]["needs"] = ["t1"]
    data["agents"][0]["hooks"] = [
        {"on": "before_task", "command": [sys.executable, str(guard)], "timeout": 20}
    ]
    data["hooks"] = [
        {"on": "after_task", "command": [sys.executable, "-c", "import sys; sys.exit(1)"]}
    ]
    plan = write_plan(tmp_path / "plan.yaml", data)
    code = main(["run", str(plan), "--no-tui", "--run-id", "hooked"])
    assert code == 1
    db = sqlite3.connect(state / "journal.sqlite")
    states = dict(db.execute("SELECT task_id, state FROM tasks WHERE run_id = 'hooked'"))
    assert states == {"t0": "succeeded", "t1": "failed", "t2": "succeeded", "t3": "skipped"}
    (error,) = db.execute(
        "SELECT error FROM tasks WHERE run_id = 'hooked' AND task_id = 't1'"
    ).fetchone()
    assert "vetoed by a before_task hook: t1 touches production" in error
    (cls,) = db.execute(
        "SELECT error_class FROM tasks WHERE run_id = 'hooked' AND task_id = 't1'"
    ).fetchone()
    assert cls == "vetoed"
    alerts = [
        json.loads(d)["message"]
        for (d,) in db.execute("SELECT data FROM events WHERE run_id = 'hooked' AND type = 'alert'")
    ]
    assert len(alerts) == 2  # the after_task command failed after each of t0 and t2
    assert all("exited with 1" in a for a in alerts)
    events = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {e["task"]["id"] for e in events} == {"t0", "t1", "t2"}  # t3 was skipped
    assert all(e["point"] == "before_task" and e["run_id"] == "hooked" for e in events)


def test_bad_hook_in_plan_is_one_line_with_line_number(
    state: Path, tmp_path: Path, capsys: Any
) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        "provider: sim\n"
        "agents:\n"
        "  - role: coder\n"
        "    hooks:\n"
        "      - on: after_everything\n"
        "        command: [true]\n"
        "tasks:\n"
        "  - id: a\n"
        "    prompt: x\n",
    )
    assert main(["run", str(plan)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "plan.yaml:5: agents[0].hooks[0].on: unknown hook point 'after_everything'" in err[0]

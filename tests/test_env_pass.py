"""``env: {pass: [NAME, ...]}``: the plan passes named variables through the one secret rule,
on purpose, to ``run_command``, command hooks and eval ``command`` checks; every other
secret-shaped variable stays out, and the passed value still never reaches the journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import rows, write_plan
from phalanx.agents.hooks import from_config, payload
from phalanx.evals.checks import run_command
from phalanx.exceptions import PlanError
from phalanx.plan import Plan, load_plan
from phalanx.plan.file import plan_to_dict
from phalanx.providers.base import Completion, ToolCall
from phalanx.testing import ScriptedProvider

PASSED = "canary-stripe-pass-0123456789"
KEPT_OUT = "canary-aws-out-0123456789"
DUMP = '#!/bin/sh\nenv > "$1"\n'


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_KEY", PASSED)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEPT_OUT)


def _env_of(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _plan_data(**extra: Any) -> dict[str, Any]:
    return {
        "agents": [{"name": "Ada", "provider": "scripted", "tools": ["run_command"]}],
        "tasks": [{"id": "t", "prompt": "dump the environment"}],
        **extra,
    }


def _dump_workspace(tmp_path: Path) -> Path:
    """A workspace with ``dump.sh``, which writes its environment to a file."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "dump.sh").write_text(DUMP)
    (ws / "dump.sh").chmod(0o755)
    return ws


def test_a_passed_secret_reaches_the_agents_command_and_no_other_does(
    secrets: None, state: Path, tmp_path: Path
) -> None:
    ws = _dump_workspace(tmp_path)
    plan = load_plan(
        write_plan(
            tmp_path / "plan.yaml",
            _plan_data(
                env={"pass": ["STRIPE_KEY"]},
                commands={"allow": ["./dump.sh"]},
                workspace="ws",
            ),
        )
    )
    assert plan.env_pass == ("STRIPE_KEY",)
    call = ToolCall(id="c1", name="run_command", arguments={"argv": ["./dump.sh", "env.txt"]})
    script = ScriptedProvider([Completion(text="", tool_calls=(call,)), "dumped"])
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    env = _env_of(ws / "env.txt")
    assert env["STRIPE_KEY"] == PASSED  # passed on purpose
    assert "AWS_SECRET_ACCESS_KEY" not in env and KEPT_OUT not in json.dumps(env)
    # the passed value is still a secret to redaction: nothing of it in the journal
    for table in ("events", "tool_calls", "agent_turns", "runs"):
        dump = "\n".join(str(tuple(r)) for r in rows(state, f"SELECT * FROM {table}"))
        assert PASSED not in dump and KEPT_OUT not in dump


def test_without_env_pass_the_command_gets_neither(
    secrets: None, state: Path, tmp_path: Path
) -> None:
    ws = _dump_workspace(tmp_path)
    plan = load_plan(
        write_plan(
            tmp_path / "plan.yaml", _plan_data(commands={"allow": ["./dump.sh"]}, workspace="ws")
        )
    )
    call = ToolCall(id="c1", name="run_command", arguments={"argv": ["./dump.sh", "env.txt"]})
    script = ScriptedProvider([Completion(text="", tool_calls=(call,)), "dumped"])
    assert phalanx.run_sync(plan, custom_providers={"scripted": script}).status == "succeeded"
    env = _env_of(ws / "env.txt")
    assert "STRIPE_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_a_command_hook_gets_the_passed_secret_and_no_other(secrets: None, tmp_path: Path) -> None:
    (tmp_path / "dump.sh").write_text(DUMP)
    (tmp_path / "dump.sh").chmod(0o755)
    out = tmp_path / "hook-env.txt"
    hook = {"on": "on_run_start", "command": [str(tmp_path / "dump.sh"), str(out)]}
    assert asyncio.run(from_config([hook]).fire("on_run_start", payload("on_run_start"))).ok
    assert "STRIPE_KEY" not in _env_of(out)  # not passed: scrubbed
    hooks = from_config([hook], env_pass=("STRIPE_KEY",))
    assert asyncio.run(hooks.fire("on_run_start", payload("on_run_start"))).ok
    env = _env_of(out)
    assert env["STRIPE_KEY"] == PASSED and "AWS_SECRET_ACCESS_KEY" not in env


def test_an_eval_command_check_gets_the_passed_secret_and_no_other(
    secrets: None, tmp_path: Path
) -> None:
    (tmp_path / "dump.sh").write_text(DUMP)
    (tmp_path / "dump.sh").chmod(0o755)
    ok, _ = run_command(["./dump.sh", "a.txt"], tmp_path, 10)
    assert ok and "STRIPE_KEY" not in _env_of(tmp_path / "a.txt")
    ok, _ = run_command(["./dump.sh", "b.txt"], tmp_path, 10, ("STRIPE_KEY",))
    env = _env_of(tmp_path / "b.txt")
    assert ok and env["STRIPE_KEY"] == PASSED and "AWS_SECRET_ACCESS_KEY" not in env


def test_env_pass_round_trips_and_refuses_bad_names(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path / "a.yaml", _plan_data(env={"pass": "STRIPE_KEY"})))
    assert plan.env_pass == ("STRIPE_KEY",)  # one name is a list of one
    assert Plan.from_dict(plan_to_dict(plan)).env_pass == ("STRIPE_KEY",)
    with pytest.raises(PlanError, match="not an environment variable name"):
        load_plan(write_plan(tmp_path / "b.yaml", _plan_data(env={"pass": ["A=B"]})))
    with pytest.raises(PlanError, match="env"):
        load_plan(write_plan(tmp_path / "c.yaml", _plan_data(env={"keep": ["X"]})))

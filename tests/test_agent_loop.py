"""The agent loop: tools in the workspace, style re-asks, turn caps, context, usage."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.tools import tool
from phalanx.cost import Usage
from phalanx.plan import Commands
from phalanx.providers.base import Completion, ToolCall
from phalanx.testing import ScriptedProvider

U = Usage(input_tokens=100, output_tokens=20)


def call(name: str, cid: str, **arguments: Any) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=(ToolCall(id=cid, name=name, arguments=arguments),),
    )


def _events(state: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(state / "journal.sqlite")
    rows = db.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, kind)
    )
    return [json.loads(d) for (d,) in rows]


def test_read_edit_run_tests_answer(state: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "check_calc.py").write_text(
        "from calc import add\nassert add(2, 3) == 5, 'add is wrong'\nprint('all good')\n"
    )
    script = ScriptedProvider(
        [
            call("read_file", "c1", path="calc.py"),
            call("edit_file", "c2", path="calc.py", old="a - b", new="a + b"),
            call("run_command", "c3", argv=[sys.executable, "check_calc.py"]),
            Completion(text="Fixed add(): it subtracted. The check passes.", usage=U),
        ]
    )
    plan = Plan.build(
        agents=[
            AgentSpec(
                role="coder",
                provider="scripted",
                tools=("read_file", "edit_file", "run_command"),
            )
        ],
        tasks=[Task(id="fix", prompt="Fix add() in calc.py and run check_calc.py.")],
        commands=Commands(allow=(sys.executable,)),
    )
    result = phalanx.run_sync(plan, workspace=ws, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert (ws / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert result.tasks["fix"].output.startswith("Fixed add()")
    assert result.usage.input_tokens == 400 and result.usage.output_tokens == 80  # 4 turns
    # every later turn saw the earlier tool results
    last = script.requests[-1].messages
    tool_msgs = [m for m in last if m.role == "tool"]
    assert [m.tool_call_id for m in tool_msgs] == ["c1", "c2", "c3"]
    assert "return a - b" in tool_msgs[0].content
    assert "all good" in tool_msgs[2].content and "exit" in tool_msgs[2].content.lower()
    assert {t.name for t in script.requests[0].tools} == {"read_file", "edit_file", "run_command"}
    called = _events(state, result.run_id, "tool_called")
    assert [(e["tool"], e["ok"], e["turn"]) for e in called] == [
        ("read_file", True, 1),
        ("edit_file", True, 2),
        ("run_command", True, 3),
    ]


def test_tool_refusals_go_back_to_the_model_not_up_the_stack(state: Path, tmp_path: Path) -> None:
    script = ScriptedProvider(
        [
            call("read_file", "c1", path="../outside.txt"),
            call("run_command", "c2", argv=["rm", "-rf", "/"]),
            call("no_such_tool", "c3"),
            Completion(text="I could not do it.", usage=U),
        ]
    )
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("read_file", "run_command"))],
        tasks=[Task(id="t", prompt="try things")],
    )
    result = phalanx.run_sync(plan, workspace=tmp_path, custom_providers={"scripted": script})
    assert result.status == "succeeded"
    codes = [e["error_code"] for e in _events(state, result.run_id, "tool_called")]
    assert codes == ["path_outside_workspace", "command_not_allowed", "unknown_tool"]
    contents = [m.content for m in script.requests[-1].messages if m.role == "tool"]
    assert all(c.startswith("error: ") for c in contents)


def test_invalid_style_is_reasked_then_parsed(state: Path) -> None:
    script = ScriptedProvider(["name: [unclosed", "name: phalanx\nagents: 3\n"])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", style="yaml")],
        tasks=[Task(id="t", prompt="describe")],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded"
    rejected = _events(state, result.run_id, "output_rejected")
    assert len(rejected) == 1 and rejected[0]["style"] == "yaml" and rejected[0]["reask"] == 1
    reask = script.requests[1].messages[-1].content
    assert "yaml" in reask.lower() and rejected[0]["error"] in reask
    db = sqlite3.connect(state / "journal.sqlite")
    (parsed,) = db.execute(
        "SELECT parsed_json FROM results WHERE run_id = ?", (result.run_id,)
    ).fetchone()
    assert json.loads(parsed) == {"name": "phalanx", "agents": 3}


def test_answers_that_never_parse_fail_as_output_invalid(state: Path) -> None:
    script = ScriptedProvider(["not | a table"] * 3)
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", style="table")],
        tasks=[Task(id="t", prompt="tabulate", max_attempts=3)],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    t = result.tasks["t"]
    assert t.state == "failed" and t.error_class == "output_invalid"
    assert t.attempts == 1  # not retried: the same model would answer the same
    assert "line 2: the second line must be a separator" in (t.error or "")  # first error path
    assert len(_events(state, result.run_id, "output_rejected")) == 2


def test_max_turns_stops_a_runaway_loop(state: Path, tmp_path: Path) -> None:
    script = ScriptedProvider([call("list_files", f"c{i}") for i in range(10)])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("list_files",))],
        tasks=[Task(id="t", prompt="loop", max_turns=4)],
    )
    result = phalanx.run_sync(plan, workspace=tmp_path, custom_providers={"scripted": script})
    t = result.tasks["t"]
    assert t.state == "failed" and t.error_class == "max_turns"
    assert len(script.requests) == 4


def test_context_is_read_from_the_workspace_capped_and_shown(state: Path, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("alpha " * 50)
    (tmp_path / "docs" / "b.md").write_text("beta " * 5000)
    script = ScriptedProvider(["done"])
    spec = AgentSpec(
        provider="scripted",
        context=("You review Rust code.", {"glob": "docs/*.md"}),
        context_max_tokens=500,
    )
    plan = Plan.build(agents=[spec], tasks=[Task(id="t", prompt="review")])
    result = phalanx.run_sync(plan, workspace=tmp_path, custom_providers={"scripted": script})
    assert result.status == "succeeded"
    system = script.requests[0].messages[0].content
    assert "You review Rust code." in system
    assert "### docs/a.md" in system and "alpha alpha" in system
    assert "[context cut at 500 tokens]" in system
    assert len(system) < 500 * 4 + 1000
    agent = result.snapshot.agents[0]
    assert 400 <= agent.context_tokens <= 520
    assert f"context {agent.context_tokens:,} tokens" in phalanx.render_status(result.snapshot)


def test_user_tool_from_a_typed_function(state: Path, tmp_path: Path) -> None:
    @tool
    def shout(text: str, times: int = 1) -> str:
        """Repeat text in capitals."""
        return " ".join([text.upper()] * times)

    script = ScriptedProvider([call("shout", "c1", text="hi", times=2), "ok"])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("shout",))],
        tasks=[Task(id="t", prompt="shout")],
    )
    result = phalanx.run_sync(
        plan, workspace=tmp_path, tools=[shout], custom_providers={"scripted": script}
    )
    assert result.status == "succeeded"
    tool_msg = next(m for m in script.requests[-1].messages if m.role == "tool")
    assert tool_msg.content == "HI HI"
    schema = script.requests[0].tools[0].parameters
    assert schema["required"] == ["text"]


def test_truncated_answer_runs_no_tool(state: Path, tmp_path: Path) -> None:
    cut = Completion(
        text="partial",
        stop_reason="max_tokens",
        usage=U,
        tool_calls=(ToolCall(id="c1", name="write_file", arguments={"path": "x", "content": "y"}),),
    )
    script = ScriptedProvider([cut, cut])  # cut inside a tool call: retried with more room
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("write_file",))],
        tasks=[Task(id="t", prompt="write", max_attempts=1)],
    )
    result = phalanx.run_sync(plan, workspace=tmp_path, custom_providers={"scripted": script})
    assert result.tasks["t"].error_class == "truncated"
    assert not (tmp_path / "x").exists()
    assert result.tasks["t"].output == ""
    assert [r.max_tokens_factor for r in script.requests] == [1, 2]


def test_runaway_tool_loop_stops_at_the_token_and_usd_caps(state: Path, tmp_path: Path) -> None:
    """A model that never stops calling tools: the run's budget ends the loop at the cap plus
    at most one call (each call here costs 120 tokens and $0.012)."""
    for limits, cap in (
        (phalanx.Limits(max_tokens=500), 500),
        (phalanx.Limits(max_usd=0.05), 0.05),
    ):
        script = ScriptedProvider([call("list_files", f"c{i}") for i in range(100)])
        plan = Plan.build(
            agents=[AgentSpec(provider="scripted", tools=("list_files",), max_turns=100)],
            tasks=[Task(id="t", prompt="loop forever", max_attempts=1)],
            limits=limits,
            prices={"scripted": phalanx.cost.Price(input=100.0, output=100.0)},
        )
        result = phalanx.run_sync(plan, workspace=tmp_path, custom_providers={"scripted": script})
        calls = len(script.requests)
        spent = result.usage.total_tokens if limits.max_tokens else (result.usage.cost_usd or 0)
        per_call = 120 if limits.max_tokens else 0.012
        assert result.status == "budget_exhausted", result.summary()
        assert spent >= cap and spent <= cap + per_call + 1e-9, (calls, spent)
        assert calls <= int(cap / per_call) + 1
        assert result.tasks["t"].error_class == "budget"

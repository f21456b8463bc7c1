"""``limits.max_prompt_tokens``: no model call is sent with a prompt estimated above it.

The check runs before every model call of an attempt (the first, and each later turn that tool
results or re-asks have grown); an oversized request fails the attempt as ``context_length``
(never retried: it would fail the same way) with one line naming the task, its size and the
limit, and the provider is never called with it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.tools import tool
from phalanx.cli.app import main
from phalanx.cost import Usage
from phalanx.exceptions import ErrorClass, PlanError
from phalanx.ids import AgentName
from phalanx.plan import Limits, load_plan
from phalanx.plan.file import plan_from_data, plan_to_dict
from phalanx.plan.model import DEFAULT_MAX_PROMPT_TOKENS
from phalanx.providers.base import Completion, ToolCall
from phalanx.runtime.executor import AgentRunner, Attempt, build_request, prompt_tokens
from phalanx.testing import ScriptedProvider

U = Usage(input_tokens=100, output_tokens=20)
LINE = re.compile(
    r"^prompt of task '(?P<task>[^']+)' is ~(?P<tokens>[\d,]+) tokens"
    r"(?: at model call (?P<call>\d+))?, over limits\.max_prompt_tokens \((?P<limit>[\d,]+)\)$"
)


def _line(error: str | None) -> re.Match[str]:
    m = LINE.match(error or "")
    assert m is not None, f"not the one-line size error: {error!r}"
    return m


def _rows(state: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state / "journal.sqlite")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_default_is_200k_estimated_tokens() -> None:
    assert DEFAULT_MAX_PROMPT_TOKENS == 200_000
    assert Limits().max_prompt_tokens == 200_000
    assert Plan.build(agents=[AgentSpec()], tasks=[Task(id="a", prompt="x")]).limits == Limits()


def test_a_20_mb_prompt_fails_before_any_model_call(state: Path) -> None:
    script = ScriptedProvider({"sibling": ["sibling done"], "after": ["never asked"]})
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[
            Task(id="summarise", prompt="y" * 20_000_000, max_attempts=3),
            Task(id="after", prompt="use the summary", needs=("summarise",)),
            Task(id="sibling", prompt="something small"),
        ],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    big = result.tasks["summarise"]
    assert big.state == "failed" and big.error_class == ErrorClass.CONTEXT_LENGTH
    assert big.attempts == 1  # not retried: the same prompt would be refused again
    m = _line(big.error)
    assert m["task"] == "summarise" and m["call"] is None and m["limit"] == "200,000"
    assert 5_000_000 <= int(m["tokens"].replace(",", "")) < 5_001_000  # 20 MB / 4
    # the provider never saw it; the sibling ran; the dependant was skipped
    assert [r.task_id for r in script.requests] == ["sibling"]
    assert result.tasks["sibling"].state == "succeeded"
    assert result.tasks["sibling"].output == "sibling done"
    assert result.tasks["after"].state == "skipped"
    # the journal has the failed attempt and the failed task, with class and line
    attempts = _rows(
        state,
        "SELECT outcome, error_class, error, input_tokens FROM attempts"
        " WHERE run_id = ? AND task_id = 'summarise'",
        result.run_id,
    )
    assert len(attempts) == 1
    outcome, cls, error, input_tokens = attempts[0]
    assert outcome == "failed" and cls == "context_length" and error == big.error
    assert not input_tokens  # nothing was sent, nothing was spent
    tasks = dict(_rows(state, "SELECT task_id, state FROM tasks WHERE run_id = ?", result.run_id))
    assert tasks == {"summarise": "failed", "after": "skipped", "sibling": "succeeded"}


def test_a_prompt_under_the_limit_runs(state: Path) -> None:
    script = ScriptedProvider(["read it all"])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[Task(id="long", prompt="z" * 760_000)],  # ~190,000 tokens
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert len(script.requests) == 1
    assert 190_000 <= prompt_tokens(script.requests[0]) <= 200_000


def _runner_and_attempt(limit: int, prompt: str) -> tuple[AgentRunner, Attempt, ScriptedProvider]:
    script = ScriptedProvider(["fine"])
    spec = AgentSpec(provider="scripted", name=AgentName("solo"))
    runner = AgentRunner(spec, script, "m", max_prompt_tokens=limit)
    attempt = Attempt(
        run_id="r", attempt_id=1, attempt_no=1, task=Task(id="t", prompt=prompt), agent="solo"
    )
    return runner, attempt, script


def test_the_limit_is_inclusive_and_counts_the_whole_request() -> None:
    runner, attempt, _ = _runner_and_attempt(1, "p" * 4000)
    size = prompt_tokens(build_request(runner.spec, attempt, "m"))
    assert size > 1000  # the system prompt and the style instruction count too

    runner, attempt, script = _runner_and_attempt(size, "p" * 4000)
    ok = asyncio.run(runner.run(attempt))
    assert ok.ok and ok.output == "fine" and len(script.requests) == 1

    runner, attempt, script = _runner_and_attempt(size - 1, "p" * 4000)
    refused = asyncio.run(runner.run(attempt))
    assert not refused.ok and refused.error_class is ErrorClass.CONTEXT_LENGTH
    assert refused.turns == 0 and script.requests == []
    m = _line(refused.error)
    assert int(m["tokens"].replace(",", "")) == size and m["limit"] == f"{size - 1:,}"


def _tool_call(i: int) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=(ToolCall(id=f"c{i}", name="dump", arguments={"part": i}),),
    )


def test_tool_results_pushing_the_loop_over_the_limit_stop_it_before_that_call(
    state: Path, tmp_path: Path
) -> None:
    chunk = 19_000  # under the tool layer's 20,000-character cap on a result

    @tool
    def dump(part: int) -> str:
        """Return a large block of text."""
        return f"{part}:" + "d" * chunk

    script = ScriptedProvider([_tool_call(i) for i in range(100)])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("dump",))],
        tasks=[Task(id="loop", prompt="read every part", max_turns=100, max_attempts=2)],
    )
    result = phalanx.run_sync(
        plan, workspace=tmp_path, tools=[dump], custom_providers={"scripted": script}
    )
    t = result.tasks["loop"]
    assert t.state == "failed" and t.error_class == "context_length" and t.attempts == 1
    sent = len(script.requests)
    m = _line(t.error)
    assert m["task"] == "loop" and m["call"] == str(sent + 1)
    assert int(m["tokens"].replace(",", "")) > 200_000
    # every request sent was within the limit, and the one refused was the first over it
    assert all(prompt_tokens(r) <= 200_000 for r in script.requests)
    assert prompt_tokens(script.requests[-1]) > 200_000 - (chunk + 200) // 4
    assert 40 <= sent <= 43  # 200,000 tokens / ~4,750 per tool result
    # the tools of every call ran (the last result is what grew the prompt past the limit)
    called = _rows(
        state,
        "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'tool_called'",
        result.run_id,
    )
    assert called == [(sent,)]
    assert result.usage.input_tokens == 100 * sent  # only calls that were made are counted


def test_re_asks_pushing_the_loop_over_the_limit_stop_it_before_that_call(state: Path) -> None:
    bad = "{" + "w" * 600_000  # ~150,000 tokens of JSON that does not parse
    script = ScriptedProvider([bad, bad, '{"ok": true}'])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", style="json")],
        tasks=[Task(id="reask", prompt="answer in JSON")],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    t = result.tasks["reask"]
    assert t.state == "failed" and t.error_class == "context_length"
    assert len(script.requests) == 2  # the second re-ask (~300,000 tokens) was never sent
    assert _line(t.error)["call"] == "3"


# -- the plan file ---------------------------------------------------------------------------

PLAN = """\
provider: sim
limits:
  max_prompt_tokens: {value}
agents:
  - role: writer
tasks:
  - id: a
    prompt: do a
"""


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-5", "greater than or equal to 1"),
        ("0", "greater than or equal to 1"),
        ("1.5", "valid integer"),
        ("5.0", "valid integer"),
        ("lots", "valid integer"),
        ("'100'", "valid integer"),
        ("true", "valid integer"),
        ("null", "valid integer"),
        ("[1]", "valid integer"),
    ],
)
def test_a_bad_max_prompt_tokens_is_one_plan_error_line(
    value: str, says: str, tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(value=value))
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    err = caught.value
    assert err.file == str(path) and err.field == "limits.max_prompt_tokens" and err.line == 3
    assert says in str(err) and "\n" not in str(err) and len(str(err)) <= 300
    assert main(["run", str(path), "--quiet"]) == 2
    out, stderr = capsys.readouterr()
    lines = stderr.strip().splitlines()
    assert out == "" and len(lines) == 1 and "limits.max_prompt_tokens" in lines[0]
    assert f"{path}:3" in lines[0] and "Traceback" not in stderr


def test_a_good_max_prompt_tokens_loads_and_survives_the_journal_round_trip(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(value="1_000_000"))
    plan = load_plan(path)
    assert plan.limits.max_prompt_tokens == 1_000_000
    again = plan_from_data(json.loads(json.dumps(plan_to_dict(plan))))
    assert again.limits.max_prompt_tokens == 1_000_000
    path.write_text(PLAN.format(value="1").replace("limits:\n  max_prompt_tokens: 1\n", ""))
    assert load_plan(path).limits.max_prompt_tokens == DEFAULT_MAX_PROMPT_TOKENS


@pytest.mark.parametrize("value", [0, -1, 2.5, True, None, "100"])
def test_a_bad_max_prompt_tokens_in_python_is_a_plan_error(value: Any) -> None:
    with pytest.raises(PlanError) as caught:
        Limits(max_prompt_tokens=value)
    assert caught.value.field == "limits.max_prompt_tokens"
    assert "\n" not in str(caught.value)


def test_the_plan_limit_reaches_every_agent(state: Path) -> None:
    script = ScriptedProvider(["never asked"])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[Task(id="small", prompt="q" * 8_000)],
        limits=Limits(max_prompt_tokens=1_000),
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    t = result.tasks["small"]
    assert t.error_class == "context_length" and script.requests == []
    assert _line(t.error)["limit"] == "1,000"


def test_the_limit_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "guarantees.md").read_text()
    assert "limits.max_prompt_tokens" in doc
    assert "test_prompt_limits.py" in doc
    assert "200,000" in doc

"""Decomposition: `phalanx plan`'s planner, with a scripted model and with the real
``local:smollm2`` (constrained decoding, on the CPU, nothing mocked)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

import phalanx
from phalanx import ErrorClass, ProviderError, UsageError
from phalanx.agents.spec import ROLES
from phalanx.agents.styles import parse_output
from phalanx.plan.planner import (
    ADDED_AGENT_STYLE,
    EXAMPLE,
    OUTLINE_SCHEMA,
    PLAN_CATEGORIES,
    PLAN_SCHEMA,
    PlannerError,
    decompose,
    plan_text,
    plan_yaml,
    write_plan,
)
from phalanx.providers.base import Completion, CompletionRequest
from phalanx.testing import ScriptedProvider

GOAL = "build a todo web app"
NAME = "planner-test"


def task(
    tid: str, category: str, role: str, needs: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "id": tid,
        "category": category,
        "role": role,
        "title": f"{category} for the todo app",
        "prompt": f"Do the {category} work for the todo app.",
        "needs": needs or [],
        **kw,
    }


VALID: dict[str, Any] = {
    "agents": [
        {"role": "researcher", "style": "concise", "count": 1},
        {"role": "architect", "style": "markdown", "count": 1},
        {"role": "coder", "style": "markdown", "count": 2},
        {"role": "tester", "style": "table", "count": 1},
        {"role": "reviewer", "style": "concise", "count": 3},  # no task is a reviewer's
    ],
    "tasks": [
        task("research-users", "research", "researcher"),
        task("design-api", "architecture", "architect", ["research-users"]),
        task("build-backend", "implementation", "coder", ["design-api"]),
        task("build-frontend", "implementation", "coder", ["design-api"]),
        task("test-app", "testing", "tester", ["build-backend", "build-frontend"]),
        task("write-readme", "documentation", "documenter", ["design-api", "test-app"]),
    ],
}


def answer(change: Callable[[dict[str, Any]], Any] | None = None) -> str:
    data = copy.deepcopy(VALID)
    if change is not None:
        change(data)
    return json.dumps(data)


def scripted(*steps: Any) -> tuple[ScriptedProvider, dict[str, Any]]:
    model = ScriptedProvider(list(steps), name=NAME)
    return model, {"provider": NAME, "custom_providers": {NAME: model}}


def last_user_message(request: CompletionRequest) -> str:
    return [m for m in request.messages if m.role == "user"][-1].content


# --------------------------------------------------------------------------- the schemas


def test_schemas_are_valid_and_the_outline_refines_the_plan_schema() -> None:
    Draft202012Validator.check_schema(PLAN_SCHEMA)
    Draft202012Validator.check_schema(OUTLINE_SCHEMA)
    agents = PLAN_SCHEMA["properties"]["agents"]["items"]["properties"]
    tasks = PLAN_SCHEMA["properties"]["tasks"]["items"]["properties"]
    assert agents["role"]["enum"] == list(ROLES) == tasks["role"]["enum"]
    assert tasks["category"]["enum"] == list(PLAN_CATEGORIES)
    assert parse_output("json", answer(), schema=PLAN_SCHEMA) == VALID
    Draft202012Validator(PLAN_SCHEMA).validate(EXAMPLE)
    Draft202012Validator(OUTLINE_SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize("schema", [PLAN_SCHEMA, OUTLINE_SCHEMA], ids=["plan", "outline"])
def test_llama_cpp_turns_the_schemas_into_grammars_it_accepts(schema: dict[str, Any]) -> None:
    """llama-cpp-python silently falls back to "any JSON" when a schema does not convert, so
    convert here, where a failure raises; then llama.cpp's own grammar parser must take it."""
    import llama_cpp
    from llama_cpp import Llama, LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from phalanx.providers.local import smollm2_path

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    for word in (*PLAN_CATEGORIES, "documenter", "ultra_concise"):
        assert f'"\\"{word}\\""' in gbnf
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    llm = Llama(model_path=smollm2_path(), n_ctx=256, verbose=False)
    try:
        sampler = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        assert sampler, "llama.cpp rejected the grammar"
        llama_cpp.llama_sampler_free(sampler)
    finally:
        llm.close()


# --------------------------------------------------------------------------- scripted planner


def test_a_valid_answer_becomes_a_plan_with_five_categories_and_dependencies() -> None:
    model, kw = scripted(answer())
    plan = decompose(GOAL, **kw)

    assert plan.name == "build-a-todo-web-app"
    assert plan.provider == NAME
    assert {t.category for t in plan.tasks} == set(PLAN_CATEGORIES)
    tasks = plan.task_map
    assert tasks["test-app"].needs == ("build-backend", "build-frontend")
    assert tasks["write-readme"].role == "documenter"
    assert plan.topological_order()[0] == "research-users"
    # coder ×2; documenter is used by a task but listed by no agent: it is added;
    # reviewer is listed but no task is a reviewer's: it is left out
    assert [a.role for a in plan.agents] == [
        "researcher", "architect", "coder", "coder", "tester", "documenter",
    ]  # fmt: skip
    assert plan.agents[-1].style == ADDED_AGENT_STYLE
    assert {a.role: a.style for a in plan.agents}["tester"] == "table"

    (request,) = model.requests
    assert request.json_schema == PLAN_SCHEMA  # not a local model: the open schema
    assert request.style == "json"
    assert "planner" in request.system
    for word in (*PLAN_CATEGORIES, *ROLES, ROLES["architect"].description.lower()):
        assert word in request.system
    assert GOAL in last_user_message(request)


def test_the_plan_keeps_given_provider_options_and_may_name_another_provider() -> None:
    _, kw = scripted(answer())
    plan = decompose(
        GOAL, **kw, providers={NAME: {"temperature": 0}}, plan_provider="anthropic:claude-x"
    )
    assert plan.provider == "anthropic:claude-x"
    assert plan.providers == {NAME: {"temperature": 0}}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value

    return change


INVALID = {
    "unknown dependency": (
        answer(_set("tasks.2.needs", ["design-db"])),
        "tasks[2].needs: unknown task 'design-db'",
    ),
    "cycle": (
        answer(_set("tasks.0.needs", ["test-app"])),
        "dependency cycle build-backend -> design-api -> research-users -> test-app",
    ),
    "needs itself": (
        answer(_set("tasks.1.needs", ["design-api"])),
        "tasks[1].needs: task 'design-api' needs itself",
    ),
    "duplicate id": (
        answer(_set("tasks.3.id", "build-backend")),
        "tasks[3].id: duplicate task id 'build-backend'",
    ),
    "bad category": (
        answer(_set("tasks.1.category", "design")),
        "$.tasks[1].category: 'design' is not one of",
    ),
    "bad role": (answer(_set("agents.0.role", "wizard")), "$.agents[0].role: 'wizard'"),
    "too few tasks": (
        answer(lambda d: d.update(tasks=d["tasks"][:2])),
        "$.tasks: [",
    ),
    "empty prompt": (answer(_set("tasks.4.prompt", "  ")), "tasks[4].prompt: is empty"),
    "not json": ("Sure! Here is the plan: research, design, build.", "line 1"),
    "cut off": (
        Completion(text=answer()[:80], stop_reason="max_tokens"),
        "cut off at the token limit",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_answer_is_reasked_with_its_error(case: str) -> None:
    bad, error = INVALID[case]
    model, kw = scripted(bad, answer())
    plan = decompose(GOAL, **kw)

    assert len(plan.tasks) == len(VALID["tasks"])  # the second, valid answer
    first, second = model.requests
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[:2] == first.messages
    assert second.messages[2].content == (bad.text if isinstance(bad, Completion) else bad)
    reask = last_user_message(second)
    assert reask.startswith("Your plan was invalid: ")
    assert error in reask
    assert "Answer again with the whole JSON" in reask
    assert (first.attempt_no, second.attempt_no) == (1, 2)


def test_a_reask_carries_only_the_last_invalid_answer() -> None:
    a = answer(_set("tasks.2.needs", ["nope"]))
    b = answer(_set("tasks.3.id", "build-backend"))
    model, kw = scripted(a, b, answer())
    decompose(GOAL, **kw)
    third = model.requests[2]
    assert len(third.messages) == 4
    assert third.messages[2].content == b
    assert "duplicate task id" in last_user_message(third)


def test_three_invalid_answers_fail_with_one_clear_line() -> None:
    bad = answer(_set("tasks.2.needs", ["design-db"]))
    model, kw = scripted(bad, bad, bad, answer())
    with pytest.raises(PlannerError) as err:
        decompose(GOAL, **kw)
    assert str(err.value) == (
        "the planner's answer was not a valid plan after 3 tries: "
        "tasks[2].needs: unknown task 'design-db'"
    )
    assert "\n" not in str(err.value)
    assert isinstance(err.value, UsageError)  # the CLI prints it as one line, exit 2
    assert len(model.requests) == 3


def test_max_reasks_zero_asks_once() -> None:
    model, kw = scripted("{}", answer())
    with pytest.raises(PlannerError, match=r"after 1 try: \$: 'agents' is a required"):
        decompose(GOAL, **kw, max_reasks=0)
    assert len(model.requests) == 1


def test_a_model_failure_is_one_clear_line() -> None:
    def fail(_: CompletionRequest) -> Completion:
        raise ProviderError("HTTP 401: invalid x-api-key", error_class=ErrorClass.AUTH)

    _, kw = scripted(fail)
    with pytest.raises(PlannerError) as err:
        decompose(GOAL, **kw)
    assert str(err.value) == f"the planner model {NAME!r} failed: HTTP 401: invalid x-api-key"


@pytest.mark.parametrize("goal", ["", "   \n "])
def test_an_empty_goal_is_a_usage_error(goal: str) -> None:
    model, kw = scripted(answer())
    with pytest.raises(UsageError, match="the goal is empty"):
        decompose(goal, **kw)
    assert model.requests == []


def test_an_unknown_planner_provider_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown provider 'nope'"):
        decompose(GOAL, provider="nope")


def test_outline_can_be_asked_of_any_model() -> None:
    model, kw = scripted(json.dumps(EXAMPLE))
    plan = decompose(GOAL, **kw, outline=True)
    assert model.requests[0].json_schema == OUTLINE_SCHEMA
    assert "exactly 5 tasks" in model.requests[0].system
    assert [t.id for t in plan.tasks] == ["research", "design", "implement", "test", "document"]


# --------------------------------------------------------------------------- the plan file


def test_plan_yaml_has_a_header_and_loads_back(tmp_path: Path) -> None:
    from phalanx.plan.planner import plan_data

    data = plan_data(VALID, name="todo", provider="sim")
    text = plan_yaml(
        data, goal="build a\n todo web app", provider="local:smollm2", now=dt.datetime(2026, 1, 2)
    )
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0] == (
        "# generated by `phalanx plan` on 2026-01-02 00:00 with the planner local:smollm2,"
    )
    assert "#   build a todo web app" in header
    assert any("edit freely" in line for line in header)
    assert "needs: [build-backend, build-frontend]" in text
    assert yaml.safe_load(text) == data
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    assert phalanx.load_plan(str(path)).tasks == phalanx.Plan.from_dict(data).tasks


def test_write_plan_writes_a_plan_that_runs_on_sim(tmp_path: Path, state: Path) -> None:
    _, kw = scripted(answer(_set("tasks.0.needs", ["nope"])), answer())
    path = write_plan(GOAL, tmp_path / "plan.yaml", **kw)

    text = path.read_text()
    assert text.startswith("# generated by `phalanx plan`")
    assert f"with the planner {NAME}" in text
    plan = phalanx.load_plan(str(path))
    assert plan.source == str(path)
    assert len(plan.tasks) == 6

    result = phalanx.run_sync(path, provider="sim")
    assert result.status == "succeeded", result.tasks
    assert {t.state for t in result.tasks.values()} == {"succeeded"}
    assert set(result.tasks) == {t["id"] for t in VALID["tasks"]}


def test_plan_text_is_the_file_write_plan_writes(tmp_path: Path) -> None:
    _, kw = scripted(answer(), answer())
    text = plan_text(GOAL, **kw)
    path = write_plan(GOAL, tmp_path / "plan.yaml", **kw)
    assert path.read_text().splitlines()[1:] == text.splitlines()[1:]  # all but the date


def test_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    _, kw = scripted(answer())
    with pytest.raises(UsageError, match=r"cannot write the plan to .*missing/plan.yaml: No such"):
        write_plan(GOAL, tmp_path / "missing" / "plan.yaml", **kw)


def test_local_planner_options_default_and_can_be_overridden() -> None:
    from phalanx.plan.planner import _planner

    model, owned = _planner("local:smollm2", None, None, 7)
    assert owned
    opts = model.opts  # type: ignore[attr-defined]
    assert (opts.pool_size, opts.n_ctx, opts.seed) == (1, 4096, 7)
    model, _ = _planner("local:smollm2", {"local": {"n_ctx": 8192, "seed": 3}}, None, 7)
    assert (model.opts.n_ctx, model.opts.seed) == (8192, 3)  # type: ignore[attr-defined]
    with pytest.raises(PlannerError, match=r"^providers.local.bogus: unknown key$"):
        _planner("local:smollm2", {"local": {"bogus": 1}}, None, 0)


def test_write_plan_writes_nothing_when_the_planner_fails(tmp_path: Path) -> None:
    _, kw = scripted("nope", "nope", "nope")
    with pytest.raises(PlannerError):
        write_plan(GOAL, tmp_path / "plan.yaml", **kw)
    assert not (tmp_path / "plan.yaml").exists()


# --------------------------------------------------------------------------- local:smollm2


@pytest.mark.timeout(180)
def test_smollm2_plans_a_valid_outline_with_constrained_decoding(tmp_path: Path) -> None:
    path = write_plan(GOAL, tmp_path / "plan.yaml", provider="local:smollm2")

    plan = phalanx.load_plan(str(path))  # validates
    assert [t.category for t in plan.tasks] == list(PLAN_CATEGORIES)
    assert all(t.needs for t in plan.tasks[1:])
    assert plan.provider == "local:smollm2"

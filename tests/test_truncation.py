"""Answers cut at max_tokens: continued (default), retried with more room, or failed.

A scripted model truncates; the run must join the parts (or retry, or fail), journal one
``answer_continued`` event per extra call, and charge every real call once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import phalanx
from conftest import events
from phalanx import AgentSpec, Plan, Task
from phalanx.cost import Usage
from phalanx.exceptions import PlanError
from phalanx.plan import RetryConfig
from phalanx.plan.file import plan_to_dict
from phalanx.providers.base import Completion, ToolCall
from phalanx.providers.openai_api import OpenAIProvider
from phalanx.runtime.truncation import CONTINUE_PROMPT
from phalanx.testing import ScriptedProvider

U = Usage(input_tokens=100, output_tokens=20)


def cut(text: str) -> Completion:
    return Completion(text=text, stop_reason="max_tokens", usage=U)


def whole(text: str) -> Completion:
    return Completion(text=text, usage=U)


def plan(style: str = "text", **retry: Any) -> Plan:
    return Plan.build(
        agents=[AgentSpec(role="writer", provider="scripted", style=style)],
        tasks=[Task(id="t", prompt="Write it.", max_attempts=1)],
        retry=RetryConfig(**retry),
    )


def test_continue_is_the_default_and_joins_the_parts(state: Path) -> None:
    script = ScriptedProvider([cut("The reset token is single-"), whole("use and expires.")])
    result = phalanx.run_sync(plan(), custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert result.tasks["t"].output == "The reset token is single-use and expires."
    follow = script.requests[1]
    assert [m.role for m in follow.messages[-2:]] == ["assistant", "user"]
    assert follow.messages[-2].content == "The reset token is single-"
    assert follow.messages[-1].content == CONTINUE_PROMPT
    assert follow.messages[:-2] == script.requests[0].messages  # the same conversation
    assert result.usage == U + U  # both calls charged, once each
    noted = events(state, result.run_id, "answer_continued")
    assert [(e["mode"], e["n"], e["chars"], e["turn"]) for e in noted] == [
        ("continue", 1, len("The reset token is single-"), 1)
    ]


def test_continuations_stop_at_the_cap_and_the_attempt_fails_truncated(state: Path) -> None:
    script = ScriptedProvider([cut("a"), cut("b"), cut("c")])
    result = phalanx.run_sync(plan(max_continuations=2), custom_providers={"scripted": script})
    task = result.tasks["t"]
    assert (task.state, task.error_class, task.output) == ("failed", "truncated", "")
    assert len(script.requests) == 3  # the call and 2 continuations
    assert [e["n"] for e in events(state, result.run_id, "answer_continued")] == [1, 2]
    assert result.usage == U + U + U


def test_a_structured_answer_is_continued_as_text_then_rendered(state: Path) -> None:
    script = ScriptedProvider([cut('{"endpoint": "POST /re'), whole('set", "status": 202}')])
    result = phalanx.run_sync(plan("yaml"), custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    out = result.tasks["t"].output
    assert yaml.safe_load(out) == {"endpoint": "POST /reset", "status": 202}
    assert not out.startswith("{")  # the joined JSON rendered as the YAML style
    first, follow = script.requests
    assert (first.style, first.answer_format) == ("yaml", "yaml")
    # a schema or a grammar would restart the answer: the continuation is plain text
    assert (follow.style, follow.answer_format, follow.json_schema, follow.tools) == (
        "text",
        "",
        None,
        (),
    )


def test_retry_sends_the_call_again_with_twice_the_room(state: Path) -> None:
    script = ScriptedProvider([cut("The reset"), whole("The reset token is single-use.")])
    result = phalanx.run_sync(plan(truncation="retry"), custom_providers={"scripted": script})
    assert result.tasks["t"].output == "The reset token is single-use."
    assert [r.max_tokens_factor for r in script.requests] == [1, 2]
    assert script.requests[1].messages == script.requests[0].messages
    noted = events(state, result.run_id, "answer_continued")
    assert [(e["mode"], e["factor"]) for e in noted] == [("retry", 2)]
    assert result.usage == U + U


def test_retry_gives_up_after_one_more_call(state: Path) -> None:
    script = ScriptedProvider([cut("a"), cut("ab")])
    result = phalanx.run_sync(plan(truncation="retry"), custom_providers={"scripted": script})
    assert result.tasks["t"].error_class == "truncated" and len(script.requests) == 2


def test_fail_keeps_the_old_behaviour(state: Path) -> None:
    script = ScriptedProvider([cut("a")])
    result = phalanx.run_sync(plan(truncation="fail"), custom_providers={"scripted": script})
    assert result.tasks["t"].error_class == "truncated" and len(script.requests) == 1
    assert events(state, result.run_id, "answer_continued") == []


def test_a_cut_tool_call_is_retried_with_room_never_continued_as_text(
    state: Path, tmp_path: Path
) -> None:
    call = ToolCall(id="c1", name="write_file", arguments={"path": "x.txt", "content": "hi"})
    cut_call = Completion(text="", stop_reason="max_tokens", usage=U, tool_calls=(call,))
    done = Completion(text="", stop_reason="tool_use", usage=U, tool_calls=(call,))
    script = ScriptedProvider([cut_call, done, whole("Wrote x.txt.")])
    p = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("write_file",))],
        tasks=[Task(id="t", prompt="write", max_attempts=1)],
    )
    result = phalanx.run_sync(p, workspace=tmp_path, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert (tmp_path / "x.txt").read_text() == "hi"  # once, from the whole call
    assert [r.max_tokens_factor for r in script.requests] == [1, 2, 1]
    assert [e["mode"] for e in events(state, result.run_id, "answer_continued")] == ["retry"]
    assert len(events(state, result.run_id, "tool_called")) == 1


def test_the_budget_stops_continuations(state: Path) -> None:
    big = Usage(input_tokens=600, output_tokens=100)
    script = ScriptedProvider([Completion(text="a", stop_reason="max_tokens", usage=big)] * 4)
    p = plan()
    p = Plan.from_dict({**plan_to_dict(p), "limits": {"max_tokens": 1000}})
    result = phalanx.run_sync(p, custom_providers={"scripted": script})
    assert result.tasks["t"].state == "failed"
    assert len(script.requests) == 2  # the second call passed the cap: no third


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({"truncation": "more"}, "retry.truncation"),
        ({"max_continuations": 0}, "retry.max_continuations"),
    ],
)
def test_bad_truncation_settings_are_one_plan_error(retry: dict[str, Any], field: str) -> None:
    data = plan_to_dict(plan())
    with pytest.raises(PlanError) as caught:
        Plan.from_dict({**data, "retry": retry})
    assert field in str(caught.value) and "\n" not in str(caught.value)


def test_the_setting_round_trips_through_a_plan_file() -> None:
    data = {**plan_to_dict(plan()), "retry": {"truncation": "retry", "max_continuations": 5}}
    p = Plan.from_dict(data)
    assert (p.retry.truncation, p.retry.max_continuations) == ("retry", 5)
    again = Plan.from_dict(plan_to_dict(p))
    assert (again.retry.truncation, again.retry.max_continuations) == ("retry", 5)
    assert Plan.from_dict(plan_to_dict(plan())).retry.truncation == "continue"


# --------------------------------------------------------------------------- over HTTP


def _whole(text: str, finish: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58},
    }


def _provider(respond: Any) -> OpenAIProvider:
    client = openai.AsyncOpenAI(
        api_key="none",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(respond)),
    )
    return OpenAIProvider(
        "m", {"base_url": "http://127.0.0.1:9/v1"}, compatible=True, client=client, env={}
    )


def test_an_openai_compatible_answer_cut_by_length_is_continued(state: Path) -> None:
    """finish_reason ``length`` from a real SDK response: continued, usage from both calls."""
    answers = iter([("The token is single-", "length"), ("use.", "stop")])
    sent: list[dict[str, Any]] = []

    def respond(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=_whole(*next(answers)))

    p = Plan.build(
        agents=[AgentSpec(provider="openai-compatible:m", style="concise")],
        tasks=[Task(id="t", prompt="Describe the token.", max_attempts=1)],
    )
    result = phalanx.run_sync(p, custom_providers={"openai-compatible:m": _provider(respond)})
    assert result.tasks["t"].output == "The token is single-use."
    assert result.usage.input_tokens == 100 and result.usage.output_tokens == 16
    assert sent[1]["messages"][-2] == {"role": "assistant", "content": "The token is single-"}
    assert len(events(state, result.run_id, "answer_continued")) == 1


def test_an_answer_already_over_its_word_limit_is_reasked_not_continued(state: Path) -> None:
    rambling = cut("word " * 200)  # concise allows 150: more text cannot mend it
    script = ScriptedProvider([rambling, whole("Single-use, expiring tokens.")])
    result = phalanx.run_sync(plan("concise"), custom_providers={"scripted": script})
    assert result.tasks["t"].output == "Single-use, expiring tokens."
    assert events(state, result.run_id, "answer_continued") == []
    rejected = events(state, result.run_id, "output_rejected")
    assert len(rejected) == 1 and "limit is 150" in rejected[0]["error"]


def test_a_server_window_refusal_is_sent_again_with_the_room_left() -> None:
    """A compatible server with a small context window refuses prompt + max_tokens, naming
    both: the call goes again with the room that is left (what a continuation needs)."""
    sent: list[int] = []

    def respond(request: httpx2.Request) -> httpx2.Response:
        limit = json.loads(request.content)["max_tokens"]
        sent.append(limit)
        if limit + 1500 > 2048:
            message = (
                "This model's maximum context length is 2048 tokens. However, you requested "
                f"{1500 + limit} tokens (1500 in the messages, {limit} in the completion). "
                "Please reduce the length of the messages or completion."
            )
            err = {"message": message, "type": "invalid_request_error", "param": "messages",
                   "code": "context_length_exceeded"}  # fmt: skip
            return httpx2.Response(400, json={"error": err})
        return httpx2.Response(200, json=_whole("fits", "stop"))

    provider = _provider(respond)
    p = Plan.build(
        agents=[AgentSpec(provider="openai-compatible:m", style="concise")],
        tasks=[Task(id="t", prompt="Say it.", max_attempts=1)],
    )
    result = phalanx.run_sync(p, custom_providers={"openai-compatible:m": provider})
    assert result.tasks["t"].output == "fits", result.summary()
    assert sent == [1024, 2048 - 1500 - 1]

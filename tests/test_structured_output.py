"""Structured output on every HTTP provider, and tools through an OpenAI-compatible server.

The real SDKs talk to an ``httpx2.MockTransport`` (nothing leaves the process). For each
provider and style family (json with a schema, a non-object schema, yaml, table, prose) the
request must carry the schema in the provider's own form, and the JSON that comes back must
come out as the style's text, parsed by the style's parser.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import phalanx
from conftest import events
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.styles import parse_output
from phalanx.exceptions import ProviderError, UsageError
from phalanx.providers.anthropic_api import ANSWER_TOOL, AnthropicProvider
from phalanx.providers.base import Completion, CompletionRequest, Message, ToolDef
from phalanx.providers.openai_api import OpenAIProvider
from phalanx.providers.structured import TABLE_SCHEMA, markdown_table, strict_ok
from test_providers_http import (
    CANARY,
    LOCAL_URL,
    OPENAI_CANARY,
    Server,
    a_event,
    a_events,
    error_response,
    o_chunks,
    run,
    streamed,
)

SCHEMA = {
    "type": "object",
    "properties": {"endpoint": {"type": "string"}, "status": {"type": "integer"}},
    "required": ["endpoint", "status"],
    "additionalProperties": False,
}
LIST_SCHEMA = {"type": "array", "items": {"type": "string"}}
WRAPPED = {
    "type": "object",
    "properties": {"value": LIST_SCHEMA},
    "required": ["value"],
    "additionalProperties": False,
}
DESIGN = {"endpoint": "POST /reset", "status": 202}
TABLE = {"columns": ["step", "expected"], "rows": [["request", "202"], ["use token", "ok"]]}
MESSAGES = (Message(role="system", content="Be brief."), Message(role="user", content="Go."))

# family -> (style, schema, answer_format, the JSON the model answers, what the style parses)
FAMILIES: dict[str, tuple[str, Any, str, Any, Any]] = {
    "json-schema": ("json", SCHEMA, "json", DESIGN, DESIGN),
    "json-list": ("json", LIST_SCHEMA, "json", {"value": ["a", "b"]}, ["a", "b"]),
    "yaml": ("yaml", None, "yaml", DESIGN, DESIGN),
    "table": (
        "table",
        None,
        "table",
        TABLE,
        [{"step": "request", "expected": "202"}, {"step": "use token", "expected": "ok"}],
    ),
}
# what the provider is held to, per family
SENT_SCHEMA = {"json-schema": SCHEMA, "json-list": WRAPPED, "yaml": None, "table": TABLE_SCHEMA}


def request(family: str, **extra: Any) -> CompletionRequest:
    style, schema, form, _, _ = FAMILIES[family]
    return CompletionRequest(
        model="m", messages=MESSAGES, style=style, json_schema=schema, answer_format=form, **extra
    )


def check_parsed(family: str, text: str) -> None:
    style, schema, _, _, parsed = FAMILIES[family]
    assert parse_output(style, text, schema=schema) == parsed, text


# --------------------------------------------------------------------------- openai


def o_whole(
    content: str | None = None,
    *,
    calls: list[tuple[str, str, dict[str, Any]]] = (),  # type: ignore[assignment]
    finish: str = "stop",
) -> httpx2.Response:
    """A whole (unstreamed) chat completion, as a compatible server answers by default."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for cid, n, a in calls
        ]
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
    }
    return httpx2.Response(200, json=body)


def o_provider(
    server: Server, *, compatible: bool = True, stream: bool | None = None, **options: Any
) -> OpenAIProvider:
    client = openai.AsyncOpenAI(
        api_key=OPENAI_CANARY, base_url=LOCAL_URL, max_retries=0, http_client=server.http_client()
    )
    opts: dict[str, Any] = {"base_url": LOCAL_URL, **options} if compatible else dict(options)
    if stream is not None:
        opts["stream"] = stream
    return OpenAIProvider("m", opts, compatible=compatible, client=client, env={})


def o_run(
    provider: OpenAIProvider | AnthropicProvider, *requests: CompletionRequest
) -> list[Completion]:
    """Each request's completion, in order; the provider closed after."""

    async def go() -> list[Completion]:
        try:
            return [await provider.complete(r) for r in requests]
        finally:
            await provider.aclose()

    out: list[Completion] = run(go())
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("compatible", [False, True], ids=["openai", "compatible"])
def test_openai_structured_styles_send_the_schema_and_parse(family: str, compatible: bool) -> None:
    answer = json.dumps(FAMILIES[family][3])
    server = Server(lambda r: streamed(*o_chunks([answer[:7], answer[7:]])))
    (c,) = o_run(o_provider(server, compatible=compatible, stream=True), request(family))
    schema = SENT_SCHEMA[family]
    expected = (
        {"type": "json_object"}
        if schema is None
        else {
            "type": "json_schema",
            # strict where OpenAI's strict mode takes the schema (the table's cell bounds
            # it does not: minLength/maxLength)
            "json_schema": {"name": "output", "schema": schema, "strict": family != "table"},
        }
    )
    assert server.body()["response_format"] == expected
    assert c.stop_reason == "end"
    check_parsed(family, c.text)
    if family in ("yaml", "table"):  # rendered into the style, not left as JSON
        assert not c.text.lstrip().startswith("{"), c.text


def test_openai_strict_only_for_schemas_strict_mode_accepts() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    server = Server(lambda r: streamed(*o_chunks(['{"a": "x"}'])))
    req = CompletionRequest(model="m", messages=MESSAGES, style="json", json_schema=loose)
    o_run(o_provider(server, compatible=False), req)
    assert server.body()["response_format"]["json_schema"]["strict"] is False
    assert strict_ok(SCHEMA) and strict_ok(WRAPPED) and not strict_ok(loose)
    assert not strict_ok(TABLE_SCHEMA)  # minLength/maxLength are not strict mode's
    assert strict_ok(
        {
            **TABLE_SCHEMA,
            "properties": {"columns": {"type": "array", "minItems": 2}, "rows": {"type": "array"}},
        }
    )


def test_openai_prose_styles_get_no_format() -> None:
    server = Server(lambda r: streamed(*o_chunks()))
    req = CompletionRequest(model="m", messages=MESSAGES, style="concise")
    (c,) = o_run(o_provider(server, stream=True), req)
    assert "response_format" not in server.body()
    assert c.text == "Hello, world"


def _llama_cpp_python_server(request: httpx2.Request, status: int = 500) -> httpx2.Response:
    """Answers like llama-cpp-python's server: its response_format knows only json_object
    (with an optional schema); OpenAI's json_schema form fails its request validation, which
    that server answers with a 500 naming the field (a plain FastAPI server: 422)."""
    fmt = json.loads(request.content).get("response_format") or {}
    if fmt.get("type") == "json_schema":
        problem = {
            "type": "literal_error",
            "loc": ["body", "response_format", "type"],
            "msg": "Input should be 'text' or 'json_object'",
        }
        if status == 422:
            return error_response(422, {"detail": [problem]})
        message = f"1 validation error: {problem}"
        return error_response(500, {"error": {"message": message, "type": "internal_server_error"}})
    return o_whole(json.dumps(TABLE))


@pytest.mark.parametrize("status", [500, 422])
def test_compatible_falls_back_to_the_servers_schema_form_once(status: int) -> None:
    server = Server(lambda r: _llama_cpp_python_server(r, status))
    provider = o_provider(server)
    first, second = o_run(provider, request("table"), request("table"))
    forms = [json.loads(r.content)["response_format"] for r in server.requests]
    assert [f["type"] for f in forms] == ["json_schema", "json_object", "json_object"]
    assert forms[1] == {"type": "json_object", "schema": TABLE_SCHEMA}
    assert provider.schema_form == "json_object"  # remembered: one refused request in all
    check_parsed("table", first.text)
    assert second.text == first.text == markdown_table(TABLE)


def test_compatible_response_format_option() -> None:
    server = Server(_llama_cpp_python_server)
    with pytest.raises(ProviderError) as caught:
        o_run(o_provider(server, response_format="json_schema"), request("table"))
    assert "response_format" in str(caught.value) and server.calls == 1  # no fallback

    server = Server(_llama_cpp_python_server)
    o_run(o_provider(server, response_format="json_object"), request("yaml"))
    assert server.body()["response_format"] == {"type": "json_object"}

    server = Server(lambda r: o_whole("a: b"))
    (c,) = o_run(o_provider(server, response_format="none"), request("yaml"))
    assert "response_format" not in server.body() and c.text == "a: b"

    with pytest.raises(UsageError, match="response_format: one of auto, json_schema"):
        o_provider(server, response_format="grammar")


def test_an_answer_that_is_not_json_is_left_for_the_style_to_judge() -> None:
    server = Server(lambda r: o_whole("| a |\n|---|\n| 1 |"))  # a server that ignored it
    (c,) = o_run(o_provider(server), request("table"))
    assert c.text == "| a |\n|---|\n| 1 |"


def test_markdown_table_rendering_keeps_rows_as_wide_as_the_header() -> None:
    text = markdown_table(
        {"columns": ["a", "a", "b|c"], "rows": [["1"], ["1", "2", "3", "4"], {"a": "x"}, "y"]}
    )
    assert text is not None
    rows = parse_output("table", text)
    assert list(rows[0]) == ["a", "a (2)", "b|c"]
    assert [len(r) for r in rows] == [3, 3, 3, 3]
    assert markdown_table({"rows": []}) is None and markdown_table("x") is None


# --------------------------------------------------------------------------- anthropic


def a_tool_events(
    calls: list[tuple[str, str, Any]], *, text: str = "", stop: str = "tool_use"
) -> list[bytes]:
    """A streamed answer of tool_use blocks (after an optional text block); each call's
    input JSON arrives in two pieces."""
    events = a_events([text] if text else [], stop=stop)
    head, tail = events[:3], events[-2:]
    body = events[3:-3] if text else []
    blocks = [a_event({"type": "content_block_stop", "index": 0})] if text else []
    for i, (cid, name, value) in enumerate(calls, start=1 if text else 0):
        raw = value if isinstance(value, str) else json.dumps(value)
        start = {"type": "tool_use", "id": cid, "name": name, "input": {}}
        blocks += [
            a_event({"type": "content_block_start", "index": i, "content_block": start}),
            *(
                a_event(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    }
                )
                for part in (raw[:5], raw[5:])
            ),
            a_event({"type": "content_block_stop", "index": i}),
        ]
    if not text:
        head = head[:1] + head[2:]  # no empty text block
    return [*head, *body, *blocks, *tail]


def a_provider(server: Server, **options: Any) -> AnthropicProvider:
    client = anthropic.AsyncAnthropic(
        api_key=CANARY, max_retries=0, http_client=server.http_client()
    )
    return AnthropicProvider("claude-test", options, client=client, env={})


a_run = o_run  # the same for the Anthropic provider


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_anthropic_structured_styles_force_the_answer_tool(family: str) -> None:
    value = FAMILIES[family][3]
    server = Server(lambda r: streamed(*a_tool_events([("tu_1", ANSWER_TOOL, value)])))
    (c,) = a_run(a_provider(server), request(family))
    sent = server.body()
    assert sent["tools"] == [
        {
            "name": ANSWER_TOOL,
            "description": "Give your final answer: its input is the whole answer.",
            "input_schema": SENT_SCHEMA[family] or {"type": "object"},
        }
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    assert (c.stop_reason, c.tool_calls) == ("end", ())
    check_parsed(family, c.text)


def test_anthropic_structured_with_tools_any_tool_then_the_answer() -> None:
    answers = iter(
        [
            a_tool_events([("tu_1", "read_file", {"path": "a.py"})]),
            a_tool_events([("tu_2", ANSWER_TOOL, DESIGN)], text="Done."),
        ]
    )
    server = Server(lambda r: streamed(*next(answers)))
    tool = ToolDef(name="read_file", description="read", parameters={"type": "object"})
    first, second = a_run(
        a_provider(server), request("json-schema", tools=(tool,)), request("json-schema")
    )
    sent = server.body(0)
    assert [t["name"] for t in sent["tools"]] == ["read_file", ANSWER_TOOL]
    assert sent["tool_choice"] == {"type": "any"}
    assert first.stop_reason == "tool_use"
    assert [t.name for t in first.tool_calls] == ["read_file"]
    assert second.stop_reason == "end" and json.loads(second.text) == DESIGN


def test_anthropic_an_answer_with_a_real_tool_call_runs_the_tool_first() -> None:
    both = [("tu_1", "read_file", {"path": "a.py"}), ("tu_2", ANSWER_TOOL, DESIGN)]
    server = Server(lambda r: streamed(*a_tool_events(both)))
    tool = ToolDef(name="read_file", description="read", parameters={"type": "object"})
    (c,) = a_run(a_provider(server), request("yaml", tools=(tool,)))
    assert c.stop_reason == "tool_use" and [t.name for t in c.tool_calls] == ["read_file"]


def test_anthropic_answer_cut_inside_the_tool_is_truncated_with_its_partial_json() -> None:
    raw = json.dumps(DESIGN)[:12]
    server = Server(
        lambda r: streamed(*a_tool_events([("tu_1", ANSWER_TOOL, raw)], stop="max_tokens"))
    )
    (c,) = a_run(a_provider(server), request("yaml"))
    assert (c.stop_reason, c.text, c.tool_calls) == ("max_tokens", raw, ())


def test_anthropic_native_structured_output() -> None:
    server = Server(lambda r: streamed(*a_events([json.dumps(DESIGN)])))
    p = a_provider(server, structured_output="native")
    c1, c2 = a_run(
        p,
        request("yaml"),
        CompletionRequest(model="m", messages=MESSAGES, style="yaml", json_schema=SCHEMA),
    )
    first, second = server.body(0), server.body(1)
    assert "output_config" not in first and "tools" not in first  # no schema: prompted only
    assert second["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert yaml.safe_load(c2.text) == DESIGN and not c2.text.startswith("{")
    assert yaml.safe_load(c1.text) == DESIGN


def test_anthropic_structured_output_none_and_bad_values() -> None:
    server = Server(lambda r: streamed(*a_events(["a: b"])))
    (c,) = a_run(a_provider(server, structured_output="none"), request("yaml"))
    assert "tools" not in server.body() and "tool_choice" not in server.body()
    assert c.text == "a: b"
    with pytest.raises(UsageError, match="structured_output: one of tool, native, none"):
        a_provider(server, structured_output="json")


def test_anthropic_prose_styles_get_no_tool() -> None:
    server = Server(lambda r: streamed(*a_events()))
    req = CompletionRequest(model="m", messages=MESSAGES, style="markdown")
    (c,) = a_run(a_provider(server), req)
    assert "tools" not in server.body() and c.text == "Hello, world"


def test_anthropic_base_url_variable_is_honoured() -> None:
    env = {"ANTHROPIC_API_KEY": "x", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/gw"}
    p = AnthropicProvider("claude-x", {}, env=env)
    assert str(p._client.base_url).startswith("http://127.0.0.1:9/gw")
    planned = AnthropicProvider("claude-x", {"base_url": "http://127.0.0.1:8"}, env=env)
    assert str(planned._client.base_url).startswith("http://127.0.0.1:8")  # the plan wins


# --------------------------------------------------------------------------- tools


def _tool_server(final: str) -> Server:
    """A compatible server that first calls read_file, then answers ``final`` once it has
    the tool's result in the conversation."""

    def respond(request: httpx2.Request) -> httpx2.Response:
        messages = json.loads(request.content)["messages"]
        if any(m["role"] == "tool" for m in messages):
            return o_whole(final)
        return o_whole(
            None, calls=[("call_1", "read_file", {"path": "notes.txt"})], finish="tool_calls"
        )

    return Server(respond)


def _tool_plan(style: str) -> Plan:
    return Plan.build(
        agents=[
            AgentSpec(
                role="reader", provider="openai-compatible:m", style=style, tools=("read_file",)
            )
        ],
        tasks=[Task(id="read", prompt="Read notes.txt and report the word in it.", max_attempts=1)],
    )


def test_compatible_passes_tools_and_a_tool_call_runs_the_tool(state: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("the word is heliotrope\n")
    server = _tool_server("The word is heliotrope.")
    provider = o_provider(server)
    result = phalanx.run_sync(
        _tool_plan("concise"), workspace=ws, custom_providers={"openai-compatible:m": provider}
    )
    assert result.status == "succeeded", result.summary()
    assert result.tasks["read"].output == "The word is heliotrope."
    first, second = server.body(0), server.body(1)
    assert [t["function"]["name"] for t in first["tools"]] == ["read_file"]
    assert first["tools"][0]["function"]["parameters"]["type"] == "object"
    tool_turn = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_turn and tool_turn[0]["tool_call_id"] == "call_1"
    assert "heliotrope" in tool_turn[0]["content"]
    called = events(state, result.run_id, "tool_called")
    assert [(e["tool"], e["ok"]) for e in called] == [("read_file", True)]


def test_compatible_tools_with_a_structured_style_keep_the_format_for_the_answer(
    state: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("the word is heliotrope\n")
    server = _tool_server(json.dumps({"word": "heliotrope", "found_in": "notes.txt"}))
    result = phalanx.run_sync(
        _tool_plan("yaml"),
        workspace=ws,
        custom_providers={"openai-compatible:m": o_provider(server)},
    )
    assert result.status == "succeeded", result.summary()
    assert yaml.safe_load(result.tasks["read"].output) == {
        "word": "heliotrope",
        "found_in": "notes.txt",
    }
    assert not result.tasks["read"].output.startswith("{")  # rendered as YAML
    for i in (0, 1):  # tools and the format on every turn: the final answer keeps to it
        assert server.body(i)["response_format"] == {"type": "json_object"}
        assert server.body(i)["tools"]
    assert len(events(state, result.run_id, "tool_called")) == 1


def test_raw_line_breaks_inside_strings_are_read_and_written_as_valid_json() -> None:
    """A llama.cpp grammar lets a model put a raw line break inside a JSON string (not JSON
    to a strict reader): the table and YAML are still rendered, the JSON made valid."""
    raw = '{"columns": ["step", "expected\nresult"], "rows": [["reset", "a\nmail"]]}'
    server = Server(lambda r: o_whole(raw))
    table, as_json = o_run(o_provider(server), request("table"), request("json-schema"))
    assert parse_output("table", table.text) == [{"step": "reset", "expected result": "a mail"}]
    assert json.loads(as_json.text)["rows"] == [["reset", "a\nmail"]]

"""The Anthropic and OpenAI providers, driven through the real SDKs over an httpx2 mock.

Nothing here leaves the process: every request is answered by ``httpx2.MockTransport``.
Each test checks what a real server would make the provider do: the text it assembles, the
usage it reports, and for every failure the ErrorClass, retryability, Retry-After, that the
SDK sent exactly one request (its retries are off), and that the key never leaks.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from phalanx.exceptions import ErrorClass, ProviderError, UsageError
from phalanx.providers.anthropic_api import AnthropicProvider
from phalanx.providers.base import Completion, CompletionRequest, Message, ToolCall, ToolDef
from phalanx.providers.openai_api import OpenAIProvider
from phalanx.runtime.retry import decide_retry

# fake keys, built so that no key-shaped literal sits in the source
CANARY = "sk-ant-" + "CANARY1234567890"
OPENAI_CANARY = "sk-proj-" + "CANARY1234567890"
LOCAL_URL = "http://127.0.0.1:9/v1"

Handler = Callable[[httpx2.Request], httpx2.Response]

REQUEST = CompletionRequest(
    model="m",
    messages=(
        Message(role="system", content="You are terse."),
        Message(role="user", content="Say hello."),
    ),
    max_tokens=321,
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- mock server


class Server:
    """A handler that answers every request with ``respond`` and records what came in."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def body(self, i: int = -1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[i].content)
        return data

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))


def streamed(*chunks: bytes, fail: Exception | None = None) -> httpx2.Response:
    """A 200 event stream sent in several pieces; ``fail`` is raised after the last one."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk
        if fail is not None:
            raise fail

    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def error_response(
    status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None
) -> httpx2.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx2.Response(
        status,
        headers={"content-type": "application/json", **(headers or {})},
        content=content.encode(),
    )


# --------------------------------------------------------------------------- anthropic wire


def a_event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def a_events(
    texts: Iterable[str] = ("Hel", "lo, ", "world"),
    *,
    stop: str = "end_turn",
    usage_start: dict[str, Any] | None = None,
    output_tokens: int = 12,
) -> list[bytes]:
    usage = usage_start or {
        "input_tokens": 25,
        "output_tokens": 1,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 40,
    }
    events = [
        a_event(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-test",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            }
        ),
        a_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        a_event({"type": "ping"}),
    ]
    for t in texts:
        events.append(
            a_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                }
            )
        )
    events += [
        a_event({"type": "content_block_stop", "index": 0}),
        a_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            }
        ),
        a_event({"type": "message_stop"}),
    ]
    return events


def a_error(etype: str, message: str, **details: str) -> dict[str, Any]:
    err: dict[str, Any] = {"type": etype, "message": message}
    if details:
        err["details"] = details
    return {"type": "error", "error": err}


def anthropic_provider(server: Server, key: str = CANARY) -> AnthropicProvider:
    client = anthropic.AsyncAnthropic(api_key=key, max_retries=0, http_client=server.http_client())
    return AnthropicProvider("claude-test", {}, client=client, env={"ANTHROPIC_API_KEY": key})


def a_complete(server: Server, request: CompletionRequest = REQUEST) -> Completion:
    async def go() -> Completion:
        provider = anthropic_provider(server)
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    result: Completion = run(go())
    return result


# --------------------------------------------------------------------------- openai wire


def o_chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
O_USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 12,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 10},
}


def o_chunks(
    texts: Iterable[str] = ("Hel", "lo, ", "world"), *, finish: str = "stop"
) -> list[bytes]:
    out = [o_chunk({"role": "assistant", "content": ""})]
    out += [o_chunk({"content": t}) for t in texts]
    out += [o_chunk({}, finish), o_chunk(usage=O_USAGE), DONE]
    return out


def openai_provider(
    server: Server, *, compatible: bool = False, key: str = OPENAI_CANARY, stream: bool = True
) -> OpenAIProvider:
    client = openai.AsyncOpenAI(
        api_key=key, base_url=LOCAL_URL, max_retries=0, http_client=server.http_client()
    )
    options: dict[str, Any] = {"base_url": LOCAL_URL, "stream": stream} if compatible else {}
    env_var = "OPENAI_COMPATIBLE_API_KEY" if compatible else "OPENAI_API_KEY"
    return OpenAIProvider(
        "gpt-test", options, compatible=compatible, client=client, env={env_var: key}
    )


def o_complete(
    server: Server, request: CompletionRequest = REQUEST, *, compatible: bool = False
) -> Completion:
    async def go() -> Completion:
        provider = openai_provider(server, compatible=compatible)
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    result: Completion = run(go())
    return result


# --------------------------------------------------------------------------- error checks


def failure(call: Callable[[], Any], server: Server) -> ProviderError:
    """Run ``call``, which must raise ProviderError after exactly one HTTP request."""
    with pytest.raises(ProviderError) as info:
        call()
    err = info.value
    assert server.calls == 1, f"the SDK retried: {server.calls} requests"
    shown = str(err) + "".join(traceback.format_exception(err))
    assert CANARY not in shown and OPENAI_CANARY not in shown
    assert "\n" not in str(err)
    return err


def check_class(err: ProviderError, cls: ErrorClass, *, retryable: bool) -> None:
    assert err.error_class is cls, str(err)
    assert err.retryable is retryable
    decision = decide_retry(
        err.error_class, attempt_no=1, max_attempts=3, retry_after=err.retry_after
    )
    assert decision.retry is retryable


CONTEXT_BODIES = {
    "openai": {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "anthropic": a_error(
        "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
    ),
    "llama.cpp": {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }
    },
}


# =========================================================================== anthropic


def test_anthropic_streams_text_usage_and_request_shape() -> None:
    server = Server(lambda r: streamed(*a_events()))
    c = a_complete(server)
    assert c.text == "Hello, world"
    assert c.stop_reason == "end"
    assert c.model == "anthropic:claude-test"
    assert c.simulated is False
    u = c.usage
    assert (u.input_tokens, u.output_tokens) == (25, 12)
    assert (u.cache_read_tokens, u.cache_write_tokens) == (100, 40)
    assert server.calls == 1
    sent = server.body()
    assert sent["model"] == "claude-test"
    assert sent["stream"] is True
    assert sent["max_tokens"] == 321
    assert sent["system"] == "You are terse."
    assert sent["messages"] == [{"role": "user", "content": "Say hello."}]
    assert server.requests[0].url.path == "/v1/messages"


def test_anthropic_text_split_across_network_reads() -> None:
    """SSE events cut at arbitrary byte boundaries still assemble into the whole answer."""
    wire = b"".join(a_events(["alpha ", "beta ", "gamma"]))
    pieces = [wire[i : i + 37] for i in range(0, len(wire), 37)]
    c = a_complete(Server(lambda r: streamed(*pieces)))
    assert c.text == "alpha beta gamma"


def test_anthropic_message_delta_usage_is_cumulative() -> None:
    events = a_events(output_tokens=7)
    delta = json.dumps(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9, "input_tokens": 26, "cache_read_input_tokens": 101},
        }
    )
    events[-2] = f"event: message_delta\ndata: {delta}\n\n".encode()
    c = a_complete(Server(lambda r: streamed(*events)))
    assert (c.usage.input_tokens, c.usage.output_tokens) == (26, 9)
    assert (c.usage.cache_read_tokens, c.usage.cache_write_tokens) == (101, 40)


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("end_turn", "end"),
        ("stop_sequence", "stop_sequence"),
        ("max_tokens", "max_tokens"),
        ("tool_use", "tool_use"),
        ("refusal", "error"),
    ],
)
def test_anthropic_stop_reasons(wire: str, ours: str) -> None:
    c = a_complete(Server(lambda r: streamed(*a_events(stop=wire))))
    assert c.stop_reason == ours
    assert c.text == "Hello, world"


def test_anthropic_tool_use_block_becomes_a_tool_call() -> None:
    events = a_events(["Checking."], stop="tool_use")
    tool = [
        a_event(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "search",
                    "input": {},
                },
            }
        ),
        a_event(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"q": "ph'},
            }
        ),
        a_event(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'alanx"}'},
            }
        ),
        a_event({"type": "content_block_stop", "index": 1}),
    ]
    events[-2:-2] = tool
    c = a_complete(Server(lambda r: streamed(*events)))
    assert c.stop_reason == "tool_use"
    assert c.text == "Checking."
    assert c.tool_calls == (ToolCall(id="toolu_1", name="search", arguments={"q": "phalanx"}),)


def test_anthropic_max_tokens_option_overrides_request() -> None:
    server = Server(lambda r: streamed(*a_events()))

    async def go() -> None:
        client = anthropic.AsyncAnthropic(
            api_key=CANARY, max_retries=0, http_client=server.http_client()
        )
        p = AnthropicProvider("claude-test", {"max_tokens": 77}, client=client, env={})
        try:
            await p.complete(REQUEST)
        finally:
            await p.aclose()

    run(go())
    assert server.body()["max_tokens"] == 77


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retryable"),
    [
        (
            429,
            a_error(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            {"retry-after": "7"},
            ErrorClass.RATE_LIMITED,
            True,
        ),
        (
            429,
            a_error(
                "rate_limit_error",
                "This request would exceed your organization's spend limit.",
                error_code="enforced_spend_limit_reached",
            ),
            {},
            ErrorClass.QUOTA_EXHAUSTED,
            False,
        ),
        (
            429,
            a_error("rate_limit_error", "You have reached your usage quota; see billing."),
            {},
            ErrorClass.QUOTA_EXHAUSTED,
            False,
        ),
        (
            400,
            a_error(
                "invalid_request_error",
                "Your credit balance is too low to access the "
                "Anthropic API. Please go to Plans & Billing.",
            ),
            {},
            ErrorClass.QUOTA_EXHAUSTED,
            False,
        ),
        (529, a_error("overloaded_error", "Overloaded"), {}, ErrorClass.OVERLOADED, True),
        (503, "upstream unavailable", {}, ErrorClass.OVERLOADED, True),
        (500, a_error("api_error", "Internal server error"), {}, ErrorClass.SERVER_ERROR, True),
        (502, "<html>bad gateway</html>", {}, ErrorClass.SERVER_ERROR, True),
        (401, a_error("authentication_error", "invalid x-api-key"), {}, ErrorClass.AUTH, False),
        (403, a_error("permission_error", "no access"), {}, ErrorClass.AUTH, False),
        (
            400,
            a_error("invalid_request_error", "messages: field required"),
            {},
            ErrorClass.BAD_REQUEST,
            False,
        ),
        (404, a_error("not_found_error", "model: claude-nope"), {}, ErrorClass.BAD_REQUEST, False),
    ],
)
def test_anthropic_http_errors(
    status: int, body: Any, headers: dict[str, str], cls: ErrorClass, retryable: bool
) -> None:
    server = Server(lambda r: error_response(status, body, headers))
    err = failure(lambda: a_complete(server), server)
    check_class(err, cls, retryable=retryable)
    assert err.status == status
    assert str(err).startswith("anthropic:claude-test: ")


def test_anthropic_429_retry_after_is_honoured() -> None:
    body = a_error("rate_limit_error", "slow down")
    server = Server(lambda r: error_response(429, body, {"retry-after": "7"}))
    err = failure(lambda: a_complete(server), server)
    assert err.retry_after == 7.0
    decision = decide_retry(
        err.error_class, attempt_no=1, max_attempts=3, retry_after=err.retry_after
    )
    assert decision.retry and decision.delay >= 7.0


def test_anthropic_429_retry_after_ms() -> None:
    body = a_error("rate_limit_error", "slow down")
    server = Server(lambda r: error_response(429, body, {"retry-after-ms": "2500"}))
    err = failure(lambda: a_complete(server), server)
    assert err.error_class is ErrorClass.RATE_LIMITED
    assert err.retry_after == 2.5


@pytest.mark.parametrize("shape", sorted(CONTEXT_BODIES))
def test_anthropic_context_length_in_every_server_shape(shape: str) -> None:
    server = Server(lambda r: error_response(400, CONTEXT_BODIES[shape]))
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.CONTEXT_LENGTH, retryable=False)


def test_anthropic_read_timeout() -> None:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    server = Server(respond)
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.TIMEOUT, retryable=True)


def test_anthropic_connection_error() -> None:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    server = Server(respond)
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.CONNECTION, retryable=True)
    assert "refused" in str(err)


@pytest.mark.parametrize("keep", [3, 5, 8])
def test_anthropic_stream_cut_before_message_stop(keep: int) -> None:
    """The body ends early (after ``keep`` events): no partial answer comes back."""
    events = a_events(["one ", "two ", "three ", "four"])
    assert keep < len(events) - 1
    server = Server(lambda r: streamed(*events[:keep]))
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_anthropic_stream_cut_mid_event() -> None:
    wire = b"".join(a_events())
    server = Server(lambda r: streamed(wire[: len(wire) - 20]))
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_anthropic_connection_dropped_mid_stream() -> None:
    events = a_events()[:4]
    server = Server(
        lambda r: streamed(
            *events,
            fail=httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ),
        )
    )
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_anthropic_read_timeout_mid_stream() -> None:
    events = a_events()[:4]
    server = Server(lambda r: streamed(*events, fail=httpx2.ReadTimeout("timed out")))
    err = failure(lambda: a_complete(server), server)
    check_class(err, ErrorClass.TIMEOUT, retryable=True)


@pytest.mark.parametrize(
    ("etype", "message", "cls", "retryable"),
    [
        ("overloaded_error", "Overloaded", ErrorClass.OVERLOADED, True),
        ("rate_limit_error", "Rate limited", ErrorClass.RATE_LIMITED, True),
        ("api_error", "Internal server error", ErrorClass.SERVER_ERROR, True),
        ("something_new_error", "?", ErrorClass.SERVER_ERROR, True),
        (
            "invalid_request_error",
            "prompt is too long: 300000 tokens > 200000 maximum",
            ErrorClass.CONTEXT_LENGTH,
            False,
        ),
    ],
)
def test_anthropic_sse_error_event_after_200(
    etype: str, message: str, cls: ErrorClass, retryable: bool
) -> None:
    events = a_events()[:4] + [
        f"event: error\ndata: {json.dumps(a_error(etype, message))}\n\n".encode()
    ]
    server = Server(lambda r: streamed(*events))
    err = failure(lambda: a_complete(server), server)
    check_class(err, cls, retryable=retryable)
    assert err.status is None  # the HTTP status was 200: it says nothing about the error
    assert etype in str(err)


def test_anthropic_missing_key_names_the_variable() -> None:
    with pytest.raises(UsageError) as info:
        AnthropicProvider("claude-x", {}, env={})
    msg = str(info.value)
    assert "ANTHROPIC_API_KEY" in msg and "anthropic:claude-x" in msg
    assert "\n" not in msg
    with pytest.raises(UsageError, match="MY_CLAUDE_KEY"):
        AnthropicProvider("claude-x", {"api_key_env": "MY_CLAUDE_KEY"}, env={})
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider("claude-x", {}, env={"ANTHROPIC_API_KEY": ""})


def test_anthropic_bad_options_are_usage_errors() -> None:
    env = {"ANTHROPIC_API_KEY": CANARY}
    with pytest.raises(UsageError, match=r"providers\.anthropic: unknown option\(s\) base-url"):
        AnthropicProvider("claude-x", {"base-url": "http://x"}, env=env)
    with pytest.raises(UsageError, match=r"providers\.anthropic\.timeout"):
        AnthropicProvider("claude-x", {"timeout": "soon"}, env=env)
    with pytest.raises(UsageError, match=r"providers\.anthropic\.max_tokens"):
        AnthropicProvider("claude-x", {"max_tokens": 0}, env=env)
    with pytest.raises(UsageError, match="anthropic:MODEL"):
        AnthropicProvider("", {}, env=env)


def test_anthropic_client_built_with_sdk_retries_off() -> None:
    """The client the provider builds itself: retries off, key, base_url and timeout set;
    over a mock transport it sends one request for a retryable 529."""
    env = {"CLAUDE_KEY": CANARY}
    opts = {"api_key_env": "CLAUDE_KEY", "base_url": "http://127.0.0.1:9", "timeout": 42}
    server = Server(lambda r: error_response(529, a_error("overloaded_error", "Overloaded")))

    async def go() -> None:
        p = AnthropicProvider("claude-test", opts, env=env)
        built = p._client
        assert built.max_retries == 0
        assert built.api_key == CANARY
        assert str(built.base_url).startswith("http://127.0.0.1:9")
        assert built.timeout == 42
        p._client = built.copy(http_client=server.http_client())  # same settings, mock wire
        await built.close()
        try:
            await p.complete(REQUEST)
        finally:
            await p.aclose()

    err = failure(lambda: run(go()), server)
    check_class(err, ErrorClass.OVERLOADED, retryable=True)


def test_anthropic_key_never_in_error_messages() -> None:
    """A proxy that echoes the credential back in its error body, and a transport error
    that mentions it: neither reaches the ProviderError."""

    def echo(request: httpx2.Request) -> httpx2.Response:
        sent = request.headers.get("authorization") or request.headers.get("x-api-key")
        assert sent is not None and CANARY in sent
        return error_response(401, a_error("authentication_error", f"bad credential {sent}"))

    server = Server(echo)
    err = failure(lambda: a_complete(server), server)
    assert "[redacted]" in str(err)

    def leaky(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError(f"proxy refused {CANARY}", request=request)

    server = Server(leaky)
    err = failure(lambda: a_complete(server), server)
    assert err.error_class is ErrorClass.CONNECTION


# =========================================================================== openai


@pytest.mark.parametrize("compatible", [False, True])
def test_openai_streams_text_usage_and_request_shape(compatible: bool) -> None:
    server = Server(lambda r: streamed(*o_chunks()))
    c = o_complete(server, compatible=compatible)
    assert c.text == "Hello, world"
    assert c.stop_reason == "end"
    kind = "openai-compatible" if compatible else "openai"
    assert c.model == f"{kind}:gpt-test"
    u = c.usage
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (20, 10, 12)
    assert u.cache_write_tokens == 0
    sent = server.body()
    assert server.requests[0].url.path == "/v1/chat/completions"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    limit_key = "max_tokens" if compatible else "max_completion_tokens"
    assert sent[limit_key] == 321
    assert "response_format" not in sent


def test_openai_text_split_across_network_reads() -> None:
    wire = b"".join(o_chunks(["alpha ", "beta ", "gamma"]))
    pieces = [wire[i : i + 29] for i in range(0, len(wire), 29)]
    c = o_complete(Server(lambda r: streamed(*pieces)))
    assert c.text == "alpha beta gamma"


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("stop", "end"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "error"),
    ],
)
def test_openai_finish_reasons(wire: str, ours: str) -> None:
    c = o_complete(Server(lambda r: streamed(*o_chunks(finish=wire))))
    assert c.stop_reason == ours


def test_openai_tool_call_deltas_become_a_tool_call() -> None:
    chunks = [
        o_chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search", "arguments": ""},
                    }
                ],
            }
        ),
        o_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "ph'}}]}),
        o_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'alanx"}'}}]}),
        o_chunk({}, "tool_calls"),
        o_chunk(usage=O_USAGE),
        DONE,
    ]
    c = o_complete(Server(lambda r: streamed(*chunks)))
    assert c.stop_reason == "tool_use"
    assert c.tool_calls == (ToolCall(id="call_1", name="search", arguments={"q": "phalanx"}),)


def test_openai_usage_missing_is_zero_not_a_failure() -> None:
    """Some compatible servers ignore include_usage: the answer still counts."""
    chunks = o_chunks()
    chunks.remove(o_chunk(usage=O_USAGE))
    c = o_complete(Server(lambda r: streamed(*chunks)), compatible=True)
    assert c.text == "Hello, world"
    assert c.usage.total_tokens == 0


SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("compatible", [False, True])
def test_openai_json_schema_response_format(compatible: bool) -> None:
    server = Server(lambda r: streamed(*o_chunks(['{"a": "b"}'])))
    req = CompletionRequest(model="m", messages=REQUEST.messages, style="json", json_schema=SCHEMA)
    o_complete(server, req, compatible=compatible)
    assert server.body()["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }


@pytest.mark.parametrize(
    # a compatible server gets JSON mode too (llama.cpp, vLLM, Ollama know it);
    # providers.openai-compatible.response_format: none turns it off
    ("compatible", "expected"),
    [(False, {"type": "json_object"}), (True, {"type": "json_object"})],
)
def test_openai_json_style_without_schema(compatible: bool, expected: Any) -> None:
    server = Server(lambda r: streamed(*o_chunks(["{}"])))
    req = CompletionRequest(model="m", messages=REQUEST.messages, style="json")
    o_complete(server, req, compatible=compatible)
    assert server.body().get("response_format") == expected


OPENAI_RATE = {
    "error": {
        "message": "Rate limit reached for gpt-test in organization org-x on "
        "tokens per min (TPM): Limit 10000, Used 9000, Requested 2000.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}


@pytest.mark.parametrize("compatible", [False, True])
@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retryable"),
    [
        (429, OPENAI_RATE, {"retry-after": "3"}, ErrorClass.RATE_LIMITED, True),
        (429, OPENAI_QUOTA, {}, ErrorClass.QUOTA_EXHAUSTED, False),
        (
            503,
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            {},
            ErrorClass.OVERLOADED,
            True,
        ),
        (
            500,
            {"error": {"message": "The server had an error", "type": "server_error"}},
            {},
            ErrorClass.SERVER_ERROR,
            True,
        ),
        (502, "bad gateway", {}, ErrorClass.SERVER_ERROR, True),
        (
            401,
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            {},
            ErrorClass.AUTH,
            False,
        ),
        (403, {"error": {"message": "forbidden"}}, {}, ErrorClass.AUTH, False),
        (
            400,
            {
                "error": {
                    "message": "Invalid value for 'temperature'",
                    "type": "invalid_request_error",
                    "code": "invalid_value",
                }
            },
            {},
            ErrorClass.BAD_REQUEST,
            False,
        ),
        (
            404,
            {
                "error": {
                    "message": "The model `gpt-nope` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            },
            {},
            ErrorClass.BAD_REQUEST,
            False,
        ),
    ],
)
def test_openai_http_errors(
    compatible: bool,
    status: int,
    body: Any,
    headers: dict[str, str],
    cls: ErrorClass,
    retryable: bool,
) -> None:
    server = Server(lambda r: error_response(status, body, headers))
    err = failure(lambda: o_complete(server, compatible=compatible), server)
    check_class(err, cls, retryable=retryable)
    assert err.status == status


@pytest.mark.parametrize("compatible", [False, True])
def test_openai_429_retry_after_is_honoured(compatible: bool) -> None:
    server = Server(lambda r: error_response(429, OPENAI_RATE, {"retry-after": "7"}))
    err = failure(lambda: o_complete(server, compatible=compatible), server)
    assert err.error_class is ErrorClass.RATE_LIMITED
    assert err.retry_after == 7.0
    decision = decide_retry(
        err.error_class, attempt_no=1, max_attempts=3, retry_after=err.retry_after
    )
    assert decision.retry and decision.delay >= 7.0


def test_openai_429_quota_is_not_retried_even_with_retry_after() -> None:
    server = Server(lambda r: error_response(429, OPENAI_QUOTA, {"retry-after": "1"}))
    err = failure(lambda: o_complete(server), server)
    check_class(err, ErrorClass.QUOTA_EXHAUSTED, retryable=False)


@pytest.mark.parametrize("compatible", [False, True])
@pytest.mark.parametrize("shape", sorted(CONTEXT_BODIES))
def test_openai_context_length_in_every_server_shape(shape: str, compatible: bool) -> None:
    server = Server(lambda r: error_response(400, CONTEXT_BODIES[shape]))
    err = failure(lambda: o_complete(server, compatible=compatible), server)
    check_class(err, ErrorClass.CONTEXT_LENGTH, retryable=False)


@pytest.mark.parametrize("compatible", [False, True])
def test_openai_read_timeout(compatible: bool) -> None:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    server = Server(respond)
    err = failure(lambda: o_complete(server, compatible=compatible), server)
    check_class(err, ErrorClass.TIMEOUT, retryable=True)


@pytest.mark.parametrize("compatible", [False, True])
def test_openai_connection_error(compatible: bool) -> None:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    server = Server(respond)
    err = failure(lambda: o_complete(server, compatible=compatible), server)
    check_class(err, ErrorClass.CONNECTION, retryable=True)


@pytest.mark.parametrize("keep", [1, 3, 4])
def test_openai_stream_cut_before_finish_reason(keep: int) -> None:
    chunks = o_chunks(["one ", "two ", "three"])
    server = Server(lambda r: streamed(*chunks[:keep]))
    err = failure(lambda: o_complete(server), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_openai_stream_cut_mid_chunk() -> None:
    wire = b"".join(o_chunks()[:5])  # role, three texts, and half of the finish chunk
    server = Server(lambda r: streamed(wire[: len(wire) - 30]))
    err = failure(lambda: o_complete(server, compatible=True), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_openai_connection_dropped_mid_stream() -> None:
    server = Server(
        lambda r: streamed(
            *o_chunks()[:3],
            fail=httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ),
        )
    )
    err = failure(lambda: o_complete(server), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


def test_openai_read_timeout_mid_stream() -> None:
    server = Server(lambda r: streamed(*o_chunks()[:3], fail=httpx2.ReadTimeout("timed out")))
    err = failure(lambda: o_complete(server), server)
    check_class(err, ErrorClass.TIMEOUT, retryable=True)


@pytest.mark.parametrize(
    ("error", "cls", "retryable"),
    [
        (
            {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
            },
            ErrorClass.SERVER_ERROR,
            True,
        ),
        (
            {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"},
            ErrorClass.RATE_LIMITED,
            True,
        ),
        (
            {
                "object": "error",
                "message": "bad sampling params",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            ErrorClass.BAD_REQUEST,
            False,
        ),
        (CONTEXT_BODIES["llama.cpp"]["error"], ErrorClass.CONTEXT_LENGTH, False),
        ({"message": "something odd"}, ErrorClass.SERVER_ERROR, True),
    ],
)
def test_openai_error_chunk_inside_200_stream(
    error: dict[str, Any], cls: ErrorClass, retryable: bool
) -> None:
    chunks = [*o_chunks()[:2], f"data: {json.dumps({'error': error})}\n\n".encode()]
    server = Server(lambda r: streamed(*chunks))
    err = failure(lambda: o_complete(server, compatible=True), server)
    check_class(err, cls, retryable=retryable)
    assert err.status is None


def test_openai_missing_key_names_the_variable() -> None:
    with pytest.raises(UsageError) as info:
        OpenAIProvider("gpt-x", {}, env={})
    msg = str(info.value)
    assert "OPENAI_API_KEY" in msg and "openai:gpt-x" in msg
    with pytest.raises(UsageError, match="MY_OPENAI_KEY"):
        OpenAIProvider("gpt-x", {"api_key_env": "MY_OPENAI_KEY"}, env={})


def test_openai_compatible_needs_base_url_not_a_key() -> None:
    with pytest.raises(UsageError, match=r"providers\.openai-compatible\.base_url"):
        OpenAIProvider("llama", {}, compatible=True, env={})

    async def go() -> None:
        p = OpenAIProvider("llama", {"base_url": LOCAL_URL}, compatible=True, env={})
        try:
            assert p.name == "openai-compatible:llama"
            assert p._client.api_key == "none"
            assert p._client.max_retries == 0
            assert str(p._client.base_url).startswith(LOCAL_URL)
        finally:
            await p.aclose()

    run(go())


def test_openai_client_built_with_sdk_retries_off() -> None:
    server = Server(lambda r: error_response(500, {"error": {"message": "boom"}}))

    async def go() -> None:
        p = OpenAIProvider("gpt-test", {"timeout": 42}, env={"OPENAI_API_KEY": OPENAI_CANARY})
        built = p._client
        assert built.max_retries == 0
        assert built.api_key == OPENAI_CANARY
        assert built.timeout == 42
        p._client = built.copy(http_client=server.http_client(), base_url=LOCAL_URL)
        await built.close()
        try:
            await p.complete(REQUEST)
        finally:
            await p.aclose()

    err = failure(lambda: run(go()), server)
    check_class(err, ErrorClass.SERVER_ERROR, retryable=True)


def test_openai_key_never_in_error_messages() -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        sent = request.headers["authorization"]
        assert OPENAI_CANARY in sent
        return error_response(
            401, {"error": {"message": f"Incorrect API key: {sent}", "code": "invalid_api_key"}}
        )

    server = Server(echo)
    err = failure(lambda: o_complete(server), server)
    assert "[redacted]" in str(err)

    def leaky(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError(f"proxy refused {OPENAI_CANARY}", request=request)

    server = Server(leaky)
    err = failure(lambda: o_complete(server), server)
    assert err.error_class is ErrorClass.CONNECTION


# =========================================================================== the seam


def test_resolve_provider_builds_the_real_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    from phalanx.providers import Provider, resolve_provider

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="set ANTHROPIC_API_KEY"):
        resolve_provider("anthropic:claude-x")
    with pytest.raises(UsageError, match="set OPENAI_API_KEY"):
        resolve_provider("openai:gpt-x")
    with pytest.raises(UsageError, match=r"providers\.openai-compatible\.base_url"):
        resolve_provider("openai-compatible:llama")

    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_CANARY)
    options = {"openai-compatible": {"base_url": LOCAL_URL}}

    async def go() -> None:
        for name in ("anthropic:claude-x", "openai:gpt-x", "openai-compatible:llama"):
            p = resolve_provider(name, options)
            try:
                assert isinstance(p, Provider)
                assert p.name == name and p.simulated is False
            finally:
                await p.aclose()

    run(go())


# --------------------------------------------------------------------------- tool turns

TOOL_REQUEST = CompletionRequest(
    model="m",
    messages=(
        Message(role="system", content="Use tools."),
        Message(role="user", content="Find phalanx."),
        Message(
            role="assistant",
            content="Checking.",
            tool_calls=(
                ToolCall(id="t1", name="search", arguments={"q": "phalanx"}),
                ToolCall(id="t2", name="read_file", arguments={"path": "a.txt"}),
            ),
        ),
        Message(role="tool", content="3 matches", tool_call_id="t1", name="search"),
        Message(role="tool", content="hello", tool_call_id="t2", name="read_file"),
    ),
    tools=(
        ToolDef(
            name="search",
            description="regex search",
            parameters={"type": "object", "properties": {"q": {"type": "string"}}},
        ),
    ),
)


def test_anthropic_sends_tools_and_tool_turns() -> None:
    server = Server(lambda r: streamed(*a_events()))
    run(anthropic_provider(server).complete(TOOL_REQUEST))
    body = server.body()
    assert body["tools"] == [
        {
            "name": "search",
            "description": "regex search",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "text", "text": "Checking."}
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "t1",
        "name": "search",
        "input": {"q": "phalanx"},
    }
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["t1", "t2"]
    assert all(b["type"] == "tool_result" for b in results["content"])


def test_openai_sends_tools_and_tool_turns() -> None:
    server = Server(lambda r: streamed(*o_chunks()))
    run(openai_provider(server).complete(TOOL_REQUEST))
    body = server.body()
    assert body["tools"][0]["type"] == "function"
    assert body["tools"][0]["function"]["name"] == "search"
    assistant = body["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": json.dumps({"q": "phalanx"}),
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "3 matches"}
    assert body["messages"][4]["tool_call_id"] == "t2"


# --------------------------------------------------------------------------- whole answers


def test_compatible_servers_answer_in_one_piece_by_default() -> None:
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello whole."},
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34},
    }
    server = Server(lambda r: error_response(200, body))
    provider = openai_provider(server, compatible=True, stream=False)
    c = run(provider.complete(REQUEST))
    assert c.text == "Hello whole." and c.stop_reason == "end"
    assert (c.usage.input_tokens, c.usage.output_tokens) == (30, 4)
    assert server.body()["stream"] is False
    assert "stream_options" not in server.body()
    default = OpenAIProvider("m", {"base_url": LOCAL_URL}, compatible=True, env={})
    assert default.stream is False
    assert OpenAIProvider("m", {}, env={"OPENAI_API_KEY": "k" * 12}).stream is True


def test_compatible_whole_answer_context_length_and_tool_calls() -> None:
    overflow = {
        "error": {
            "message": "This model's maximum context length is 2048 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    server = Server(lambda r: error_response(400, overflow))
    with pytest.raises(ProviderError) as err:
        run(openai_provider(server, compatible=True, stream=False).complete(REQUEST))
    assert err.value.error_class is ErrorClass.CONTEXT_LENGTH
    call = {
        "id": "c9",
        "type": "function",
        "function": {"name": "search", "arguments": '{"q": "x"}'},
    }
    body = {
        "id": "c2",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }
    c = run(
        openai_provider(
            Server(lambda r: error_response(200, body)), compatible=True, stream=False
        ).complete(REQUEST)
    )
    assert c.stop_reason == "tool_use"
    assert c.tool_calls == (ToolCall(id="c9", name="search", arguments={"q": "x"}),)

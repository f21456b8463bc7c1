"""Claude over the Anthropic Messages API, streamed: ``anthropic:MODEL``.

Options (plan ``providers: {anthropic: {...}}``)::

    api_key_env: ANTHROPIC_API_KEY   # the variable that holds the key
    base_url: https://...            # a gateway or proxy; default: ANTHROPIC_BASE_URL, else
                                     # the public endpoint
    timeout: 600                     # seconds per call
    max_tokens: 4096                 # default: the request's max_tokens
    structured_output: tool          # tool | native | none

Structured styles (json, yaml, table: :mod:`phalanx.providers.structured`) are held to
their JSON schema. ``tool`` (default; every Claude model and gateway): a tool named
``final_answer`` whose ``input_schema`` is the schema, forced with ``tool_choice`` (when the
agent has tools of its own, any tool is required and ``final_answer`` ends the turns); its
input is the answer. ``native``: the API's own structured output
(``output_config.format``, the models that have it). ``none``: the style is prompted only.

The SDK's own retries are off (``max_retries=0``): retries belong to the orchestrator.
:func:`classify` is the one place SDK errors become a :class:`ProviderError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import MessageParam, RawMessageStreamEvent

from .. import redaction
from ..cost import Usage
from ..exceptions import ErrorClass, ProviderError, UsageError
from . import ratelimits
from ._http import (
    body_broke_off,
    classify_status,
    describe_cause,
    looks_like_context_length,
    looks_like_quota,
    one_line,
    positive_int,
    positive_seconds,
    redact,
    retry_after,
)
from ._pool import lighten
from .base import Completion, CompletionRequest, Message, StopReason, ToolCall
from .structured import Structured, render, render_text, structured_for

__all__ = ["AnthropicProvider", "classify"]

_OPTIONS = frozenset({"api_key_env", "base_url", "timeout", "max_tokens", "structured_output"})
_MODES = ("tool", "native", "none")
ANSWER_TOOL = "final_answer"
_STOP: dict[str, StopReason] = {
    "end_turn": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "tool_use": "tool_use",
}
# ``error.type`` of an error body, for errors that arrive as an SSE ``error`` event after 200
_ERROR_TYPES = {
    "overloaded_error": ErrorClass.OVERLOADED,
    "rate_limit_error": ErrorClass.RATE_LIMITED,
    "api_error": ErrorClass.SERVER_ERROR,
    "timeout_error": ErrorClass.TIMEOUT,
    "authentication_error": ErrorClass.AUTH,
    "permission_error": ErrorClass.AUTH,
    "billing_error": ErrorClass.QUOTA_EXHAUSTED,
    "invalid_request_error": ErrorClass.BAD_REQUEST,
    "not_found_error": ErrorClass.BAD_REQUEST,
    "request_too_large": ErrorClass.BAD_REQUEST,
}
# ``error.details.error_code`` values that mean a spend cap, not a passing rate limit
_QUOTA_CODES = frozenset(
    {
        "contract_spend_limit_reached",
        "enforced_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)


class AnthropicProvider:
    """``anthropic:MODEL``: one streamed Messages call per :meth:`complete`."""

    simulated = False

    def __init__(
        self,
        model: str,
        options: Mapping[str, Any],
        *,
        client: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not model:
            raise UsageError("provider 'anthropic' needs a model: anthropic:MODEL")
        self.name = f"anthropic:{model}"
        self.model = model
        opts = dict(options or {})
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise UsageError(f"providers.anthropic: unknown option(s) {', '.join(unknown)}")
        environ = env if env is not None else os.environ
        key_env = str(opts.get("api_key_env") or "ANTHROPIC_API_KEY")
        self._key = environ.get(key_env) or None
        # the plan's (or --base-url's) server, else the SDK's own variable
        self.base_url = opts.get("base_url") or environ.get("ANTHROPIC_BASE_URL") or None
        redaction.register(self._key)
        redaction.install_log_filter()
        self.max_tokens = positive_int(opts.get("max_tokens"), "anthropic.max_tokens")
        timeout = positive_seconds(opts.get("timeout", 600), "anthropic.timeout")
        self.structured_output = opts.get("structured_output", "tool")
        if self.structured_output not in _MODES:
            raise UsageError(f"providers.anthropic.structured_output: one of {', '.join(_MODES)}")
        if client is None:
            if self._key is None:
                raise UsageError(f"{self.name} needs an API key: set {key_env}")
            client = anthropic.AsyncAnthropic(
                api_key=self._key,
                base_url=self.base_url,
                max_retries=0,
                timeout=timeout,
            )
            lighten(client)
        self._client = client
        self.quota_id = ratelimits.quota_id("anthropic", getattr(client, "base_url", ""), self._key)

    async def complete(self, request: CompletionRequest) -> Completion:
        s = structured_for(request) if self.structured_output != "none" else None
        acc = _Accumulator()
        opened = False  # the status line arrived: a transport break now cuts the stream
        try:
            params = self._params(request, s)
            stream = await self._client.messages.create(**params, stream=True)
            opened, rate = True, ratelimits.read(stream)
            async with stream:
                async for event in stream:
                    acc.add(event)
        except (anthropic.AnthropicError, httpx2.HTTPError, json.JSONDecodeError) as exc:
            error = classify(exc, secret=self._key, name=self.name, mid_stream=opened)
            raise ratelimits.annotate(error, exc) from None
        if not acc.done:
            raise ProviderError(
                f"{self.name}: the stream ended before message_stop",
                error_class=ErrorClass.STREAM_CUT,
            )
        completion = ratelimits.stamp(acc.completion(self.name), rate)
        return completion if s is None else _answer(completion, s)

    def _params(self, request: CompletionRequest, s: Structured | None) -> dict[str, Any]:
        messages = _messages(request.messages)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": (self.max_tokens or request.max_tokens) * request.max_tokens_factor,
            "messages": messages,
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in request.tools
            ]
        if s is not None and self.structured_output == "tool":
            answer = {
                "name": ANSWER_TOOL,
                "description": "Give your final answer: its input is the whole answer.",
                "input_schema": s.schema or {"type": "object"},
            }
            params["tools"] = [*params.get("tools", ()), answer]
            forced = {"type": "tool", "name": ANSWER_TOOL}
            params["tool_choice"] = {"type": "any"} if request.tools else forced
        elif s is not None and s.schema is not None:  # native
            params["output_config"] = {"format": {"type": "json_schema", "schema": s.schema}}
        return params

    async def aclose(self) -> None:
        await self._client.close()


def _messages(turns: tuple[Message, ...]) -> list[MessageParam]:
    """Our turns as Messages API turns: tool calls as tool_use blocks, consecutive tool
    results as one user turn of tool_result blocks."""
    out: list[dict[str, Any]] = []
    for m in turns:
        if m.role == "system":
            continue
        if m.role == "assistant":
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks += [
                {
                    "type": "tool_use",
                    "id": c.id,
                    "name": c.name,
                    "input": c.arguments if isinstance(c.arguments, dict) else {},
                }
                for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": blocks if m.tool_calls else m.content})
        elif m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        else:
            out.append({"role": "user", "content": m.content})
    return cast(list[MessageParam], out)


@dataclass(kw_only=True, slots=True)
class _Accumulator:
    """Folds the raw stream events into one answer; ``done`` only after message_stop."""

    text: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    stop: str | None = None
    done: bool = False

    def add(self, event: RawMessageStreamEvent) -> None:
        if event.type == "message_start":
            self._usage(event.message.usage)
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "text" and block.text:
                self.text.append(block.text)
            elif block.type == "tool_use":
                self.tools[event.index] = {"id": block.id, "name": block.name, "json": ""}
        elif event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                self.text.append(delta.text)
            elif delta.type == "input_json_delta" and event.index in self.tools:
                self.tools[event.index]["json"] += delta.partial_json
        elif event.type == "message_delta":
            self.stop = event.delta.stop_reason
            self._usage(event.usage)  # cumulative totals: overwrite
        elif event.type == "message_stop":
            self.done = True

    def _usage(self, u: Any) -> None:
        for ours, theirs in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_tokens", "cache_read_input_tokens"),
            ("cache_write_tokens", "cache_creation_input_tokens"),
        ):
            value = getattr(u, theirs, None)
            if value is not None:
                self.usage[ours] = int(value)

    def completion(self, name: str) -> Completion:
        return Completion(
            text="".join(self.text),
            usage=Usage(**self.usage),
            stop_reason=_STOP.get(self.stop or "", "error"),
            model=name,
            tool_calls=tuple(_tool_call(t) for _, t in sorted(self.tools.items())),
        )


def _answer(c: Completion, s: Structured) -> Completion:
    """A structured answer as the style's text: the ``final_answer`` tool's input (or the
    JSON text of native structured output) rendered; other tool calls go first."""
    answers = [t for t in c.tool_calls if t.name == ANSWER_TOOL]
    if not answers:
        return dataclasses.replace(c, text=render_text(s, c.text)) if c.stop_reason == "end" else c
    others = tuple(t for t in c.tool_calls if t.name != ANSWER_TOOL)
    if others:  # the agent's own tools run first; the answer comes in a later turn
        return dataclasses.replace(c, tool_calls=others, stop_reason="tool_use")
    value = answers[0].arguments
    if c.stop_reason == "max_tokens":  # cut inside the answer: its partial JSON
        text = value if isinstance(value, str) else json.dumps(value)
        return dataclasses.replace(c, text=text, tool_calls=())
    text = render(s, value) if not isinstance(value, str) else value
    return dataclasses.replace(c, text=text, tool_calls=(), stop_reason="end")


def _tool_call(t: dict[str, Any]) -> ToolCall:
    try:
        arguments = json.loads(t["json"]) if t["json"] else {}
    except json.JSONDecodeError:
        arguments = t["json"]
    return ToolCall(id=t["id"], name=t["name"], arguments=arguments)


def classify(
    exc: BaseException,
    *,
    secret: str | None = None,
    name: str = "anthropic",
    mid_stream: bool = False,
) -> ProviderError:
    """The one mapping from an SDK (or mid-stream transport) error to a ProviderError.

    ``mid_stream``: the error came after the 200 status line, so a dropped connection is a
    cut stream whichever exception type the SDK release wraps it in.
    """
    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status_error(exc, secret, name)
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(f"{name}: the request timed out", error_class=ErrorClass.TIMEOUT)
    transport = anthropic.APIConnectionError | httpx2.TransportError | json.JSONDecodeError
    if (mid_stream and isinstance(exc, transport)) or body_broke_off(exc):
        return ProviderError(
            f"{name}: the stream broke off ({type(exc.__cause__ or exc).__name__})",
            error_class=ErrorClass.STREAM_CUT,
        )
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({describe_cause(cause, secret)})" if cause else ""
        return ProviderError(
            f"{name}: connection failed{detail}"[:300], error_class=ErrorClass.CONNECTION
        )
    if isinstance(exc, httpx2.TransportError | json.JSONDecodeError):
        # raw transport errors surface only while reading the body: the stream broke off
        return ProviderError(
            f"{name}: the stream broke off ({type(exc).__name__})",
            error_class=ErrorClass.STREAM_CUT,
        )
    return ProviderError(
        f"{name}: {type(exc).__name__}: {redact(str(exc), secret)}"[:300],
        error_class=ErrorClass.BAD_REQUEST,
    )


def _classify_status_error(
    exc: anthropic.APIStatusError, secret: str | None, name: str
) -> ProviderError:
    status = exc.status_code
    body = exc.body if exc.body is not None else exc.message
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    etype = exc.type or ""
    if status < 400:  # an SSE ``error`` event after 200: only the body says what it was
        cls = _ERROR_TYPES.get(etype, ErrorClass.SERVER_ERROR)
        if cls is ErrorClass.BAD_REQUEST and looks_like_context_length(text):
            cls = ErrorClass.CONTEXT_LENGTH
        if cls is ErrorClass.RATE_LIMITED and looks_like_quota(text):
            cls = ErrorClass.QUOTA_EXHAUSTED
        http_status = None
    else:
        cls = classify_status(status, text)
        if exc.error_code in _QUOTA_CODES or (status == 400 and looks_like_quota(text)):
            cls = ErrorClass.QUOTA_EXHAUSTED  # e.g. "credit balance is too low" (400)
        http_status = status
    detail = exc.api_message or exc.message
    label = f"{status} {etype}".strip() if http_status else f"stream error {etype}".strip()
    return ProviderError(
        one_line(f"{name}: {label}: {redact(detail, secret)}"),
        error_class=cls,
        status=http_status,
        retry_after=retry_after(exc.response.headers) if http_status else None,
    )

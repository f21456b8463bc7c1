"""OpenAI Chat Completions, streamed: ``openai:MODEL`` and ``openai-compatible:MODEL``.

``openai-compatible`` is any server that speaks the same API (vLLM, llama.cpp server,
Ollama, ...): ``base_url`` is required there and the key is optional.

Options (plan ``providers: {openai: {...}}`` or ``providers: {openai-compatible: {...}}``)::

    api_key_env: OPENAI_API_KEY      # openai-compatible: OPENAI_COMPATIBLE_API_KEY
    base_url: http://127.0.0.1:8080/v1
    timeout: 600                     # seconds per call
    max_tokens: 4096                 # default: the request's max_tokens
    response_format: auto            # how a JSON schema is sent (see below)

Structured styles (json, yaml, table: :mod:`phalanx.providers.structured`) are sent with a
JSON schema in ``response_format``: ``{"type": "json_schema", "json_schema": {...}}``, the
OpenAI form (vLLM, llama.cpp's ``llama-server``, Ollama and LM Studio read it too); a
schema-less ``json``/``yaml`` answer as ``{"type": "json_object"}``. ``response_format``
on ``openai-compatible``: ``auto`` (default) sends the OpenAI form and, when the server
refuses it (llama-cpp-python's server takes only ``{"type": "json_object", "schema": ...}``),
switches to that form for the rest of the run and sends the call again; ``json_schema`` or
``json_object`` fix the form; ``none`` sends no format (the style is prompted only).

The SDK's own retries are off (``max_retries=0``): retries belong to the orchestrator.
:func:`classify` is the one place SDK errors become a :class:`ProviderError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from .. import redaction
from ..cost import Usage
from ..exceptions import ErrorClass, ProviderError, UsageError
from . import ratelimits
from ._http import (
    body_broke_off,
    classify_status,
    describe_cause,
    looks_like_context_length,
    one_line,
    positive_int,
    positive_seconds,
    redact,
    retry_after,
)
from ._pool import lighten
from .base import Completion, CompletionRequest, Message, StopReason, ToolCall
from .structured import Structured, render_text, strict_ok, structured_for

__all__ = ["OpenAIProvider", "classify"]

_OPTIONS = frozenset(
    {"api_key_env", "base_url", "timeout", "max_tokens", "stream", "response_format"}
)
_FORMS = ("auto", "json_schema", "json_object", "none")
_STOP: dict[str, StopReason] = {
    "stop": "end",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "error",
}
# ``error.type`` / ``error.code`` of an error chunk inside a 200 stream
_STREAM_ERRORS = {
    "server_error": ErrorClass.SERVER_ERROR,
    "rate_limit_exceeded": ErrorClass.RATE_LIMITED,
    "insufficient_quota": ErrorClass.QUOTA_EXHAUSTED,
    "invalid_request_error": ErrorClass.BAD_REQUEST,
    "context_length_exceeded": ErrorClass.CONTEXT_LENGTH,
    "exceed_context_size_error": ErrorClass.CONTEXT_LENGTH,
}


class OpenAIProvider:
    """``openai:MODEL`` or ``openai-compatible:MODEL``: one streamed chat completion per call."""

    simulated = False

    def __init__(
        self,
        model: str,
        options: Mapping[str, Any],
        *,
        compatible: bool = False,
        client: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = "openai-compatible" if compatible else "openai"
        if not model:
            raise UsageError(f"provider {self.kind!r} needs a model: {self.kind}:MODEL")
        self.name = f"{self.kind}:{model}"
        self.model = model
        self.compatible = compatible
        opts = dict(options or {})
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise UsageError(f"providers.{self.kind}: unknown option(s) {', '.join(unknown)}")
        environ = env if env is not None else os.environ
        base_url = opts.get("base_url") or (environ.get("OPENAI_BASE_URL") if compatible else None)
        if compatible and not base_url:
            raise UsageError(
                f"{self.name} needs its server: --base-url URL, OPENAI_BASE_URL "
                f"or providers.{self.kind}.base_url"
            )
        default_env = "OPENAI_COMPATIBLE_API_KEY" if compatible else "OPENAI_API_KEY"
        key_env = str(opts.get("api_key_env") or default_env)
        self._key = (env if env is not None else os.environ).get(key_env) or None
        redaction.register(self._key)
        redaction.install_log_filter()
        self.max_tokens = positive_int(opts.get("max_tokens"), f"{self.kind}.max_tokens")
        timeout = positive_seconds(opts.get("timeout", 600), f"{self.kind}.timeout")
        if client is None:
            if self._key is None and not compatible:
                raise UsageError(f"{self.name} needs an API key: set {key_env}")
            kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
            client = openai.AsyncOpenAI(
                api_key=self._key or "none", max_retries=0, timeout=timeout, **kwargs
            )
            lighten(client)
        self._client = client
        self.quota_id = ratelimits.quota_id(self.kind, getattr(client, "base_url", ""), self._key)
        # Compatible servers differ in what they stream (llama.cpp's sends no usage, and a
        # context overflow arrives as an empty 200 stream), so they answer in one piece
        # unless the plan says `stream: true`.
        self.stream = bool(opts.get("stream", not compatible))
        form = opts.get("response_format", "auto")
        if form not in _FORMS:
            raise UsageError(f"providers.{self.kind}.response_format: one of {', '.join(_FORMS)}")
        # the form a JSON schema is sent in; auto starts with OpenAI's and may fall back
        self.schema_form = "json_schema" if form == "auto" else str(form)
        self._auto_form = form == "auto" and compatible

    async def complete(self, request: CompletionRequest) -> Completion:
        s = structured_for(request)
        limit = (self.max_tokens or request.max_tokens) * request.max_tokens_factor
        try:
            completion = await self._complete_fitted(request, s, limit)
        except ProviderError as exc:
            if not self._falls_back(s, exc):
                raise
            self.schema_form = "json_object"  # the server's own form, from now on
            completion = await self._complete_fitted(request, s, limit)
        if s is not None and completion.stop_reason == "end":
            return dataclasses.replace(completion, text=render_text(s, completion.text))
        return completion

    async def _complete_fitted(
        self, request: CompletionRequest, s: Structured | None, limit: int
    ) -> Completion:
        """One call; when the server refuses it because the prompt and ``limit`` together
        pass its context window and says by how much (OpenAI's, vLLM's and llama-cpp-python's
        wording), sent once more with the room that is left."""
        try:
            return await self._complete_once(request, s, limit)
        except ProviderError as exc:
            room = _room_left(exc)
            if room is None or room >= limit:
                raise
            return await self._complete_once(request, s, room)

    def _falls_back(self, s: Structured | None, exc: ProviderError) -> bool:
        """A compatible server refused OpenAI's ``json_schema`` form: an error status whose
        message names ``response_format`` (llama-cpp-python's server answers 500 with its
        request validation error, FastAPI servers 422)."""
        return (
            self._auto_form
            and s is not None
            and s.schema is not None
            and self.schema_form == "json_schema"
            and exc.status in (400, 422, 500)
            and "response_format" in str(exc)
        )

    async def _complete_once(
        self, request: CompletionRequest, s: Structured | None, limit: int
    ) -> Completion:
        if not self.stream:
            return await self._complete_whole(request, s, limit)
        acc = _Accumulator()
        try:
            stream = await self._client.chat.completions.create(**self._params(request, s, limit))
            rate = ratelimits.read(stream)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            error = classify(exc, secret=self._key, name=self.name)
            raise ratelimits.annotate(error, exc) from None
        try:
            async with stream:
                async for chunk in stream:
                    acc.add(chunk)
        except (openai.OpenAIError, httpx2.HTTPError, json.JSONDecodeError) as exc:
            error = classify(exc, secret=self._key, name=self.name, mid_stream=True)
            raise ratelimits.annotate(error, exc) from None
        if acc.finish is None:
            raise ProviderError(
                f"{self.name}: the stream ended without a finish_reason",
                error_class=ErrorClass.STREAM_CUT,
            )
        return ratelimits.stamp(acc.completion(self.name), rate)

    async def _complete_whole(
        self, request: CompletionRequest, s: Structured | None, limit: int
    ) -> Completion:
        params = self._params(request, s, limit)
        params.pop("stream_options", None)
        params["stream"] = False
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**params)
            response = raw.parse()
        except (openai.OpenAIError, httpx2.HTTPError, json.JSONDecodeError) as exc:
            error = classify(exc, secret=self._key, name=self.name)
            raise ratelimits.annotate(error, exc) from None
        if not response.choices:
            raise ProviderError(
                f"{self.name}: the answer had no choices", error_class=ErrorClass.SERVER_ERROR
            )
        choice = response.choices[0]
        u = response.usage
        cached = 0
        if u is not None and u.prompt_tokens_details is not None:
            cached = u.prompt_tokens_details.cached_tokens or 0
        calls = tuple(
            _tool_call({"id": c.id, "name": c.function.name, "json": c.function.arguments or ""})
            for c in (choice.message.tool_calls or ())
            if c.type == "function"
        )
        completion = Completion(
            text=choice.message.content or "",
            usage=Usage(
                input_tokens=max(0, (u.prompt_tokens if u else 0) - cached),
                output_tokens=u.completion_tokens if u else 0,
                cache_read_tokens=cached,
            ),
            stop_reason=_STOP.get(choice.finish_reason or "", "error"),
            model=self.name,
            tool_calls=calls,
        )
        return ratelimits.stamp(completion, ratelimits.read(raw))

    def _params(
        self, request: CompletionRequest, s: Structured | None, limit: int
    ) -> dict[str, Any]:
        messages = [_message(m) for m in request.messages]
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            # servers vary: the compatible ones all know max_tokens, OpenAI's newer models
            # accept only max_completion_tokens
            ("max_tokens" if self.compatible else "max_completion_tokens"): limit,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if s is not None and self.schema_form != "none":
            params["response_format"] = self._response_format(s)
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
        return params

    def _response_format(self, s: Structured) -> dict[str, Any]:
        if s.schema is None:
            return {"type": "json_object"}
        if self.schema_form == "json_object":
            return {"type": "json_object", "schema": s.schema}
        return {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": s.schema, "strict": strict_ok(s.schema)},
        }

    async def aclose(self) -> None:
        await self._client.close()


@dataclass(kw_only=True, slots=True)
class _Accumulator:
    """Folds the chunks of choice 0 (and the trailing usage chunk) into one answer."""

    text: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, str]] = field(default_factory=dict)
    usage: Usage | None = None
    finish: str | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        if chunk.usage is not None:
            u = chunk.usage
            details = u.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            self.usage = Usage(
                input_tokens=max(0, (u.prompt_tokens or 0) - cached),
                output_tokens=u.completion_tokens or 0,
                cache_read_tokens=cached,
            )
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.delta.content:
                self.text.append(choice.delta.content)
            for call in choice.delta.tool_calls or ():
                slot = self.tools.setdefault(call.index, {"id": "", "name": "", "json": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] = call.function.name or slot["name"]
                    slot["json"] += call.function.arguments or ""
            if choice.finish_reason is not None:
                self.finish = choice.finish_reason

    def completion(self, name: str) -> Completion:
        return Completion(
            text="".join(self.text),
            usage=self.usage or Usage(),
            stop_reason=_STOP.get(self.finish or "", "error"),
            model=name,
            tool_calls=tuple(_tool_call(t) for _, t in sorted(self.tools.items())),
        )


_WINDOW = re.compile(
    r"maximum context length is (\d+) tokens.*?\((\d+) in the messages, \d+ in the completion\)",
    re.DOTALL,
)
_MIN_ROOM = 64  # fewer tokens left for the answer than this: the prompt is the problem


def _room_left(exc: ProviderError) -> int | None:
    """The tokens a context window leaves for the answer, from a context-length refusal
    that names the window and the prompt's size; None when it does not (or leaves too
    little for an answer)."""
    if exc.error_class is not ErrorClass.CONTEXT_LENGTH:
        return None
    m = _WINDOW.search(str(exc))
    if m is None:
        return None
    room = int(m.group(1)) - int(m.group(2)) - 1
    return room if room >= _MIN_ROOM else None


def _tool_call(t: dict[str, str]) -> ToolCall:
    try:
        arguments: Any = json.loads(t["json"]) if t["json"] else {}
    except json.JSONDecodeError:
        arguments = t["json"]
    return ToolCall(id=t["id"], name=t["name"], arguments=arguments)


def _message(m: Message) -> ChatCompletionMessageParam:
    if m.role == "system":
        return {"role": "system", "content": m.content}
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant":
        if not m.tool_calls:
            return {"role": "assistant", "content": m.content}
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": "user", "content": m.content}


def classify(
    exc: BaseException,
    *,
    secret: str | None = None,
    name: str = "openai",
    mid_stream: bool = False,
) -> ProviderError:
    """The one mapping from an SDK error to a ProviderError.

    ``mid_stream``: the error came while reading a 200 body, so a dropped connection is a
    cut stream rather than a failed connect, whichever exception type the SDK release wraps
    it in; a whole (unstreamed) body that broke off is recognised from the transport error
    in the chain (:func:`body_broke_off`).
    """
    if isinstance(exc, openai.APIStatusError):
        return _classify_status_error(exc, secret, name)
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(f"{name}: the request timed out", error_class=ErrorClass.TIMEOUT)
    transport = openai.APIConnectionError | httpx2.TransportError | json.JSONDecodeError
    if (mid_stream and isinstance(exc, transport)) or body_broke_off(exc):
        return ProviderError(
            f"{name}: the stream broke off ({type(exc.__cause__ or exc).__name__})",
            error_class=ErrorClass.STREAM_CUT,
        )
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        cause = exc.__cause__ or exc
        return ProviderError(
            one_line(f"{name}: connection failed ({describe_cause(cause, secret)})"),
            error_class=ErrorClass.CONNECTION,
        )
    if isinstance(exc, openai.APIError):  # an error chunk inside a 200 stream
        return _classify_stream_error(exc, secret, name)
    return ProviderError(
        one_line(f"{name}: {type(exc).__name__}: {redact(str(exc), secret)}"),
        error_class=ErrorClass.BAD_REQUEST,
    )


def _classify_status_error(
    exc: openai.APIStatusError, secret: str | None, name: str
) -> ProviderError:
    status = exc.status_code
    text = _body_text(exc)
    cls = classify_status(status, text)
    if status == 429:  # only an exhausted quota is final; any other 429 is backpressure
        quota = "insufficient_quota" in (exc.code or "", exc.type or "") or (
            "insufficient_quota" in text
        )
        cls = ErrorClass.QUOTA_EXHAUSTED if quota else ErrorClass.RATE_LIMITED
    return ProviderError(
        one_line(f"{name}: {status} {exc.code or exc.type or ''}: {_detail(exc, secret)}"),
        error_class=cls,
        status=status,
        retry_after=retry_after(exc.response.headers),
    )


def _classify_stream_error(exc: openai.APIError, secret: str | None, name: str) -> ProviderError:
    text = _body_text(exc)
    code = exc.code or ""
    if code.isdigit():  # vLLM / llama.cpp put the HTTP status in error.code
        cls = classify_status(int(code), text)
    else:
        cls = _STREAM_ERRORS.get(code) or _STREAM_ERRORS.get(
            exc.type or "", ErrorClass.SERVER_ERROR
        )
        if cls is ErrorClass.BAD_REQUEST and looks_like_context_length(text):
            cls = ErrorClass.CONTEXT_LENGTH
    return ProviderError(
        one_line(f"{name}: stream error {code or exc.type or ''}: {_detail(exc, secret)}"),
        error_class=cls,
    )


def _body_text(exc: openai.APIError) -> str:
    body = exc.body if exc.body is not None else exc.message
    return body if isinstance(body, str) else json.dumps(body, default=str)


def _detail(exc: openai.APIError, secret: str | None) -> str:
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    if message is None and isinstance(exc.body, dict) and "detail" in exc.body:
        message = json.dumps(exc.body["detail"], default=str)  # FastAPI's validation errors
    return redact(message if isinstance(message, str) else exc.message, secret)

"""The Provider seam: ``complete(request) -> Completion``. Retries belong to the orchestrator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..cost import ZERO, Usage
from .ratelimits import RateInfo

__all__ = [
    "Completion",
    "CompletionRequest",
    "Message",
    "Provider",
    "StopReason",
    "ToolCall",
    "ToolDef",
]

StopReason = Literal["end", "max_tokens", "tool_use", "stop_sequence", "error"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """A model's request to run a tool. ``arguments`` is what the model sent (a dict when it
    sent valid JSON; anything else is refused by the tool layer, not here)."""

    id: str
    name: str
    arguments: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolDef:
    """A tool as a model sees it: a name, what it does, a JSON schema for its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One turn. An assistant turn may carry tool calls; a ``tool`` turn answers one."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""  # for role "tool": the call it answers
    name: str = ""  # for role "tool": the tool's name


@dataclass(frozen=True, kw_only=True, slots=True)
class CompletionRequest:
    model: str
    messages: tuple[Message, ...]
    max_tokens: int = 1024
    temperature: float | None = None
    style: str = "text"
    json_schema: Mapping[str, Any] | None = None
    # a structured style's family (json, yaml, table): a provider with structured output
    # holds the answer to a JSON schema and renders it back (providers/structured.py)
    answer_format: str = ""
    # the room of this call as a multiple of its max_tokens (the provider's option or the
    # request's): a call retried after an answer cut at max_tokens asks for more
    max_tokens_factor: int = 1
    tools: tuple[ToolDef, ...] = ()
    # who is asking: used for deterministic simulation, logs and attribution, never sent as-is
    run_id: str = ""
    task_id: str = ""
    agent: str = ""
    role: str = ""
    attempt_no: int = 1
    title: str = ""

    @property
    def system(self) -> str:
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion:
    text: str
    usage: Usage = ZERO
    stop_reason: StopReason = "end"
    model: str = ""
    simulated: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    raw: Any = field(default=None, repr=False, compare=False)
    # seconds the call waited inside the provider for capacity (a pool of local model
    # instances, a concurrency limit) before it ran: queue wait, not service time
    queued: float = 0.0
    # the rate limits the response's headers reported (the governor adopts them), if any
    rate: RateInfo | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class Provider(Protocol):
    """A model behind ``provider:model``. Raises ProviderError with an ErrorClass on failure.

    Optional attributes read with a default: ``calls_tools`` (default True; False: a plan
    that gives such a provider's agent tools is refused at load) and ``advise(...)`` (the
    warnings at a run's start about what an agent asks of this model; see
    ``LocalModelProvider.advise``)."""

    name: str
    simulated: bool

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...

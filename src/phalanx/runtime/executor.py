"""Running one attempt of one task on one agent: the agent loop.

Prompt assembly; then turns of: a size check, a rate permit, a model call (with its
deadline), tool calls run in the workspace sandbox and fed back, until a final answer that
parses in the agent's output style (an answer that does not is re-asked with the error).
A request estimated above ``limits.max_prompt_tokens`` is never sent: the attempt fails as
``context_length``. A retryable failure of a model call after the attempt's first is retried
there, with the same messages (``retry.call_attempts``), so the turns and tools before it
are kept; each call retry is noted as ``CallRetried``. An answer cut at ``max_tokens`` is
continued or retried with more room as ``retry.truncation`` says (``runtime/truncation.py``,
noted as ``AnswerContinued``). Usage is summed over the calls made, each charged once.
Engine-agnostic: the local engine and Ray hosts call it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..agents.context import CHARS_PER_TOKEN
from ..agents.spec import AgentSpec
from ..agents.styles import Style, StyleError, get_style, parse_output, repair_prompt
from ..agents.tools import ToolContext, ToolResult, ToolSpec, call_tool
from ..cost import ZERO, Price, Usage
from ..events import AnswerContinued, CallRetried, OutputRejected, ToolCalled
from ..exceptions import ErrorClass, ProviderError
from ..plan.model import DEFAULT_MAX_PROMPT_TOKENS, RetryConfig, Task
from ..providers import ProviderRecipe
from ..providers.base import Completion, CompletionRequest, Message, Provider, ToolDef
from ..redaction import redact
from .governor import Gate
from .retry import decide_retry
from .truncation import recover

__all__ = ["AgentRunner", "Attempt", "Outcome", "Upstream", "build_request", "prompt_tokens"]

UPSTREAM_CHARS = 4000  # per upstream result handed to a downstream prompt
_STOP_FAILURES = {
    "max_tokens": (ErrorClass.TRUNCATED, "the answer stopped at max_tokens"),
    "error": (ErrorClass.OUTPUT_INVALID, "the model refused or its answer was filtered"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Upstream:
    """A result handed downstream, with its provenance."""

    task_id: str
    agent: str
    attempt_id: int
    output: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    run_id: str
    attempt_id: int
    attempt_no: int
    task: Task
    agent: str
    upstream: tuple[Upstream, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    attempt_id: int
    task_id: str
    agent: str
    ok: bool
    duration: float
    output: str = ""
    parsed: Any = None
    usage: Usage = ZERO
    turns: int = 0
    error_class: ErrorClass | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None


def build_request(
    spec: AgentSpec,
    attempt: Attempt,
    model: str,
    *,
    context: str = "",
    tools: tuple[ToolDef, ...] = (),
    inbox: str = "",
    styles: Mapping[str, Style] | None = None,
) -> CompletionRequest:
    """Prompt = role + system prompt + style + context, then the task and upstream results."""
    task = attempt.task
    style = task.style or spec.style
    system = [f"You are {spec.name}, the {spec.role} of a team of agents."]
    if spec.description:
        system.append(f"Your job: {spec.description}.")
    if spec.system_prompt:
        system.append(spec.system_prompt)
    system.append(get_style(style, styles).instruction)
    if context:
        system.append("Context you work with:\n" + context)
    user = [task.prompt]
    if attempt.upstream:
        user.append("Results from the tasks this one builds on:")
        for up in attempt.upstream:
            text = up.output
            if len(text) > UPSTREAM_CHARS:
                text = text[:UPSTREAM_CHARS] + f"\n[... {len(up.output) - UPSTREAM_CHARS} more]"
            user.append(f"### {up.task_id} (by {up.agent})\n{text}")
    if inbox:
        user.append(inbox)
    return CompletionRequest(
        model=model,
        messages=(
            Message(role="system", content="\n".join(s for s in system if s)),
            Message(role="user", content="\n\n".join(user)),
        ),
        style=style,
        json_schema=get_style(style, styles).json_schema,
        answer_format=get_style(style, styles).answer_format,
        tools=tools,
        run_id=attempt.run_id,
        task_id=task.id,
        agent=attempt.agent,
        role=spec.role,
        attempt_no=attempt.attempt_no,
        title=task.label,
    )


def prompt_tokens(request: CompletionRequest) -> int:
    """A request's input, estimated as :func:`phalanx.agents.context.estimate_tokens` counts
    (about 4 characters a token): every message, the tool calls of assistant turns and the
    tool definitions sent with it."""
    chars = request.prompt_chars
    for m in request.messages:
        chars += sum(len(c.name) + len(str(c.arguments)) for c in m.tool_calls)
    for t in request.tools:
        chars += len(t.name) + len(t.description) + len(str(t.parameters))
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class _Failed(Exception):
    """Ends an attempt's loop with a classified failure."""

    def __init__(
        self,
        cls: ErrorClass,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        *,
        call_retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.cls, self.status, self.retry_after = cls, status, retry_after
        self.call_retryable = call_retryable  # a failure of the call itself (provider, deadline)


@dataclass(slots=True)
class _Turns:
    """The state of one attempt's loop."""

    messages: list[Message]
    usage: Usage = ZERO
    calls: int = 0  # model calls of the loop (turns); a call's retries are not more turns
    reasks: int = 0
    busy: float = 0.0


class AgentRunner:
    """One agent's executor: its spec, provider, tools, context and the run's gate."""

    def __init__(
        self,
        spec: AgentSpec,
        provider: Provider,
        model: str = "",
        *,
        gate: Gate | None = None,
        key: str = "",
        price: Price | None = None,
        tools: Mapping[str, ToolSpec] | None = None,
        tool_context: ToolContext | None = None,
        context: str = "",
        context_tokens: int = 0,
        max_turns: int = 8,
        max_reasks: int = 2,
        comms: Any = None,
        recipe: ProviderRecipe | None = None,
        styles: Mapping[str, Style] | None = None,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        retry: RetryConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.styles = styles  # the run's styles (phalanx.agents.styles.Styles)
        self.provider = provider
        self.model = model
        self.gate = gate or Gate()
        self.key = key or provider.name
        self.price = price
        self.tools = dict(tools or {})
        self.tool_context = tool_context
        self.context = context
        self.context_tokens = context_tokens
        self.comms = comms  # phalanx.comms.Comms: messages and subscribed shared context
        self.max_turns = max_turns
        self.max_reasks = max_reasks
        self.max_prompt_tokens = max_prompt_tokens  # the plan's limits.max_prompt_tokens
        self.retry = retry or RetryConfig()  # the plan's retry: call retries and their backoff
        self.rng = rng  # the call retries' jitter (None: the random module's)
        self.recipe = recipe  # how a remote host rebuilds the provider (None: ship it)
        self.tool_defs = tuple(t.to_def() for t in self.tools.values())

    async def run(self, attempt: Attempt, *, inbox: str | None = None) -> Outcome:
        """One attempt to its outcome. ``inbox``: the messages and shared context for the
        prompt when they were gathered elsewhere (a remote host gets them from the driver)."""
        request = build_request(
            self.spec,
            attempt,
            self.model,
            context=self.context,
            tools=self.tool_defs,
            inbox=self.inbox(attempt) if inbox is None else inbox,
            styles=self.styles,
        )
        state = _Turns(messages=list(request.messages))
        try:
            text, parsed = await self._loop(attempt, request, state)
        except _Failed as f:
            return Outcome(
                attempt_id=attempt.attempt_id,
                task_id=attempt.task.id,
                agent=attempt.agent,
                ok=False,
                duration=state.busy,
                usage=state.usage,
                turns=state.calls,
                error_class=f.cls,
                error=redact(str(f))[:500],
                status=f.status,
                retry_after=f.retry_after,
            )
        return Outcome(
            attempt_id=attempt.attempt_id,
            task_id=attempt.task.id,
            agent=attempt.agent,
            ok=True,
            duration=state.busy,
            output=text,
            parsed=parsed,
            usage=state.usage,
            turns=state.calls,
        )

    def inbox(self, attempt: Attempt) -> str:
        """Messages waiting for this agent and the shared context it follows."""
        if self.comms is None:
            return ""
        self.comms.begin_task(attempt.agent, attempt.task.id)
        text, _ = self.comms.inbox_for(attempt.agent, attempt.task.id, self.spec.subscribe)
        return str(text)

    async def _loop(
        self, attempt: Attempt, request: CompletionRequest, state: _Turns
    ) -> tuple[str, Any]:
        max_turns = attempt.task.max_turns or self.max_turns
        while True:
            if state.calls >= max_turns:
                raise _Failed(
                    ErrorClass.MAX_TURNS,
                    f"no final answer after {state.calls} model calls (max_turns)",
                )
            why = self.gate.stopped()
            if why:
                raise _Failed(ErrorClass.BUDGET, why)
            sent = dataclasses.replace(request, messages=tuple(state.messages))
            c = await self._call(attempt, sent, state)
            if c.stop_reason == "max_tokens":  # continued or retried (retry.truncation)
                c = await self._recover(attempt, sent, state, c)
            failure = _STOP_FAILURES.get(c.stop_reason)
            if failure is not None:  # a cut-off answer is never used, nor its tool calls
                raise _Failed(*failure)
            if c.tool_calls and self.tools:
                await self._run_tools(attempt, c, state)
                continue
            text = redact(c.text)  # an answer that echoes a key does not store it
            try:
                return text, parse_output(request.style, text, styles=self.styles)
            except StyleError as err:
                self._reask(attempt, request.style, text, err, state)

    async def _recover(
        self, attempt: Attempt, request: CompletionRequest, state: _Turns, cut: Completion
    ) -> Completion:
        """An answer cut at max_tokens, continued or retried as the plan says
        (runtime/truncation.py); every call it makes is one of this loop's calls."""
        turn = state.calls

        def note(**fields: Any) -> None:
            ids = {"task_id": attempt.task.id, "attempt_id": attempt.attempt_id}
            self.gate.note(AnswerContinued, **ids, agent=attempt.agent, turn=turn, **fields)

        async def call(r: CompletionRequest) -> Completion:
            why = self.gate.stopped()
            if why:
                raise _Failed(ErrorClass.BUDGET, why)
            return await self._call(attempt, r, state)

        mode, cap = self.retry.truncation, self.retry.max_continuations
        style = get_style(request.style, self.styles)
        return await recover(
            cut, request, mode=mode, cap=cap, call=call, note=note, hopeless=style.over_words
        )

    async def _call(
        self, attempt: Attempt, request: CompletionRequest, state: _Turns
    ) -> Completion:
        """One model call of the loop: sent, and after a retryable failure sent again with
        the same messages while ``retry.call_attempts`` allows (never for the attempt's
        first call: its failure costs nothing to retry as a whole attempt)."""
        self._check_size(attempt, request, state)
        state.calls += 1
        tries = self.retry.call_attempts if state.calls > 1 else 1
        n = 1
        while True:
            try:
                return await self._send(attempt, request, state)
            except _Failed as failed:
                delay = self._call_retry_delay(failed, n, tries)
                if delay is None and n > 1:  # its retries are spent: the attempt fails
                    message = f"{failed} (model call {state.calls}, {n} tries)"
                    raise _Failed(failed.cls, message, failed.status, failed.retry_after) from None
                if delay is None:
                    raise
                self.gate.note(
                    CallRetried,
                    task_id=attempt.task.id,
                    attempt_id=attempt.attempt_id,
                    agent=attempt.agent,
                    turn=state.calls,
                    retry=n,
                    error_class=failed.cls,
                    delay=delay,
                    status=failed.status,
                )
            await asyncio.sleep(delay)
            why = self.gate.stopped()
            if why:
                raise _Failed(ErrorClass.BUDGET, why)
            n += 1

    def _call_retry_delay(self, failed: _Failed, n: int, tries: int) -> float | None:
        """Seconds before try ``n + 1`` of a call whose try ``n`` failed, or None: not
        retryable, or its tries are spent. The attempts' backoff, never below Retry-After."""
        if not failed.call_retryable:
            return None
        decision = decide_retry(
            failed.cls,
            attempt_no=n,
            max_attempts=tries,
            retry_after=failed.retry_after,
            base=self.retry.base_seconds,
            cap=self.retry.cap_seconds,
            rng=self.rng,
        )
        return decision.delay if decision.retry else None

    async def _send(
        self, attempt: Attempt, request: CompletionRequest, state: _Turns
    ) -> Completion:
        """One request to the provider, through the gate: a permit, the call within the
        task's deadline, its usage charged once (a failed call's too, when it has one)."""
        loop = asyncio.get_running_loop()
        estimate = request.prompt_chars // 4 + min(request.max_tokens, 256)
        ticket = await self.gate.acquire(
            self.key, estimate, agent=attempt.agent, task_id=attempt.task.id
        )
        timeout = attempt.task.timeout
        t0 = loop.time()
        try:
            async with asyncio.timeout(timeout):
                completion = await self.provider.complete(request)
        except ProviderError as exc:
            self._charge(ticket, exc.usage, estimate, state)
            if exc.error_class is ErrorClass.RATE_LIMITED and exc.retry_after:
                self.gate.pause(self.key, exc.retry_after)
            raise _Failed(
                exc.error_class, str(exc), exc.status, exc.retry_after, call_retryable=True
            ) from None
        except TimeoutError:
            raise _Failed(
                ErrorClass.TIMEOUT, f"no answer within {timeout:g}s", call_retryable=True
            ) from None
        except Exception as exc:  # a bug in a provider: reported, not retried
            raise _Failed(ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}") from None
        finally:
            state.busy += loop.time() - t0
        self._charge(ticket, completion.usage, estimate, state)
        return completion

    def _charge(self, ticket: object, usage: Usage | None, estimate: int, state: _Turns) -> None:
        """Settle a call's permit with its real tokens and count its usage, once."""
        if usage is None:  # a failed call that reported nothing: the estimate stands
            self.gate.settle(ticket, estimate)
            return
        if usage.cost_usd is None and self.price is not None:
            usage = self.price.apply(usage)
        self.gate.settle(ticket, usage.total_tokens)
        self.gate.spend(usage)
        state.usage = state.usage + usage

    def _check_size(self, attempt: Attempt, request: CompletionRequest, state: _Turns) -> None:
        """Refuse a request above ``max_prompt_tokens`` before any permit or call: resending
        it would fail the same way, so the failure (``context_length``) is not retried."""
        tokens = prompt_tokens(request)
        if tokens <= self.max_prompt_tokens:
            return
        turn = f" at model call {state.calls + 1}" if state.calls else ""
        raise _Failed(
            ErrorClass.CONTEXT_LENGTH,
            f"prompt of task {attempt.task.id!r} is ~{tokens:,} tokens{turn}, "
            f"over limits.max_prompt_tokens ({self.max_prompt_tokens:,})",
        )

    async def _run_tools(self, attempt: Attempt, c: Completion, state: _Turns) -> None:
        state.messages.append(Message(role="assistant", content=c.text, tool_calls=c.tool_calls))
        for call in c.tool_calls:
            spec = self.tools.get(call.name)
            if spec is None or self.tool_context is None:
                result = ToolResult(
                    ok=False,
                    content=f"error: unknown_tool: no tool {call.name!r}",
                    error_code="unknown_tool",
                )
            else:
                result = await call_tool(spec, call.arguments, self.tool_context)
            ok, content, code = result.ok, result.content, result.error_code
            self.gate.note(
                ToolCalled,
                task_id=attempt.task.id,
                attempt_id=attempt.attempt_id,
                agent=attempt.agent,
                tool=call.name,
                ok=ok,
                turn=state.calls,
                error_code=code,
            )
            state.messages.append(
                Message(role="tool", content=content, tool_call_id=call.id, name=call.name)
            )

    def _reask(
        self, attempt: Attempt, style: str, text: str, err: StyleError, state: _Turns
    ) -> None:
        if state.reasks >= self.max_reasks:
            raise _Failed(
                ErrorClass.OUTPUT_INVALID,
                f"not valid {style} after {state.reasks + 1} answers: {err}",
            )
        state.reasks += 1
        self.gate.note(
            OutputRejected,
            task_id=attempt.task.id,
            attempt_id=attempt.attempt_id,
            agent=attempt.agent,
            style=style,
            error=str(err),
            reask=state.reasks,
        )
        state.messages.append(Message(role="assistant", content=text))
        state.messages.append(
            Message(role="user", content=repair_prompt(style, err, styles=self.styles))
        )

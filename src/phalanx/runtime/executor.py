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

The tool journal: a model turn that asks for tools is noted (``AgentTurn``: its text and
calls), and each call when it starts (``ToolStarted``) and ends (``ToolCalled``: result,
digest, duration). Before a tool that writes runs (anything not ``read_only``), the gate
commits what was noted, so a crash during the call leaves a start without a result. An
attempt that resumes an interrupted one (``Attempt.resume``) replays its recorded turns
and results to the model as messages, runs the calls that never started, handles each
call in doubt (read-only: run again; otherwise ``retry.on_in_doubt``), then loops on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..agents.context import CHARS_PER_TOKEN
from ..agents.spec import AgentSpec
from ..agents.styles import Style, StyleError, get_style, parse_output, repair_prompt
from ..agents.tools import ToolContext, ToolResult, ToolSpec, call_tool
from ..agents.toolspec import validate_arguments
from ..agents.workspace import ToolError
from ..cost import ZERO, Price, Usage
from ..events import (
    AgentTurn,
    AnswerContinued,
    CallRetried,
    Event,
    InDoubtAction,
    LoopResumed,
    OutputRejected,
    ToolCalled,
    ToolInDoubt,
    ToolStarted,
)
from ..exceptions import ErrorClass, ProviderError
from ..journal import RecordedCall, RecordedLoop, RecordedTurn
from ..plan.model import DEFAULT_MAX_PROMPT_TOKENS, RetryConfig, Task, style_of
from ..providers import ProviderRecipe
from ..providers.base import (
    Completion,
    CompletionRequest,
    Message,
    Provider,
    ToolCall,
    ToolDef,
)
from ..redaction import redact
from .governor import Gate
from .retry import decide_retry
from .truncation import recover

__all__ = [
    "IN_DOUBT_NOTE",
    "AgentRunner",
    "Attempt",
    "Outcome",
    "Upstream",
    "build_request",
    "digest",
    "prompt_tokens",
]

UPSTREAM_CHARS = 4000  # per upstream result handed to a downstream prompt
SPAWN_TOOL = "spawn_tasks"  # the tool whose calls grow the run (runtime/growth.py)
IN_DOUBT_NOTE = (
    "error: in_doubt: this call of {tool} started before the run was interrupted and its "
    "outcome is unknown: it may or may not have taken effect. Check the current state "
    "(read the files, list them, run a read-only command) before doing it again."
)  # the tool result a resumed model gets for a call in doubt (retry.on_in_doubt: ask)
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
    resume: RecordedLoop | None = None  # the interrupted attempt's loop this one continues


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
    queued: float = 0.0  # seconds its calls waited for capacity (not in ``duration``)


def failed(attempt: Attempt, error_class: ErrorClass, error: str) -> Outcome:
    """An attempt that failed before it ran anything its engine could report (its host died,
    a bug under the executor): no time, no usage."""
    return Outcome(
        attempt_id=attempt.attempt_id,
        task_id=attempt.task.id,
        agent=attempt.agent,
        ok=False,
        duration=0.0,
        error_class=error_class,
        error=error,
    )


def build_request(
    spec: AgentSpec,
    attempt: Attempt,
    model: str,
    *,
    context: str = "",
    tools: tuple[ToolDef, ...] = (),
    inbox: str = "",
    styles: Mapping[str, Style] | None = None,
    systems: dict[tuple[str, str, str], tuple[Style, str]] | None = None,
) -> CompletionRequest:
    """Prompt = role + system prompt + style + context, then the task and upstream results.
    ``systems``: the system prompts made so far for ``spec`` and ``styles``, by style name,
    context and role description, each with the style it was made from (an agent's runner
    keeps them: the same for each of its attempts, unless the style was registered again
    since)."""
    task = attempt.task
    style = style_of(task, spec)  # a typed output (output_type, schema:) is a JSON style
    how = get_style(style, styles)
    key = (style, context, spec.description)  # (a role registered again: its description)
    made = systems.get(key) if systems is not None else None
    if made is not None and made[0] is how:  # the same style (not one registered since)
        system = made[1]
    else:
        system = _system_text(spec, how, context)
        if systems is not None:
            systems[key] = (how, system)
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
            Message(role="system", content=system),
            Message(role="user", content="\n\n".join(user)),
        ),
        style=style,
        json_schema=how.json_schema,
        answer_format=how.answer_format,
        tools=tools,
        run_id=attempt.run_id,
        task_id=task.id,
        agent=attempt.agent,
        role=spec.role,
        attempt_no=attempt.attempt_no,
        title=task.label,
    )


def _system_text(spec: AgentSpec, how: Style, context: str) -> str:
    system = [f"You are {spec.name}, the {spec.role} of a team of agents."]
    if spec.description:
        system.append(f"Your job: {spec.description}.")
    if spec.system_prompt:
        system.append(spec.system_prompt)
    system.append(how.instruction)
    if context:
        system.append("Context you work with:\n" + context)
    return "\n".join(s for s in system if s)


def digest(value: object) -> str:
    """A short fingerprint (16 hex digits of sha256) of a value as canonical JSON, or of a
    text as it is: what the tool journal keeps of arguments and results to compare them."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


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
    busy: float = 0.0  # service time: the model calls, their waits for capacity excluded
    queued: float = 0.0  # waits for capacity: rate-limit permits, a provider's own queue


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
        denied: frozenset[str] = frozenset(),
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
        self.denied = denied  # the run's tools this agent may not use (never run for it)
        # the system prompts made for its attempts, by style and context (build_request)
        self._systems_of: tuple[AgentSpec, Any] | None = None
        self._systems: dict[tuple[str, str, str], tuple[Style, str]] = {}

    def advice(self) -> list[str]:
        """What this agent asks of its model that the model may not manage (the provider's
        ``advise``; none from a provider without it), for a warning at the run's start."""
        advise = getattr(self.provider, "advise", None)
        if advise is None:
            return []
        style = get_style(self.spec.style, self.styles)
        system = len(self.spec.system_prompt or "") + len(style.instruction) + 200
        lines: list[str] = advise(
            style=style.name,
            answer_format=style.answer_format,
            tools=self.tool_defs,
            prompt_tokens=self.context_tokens + system // CHARS_PER_TOKEN,
        )
        return lines

    async def run(self, attempt: Attempt, *, inbox: str | None = None) -> Outcome:
        """One attempt to its outcome. ``inbox``: the messages and shared context for the
        prompt when they were gathered elsewhere (a remote host gets them from the driver)."""
        if self._systems_of != (self.spec, self.styles):  # compared by identity first
            self._systems_of, self._systems = (self.spec, self.styles), {}
        request = build_request(
            self.spec,
            attempt,
            self.model,
            context=self.context,
            tools=self.tool_defs,
            inbox=self.inbox(attempt) if inbox is None else inbox,
            styles=self.styles,
            systems=self._systems,
        )
        state = _Turns(messages=list(request.messages))
        try:
            if attempt.resume is not None:
                await self._replay(attempt, attempt.resume, state)
            text, parsed = await self._loop(attempt, request, state)
        except _Failed as f:
            return Outcome(
                attempt_id=attempt.attempt_id,
                task_id=attempt.task.id,
                agent=attempt.agent,
                ok=False,
                duration=state.busy,
                queued=state.queued,
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
            queued=state.queued,
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
            messages = tuple(state.messages)
            # the first turn sends the request as built (a replace costs microseconds)
            sent = (
                request
                if messages == request.messages
                else dataclasses.replace(request, messages=messages)
            )
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

    def _note(self, attempt: Attempt, kind: type[Event], **fields: Any) -> None:
        """Note an event of ``attempt`` (its task, attempt id and agent filled in)."""
        self.gate.note(
            kind,
            task_id=attempt.task.id,
            attempt_id=attempt.attempt_id,
            agent=attempt.agent,
            **fields,
        )

    async def _recover(
        self, attempt: Attempt, request: CompletionRequest, state: _Turns, cut: Completion
    ) -> Completion:
        """An answer cut at max_tokens, continued or retried as the plan says
        (runtime/truncation.py); every call it makes is one of this loop's calls."""
        turn = state.calls

        def note(**fields: Any) -> None:
            self._note(attempt, AnswerContinued, turn=turn, **fields)

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
                self._note(
                    attempt,
                    CallRetried,
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
        t0 = loop.time()
        ticket = await self.gate.acquire(
            self.key, estimate, agent=attempt.agent, task_id=attempt.task.id
        )
        timeout = attempt.task.timeout
        t1 = loop.time()
        state.queued += t1 - t0
        try:
            if timeout is None:  # no deadline: no timer to arm and cancel per call
                completion = await self.provider.complete(request)
            else:
                async with asyncio.timeout(timeout):
                    completion = await self.provider.complete(request)
        except ProviderError as exc:
            if exc.rate is not None:
                self.gate.learn(self.key, exc.rate)
            if exc.reached:
                self._charge(ticket, exc.usage, estimate, state)
            else:  # a refused connection: the server never saw it, the permit is not spent
                self.gate.release(ticket)
            if exc.error_class is ErrorClass.RATE_LIMITED and exc.retry_after:
                self.gate.pause(self.key, exc.retry_after)
            raise _Failed(
                exc.error_class, str(exc), exc.status, exc.retry_after, call_retryable=True
            ) from None
        except TimeoutError as exc:  # the task's deadline, or the provider's own
            why = f"no answer within {timeout:g}s" if timeout is not None else f"timed out: {exc}"
            raise _Failed(ErrorClass.TIMEOUT, redact(why)[:500], call_retryable=True) from None
        except Exception as exc:  # a bug in a provider: reported, not retried
            raise _Failed(ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}") from None
        finally:
            state.busy += loop.time() - t1
        # the provider's own queue (a pool, a concurrency limit) is wait, not service
        waited = min(max(0.0, getattr(completion, "queued", 0.0)), loop.time() - t1)
        state.busy -= waited
        state.queued += waited
        if completion.rate is not None:
            self.gate.learn(self.key, completion.rate)
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
        self._note(
            attempt,
            AgentTurn,
            turn=state.calls,
            tools=tuple(call.name for call in c.tool_calls),
            text=c.text,
            calls=tuple(
                {"id": call.id, "name": call.name, "arguments": call.arguments}
                for call in c.tool_calls
            ),
        )
        for index, call in enumerate(c.tool_calls):
            result = await self._run_call(attempt, call, state.calls, index)
            state.messages.append(
                Message(role="tool", content=result.content, tool_call_id=call.id, name=call.name)
            )

    async def _run_call(
        self, attempt: Attempt, call: ToolCall, turn: int, index: int
    ) -> ToolResult:
        """One tool call, journaled: its start (committed first when the tool writes), the
        tool, its end with the result."""
        spec = self.tools.get(call.name)
        writes = spec is not None and not spec.read_only
        where = {"task_id": attempt.task.id, "attempt_id": attempt.attempt_id}
        where |= {"agent": attempt.agent, "tool": call.name, "turn": turn, "index": index}
        self.gate.note(
            ToolStarted,
            **where,
            call_id=call.id,
            args_digest=self._args_digest(call),
            writes=writes,
        )
        if writes:  # durable before it runs: a crash now leaves it in doubt, not forgotten
            await self.gate.commit()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if spec is None or self.tool_context is None:
            result = self._refused(call.name)
        elif call.name == SPAWN_TOOL:  # the run grows: the driver's run answers
            result = await self._spawn(attempt, spec, call, f"{turn}.{index}")
        else:
            result = await call_tool(spec, call.arguments, self.tool_context)
        self.gate.note(
            ToolCalled,
            **where,
            ok=result.ok,
            error_code=result.error_code,
            call_id=call.id,
            result_digest=digest(result.content),
            duration=loop.time() - t0,
            error=None if result.ok else result.content.partition("\n")[0][:300],
            content=result.content,
        )
        return result

    async def _spawn(
        self, attempt: Attempt, spec: ToolSpec, call: ToolCall, where: str
    ) -> ToolResult:
        """A ``spawn_tasks`` call, its arguments checked here, the subtasks added by the run
        (``where``: the call's place in the loop, what fences a call made again)."""
        try:
            arguments = validate_arguments(spec.parameters, call.arguments)
        except ToolError as exc:
            return ToolResult(
                ok=False, content=f"error: {exc.code}: {exc.message}", error_code=exc.code
            )
        result = await self.gate.spawn(attempt.task.id, attempt.attempt_id, where, arguments)
        if result is None:  # no run to grow (an agent run on its own)
            assert self.tool_context is not None
            return await call_tool(spec, call.arguments, self.tool_context)
        assert isinstance(result, ToolResult)
        return result

    def _refused(self, name: str) -> ToolResult:
        """A call of a tool this agent does not have: a tool of the run outside its allowed
        tools (``tool_not_allowed``), or no tool at all (``unknown_tool``)."""
        if name in self.denied:
            yours = ", ".join(sorted(self.tools)) or "none"
            return ToolResult(
                ok=False,
                content=f"error: tool_not_allowed: {name!r} is not one of your tools "
                f"(yours: {yours}); it was not run",
                error_code="tool_not_allowed",
            )
        return ToolResult(
            ok=False, content=f"error: unknown_tool: no tool {name!r}", error_code="unknown_tool"
        )

    @staticmethod
    def _args_digest(call: ToolCall) -> str:
        return digest(redact(json.dumps(call.arguments, sort_keys=True, default=str)))

    # -- resuming an interrupted attempt's loop ------------------------------------------
    async def _replay(self, attempt: Attempt, loop: RecordedLoop, state: _Turns) -> None:
        """The recorded turns and results as messages (nothing recorded runs again); calls
        that never started run now; each call in doubt is handled (``_in_doubt``)."""
        self._note(
            attempt,
            LoopResumed,
            from_attempt=loop.attempt_id,
            turns=len(loop.turns),
            results=sum(c.state == "done" for t in loop.turns for c in t.calls),
            in_doubt=len(loop.in_doubt),
        )
        for turn in loop.turns:
            calls = tuple(
                ToolCall(id=c.call_id, name=c.tool, arguments=dict(c.arguments)) for c in turn.calls
            )
            state.messages.append(Message(role="assistant", content=turn.text, tool_calls=calls))
            state.calls = max(state.calls, turn.turn)
            for c, call in zip(turn.calls, calls, strict=True):
                content = await self._replayed(attempt, loop, turn, c, call)
                state.messages.append(
                    Message(role="tool", content=content, tool_call_id=c.call_id, name=c.tool)
                )

    async def _replayed(
        self,
        attempt: Attempt,
        loop: RecordedLoop,
        turn: RecordedTurn,
        c: RecordedCall,
        call: ToolCall,
    ) -> str:
        """The tool result a resumed model gets for one recorded call."""
        if c.state == "done":
            return c.result
        if c.state == "in_doubt":
            action = self._in_doubt(attempt, loop, turn, c)
            if action == "ask":
                return IN_DOUBT_NOTE.format(tool=c.tool)
        return (await self._run_call(attempt, call, turn.turn, c.index)).content

    def _in_doubt(
        self, attempt: Attempt, loop: RecordedLoop, turn: RecordedTurn, c: RecordedCall
    ) -> InDoubtAction:
        """What to do with a call that started and has no result: a read-only tool runs
        again; a writing one as ``retry.on_in_doubt`` says (``fail`` ends the attempt)."""
        spec = self.tools.get(c.tool)
        # a spawn whose answer is not journaled added nothing, or is fenced: run it again
        read_only = not c.writes or (spec is not None and spec.read_only) or c.tool == SPAWN_TOOL
        action: InDoubtAction = "rerun" if read_only else self.retry.on_in_doubt
        self._note(
            attempt,
            ToolInDoubt,
            from_attempt=loop.attempt_id,
            tool=c.tool,
            turn=turn.turn,
            index=c.index,
            call_id=c.call_id,
            args_digest=c.args_digest,
            action=action,
            content=IN_DOUBT_NOTE.format(tool=c.tool) if action == "ask" else "",
        )
        if action == "fail":
            raise _Failed(
                ErrorClass.IN_DOUBT,
                f"tool call {c.tool} (call {c.call_id or c.index + 1} of model call "
                f"{turn.turn}, attempt {loop.attempt_id}) was running when the run stopped; "
                "its outcome is unknown and retry.on_in_doubt is fail",
            )
        return action

    def _reask(
        self, attempt: Attempt, style: str, text: str, err: StyleError, state: _Turns
    ) -> None:
        if state.reasks >= self.max_reasks:
            raise _Failed(
                ErrorClass.OUTPUT_INVALID,
                f"not valid {style} after {state.reasks + 1} answers: {err}",
            )
        state.reasks += 1
        self._note(
            attempt,
            OutputRejected,
            style=style,
            error=str(err),
            reask=state.reasks,
        )
        state.messages.append(Message(role="assistant", content=text))
        state.messages.append(
            Message(role="user", content=repair_prompt(style, err, styles=self.styles))
        )

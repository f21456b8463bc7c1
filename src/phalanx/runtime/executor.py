"""Running one attempt of one task on one agent: prompt assembly, the provider call, the
deadline and error classification. Engine-agnostic: the local engine and Ray hosts call it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..agents import AgentSpec
from ..cost import ZERO, Price, Usage
from ..exceptions import ErrorClass, ProviderError
from ..plan import Task
from ..providers.base import CompletionRequest, Message, Provider
from ..redaction import redact
from ..styles import instruction
from .governor import Gate

__all__ = ["AgentRunner", "Attempt", "Outcome", "Upstream", "build_request"]

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
    error_class: ErrorClass | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None


def build_request(spec: AgentSpec, attempt: Attempt, model: str) -> CompletionRequest:
    """Prompt = role + system prompt + style + context, then the task and upstream results."""
    task = attempt.task
    style = task.style or spec.style
    system = [f"You are {spec.name}, the {spec.role} of a team of agents."]
    if spec.description:
        system.append(f"Your job: {spec.description}.")
    if spec.system_prompt:
        system.append(spec.system_prompt)
    system.append(instruction(style))
    system.extend(spec.context)
    user = [task.prompt]
    if attempt.upstream:
        user.append("Results from the tasks this one builds on:")
        for up in attempt.upstream:
            text = up.output
            if len(text) > UPSTREAM_CHARS:
                text = text[:UPSTREAM_CHARS] + f"\n[... {len(up.output) - UPSTREAM_CHARS} more]"
            user.append(f"### {up.task_id} (by {up.agent})\n{text}")
    return CompletionRequest(
        model=model,
        messages=(
            Message(role="system", content="\n".join(s for s in system if s)),
            Message(role="user", content="\n\n".join(user)),
        ),
        style=style,
        run_id=attempt.run_id,
        task_id=task.id,
        agent=attempt.agent,
        role=spec.role,
        attempt_no=attempt.attempt_no,
        title=task.label,
    )


class AgentRunner:
    """One agent's executor: its spec, its provider, the run's rate gate and its price."""

    __slots__ = ("gate", "key", "model", "price", "provider", "spec")

    def __init__(
        self,
        spec: AgentSpec,
        provider: Provider,
        model: str = "",
        *,
        gate: Gate | None = None,
        key: str = "",
        price: Price | None = None,
    ) -> None:
        self.spec = spec
        self.provider = provider
        self.model = model
        self.gate = gate or Gate()
        self.key = key or provider.name
        self.price = price

    async def run(self, attempt: Attempt) -> Outcome:
        request = build_request(self.spec, attempt, self.model)
        loop = asyncio.get_running_loop()
        estimate = request.prompt_chars // 4 + min(request.max_tokens, 256)
        ticket = await self.gate.acquire(
            self.key, estimate, agent=attempt.agent, task_id=attempt.task.id
        )
        timeout = attempt.task.timeout
        t0 = loop.time()
        try:
            if timeout is None:
                completion = await self.provider.complete(request)
            else:
                async with asyncio.timeout(timeout):
                    completion = await self.provider.complete(request)
        except ProviderError as exc:
            self.gate.settle(ticket, estimate)
            if exc.error_class is ErrorClass.RATE_LIMITED and exc.retry_after:
                self.gate.pause(self.key, exc.retry_after)
            return self._failed(
                attempt, loop.time() - t0, exc.error_class, str(exc), exc.status, exc.retry_after
            )
        except TimeoutError:
            return self._failed(
                attempt, loop.time() - t0, ErrorClass.TIMEOUT, f"no answer within {timeout:g}s"
            )
        except Exception as exc:  # a bug in a provider, hook or tool: reported, not retried
            return self._failed(
                attempt, loop.time() - t0, ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}"
            )
        usage = completion.usage
        if usage.cost_usd is None and self.price is not None:
            usage = self.price.apply(usage)
        self.gate.settle(ticket, usage.total_tokens)
        self.gate.spend(usage)
        return self._finished(
            attempt, loop.time() - t0, completion.text, completion.stop_reason, usage
        )

    @staticmethod
    def _finished(attempt: Attempt, duration: float, text: str, stop: str, usage: Usage) -> Outcome:
        # A cut-off or refused answer is never committed as a result.
        failure = _STOP_FAILURES.get(stop)
        return Outcome(
            attempt_id=attempt.attempt_id,
            task_id=attempt.task.id,
            agent=attempt.agent,
            ok=failure is None,
            duration=duration,
            usage=usage,
            output="" if failure else redact(text),
            error_class=failure[0] if failure else None,
            error=failure[1] if failure else None,
        )

    @staticmethod
    def _failed(
        attempt: Attempt,
        duration: float,
        cls: ErrorClass,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> Outcome:
        return Outcome(
            attempt_id=attempt.attempt_id,
            task_id=attempt.task.id,
            agent=attempt.agent,
            ok=False,
            duration=duration,
            error_class=cls,
            error=redact(message)[:500],
            status=status,
            retry_after=retry_after,
        )

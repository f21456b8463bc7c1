"""Agents hosted away from the driver: what travels, and the host's side of the link.

A remote engine (Ray) runs many agents in one host process. The driver keeps the
scheduler, the rate governor, budgets and the journal; a host gets each agent's
:class:`AgentBlueprint` (no secrets: providers are rebuilt on the host from their name and
the plan's options, and read their keys from the host's environment) and runs attempts.

The host talks back through an outbox of small messages that the driver collects:
``spend`` (usage as soon as a call ends, so budgets hold), ``note`` (events such as tool
calls and call retries), ``settle``/``pause``/``release``/``learn`` (the governor: a
permit's real tokens, a 429's pause, a permit given back, a response's rate-limit headers;
a host that saw a pause or headers asks the driver for that key's permits from then on),
``acquire`` (a rate permit,
for keys the driver governs) and ``tool`` (tools that must run on the driver: messages and
the shared context). The driver answers ``acquire`` and ``tool`` with :meth:`HostCore.reply`.
This module is plain asyncio: the Ray actor is a thin shell around :class:`HostCore`, and
tests drive a core directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agents.spec import AgentSpec
from ..agents.styles import Style, Styles
from ..agents.tools import ToolContext, ToolResult, ToolSpec
from ..agents.workspace import ToolError, Workspace
from ..cost import Price, Usage
from ..events import Event
from ..exceptions import ErrorClass
from ..plan.model import DEFAULT_MAX_PROMPT_TOKENS, RetryConfig
from ..providers import Provider, ProviderRecipe
from ..redaction import redact
from .executor import AgentRunner, Attempt, Outcome, failed
from .governor import Gate

__all__ = [
    "AgentBlueprint",
    "HostCore",
    "Message",
    "blueprint_of",
    "custom_styles",
]

# A message from a host to the driver: (kind, *fields); see the module docstring.
Message = tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class AgentBlueprint:
    """Everything a host needs to rebuild an agent's executor, and nothing secret."""

    spec: AgentSpec
    key: str  # provider:model, the governor's key
    model: str
    provider: ProviderRecipe | Provider  # a recipe, or a user's own provider object
    price: Price | None = None
    tools: tuple[ToolSpec, ...] = ()
    driver_tools: frozenset[str] = frozenset()  # run on the driver (messages, context)
    workspace: str = ""
    allowed_commands: frozenset[str] = frozenset()
    command_timeout: float = 60.0
    sandbox: str = "bwrap"
    network: bool = False
    cpu_seconds: float | None = None
    memory_mb: int = 4096
    env_pass: frozenset[str] = frozenset()  # names only: the values are the host's own
    context: str = ""
    context_tokens: int = 0
    max_turns: int = 8
    max_reasks: int = 2
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
    retry: RetryConfig = field(default_factory=RetryConfig)  # the plan's: call retries


def blueprint_of(runner: AgentRunner, driver_tools: frozenset[str]) -> AgentBlueprint:
    """The blueprint of a driver-side runner (hooks stay on the driver, where they run)."""
    ctx = runner.tool_context
    return AgentBlueprint(
        spec=dataclasses.replace(runner.spec, hooks=()),
        key=runner.key,
        model=runner.model,
        provider=runner.recipe if runner.recipe is not None else runner.provider,
        price=runner.price,
        tools=tuple(runner.tools.values()),
        driver_tools=frozenset(t for t in runner.tools if t in driver_tools),
        workspace=str(ctx.workspace.root) if ctx is not None else "",
        allowed_commands=ctx.allowed_commands if ctx is not None else frozenset(),
        command_timeout=ctx.command_timeout if ctx is not None else 60.0,
        **_sandbox_of(ctx),
        context=runner.context,
        context_tokens=runner.context_tokens,
        max_turns=runner.max_turns,
        max_reasks=runner.max_reasks,
        max_prompt_tokens=runner.max_prompt_tokens,
        retry=runner.retry,
    )


def _sandbox_of(ctx: ToolContext | None) -> dict[str, Any]:
    if ctx is None:
        return {}
    return {
        "sandbox": ctx.sandbox,
        "network": ctx.network,
        "cpu_seconds": ctx.cpu_seconds,
        "memory_mb": ctx.memory_mb,
        "env_pass": ctx.env_pass,
    }


def custom_styles(runners: Iterable[AgentRunner]) -> dict[str, Style]:
    """The run's styles beyond the shipped built-ins (a plan's own, those registered on the
    driver): what the hosts must be sent to parse and prompt the same way."""
    out: dict[str, Style] = {}
    for r in runners:
        if isinstance(r.styles, Styles):
            out.update(r.styles.custom())
    return out


class _HostGate(Gate):
    """The gate a host's executors see: permits are local for keys nobody governs, and
    everything else goes to the driver through the outbox."""

    def __init__(self, core: HostCore) -> None:
        self.core = core

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        if key not in self.core.governed:
            return None
        return await self.core.request("acquire", key, tokens, agent, task_id)

    def settle(self, ticket: object, tokens: int) -> None:
        if ticket is not None:
            self.core.post(("settle", ticket, tokens))

    def pause(self, key: str, seconds: float) -> None:
        self.core.governed.add(key)  # from now on this host asks the driver for permits
        self.core.post(("pause", key, seconds))

    def release(self, ticket: object) -> None:
        if ticket is not None:
            self.core.post(("release", ticket))

    def learn(self, key: str, rate: object) -> None:
        self.core.governed.add(key)  # the driver now knows the key's limits: ask it
        self.core.post(("learn", key, rate))

    def spend(self, usage: Usage) -> None:
        self.core.post(("spend", usage))

    def stopped(self) -> str | None:
        return self.core.stopped

    def note(self, event: type[Event], **fields: Any) -> None:
        self.core.post(("note", event, fields))

    async def commit(self) -> None:
        """The driver journals what was noted before (messages keep their order) and
        answers once it is committed."""
        await self.core.request("commit")

    async def spawn(self, task_id: str, attempt_id: int, call: str, arguments: Any) -> Any:
        """The driver's run adds the subtasks (and, with wait, answers once they ended)."""
        return await self.core.request("spawn", task_id, attempt_id, call, arguments)


@dataclass
class _Workspaces:
    """One Workspace per root on this host."""

    by_root: dict[str, Workspace] = field(default_factory=dict)

    def get(self, root: str) -> Workspace:
        ws = self.by_root.get(root)
        if ws is None:
            ws = self.by_root[root] = Workspace(root or os.getcwd(), create=True)
        return ws


class HostCore:
    """The agents of one host and the attempts running on them."""

    def __init__(
        self,
        host_id: str,
        blueprints: Mapping[str, AgentBlueprint] | None = None,
        *,
        governed: frozenset[str] = frozenset(),
        styles: Mapping[str, Style] | None = None,
        stopped: str | None = None,
    ) -> None:
        self.host_id = host_id
        self.governed: set[str] = set(governed)
        self.stopped = stopped
        self.styles = Styles((styles or {}).values())  # this host's, never process-wide
        self.gate = _HostGate(self)
        self.providers: dict[str, Provider] = {}
        self.workspaces = _Workspaces()
        self.runners: dict[str, AgentRunner] = {}
        self.outbox: list[Message] = []
        self._has_mail: asyncio.Event | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.inflight: dict[int, asyncio.Task[Outcome]] = {}
        for name, bp in (blueprints or {}).items():
            self.add(name, bp)

    # -- agents ----------------------------------------------------------------------------
    def add(self, name: str, bp: AgentBlueprint) -> None:
        provider = bp.provider
        if isinstance(provider, ProviderRecipe):
            cached = self.providers.get(provider.name)
            if cached is None:
                cached = self.providers[provider.name] = provider.build()
            provider = cached
        ctx = ToolContext(
            workspace=self.workspaces.get(bp.workspace),
            allowed_commands=bp.allowed_commands,
            command_timeout=bp.command_timeout,
            sandbox=bp.sandbox,
            network=bp.network,
            cpu_seconds=bp.cpu_seconds,
            memory_mb=bp.memory_mb,
            env_pass=bp.env_pass,
            agent=name,
        )
        runner = AgentRunner(
            bp.spec,
            provider,
            bp.model,
            gate=self.gate,
            key=bp.key,
            price=bp.price,
            tools={
                t.name: self._driver_tool(t) if t.name in bp.driver_tools else t for t in bp.tools
            },
            tool_context=ctx,
            context=bp.context,
            context_tokens=bp.context_tokens,
            max_turns=bp.max_turns,
            max_reasks=bp.max_reasks,
            max_prompt_tokens=bp.max_prompt_tokens,
            retry=bp.retry,
            styles=self.styles,
        )
        self.runners[name] = runner

    def remove(self, name: str) -> None:
        self.runners.pop(name, None)

    def _driver_tool(self, spec: ToolSpec) -> ToolSpec:
        """A tool that runs on the driver: the call travels there and its result back."""

        async def on_driver(ctx: ToolContext, **arguments: Any) -> str:
            result: ToolResult = await self.request("tool", ctx.agent, spec.name, arguments)
            if not result.ok:  # the same code and text as if the tool had run here
                head, _, detail = result.content.partition("\n")
                message = head.removeprefix(f"error: {result.error_code}: ")
                raise ToolError(result.error_code or "tool_crashed", message, detail=detail)
            return result.content

        return dataclasses.replace(spec, func=on_driver, needs_context=True)

    # -- attempts --------------------------------------------------------------------------
    async def run(
        self, attempt: Attempt, inbox: str = "", blueprint: AgentBlueprint | None = None
    ) -> tuple[list[Message], Outcome]:
        """Run one attempt; returns the messages posted so far (its spend among them, so
        the driver counts it before the outcome) and the outcome."""
        if blueprint is not None and attempt.agent not in self.runners:
            self.add(attempt.agent, blueprint)
        runner = self.runners.get(attempt.agent)
        if runner is None:
            outcome = self._failed(attempt, ErrorClass.LOST, f"agent not on host {self.host_id}")
            return self.drain(), outcome
        task = asyncio.ensure_future(runner.run(attempt, inbox=inbox))
        self.inflight[attempt.attempt_id] = task
        try:
            outcome = await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # a bug below the executor: reported, not retried
            outcome = self._failed(attempt, ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            self.inflight.pop(attempt.attempt_id, None)
        return self.drain(), outcome

    def cancel(self, attempt_id: int) -> bool:
        task = self.inflight.pop(attempt_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def _failed(self, attempt: Attempt, cls: ErrorClass, error: str) -> Outcome:
        return failed(attempt, cls, redact(error)[:500])

    # -- the link to the driver ------------------------------------------------------------
    def post(self, message: Message) -> None:
        self.outbox.append(message)
        if self._has_mail is not None:
            self._has_mail.set()

    def drain(self) -> list[Message]:
        out, self.outbox = self.outbox, []
        return out

    async def request(self, kind: str, *fields: Any) -> Any:
        """Ask the driver and wait for its :meth:`reply`."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.post((kind, rid, *fields))
        try:
            return await fut
        finally:
            self._waiting.pop(rid, None)

    def reply(self, request_id: int, value: Any) -> None:
        fut = self._waiting.get(request_id)
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def messages(self, wait: float) -> list[Message]:
        """The outbox, after waiting up to ``wait`` seconds for something to be in it."""
        if not self.outbox and wait > 0:
            if self._has_mail is None:
                self._has_mail = asyncio.Event()
            self._has_mail.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._has_mail.wait()
        return self.drain()

    def set_stopped(self, reason: str | None) -> None:
        self.stopped = reason

    def govern(self, key: str) -> None:
        self.governed.add(key)

    async def aclose(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

"""The run's hooks: which ``HookRunner`` serves each agent (the run's hooks, then the agent's
own), firing a point with the run's payload, and the points the run fires in the
background (``after_task``, ``on_error``, ``on_message``, ``on_breaker``, ``on_scale``)
without waiting for them. A hook that fails is reported as an alert, never raised; the
run's end lets hook calls in flight finish (bounded) before ``on_run_end``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..agents.hooks import HookOutcome, HookRunner, from_config, payload
from ..agents.spec import AgentSpec
from ..events import Event, MessageSent
from ..exceptions import ErrorClass
from ..plan.model import Plan, Task
from .executor import Attempt, Outcome, failed

__all__ = ["RunHooks", "task_info", "vetoed"]


class RunHooks:
    """The run's hook runners and the hook calls it has in flight."""

    def __init__(
        self,
        base: HookRunner,
        agents: Sequence[AgentSpec],
        *,
        run_id: str,
        now: Callable[[], float],
        emit: Callable[[Event], None],
        env_pass: Sequence[str] = (),
    ) -> None:
        self.base = base  # the run's own hooks
        self.per_agent = {
            a.name or "": base.combined(from_config(list(a.hooks), env_pass=env_pass))
            if a.hooks
            else base
            for a in agents
        }
        self.run_id = run_id
        self.now = now
        self.emit = emit
        self._tasks: set[asyncio.Task[Any]] = set()

    def for_agent(self, agent: str) -> HookRunner:
        return self.per_agent.get(agent, self.base)

    def add_agent(self, agent: str) -> None:
        self.per_agent.setdefault(agent, self.base)

    async def fire(
        self, point: str, hooks: HookRunner, agent: str | None, **fields: Any
    ) -> HookOutcome:
        if point not in hooks.points():
            return HookOutcome()
        outcome = await hooks.fire(point, payload(point, run_id=self.run_id, agent=agent, **fields))
        for failure in outcome.failures:
            self.emit(failure.alert(self.now(), agent))
        return outcome

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def fire_soon(self, point: str, hooks: HookRunner, agent: str | None, **fields: Any) -> None:
        """Fire ``point`` in the background, when some hook listens to it."""
        if point in hooks.points():
            self.background(self.fire(point, hooks, agent, **fields))

    async def run_start(self, plan: Plan, session: int) -> None:
        await self.fire(
            "on_run_start",
            self.base,
            None,
            plan=plan.name,
            session=session,
            tasks=len(plan.tasks),
            agents=[a.name for a in plan.agents],
        )

    def message(self, event: MessageSent) -> None:
        self.fire_soon(
            "on_message",
            self.base,
            event.sender,
            message_id=event.message_id,
            recipients=list(event.recipients),
            kind=event.kind,
            task_id=event.task_id,
            tokens=event.tokens,
        )

    def breaker(self, scope: str, key: str, state: str, reason: str) -> None:
        hooks = self.per_agent.get(key, self.base)
        agent = key if scope == "agent" else None
        self.fire_soon("on_breaker", hooks, agent, scope=scope, key=key, state=state, reason=reason)

    def scaled(self, role: str, action: str, before: int, after: int, reason: str) -> None:
        self.fire_soon(
            "on_scale",
            self.base,
            None,
            role=role,
            action=action,
            before=before,
            after=after,
            reason=reason,
        )

    def after_task(self, o: Outcome, task: Task, retrying: bool) -> None:
        """``after_task`` for a success, ``on_error`` for a failure (``retrying``: it will
        be tried again)."""
        hooks = self.for_agent(o.agent)
        points = hooks.points()
        if "after_task" not in points and "on_error" not in points:
            return  # nobody listens: the payload is not built
        info = task_info(task)
        if o.ok:
            self.fire_soon(
                "after_task",
                hooks,
                o.agent,
                task=info,
                output=o.output[:4000],
                usage=o.usage.to_dict(),
            )
        else:
            self.fire_soon(
                "on_error",
                hooks,
                o.agent,
                task=info,
                error_class=str(o.error_class),
                error=o.error,
                retrying=retrying,
            )

    async def end(self, status: str, reason: Callable[[], str]) -> None:
        """Let hook calls in flight finish (bounded), then fire on_run_end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        if "on_run_end" in self.base.points():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self.fire("on_run_end", self.base, None, status=status, reason=reason())


def task_info(t: Task) -> dict[str, Any]:
    """A task as hooks see it."""
    return {
        "id": t.id,
        "title": t.label,
        "category": t.category,
        "role": t.role,
        "prompt": t.prompt[:2000],
    }


def vetoed(attempt: Attempt, reason: str) -> Outcome:
    """The outcome of an attempt a ``before_task`` hook vetoed."""
    return failed(attempt, ErrorClass.VETOED, f"vetoed by a before_task hook: {reason}")

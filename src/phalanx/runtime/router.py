"""AI-driven distribution: policy ``llm``. A router model picks the agent for each task.

Routing never delays work: when a task becomes ready, the router is asked in the
background (a few requests at a time, through the run's rate gate); when the task is
dispatched, the router's pick is used if it has answered and that agent is free, otherwise
the deterministic ``best_fit`` decides (the router was slow, failed, or picked a busy
agent). The run counts both and says so at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from ..plan.model import RouterConfig, Task
from ..providers.base import CompletionRequest, Message, Provider
from .governor import Gate
from .policies import AgentSlot, BestFit, fit_score

__all__ = ["LLMPolicy", "RouterConfig"]


class LLMPolicy:
    """The ``llm`` policy: the router's pick when it has one, ``best_fit`` otherwise."""

    name = "llm"

    def __init__(
        self, provider: Provider, config: RouterConfig, gate: Gate | None = None, key: str = ""
    ) -> None:
        self.provider, self.config = provider, config
        self.gate, self.key = gate or Gate(), key or provider.name
        self.fallback = BestFit()
        self.hints: dict[str, str] = {}
        self.routed = 0
        self.fell_back = 0
        self.failures = 0
        self._sem = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def pick(self, task: Task, candidates: Sequence[AgentSlot]) -> AgentSlot:
        hint = self.hints.pop(task.id, None)
        chosen = next((a for a in candidates if a.name == hint), None)
        if chosen is not None:
            self.routed += 1
            return chosen
        self.fell_back += 1
        return self.fallback.pick(task, candidates)

    def prefetch(self, task: Task, agents: Sequence[AgentSlot], run_id: str) -> None:
        """Ask the router about ``task`` in the background."""
        able = [
            a
            for a in agents
            if (task.role is None or a.role == task.role) and task.skills <= a.skills
        ]
        if len(able) < 2:
            return  # nothing to choose
        job = asyncio.get_running_loop().create_task(self._route(task, able, run_id))
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    async def _route(self, task: Task, able: Sequence[AgentSlot], run_id: str) -> None:
        async with self._sem:
            try:
                async with asyncio.timeout(self.config.timeout):
                    name = await self._ask(task, able, run_id)
            except Exception:  # slow, failed or nonsense: best_fit decides
                self.failures += 1
                return
        if name in {a.name for a in able}:
            self.hints[task.id] = name

    async def _ask(self, task: Task, able: Sequence[AgentSlot], run_id: str) -> str:
        lines = [
            f"- {a.name}: role {a.role}; skills {', '.join(sorted(a.skills)) or 'none'}; "
            f"specialities {', '.join(sorted(a.specialities)) or 'none'}; fit {fit_score(task, a)}"
            for a in able
        ]
        request = CompletionRequest(
            model=self.key.partition(":")[2],
            messages=(
                Message(
                    role="system",
                    content="You route tasks to the best agent of a team. "
                    'Answer with JSON: {"agent": NAME}.',
                ),
                Message(
                    role="user",
                    content=f"Task ({task.category}): {task.label}\n"
                    f"{task.prompt[:1500]}\n\nAgents:\n" + "\n".join(lines),
                ),
            ),
            max_tokens=64,
            style="json",
            json_schema={
                "type": "object",
                "required": ["agent"],
                "additionalProperties": False,
                "properties": {"agent": {"enum": [a.name for a in able]}},
            },
            run_id=run_id,
            task_id=task.id,
            agent="router",
            role="router",
        )
        ticket = await self.gate.acquire(self.key, 400, agent="router", task_id=task.id)
        completion = await self.provider.complete(request)
        if completion.rate is not None:
            self.gate.learn(self.key, completion.rate)
        self.gate.settle(ticket, completion.usage.total_tokens)
        self.gate.spend(completion.usage)
        return str(json.loads(completion.text)["agent"])

    def summary(self) -> str:
        total = self.routed + self.fell_back
        return (
            f"the router model placed {self.routed} of {total} tasks; best_fit placed "
            f"{self.fell_back} (router slow, failed {self.failures} times, or its pick busy)"
        )

    async def close(self) -> None:
        for job in list(self._tasks):
            job.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""Test helpers that ship with phalanx: a virtual-time event loop and a scripted model.

``run_virtual(coro)`` runs a coroutine on an event loop whose clock jumps straight to the
next timer whenever nothing is ready, so an hour of simulated rate limits, backoffs and
latencies passes in milliseconds, deterministically. Every part of phalanx that waits uses
the loop's clock (sleeps, timeouts, retry timers, the governor, event timestamps).
"""

from __future__ import annotations

import asyncio
import re
import selectors
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from .cost import Usage
from .providers.base import Completion, CompletionRequest

__all__ = ["EchoProvider", "ScriptedProvider", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class _VirtualSelector:
    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            return self._real.select(0.01)  # only real I/O (threads, pipes) can wake us
        if timeout > 0:
            self._loop.advance(timeout)
        return self._real.select(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` advances only when it would otherwise wait."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._virtual_now = start
        real: selectors.BaseSelector = self._selector  # type: ignore[has-type]
        self._selector = _VirtualSelector(real, self)

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


Step = Any  # a Completion, a str (a final answer), or a callable(request) -> either


class ScriptedProvider:
    """A model that answers from a script, per task: ``{task_id: [step, step, ...]}`` (or one
    list for every task). A step is a :class:`Completion`, a plain string (a final answer)
    or a callable taking the request. Every request is kept in ``requests`` for asserts."""

    simulated = True

    def __init__(
        self, script: Mapping[str, Sequence[Step]] | Sequence[Step], name: str = "scripted"
    ) -> None:
        self.name = name
        self._shared = None if isinstance(script, Mapping) else list(script)
        self._per_task = (
            {k: list(v) for k, v in script.items()} if isinstance(script, Mapping) else {}
        )
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        steps = self._shared if self._shared is not None else self._per_task.get(request.task_id)
        if not steps:
            raise AssertionError(f"the script has no step left for task {request.task_id!r}")
        step = steps.pop(0)
        if callable(step):
            step = step(request)
        if isinstance(step, str):
            step = Completion(text=step, usage=Usage(input_tokens=10, output_tokens=5))
        assert isinstance(step, Completion)
        return step

    async def aclose(self) -> None:
        return None


_UPSTREAM = re.compile(r"^### (\S+) \(by [^)]*\)\n(.*?)(?=\n\n### |\Z)", re.M | re.S)


class EchoProvider:
    """A stateless model whose answer shows what it was handed: ``TASK[UP1; UP2]`` where
    ``UPn`` are the upstream results in its prompt, in order (``TASK[]`` for none). A chain
    a -> b -> c answers ``c[b[a[]]]``, so a test can check hand-off on any engine."""

    simulated = True
    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def complete(self, request: CompletionRequest) -> Completion:
        if self.delay:
            await asyncio.sleep(self.delay)
        user = request.messages[-1].content
        ups = [m.group(2).strip() for m in _UPSTREAM.finditer(user)]
        text = f"{request.task_id}[{'; '.join(ups)}]"
        return Completion(text=text, usage=Usage(input_tokens=len(user) // 4, output_tokens=5))

    async def aclose(self) -> None:
        return None

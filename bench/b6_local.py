"""B6: the embedded model in parallel. ``local:smollm2`` (SmolLM2-135M via llama-cpp-python)
answering a few short prompts: 2 agents on a pool of 2 instances, 1 thread each, against 1
agent on a pool of 1. Figure: output tokens per second of wall time over the whole run
(answers are decoded at temperature 0 with a fixed seed, so both runs produce the same
tokens). Models are loaded before timing. Target: >= 1.5x.

Where the time goes is profiled inside the worker threads (cProfile per call), and the
machine's own two-way parallelism is measured by the suite (``parallel_capacity``)."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import threading
import time
from collections.abc import Callable
from typing import Any

import phalanx
from phalanx import Plan
from phalanx.providers import local as local_mod
from phalanx.providers.base import Completion, CompletionRequest, Message
from phalanx.providers.local import LocalModelProvider

from .common import (
    BenchError,
    Config,
    Row,
    capacity_once,
    log,
    median,
    paired,
    settle,
    spread,
    state_dir,
    summarise,
)

TARGET = 1.5
PROMPTS = (
    "Name one primary color. Answer in one short sentence.",
    "Name one fruit. Answer in one short sentence.",
    "Say hello in one short sentence.",
    "Name one animal that lives in the sea. Answer in one short sentence.",
    "Name a day of the week. Answer in one short sentence.",
    "Name one planet. Answer in one short sentence.",
    "Name one musical instrument. Answer in one short sentence.",
    "Name one kind of tree. Answer in one short sentence.",
    "Name one vegetable. Answer in one short sentence.",
    "Name one country in Europe. Answer in one short sentence.",
    "Name one color of the rainbow. Answer in one short sentence.",
    "Name one season of the year. Answer in one short sentence.",
)


class _Shared:
    """The warm provider, lent to each run: ``phalanx.run`` closes its providers at the end,
    this one stays loaded for the next measurement."""

    simulated = False

    def __init__(self, provider: LocalModelProvider) -> None:
        self.provider = provider
        self.name = provider.name

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self.provider.complete(request)

    async def aclose(self) -> None:
        return None


def _plan(agents: int, prompts: tuple[str, ...]) -> Plan:
    return Plan.from_dict(
        {
            "name": f"b6-{agents}",
            "provider": "local:smollm2",
            "agents": [{"role": "generalist", "count": agents}],
            "tasks": [{"id": f"q{i}", "prompt": p} for i, p in enumerate(prompts)],
        }
    )


async def _warm(pool: int) -> LocalModelProvider:
    provider = LocalModelProvider(
        "smollm2", {"pool_size": pool, "threads": 1, "max_tokens": 256, "temperature": 0}
    )
    warm = CompletionRequest(
        model="smollm2", messages=(Message(role="user", content="Hi"),), max_tokens=2
    )
    await asyncio.gather(*(provider.complete(warm) for _ in range(pool)))  # load every instance
    return provider


async def _once(provider: LocalModelProvider, plan: Plan) -> dict[str, Any]:
    settle()
    with state_dir() as d:
        t0 = time.perf_counter()
        result = await phalanx.run(
            plan, state=d, custom_providers={"local:smollm2": _Shared(provider)}
        )
        wall = time.perf_counter() - t0
    if result.status != "succeeded":
        raise BenchError(f"B6 run {plan.name} ended {result.status}: {result.snapshot.reason}")
    return {"wall_s": wall, "tokens": result.usage.output_tokens}


async def _measure(
    cfg: Config, prompts: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    """Per repeat, back to back: the machine's two-way capacity, 1 agent, 2 agents."""
    one_agent, two_agents = await _warm(1), await _warm(2)
    plans = _plan(1, prompts), _plan(2, prompts)
    ones, twos, capacity = [], [], []
    try:
        for i in range(cfg.repeats):
            capacity.append(await asyncio.to_thread(capacity_once, cfg))
            ones.append(await _once(one_agent, plans[0]))
            twos.append(await _once(two_agents, plans[1]))
            log(
                f"B6 run {i + 1}/{cfg.repeats}: machine capacity {capacity[-1]:.2f}x, "
                f"1 agent {ones[-1]['wall_s']:.2f}s, 2 agents {twos[-1]['wall_s']:.2f}s "
                f"({ones[-1]['tokens']} tokens)"
            )
    finally:
        await one_agent.aclose()
        await two_agents.aclose()
    return ones, twos, capacity


def _profiled(pool: int, prompts: tuple[str, ...]) -> str:
    """One 2-agent run with a cProfile per model call, in the worker threads."""
    lock = threading.Lock()
    stats: list[pstats.Stats] = []
    real: Callable[..., dict[str, Any]] = local_mod._chat

    def chat(llm: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        prof = cProfile.Profile()
        prof.enable()
        try:
            return real(llm, kwargs)
        finally:
            prof.disable()
            with lock:
                stats.append(pstats.Stats(prof))

    async def once() -> None:
        provider = await _warm(pool)
        try:
            await _once(provider, _plan(pool, prompts))
        finally:
            await provider.aclose()

    local_mod._chat = chat
    try:
        asyncio.run(once())
    finally:
        local_mod._chat = real
    merged = stats[0]
    for s in stats[1:]:
        merged.add(s)
    return summarise(merged, f"the model calls of one {pool}-agent run, in their worker threads")


def run(cfg: Config) -> list[Row]:
    prompts = PROMPTS if not cfg.smoke else PROMPTS[:2]
    one, two, capacity = asyncio.run(_measure(cfg, prompts))
    rate1 = [r["tokens"] / r["wall_s"] for r in one]
    rate2 = [r["tokens"] / r["wall_s"] for r in two]
    b, p = median(rate1), median(rate2)
    ratio = paired(rate2, rate1)
    cap = median(capacity)
    row = Row(
        id="B6",
        title=f"embedded model: local:smollm2, {len(prompts)} short prompts, 2 agents "
        "(pool 2, 1 thread each)",
        figure=f"{p:.1f} tokens/s",
        baseline=f"{b:.1f} tokens/s (1 agent, pool 1, 1 thread)",
        ratio=ratio,
        target=f">= {TARGET:g}x baseline",
        passed=ratio >= TARGET,
        note=f"2 agents {spread(rate2, 'tokens/s')}; 1 agent {spread(rate1, 'tokens/s')}; "
        f"{one[0]['tokens']} output tokens per run. Measured right before each pair of runs, "
        f"two CPU-bound processes got {cap:.2f}x the work of one done on this machine "
        f"({spread(capacity, 'x', '{:.2f}')}; 2.00x on two free cores): that bounds any two-way "
        "speedup here.",
        data={"one_agent": one, "two_agents": two, "parallel_capacity": capacity},
    )
    if not row.passed and cfg.profile:
        row.profile = _profiled(2, prompts)
    return [row]

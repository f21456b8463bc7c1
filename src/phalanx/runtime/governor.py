"""The rate governor: one per run, shared by every agent.

Per ``provider:model`` key it keeps a sliding 60 s window of requests (at most ``rpm``) and of
tokens (at most ``tpm``), so no 60 s window ever holds more than the limit. A 429's
Retry-After pauses the key for everyone. Waiters are served first come, first served.
Time is the event loop's clock, so a virtual-time loop drives it in tests.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..cost import Usage
from ..events import Event
from ..plan.config import RateLimit

__all__ = ["Gate", "RateGovernor", "RateLimit", "public_defaults"]

WINDOW = 60.0


# Conservative defaults for the hosted APIs (their lowest paid tiers); a plan's
# `limits.rate_limits` raises or lowers them. Local and simulated models have none.
DEFAULT_LIMITS: dict[str, RateLimit] = {
    "anthropic": RateLimit(rpm=50, tpm=40_000),
    "openai": RateLimit(rpm=500, tpm=200_000),
}

_BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL"}


def public_defaults(
    providers: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] | None = None
) -> dict[str, RateLimit]:
    """The documented default limits, only for kinds that talk to the public endpoint: a
    ``base_url`` (in the plan or the SDK's own variable) is a gateway or a local server
    whose limits are not the public tier's, so none is invented for it."""
    env = os.environ if environ is None else environ
    return {
        kind: limit
        for kind, limit in DEFAULT_LIMITS.items()
        if not (providers.get(kind) or {}).get("base_url") and not env.get(_BASE_URL_ENV[kind])
    }


OnWait = Callable[[str, str, str, float], None]  # (agent, task_id, key, seconds)


class _Key:
    __slots__ = ("limit", "lock", "paused_until", "queued", "requests", "token_sum", "tokens")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.lock = asyncio.Lock()
        self.requests: deque[float] = deque()
        self.tokens: deque[list[float]] = deque()  # [time, tokens] (tokens settle later)
        self.token_sum = 0.0
        self.paused_until = 0.0
        self.queued = 0

    def expire(self, now: float) -> None:
        start = now - WINDOW - self.limit.margin
        while self.requests and self.requests[0] <= start:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= start:
            self.token_sum -= self.tokens.popleft()[1]

    def wait_for(self, now: float, tokens: float) -> float:
        """Seconds until one more request of ``tokens`` fits (0 when it fits now)."""
        self.expire(now)
        wait = max(0.0, self.paused_until - now)
        rpm, tpm = self.limit.rpm, self.limit.tpm
        window = WINDOW + self.limit.margin
        if rpm is not None and len(self.requests) >= rpm:
            wait = max(wait, self.requests[-rpm] + window - now)
        if tpm is not None and self.tokens and self.token_sum + tokens > tpm:
            freed, need = 0.0, self.token_sum + tokens - tpm
            for t, n in self.tokens:
                freed += n
                if freed >= need:
                    wait = max(wait, t + window - now)
                    break
        return wait


class Gate:
    """What an agent's executor sees of the run: rate permits, spend, budgets and notes.

    The base class allows everything and records nothing; the orchestrator gives executors
    one backed by the run's governor and budgets (a proxy to the driver on remote engines).
    """

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        return None

    def settle(self, ticket: object, tokens: int) -> None:
        return None

    def pause(self, key: str, seconds: float) -> None:
        return None

    def governs(self, key: str) -> bool:
        """Whether permits for ``key`` are limited (a remote host must ask for them)."""
        return False

    def spend(self, usage: Usage) -> None:
        """One model call's usage, as soon as it is known (budgets stop runaway loops)."""
        return None

    def stopped(self) -> str | None:
        """Why no further model call may start (a spent budget), or None."""
        return None

    def note(self, event: type[Event], **fields: Any) -> None:
        """Record an event of this type (the run stamps the time)."""
        return None

    async def commit(self) -> None:
        """Make every event noted so far durable (written and committed to the journal)
        before going on: what a tool that writes needs before it runs."""
        return None


class RateGovernor(Gate):
    """The run's rate limits (the orchestrator wraps it with spend and notes)."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        defaults: Mapping[str, RateLimit] | None = None,
        on_wait: OnWait | None = None,
    ) -> None:
        self.limits = dict(limits or {})
        self.defaults = dict(DEFAULT_LIMITS if defaults is None else defaults)
        self.on_wait = on_wait
        self._keys: dict[str, _Key] = {}
        self.granted = 0
        self.waits = 0
        self.granted_by_key: dict[str, int] = {}

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def limit_for(self, key: str) -> RateLimit | None:
        if key in self.limits:
            return self.limits[key]
        kind = key.partition(":")[0]
        return self.limits.get(kind) or self.defaults.get(kind)

    def _key(self, key: str) -> _Key:
        k = self._keys.get(key)
        if k is None:
            k = self._keys[key] = _Key(self.limit_for(key) or RateLimit())
        return k

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        """Wait until the key has room for one request of ``tokens``; returns a ticket."""
        k = self._key(key)
        if self.on_wait is not None and (k.lock.locked() or k.wait_for(self._now(), tokens)):
            # queued behind others: say so now, with a rough estimate of the wait
            k.queued += 1
            per_request = WINDOW / k.limit.rpm if k.limit.rpm else 0.0
            estimate = max(k.wait_for(self._now(), tokens), k.queued * per_request)
            self.on_wait(agent, task_id, key, estimate)
        else:
            k.queued += 1
        try:
            return await self._acquire(k, key, tokens, agent, task_id)
        finally:
            k.queued -= 1

    async def _acquire(self, k: _Key, key: str, tokens: int, agent: str, task_id: str) -> object:
        async with k.lock:
            while True:
                now = self._now()
                wait = k.wait_for(now, tokens)
                if wait <= 0:
                    break
                self.waits += 1
                if self.on_wait is not None and wait > 0.05:
                    self.on_wait(agent, task_id, key, wait)
                await asyncio.sleep(wait)
            k.requests.append(now)
            ticket = [now, float(tokens)]
            if k.limit.tpm is not None:
                k.tokens.append(ticket)
                k.token_sum += tokens
            self.granted += 1
            self.granted_by_key[key] = self.granted_by_key.get(key, 0) + 1
            return (k, ticket)

    def settle(self, ticket: object, tokens: int) -> None:
        """Replace a request's estimated tokens by what it really used."""
        if not isinstance(ticket, tuple):
            return
        k, entry = ticket
        if k.limit.tpm is None or entry not in k.tokens:
            return
        k.token_sum += tokens - entry[1]
        entry[1] = float(tokens)

    def pause(self, key: str, seconds: float) -> None:
        """Retry-After: nobody sends on this key for ``seconds``."""
        k = self._key(key)
        k.paused_until = max(k.paused_until, self._now() + seconds)

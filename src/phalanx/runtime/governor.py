"""The rate governor: one per run, shared by every agent.

Per ``provider:model`` key it keeps a sliding 60 s window of requests (at most ``rpm``) and of
tokens (at most ``tpm``), so no 60 s window ever holds more than the limit. A 429's
Retry-After pauses the key for everyone. Waiters are served first come, first served.

The limits are the plan's ``limits.rate_limits``, else what the provider's rate-limit
headers said (adopted after the first response, with what remained and when it resets),
else the documented defaults of the public endpoints. A request that never reached the
server (a refused connection) gives its permit back.

A key whose provider names its quota (``quota_id``: provider, address, API key, hashed)
keeps its window in the state directory's quota file (:mod:`.quota`), on the wall clock, so
runs on one machine share one key's limit; any other key's window lives in this process,
on the event loop's clock (so a virtual-time loop drives it in tests). See :mod:`.windows`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..cost import Usage
from ..events import Event
from ..plan.config import RateLimit
from ..providers.ratelimits import RateInfo
from .quota import QuotaStore, QuotaStoreError
from .windows import MemoryWindow, SharedWindow, Window, effective

__all__ = ["Gate", "RateGovernor", "RateLimit", "public_defaults"]

WINDOW = 60.0
log = logging.getLogger(__name__)


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
    """One key's window, and the queue of this process's agents waiting for it."""

    __slots__ = ("lock", "queued", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.lock = asyncio.Lock()
        self.queued = 0


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

    def release(self, ticket: object) -> None:
        """Give a permit back: its request never reached the server."""
        return None

    def learn(self, key: str, rate: object) -> None:
        """What a response's rate-limit headers said about ``key`` (a ``RateInfo``)."""
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

    async def spawn(self, task_id: str, attempt_id: int, call: str, arguments: Any) -> Any:
        """A ``spawn_tasks`` call: the run adds the subtasks and answers (a ToolResult);
        None outside a run that can grow."""
        return None


class RateGovernor(Gate):
    """The run's rate limits (the orchestrator wraps it with spend and notes).

    ``shared``: ``provider:model`` keys whose window lives in ``store`` (the state
    directory's quota file), each with its quota's id; other keys' windows live here.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        defaults: Mapping[str, RateLimit] | None = None,
        on_wait: OnWait | None = None,
        store: QuotaStore | None = None,
        shared: Mapping[str, str] | None = None,
    ) -> None:
        self.limits = dict(limits or {})
        self.defaults = dict(DEFAULT_LIMITS if defaults is None else defaults)
        self.on_wait = on_wait
        self.store = store
        self.shared = dict(shared or {}) if store is not None else {}
        self._keys: dict[str, _Key] = {}
        self.granted = 0
        self.waits = 0
        self.released = 0
        self.granted_by_key: dict[str, int] = {}

    def _configured(self, key: str) -> tuple[RateLimit | None, RateLimit | None]:
        """The plan's own limit for ``key`` and the documented default, either maybe None."""
        kind = key.partition(":")[0]
        explicit = self.limits.get(key) or self.limits.get(kind)
        return explicit, self.defaults.get(kind)

    def limit_for(self, key: str) -> RateLimit | None:
        """The limit ``key`` is held to now: the plan's, else what the provider's headers
        said (once a response came), else the documented default; None when none."""
        k = self._keys.get(key)
        learned = (k.window.learned_rpm, k.window.learned_tpm) if k else (None, None)
        return effective(*self._configured(key), *learned)

    def _key(self, key: str) -> _Key:
        k = self._keys.get(key)
        if k is None:
            k = self._keys[key] = _Key(self._window(key))
        return k

    def _window(self, key: str) -> Window:
        quota = self.shared.get(key)
        if quota is not None and self.store is not None:
            try:
                return SharedWindow(self.store, f"{quota}|{key}")
            except QuotaStoreError as exc:
                log.warning("rate window of %s kept in this process only: %s", key, exc)
        return MemoryWindow()

    async def acquire(self, key: str, tokens: int, *, agent: str, task_id: str) -> object:
        """Wait until the key has room for one request of ``tokens``; returns a ticket."""
        k = self._key(key)
        k.queued += 1
        try:
            if self.on_wait is not None and k.lock.locked():
                # queued behind others: say so now, with a rough estimate of the wait
                limit = self.limit_for(key)
                per_request = limit.window / limit.rpm if limit and limit.rpm else 0.0
                self.on_wait(agent, task_id, key, k.queued * per_request)
            return await self._acquire(k, key, tokens, agent, task_id)
        finally:
            k.queued -= 1

    async def _acquire(self, k: _Key, key: str, tokens: int, agent: str, task_id: str) -> object:
        configured = self._configured(key)
        async with k.lock:
            first = True
            while True:
                window = k.window
                try:
                    wait, entry = window.take(window.now(), tokens, *configured)
                except QuotaStoreError as exc:
                    log.warning("rate window of %s kept in this process only: %s", key, exc)
                    k.window = _fallback(window)
                    continue
                if wait <= 0:
                    break
                self.waits += 1
                if self.on_wait is not None and (first or wait > 0.05):
                    self.on_wait(agent, task_id, key, wait)
                first = False
                await asyncio.sleep(wait)
            self.granted += 1
            self.granted_by_key[key] = self.granted_by_key.get(key, 0) + 1
            return (window, entry)

    def settle(self, ticket: object, tokens: int) -> None:
        """Replace a request's estimated tokens by what it really used."""
        if isinstance(ticket, tuple):
            window, entry = ticket
            window.settle(entry, tokens)

    def release(self, ticket: object) -> None:
        """Give a permit back: its request never reached the server."""
        if isinstance(ticket, tuple):
            window, entry = ticket
            window.release(entry)
            self.released += 1

    def learn(self, key: str, rate: object) -> None:
        """Adopt what a response's rate-limit headers said (a ``RateInfo``)."""
        if not isinstance(rate, RateInfo):
            return
        window = self._key(key).window
        before = (window.learned_rpm, window.learned_tpm)
        window.learn(rate)
        if (window.learned_rpm, window.learned_tpm) != before:
            log.info(
                "%s: the provider's limits: %s requests, %s tokens per window",
                key, window.learned_rpm, window.learned_tpm,
            )  # fmt: skip

    def pause(self, key: str, seconds: float) -> None:
        """Retry-After: nobody sends on this key for ``seconds``."""
        self._key(key).window.pause(seconds)

    def close(self) -> None:
        """Write what is still queued for the quota file, and close it."""
        if self.store is not None:
            self.store.close()


def _fallback(window: Window) -> Window:
    """A window in this process for a key whose quota file failed, keeping what it learned."""
    memory = MemoryWindow()
    memory.learned_rpm, memory.learned_tpm = window.learned_rpm, window.learned_tpm
    return memory

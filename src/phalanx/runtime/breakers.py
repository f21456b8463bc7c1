"""The fleet's circuit breakers: one per agent and one per provider, each a pure
``CircuitBreaker`` (``breaker.py``). This module does their bookkeeping for a run: which
agents may start an attempt (both their breakers allow it), the half-open probe an attempt
starts, counting outcomes (backpressure, vetoes, cancellations, budget stops and lost hosts
say nothing about health), the alerts and ``BreakerChanged`` events of a trip, the probe
after the cooldown, and saying once when every agent able to take waiting work is paused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Literal

from ..events import Alert, BreakerChanged, Event
from ..exceptions import ErrorClass
from ..plan.config import BreakerConfig
from .breaker import CircuitBreaker
from .executor import Outcome
from .policies import AgentSlot, can_serve
from .scheduler import ReadyQueue

__all__ = ["FleetBreakers"]

Scope = Literal["agent", "provider"]
OnChange = Callable[[Scope, str, str, str], None]  # (scope, key, new state, reason)

_NOT_HEALTH = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.VETOED,
        ErrorClass.CANCELLED,
        ErrorClass.BUDGET,
        ErrorClass.LOST,
    }
)


class FleetBreakers:
    """The breakers of every agent and provider of one run."""

    def __init__(
        self,
        config: BreakerConfig,
        slots: Mapping[str, AgentSlot],
        *,
        now: Callable[[], float],
        emit: Callable[[Event], None],
        wake: Callable[[], None],
        on_change: OnChange,
    ) -> None:
        self.config = config
        self.agents = {name: CircuitBreaker(config) for name in slots}
        self.providers = {s.provider: CircuitBreaker(config.for_provider()) for s in slots.values()}
        self.open = 0  # breakers open now
        self.now, self.emit, self.wake, self.on_change = now, emit, wake, on_change
        self._said_paused: set[str] = set()

    def add(self, slot: AgentSlot) -> None:
        """A new agent joins: a fresh breaker, and one for its provider if it is new."""
        self.agents[slot.name] = CircuitBreaker(self.config)
        self.providers.setdefault(slot.provider, CircuitBreaker(self.config.for_provider()))

    def allows(self, slot: AgentSlot) -> bool:
        provider = self.providers.get(slot.provider)
        return self.agents[slot.name].allows() and (provider is None or provider.allows())

    def healthy(self, slot: AgentSlot) -> bool:
        provider = self.providers.get(slot.provider)
        return self.agents[slot.name].state != "open" and (
            provider is None or provider.state != "open"
        )

    def start_probe(self, slot: AgentSlot) -> None:
        self.agents[slot.name].start_probe()
        if slot.provider in self.providers:
            self.providers[slot.provider].start_probe()

    def cancel_probe(self, slot: AgentSlot) -> None:
        """The attempt started as a half-open probe never ran (it waits for an approval):
        the next attempt may probe instead."""
        for breaker in (self.agents[slot.name], self.providers.get(slot.provider)):
            if breaker is not None and breaker.state == "half_open":
                breaker.probing = False

    def record(self, o: Outcome, slots: Mapping[str, AgentSlot]) -> None:
        """Count an attempt against its agent's and provider's breakers. Backpressure (429),
        vetoes, cancellations and budget stops say nothing about the agent's health."""
        if o.error_class in _NOT_HEALTH:
            return
        slot = slots[o.agent]
        pairs: tuple[tuple[Scope, str, CircuitBreaker], ...] = (
            ("agent", o.agent, self.agents[o.agent]),
            ("provider", slot.provider, self.providers[slot.provider]),
        )
        for scope, key, breaker in pairs:
            changed = breaker.record(o.ok, self.now())
            if changed is not None:
                self._changed(scope, key, breaker)

    def _changed(self, scope: Scope, key: str, breaker: CircuitBreaker) -> None:
        self.open = sum(
            b.state == "open" for b in (*self.agents.values(), *self.providers.values())
        )
        if breaker.state == "open":
            reason = self._tripped(scope, key, breaker)
        else:
            reason = "probe succeeded" if breaker.state == "closed" else "cooldown over"
        self.emit(
            BreakerChanged(
                ts=self.now(),
                scope=scope,
                key=key,
                state=breaker.state,
                error_rate=breaker.error_rate,
                window=len(breaker.outcomes),
                reason=reason,
            )
        )
        self.on_change(scope, key, breaker.state, reason)
        if breaker.state == "closed":
            self._said_paused.clear()

    def _tripped(self, scope: Scope, key: str, breaker: CircuitBreaker) -> str:
        """Say a breaker opened, and probe again after its cooldown; returns why."""
        reason = (
            f"error rate {breaker.error_rate:.0%} over the last {len(breaker.outcomes)} attempts"
            if breaker.outcomes
            else "the half-open probe failed"
        )
        who = f"agent {key}" if scope == "agent" else f"every agent on {key}"
        self.emit(
            Alert(
                ts=self.now(),
                kind="breaker",
                message=f"{who} paused: {reason}; probe in {breaker.config.cooldown:g}s",
                agent=key,
            )
        )
        asyncio.get_running_loop().call_later(
            breaker.config.cooldown, self._cooldown, scope, key, breaker
        )
        return reason

    def _cooldown(self, scope: Scope, key: str, breaker: CircuitBreaker) -> None:
        if breaker.poll(self.now()) is not None:
            self._changed(scope, key, breaker)
            self.wake()

    def say_if_all_paused(self, ready: ReadyQueue, slots: Mapping[str, AgentSlot]) -> None:
        """When no agent that could take the waiting work may start, say so once."""
        kinds = {(b.role, b.skills) for b in ready.buckets.values() if b.heap}
        kinds |= {(t.role, t.skills) for s in slots.values() for t in s.queue}
        for role, skills in kinds:
            able = [s for s in slots.values() if can_serve(s, role, skills)]
            if not able or any(self.healthy(s) for s in able):
                continue
            label = role or "any role"
            if label not in self._said_paused:
                self._said_paused.add(label)
                self.emit(
                    Alert(
                        ts=self.now(),
                        kind="breaker",
                        message=(
                            f"every agent that can take {label!r} tasks is paused by an open "
                            "circuit breaker; work resumes when a probe succeeds"
                        ),
                    )
                )

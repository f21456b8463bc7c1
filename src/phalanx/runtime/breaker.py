"""Circuit breakers: per agent and per provider:model, over a window of recent attempts.

Closed: attempts flow; once the window holds at least ``min_volume`` attempts and the error
rate reaches ``threshold``, the breaker opens. Open: nothing is sent until ``cooldown``
seconds have passed; then it is half-open and lets one probe through. Half-open: the
probe's success closes it (with a fresh window), its failure opens it again.
Rate-limit backpressure is not an error here: the caller does not record it. Pure: the
caller passes the time, so tests drive it with any clock.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ..plan.config import BreakerConfig

__all__ = ["BreakerConfig", "CircuitBreaker", "State", "circuit_breaker"]

State = Literal["closed", "open", "half_open"]


def circuit_breaker(config: BreakerConfig | None = None) -> CircuitBreaker:
    """The strategy's ``circuit_breaker``: a breaker that opens (pausing its agent or
    provider, whose queued tasks go to others, with an alert) when the error rate over the
    last ``window`` attempts reaches ``threshold``, and probes again after ``cooldown``."""
    return CircuitBreaker(config)


class CircuitBreaker:
    __slots__ = ("config", "opened_at", "outcomes", "probing", "state")

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self.state: State = "closed"
        self.outcomes: deque[bool] = deque(maxlen=self.config.window)
        self.opened_at = 0.0
        self.probing = False

    @property
    def error_rate(self) -> float:
        if not self.outcomes:
            return 0.0
        return sum(1 for ok in self.outcomes if not ok) / len(self.outcomes)

    def record(self, ok: bool, now: float) -> State | None:
        """Count one attempt's outcome; returns the new state when it changed."""
        if not self.config.enabled:
            return None
        if self.state == "half_open":
            self.probing = False
            return self._close() if ok else self._open(now)
        self.outcomes.append(ok)
        if self.state == "closed" and self._tripped():
            return self._open(now)
        return None

    def _tripped(self) -> bool:
        return (
            len(self.outcomes) >= self.config.min_volume
            and self.error_rate >= self.config.threshold
        )

    def _open(self, now: float) -> State:
        self.state, self.opened_at = "open", now
        return self.state

    def _close(self) -> State:
        self.state = "closed"
        self.outcomes.clear()
        return self.state

    def reopens_at(self) -> float:
        return self.opened_at + self.config.cooldown

    def poll(self, now: float) -> State | None:
        """Open past its cooldown becomes half-open (returned); otherwise None."""
        if self.state == "open" and now >= self.reopens_at():
            self.state = "half_open"
            return self.state
        return None

    def allows(self) -> bool:
        """May an attempt start now? Half-open lets exactly one probe through."""
        if self.state == "closed":
            return True
        return self.state == "half_open" and not self.probing

    def start_probe(self) -> None:
        if self.state == "half_open":
            self.probing = True

"""Budgets: the run's spend (tokens and cost, carried over from earlier sessions of a
resumed run) against ``limits.max_usd``, ``limits.max_tokens`` and
``limits.max_wall_seconds``. The first limit reached sets ``exhausted`` (why, in words) and
calls the run back once; after that new work stops and in-flight attempts finish. It keeps
no clock and schedules nothing: the run says when the wall time is up.
"""

from __future__ import annotations

from collections.abc import Callable

from ..cost import Usage
from ..plan.model import Limits

__all__ = ["Budget"]


class Budget:
    """One run's spend and whether a limit has stopped new work."""

    __slots__ = ("exhausted", "limits", "on_exhausted", "spent")

    def __init__(self, limits: Limits, spent: Usage, on_exhausted: Callable[[str], None]) -> None:
        self.limits = limits
        self.spent = spent
        self.exhausted: str | None = None  # why a budget stopped new work
        self.on_exhausted = on_exhausted  # called once, with that reason

    def spend(self, usage: Usage) -> None:
        self.spent = self.spent + usage
        self.check()

    def check(self) -> None:
        """Stop new work once ``max_usd`` or ``max_tokens`` is reached."""
        lim, spent = self.limits, self.spent
        if self.exhausted:
            return
        if lim.max_usd is not None and (spent.cost_usd or 0.0) >= lim.max_usd:
            self._exhaust(
                f"budget exhausted: spent ${spent.cost_usd or 0:.4f} of "
                f"limits.max_usd ${lim.max_usd:g}"
            )
        elif lim.max_tokens is not None and spent.total_tokens >= lim.max_tokens:
            self._exhaust(
                f"budget exhausted: used {spent.total_tokens:,} tokens of "
                f"limits.max_tokens {lim.max_tokens:,}"
            )

    def wall_time_up(self) -> bool:
        """``max_wall_seconds`` has passed: True when that is what stops the run."""
        if self.exhausted:
            return False
        limit = self.limits.max_wall_seconds
        self._exhaust(f"budget exhausted: limits.max_wall_seconds {limit:g}s reached")
        return True

    def _exhaust(self, reason: str) -> None:
        self.exhausted = reason
        self.on_exhausted(reason)

"""When a speedup is claimed: the one function every view asks (:func:`speedup_of`).

A speedup is a ratio of times: the service time of the tasks (what running them one by one
costs at least) over the run's active time, or a sequential baseline's active time over
this run's. It means something only when the times measure model calls. A run on the
simulated provider without latency settings (``RunStarted.timed`` false) has none: its
attempts take the few milliseconds the process needs, and a "0.1x" would read as a slow
parallel run. So does a run whose attempts took almost no time in all (under
:data:`MIN_SERVICE_SECONDS`: scripted models, journals written before ``timed`` existed).
Then no number is claimed: the terminal summary, ``status --json`` (``speedup: null`` with a
``speedup_reason``) and the report (md, html, json) say ``n/a`` and why.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIN_SERVICE_SECONDS", "NO_TIMING_SIMULATED", "Speedup", "speedup_of"]

MIN_SERVICE_SECONDS = 0.1  # below this much service time in all, there is no timing to compare
NO_TIMING_SIMULATED = "no timing: simulated zero-latency run"


@dataclass(frozen=True, slots=True)
class Speedup:
    """A claimed speedup (``value``), or none and why (``reason``)."""

    value: float | None
    reason: str = ""

    def text(self, digits: int = 1) -> str:
        """``1.5x``, or ``n/a (no timing: simulated zero-latency run)``."""
        if self.value is None:
            return f"n/a ({self.reason})" if self.reason else "n/a"
        return f"{self.value:.{digits}f}x"


def speedup_of(work_seconds: float, active_seconds: float, *, timed: bool = True) -> Speedup:
    """``work_seconds / active_seconds`` when there is timing to compare; otherwise no value
    and the reason. ``work_seconds``: the service time of the tasks (or a sequential
    baseline's active time); ``timed``: false for a run whose every model is simulated
    with zero latency."""
    if not timed:
        return Speedup(None, NO_TIMING_SIMULATED)
    if active_seconds <= 0:
        return Speedup(None, "no timing: no active time")
    if work_seconds < MIN_SERVICE_SECONDS:
        return Speedup(
            None,
            f"no timing: {work_seconds * 1000:.0f}ms of service time in all "
            f"(under {MIN_SERVICE_SECONDS * 1000:.0f}ms)",
        )
    return Speedup(work_seconds / active_seconds)

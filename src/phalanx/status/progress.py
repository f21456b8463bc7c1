"""The one progress model every view renders: counts of tasks by state, done/total, and
the segments of a bar.

A task is in exactly one of six states here: **succeeded**, **failed**, **skipped** (its
upstream failed), **running**, **waiting** (an attempt failed and its retry is due, or it
awaits a person's approval: ``awaiting`` counts those apart) and **pending** (not started,
or back in the queue). *Done* means terminal: succeeded, failed
or skipped, so "done" never reads as "succeeded" — the headline names failures and skips
next to it (``34/37 done · 3 failed · 2 skipped``), and no bar is all "succeeded" while a
task under it failed or was skipped.

The status fold computes one :class:`Progress` for the run and one per agent (the tasks
whose last attempt was the agent's: a failed task stays counted against the agent that
failed it); a team's is the sum of its agents'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._util import one_line
from ..redaction import redact

__all__ = ["GLYPHS", "STATES", "Progress", "bar_cells", "failure_reason"]

STATES = ("succeeded", "failed", "skipped", "running", "waiting", "pending")
GLYPHS = {
    "succeeded": "█",
    "failed": "✗",
    "skipped": "-",
    "running": "▒",
    "waiting": "░",
    "pending": "░",
}
# the fold's task states (runtime TaskState) to this model's
_FROM_TASK = {
    "succeeded": "succeeded",
    "failed": "failed",
    "skipped": "skipped",
    "running": "running",
    "retrying": "waiting",
    "awaiting_approval": "waiting",
    "queued": "pending",
    "pending": "pending",
}


@dataclass(frozen=True, slots=True)
class Progress:
    """Tasks by state; immutable, and adds up (a team's is the sum of its agents')."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    waiting: int = 0
    pending: int = 0
    awaiting: int = 0  # of the waiting ones, those awaiting a person's approval

    @classmethod
    def of_states(cls, states: Iterable[str]) -> Progress:
        """From task states as the fold names them (queued, retrying, ...)."""
        counts: dict[str, int] = {}
        for s in states:
            counts[s] = counts.get(s, 0) + 1
        return cls.of_counts(counts)

    @classmethod
    def of_counts(cls, counts: Mapping[str, int]) -> Progress:
        """From the fold's counts by task state."""
        out: dict[str, int] = {}
        for s, n in counts.items():
            key = _FROM_TASK.get(s, "pending")
            out[key] = out.get(key, 0) + n
        out["awaiting"] = counts.get("awaiting_approval", 0)
        return cls(**out)

    def __add__(self, other: Progress) -> Progress:
        return Progress(**{s: getattr(self, s) + getattr(other, s) for s in (*STATES, "awaiting")})

    def count(self, state: str) -> int:
        return int(getattr(self, state))

    @property
    def total(self) -> int:
        return sum(self.count(s) for s in STATES)

    @property
    def done(self) -> int:
        """Terminal tasks: succeeded, failed or skipped."""
        return self.succeeded + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        """Done over total (0 when there are no tasks)."""
        return self.done / self.total if self.total else 0.0

    @property
    def troubled(self) -> bool:
        """Some task failed or was skipped: the views lead with it."""
        return bool(self.failed or self.skipped)

    def headline(self) -> str:
        """``34/37 done · 3 failed · 2 skipped · 1 awaiting approval`` (failures, skips and
        approvals named when there are any)."""
        out = f"{self.done}/{self.total} done"
        if self.failed:
            out += f" · {self.failed} failed"
        if self.skipped:
            out += f" · {self.skipped} skipped"
        if self.awaiting:
            out += f" · {self.awaiting} awaiting approval"
        return out

    def breakdown(self) -> str:
        """Every count, failures first: ``3 failed · 2 skipped · 29 succeeded · ...``."""
        order = ("failed", "skipped", "succeeded", "running", "waiting", "pending")
        return " · ".join(f"{self.count(s)} {s}" for s in order)

    def segments(self, width: int = 10) -> list[tuple[str, int]]:
        """The bar's cells per state (in :data:`STATES` order, empty ones left out)."""
        return [(s, n) for s, n in zip(STATES, bar_cells(self, width), strict=True) if n]

    def bar(self, width: int = 10, running_share: float = 0.0) -> str:
        """The bar as text: █ succeeded, ✗ failed, - skipped, ▒ running, ░ waiting/pending.

        ``running_share``: how far the running tasks are (0..1, e.g. turns used); that share
        of their cells shows filled, as an agent's bar shows its current task's turns."""
        cells = dict(self.segments(width))
        if running_share > 0 and cells.get("running"):
            moved = min(cells["running"], round(running_share * cells["running"]))
            cells["running"] -= moved
            cells["succeeded"] = cells.get("succeeded", 0) + moved
        return "".join(GLYPHS[s] * cells.get(s, 0) for s in STATES)

    def to_dict(self, width: int = 100) -> dict[str, Any]:
        """JSON: the counts, done/total, the headline and the segments (of ``width`` cells)."""
        return {
            **{s: self.count(s) for s in STATES},
            "awaiting_approval": self.awaiting,
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction,
            "headline": self.headline(),
            "segments": [
                {"state": s, "cells": n, "fraction": n / width} for s, n in self.segments(width)
            ],
        }


def bar_cells(p: Progress, width: int) -> list[int]:
    """Cells per state (:data:`STATES` order) adding up to ``width``: proportional by the
    largest remainder, then every non-empty state gets at least one cell, failed first
    (taken from the largest, or from succeeded's last cell), so a failed or skipped task is
    never rounded away and the bar is all "succeeded" only when every task succeeded. No
    tasks: all pending."""
    counts = [p.count(s) for s in STATES]
    total = sum(counts)
    if not total or width <= 0:
        return [0, 0, 0, 0, 0, max(0, width)]
    exact = [n * width / total for n in counts]
    cells = [int(x) for x in exact]
    by_remainder = sorted(range(len(STATES)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in by_remainder[: width - sum(cells)]:
        cells[i] += 1
    kept: set[int] = set()
    for i in (1, 2, 3, 4, 5):  # failed first, then skipped, running, waiting, pending
        if counts[i] and not cells[i]:
            donors = [k for k in range(len(cells)) if cells[k] > 1]
            donors = donors or [k for k in range(len(cells)) if cells[k] and k not in kept]
            if donors:
                donor = max(donors, key=lambda k: cells[k])
                cells[donor] -= 1
                cells[i] += 1
        if counts[i]:
            kept.add(i)
    return cells


def failure_reason(error_class: str | None, error: str | None, limit: int | None = None) -> str:
    """Why a task or an attempt failed, as every view names it: its error class and its
    one-line error (``server_error: 503 upstream overloaded``), redacted (a secret the
    journal missed is not shown either), cut to ``limit`` characters with ``…``. The error
    class alone when there is no message; ``failed`` when nothing is known."""
    cls = str(error_class or "").strip()
    msg = one_line(redact(str(error or "")))
    text = f"{cls}: {msg}" if cls and msg else cls or msg or "failed"
    return one_line(text, limit) if limit is not None else text

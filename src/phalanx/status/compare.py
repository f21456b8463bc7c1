"""Like-for-like comparison of a run with a baseline run (``phalanx report --baseline``).

Two runs compare only on the work both did. Task by task (:func:`compare_runs`): the tasks
one run has and the other lacks, the tasks whose outcome differs (succeeded here, failed
there, ...) and the tasks that succeeded in both (``matched``). The service time of the
matched tasks (the attempts that produced their results) is compared always; the wall
(active) times only when the runs are like for like (:attr:`Comparison.like_for_like`: the
same tasks with the same outcomes), since otherwise they timed different work. With no
matched task there is nothing to compare: :class:`NotComparable`, one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import NotComparable

__all__ = ["Comparison", "NotComparable", "compare_runs"]

_SHOWN = 5  # task ids named in a sentence before "and N more"


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """How a run's tasks and outcomes match a baseline run's."""

    baseline_run_id: str
    missing: tuple[str, ...]  # tasks of the baseline that this run does not have
    extra: tuple[str, ...]  # tasks of this run that the baseline does not have
    outcomes: tuple[tuple[str, str, str], ...]  # (task, state here, state in the baseline)
    matched: tuple[str, ...]  # tasks that succeeded in both
    work_seconds: float  # service time of the matched tasks in this run
    baseline_work_seconds: float  # ... and in the baseline

    @property
    def like_for_like(self) -> bool:
        """The same tasks with the same outcomes: the wall times are comparable."""
        return not (self.missing or self.extra or self.outcomes)

    @property
    def service_ratio(self) -> float | None:
        """Baseline service time over this run's, on the matched tasks."""
        return self.baseline_work_seconds / self.work_seconds if self.work_seconds > 0 else None

    def differences(self) -> str:
        """What differs, in one line ("" when the runs are like for like)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} only in the baseline ({_ids(self.missing)})")
        if self.extra:
            parts.append(f"{len(self.extra)} only in this run ({_ids(self.extra)})")
        if self.outcomes:
            shown = [f"{t} {here} here, {there} there" for t, here, there in self.outcomes]
            parts.append(f"{len(self.outcomes)} with another outcome ({_ids(shown)})")
        return "tasks differ: " + "; ".join(parts) if parts else ""

    def sentence(self) -> str:
        """The comparison in one line, as the report shows it."""
        ratio = self.service_ratio
        head = (
            f"{len(self.matched)} task{'s' if len(self.matched) != 1 else ''} succeeded in "
            f"both: service time {self.work_seconds:.2f}s here, "
            f"{self.baseline_work_seconds:.2f}s in run {self.baseline_run_id}"
            + (f" ({ratio:.2f}x)" if ratio is not None else "")
        )
        if self.like_for_like:
            return head + "; same tasks, same outcomes: wall times compared"
        return f"{head}; wall times not compared: {self.differences()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_run_id": self.baseline_run_id,
            "like_for_like": self.like_for_like,
            "missing": list(self.missing),
            "extra": list(self.extra),
            "outcomes": [
                {"task": t, "here": here, "baseline": there} for t, here, there in self.outcomes
            ],
            "matched": list(self.matched),
            "work_seconds": self.work_seconds,
            "baseline_work_seconds": self.baseline_work_seconds,
            "service_ratio": self.service_ratio,
            "differences": self.differences(),
        }


def _ids(ids: Sequence[str]) -> str:
    more = f", and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more


def compare_runs(
    states: Mapping[str, str],
    work: Mapping[str, float],
    baseline_states: Mapping[str, str],
    baseline_work: Mapping[str, float],
    *,
    baseline_run_id: str = "",
) -> Comparison:
    """Compare a run (each task's state, and the service time of each succeeded task) with
    a baseline run, task by task. Task order is this run's, then the baseline's."""
    missing = tuple(t for t in baseline_states if t not in states)
    extra = tuple(t for t in states if t not in baseline_states)
    shared = [t for t in states if t in baseline_states]
    outcomes = tuple(
        (t, states[t], baseline_states[t]) for t in shared if states[t] != baseline_states[t]
    )
    matched = tuple(t for t in shared if states[t] == baseline_states[t] == "succeeded")
    return Comparison(
        baseline_run_id=baseline_run_id,
        missing=missing,
        extra=extra,
        outcomes=outcomes,
        matched=matched,
        work_seconds=sum(work.get(t, 0.0) for t in matched),
        baseline_work_seconds=sum(baseline_work.get(t, 0.0) for t in matched),
    )

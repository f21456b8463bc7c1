"""The ETA moves honestly: from the service times of finished attempts and the age of the
running ones, read with a fake clock (``snapshot(now=...)``).

The issue saw a local model's ETA sit at "10s" for 12 s: the last task ran longer than the
mean of the finished ones, its time left counted 0, and the remaining critical path (one
task x the mean) held the ETA at the mean while it ran on.
"""

from __future__ import annotations

import pytest

from phalanx.events import (
    AgentInfo,
    AttemptFinished,
    AttemptStarted,
    Event,
    RunStarted,
    TaskInfo,
    TaskSucceeded,
)
from phalanx.status.snapshot import Snapshot, StatusTracker
from phalanx.status.text import eta_text, render_text

T0 = 1_000.0


def _tracker(durations: list[float], tasks: int, *, running: bool = True) -> StatusTracker:
    """One agent ("Solo") that ran ``durations`` back to back from T0, then (``running``)
    started the next of its ``tasks`` tasks."""
    evs: list[Event] = [
        RunStarted(
            ts=T0,
            run_id="eta",
            plan="local-model",
            session=1,
            policy="best_fit",
            simulated=False,
            agents=(AgentInfo(name="Solo", role="generalist", provider="local"),),
            tasks=tuple(
                TaskInfo(id=f"t{i}", title=f"task {i}", category="other") for i in range(tasks)
            ),
        )
    ]
    t = T0
    for i, d in enumerate(durations):
        evs.append(
            AttemptStarted(ts=t, task_id=f"t{i}", attempt_id=i + 1, attempt_no=1, agent="Solo")
        )
        t += d
        evs.append(
            AttemptFinished(
                ts=t, task_id=f"t{i}", attempt_id=i + 1, agent="Solo", ok=True, duration=d
            )
        )
        evs.append(TaskSucceeded(ts=t, task_id=f"t{i}", attempt_id=i + 1, agent="Solo"))
    if running:
        n = len(durations)
        evs.append(
            AttemptStarted(ts=t, task_id=f"t{n}", attempt_id=n + 1, attempt_no=1, agent="Solo")
        )
    tracker = StatusTracker()
    for e in evs:
        tracker.emit(e)
    return tracker


def _at(tracker: StatusTracker, seconds: float) -> Snapshot:
    return tracker.snapshot(now=T0 + seconds)


def test_unknown_before_any_evidence() -> None:
    for done in ([], [10.0], [10.0, 10.0]):
        tracker = _tracker(done, tasks=6)
        for later in (1.0, 30.0, 120.0):
            s = _at(tracker, sum(done) + later)
            assert s.eta_seconds is None and s.eta_over == 0
            assert eta_text(s) == "ETA: unknown"


def test_the_last_task_of_a_local_model_run_over_its_estimate() -> None:
    """3 tasks of 10 s done, the 4th (the last) running: the ETA counts down while it is
    within the estimate, and once it runs longer than every finished one it says so
    instead of holding "10s"."""
    tracker = _tracker([10.0, 10.0, 10.0], tasks=4)
    counting = [_at(tracker, 30.0 + age).eta_seconds for age in (1.0, 4.0, 7.0, 9.0)]
    assert counting == pytest.approx([9.0, 6.0, 3.0, 1.0])
    for age in (10.0, 12.0, 30.0):
        s = _at(tracker, 30.0 + age)
        assert (s.eta_seconds, s.eta_over) == (None, 1)
        assert eta_text(s) == "ETA: unknown (1 running over estimate)"
    text = render_text(_at(tracker, 42.0))
    assert "ETA: unknown (1 running over estimate)" in text and "ETA: 10s" not in text


def test_a_task_over_its_estimate_raises_the_estimate_for_the_rest() -> None:
    """With tasks still queued, the ETA is a lower bound while a task runs over (the time
    the queued ones will take, at an estimate that grows with its age): it never sits
    still, and the view marks it as a bound."""
    tracker = _tracker([10.0, 10.0, 10.0], tasks=6)  # 2 queued behind the running one
    before = [_at(tracker, 30.0 + age) for age in (2.0, 6.0)]
    assert [s.eta_over for s in before] == [0, 0]
    assert before[0].eta_seconds == pytest.approx(28.0)  # 8 left + 2 x 10
    assert before[1].eta_seconds == pytest.approx(24.0)
    over = [_at(tracker, 30.0 + age) for age in (12.0, 20.0, 40.0)]
    assert [s.eta_over for s in over] == [1, 1, 1]
    bounds = [s.eta_seconds for s in over]
    assert bounds == pytest.approx([21.0, 25.0, 35.0])  # 2 x (30 + age) / 4
    assert bounds[0] < bounds[1] < bounds[2]
    assert eta_text(over[1]) == "ETA: >25s (1 running over estimate)"
    assert over[1].to_dict()["eta_over_estimate"] == 1


def test_a_long_task_within_the_spread_counts_on_the_longer_ones() -> None:
    """Durations 6, 8 and 12 s; the running task at 9 s is past the mean (8.7 s) but not
    past the evidence: its time left is what the longer finished one ran on (12 - 9)."""
    tracker = _tracker([6.0, 8.0, 12.0], tasks=4)
    s = _at(tracker, 26.0 + 9.0)
    assert s.eta_over == 0
    assert s.eta_seconds == pytest.approx(3.0)
    assert _at(tracker, 26.0 + 11.0).eta_seconds == pytest.approx(1.0)


def test_done_and_finished() -> None:
    tracker = _tracker([10.0, 10.0, 10.0], tasks=3, running=False)
    s = _at(tracker, 31.0)
    assert (s.eta_seconds, s.eta_over) == (0.0, 0)
    assert eta_text(s) == "ETA: 0s"


def test_a_finished_run_has_no_eta_and_no_paused_agent() -> None:
    """A run that finished shows no ETA (never ``ETA: 0s``) and none of its agents paused
    (a breaker that was open at the end went with the session): in ``phalanx status``, in
    ``status --json`` and in the dashboard's JSON. Before the end, all done reads 0s."""
    from phalanx.events import BreakerChanged, RunFinished
    from phalanx.status.web.views import snapshot_json

    tracker = _tracker([10.0, 10.0, 10.0], tasks=3, running=False)
    tracker.emit(
        BreakerChanged(ts=30.0 + T0, scope="agent", key="Solo", state="open", error_rate=1.0,
                       window=5)
    )  # fmt: skip
    live = _at(tracker, 31.0)
    assert (live.eta_seconds, eta_text(live)) == (0.0, "ETA: 0s")
    assert [a.state for a in live.agents] == ["paused"]

    tracker.emit(RunFinished(ts=T0 + 31.0, status="succeeded", reason="3 succeeded"))
    done = _at(tracker, 40.0)
    assert (done.eta_seconds, done.eta_over, eta_text(done)) == (None, 0, "")
    assert [a.state for a in done.agents] == ["idle"]
    text = render_text(done)
    assert "ETA" not in text and "paused" not in text
    assert "Total progress: 100% · elapsed 31s ·" in text
    data = done.to_dict()
    assert data["eta_seconds"] is None and [a["state"] for a in data["agents"]] == ["idle"]
    page = snapshot_json(done)
    assert page["eta_text"] == "finished" and "ETA" not in " ".join(page["swarm"])
    assert [a["state"] for a in page["agents"]] == ["idle"]

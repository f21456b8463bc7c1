"""The line log (``phalanx run --no-tui``): task lines, and the alerts and autoscaler
decisions an operator must see without opening the status view."""

from __future__ import annotations

import io

from phalanx.events import Alert, RetryScheduled, RunStarted, ScaleDecision, TaskSucceeded
from phalanx.status.console import LineLog


def _log(*events: object) -> list[str]:
    out = io.StringIO()
    log = LineLog(out)
    log.emit(
        RunStarted(
            ts=100.0,
            run_id="r",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=(),
            tasks=(),
            done=(),
        )
    )
    for e in events:
        log.emit(e)  # type: ignore[arg-type]
    return out.getvalue().splitlines()[1:]


def test_alerts_and_scale_decisions_are_printed() -> None:
    lines = _log(
        TaskSucceeded(ts=101.0, task_id="a", attempt_id=1, agent="Ada", output="x"),
        ScaleDecision(
            ts=102.0,
            action="hold",
            role="coder",
            before=2,
            after=2,
            reason="wanted 2 more, added 0: the cluster has no room for another agent host",
        ),
        Alert(ts=103.0, kind="budget", message="budget exhausted: used 2,000 tokens"),
        RetryScheduled(ts=104.0, task_id="b", attempt_no=0, delay=0.0, error_class="lost"),
    )
    assert lines == [
        "[   1.00s] ✓ a  by Ada",
        "[   2.00s] ⇅ coder  hold 2 -> 2: wanted 2 more, added 0: the cluster has no room for "
        "another agent host",
        "[   3.00s] ! budget: budget exhausted: used 2,000 tokens",
        "[   4.00s] ↻ b  lost with its agent host; queued again",
    ]


def test_a_log_says_who_must_approve_and_names_no_empty_agent() -> None:
    from phalanx.events import ApprovalDecided, ApprovalRequested

    lines = _log(
        ApprovalRequested(ts=101.0, task_id="deploy", reason="approval: required"),
        ApprovalDecided(ts=103.0, task_id="deploy", decision="approved", by="cli"),
        TaskSucceeded(ts=104.0, task_id="migrate", attempt_id=0, agent=""),
    )
    assert lines[0] == (
        "[   1.00s] ⏸ deploy  awaiting approval (approval: required): "
        "phalanx approve r deploy [--reject --reason TEXT]"
    )
    assert lines[1] == "[   3.00s] ⏵ deploy  approval approved by cli"
    assert lines[2] == "[   4.00s] ✓ migrate"  # a foreach template: no "by" with no one

"""Like-for-like comparisons (issue 17, item 5) and failure reasons in the report (item 4):

- ``report --baseline`` compares a run with a baseline task by task: identical runs are
  compared on wall (active) time; runs with other tasks or other outcomes say what differs
  and compare only the service time of the tasks that succeeded in both; runs with no such
  task are refused in one line (exit 2);
- no speedup is claimed without timing (a sim run without latency settings): the summary,
  ``status --json`` (null and a reason) and the report (md, html, json) say ``n/a`` and why;
- every failed task in the report names its error class and its one-line, redacted error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx.cli.app import main
from phalanx.events import (
    AgentInfo,
    AttemptFinished,
    AttemptStarted,
    Event,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskInfo,
    TaskSucceeded,
)
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.journal import Journal
from phalanx.status.compare import NotComparable
from phalanx.status.metrics import compute_metrics
from phalanx.status.report import (
    render_html,
    render_json,
    render_markdown,
    render_report,
    report_from_events,
)
from phalanx.status.snapshot import fold
from phalanx.status.speedup import NO_TIMING_SIMULATED, speedup_of
from phalanx.testing import ScriptedProvider, run_virtual

T0 = 1000.0
ADA = AgentInfo(name="Ada", role="coder", provider="sim")
BOB = AgentInfo(name="Bob", role="coder", provider="sim")


def session(
    run_id: str,
    outcomes: dict[str, tuple[str, float]],
    *,
    agents: tuple[AgentInfo, ...] = (ADA, BOB),
    timed: bool = True,
) -> list[Event]:
    """A one-session run whose tasks (``outcomes``: task -> (state, service seconds)) run
    one after another on its first agent: succeeded or failed (auth) or never started
    (pending). Its wall time is the sum of the service times."""
    evs: list[Event] = [
        RunStarted(
            ts=T0,
            run_id=run_id,
            plan="p",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=agents,
            tasks=tuple(TaskInfo(id=t, title=f"task {t}", category="other") for t in outcomes),
            timed=timed,
        )
    ]
    now, aid, agent = T0, 0, agents[0].name
    for tid, (state, secs) in outcomes.items():
        if state == "pending":
            continue
        aid += 1
        evs.append(AttemptStarted(ts=now, task_id=tid, attempt_id=aid, attempt_no=1, agent=agent))
        now += secs
        ok = state == "succeeded"
        evs.append(
            AttemptFinished(
                ts=now,
                task_id=tid,
                attempt_id=aid,
                agent=agent,
                ok=ok,
                duration=secs,
                error_class=None if ok else ErrorClass.AUTH,
                error=None if ok else "401 unauthorized",
            )
        )
        if ok:
            evs.append(TaskSucceeded(ts=now, task_id=tid, attempt_id=aid, agent=agent))
        else:
            evs.append(
                TaskFailed(
                    ts=now, task_id=tid, error_class=ErrorClass.AUTH, error="401", attempts=1
                )
            )
    evs.append(RunFinished(ts=now, status="succeeded"))
    return evs


FOUR = {t: ("succeeded", 2.0) for t in ("a", "b", "c", "d")}


# -- the comparison, task by task --------------------------------------------------------------
def test_identical_runs_are_compared_on_wall_time() -> None:
    base = compute_metrics(session("seq", FOUR))
    m = compute_metrics(session("par", {t: ("succeeded", 2.0) for t in FOUR}), baseline=base)
    cmp = m.comparison
    assert cmp is not None and cmp.like_for_like and cmp.differences() == ""
    assert cmp.matched == ("a", "b", "c", "d")
    assert cmp.work_seconds == cmp.baseline_work_seconds == 8.0
    assert m.speedup_basis == "measured" and m.speedup == pytest.approx(1.0)
    md = render_markdown(report_from_events(session("par", FOUR), baseline=base))
    assert "same tasks, same outcomes: wall times compared" in md
    assert "**speedup**: 1.00x (measured against a baseline run)" in md


def test_runs_with_other_tasks_say_which_and_compare_only_the_shared_ones() -> None:
    """The baseline lacks task e and has task z: the wall times timed other work, so they
    are not divided; the service time of a, b, c, d (in both) is compared."""
    base = compute_metrics(session("seq", {**FOUR, "z": ("succeeded", 30.0)}))
    here = {**{t: ("succeeded", 1.0) for t in FOUR}, "e": ("succeeded", 1.0)}
    m = compute_metrics(session("par", here), baseline=base)
    cmp = m.comparison
    assert cmp is not None and not cmp.like_for_like
    assert cmp.missing == ("z",) and cmp.extra == ("e",) and cmp.outcomes == ()
    assert cmp.matched == ("a", "b", "c", "d")
    assert cmp.work_seconds == 4.0 and cmp.baseline_work_seconds == 8.0
    assert cmp.service_ratio == pytest.approx(2.0)
    # the wall-time ratio (38 s / 5 s = 7.6x) is not claimed: the estimate stays
    assert m.speedup_basis == "estimate" and m.speedup == pytest.approx(1.0)
    assert m.baseline_wall_seconds == 38.0
    report = report_from_events(session("par", here), baseline=base, baseline_run_id="seq")
    md = render_markdown(report)
    assert "1 only in the baseline (z)" in md and "1 only in this run (e)" in md
    assert "wall times not compared" in md
    assert "service time 4.00s here, 8.00s in run seq (2.00x)" in md
    assert "**speedup**: 1.00x (estimate; not measured against run seq: the runs differ)" in md
    assert "7.60x" not in md
    data = json.loads(render_json(report))["metrics"]
    assert data["comparison"]["like_for_like"] is False
    assert data["comparison"]["missing"] == ["z"] and data["comparison"]["extra"] == ["e"]
    assert data["speedup_basis"] == "estimate"
    assert "wall times not compared" in render_html(report)


def test_runs_with_other_outcomes_say_which_and_compare_only_the_tasks_both_succeeded() -> None:
    """b failed in the baseline, c failed here: a and d are compared."""
    base = compute_metrics(session("seq", {**FOUR, "b": ("failed", 2.0)}))
    here = {**FOUR, "c": ("failed", 2.0)}
    m = compute_metrics(session("par", here), baseline=base)
    cmp = m.comparison
    assert cmp is not None and not cmp.like_for_like
    assert cmp.missing == cmp.extra == ()
    assert cmp.outcomes == (("b", "succeeded", "failed"), ("c", "failed", "succeeded"))
    assert cmp.matched == ("a", "d")
    assert m.speedup_basis == "estimate"
    md = render_markdown(report_from_events(session("par", here), baseline=base))
    assert "2 with another outcome (b succeeded here, failed there, c failed here" in md
    assert "2 tasks succeeded in both" in md


def test_a_pending_task_is_another_outcome() -> None:
    """A run that did not finish a task is not like for like with one that did."""
    base = compute_metrics(session("seq", FOUR))
    m = compute_metrics(session("par", {**FOUR, "d": ("pending", 0.0)}), baseline=base)
    assert m.comparison is not None
    assert m.comparison.outcomes == (("d", "pending", "succeeded"),)
    assert m.speedup_basis == "estimate"


def test_no_task_succeeded_in_both_is_refused_in_one_line() -> None:
    base = compute_metrics(session("seq", {t: ("failed", 1.0) for t in FOUR}))
    with pytest.raises(NotComparable) as err:
        compute_metrics(session("par", FOUR), baseline=base)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("cannot compare run par with baseline seq: no task succeeded in both")
    assert "4 with another outcome" in text
    other = compute_metrics(session("other", {"x": ("succeeded", 1.0)}))
    with pytest.raises(NotComparable, match="1 only in the baseline \\(x\\)"):
        compute_metrics(session("par", FOUR), baseline=other)


def test_a_resumed_run_is_compared_on_active_time() -> None:
    """A run resumed 100 s after a crash: 8 s active, 108 s calendar; the baseline's 16 s
    are compared with the 8 s."""
    evs = session("par", FOUR)[:-1]  # crashed after its tasks... then resumed
    first = evs[: 1 + 3 * 2]  # a and b done, then the process died
    rest = session("par", {t: FOUR[t] for t in ("c", "d")})
    restarted = RunStarted(
        ts=T0 + 104.0,
        run_id="par",
        plan="p",
        session=2,
        policy="best_fit",
        simulated=True,
        agents=(ADA, BOB),
        tasks=tuple(TaskInfo(id=t, title=t, category="other") for t in FOUR),
    )
    shifted = [restarted] + [_shift(e, 104.0) for e in rest[1:]]
    base = compute_metrics(session("seq", {t: ("succeeded", 4.0) for t in FOUR}))
    m = compute_metrics(first + shifted, baseline=base)
    assert m.sessions == 2 and m.wall_seconds == pytest.approx(8.0)
    assert m.calendar_seconds == pytest.approx(108.0)
    assert m.comparison is not None and m.comparison.like_for_like
    assert m.speedup == pytest.approx(16.0 / 8.0)


def _shift(e: Any, by: float) -> Any:
    import dataclasses

    return dataclasses.replace(e, ts=e.ts + by)


# -- on the command line, with real runs --------------------------------------------------------
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _run(data: dict[str, Any], run_id: str) -> phalanx.RunResult:
    return run_virtual(phalanx.run(phalanx.Plan.from_dict(data), run_id=run_id))


def test_report_baseline_on_the_cli(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = sim_plan(5, agents=3, latency_ms=200)
    seq = run_virtual(
        phalanx.run(phalanx.Plan.from_dict(plan).sequential(), provider="sim", run_id="seq")
    )
    par = _run(plan, "par")
    assert seq.status == par.status == "succeeded"
    code, md, err = _cli(["report", "par", "--baseline", "seq", "--format", "md"], capsys)
    assert code == 0, err
    assert "same tasks, same outcomes: wall times compared" in md
    assert "**speedup**: " in md and "(measured against run seq: 1.0s there" in md

    _run(sim_plan(6, agents=3, latency_ms=200), "more")  # one more task (t5)
    code, md, err = _cli(["report", "more", "--baseline", "seq", "--format", "md"], capsys)
    assert code == 0, err
    assert "1 only in this run (t5)" in md and "wall times not compared" in md
    assert "5 tasks succeeded in both" in md
    assert "(estimate; not measured against run seq: the runs differ)" in md

    failing = sim_plan(5, agents=3, latency_ms=200, faults={"auth": 1.0})
    assert _run(failing, "bad").status == "failed"
    code, out, err = _cli(["report", "bad", "--baseline", "seq", "--format", "md"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("phalanx: error: cannot compare run bad with baseline seq: ")
    assert "no task succeeded in both" in err


# -- no speedup without timing --------------------------------------------------------------------
def test_speedup_of_needs_timing() -> None:
    assert speedup_of(6.0, 2.0).value == pytest.approx(3.0)
    assert speedup_of(6.0, 2.0).text() == "3.0x"
    untimed = speedup_of(6.0, 2.0, timed=False)
    assert untimed.value is None and untimed.reason == NO_TIMING_SIMULATED
    assert untimed.text() == "n/a (no timing: simulated zero-latency run)"
    tiny = speedup_of(0.004, 0.5)
    assert tiny.value is None and tiny.reason.startswith("no timing: 4ms of service time")
    assert speedup_of(1.0, 0.0).value is None


def test_a_zero_latency_sim_run_claims_no_speedup(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan on sim without latency settings: every view says n/a and why."""
    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(8, agents=4)), run_id="zero")
    assert result.status == "succeeded"
    summary = result.summary()
    assert "  speedup: n/a (no timing: simulated zero-latency run)" in summary
    assert "x over the sum of task times" not in summary
    assert result.snapshot.speedup is None
    code, out, err = _cli(["status", "zero", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["speedup"] is None and data["speedup_reason"] == NO_TIMING_SIMULATED
    journal = Journal(state / "journal.sqlite")
    md = render_report(journal, "zero", "md")
    assert "**speedup**: n/a (no timing: simulated zero-latency run)" in md
    assert "n/a (no timing: simulated zero-latency run)" in render_report(journal, "zero", "html")
    metrics = json.loads(render_report(journal, "zero", "json"))["metrics"]
    assert metrics["speedup"] is None and metrics["speedup_reason"] == NO_TIMING_SIMULATED
    assert metrics["timed"] is False
    assert metrics["scaling_efficiency"] is None  # speedup per agent: no timing either


def test_a_sim_run_with_latency_claims_its_speedup(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(sim_plan(8, agents=4, latency_ms=100), "timed")
    s = result.snapshot
    assert s.speedup == pytest.approx(s.busy_seconds / s.elapsed)
    assert s.speedup is not None and s.speedup > 3.0  # 8 x 100 ms on 4 agents
    assert f"  speedup: {s.speedup:.1f}x over the sum of task times" in result.summary()
    code, out, err = _cli(["status", "timed", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["speedup"] == pytest.approx(s.speedup) and data["speedup_reason"] is None


def test_a_baseline_of_zero_latency_runs_measures_no_speedup() -> None:
    """Like-for-like runs, both simulated with zero latency: nothing to divide."""
    base = compute_metrics(session("seq", FOUR, timed=False))
    evs = session("par", FOUR, timed=False)
    m = compute_metrics(evs, baseline=base)
    assert m.comparison is not None and m.comparison.like_for_like
    assert m.speedup is None and m.speedup_reason == NO_TIMING_SIMULATED
    assert m.scaling_efficiency is None
    md = render_markdown(report_from_events(evs, baseline=base, baseline_run_id="seq"))
    assert "**speedup**: n/a (no timing: simulated zero-latency run)\n" in md


def test_a_journal_without_the_timed_flag_needs_some_service_time() -> None:
    """Events written before RunStarted.timed existed: under 100 ms of service time in all,
    no speedup."""
    evs = session("old", {t: ("succeeded", 0.002) for t in FOUR})
    m = compute_metrics(evs)
    assert m.speedup is None and m.speedup_reason.startswith("no timing: 8ms of service time")
    assert fold(evs).speedup is None
    assert compute_metrics(session("untimed", FOUR, timed=False)).speedup is None
    assert compute_metrics(session("timed", FOUR)).speedup == pytest.approx(1.0)


# -- failure reasons in the report --------------------------------------------------------------
SECRET = "sk-test-0123456789abcdefghij"


def test_every_failed_task_in_the_report_names_its_error(state: Path) -> None:
    """Two tasks fail for good (auth, not retried; one error spans lines and holds a key):
    md, html and json name the class and the one-line error, redacted."""

    def refuse(request: Any) -> Any:
        raise ProviderError(
            f"invalid key {SECRET}\nrequest id 42 for {request.task_id}",
            error_class=ErrorClass.AUTH,
            status=401,
        )

    script = ScriptedProvider({"ok": ["fine"], "bad1": [refuse], "bad2": [refuse]})
    plan = phalanx.Plan.build(
        agents=phalanx.AgentSpec(provider="scripted").clone(2),
        tasks=[phalanx.Task(id=t, prompt="work") for t in ("ok", "bad1", "bad2")],
    )
    result = run_virtual(phalanx.run(plan, custom_providers={"scripted": script}, run_id="fx"))
    assert result.status == "failed"
    journal = Journal(state / "journal.sqlite")
    md = render_report(journal, "fx", "md")
    html = render_report(journal, "fx", "html")
    data = json.loads(render_report(journal, "fx", "json"))
    assert SECRET not in md + html + json.dumps(data)
    failed = [t for t in data["tasks"] if t["state"] == "failed"]
    assert sorted(t["id"] for t in failed) == ["bad1", "bad2"]
    for t in failed:
        assert t["error_class"] == "auth"
        assert t["error"].startswith("invalid key [redacted] request id 42 for " + t["id"])
        assert "\n" not in t["error"]
        row = next(line for line in md.splitlines() if line.startswith(f"| {t['id']} |"))
        assert "| failed |" in row and "| auth |" in row and t["error"] in row
        assert f"<td>{t['id']}</td>" in html
        assert "invalid key [redacted] request id 42 for " + t["id"] in html
    ok = next(t for t in data["tasks"] if t["id"] == "ok")
    assert ok["error_class"] is None and ok["error"] == ""

"""Failures never look like progress, and time after a resume is active time.

One progress model (:class:`phalanx.status.progress.Progress`) feeds the terminal text, the
live view, ``status --json``, the dashboard and the report: succeeded, failed, skipped,
running, waiting and pending apart; "done" is terminal; headlines lead with failures; no
bar is all "succeeded" over a failed task; an agent's failed task stays counted against it.
A resumed run's durations are active time, and the summary shows the calendar time too.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

import phalanx
from conftest import sim_plan
from phalanx.events import RunFinished, RunStarted
from phalanx.journal import Journal
from phalanx.status.metrics import compute_metrics
from phalanx.status.progress import GLYPHS, Progress
from phalanx.status.report import render_markdown
from phalanx.status.report_model import report_from_events
from phalanx.status.snapshot import Snapshot, fold
from phalanx.status.text import render_text
from phalanx.status.tui import render_rich
from phalanx.status.web.views import snapshot_json
from test_status import AGENTS, TASKS, failed_events

OK, BAD, SKIP = GLYPHS["succeeded"], GLYPHS["failed"], GLYPHS["skipped"]


# -- the model ----------------------------------------------------------------------------
def test_progress_counts_apart_and_done_is_terminal() -> None:
    p = Progress.of_counts({"succeeded": 29, "failed": 3, "skipped": 2, "queued": 2, "running": 1})
    assert (p.done, p.total) == (34, 37)
    assert p.headline() == "34/37 done · 3 failed · 2 skipped"
    assert p.breakdown().startswith("3 failed · 2 skipped · 29 succeeded")
    assert Progress.of_states(["retrying", "queued"]) == Progress(waiting=1, pending=1)
    assert Progress(succeeded=1) + Progress(failed=2) == Progress(succeeded=1, failed=2)


@pytest.mark.parametrize("width", [1, 3, 10, 20, 100])
def test_no_bar_is_all_green_over_a_failure(width: int) -> None:
    for p in (Progress(succeeded=999, failed=1), Progress(succeeded=500, skipped=1)):
        cells = dict(p.segments(width))
        assert sum(cells.values()) == width
        assert cells.get("succeeded", 0) < width  # one cell at least goes to the failure
        if width >= 2:
            assert cells.get("failed", 0) + cells.get("skipped", 0) >= 1
    assert Progress(succeeded=3).bar(10) == OK * 10
    assert Progress().bar(10) == GLYPHS["pending"] * 10
    assert BAD in Progress(succeeded=99, failed=1).bar(10)


# -- a fixed run with a failure and two skips ------------------------------------------------


GOLDEN_FAILED = """\
Run r1 · plan p · failed · 4/4 done · 1 failed · 2 skipped · SIMULATED (sim provider)

Level 1 · agents
  Agent: Cipher  | Task: -        | 2s | idle
  Agent: Quantum | Task: database | 0s | failed after 1.5s · auth: 401
  Agent: Nova    | Task: -        | 4s | idle

Level 2 · teams
  Coder team:         [█████✗✗✗✗✗] 2/2 done · 1 failed
    - Cipher: idle    [██████████] 100% (1/1)
    - Quantum: failed [✗✗✗✗✗✗✗✗✗✗] 1/1 done · 1 failed
  Tester team:        [----------] 1/1 done · 1 skipped
    - Nova: idle      [░░░░░░░░░░] 0% (0/0)

Level 3 · swarm
  💻 Coder: 0/2 active · 🧪 Tester: 0/1 active
  Tasks: 1 failed · 2 skipped · 1 succeeded · 0 running · 0 waiting · 0 pending (of 4)
  Total progress: 4/4 done · 1 failed · 2 skipped [█████✗✗✗✗✗----------] · elapsed 4s \
· tokens 150 · cost n/a (simulated)
  Alerts: task db failed: auth"""


def test_golden_text_render_with_a_failure_and_skips() -> None:
    """render_text does not depend on the width: one golden for every terminal."""
    assert render_text(fold(failed_events())) == GOLDEN_FAILED


def _rich(s: Snapshot, width: int) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render_rich(s))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 160])
def test_live_view_leads_with_failures_at_80_and_160_columns(width: int) -> None:
    text = _rich(fold(failed_events()), width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    flat = " ".join(line.strip("│ ") for line in lines)  # wrapped lines joined again
    assert "4/4 done · 1 failed · 2 skipped" in flat  # title and total
    # level 1: every agent
    for name in ("Agent: Cipher", "Agent: Quantum", "Agent: Nova"):
        assert name in text
    # level 2: the coder team shows its failure; Quantum keeps its failed task
    coder = next(line for line in lines if "Coder team" in line)
    assert f"[{OK * 5}{BAD * 5}] 2/2 done · 1 failed" in coder
    tester = next(line for line in lines if "Tester team" in line)
    assert f"[{SKIP * 10}] 1/1 done · 1 skipped" in tester
    quantum = next(line for line in lines if "Quantum: failed" in line)
    assert f"[{BAD * 10}]" in quantum and "1/1 done · 1 failed" in quantum
    # level 3: failures first, counts apart
    assert "Tasks: 1 failed · 2 skipped · 1 succeeded · 0 running · 0 waiting" in flat
    if width >= 160:
        assert "Total progress: 4/4 done · 1 failed · 2 skipped [" in text


def test_json_and_dashboard_views_carry_the_same_model() -> None:
    s = fold(failed_events())
    data = s.to_dict()
    assert data["tasks"]["headline"] == "4/4 done · 1 failed · 2 skipped"
    assert {k: data["tasks"][k] for k in ("succeeded", "failed", "skipped")} == {
        "succeeded": 1,
        "failed": 1,
        "skipped": 2,
    }
    by = {a["name"]: a for a in data["agents"]}
    assert by["Quantum"]["tasks"]["failed"] == 1 and by["Quantum"]["tasks"]["total"] == 1
    page = snapshot_json(s)
    coder = next(t for t in page["teams"] if t["role"] == "coder")
    states = {g["state"]: g["fraction"] for g in coder["tasks"]["segments"]}
    assert states["failed"] > 0 and states.get("succeeded", 0) < 1.0
    assert "1 failed" in coder["title"]
    json.dumps(page)


def test_report_leads_with_failures() -> None:
    r = report_from_events(failed_events())
    md = render_markdown(r)
    assert "**tasks**: 4/4 done · 1 failed · 2 skipped (1 failed · 2 skipped · 1 succeeded" in md
    assert r.to_dict()["progress"]["failed"] == 1


# -- a real run with injected non-retryable faults -------------------------------------------
def test_a_run_with_failures_and_skips_never_looks_like_progress(state: Path) -> None:
    data = sim_plan(20, agents=2, faults={"auth": 0.6}, deps="layered", seed=3)
    result = phalanx.run_sync(phalanx.Plan.from_dict(data))
    s = result.snapshot
    p = s.tasks
    assert result.status == "failed"
    assert p.failed >= 1 and p.skipped >= 1  # auth is not retried; dependants are skipped
    assert p.total == 20 and p.done == 20
    assert p.succeeded == sum(1 for t in result.tasks.values() if t.state == "succeeded")
    assert p.failed == sum(1 for t in result.tasks.values() if t.state == "failed")
    # every failed task stays counted against the agent whose attempt failed it
    assert sum(a.tasks.failed for a in s.agents) == p.failed
    for a in s.agents:
        assert a.tasks.total == a.tasks.succeeded + a.tasks.failed
        if a.tasks.failed:
            assert BAD in a.tasks.bar() and a.tasks.bar() != OK * 10
    text = render_text(s)
    title = text.splitlines()[0]
    assert f"· {p.headline()}" in title and p.headline().startswith("20/20 done · ")
    assert f"Tasks: {p.failed} failed · {p.skipped} skipped · {p.succeeded} succeeded" in text
    assert "Total progress: 100%" not in text
    for line in text.splitlines():  # no team or agent line all green over a failed task
        if "failed" in line and "[" in line:
            bar_text = line.split("[", 1)[1].split("]", 1)[0]
            assert bar_text != OK * len(bar_text)
            assert BAD in bar_text
    summary = result.summary()
    assert f"tasks: {p.failed} failed, {p.skipped} skipped, {p.succeeded} succeeded" in summary
    j = Journal(state / "journal.sqlite")
    m = compute_metrics(e for _, e in j.read_events(result.run_id))
    assert m.task_states == {k: v for k, v in result.snapshot.counts.items() if v}


# -- active time vs calendar time across a resume --------------------------------------------
def test_fold_counts_only_the_sessions_spans() -> None:
    """A 3.5 s session, then a 10 s session 100 s later: 13.5 s active, 113.5 s calendar."""
    evs = failed_events()[:-1]  # no RunFinished: the first session crashed at ts 103
    evs += [
        RunStarted(
            ts=203.0,
            run_id="r1",
            plan="p",
            session=2,
            policy="best_fit",
            simulated=True,
            agents=AGENTS,
            tasks=TASKS,
        ),
        RunFinished(ts=213.0, status="failed"),
    ]
    s = fold(evs)
    assert s.elapsed == pytest.approx(13.0)  # 100..103 and 203..213
    assert s.calendar == pytest.approx(113.0)
    assert s.resumed
    assert "elapsed 13s active (1m 53s calendar, 2 sessions)" in render_text(s)
    m = compute_metrics(evs)
    assert m.wall_seconds == pytest.approx(s.elapsed)
    assert m.calendar_seconds == pytest.approx(s.calendar)
    assert m.speedup == pytest.approx(m.run.work_seconds / 13.0)


def test_a_resumed_run_reports_active_time_and_calendar_time(state: Path) -> None:
    data = sim_plan(12, agents=2, latency_ms=60, deps="chain")
    pause = 1.5

    async def interrupted() -> None:
        task = asyncio.create_task(phalanx.run(phalanx.Plan.from_dict(data), run_id="two"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    time.sleep(pause)  # downtime between the sessions
    result = asyncio.run(phalanx.resume("two", state=state))
    assert result.status == "succeeded", result.summary()
    s = result.snapshot
    assert s.session == 2
    assert s.calendar - s.elapsed >= pause - 0.1
    assert result.wall_seconds == s.elapsed < result.calendar_seconds
    summary = result.summary().splitlines()[0]
    assert "active (" in summary and "calendar, 2 sessions)" in summary
    assert s.speedup == pytest.approx(s.busy_seconds / s.elapsed)
    j = Journal(state / "journal.sqlite")
    m = compute_metrics(e for _, e in j.read_events("two"))
    assert m.sessions == 2
    assert m.wall_seconds == pytest.approx(s.elapsed, abs=0.05)
    assert m.calendar_seconds >= m.wall_seconds + pause - 0.1
    md = render_markdown(report_from_events(e for _, e in j.read_events("two")))
    assert "calendar, 2 sessions" in md

"""The live terminal view, rendered into a capture console."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

import phalanx
from conftest import sim_plan
from phalanx.status.snapshot import Snapshot, fold
from phalanx.status.tui import LiveStatus, render_rich
from test_status import _events


def _text(renderable: object, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_three_levels_render_with_their_numbers() -> None:
    text = _text(render_rich(fold(_events())))
    assert "Agent: Quantum | Task: database" in text  # level 1
    assert "Coder team" in text and "Tester team" in text  # level 2
    assert "Cipher: idle" in text and "100% (1/1)" in text
    assert "💻 Coder: 1/2 active" in text  # level 3
    assert "Tasks: 1 done · 1 running · 2 queued · 0 failed · 0 skipped (of 4)" in text
    assert "Total progress: 25%" in text
    assert "SIMULATED" in text


def test_live_view_follows_a_run(state: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    live = LiveStatus(console=console, refresh_per_second=20)
    result = phalanx.run_sync(
        phalanx.Plan.from_dict(sim_plan(40, agents=4, latency_ms=20)), sinks=[live]
    )
    assert result.status == "succeeded"
    final = _text(render_rich(live.tracker.snapshot()), width=140)
    assert "Tasks: 40 done · 0 running · 0 queued · 0 failed · 0 skipped (of 40)" in final
    assert "Total progress: 100%" in final
    assert sum(a.done for a in live.tracker.snapshot().agents) == 40
    written = out.getvalue()
    assert "Generalist team" in written and "Agent: Cipher" in written
    assert written.count("Total progress") >= 2  # it was redrawn while the run went on


# -- 80x24: the swarm panel stays ------------------------------------------------------------
def _crowded(n_agents: int, n_alerts: int) -> Snapshot:
    """A run of ``n_agents`` agents (each ran a task; every third failed) with long task
    titles, ``n_alerts`` alerts and the rest of its tasks queued."""
    from phalanx.events import (
        AgentInfo,
        Alert,
        AttemptFinished,
        AttemptStarted,
        Event,
        RunStarted,
        TaskFailed,
        TaskInfo,
        TaskSucceeded,
    )

    names = [f"Agent{i:02d}" for i in range(n_agents)]
    tasks = tuple(
        TaskInfo(
            id=f"t{i}", title=f"a long task title number {i} that cannot fit", category="other"
        )
        for i in range(2 * n_agents)
    )
    agents = tuple(AgentInfo(name=n, role="generalist", provider="sim") for n in names)
    evs: list[Event] = [
        RunStarted(
            ts=0.0,
            run_id="crowd",
            plan="crowd",
            session=1,
            policy="best_fit",
            simulated=True,
            agents=agents,
            tasks=tasks,
        )
    ]
    for i, name in enumerate(names):
        evs.append(AttemptStarted(ts=1.0, task_id=f"t{i}", attempt_id=i, attempt_no=1, agent=name))
        if i % 3 == 0:
            evs.append(
                AttemptFinished(
                    ts=5.0,
                    task_id=f"t{i}",
                    attempt_id=i,
                    agent=name,
                    ok=False,
                    duration=4.0,
                    error_class="auth",
                    error="401 bad key",
                )
            )
            evs.append(
                TaskFailed(ts=5.0, task_id=f"t{i}", error_class="auth", error="401", attempts=1)
            )
        elif i % 3 == 1:
            evs.append(
                AttemptFinished(
                    ts=4.0, task_id=f"t{i}", attempt_id=i, agent=name, ok=True, duration=3.0
                )
            )
            evs.append(TaskSucceeded(ts=4.0, task_id=f"t{i}", attempt_id=i, agent=name))
    evs += [
        Alert(ts=6.0 + k, kind="hook", message=f"alert number {k} " * 6) for k in range(n_alerts)
    ]
    return fold(evs)


@pytest.mark.parametrize(("n_agents", "n_alerts"), [(3, 0), (12, 8), (40, 20)])
@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (160, 50)])
def test_the_swarm_panel_stays_whole_in_a_small_terminal(
    n_agents: int, n_alerts: int, width: int, height: int
) -> None:
    s = _crowded(n_agents, n_alerts)
    text = _sized(render_rich(s, width=width, height=height), width, height)
    lines = text.splitlines()
    assert len(lines) <= height, text
    assert all(len(line) <= width for line in lines)
    assert "Level 3 · swarm" in text and lines[-1].startswith("╰")  # not cut off at the bottom
    flat = " ".join(line.strip("│ ") for line in lines)
    failed = (n_agents + 2) // 3
    assert f"{failed} failed" in flat and "Total progress:" in flat and "ETA" in flat
    assert "Tasks:" in flat and "tokens" in flat and "cost" in flat
    if n_alerts:  # the newest alert at least
        assert f"alert number {n_alerts - 1}" in flat
    # an agent whose task failed keeps its line, with its reason
    assert "Agent: Agent00" in text and "failed after 4.0s" in text and "auth:" in text


def _sized(renderable: object, width: int, height: int) -> str:
    console = Console(
        record=True, width=width, height=height, file=io.StringIO(), color_system=None
    )
    console.print(renderable)
    return console.export_text(styles=False)


def test_live_view_draws_for_the_terminal_size(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiveStatus lays each frame out for its console's size: at 80x24 with 12 agents and
    injected failures, every frame fits and keeps its swarm panel."""
    from rich.live import Live

    frames: list[object] = []
    original = Live.update

    def update(self: Live, renderable: object, *, refresh: bool = False) -> None:
        frames.append(renderable)
        original(self, renderable, refresh=refresh)

    monkeypatch.setattr(Live, "update", update)
    console = Console(file=io.StringIO(), force_terminal=True, width=80, height=24)
    live = LiveStatus(console=console, refresh_per_second=20)
    plan = sim_plan(36, agents=12, latency_ms=20, faults={"auth": 0.2}, max_attempts=1, seed=3)
    result = phalanx.run_sync(phalanx.Plan.from_dict(plan), sinks=[live])
    assert result.status == "failed"  # some tasks failed: the view has failures to show
    assert len(frames) >= 2
    last = _sized(frames[-1], 80, 24)
    for frame in (frames[0], frames[len(frames) // 2], frames[-1]):
        text = _sized(frame, 80, 24)
        assert len(text.splitlines()) <= 24 and "Total progress:" in text, text
    assert "failed" in last and "Alerts" in last and "Agent: " in last


def test_smaller_terminals_keep_the_swarm_panel() -> None:
    """Below what the three panels need, the live view shows the title and the swarm
    panel alone; it never runs off the bottom of the terminal."""
    s = _crowded(12, 3)
    for height in range(10, 26):
        text = _sized(render_rich(s, width=80, height=height), 80, height)
        lines = text.splitlines()
        assert len(lines) <= height, (height, text)
        assert "Total progress:" in text and "4 failed" in text and "ETA" in text, text
        assert "hook: alert number 2" in text and lines[-1].startswith("╰")
    assert "Level 1 · agents" not in _sized(render_rich(s, width=80, height=12), 80, 12)
    assert "Level 1 · agents" in _sized(render_rich(s, width=80, height=24), 80, 24)

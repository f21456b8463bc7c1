"""The live terminal view, rendered into a capture console."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

import phalanx
from conftest import sim_plan
from phalanx.status.snapshot import fold
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

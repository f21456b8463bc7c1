"""B9: the cost of the live status. B1's workload (10,000 zero-latency tasks, journal on)
on 1,000 agents with the terminal view attached (``phalanx.tui.LiveStatus``: its own status
fold of every event, a snapshot and a rich render 4 times a second, written to a terminal
console on /dev/null), against the same run without it. Target: <= 10% slower."""

from __future__ import annotations

import cProfile
import functools
import os
import pstats
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from phalanx import Plan
from phalanx.events import Event, RunFinished
from phalanx.tui import LiveStatus

from .common import Config, Row, log, measure_phalanx, median, paired, sim_plan, spread, summarise

TARGET = 1.10


class TimedLiveStatus(LiveStatus):
    """The terminal view, counting its draws and the time it spends."""

    def __init__(self, console: Console) -> None:
        super().__init__(console=console, refresh_per_second=4.0)
        self.draws = 0
        self.draw_s = 0.0
        self.fold_s = 0.0
        self.first = 0.0
        self.last = 0.0

    def emit(self, event: Event) -> None:
        t0 = time.perf_counter()
        self.tracker.emit(event)
        self.fold_s += time.perf_counter() - t0
        if self._live is None:
            self.first = time.perf_counter()
            self._start()
        if isinstance(event, RunFinished):
            self.stop()

    def _draw(self) -> None:
        t0 = time.perf_counter()
        super()._draw()
        self.last = time.perf_counter()
        self.draw_s += self.last - t0
        self.draws += 1


@contextmanager
def _terminal() -> Iterator[Console]:
    with open(os.devnull, "w", encoding="utf-8") as null:
        yield Console(
            file=null, force_terminal=True, width=140, height=50, color_system="truecolor"
        )


def run(cfg: Config) -> list[Row]:
    n, k = cfg.size((10_000, 1000), (200, 50))
    plan = Plan.from_dict(sim_plan(n, k, name="b9"))
    base, ours, views = [], [], []
    for i in range(cfg.repeats):
        base.append(measure_phalanx(plan))
        with _terminal() as console:
            view = TimedLiveStatus(console)
            ours.append(measure_phalanx(plan, functools.partial(list, [view])))
        views.append(view)
        log(
            f"B9 run {i + 1}/{cfg.repeats}: without {base[-1]:.2f}s, with the live view "
            f"{ours[-1]:.2f}s ({view.draws} draws, {view.draw_s:.2f}s drawing, "
            f"{view.fold_s:.2f}s folding)"
        )
    b, p = median(base), median(ours)
    ratio = paired(ours, base)
    inside = median([(v.draw_s + v.fold_s) / o for v, o in zip(views, ours, strict=True)])
    draws = median([v.draws for v in views])
    hz = median([(v.draws - 1) / (v.last - v.first) if v.draws > 1 else 0.0 for v in views])
    draw_ms = median([v.draw_s / max(1, v.draws) * 1000 for v in views])
    fold = median([v.fold_s for v in views])
    row = Row(
        id="B9",
        title=f"status cost: live terminal view at 4 Hz, {k:,} agents, during B1's "
        f"{n:,}-task workload",
        figure=f"{p:.2f} s wall",
        baseline=f"{b:.2f} s (the same run without the view)",
        ratio=ratio,
        target=f"<= {TARGET:.2f}x baseline (10% slower)",
        passed=ratio <= TARGET,
        note=f"Wall: with the view {spread(ours, 's')}, without {spread(base, 's')}. The view drew "
        f"{draws:.0f} times per run ({hz:.1f} Hz achieved of 4 Hz asked), {draw_ms:.1f} ms "
        f"per draw (snapshot + render), and spent {fold:.2f} s folding events: "
        f"{inside:.1%} of the run's wall time is spent inside the view. Draws come late "
        "because a zero-latency run keeps the event loop busy in long stretches.",
        data={
            "n": n,
            "agents": k,
            "with_view_s": ours,
            "without_s": base,
            "draws": [v.draws for v in views],
            "draw_s": [v.draw_s for v in views],
            "fold_s": [v.fold_s for v in views],
        },
    )
    if not row.passed and cfg.profile:
        row.profile = _profile_draws(views[-1])
    return [row]


def _profile_draws(view: TimedLiveStatus, count: int = 20) -> str:
    """Where a draw's time goes, on the final state of a run: ``count`` draws."""
    with _terminal() as console:
        again = TimedLiveStatus(console)
        again.tracker = view.tracker
        again._start()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(count):
            again._draw()
        prof.disable()
        again.stop()
    stats: Any = pstats.Stats(prof)
    return summarise(stats, f"{count} draws of the view with {len(view.tracker.agents):,} agents")

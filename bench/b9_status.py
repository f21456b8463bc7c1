"""B9: the cost of the live status. B1's workload (10,000 zero-latency tasks, journal on)
on 1,000 agents with the terminal view attached (``phalanx.status.tui.LiveStatus``: its own status
fold of every event, a snapshot and a rich render 4 times a second, written to a terminal
console on /dev/null), against the same run without it. Target: <= 10% slower."""

from __future__ import annotations

import asyncio
import cProfile
import functools
import gc
import os
import pstats
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from phalanx import Plan
from phalanx.events import Event
from phalanx.status.snapshot import StatusTracker
from phalanx.status.tui import LiveStatus

from .common import (
    Config,
    Row,
    log,
    measure_phalanx,
    median,
    paired,
    phalanx_wall,
    settle,
    sim_plan,
    spread,
    state_dir,
    summarise,
)

TARGET = 1.10


class TimedLiveStatus(LiveStatus):
    """The terminal view, counting its draws and the time they take. Its handling of each
    event is the view's own, untimed (timing 30,000 calls would weigh on the figure); the
    time its fold takes is measured apart (:func:`fold_seconds`)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console=console, refresh_per_second=4.0)
        self.draws = 0
        self.draw_s = 0.0
        self.first = 0.0
        self.last = 0.0

    def _start(self) -> None:
        self.first = time.perf_counter()
        super()._start()

    def _draw(self) -> None:
        t0 = time.perf_counter()
        super()._draw()
        self.last = time.perf_counter()
        self.draw_s += self.last - t0
        self.draws += 1


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def fold_seconds(plan: Plan, repeats: int) -> float:
    """What the view's status fold costs for one run: the run's events (captured in a run
    of their own) folded into a fresh tracker, the median of ``repeats`` times."""
    rec = _Recorder()
    measure_phalanx(plan, functools.partial(list, [rec]))
    times = []
    for _ in range(repeats):
        tracker = StatusTracker()
        t0 = time.perf_counter()
        for event in rec.events:
            tracker.emit(event)
        times.append(time.perf_counter() - t0)
    return median(times)


class _FullCollections:
    """Counts the garbage collector's full (generation 2) collections and their time."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._t0


def measure(plan: Plan, sinks: list[Any]) -> tuple[float, _FullCollections]:
    """:func:`measure_phalanx`, also counting the run's full collections."""
    settle()
    watch = _FullCollections()
    with state_dir() as d:
        gc.callbacks.append(watch)
        try:
            wall = asyncio.run(phalanx_wall(plan, d, sinks))
        finally:
            gc.callbacks.remove(watch)
    return wall, watch


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
    gcs: list[tuple[_FullCollections, _FullCollections]] = []
    for i in range(cfg.repeats):
        wall, without = measure(plan, [])
        base.append(wall)
        with _terminal() as console:
            view = TimedLiveStatus(console)
            wall, with_view = measure(plan, [view])
            ours.append(wall)
        views.append(view)
        gcs.append((without, with_view))
        log(
            f"B9 run {i + 1}/{cfg.repeats}: without {base[-1]:.2f}s, with the live view "
            f"{ours[-1]:.2f}s ({view.draws} draws, {view.draw_s:.2f}s drawing)"
        )
    b, p = median(base), median(ours)
    ratio = paired(ours, base)
    fold = fold_seconds(plan, cfg.repeats)
    inside = median([(v.draw_s + fold) / o for v, o in zip(views, ours, strict=True)])
    draws = median([v.draws for v in views])
    hz = median([(v.draws - 1) / (v.last - v.first) if v.draws > 1 else 0.0 for v in views])
    draw_ms = median([v.draw_s / max(1, v.draws) * 1000 for v in views])
    gc_without = median([g[0].seconds for g in gcs])
    gc_with = median([g[1].seconds for g in gcs])
    n_without = median([g[0].count for g in gcs])
    n_with = median([g[1].count for g in gcs])
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
        f"per draw (snapshot + render); its status fold of the run's events takes "
        f"{fold:.2f} s (measured apart, on the same events): {inside:.1%} of the run's wall "
        f"time is spent inside the view. The garbage collector's full collections took "
        f"{gc_with:.2f} s with the view ({n_with:.0f} per run) and {gc_without:.2f} s "
        f"without ({n_without:.0f})"
        + (
            ": the view's own objects (its status of every task and agent) are more for "
            "the collector to walk"
            if gc_with > 1.2 * gc_without
            else ""
        )
        + ". Draws come late because a zero-latency run keeps the event loop busy in long "
        "stretches.",
        data={
            "n": n,
            "agents": k,
            "with_view_s": ours,
            "without_s": base,
            "draws": [v.draws for v in views],
            "draw_s": [v.draw_s for v in views],
            "fold_s": fold,
            "full_gc_s_with": [g[1].seconds for g in gcs],
            "full_gc_s_without": [g[0].seconds for g in gcs],
            "full_gc_count_with": [g[1].count for g in gcs],
            "full_gc_count_without": [g[0].count for g in gcs],
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

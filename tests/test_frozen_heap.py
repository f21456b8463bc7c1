"""During a run, the objects that existed when it began are left out of the garbage
collector's passes (``gc.freeze``, issue 22), and handed back when the last run of the
process ends: a cycle that died meanwhile is collected then, nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import phalanx
from conftest import sim_plan
from phalanx import Plan
from phalanx.events import Event


class _Frozen:
    """A sink noting how many objects were frozen at each event."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def emit(self, event: Event) -> None:
        self.counts.append(gc.get_freeze_count())


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only a full pass frees it


def test_a_run_freezes_what_existed_and_hands_it_back(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    node = _Node()
    dead = weakref.ref(node)
    seen = _Frozen()

    class DropsTheCycle(_Frozen):
        def emit(self, event: Event) -> None:
            nonlocal node
            if event.type == "attempt_started":
                node = None  # type: ignore[assignment]  # garbage, frozen: not collected yet
                gc.collect()
                self.counts.append(int(dead() is not None))

    drops = DropsTheCycle()
    plan = Plan.from_dict(sim_plan(5, agents=2))
    result = asyncio.run(phalanx.run(plan, state=tmp_path, sinks=[seen, drops]))
    assert result.status == "succeeded"
    assert seen.counts and min(seen.counts) > 1000  # modules, the plan: frozen
    assert drops.counts[0] == 1  # still there during the run
    assert gc.get_freeze_count() == 0  # handed back
    gc.collect()
    assert dead() is None  # and collected


def test_two_runs_at_once_keep_it_frozen_until_the_last_ends(tmp_path: Path) -> None:
    seen = _Frozen()

    async def both() -> None:
        await asyncio.gather(
            phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path / "a"),
            phalanx.run(
                Plan.from_dict(sim_plan(40, agents=2, latency_ms=5)), state=tmp_path / "b",
                sinks=[seen],
            ),
        )  # fmt: skip

    asyncio.run(both())
    assert seen.counts and min(seen.counts) > 0  # the short run's end did not unfreeze
    assert gc.get_freeze_count() == 0


def test_a_program_that_froze_objects_itself_keeps_them_frozen(tmp_path: Path) -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        asyncio.run(phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path))
        assert gc.get_freeze_count() >= before  # not unfrozen under its feet
    finally:
        gc.unfreeze()


class _Thresholds(_Frozen):
    """A sink noting the collector's thresholds at each event."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, int]] = []

    def emit(self, event: Event) -> None:
        self.seen.append(gc.get_threshold())


def test_a_run_raises_the_young_threshold_and_puts_the_programs_back(tmp_path: Path) -> None:
    from phalanx.api import RUN_GC_THRESHOLD

    before = gc.get_threshold()
    gc.set_threshold(500, 7, 9)  # the program's own
    try:
        seen = _Thresholds()
        asyncio.run(
            phalanx.run(Plan.from_dict(sim_plan(4, agents=2)), state=tmp_path, sinks=[seen])
        )
        assert seen.seen and set(seen.seen) == {(RUN_GC_THRESHOLD, 7, 9)}  # its older ones kept
        assert gc.get_threshold() == (500, 7, 9)  # put back
    finally:
        gc.set_threshold(*before)


def test_thresholds_the_program_sets_during_a_run_or_a_disabled_young_pass_are_left(
    tmp_path: Path,
) -> None:
    before = gc.get_threshold()

    class Sets(_Frozen):
        def emit(self, event: Event) -> None:
            if event.type == "run_started":
                gc.set_threshold(1234, 5, 6)  # the program changes them meanwhile

    try:
        asyncio.run(phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path / "a",
                                sinks=[Sets()]))  # fmt: skip
        assert gc.get_threshold() == (1234, 5, 6)  # its own, not the ones before the run
        gc.set_threshold(0, 10, 10)  # young passes off
        seen = _Thresholds()
        asyncio.run(phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path / "b",
                                sinks=[seen]))  # fmt: skip
        assert set(seen.seen) == {(0, 10, 10)}  # never turned on by a run
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_the_setup_of_a_run_is_inside_the_frozen_heap(tmp_path: Path, monkeypatch) -> None:
    """The plan's journal row and the orchestrator are built with the heap frozen (10,000
    tasks' records are made before the first attempt)."""
    import phalanx.api as api

    counts: list[int] = []
    real = api._create_run

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_create_run", spy)
    asyncio.run(phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path))
    assert counts and counts[0] > 1000
    assert gc.get_freeze_count() == 0


def test_older_thresholds_the_program_changes_during_a_run_are_kept(tmp_path: Path) -> None:
    before = gc.get_threshold()

    class SetsOlder(_Frozen):
        def emit(self, event: Event) -> None:
            if event.type == "run_started":
                young, _, _ = gc.get_threshold()
                gc.set_threshold(young, 3, 4)  # only the older generations'

    gc.set_threshold(700, 10, 10)
    try:
        asyncio.run(phalanx.run(Plan.from_dict(sim_plan(3, agents=1)), state=tmp_path,
                                sinks=[SetsOlder()]))  # fmt: skip
        assert gc.get_threshold() == (700, 3, 4)  # the young put back, the older kept
    finally:
        gc.set_threshold(*before)

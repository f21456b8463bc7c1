"""Output files off the event loop (issue 22): a thread writes each success's file as the run
goes; every documented path exists when ``phalanx.run`` returns."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx import Plan
from phalanx.agents.spec import AgentSpec
from phalanx.agents.styles import Styles
from phalanx.events import TaskSucceeded
from phalanx.plan.model import Task
from phalanx.runtime import outputs as outputs_module
from phalanx.runtime.outputs import OutputWriter


def _plan(n: int) -> Plan:
    data = sim_plan(n, agents=4)
    data["tasks"][0]["style"] = "json"  # one task in a style of its own: its own extension
    return Plan.from_dict(data)


def test_every_file_is_written_by_the_writer_thread_not_the_event_loop(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, str]] = []  # (file name, thread) of every output file opened
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            opened.append((str(path), threading.current_thread().name))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(outputs_module.os, "open", spy)
    result = asyncio.run(phalanx.run(_plan(40), state=state))
    assert result.status == "succeeded"
    files = sorted(p.name for p in result.outputs_dir.iterdir())
    assert files == sorted(["t0.json", *(f"t{i}.txt" for i in range(1, 40))])
    for tid, t in result.tasks.items():  # each file holds its task's answer
        assert next(result.outputs_dir.glob(f"{tid}.*")).read_text() == t.output
    assert sorted(name for name, _ in opened) == files
    assert {thread for _, thread in opened} == {"phalanx-outputs"}


def test_the_end_of_the_run_writes_what_the_writer_could_not(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose write failed in the thread is written at the end of the run (or its
    error raised there, as before): no file of a run silently goes missing."""
    real_open = os.open

    def flaky(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == "t1.txt":
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(outputs_module.os, "open", flaky)
    result = asyncio.run(phalanx.run(_plan(3), state=state))
    assert result.status == "succeeded"
    assert (result.outputs_dir / "t1.txt").read_text() == result.tasks["t1"].output
    assert sorted(p.name for p in result.outputs_dir.iterdir()) == ["t0.json", "t1.txt", "t2.txt"]


def test_the_writer_names_files_by_the_answering_agents_style(tmp_path: Path) -> None:
    agents = {"ann": AgentSpec(role="designer", name="ann", style="yaml")}
    tasks = {"a": Task(id="a", prompt="p"), "b": Task(id="b", prompt="p", style="html")}  # type: ignore[arg-type]
    writer = OutputWriter(tmp_path / "out", lambda: 1, tasks.get, lambda: agents, Styles())
    writer.emit(TaskSucceeded(ts=0.0, task_id="a", attempt_id=1, agent="ann", output="k: v"))
    writer.emit(TaskSucceeded(ts=0.0, task_id="b", attempt_id=2, agent="ann", output="<p>"))
    writer.emit(TaskSucceeded(ts=0.0, task_id="zz", attempt_id=3, agent="ann", output="?"))
    writer.close(1)
    writer.close(1)  # idempotent
    assert writer.written == {"a.yaml", "b.html"}
    assert (tmp_path / "out" / "a.yaml").read_text() == "k: v"
    assert (tmp_path / "out" / "b.html").read_text() == "<p>"


def test_a_success_gets_its_file_only_once_its_journal_batch_is_committed(
    tmp_path: Path,
) -> None:
    tasks = {"a": Task(id="a", prompt="p"), "b": Task(id="b", prompt="p")}  # type: ignore[arg-type]
    batch = iter([3, 4])  # a's event goes into the journal's batch 3, b's into batch 4
    writer = OutputWriter(tmp_path / "out", lambda: next(batch), tasks.get, dict, Styles())
    writer.emit(TaskSucceeded(ts=0.0, task_id="a", attempt_id=1, agent="", output="x"))
    writer.emit(TaskSucceeded(ts=0.0, task_id="b", attempt_id=2, agent="", output="y"))
    writer.committed(2)
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # the thread is idle: neither batch is committed
        assert not (tmp_path / "out" / "a.txt").exists()
        time.sleep(0.01)
    writer.close(3)  # batch 3 committed, batch 4 not (a crash would lose b's success)
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
    assert not (tmp_path / "out" / "b.txt").exists()
    assert writer.written == {"a.txt"}

"""Output files (issue 22): one per succeeded task, each written after the journal committed
its success (a small run's at its end, a large run's by a helper process as it goes), all
before ``phalanx.run`` returns, each holding its journaled answer, named by its style."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx import Plan
from phalanx.runtime import outputs as outputs_module


def _plan(n: int, latency_ms: float = 0) -> Plan:
    data = sim_plan(n, agents=4, latency_ms=latency_ms)
    data["tasks"][0]["style"] = "json"  # one task in a style of its own: its own extension
    return Plan.from_dict(data)


def test_each_success_has_its_file_written_after_the_journal_committed_it(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed: dict[str, bool] = {}  # file name -> was its success in the journal then
    real_write = outputs_module._write

    def spy(folder: int, name: str, text: str) -> None:
        db = sqlite3.connect(state / "journal.sqlite")  # another connection: what is durable
        try:
            tid = name.rsplit(".", 1)[0]
            found = db.execute("SELECT 1 FROM results WHERE task_id = ?", (tid,)).fetchone()
        finally:
            db.close()
        committed[name] = found is not None
        real_write(folder, name, text)

    monkeypatch.setattr(outputs_module, "_write", spy)
    result = asyncio.run(phalanx.run(_plan(40), state=state))
    assert result.status == "succeeded"
    files = sorted(p.name for p in result.outputs_dir.iterdir())
    assert files == sorted(["t0.json", *(f"t{i}.txt" for i in range(1, 40))])
    assert committed == dict.fromkeys(files, True)
    for tid, t in result.tasks.items():  # each file holds its task's answer
        assert next(result.outputs_dir.glob(f"{tid}.*")).read_text() == t.output


def test_a_failed_write_is_raised_not_silent(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = outputs_module._write

    def full(folder: int, name: str, text: str) -> Any:
        if name == "t1.txt":
            raise OSError(28, "No space left on device")
        return real_write(folder, name, text)

    monkeypatch.setattr(outputs_module, "_write", full)
    with pytest.raises(OSError, match="No space left"):
        asyncio.run(phalanx.run(_plan(3), state=state))


def test_a_long_answer_is_written_whole(state: Path) -> None:
    result = asyncio.run(phalanx.run(Plan.from_dict(sim_plan(1)), state=state))
    path = result.outputs_dir / "t0.txt"
    big = "ü" * 3_000_000  # several MB: more than one write may take
    folder = os.open(result.outputs_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        outputs_module._write(folder, "t0.txt", big)
    finally:
        os.close(folder)
    assert path.read_text(encoding="utf-8") == big


# -- a large run: its files are written by a helper process as their successes are committed


def _big(state: Path, monkeypatch: pytest.MonkeyPatch) -> phalanx.RunResult:
    """A run of more tasks than STREAM_AT (made small here): the helper starts at its first
    results (which come in several commits: a 5 ms model, 4 agents)."""
    monkeypatch.setattr(outputs_module, "STREAM_AT", 50)
    result = asyncio.run(phalanx.run(_plan(122, latency_ms=5), state=state))
    assert result.status == "succeeded"
    return result


def _assert_every_file_holds_its_answer(result: phalanx.RunResult) -> None:
    names = sorted(p.name for p in result.outputs_dir.iterdir())
    assert names == sorted(["t0.json", *(f"t{i}.txt" for i in range(1, len(result.tasks)))])
    for tid, t in result.tasks.items():
        assert next(result.outputs_dir.glob(f"{tid}.*")).read_text() == t.output


def test_a_large_runs_files_are_handed_to_a_helper_only_after_their_commit(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, bool] = {}  # task -> was its success durable when its file was handed on
    started: list[list[str]] = []
    handed: list[int] = []
    real_committed, real_popen = outputs_module.OutputStream.committed, subprocess.Popen

    def spy(self: outputs_module.OutputStream, rows: Any) -> None:
        db = sqlite3.connect(state / "journal.sqlite")  # another connection: what is durable
        try:
            for row in rows:
                found = db.execute("SELECT 1 FROM results WHERE task_id = ?", (row[1],))
                seen[row[1]] = found.fetchone() is not None
        finally:
            db.close()
        real_committed(self, rows)

    def popen(args: list[str], *a: Any, **kw: Any) -> Any:
        started.append(args)
        handed.append(len(seen))  # how many results had come when the helper started
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(outputs_module.OutputStream, "committed", spy)
    monkeypatch.setattr(subprocess, "Popen", popen)
    result = _big(state, monkeypatch)
    assert len(started) == 1 and started[0][1:3] == ["-I", "-S"]  # one helper, bare
    assert handed[0] < len(result.tasks) // 2  # started at the first results, not the end
    assert seen == dict.fromkeys(result.tasks, True)
    _assert_every_file_holds_its_answer(result)


def test_a_helper_that_dies_leaves_no_file_missing(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs_module, "_HELPER", "import os; os._exit(3)")
    _assert_every_file_holds_its_answer(_big(state, monkeypatch))


def test_a_helper_that_cannot_start_leaves_no_file_missing(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def popen(*_: Any, **__: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", popen)
    _assert_every_file_holds_its_answer(_big(state, monkeypatch))


def test_a_file_the_helper_cannot_write_is_raised(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = (  # reads everything, writes nothing, says the disk is full
        "import marshal, sys; sys.stdin.buffer.read();"
        " sys.stdout.buffer.write(marshal.dumps((0, [('t1.txt', 28, 'No space left on device')])))"
    )
    monkeypatch.setattr(outputs_module, "_HELPER", full)
    with pytest.raises(OSError, match="No space left") as caught:
        _big(state, monkeypatch)
    assert caught.value.filename.endswith("t1.txt")


@pytest.mark.parametrize("when", ["at the end", "streamed"])
def test_agents_the_autoscaler_cloned_name_their_files_by_their_style(
    state: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A clone is not in the plan's agents: its files were named by the task (``.txt``)."""
    if when == "streamed":
        monkeypatch.setattr(outputs_module, "STREAM_AT", 20)
    data = sim_plan(60, agents=1, latency_ms=100)
    data["agents"][0]["style"] = "json"
    data["autoscale"] = {"start_agents": 1, "interval": 0.2}
    data["limits"] = {"max_agents": 6}
    result = asyncio.run(phalanx.run(Plan.from_dict(data), state=state))
    assert result.status == "succeeded"
    assert len({t.agent for t in result.tasks.values()}) > 1  # clones answered some
    assert sorted(p.suffix for p in result.outputs_dir.iterdir()) == [".json"] * 60

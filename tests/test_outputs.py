"""Output files (issue 22): one per succeeded task, written when the run ends, after the
journal's last commit, each holding its journaled answer, named by its answer's style."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx import Plan
from phalanx.runtime import outputs as outputs_module


def _plan(n: int) -> Plan:
    data = sim_plan(n, agents=4)
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

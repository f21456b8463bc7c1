"""The benchmark suite keeps working: ``python -m bench --smoke`` runs every benchmark at a
tiny size (seconds) and writes its table. Targets are not checked here: smoke sizes say
nothing about them; ``make bench`` measures them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IDS = ("B1", "B2", "B3", "B4", "B5", "B5m", "B6", "B7", "B7b", "B7c", "B8", "B9", "B10a", "B10b")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object], str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "benchmarks.md").read_text(encoding="utf-8")
    data = json.loads((out / "benchmarks.json").read_text(encoding="utf-8"))
    return md, data, proc.stdout


def test_smoke_runs_every_benchmark_and_writes_the_table(
    smoke: tuple[str, dict[str, object], str],
) -> None:
    md, data, stdout = smoke
    assert md.startswith("# Benchmarks (smoke run")
    assert "| # | benchmark | figure | baseline | ratio | target | result |" in md
    rows = data["rows"]
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == ["B1", "B2", "B2", *IDS[2:]]
    for r in rows:
        assert not r["verdict"].startswith("error"), r
        assert f"| {r['id']} |" in md
    assert all(r["passed"] in (True, False) and r["ratio"] is not None for r in rows)
    b5m = next(r for r in rows if r["id"] == "B5m")
    assert b5m["data"]["nodes"] == 3  # agents spread over the head and two worker nodes
    machine = data["machine"]
    assert isinstance(machine, dict)
    assert machine["cores"] and machine["python"] and machine["date"]
    assert "Machine:" in md and machine["python"] in md
    assert "B9: starting" in stdout  # progress is printed as it goes


def test_a_missed_target_is_shown_plainly_with_its_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ is a package at the repository root
    from bench.common import Row
    from bench.report import render_markdown

    row = Row(
        id="B1",
        title="per-task overhead",
        figure="300 µs/task",
        baseline="30 µs/task",
        target="<= 4x baseline per task",
        ratio=10.0,
        passed=False,
        profile="cProfile of one run: top 5 functions by own time",
    )
    machine = {
        "date": "today",
        "cores": 2,
        "usable_cores": 2,
        "cpu": "cpu",
        "memory_gib": 1.0,
        "implementation": "CPython",
        "python": "3.11",
        "platform": "linux",
        "phalanx": "0",
        "commit": "abc",
        "parallel_capacity": 1.0,
        "repeats": 3,
    }
    md = render_markdown([row], machine, seconds=60, smoke=False)
    assert "| B1 | per-task overhead | 300 µs/task | 30 µs/task | 10.00x |" in md
    assert "**MISS**" in md and "missed: B1" in md
    assert "### B1: per-task overhead (missed)" in md
    assert "cProfile of one run" in md

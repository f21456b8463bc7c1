"""Small command-line behaviours: a closed pipe ends a command quietly (exit 141, no
traceback), ``report`` prints Markdown and JSON unless ``-o`` (HTML goes to a file), and
``runs`` shows whole plan names."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan, write_plan
from phalanx.cli.app import EXIT_BROKEN_PIPE, main
from phalanx.exceptions import NothingToResume
from phalanx.journal import Journal

LONG_NAME = "a-plan-whose-name-is-much-longer-than-twenty-characters-and-then-some"
PIPE_SIZE = 4096  # the smallest pipe Linux makes: a long output fills it for sure


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A state dir holding one finished sim run with many agents (long outputs)."""
    state = tmp_path_factory.mktemp("cli-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("PHALANX_STATE_DIR", str(state))
    try:
        plan = sim_plan(160, agents=160)
        plan["name"] = LONG_NAME
        plan["agents"] = [
            {
                "role": "generalist",
                "count": 160,
                "names": [f"agent-with-a-fairly-long-name-{i:03d}" for i in range(160)],
            }
        ]
        result = phalanx.run_sync(phalanx.Plan.from_dict(plan))
        yield state, result.run_id
    finally:
        mp.undo()


def _phalanx(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx", "--state-dir", str(state), *args]


def _spawn(argv: list[str], stdout: int) -> subprocess.Popen[bytes]:
    # PYTHONUNBUFFERED makes a big write that the reader cuts short a silent partial write
    # (exit 0, the rest dropped by Python): the default buffered stdout sees the broken pipe
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)


def _small_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):
        os.close(r)
        os.close(w)
        pytest.skip("needs a pipe smaller than the output (F_SETPIPE_SZ: Linux)")
    return r, w


# -- 1. a closed pipe ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["report", "--format", "md", "-o", "-"]]
)
def test_head_one_line_ends_quietly(big: tuple[Path, str], args: list[str]) -> None:
    """``phalanx status | head -1``: the reader takes one line and goes away; the command
    stops with 141 and says nothing (it used to end in a BrokenPipeError traceback)."""
    state, run_id = big
    r, w = _small_pipe()
    proc = _spawn([*_phalanx(state, *args[:1]), run_id, *args[1:]], w)
    os.close(w)
    first = b""
    while not first.endswith(b"\n"):  # byte by byte: the rest stays in the pipe
        chunk = os.read(r, 1)
        assert chunk, f"no full line before EOF: {first!r}"
        first += chunk
    os.close(r)  # `head -1` exits
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text
    assert text == ""
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert first.strip()  # the line it did read is whole


@pytest.mark.parametrize("args", [["runs"], ["roles"], ["report", "--format", "json"], ["--help"]])
def test_a_reader_gone_before_any_output_ends_quietly(
    big: tuple[Path, str], args: list[str]
) -> None:
    state, _ = big
    r, w = os.pipe()
    os.close(r)  # nobody will read: the first write fails
    proc = _spawn(_phalanx(state, *args), w)
    os.close(w)
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text
    assert text == ""
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_a_run_into_a_closed_pipe_still_runs_to_its_end(tmp_path: Path) -> None:
    """``run --json`` into a closed stdout: the result goes nowhere (exit 141, no traceback),
    the run itself is journaled whole."""
    state = tmp_path / "state"
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(6, agents=2))
    r, w = os.pipe()
    os.close(r)
    argv = [*_phalanx(state, "run", str(plan), "--no-tui", "--json", "--run-id", "closed-pipe")]
    proc = _spawn(argv, w)
    os.close(w)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err.decode() and "run closed-pipe succeeded" in err.decode()
    assert proc.returncode == EXIT_BROKEN_PIPE
    journal = Journal(state / "journal.sqlite")
    try:
        assert journal.get_run("closed-pipe").status == "succeeded"
    finally:
        journal.close()


def test_a_run_with_its_progress_stream_closed_runs_to_its_end(tmp_path: Path) -> None:
    """Progress and the summary (stderr) go nowhere: the run ends as it would, exit 0."""
    state = tmp_path / "state"
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(6, agents=2))
    r, w = os.pipe()
    os.close(r)
    argv = [*_phalanx(state, "run", str(plan), "--no-tui", "--run-id", "closed-err")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=w)
    os.close(w)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == b""
    journal = Journal(state / "journal.sqlite")
    try:
        assert journal.get_run("closed-err").status == "succeeded"
    finally:
        journal.close()


def test_the_exit_code_is_documented() -> None:
    import phalanx.cli.app as app

    assert app.__doc__ is not None and f"{EXIT_BROKEN_PIPE} stdout was closed" in app.__doc__


# -- 2. report: md and json print ---------------------------------------------------------
def test_report_md_and_json_print_html_writes_a_file(
    big: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run_id = big
    report_dir = state / "runs" / run_id
    assert main(["--state-dir", str(state), "report", run_id, "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# phalanx report") and "## Metrics" in out
    assert not (report_dir / "report.md").exists()

    assert main(["--state-dir", str(state), "report", run_id, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run_id
    assert not (report_dir / "report.json").exists()

    assert main(["--state-dir", str(state), "report", run_id]) == 0  # html: a file
    out = capsys.readouterr().out
    assert out == f"report: {report_dir / 'report.html'}\n"
    assert (report_dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_report_md_to_a_file_with_o(
    big: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run_id = big
    path = state / "elsewhere.md"
    code = main(["--state-dir", str(state), "report", run_id, "--format", "md", "-o", str(path)])
    assert code == 0
    assert capsys.readouterr().out == f"report: {path}\n"
    assert path.read_text().startswith("# phalanx report")


def test_report_help_says_where_each_format_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "md and json print to stdout" in help_text
    assert "report.html" in help_text and "-o FILE writes any format to FILE" in help_text


# -- 4. runs: whole plan names ------------------------------------------------------------
def test_runs_shows_whole_plan_names(
    big: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run_id = big
    assert main(["--state-dir", str(state), "runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head, row = lines[0], next(line for line in lines if line.startswith(run_id))
    assert f" {LONG_NAME} " in row
    # the columns still line up: each heading starts where its column does
    assert row.index("succeeded") == head.index("STATUS")
    assert row.index(" (sim)") > head.index("STARTED")


def _run_row(state: Path, run_id: str) -> tuple[dict[str, Any], int]:
    """The run's row and how many events it has (what a resume must leave alone)."""
    db = sqlite3.connect(state / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        row = dict(db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
        (n,) = db.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        db.close()
    return row, n


def test_resume_of_a_succeeded_run_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A succeeded run: one line, exit 0, no new session, no event, the same times (the API
    raises NothingToResume). A failed run is still resumed, as before (a new session)."""
    state = tmp_path / "state"
    monkeypatch.setenv("PHALANX_STATE_DIR", str(state))
    done = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(3)), run_id="done-run")
    assert done.status == "succeeded"
    before = _run_row(state, "done-run")
    # killed after its end was committed, before its files were all written: resume
    # writes them again from the journal (and changes nothing journaled)
    (done.outputs_dir / "t0.txt").unlink()
    (done.outputs_dir / "t1.txt").write_text("cut sho")

    assert main(["resume", "done-run"]) == 0
    err = capsys.readouterr().err
    assert err == "run done-run already succeeded; nothing to resume\n"
    with pytest.raises(NothingToResume, match="already succeeded"):
        asyncio.run(phalanx.resume("done-run"))
    assert _run_row(state, "done-run") == before
    assert before[0]["sessions"] == 1
    for tid, t in done.tasks.items():
        assert (done.outputs_dir / f"{tid}.txt").read_text() == t.output

    failing = sim_plan(2, faults={"auth": 1.0}, max_attempts=1)
    failed = phalanx.run_sync(phalanx.Plan.from_dict(failing), run_id="failed-run")
    assert failed.status == "failed"
    assert main(["resume", "failed-run"]) == 1
    capsys.readouterr()
    row, _ = _run_row(state, "failed-run")
    assert (row["status"], row["sessions"]) == ("failed", 2)


LONG_RUN_ID = "migration-of-the-http-layer-2026-12-04-0001"  # 43 characters


def test_the_summary_fits_80_columns_and_never_cuts_the_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line of the end-of-run summary that holds the run id (the title, the status,
    resume and merge commands, the outputs folder) fits 80 columns, the id whole on it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHALANX_STATE_DIR", ".phalanx")
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(3))
    assert main(["run", str(plan), "--run-id", LONG_RUN_ID, "--quiet"]) == 0
    printed = capsys.readouterr().err.splitlines()
    done = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(3)), run_id=LONG_RUN_ID + "b")
    cut = dataclasses.replace(done, status="interrupted", changes={"Ada": ["src/http.py"]})
    for lines, rid in ((printed, LONG_RUN_ID), (cut.summary().splitlines(), LONG_RUN_ID + "b")):
        assert lines[0].startswith(f"run {rid} ")
        too_wide = [line for line in lines if len(line) > 80]
        assert not too_wide, "\n".join(lines)
        held = [line for line in lines if rid in line]
        assert any(line.endswith(f"phalanx status {rid}") for line in held), lines
        assert any(line.endswith(f".phalanx/runs/{rid}/outputs/") for line in held), lines
    cut_lines = cut.summary().splitlines()
    assert any(line.endswith(f"phalanx resume {LONG_RUN_ID}b") for line in cut_lines)
    assert any(line.endswith(f"phalanx merge {LONG_RUN_ID}b") for line in cut_lines)

    from phalanx.cli.commands import _finish  # Ctrl-C during the run: its one hint

    assert _finish(130, LONG_RUN_ID + "-interrupted") == 130
    hint = capsys.readouterr().err.strip().splitlines()
    assert all(len(line) <= 80 for line in hint) and hint[-1].endswith(
        f"'phalanx resume {LONG_RUN_ID}-interrupted'"
    ), hint
    monkeypatch.setenv("PHALANX_STATE_DIR", ".phalanx-seq")  # the same id, a new journal
    assert main(["run", str(plan), "--sequential", "--run-id", LONG_RUN_ID, "--quiet"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert any(line.endswith(f"phalanx report RUN_ID --baseline {LONG_RUN_ID}") for line in lines)

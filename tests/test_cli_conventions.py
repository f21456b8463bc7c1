"""CLI conventions: a missing optional extra is one line naming it (no traceback), SIGTERM
exits 143, and the exit codes are those the README lists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import sim_plan, write_plan
from phalanx.cli.app import EXTRA_OF, missing_extra_hint


def _blocked(modules: list[str], argv: list[str], state: Path) -> subprocess.CompletedProcess[str]:
    """``phalanx ARGV`` in a process where ``modules`` cannot be imported."""
    code = (
        "import sys\n"
        f"for m in {modules!r}: sys.modules[m] = None\n"
        "from phalanx.cli.app import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    env = {**os.environ, "PHALANX_STATE_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("modules", "argv", "extra"),
    [
        (["starlette", "uvicorn"], ["dashboard", "--port", "0"], "web"),
        (["starlette", "uvicorn"], ["run", "PLAN", "--web", "-q"], "web"),
        (["ray"], ["run", "PLAN", "--engine", "ray", "-q"], "ray"),
        (["anthropic"], ["run", "PLAN", "--provider", "anthropic:claude-x", "-q"], "anthropic"),
        (["openai"], ["run", "PLAN", "--provider", "openai:gpt-x", "-q"], "openai"),
    ],
    ids=["dashboard", "run-web", "ray", "anthropic", "openai"],
)
def test_a_missing_extra_is_one_line(
    tmp_path: Path, modules: list[str], argv: list[str], extra: str
) -> None:
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(2))
    argv = [str(plan) if a == "PLAN" else a for a in argv]
    done = _blocked(modules, argv, tmp_path / "state")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install 'phalanx[{extra}]'" in lines[0], done.stderr


def test_the_hint_knows_every_extra_package() -> None:
    for package, extra in EXTRA_OF.items():
        hint = missing_extra_hint(ModuleNotFoundError(name=f"{package}.sub"))
        assert hint is not None and f"phalanx[{extra}]" in hint
    assert missing_extra_hint(ModuleNotFoundError(name="not_an_extra")) is None


def test_run_json_leaves_only_json_on_stdout(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(3, agents=2, deps="chain"))
    out = tmp_path / "out.json"
    env = {**os.environ, "PHALANX_STATE_DIR": str(tmp_path / "state")}
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "phalanx", "run", str(plan), "--json", "--run-id", "j1"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())  # nothing but JSON
    assert result["run_id"] == "j1" and result["status"] == "succeeded"
    assert result["exit_code"] == 0 and result["simulated"] is True
    assert sorted(result["tasks"]) == ["t0", "t1", "t2"]
    for task in result["tasks"].values():
        assert task["state"] == "succeeded" and task["attempts"] == 1
        assert Path(task["output_path"]).is_file()
    assert result["usage"]["input_tokens"] > 0
    # progress and the summary went to stderr
    assert "✓ t2" in done.stderr and "run j1 succeeded" in done.stderr


def test_sigterm_exits_143(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(200, agents=2, latency_ms=50))
    env = {**os.environ, "PHALANX_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "phalanx", "run", str(plan), "--run-id", "term"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the first task line: the run is going
            if "✓" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "phalanx resume term" in err


def _complete(script: str, line: str) -> list[str]:
    """What bash completes for ``line`` (its last word the one being completed)."""
    words = line.split(" ")
    probe = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_phalanx; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_come_from_the_parser(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "phalanx", "completion", shell],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "complete -o default -F _phalanx phalanx" in done.stdout
    if shell == "bash":
        script = done.stdout
        assert _complete(script, "phalanx re") == ["report", "resume"]
        assert "--json" in _complete(script, "phalanx run plan.yaml --")
        assert _complete(script, "phalanx run plan.yaml --engine ") == ["local", "ray"]
        assert _complete(script, "phalanx report --format j") == ["json"]
        assert {"bash", "zsh"} <= set(_complete(script, "phalanx completion "))
        assert _complete(script, "phalanx completion z") == ["zsh"]


def test_an_error_line_never_shows_a_url_password(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            **sim_plan(1),
            "mcp": {"s": {"url": "http://admin:hunter2pass@127.0.0.1:9/mcp"}},
        },
    )
    env = {**os.environ, "PHALANX_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "phalanx", "run", str(plan), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "hunter2pass" not in done.stderr + done.stdout and "hunte" not in done.stderr


def test_run_json_names_the_agent_of_a_failed_task(tmp_path: Path) -> None:
    data = {
        "name": "fails",
        "provider": "sim",
        "providers": {"sim:bad": {"faults": {"auth": 1.0}}},
        "agents": [{"name": "Flaky", "role": "generalist", "provider": "sim:bad"}],
        "tasks": [{"id": "t", "prompt": "x"}],
    }
    plan = write_plan(tmp_path / "plan.yaml", data)
    env = {**os.environ, "PHALANX_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "phalanx", "run", str(plan), "--json", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    task = json.loads(done.stdout)["tasks"]["t"]
    assert (task["state"], task["agent"], task["error_class"]) == ("failed", "Flaky", "auth")

"""phalanx logs through its own ``phalanx`` logger (a NullHandler until someone adds one),
never changes the root logger, and ``phalanx -v`` logs the run to stderr, redacted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import phalanx
from conftest import sim_plan, write_plan
from phalanx.cli.app import _setup_logging
from phalanx.events import TaskFailed
from phalanx.status.logsink import LogSink, log_sinks

CANARY = "sk-canary-logging-0123456789"


@pytest.fixture
def clean_loggers() -> Iterator[None]:
    """Restores the handlers and levels ``_setup_logging`` changes."""
    names = ["phalanx", "anthropic", "openai", "httpx", "httpx2"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_the_phalanx_logger_has_a_null_handler() -> None:
    assert phalanx.__name__ == "phalanx"
    handlers = logging.getLogger("phalanx").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_building_providers_leaves_the_root_logger_alone() -> None:
    from phalanx.providers.anthropic_api import AnthropicProvider
    from phalanx.providers.openai_api import OpenAIProvider

    root = logging.getLogger()
    probe = logging.StreamHandler()
    root.addHandler(probe)
    try:
        before = (list(root.filters), list(probe.filters), root.level)
        env = {"ANTHROPIC_API_KEY": "sk-ant-test-000000000", "OPENAI_API_KEY": "sk-test-00000000"}
        AnthropicProvider("claude-x", {"base_url": "http://127.0.0.1:9/"}, env=env)
        OpenAIProvider("gpt-x", {"base_url": "http://127.0.0.1:9/v1"}, env=env)
        assert (list(root.filters), list(probe.filters), root.level) == before
    finally:
        root.removeHandler(probe)


def test_no_log_sink_unless_the_logger_would_show_info(clean_loggers: None) -> None:
    logging.getLogger("phalanx").setLevel(logging.NOTSET)
    if logging.getLogger().isEnabledFor(logging.INFO):
        pytest.skip("the root logger shows INFO in this process")
    assert log_sinks() == []
    logging.getLogger("phalanx").setLevel(logging.INFO)
    assert [type(s) for s in log_sinks()] == [LogSink]


def test_verbose_handler_redacts(
    clean_loggers: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the handler binds the captured stream
    _setup_logging(1)
    event = TaskFailed(
        ts=1.0,
        task_id="t1",
        error_class="auth",
        error=f"401 bad key {CANARY}",
        attempts=1,
    )
    LogSink().emit(event)
    err = capsys.readouterr().err
    assert "phalanx.run" in err and "t1" in err and "failed (auth)" in err
    assert CANARY not in err and "[redacted]" in err


def _run(plan: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """``phalanx run PLAN FLAGS`` in a child process."""
    argv = [sys.executable, "-m", "phalanx", "run", str(plan), *flags]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_cli_verbose_logs_the_run_on_stderr(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml", {**sim_plan(2, agents=2, deps="chain"), "name": "logged"}
    )
    env = {**os.environ, "PHALANX_STATE_DIR": str(tmp_path / "state")}
    done = _run(plan, env, "-q", "-v")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if " INFO phalanx.run: " in line]
    assert any("started: plan logged" in line for line in lines), done.stderr
    assert sum("✓" in line for line in lines) == 2, done.stderr
    without_q = _run(plan, env, "-v", "--no-tui")
    assert without_q.returncode == 0, without_q.stderr
    ticks = [line for line in without_q.stderr.splitlines() if "✓ t" in line]
    assert len(ticks) == 2 and all(" INFO phalanx.run: " in t for t in ticks), ticks  # once
    quiet = _run(plan, env, "-q")
    assert quiet.returncode == 0 and "phalanx.run" not in quiet.stderr

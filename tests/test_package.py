"""The public surface is pinned; importing phalanx has no side effects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import phalanx

EXPECTED = {
    "ROLES", "AgentSpec", "BudgetExhausted", "ErrorClass", "JournalError", "Limits",
    "PhalanxError", "Plan", "PlanError", "ProviderError", "Role", "RunResult", "Snapshot",
    "StatusTracker", "Swarm", "Task", "TaskResult", "Usage", "UsageError", "__version__",
    "approve", "decompose_project", "fold", "load_plan", "render_status", "resume", "run",
    "run_sync",
    "AgentPipeline", "AgentSwarm", "Pipeline", "Team",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(phalanx.__all__) == EXPECTED
    for name in phalanx.__all__:
        assert hasattr(phalanx, name), name


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, phalanx\n"
        "bad = [m for m in ('ray', 'llama_cpp', 'playwright', 'anthropic', 'openai')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no .phalanx/ or anything else created


def test_no_shell_true_in_source() -> None:
    src = Path(phalanx.__file__).parent
    hits = [p for p in src.rglob("*.py") if "shell=True" in p.read_text()]
    assert hits == []


def test_sync_facades_are_typed_like_their_coroutines() -> None:
    import inspect
    import typing

    from phalanx.api import RunOptions, run, run_sync
    from phalanx.evals import evaluate, evaluate_sync
    from phalanx.plan.planner import PlannerOptions, decompose, decompose_async

    for sync_fn, async_fn in [
        (run_sync, run),
        (evaluate_sync, evaluate),
        (decompose, decompose_async),
    ]:
        assert inspect.signature(sync_fn) == inspect.signature(async_fn), sync_fn.__name__
        assert not inspect.iscoroutinefunction(sync_fn)
    for options, fn, first in [(RunOptions, run, 1), (PlannerOptions, decompose_async, 1)]:
        keywords = list(inspect.signature(fn).parameters)[first:]
        assert list(typing.get_type_hints(options)) == keywords, options.__name__


def test_the_old_top_level_module_names_still_resolve() -> None:
    import importlib

    for old, new in phalanx._MOVED.items():
        assert getattr(phalanx, old) is importlib.import_module(new), old
    assert (
        phalanx.styles.register_style
        is importlib.import_module("phalanx.agents.styles").register_style
    )
    with pytest.raises(AttributeError):
        _ = phalanx.no_such_module


def test_old_names_load_lazily(tmp_path: Path) -> None:
    code = "import sys, phalanx\nassert 'phalanx.status.web' not in sys.modules\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr

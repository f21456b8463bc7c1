"""isolation: worktree in a real run, then `phalanx merge`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.cli.app import main
from phalanx.cost import Usage
from phalanx.providers.base import Completion, ToolCall
from phalanx.testing import ScriptedProvider


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def write(cid: str, path: str, content: str) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=Usage(input_tokens=5, output_tokens=5),
        tool_calls=(
            ToolCall(id=cid, name="write_file", arguments={"path": path, "content": content}),
        ),
    )


def test_two_agents_edit_one_file_in_parallel_and_merge_reports_the_conflict(
    state: Path, tmp_path: Path, capsys: Any
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "shared.txt").write_text("line one\nline two\n")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "base")
    script = ScriptedProvider(
        {
            "a": [
                write("c1", "shared.txt", "line one\nline two by A\n"),
                write("c2", "a-notes.txt", "A was here\n"),
                "done A",
            ],
            "b": [write("c3", "shared.txt", "line one\nline two by B\n"), "done B"],
        }
    )
    plan = Plan.build(
        agents=[
            AgentSpec(provider="scripted", tools=("write_file",)),
            AgentSpec(provider="scripted", tools=("write_file",)),
        ],
        tasks=[Task(id="a", prompt="edit"), Task(id="b", prompt="edit")],
        policy="round_robin",
        isolation="worktree",
    )
    result = phalanx.run_sync(
        plan, workspace=repo, custom_providers={"scripted": script}, run_id="iso"
    )
    assert result.status == "succeeded", result.summary()
    # nothing clobbered: the workspace is untouched until merge, each branch has its own edit
    assert (repo / "shared.txt").read_text() == "line one\nline two\n"
    by_agent = {result.tasks["a"].agent: "A", result.tasks["b"].agent: "B"}
    assert result.changes is not None
    for agent, who in by_agent.items():
        branch = f"phalanx/iso/{agent}"
        assert git(repo, "show", f"{branch}:shared.txt") == f"line one\nline two by {who}\n"
    changes = {by_agent[k]: v for k, v in result.changes.items()}
    assert changes == {"A": ["a-notes.txt", "shared.txt"], "B": ["shared.txt"]}
    assert "phalanx merge iso" in result.summary()

    code = main(["merge", "iso"])
    out = capsys.readouterr().out
    assert code == 1
    first = next(a for a in by_agent if by_agent[a] == "A")
    second = next(a for a in by_agent if by_agent[a] == "B")
    assert f"merged     {first}" in out
    assert f"CONFLICT   {second}: shared.txt" in out
    assert git(repo, "status", "--porcelain") == ""  # no merge left half done
    assert (repo / "shared.txt").read_text() == "line one\nline two by A\n"
    assert (repo / "a-notes.txt").exists()


def test_isolation_needs_a_git_workspace(state: Path, tmp_path: Path) -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="sim")],
        tasks=[Task(id="a", prompt="x")],
        isolation="worktree",
    )
    with pytest.raises(phalanx.UsageError, match="git"):
        phalanx.run_sync(plan, workspace=tmp_path)

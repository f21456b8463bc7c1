"""The agent library: save, list, show, rm; immutable versions; plans that name saved agents.

Every test has its own project and user folders (``$PHALANX_AGENTS_DIR``,
``$PHALANX_USER_AGENTS``), so nothing is read from or written to the real home.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import phalanx
from phalanx.cli.app import main
from phalanx.exceptions import PlanError, UsageError
from phalanx.plan import load_plan
from phalanx.plan.library import EvalRecord, Library, parse_ref, project_dir, user_dir

pytestmark = pytest.mark.usefixtures("library")  # conftest: a library of its own


def write(path: Path, data: Mapping[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(dict(data), sort_keys=False))
    return path


def team(tmp_path: Path, *, style: str = "json", name: str = "team.yaml") -> Path:
    return write(
        tmp_path / name,
        {
            "provider": "sim",
            "providers": {"sim": {"latency": {"ms": 10}}},
            "prices": {"sim": {"input": 1.0, "output": 2.0}},
            "styles": {"verdict": {"base": "json", "schema": {"required": ["ok"]}}},
            "agents": [
                {
                    "role": "reviewer",
                    "style": style,
                    "system": "Be strict.",
                    "skills": ["security"],
                    "tools": ["read_file"],
                    "hooks": [{"on": "after_task", "command": ["true"]}],
                    "context": ["Our code style: short functions."],
                },
                {"role": "coder", "count": 2},
            ],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_save_list_show_and_versions_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], library: Library
) -> None:
    team(tmp_path)
    code, out, _ = run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    first = library.project / "reviewer" / "1.yaml"
    assert code == 0 and out == f"saved reviewer@1 in {first} (from team.yaml:reviewer)\n"
    # the same spec again is not a new version
    code, out, _ = run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    assert code == 0 and out.startswith(
        "unchanged: team.yaml:reviewer is the same spec as reviewer@1"
    )
    # a changed spec is the next version; the first one's file is read-only and unchanged
    text = first.read_text()
    team(tmp_path, style="verdict")
    code, out, _ = run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    assert code == 0 and out.startswith("saved reviewer@2 in ")
    assert first.read_text() == text
    assert not first.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    run_cli(["agents", "save", "coder", "--from", "team.yaml:coder", "--user"], capsys)

    code, out, _ = run_cli(["agents", "list"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "LATEST", "VERSIONS", "SCOPE", "ROLE", "STYLE", "PROVIDER", "LAST", "EVAL",
    ]  # fmt: skip
    assert lines[1].split() == [
        "reviewer",
        "@2",
        "1,2",
        "project",
        "reviewer",
        "verdict",
        "sim",
        "no",
        "eval",
    ]
    assert lines[2].split() == ["coder", "@1", "1", "user", "coder", "text", "sim", "no", "eval"]

    code, out, _ = run_cli(["agents", "show", "reviewer@1"], capsys)
    assert code == 0
    assert out.startswith(f"reviewer@1 · project: {first} · saved ")
    assert "versions: 1, 2 (a saved version never changes)" in out
    shown = yaml.safe_load(out.split("\n", 2)[2].split("evals:")[0])
    assert shown["spec"]["style"] == "json" and shown["spec"]["system"] == "Be strict."
    assert shown["spec"]["tools"] == ["read_file"] and shown["spec"]["skills"] == ["security"]
    assert shown["spec"]["hooks"] == [{"on": "after_task", "command": ["true"]}]
    assert shown["providers"] == {"sim": {"latency": {"ms": 10}}}
    assert "styles" not in shown  # v1 uses a built-in style
    assert "evals: none yet (run: phalanx eval reviewer@1 CASES.yaml)" in out
    code, out, _ = run_cli(["agents", "show", "reviewer", "--json"], capsys)
    doc = json.loads(out)
    assert doc["version"] == 2 and doc["styles"] == {
        "verdict": {"base": "json", "schema": {"required": ["ok"]}}
    }


def test_show_prints_the_eval_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], library: Library
) -> None:
    team(tmp_path)
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    library.get("reviewer@1").record_eval(
        EvalRecord(
            run_id="20261130-000000-abcd",
            at=0.0,
            cases="reviewer-cases",
            n=10,
            passed=8,
            pass_rate=0.8,
            ci_low=0.49,
            ci_high=0.943,
            cost_usd=0.0123,
            p50_seconds=1.5,
            p95_seconds=3.25,
            style_validity=0.9,
        )
    )
    code, out, _ = run_cli(["agents", "show", "reviewer@1"], capsys)
    assert code == 0
    row = out.split("evals:\n")[1].splitlines()[1].split()
    assert row[2:] == [
        "reviewer-cases", "80.0%", "49.0–94.3%", "10", "90.0%", "$0.0123", "1.50s", "3.25s",
        "20261130-000000-abcd",
    ]  # fmt: skip
    _, out, _ = run_cli(["agents", "list"], capsys)
    assert "80.0% [49.0–94.3] n=10 reviewer-cases" in out


def test_plans_reference_saved_agents_by_name_and_pin_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    team(tmp_path)
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    team(tmp_path, style="verdict")
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)

    def plan(ref: str, **more: Any) -> Path:
        return write(
            tmp_path / "uses.yaml",
            {
                "agents": [{"agent": ref, "count": 2, **more}],
                "tasks": [{"id": "t1", "prompt": "review", "role": "reviewer"}],
            },
        )

    pinned = load_plan(str(plan("reviewer@1")))
    assert [a.style for a in pinned.agents] == ["json", "json"]
    assert all(a.options["agent"] == "reviewer@1" for a in pinned.agents)
    assert pinned.agents[0].system_prompt == "Be strict." and pinned.agents[0].provider == "sim"
    # the saved provider options come along
    assert dict(pinned.providers) == {"sim": {"latency": {"ms": 10}}}
    latest = load_plan(str(plan("reviewer")))
    assert [a.style for a in latest.agents] == ["verdict", "verdict"]
    assert "verdict" in latest.styles  # the saved agent's own style comes with it
    named = load_plan(str(plan("reviewer@2", names=["Ada", "Bo"])))
    assert [a.name for a in named.agents] == ["Ada", "Bo"]

    # the plan runs, with the saved spec's style
    code, _, err = run_cli(["run", str(plan("reviewer@1")), "--no-tui", "-q"], capsys)
    assert code == 0, err
    output = next((state / "runs").glob("*/outputs/t1.json")).read_text()
    assert json.loads(output)["simulated"] is True  # sim answers valid json for json styles


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"agent": "nobody"},
            "uses.yaml:2: agents[0].agent: no saved agent 'nobody' (see 'phalanx agents list')",
        ),
        (
            {"agent": "reviewer@7"},
            "uses.yaml:2: agents[0].agent: reviewer@7 does not exist (saved versions: 1)",
        ),
        (
            {"agent": "Reviewer!"},
            "uses.yaml:2: agents[0].agent: 'Reviewer!' is not an agent name",
        ),
        (
            {"agent": "reviewer@1", "style": "text"},
            "uses.yaml:3: agents[0].style: cannot be set beside 'agent: reviewer@1' (a saved "
            "agent is used as saved)",
        ),
    ],
)
def test_a_plan_naming_a_missing_agent_fails_with_one_clear_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state: Path,
    entry: dict[str, Any],
    expected: str,
) -> None:
    team(tmp_path)
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    write(tmp_path / "uses.yaml", {"agents": [entry], "tasks": [{"id": "t", "prompt": "x"}]})
    with pytest.raises(PlanError) as err:
        load_plan("uses.yaml")
    assert str(err.value).startswith(expected), str(err.value)
    code, out, err_text = run_cli(["run", "uses.yaml"], capsys)
    assert code == 2 and out == ""
    assert err_text.count("\n") == 1 and err_text.startswith("phalanx: error: uses.yaml:")


def test_rm_never_reuses_a_version_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], library: Library
) -> None:
    team(tmp_path)
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    team(tmp_path, style="verdict")
    run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    library.get("reviewer@2").record_eval(
        EvalRecord(
            run_id="r", at=0.0, cases="c", n=1, passed=1, pass_rate=1.0, ci_low=0.2, ci_high=1.0
        )
    )
    code, _, err = run_cli(["agents", "rm", "reviewer"], capsys)
    assert code == 2 and err.strip() == (
        "phalanx: error: say which version (reviewer@N), or remove every version with --all"
    )
    code, out, _ = run_cli(["agents", "rm", "reviewer@2"], capsys)
    assert code == 0 and out.startswith("removed reviewer@2 and its eval history (project)")
    assert not (library.project / "reviewer" / "2.evals.jsonl").exists()
    with pytest.raises(UsageError, match=r"reviewer@2 was removed \(saved versions: 1\)"):
        library.get("reviewer@2")
    assert library.get("reviewer").version == 1
    team(tmp_path, style="markdown")
    code, out, _ = run_cli(["agents", "save", "reviewer", "--from", "team.yaml:reviewer"], capsys)
    assert out.startswith("saved reviewer@3 ")  # 2 stays retired
    code, out, _ = run_cli(["agents", "rm", "reviewer", "--all"], capsys)
    assert out.startswith("removed reviewer@1, reviewer@3 ")
    with pytest.raises(UsageError, match="every version of 'reviewer' was removed"):
        library.get("reviewer")
    code, out, _ = run_cli(["agents", "list"], capsys)
    assert out.startswith("no saved agents in ")


def test_project_folder_first_then_the_user_folder(tmp_path: Path, library: Library) -> None:
    spec = phalanx.AgentSpec(role="reviewer", style="json", provider="sim")
    library.save("shared", spec, scope="user")
    assert library.get("shared").scope == "user"
    library.save("shared", spec.set_output_style("yaml"))
    assert (library.get("shared").scope, library.get("shared").spec.style) == ("project", "yaml")
    assert library.get("shared", scope="user").spec.style == "json"
    assert [(a.scope, a.name) for a in library.list_agents()] == [
        ("project", "shared"),
        ("user", "shared"),
    ]


def test_folders_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert project_dir() == tmp_path / "project-agents"
    assert user_dir() == tmp_path / "user-agents"
    monkeypatch.delenv("PHALANX_AGENTS_DIR")
    monkeypatch.delenv("PHALANX_USER_AGENTS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert project_dir() == Path(".phalanx") / "agents"
    assert user_dir() == tmp_path / "xdg" / "phalanx" / "agents"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("reviewer", ("reviewer", None)),
        ("reviewer@2", ("reviewer", 2)),
        ("a-b_c@10", ("a-b_c", 10)),
    ],
)
def test_parse_ref(ref: str, expected: tuple[str, int | None]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["Reviewer", "reviewer@0", "reviewer@x", "a b", "@2", "a@1@2"])
def test_parse_ref_refuses(ref: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(ref)


def test_save_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    team(tmp_path)
    cases = [
        (["agents", "save", "Bad Name", "--from", "team.yaml:reviewer"], "agent name 'Bad Name'"),
        (
            ["agents", "save", "x", "--from", "team.yaml:judge"],
            "team.yaml: no agent with role or name 'judge'",
        ),
        (["agents", "save", "x", "--from", "team.yaml"], "'team.yaml': expected PLAN.yaml:ROLE"),
        (["agents", "save", "x", "--from", "nope.yaml:x"], "nope.yaml: no such file"),
        (["agents", "show", "ghost"], "no saved agent 'ghost'"),
    ]
    for argv, expected in cases:
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "", argv
        assert err.startswith(f"phalanx: error: {expected}") and err.count("\n") == 1, err


def test_a_corrupt_saved_agent_is_reported_not_crashed(tmp_path: Path, library: Library) -> None:
    folder = library.project / "broken"
    folder.mkdir(parents=True)
    (folder / "1.yaml").write_text("name: broken\nversion: 1\nsaved_at: 0\nspec: {style: 3}\n")
    with pytest.raises(UsageError, match=r"1.yaml: spec.style: input should be a valid string"):
        library.get("broken")
    os.chmod(folder / "1.yaml", 0o644)

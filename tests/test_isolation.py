"""Worktree isolation: agents edit the same files in parallel without clobbering; merge
reports conflicts and never leaves the repository mid-merge."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from phalanx.agents.isolation import MergeReport, cleanup, finish, merge, prepare, render_changes
from phalanx.exceptions import UsageError

SHARED = "line one\nline two\nline three\nline four\n"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def _bare_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no git identity and no global config; git never looks above tmp."""
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "EMAIL"):
        monkeypatch.delenv(var, raising=False)


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def in_merge(repo: Path) -> bool:
    proc = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", "MERGE_HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0


def assert_clean(repo: Path) -> None:
    assert not in_merge(repo)
    assert git(repo, "status", "--porcelain") == ""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "shared.txt").write_text(SHARED)
    git(ws, "add", "shared.txt")
    git(ws, "commit", "-q", "-m", "initial")
    return ws


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state" / "runs" / "r1" / "worktrees"


def edit_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def work_in_parallel(jobs: dict[Path, tuple[int, str, str]]) -> None:
    """Each worktree: set one line of shared.txt and add a new file, all at the same time."""
    barrier = threading.Barrier(len(jobs), timeout=30)

    def agent(tree: Path, index: int, line: str, new_file: str) -> None:
        barrier.wait()
        edit_line(tree / "shared.txt", index, line)
        (tree / new_file).write_text(f"notes of {new_file}\n")

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(agent, tree, *job) for tree, job in jobs.items()]
        for future in futures:
            future.result(timeout=60)


# --- the acceptance test ------------------------------------------------------------------


def test_parallel_edits_of_one_file_do_not_clobber_and_merge_reports_the_conflict(
    repo: Path, root: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    trees = prepare(repo, "r1", ["a", "b"], root)
    assert trees == {"a": root.resolve() / "a", "b": root.resolve() / "b"}
    assert git(repo, "branch", "--list", "phalanx/*").split() == [
        "+",
        "phalanx/r1/a",
        "+",
        "phalanx/r1/b",
    ]
    base = json.loads((root / "base.json").read_text())
    assert base["base"] == head and base["repo"] == str(repo.resolve())
    assert base["branches"] == {"a": "phalanx/r1/a", "b": "phalanx/r1/b"}

    work_in_parallel(
        {
            trees["a"]: (1, "line two, as agent a wants it", "a_notes.txt"),
            trees["b"]: (1, "line two, as agent b wants it", "b_notes.txt"),
        }
    )
    # Neither clobbered the other, and the workspace itself is untouched.
    assert (trees["a"] / "shared.txt").read_text().splitlines()[
        1
    ] == "line two, as agent a wants it"
    assert (trees["b"] / "shared.txt").read_text().splitlines()[
        1
    ] == "line two, as agent b wants it"
    assert not (trees["a"] / "b_notes.txt").exists() and not (trees["b"] / "a_notes.txt").exists()
    assert (repo / "shared.txt").read_text() == SHARED
    assert_clean(repo)

    changed = finish(root)
    assert changed == {"a": ["a_notes.txt", "shared.txt"], "b": ["b_notes.txt", "shared.txt"]}
    assert git(repo, "log", "-1", "--format=%an|%s", "phalanx/r1/a").strip() == (
        "phalanx|phalanx: a in r1"
    )
    assert "a: 2 files (a_notes.txt, shared.txt)" in render_changes(changed)
    assert (repo / "shared.txt").read_text() == SHARED  # finish does not merge
    assert git(repo, "rev-parse", "HEAD").strip() == head

    report = merge(root)
    assert report.merged == ("a",)
    assert report.conflicts == {"b": ("shared.txt",)}
    assert report.unchanged == () and report.failed == {}
    assert not report.ok
    text = report.render()
    assert "merged     a" in text and "CONFLICT   b: shared.txt" in text
    assert "git merge phalanx/r1/<agent>" in text
    # The repository is not mid-merge, is clean, and holds a's work but none of b's.
    assert_clean(repo)
    assert (repo / "shared.txt").read_text().splitlines()[1] == "line two, as agent a wants it"
    assert (repo / "a_notes.txt").exists() and not (repo / "b_notes.txt").exists()
    # The branches stay for the user to resolve by hand.
    assert git(repo, "rev-parse", "--verify", "phalanx/r1/b").strip()


def test_agents_editing_different_lines_both_merge_cleanly(repo: Path, root: Path) -> None:
    trees = prepare(repo, "r1", ["a", "b"], root)
    work_in_parallel(
        {
            trees["a"]: (0, "LINE ONE by a", "a_notes.txt"),
            trees["b"]: (3, "LINE FOUR by b", "b_notes.txt"),
        }
    )
    finish(root)
    report = merge(root)
    assert report.ok and report.merged == ("a", "b") and report.conflicts == {}
    assert_clean(repo)
    assert (repo / "shared.txt").read_text() == (
        "LINE ONE by a\nline two\nline three\nLINE FOUR by b\n"
    )
    assert (repo / "a_notes.txt").exists() and (repo / "b_notes.txt").exists()
    subjects = git(repo, "log", "--format=%s", "-2").splitlines()
    assert subjects == ["phalanx: merge b from run r1", "phalanx: merge a from run r1"]
    assert "CONFLICT" not in report.render() and "not merged" not in report.render()
    # Merging again has nothing left to do.
    again = merge(root)
    assert again.ok and again.unchanged == ("a", "b") and again.merged == ()


def test_agent_without_changes_is_unchanged(repo: Path, root: Path) -> None:
    trees = prepare(repo, "r1", ["busy", "idle"], root)
    (trees["busy"] / "shared.txt").write_text("rewritten\n")
    (trees["busy"] / "dir").mkdir()
    (trees["busy"] / "dir" / "new.txt").write_text("new\n")
    assert finish(root) == {"busy": ["dir/new.txt", "shared.txt"], "idle": []}
    # Again: nothing new, so no new commit and the same answer.
    tip = git(repo, "rev-parse", "phalanx/r1/busy")
    assert finish(root) == {"busy": ["dir/new.txt", "shared.txt"], "idle": []}
    assert git(repo, "rev-parse", "phalanx/r1/busy") == tip
    report = merge(root)
    assert report.merged == ("busy",) and report.unchanged == ("idle",) and report.ok
    assert "unchanged  idle" in report.render()


def test_deleted_and_renamed_files_are_listed(repo: Path, root: Path) -> None:
    (repo / "other.txt").write_text("other\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "other")
    tree = prepare(repo, "r1", ["a"], root)["a"]
    (tree / "other.txt").unlink()
    (tree / "shared.txt").rename(tree / "moved.txt")
    assert finish(root) == {"a": ["moved.txt", "other.txt", "shared.txt"]}


# --- resume, cleanup, layouts -------------------------------------------------------------


def test_prepare_is_idempotent_and_keeps_the_recorded_base(repo: Path, root: Path) -> None:
    first = prepare(repo, "r1", ["a", "b"], root)
    base = json.loads((root / "base.json").read_text())["base"]
    (first["a"] / "work.txt").write_text("in progress\n")
    # The user commits to the workspace meanwhile; a resumed run keeps the original base.
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "later")

    again = prepare(repo, "r1", ["a", "b", "c"], root)
    assert again == {**first, "c": root.resolve() / "c"}
    assert (again["a"] / "work.txt").read_text() == "in progress\n"  # reused, not recreated
    assert not (again["c"] / "later.txt").exists()  # the new agent starts from the base too
    recorded = json.loads((root / "base.json").read_text())
    assert recorded["base"] == base and list(recorded["branches"]) == ["a", "b", "c"]
    assert finish(root) == {"a": ["work.txt"], "b": [], "c": []}


def test_prepare_recreates_a_deleted_worktree_on_its_branch(repo: Path, root: Path) -> None:
    tree = prepare(repo, "r1", ["a"], root)["a"]
    (tree / "kept.txt").write_text("kept\n")
    finish(root)
    shutil.rmtree(tree)  # a worktree folder lost, its branch kept
    assert prepare(repo, "r1", ["a"], root)["a"] == tree
    assert (tree / "kept.txt").read_text() == "kept\n"


def test_prepare_refuses_a_root_of_another_run(repo: Path, root: Path) -> None:
    prepare(repo, "r1", ["a"], root)
    with pytest.raises(UsageError, match="belongs to run r1"):
        prepare(repo, "r2", ["a"], root)


def test_cleanup_removes_worktrees_and_keeps_branches(repo: Path, root: Path) -> None:
    trees = prepare(repo, "r1", ["a", "b"], root)
    (trees["a"] / "a.txt").write_text("a\n")
    finish(root)
    cleanup(root)
    assert not trees["a"].exists() and not trees["b"].exists()
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(root) not in listed and str(root.resolve()) not in listed
    assert git(repo, "branch", "--list", "phalanx/*").split() == ["phalanx/r1/a", "phalanx/r1/b"]
    assert finish(root) == {"a": ["a.txt"], "b": []}  # still answers from the branches
    report = merge(root)
    assert report.merged == ("a",) and report.unchanged == ("b",)
    assert (repo / "a.txt").read_text() == "a\n"
    cleanup(root)  # twice is fine


def test_workspace_subfolder_and_root_inside_the_repository(repo: Path) -> None:
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    git(repo, "add", "pkg")
    git(repo, "commit", "-q", "-m", "pkg")
    root = repo / ".phalanx" / "runs" / "r1" / "worktrees"  # untracked, inside the repo
    trees = prepare(repo / "pkg", "r1", ["a"], root)
    assert trees["a"] == root.resolve() / "a" / "pkg"
    (trees["a"] / "mod.py").write_text("x = 2\n")
    assert finish(root) == {"a": ["pkg/mod.py"]}
    report = merge(root)  # the untracked .phalanx/ does not count as uncommitted work
    assert report.ok and report.merged == ("a",)
    assert (repo / "pkg" / "mod.py").read_text() == "x = 2\n"
    assert not in_merge(repo)
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_merge_selected_agents_only(repo: Path, root: Path) -> None:
    trees = prepare(repo, "r1", ["a", "b"], root)
    (trees["a"] / "a.txt").write_text("a\n")
    (trees["b"] / "b.txt").write_text("b\n")
    finish(root)
    report = merge(root, agents=["b"])
    assert report.merged == ("b",) and (repo / "b.txt").exists() and not (repo / "a.txt").exists()
    with pytest.raises(UsageError, match="has no agent 'zed'") as info:
        merge(root, agents=["zed"])
    assert "\n" not in str(info.value)


def test_merge_blocked_by_an_untracked_file_is_reported_and_undone(repo: Path, root: Path) -> None:
    trees = prepare(repo, "r1", ["a", "b"], root)
    (trees["a"] / "new.txt").write_text("from a\n")
    (trees["b"] / "b.txt").write_text("from b\n")
    finish(root)
    (repo / "new.txt").write_text("the user's own, untracked\n")
    report = merge(root)
    assert set(report.failed) == {"a"} and report.conflicts == {}
    assert "untracked working tree files would be overwritten" in report.failed["a"]
    assert "new.txt" in report.failed["a"] and "\n" not in report.failed["a"]
    assert report.merged == ("b",) and not report.ok
    assert (repo / "new.txt").read_text() == "the user's own, untracked\n"
    assert not in_merge(repo)
    assert git(repo, "status", "--porcelain") == "?? new.txt\n"


# --- errors -------------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo[UsageError]) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


@needs_git
def test_not_a_repository(tmp_path: Path, root: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError) as err:
        prepare(plain, "r1", ["a"], root)
    assert one_line(err) == (
        f"isolation: worktree needs the workspace to be a git repository with a commit: {plain}"
    )
    with pytest.raises(UsageError, match="not a folder"):
        prepare(tmp_path / "missing", "r1", ["a"], root)


@needs_git
def test_repository_without_a_commit(tmp_path: Path, root: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    with pytest.raises(UsageError) as err:
        prepare(empty, "r1", ["a"], root)
    assert "git repository with a commit" in one_line(err)
    assert not (root / "base.json").exists()


def test_merge_refuses_a_dirty_repository(repo: Path, root: Path) -> None:
    tree = prepare(repo, "r1", ["a"], root)["a"]
    (tree / "a.txt").write_text("a\n")
    finish(root)
    (repo / "shared.txt").write_text("the user's uncommitted edit\n")
    with pytest.raises(UsageError) as err:
        merge(root)
    assert "uncommitted changes" in one_line(err)
    assert (repo / "shared.txt").read_text() == "the user's uncommitted edit\n"
    assert not (repo / "a.txt").exists()
    git(repo, "add", "shared.txt")  # staged but not committed is dirty too
    with pytest.raises(UsageError, match="uncommitted changes"):
        merge(root)


def test_merge_refuses_a_repository_mid_merge(repo: Path, root: Path) -> None:
    tree = prepare(repo, "r1", ["a"], root)["a"]
    edit_line(tree / "shared.txt", 0, "a's first line")
    finish(root)
    git(repo, "checkout", "-q", "-b", "side")
    edit_line(repo / "shared.txt", 0, "the user's first line")
    git(repo, "commit", "-q", "-am", "side")
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@l", "merge", "phalanx/r1/a"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and in_merge(repo)
    with pytest.raises(UsageError, match="middle of a merge"):
        merge(root)
    git(repo, "merge", "--abort")
    report = merge(root)  # on the side branch, a's change conflicts with the user's
    assert report.conflicts == {"a": ("shared.txt",)}
    assert_clean(repo)


def test_unknown_run_root(tmp_path: Path) -> None:
    for call in (finish, merge, cleanup):
        with pytest.raises(UsageError) as err:
            call(tmp_path / "nowhere")
        assert "no worktree run" in one_line(err)


def test_unreadable_base_file(repo: Path, root: Path) -> None:
    prepare(repo, "r1", ["a"], root)
    (root / "base.json").write_text("{not json")
    with pytest.raises(UsageError) as err:
        finish(root)
    assert "unreadable" in one_line(err)


def test_missing_git(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(UsageError) as err:
        prepare(tmp_path, "r1", ["a"], root)
    assert "needs git, which is not installed" in one_line(err)
    root.mkdir(parents=True)
    (root / "base.json").write_text("{}")
    with pytest.raises(UsageError, match="not installed"):
        merge(root)


def test_git_vanishing_after_the_check_is_still_one_line(
    repo: Path, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("phalanx.agents.isolation.shutil.which", lambda name: "/usr/bin/git")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(UsageError) as err:
        prepare(repo, "r1", ["a"], root)
    assert "needs git" in one_line(err)


def test_git_timeout_is_one_line(repo: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd=argv, timeout=kwargs["timeout"])

    monkeypatch.setattr("phalanx.agents.isolation.subprocess.run", hang)
    with pytest.raises(UsageError) as err:
        prepare(repo, "r1", ["a"], root)
    assert "`git rev-parse --show-toplevel` took more than 120s" in one_line(err)


def test_a_merge_that_times_out_is_undone(
    repo: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = prepare(repo, "r1", ["a", "b"], root)
    edit_line(trees["a"] / "shared.txt", 0, "a")
    edit_line(trees["b"] / "shared.txt", 0, "b")
    finish(root)
    real_run = subprocess.run

    def slow_merge(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = real_run(argv, **kwargs)
        if "--no-ff" in argv and "refs/heads/phalanx/r1/b" in argv:  # b conflicts, then hangs
            raise subprocess.TimeoutExpired(cmd=argv, timeout=kwargs["timeout"])
        return done

    monkeypatch.setattr("phalanx.agents.isolation.subprocess.run", slow_merge)
    with pytest.raises(UsageError, match="took more than") as err:
        merge(root)
    one_line(err)
    assert_clean(repo)
    assert (repo / "shared.txt").read_text().splitlines()[0] == "a"


@pytest.mark.parametrize(
    ("run_id", "agents", "match"),
    [
        ("r1", ["has space"], "agent name 'has space'"),
        ("r1", ["../up"], "agent name"),
        ("r1", ["x.lock"], "agent name"),
        ("bad..id", ["a"], "run id"),
        ("r1", ["a", "a"], "unique"),
    ],
)
def test_names_that_cannot_be_branches(
    repo: Path, root: Path, run_id: str, agents: list[str], match: str
) -> None:
    with pytest.raises(UsageError, match=match) as err:
        prepare(repo, run_id, agents, root)
    one_line(err)
    assert not root.exists()


def test_a_foreign_folder_in_the_way(repo: Path, root: Path) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "stray.txt").write_text("not ours\n")
    with pytest.raises(UsageError, match="is not a worktree") as err:
        prepare(repo, "r1", ["a"], root)
    one_line(err)


def test_merge_report_render_and_ok() -> None:
    report = MergeReport(
        run_id="r9",
        merged=("a",),
        conflicts={"b": ("x.py", "y.py")},
        unchanged=("c",),
        failed={"d": "hook refused"},
    )
    assert not report.ok
    assert report.render().splitlines() == [
        "merge of run r9:",
        "  merged     a",
        "  CONFLICT   b: x.py, y.py",
        "  FAILED     d: hook refused",
        "  unchanged  c",
        "not merged; the branches are kept: resolve by hand with `git merge phalanx/r9/<agent>`",
    ]
    assert MergeReport().ok and MergeReport().render() == "merge:\n  no agents"

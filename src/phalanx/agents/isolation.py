"""Worktree isolation: each agent works in its own git worktree and branch of the workspace.

With ``isolation: worktree`` a run does not let its agents share one directory. Instead:

1. :func:`prepare` records the workspace repository's current ``HEAD`` as the run's *base*
   and gives every agent a branch ``phalanx/<run_id>/<agent>`` from it, checked out in its
   own worktree at ``root / agent`` (``root`` is a folder phalanx owns, such as
   ``.phalanx/runs/RUN/worktrees``). Agents edit their own copies, so two agents changing
   the same file never clobber each other. The base and the branches are kept in
   ``root / "base.json"``; calling :func:`prepare` again (a resumed run) reuses them.
2. :func:`finish` commits what each agent left in its worktree to its branch and returns,
   per agent, the files changed since the base: the per-agent summary a run ends with.
3. :func:`merge` (``phalanx merge RUN_ID``) is the user's decision: it merges each agent
   branch into the workspace repository's current branch with ``git merge --no-ff``. A
   branch that conflicts is aborted at once (the repository is never left mid-merge) and
   its conflicting files are reported in a :class:`MergeReport`; the next agent goes on.
4. :func:`cleanup` removes the worktrees; the branches stay, so merging stays possible.

Every git call is an argv list run with a timeout; phalanx's own commits and merges pass
``-c user.name=phalanx -c user.email=phalanx@localhost`` (and turn commit signing off), so
they work on a machine with no git identity. The user's git configuration is never
written. Mistakes a user can fix (no git, not a repository, no commit yet, uncommitted
changes on merge, an unknown run) raise a one-line :class:`~phalanx.exceptions.UsageError`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._util import one_line
from ..exceptions import UsageError

__all__ = [
    "BASE_FILE",
    "GIT_TIMEOUT",
    "MergeReport",
    "branch_name",
    "cleanup",
    "finish",
    "merge",
    "prepare",
    "render_changes",
]

BASE_FILE = "base.json"
"""The file in a run's worktree root that records its base commit, branches and workspace."""
GIT_TIMEOUT = 120.0
"""Seconds any one git command may take."""

_FORMAT = 1
_IDENTITY = ("-c", "user.name=phalanx", "-c", "user.email=phalanx@localhost")
_NO_SIGN = ("-c", "commit.gpgsign=false")
_NO_HOOKS = ("-c", f"core.hooksPath={os.devnull}")  # agent snapshots run no user hooks
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SCRUB_ENV = (  # inherited from a surrounding git (a hook, a rebase) would redirect us
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MergeReport:
    """What :func:`merge` did, per agent.

    ``merged``: branches merged cleanly, in order. ``conflicts``: agent -> conflicting
    files (that merge was aborted). ``unchanged``: nothing to merge (the agent changed
    nothing, or its branch is already merged). ``failed``: agent -> one-line reason git
    refused for another cause (an untracked file in the way, a hook said no); that merge
    was undone too.
    """

    run_id: str = ""
    merged: tuple[str, ...] = ()
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unchanged: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every branch with changes merged cleanly."""
        return not self.conflicts and not self.failed

    def render(self) -> str:
        """Human text, one line per agent, ending with what to do about conflicts."""
        lines = [f"merge of run {self.run_id}:" if self.run_id else "merge:"]
        lines += [f"  merged     {agent}" for agent in self.merged]
        for agent, files in self.conflicts.items():
            lines.append(f"  CONFLICT   {agent}: {', '.join(files)}")
        for agent, reason in self.failed.items():
            lines.append(f"  FAILED     {agent}: {reason}")
        lines += [f"  unchanged  {agent}" for agent in self.unchanged]
        if len(lines) == 1:
            lines.append("  no agents")
        if not self.ok:
            prefix = f"phalanx/{self.run_id}/" if self.run_id else "phalanx/<run>/"
            lines.append(
                "not merged; the branches are kept: resolve by hand with "
                f"`git merge {prefix}<agent>`"
            )
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True)
class _Run:
    """The contents of ``base.json``."""

    run_id: str
    repo: Path  # top level of the workspace's repository
    workspace: Path  # the workspace as given (may be a folder inside ``repo``)
    base: str  # the commit every agent branch starts from
    agents: tuple[str, ...]

    @property
    def subdir(self) -> Path:
        return self.workspace.relative_to(self.repo)

    def branch(self, agent: str) -> str:
        return branch_name(self.run_id, agent)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "run_id": self.run_id,
            "repo": str(self.repo),
            "workspace": str(self.workspace),
            "base": self.base,
            "branches": {agent: self.branch(agent) for agent in self.agents},
        }


def branch_name(run_id: str, agent: str) -> str:
    """The branch an agent of a run works on: ``phalanx/<run_id>/<agent>``."""
    return f"phalanx/{run_id}/{agent}"


# --- git ----------------------------------------------------------------------------------


def _git(
    cwd: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd``; with ``check``, a failure is a one-line UsageError."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_MERGE_AUTOEDIT"] = "no"
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        if not cwd.is_dir():
            raise UsageError(f"isolation: folder not found: {cwd}") from None
        raise UsageError(_no_git()) from None
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"isolation: `git {_verb(args)}` took more than {timeout:g}s in {cwd}"
        ) from None
    if check and proc.returncode != 0:
        raise UsageError(f"isolation: `git {_verb(args)}` failed in {cwd}: {_git_complaint(proc)}")
    return proc


def _verb(args: Sequence[str]) -> str:
    """The git subcommand of an argv tail, skipping ``-c key=value`` pairs."""
    rest = list(args)
    while len(rest) >= 2 and rest[0] == "-c":
        rest = rest[2:]
    return " ".join(rest[:2])


def _git_complaint(proc: subprocess.CompletedProcess[str], limit: int = 300) -> str:
    """git's complaint as one line: its non-empty output lines joined, cut at ``limit``."""
    text = one_line(proc.stderr + "\n" + proc.stdout)
    return one_line(text, limit, mark="...") if text else f"exit status {proc.returncode}"


def _no_git() -> str:
    return "isolation: worktree needs git, which is not installed (no `git` on PATH)"


def _require_git() -> None:
    if shutil.which("git") is None:
        raise UsageError(_no_git())


def _names(out: str) -> list[str]:
    """Paths from a ``-z`` listing, sorted."""
    return sorted({name for name in out.split("\0") if name})


def _verify(cwd: Path, rev: str) -> str | None:
    proc = _git(cwd, "rev-parse", "-q", "--verify", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _has_branch(repo: Path, branch: str) -> bool:
    proc = _git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False)
    return proc.returncode == 0


def _worktrees(repo: Path) -> dict[Path, str]:
    """Registered worktrees: resolved path -> checked-out ref (``""`` when detached)."""
    out = _git(repo, "worktree", "list", "--porcelain").stdout
    found: dict[Path, str] = {}
    path: Path | None = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = Path(line[len("worktree ") :]).resolve()
            found[path] = ""
        elif line.startswith("branch ") and path is not None:
            found[path] = line[len("branch ") :].removeprefix("refs/heads/")
    return found


# --- prepare ------------------------------------------------------------------------------


def prepare(workspace: Path, run_id: str, agents: Sequence[str], root: Path) -> dict[str, Path]:
    """Give each agent its own branch and worktree of ``workspace``'s git repository.

    Returns agent -> the folder the agent should work in: its worktree, or the same
    sub-folder inside it when ``workspace`` is a folder inside the repository. Branches
    start from the run's base commit (``HEAD`` the first time; on a resumed run, the base
    recorded in ``root / "base.json"``). Existing branches and worktrees are reused.
    """
    _require_git()
    _check_name("run id", run_id)
    for agent in agents:
        _check_name("agent name", agent)
    if len(set(agents)) != len(agents):
        raise UsageError(f"isolation: agent names must be unique: {', '.join(agents)}")
    ws = Path(workspace).resolve()
    repo = _repo_of(ws)
    root = Path(root).resolve()
    previous = _load(root) if (root / BASE_FILE).is_file() else None
    if previous is not None and (previous.run_id, previous.workspace) != (run_id, ws):
        raise UsageError(
            f"isolation: {root} belongs to run {previous.run_id} on {previous.workspace}, "
            f"not run {run_id} on {ws}"
        )
    base = previous.base if previous else _head(repo, ws)
    known = previous.agents if previous else ()
    run = _Run(
        run_id=run_id,
        repo=repo,
        workspace=ws,
        base=base,
        agents=(*known, *(a for a in agents if a not in known)),
    )
    root.mkdir(parents=True, exist_ok=True)
    _save(root, run)  # first, so a crash half-way through can still be finished or merged
    registered = _worktrees(repo)
    pruned = False
    paths: dict[str, Path] = {}
    for agent in agents:
        tree = root / agent
        if (tree not in registered or not (tree / ".git").exists()) and not pruned:
            _git(repo, "worktree", "prune")  # forget worktrees whose folders were deleted
            registered, pruned = _worktrees(repo), True
        _ensure_worktree(run, agent, tree, registered.get(tree))
        paths[agent] = tree / run.subdir
    return paths


def _check_name(what: str, name: str) -> None:
    ok = _NAME.fullmatch(name) and ".." not in name and not name.endswith((".lock", "."))
    if not ok:
        raise UsageError(
            f"isolation: {what} {name!r} cannot name a git branch; use letters, digits, "
            "'.', '_' and '-' (at most 100, starting with a letter or digit)"
        )


def _repo_of(ws: Path) -> Path:
    usage = f"isolation: worktree needs the workspace to be a git repository with a commit: {ws}"
    if not ws.is_dir():
        raise UsageError(f"isolation: the workspace is not a folder: {ws}")
    proc = _git(ws, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise UsageError(usage)
    return Path(proc.stdout.strip()).resolve()


def _head(repo: Path, ws: Path) -> str:
    sha = _verify(repo, "HEAD")
    if sha is None:
        raise UsageError(
            "isolation: worktree needs the workspace to be a git repository with a commit "
            f"(this one has none yet): {ws}"
        )
    return sha


def _ensure_worktree(run: _Run, agent: str, tree: Path, checked_out: str | None) -> None:
    branch = run.branch(agent)
    if checked_out is not None:
        if checked_out != branch:
            raise UsageError(
                f"isolation: {tree} is a worktree on {checked_out or 'a detached HEAD'}, "
                f"not on {branch}; remove it or use another run root"
            )
        return
    if tree.exists() and any(tree.iterdir()):
        raise UsageError(f"isolation: {tree} exists and is not a worktree of {run.repo}")
    if _has_branch(run.repo, branch):
        _git(run.repo, "worktree", "add", "--quiet", str(tree), branch)
    else:
        _git(run.repo, "worktree", "add", "--quiet", "-b", branch, str(tree), run.base)


# --- base.json ----------------------------------------------------------------------------


def _save(root: Path, run: _Run) -> None:
    tmp = root / f".{BASE_FILE}.tmp"
    tmp.write_text(json.dumps(run.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / BASE_FILE)


def _load(root: Path) -> _Run:
    path = Path(root) / BASE_FILE
    if not path.is_file():
        raise UsageError(f"isolation: no worktree run at {root} (no {BASE_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        run = _Run(
            run_id=str(data["run_id"]),
            repo=Path(data["repo"]),
            workspace=Path(data["workspace"]),
            base=str(data["base"]),
            agents=tuple(str(a) for a in data["branches"]),
        )
        run.subdir  # noqa: B018  (the workspace must lie inside the repository)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"isolation: {path} is unreadable: {exc.__class__.__name__}") from None
    return run


def _open(root: Path) -> _Run:
    """The run recorded in ``root``, checked to still point at a git repository."""
    _require_git()
    run = _load(Path(root).resolve())
    if not run.repo.is_dir() or _repo_of(run.repo) != run.repo:
        raise UsageError(f"isolation: the run's repository is gone: {run.repo}")
    return run


# --- finish -------------------------------------------------------------------------------


def finish(root: Path) -> dict[str, list[str]]:
    """Commit each agent's work to its branch; return agent -> files changed since the base.

    Paths are relative to the repository's top level, sorted (a rename lists both names);
    an agent that changed nothing maps to ``[]``. Files the repository ignores are not
    committed. Safe to call again: nothing new means no new commit.
    """
    run = _open(root)
    root = Path(root).resolve()
    changed: dict[str, list[str]] = {}
    for agent in run.agents:
        tree = root / agent
        if (tree / ".git").exists():
            _commit_all(tree, f"phalanx: {agent} in {run.run_id}")
        branch = run.branch(agent)
        if not _has_branch(run.repo, branch):
            changed[agent] = []
            continue
        diff = _git(
            run.repo,
            "diff",
            "--name-only",
            "--no-renames",
            "-z",
            run.base,
            f"refs/heads/{branch}",
            "--",
        )
        changed[agent] = _names(diff.stdout)
    return changed


def _commit_all(tree: Path, message: str) -> None:
    _git(tree, "add", "--all")
    if _git(tree, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return  # nothing staged
    _git(tree, *_IDENTITY, *_NO_SIGN, *_NO_HOOKS, "commit", "--quiet", "--no-verify", "-m", message)


# --- merge --------------------------------------------------------------------------------


def merge(root: Path, *, agents: Sequence[str] | None = None) -> MergeReport:
    """Merge each agent's branch into the workspace repository's current branch.

    The repository must have no uncommitted changes to tracked files (untracked files are
    left alone; git refuses a merge that would overwrite one, reported in ``failed``). A
    conflicting merge is aborted and reported; the next agent is merged all the same. The
    repository's own hooks run as for any merge; a merge a hook refuses is undone.
    """
    run = _open(root)
    chosen = list(run.agents if agents is None else agents)
    unknown = [a for a in chosen if a not in run.agents]
    if unknown:
        raise UsageError(
            f"isolation: run {run.run_id} has no agent {', '.join(map(repr, unknown))} "
            f"(agents: {', '.join(run.agents)})"
        )
    _require_clean(run.repo)
    outcomes = {agent: _merge_one(run, agent) for agent in chosen}
    return MergeReport(
        run_id=run.run_id,
        merged=tuple(a for a, o in outcomes.items() if o.kind == "merged"),
        conflicts={a: o.files for a, o in outcomes.items() if o.kind == "conflict"},
        unchanged=tuple(a for a, o in outcomes.items() if o.kind == "unchanged"),
        failed={a: o.reason for a, o in outcomes.items() if o.kind == "failed"},
    )


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    kind: Literal["merged", "unchanged", "conflict", "failed"]
    files: tuple[str, ...] = ()
    reason: str = ""


def _require_clean(repo: Path) -> None:
    if _in_merge(repo):
        raise UsageError(f"isolation: {repo} is in the middle of a merge; finish or abort it first")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if status.stdout.strip():
        raise UsageError(
            f"isolation: cannot merge: {repo} has uncommitted changes; commit or stash them first"
        )


def _in_merge(repo: Path) -> bool:
    return _verify(repo, "MERGE_HEAD") is not None


def _merge_one(run: _Run, agent: str) -> _Outcome:
    branch = run.branch(agent)
    if not _has_branch(run.repo, branch):
        return _Outcome(kind="failed", reason=f"its branch {branch} no longer exists")
    ahead = _git(run.repo, "rev-list", "--count", f"HEAD..refs/heads/{branch}", "--")
    if ahead.stdout.strip() == "0":
        return _Outcome(kind="unchanged")
    message = f"phalanx: merge {agent} from run {run.run_id}"
    try:
        proc = _git(
            run.repo,
            *_IDENTITY,
            *_NO_SIGN,
            *("merge", "--no-ff", "--no-edit", "-m", message, f"refs/heads/{branch}"),
            check=False,
        )
    except UsageError:  # timed out: never leave the repository mid-merge
        _undo_merge(run.repo)
        raise
    if proc.returncode == 0:
        return _Outcome(kind="merged")
    diff = _git(run.repo, "diff", "--name-only", "-z", "--diff-filter=U")
    _undo_merge(run.repo)
    if files := tuple(_names(diff.stdout)):
        return _Outcome(kind="conflict", files=files)
    return _Outcome(kind="failed", reason=_git_complaint(proc))


def _undo_merge(repo: Path) -> None:
    """Leave the repository as it was before the merge began."""
    if _in_merge(repo) and _git(repo, "merge", "--abort", check=False).returncode != 0:
        _git(repo, "reset", "--merge")
    if _in_merge(repo):
        raise UsageError(f"isolation: could not abort a merge in {repo}; run `git merge --abort`")


# --- cleanup ------------------------------------------------------------------------------


def cleanup(root: Path) -> None:
    """Remove the run's worktrees (uncommitted work in them is lost: call :func:`finish`
    first) and prune git's records of them. The branches and ``base.json`` stay, so
    :func:`merge` still works afterwards."""
    run = _open(root)
    root = Path(root).resolve()
    registered = _worktrees(run.repo)
    for agent in run.agents:
        tree = root / agent
        if tree in registered:
            _git(run.repo, "worktree", "remove", "--force", str(tree))
        elif tree.is_dir() and not any(tree.iterdir()):
            tree.rmdir()
    _git(run.repo, "worktree", "prune")


def render_changes(changed: Mapping[str, Sequence[str]]) -> str:
    """The per-agent summary a run ends with: one line per agent, the files it changed."""
    lines = []
    for agent, files in changed.items():
        what = ", ".join(files) if files else "no changes"
        lines.append(f"{agent}: {len(files)} file{'' if len(files) == 1 else 's'} ({what})")
    return "\n".join(lines)

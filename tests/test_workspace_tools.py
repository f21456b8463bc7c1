"""The workspace sandbox and the tools: no path escapes, no shell, no lingering children.

Layout of every test tree (``base`` is a fresh temporary directory)::

    base/secret.txt              sentinels outside the workspace (content SECRET)
    base/outside/secret.txt, base/outside/sub/deep.txt
    base/ws-evil/secret.txt      a sibling whose name starts with the workspace's name
    base/ws/                     the workspace: ok.txt, sub/inner.txt and symlinks that
                                 point outside, inside, in chains, dangling, made late

More than 200 escape paths (``..`` in many forms, absolute, NUL, backslashes, look-alike
unicode dots, very long, symlinks of every kind) are tried with every file operation, both
through the :class:`Workspace` API and through the built-in tools. Each must be refused with
``path_outside_workspace``; literal names that only look like escapes (``%2e%2e%2f``) must
stay inside. After every batch, a snapshot of everything outside the workspace (content
hash, size, mtime of every file and directory, link targets) must be unchanged.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from conftest import wait_dead
from phalanx.agents.tools import (
    BUILTIN_TOOLS,
    SHELL_METACHARACTERS,
    ToolContext,
    ToolResult,
    call_tool,
    is_secret_name,
    scrub_env,
    tool,
    validate_arguments,
)
from phalanx.agents.workspace import ToolError, Workspace
from phalanx.exceptions import UsageError
from phalanx.providers.base import ToolDef

SECRET = "TOP-SECRET-CONTENT"
PWNED = "PWNED"
OUTSIDE = "path_outside_workspace"
PY = sys.executable


# =========================================================================== the tree


@dataclass
class Tree:
    base: Path
    ws: Path
    outside: Path
    evil: Path
    workspace: Workspace


def make_tree(base: Path) -> Tree:
    outside, evil, ws = base / "outside", base / "ws-evil", base / "ws"
    for d in (outside / "sub", evil, ws / "sub"):
        d.mkdir(parents=True)
    for f in (base / "secret.txt", outside / "secret.txt", outside / "sub" / "deep.txt"):
        f.write_text(SECRET)
    (evil / "secret.txt").write_text(SECRET)
    (ws / "ok.txt").write_text("inside ok\n")
    (ws / "sub" / "inner.txt").write_text("inner\n")
    links = {
        "link_file": outside / "secret.txt",
        "link_dir": outside,
        "link_rel": "../ws-evil/secret.txt",
        "link_rel_dir": "../ws-evil",
        "chain1": "chain2",
        "chain2": outside / "secret.txt",
        "chain_dir1": "chain_dir2",
        "chain_dir2": outside,
        "link_in": "ok.txt",
        "link_in_dir": "sub",
        "link_root": "/",
        "link_parent": "..",
        "link_dot": ".",
        "link_dangling": outside / "new.txt",
        "link_proc": "/proc/self/root",
        "sub/link_up": "../../outside",
        "sub/link_up_file": "../../outside/secret.txt",
    }
    for name, target in links.items():
        os.symlink(target, ws / name)
    workspace = Workspace(ws)
    # made after the Workspace exists: a symlink created mid-run
    os.symlink(outside / "secret.txt", ws / "late_file")
    os.symlink(outside, ws / "late_dir")
    return Tree(base=base, ws=ws, outside=outside, evil=evil, workspace=workspace)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "base")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(t: Tree, *, links: bool = True) -> dict[str, Any]:
    """Everything outside the workspace (content, size, mtime, link targets) plus, with
    ``links``, the workspace's symlinks (a refused write must not replace one)."""
    snap: dict[str, Any] = {"/etc/passwd": _digest(Path("/etc/passwd"))}
    for dirpath, dirnames, filenames in os.walk(t.base):
        here = Path(dirpath)
        inside = here == t.ws or t.ws in here.parents
        if not inside:
            snap[str(here)] = ("dir", os.lstat(here).st_mtime_ns)
        for name in dirnames + filenames:
            p = here / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode) and (links or not inside):
                snap[str(p)] = ("link", os.readlink(p))
            elif not inside and stat.S_ISREG(st.st_mode):
                snap[str(p)] = ("file", _digest(p), st.st_size, st.st_mtime_ns)
    return snap


# =========================================================================== escape cases

TARGETS = (
    "outside/secret.txt",
    "ws-evil/secret.txt",
    "ws-evil",
    "ws-evil/new.txt",
    "outside",
    "outside/new.txt",
    "outside/sub/deep.txt",
    "secret.txt",
    "new.txt",
    "ws/../outside/secret.txt",
)
CLIMBS = (
    "..",
    "./..",
    "../.",
    ".//..",
    "sub/../..",
    "sub/./../..",
    "a/b/../../..",
    "sub/inner.txt/../../..",
    "nonexistent/../..",
    "ok.txt/../..",
    "../..",
    "../ws/..",
)


def _dotdot_cases() -> list[str]:
    cases = [f"{climb}/{target}" for climb in CLIMBS for target in TARGETS]
    cases += [
        "..",
        "../",
        "..//",
        "../..",
        "./../",
        "sub/../../",
        "a/../../x",
        "./../x",
        "../ws-evil",
        "../ws-evil/",
        "../outside/",
        "../ws-evil/secret.txt/",
        "../" * 20 + "etc/passwd",
        "x/y/z/../../../../outside/secret.txt",
        "sub/../sub/../../outside/secret.txt",
        "~/../../etc/passwd",
        "sub/inner.txt/../../../ws-evil",
    ]
    return cases


def _absolute_cases(t: Tree) -> list[str]:
    return [
        "/",
        "//",
        "//etc",
        "///etc/passwd",
        "/etc/passwd",
        "/etc/",
        "/./etc/passwd",
        "/../etc/passwd",
        "/dev/null",
        "/proc/self/environ",
        "/tmp",
        "/root",
        str(t.outside / "secret.txt"),
        str(t.evil / "secret.txt"),
        str(t.evil) + "/",
        str(t.ws) + "-evil/secret.txt",  # sibling-prefix trick
        str(t.ws) + "/../outside/secret.txt",
        str(t.ws / "ok.txt"),  # absolute, even inside: refused
        str(t.ws),
        str(t.base / "secret.txt"),
    ]


NUL_CASES = [
    "ok.txt\x00",
    "\x00",
    "\x00../outside/secret.txt",
    "sub/\x00/inner.txt",
    "ok.txt\x00/../../outside/secret.txt",
    "../outside\x00",
    "link_file\x00",
    "outside/secret.txt\x00.txt",
]
BACKSLASH_CASES = [
    "..\\outside\\secret.txt",
    "..\\..\\etc\\passwd",
    "sub\\..\\..\\outside",
    "\\etc\\passwd",
    "C:\\Windows\\win.ini",
    "..\\",
    ".\\..\\ws-evil\\secret.txt",
    "sub/..\\..\\secret.txt",
]
UNICODE_CASES = [
    "\uff0e\uff0e/outside/secret.txt",  # fullwidth full stops
    "\u2025/outside/secret.txt",  # two dot leader
    "\u2024\u2024/ws-evil/secret.txt",  # one dot leader x2
    "\ufe52\ufe52/outside/secret.txt",  # small full stops
    "\ufe30/secret.txt",  # vertical two dot leader
    "\uff0e./outside",
    ".\uff0e/outside",
    "sub/\uff0e\uff0e/\uff0e\uff0e/outside/secret.txt",
    "..\uff0foutside\uff0fsecret.txt",  # fullwidth solidus
    "..\uff3coutside",  # fullwidth reverse solidus
    "\ud800/x",  # a lone surrogate: not a file name
]
LONG_CASES = [
    "a" * 256,
    "sub/" + "c" * 256,
    "\u00e9" * 128,  # 256 bytes in UTF-8
    "a/" * 2049,
    "x" * 5000,
    ("b" * 200 + "/") * 25,
    "../" + "a" * 300,
    "../" * 1400,
    "sub/" * 1030 + "../" * 1040 + "outside/secret.txt",
]
SYMLINK_CASES = [
    "link_file",
    "./link_file",
    "link_dir",
    "link_dir/",
    "link_dir/.",
    "link_dir/secret.txt",
    "link_dir/new.txt",
    "link_dir/sub/deep.txt",
    "link_rel",
    "link_rel_dir/secret.txt",
    "link_rel_dir/new.txt",
    "chain1",
    "chain2",
    "chain_dir1/secret.txt",
    "chain_dir1/new.txt",
    "link_in",  # points inside: still refused
    "link_in_dir/inner.txt",
    "link_root/etc/passwd",
    "link_parent/outside/secret.txt",
    "link_parent/ws-evil/new.txt",
    "link_dot/ok.txt",
    "link_dangling",
    "link_proc/etc/passwd",
    "sub/link_up/secret.txt",
    "sub/link_up/new.txt",
    "sub/link_up_file",
    "sub/../link_dir/secret.txt",
    "late_file",  # created after the Workspace
    "late_dir/secret.txt",
    "late_dir/sub/new.txt",
]
# literal names that only look like escapes: never decoded, they stay inside
LITERAL_CASES = [
    "%2e%2e%2foutside%2fsecret.txt",
    "%2e%2e/outside/secret.txt",
    "..%2f..%2fetc%2fpasswd",
    "%252e%252e%252fsecret.txt",
    "..%c0%af..%c0%afetc",
    "%00secret.txt",
    "...",
    "..../outside",
    "....//secret.txt",
    "..a/secret.txt",
    "a../secret.txt",
    " ../secret.txt",
    "~/secret.txt",
    "$HOME/secret.txt",
    "file:/etc/passwd",
    "outside/secret.txt",
    "ws-evil/secret.txt",
    "\u00b7\u00b7/secret.txt",
    "\u3002\u3002/secret.txt",
    "\ufe19/secret.txt",  # folds to '...': a plain name
]


def escape_cases(t: Tree) -> dict[str, list[str]]:
    return {
        "dotdot": _dotdot_cases(),
        "absolute": _absolute_cases(t),
        "nul": NUL_CASES,
        "backslash": BACKSLASH_CASES,
        "unicode": UNICODE_CASES,
        "long": LONG_CASES,
        "symlink": SYMLINK_CASES,
    }


FAMILIES = ("dotdot", "absolute", "nul", "backslash", "unicode", "long", "symlink")


# =========================================================================== operations

Op = Callable[[Tree, str], "str | None"]  # -> error code, None on success


def _api(action: Callable[[Workspace, str], object]) -> Op:
    def op(t: Tree, path: str) -> str | None:
        try:
            result = action(t.workspace, path)
        except ToolError as exc:
            return exc.code
        assert SECRET not in repr(result)
        return None

    return op


def _via_tool(name: str, args: Callable[[str], dict[str, Any]]) -> Op:
    def op(t: Tree, path: str) -> str | None:
        ctx = ToolContext(workspace=t.workspace)
        result = asyncio.run(call_tool(BUILTIN_TOOLS[name], args(path), ctx))
        assert SECRET not in result.content
        return result.error_code

    return op


OPS: dict[str, Op] = {
    "read": _api(lambda w, p: w.read_text(p)),
    "write": _api(lambda w, p: w.write_text(p, PWNED)),
    "edit": _api(lambda w, p: w.edit(p, SECRET, PWNED)),
    "list": _api(lambda w, p: w.list(p, recursive=True)),
    "search": _api(lambda w, p: w.search("SECRET", p)),
    "display": _api(lambda w, p: w.display(p)),
    "tool_read": _via_tool("read_file", lambda p: {"path": p}),
    "tool_write": _via_tool("write_file", lambda p: {"path": p, "content": PWNED}),
    "tool_edit": _via_tool("edit_file", lambda p: {"path": p, "old": SECRET, "new": PWNED}),
    "tool_list": _via_tool("list_files", lambda p: {"path": p, "recursive": True}),
    "tool_search": _via_tool("search", lambda p: {"pattern": "SECRET", "path": p}),
}
# display() is lexical: symlinks are the walk's business, so it passes them
LEXICAL_ONLY = {"display"}


def test_there_are_over_200_escape_cases(tmp_path: Path) -> None:
    cases = escape_cases(make_tree(tmp_path / "base"))
    distinct = {p for family in cases.values() for p in family}
    assert len(distinct) >= 200, len(distinct)


ESCAPE_PARAMS = [
    (op_name, family)
    for op_name in sorted(OPS)
    for family in FAMILIES
    if not (family == "symlink" and op_name in LEXICAL_ONLY)
]


@pytest.mark.parametrize(("op_name", "family"), ESCAPE_PARAMS)
def test_escapes_are_refused_and_outside_is_unchanged(
    tree: Tree, op_name: str, family: str
) -> None:
    before = snapshot(tree)
    wrong = {}
    for path in escape_cases(tree)[family]:
        code = OPS[op_name](tree, path)
        if code != OUTSIDE:
            wrong[ascii(path)[:80]] = code
    assert wrong == {}
    assert snapshot(tree) == before


@pytest.mark.parametrize("op_name", sorted(set(OPS) - LEXICAL_ONLY))
def test_literal_look_alikes_stay_inside(tree: Tree, op_name: str) -> None:
    before = snapshot(tree)
    for path in LITERAL_CASES:
        code = OPS[op_name](tree, path)
        if "write" in op_name:
            assert code is None, (path, code)
            created = Path(os.path.realpath(tree.ws / path))
            assert tree.ws in created.parents and created.read_text() == PWNED
        else:
            assert code == "not_found", (path, code)
    assert snapshot(tree) == before


# =========================================================================== races


def test_directory_swapped_for_a_symlink_between_operations(tree: Tree) -> None:
    w = tree.workspace
    w.write_text("swap/f.txt", "inside\n")
    assert w.read_text("swap/f.txt") == "inside\n"
    os.rename(tree.ws / "swap", tree.ws / "swap.old")
    os.symlink(tree.outside, tree.ws / "swap")
    before = snapshot(tree)
    for path in ("swap/secret.txt", "swap/f.txt", "swap/new.txt", "swap"):
        for op_name, op in OPS.items():
            if op_name not in LEXICAL_ONLY:
                assert op(tree, path) == OUTSIDE, (op_name, path)
    assert snapshot(tree) == before


def test_file_swapped_for_a_symlink_between_operations(tree: Tree) -> None:
    w = tree.workspace
    w.write_text("f.txt", SECRET.lower())
    os.unlink(tree.ws / "f.txt")
    os.symlink(tree.outside / "secret.txt", tree.ws / "f.txt")
    before = snapshot(tree)
    for op_name, op in OPS.items():
        if op_name not in LEXICAL_ONLY:
            assert op(tree, "f.txt") == OUTSIDE, op_name
    assert snapshot(tree) == before


def test_writing_over_a_hard_link_never_changes_the_file_outside(tree: Tree) -> None:
    os.link(tree.outside / "secret.txt", tree.ws / "hard.txt")  # e.g. made by a command
    before = snapshot(tree)
    tree.workspace.write_text("hard.txt", PWNED)  # replaces the link, not the file
    assert (tree.ws / "hard.txt").read_text() == PWNED
    (tree.ws / "hard2.txt").unlink(missing_ok=True)
    os.link(tree.outside / "secret.txt", tree.ws / "hard2.txt")
    tree.workspace.edit("hard2.txt", SECRET, PWNED)
    assert (tree.ws / "hard2.txt").read_text() == PWNED
    assert snapshot(tree) == before  # content, size and mtime outside: unchanged


def test_workspace_root_replaced(tree: Tree) -> None:
    os.rename(tree.ws, tree.base / "ws-moved")
    os.symlink(tree.outside, tree.ws)
    with pytest.raises(ToolError) as info:
        tree.workspace.read_text("secret.txt")
    assert info.value.code == OUTSIDE
    os.unlink(tree.ws)
    tree.ws.mkdir()
    (tree.ws / "ok.txt").write_text("another directory")
    with pytest.raises(ToolError) as info:
        tree.workspace.read_text("ok.txt")
    assert info.value.code == OUTSIDE


SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[3::2], sys.argv[4::2])]
    open(sys.argv[1], "w").close()
    end = time.monotonic() + float(sys.argv[2])
    swaps = 0
    while time.monotonic() < end:
        for a, b in pairs:
            if libc.renameat2(-100, a, -100, b, 2) != 0:  # RENAME_EXCHANGE
                sys.exit(f"renameat2 failed: errno {ctypes.get_errno()}")
            swaps += 1
    print(swaps)
    """
)


def _has_rename_exchange(where: Path) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    (where / "x1").mkdir()
    (where / "x2").mkdir()
    ok = libc.renameat2(-100, bytes(where / "x1"), -100, bytes(where / "x2"), 2) == 0
    os.rmdir(where / "x1")
    os.rmdir(where / "x2")
    return ok


def test_symlink_swapped_during_operations(tree: Tree) -> None:
    """Another process atomically exchanges a directory with a symlink to the outside (and a
    file with a symlink to a secret) as fast as it can, while every operation runs over and
    over: no operation may ever read, list, find or change anything outside."""
    if not _has_rename_exchange(tree.base):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    w = tree.workspace
    w.write_text("d/f.txt", "inside\n")
    w.write_text("g.txt", "inside\n")
    os.symlink(tree.outside, tree.ws / "d_link")
    os.symlink(tree.outside / "secret.txt", tree.ws / "g_link")
    before = snapshot(tree, links=False)
    ready = tree.base.parent / "ready"
    pairs = [str(tree.ws / n) for n in ("d", "d_link", "g.txt", "g_link")]
    swapper = subprocess.Popen(
        [PY, "-c", SWAPPER, str(ready), "1.5", *pairs], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        outcomes = _hammer(tree, seconds=1.0)
    finally:
        out, _ = swapper.communicate(timeout=30)
    assert swapper.returncode == 0 and int(out) > 100
    assert set(outcomes) <= {None, OUTSIDE}, outcomes
    assert outcomes.get(None, 0) > 0 and outcomes.get(OUTSIDE, 0) > 0, outcomes
    assert snapshot(tree, links=False) == before


def _hammer(t: Tree, *, seconds: float) -> dict[str | None, int]:
    w = t.workspace
    actions: list[Callable[[], object]] = [
        lambda: w.read_text("d/f.txt"),
        lambda: w.read_text("g.txt"),
        lambda: w.write_text("d/f.txt", "inside\n"),
        lambda: w.write_text("d/new.txt", PWNED),
        lambda: w.edit("d/f.txt", "inside", "inside"),
        lambda: w.list("d", recursive=True),
        lambda: w.search("SECRET|inside", "d"),
        lambda: w.search("SECRET|inside", "g.txt"),
    ]
    outcomes: dict[str | None, int] = {}
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        try:
            result = actions[i % len(actions)]()
            code = None
            assert SECRET not in repr(result) and "secret.txt" not in repr(result)
        except ToolError as exc:
            code = exc.code
        outcomes[code] = outcomes.get(code, 0) + 1
        i += 1
    return outcomes


# =========================================================================== normal use


def test_normal_file_operations(tree: Tree) -> None:
    w = tree.workspace
    assert w.write_text("a/b/c.txt", "one\ntwo\nthree\n") == 14
    assert w.read_text("a/b/c.txt") == "one\ntwo\nthree\n"
    assert w.read_text("./a//b/c.txt") == "one\ntwo\nthree\n"
    assert w.read_text("x/../a/b/c.txt") == "one\ntwo\nthree\n"
    w.edit("a/b/c.txt", "two\n", "TWO\n")
    assert (tree.ws / "a/b/c.txt").read_text() == "one\nTWO\nthree\n"
    w.write_text("a/b/c.txt", "replaced")
    assert w.read_text("a/b/c.txt") == "replaced"
    assert w.display("./a//b/") == "a/b" and w.display(".") == "." and w.display("") == "."
    assert w.display("a/../b") == "b"
    assert not [p for p in tree.ws.rglob("*") if ".phalanx-" in p.name]  # no temp files


def test_write_keeps_the_mode_of_the_file_it_replaces(tree: Tree) -> None:
    script = tree.ws / "run.sh"
    script.write_text("old")
    script.chmod(0o750)
    tree.workspace.write_text("run.sh", "new")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750 and script.read_text() == "new"


def test_edit_needs_exactly_one_match(tree: Tree) -> None:
    w = tree.workspace
    w.write_text("e.txt", "x = 1\nx = 1\naaa\n")
    for old, code in (
        ("x = 1", "edit_ambiguous"),
        ("aa", "edit_ambiguous"),
        ("zz", "edit_no_match"),
        ("", "bad_arguments"),
    ):
        with pytest.raises(ToolError) as info:
            w.edit("e.txt", old, "y")
        assert info.value.code == code
    assert (tree.ws / "e.txt").read_text() == "x = 1\nx = 1\naaa\n"


def test_list_and_search(tree: Tree) -> None:
    w = tree.workspace
    w.write_text("pkg/mod.py", "def f():\n    return 42\n")
    w.write_text("pkg/data.bin", "")
    (tree.ws / "pkg/data.bin").write_bytes(b"\x00\x01SECRET 42\x00")
    w.write_text(".git/config", "42\n")
    top = w.list(".")
    assert "pkg/" in top.entries and "ok.txt" in top.entries and "link_dir@" in top.entries
    assert not top.truncated and "pkg/mod.py" not in top.entries
    deep = w.list(".", "*.py", recursive=True)
    assert deep.entries == ("pkg/mod.py",)
    assert ".git/config" not in w.list(".", recursive=True).entries  # not entered
    assert w.list(".git").entries == (".git/config",)  # unless named
    assert w.list(".", max_entries=3).truncated
    hits = w.search(r"return \d+").hits
    assert [(h.path, h.line, h.text) for h in hits] == [("pkg/mod.py", 2, "return 42")]
    assert w.search("42", "pkg/mod.py").hits[0].path == "pkg/mod.py"
    assert w.search("SECRET").hits == ()  # binary skipped, links not followed
    w.write_text("many.txt", "hit\n" * 50)
    assert w.search("hit", max_matches=10).truncated


def test_file_operation_errors(tree: Tree) -> None:
    w = Workspace(tree.ws, max_file_bytes=100)
    os.mkfifo(tree.ws / "fifo")
    (tree.ws / "latin1.txt").write_bytes(b"caf\xe9")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: w.read_text("sub"), "not_a_file"),
        (lambda: w.read_text("fifo"), "not_a_file"),  # and does not block
        (lambda: w.read_text("."), "not_a_file"),
        (lambda: w.read_text("missing.txt"), "not_found"),
        (lambda: w.read_text("ok.txt/x"), "not_a_directory"),
        (lambda: w.read_text("latin1.txt"), "not_text"),
        (lambda: w.write_text(".", "x"), "not_a_file"),
        (lambda: w.write_text("sub", "x"), "not_a_file"),
        (lambda: w.write_text("ok.txt/x", "x"), "not_a_directory"),
        (lambda: w.write_text("big.txt", "x" * 101), "too_large"),
        (lambda: w.write_text("s.txt", "\ud800"), "bad_arguments"),
        (lambda: w.list("ok.txt"), "not_a_directory"),
        (lambda: w.list("missing"), "not_found"),
        (lambda: w.search("(unclosed"), "bad_arguments"),
    ]
    (tree.ws / "big.txt").write_text("x" * 101)
    cases.append((lambda: w.read_text("big.txt"), "too_large"))
    for action, code in cases:
        with pytest.raises(ToolError) as info:
            action()
        assert info.value.code == code, (info.value, code)
        assert str(info.value).startswith(f"{code}: ") and "\n" not in str(info.value)


def test_workspace_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Workspace(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        Workspace(tmp_path / "file")
    made = Workspace(tmp_path / "new" / "ws", create=True)
    assert made.root == (tmp_path / "new" / "ws").resolve()
    os.symlink(tmp_path / "new", tmp_path / "alias")
    assert Workspace(tmp_path / "alias" / "ws").root == made.root  # resolved once


def test_builtin_file_tools(tree: Tree) -> None:
    ctx = ToolContext(workspace=tree.workspace)

    def call(name: str, **args: Any) -> ToolResult:
        return asyncio.run(call_tool(BUILTIN_TOOLS[name], args, ctx))

    assert call("write_file", path="n/m.txt", content="alpha\nbeta\n").content == (
        "wrote 11 bytes to n/m.txt"
    )
    assert call("read_file", path="n/m.txt").content == "alpha\nbeta\n"
    assert call("edit_file", path="n/m.txt", old="beta", new="gamma").ok
    assert call("search", pattern="gam+a").content == "n/m.txt:2: gamma"
    assert call("list_files", path="n").content == "n/m.txt"
    missing = call("edit_file", path="n/m.txt", old="beta", new="x")
    assert (missing.ok, missing.error_code) == (False, "edit_no_match")
    assert missing.content.startswith("error: edit_no_match: ")
    assert call("search", pattern="nothing-here").content == "no matches"
    assert set(BUILTIN_TOOLS) == {
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
    }
    assert all(s.needs_context and s.description for s in BUILTIN_TOOLS.values())


# =========================================================================== commands

CANARY = "canary-secret-value-8c1f2e"


def _ctx(t: Tree, *allowed: str, timeout: float = 20, **kw: Any) -> ToolContext:
    return ToolContext(
        workspace=t.workspace,
        allowed_commands=frozenset(allowed),
        command_timeout=timeout,
        **kw,
    )


def run(ctx: ToolContext, argv: object, **extra: Any) -> ToolResult:
    args = {"argv": argv, **extra}
    return asyncio.run(call_tool(BUILTIN_TOOLS["run_command"], args, ctx))


def test_allowed_commands_run_with_output_and_exit_code(tree: Tree) -> None:
    ctx = _ctx(tree, "echo", PY)
    hello = run(ctx, ["echo", "hello", "world"])
    assert hello.ok and hello.content == "hello world\n[exit code 0]"
    tree.workspace.write_text("exit3.py", "import sys\nprint('bye')\nsys.exit(3)\n")
    three = run(ctx, [PY, "exit3.py"])  # runs in the workspace directory
    assert three.ok and three.content == "bye\n[exit code 3]"
    tree.workspace.write_text("err.py", "import sys\nsys.stderr.write('to stderr')\n")
    assert run(ctx, [PY, "err.py"]).content == "to stderr\n[exit code 0]"


def test_commands_not_allowed_are_refused(tree: Tree) -> None:
    ctx = _ctx(tree, "echo", "env")
    (tree.ws / "x").write_text("keep me")
    refused = [
        ["rm", "-rf", "x"],
        ["/bin/sh", "-c", "rm x"],
        ["sh", "-c", "rm x"],
        ["bash", "-c", "rm x"],
        ["/usr/bin/echo", "hi"],  # echo is allowed, this path is not
        ["./echo"],
        ["echo "],
        ["ECHO"],
        [""],
        ["python3", "-c", "print(1)"],
        ["../../bin/echo"],
    ]
    for argv in refused:
        result = run(ctx, argv)
        assert result.error_code == "command_not_allowed", (argv, result)
    for argv in ([], "echo hi", ["echo", 3], [["echo"]], None):
        assert run(ctx, argv).error_code == "bad_arguments", argv
    assert (tree.ws / "x").read_text() == "keep me"


def test_shell_metacharacters_are_refused(tree: Tree) -> None:
    ctx = _ctx(tree, "echo")
    for char in sorted(SHELL_METACHARACTERS):
        result = run(ctx, ["echo", f"a{char}b"])
        assert result.error_code == "shell_metacharacters", ascii(char)
    for argv in (
        ["echo", "hi", ">", "out.txt"],
        ["echo", "$(touch pwned)"],
        ["echo", "`touch pwned`"],
        ["echo", "a;touch pwned"],
        ["echo", "a", "&&", "touch", "pwned"],
        ["echo", "a|tee pwned"],
        ["echo", "${HOME}"],
        ["echo", "a\ntouch pwned"],
    ):
        assert run(ctx, argv).error_code == "shell_metacharacters", argv
    assert not (tree.ws / "out.txt").exists() and not (tree.ws / "pwned").exists()
    assert run(ctx, ["echo", "it's *fine* [ok] ~ # ! 'quoted' \"x\""]).ok


def test_a_program_in_the_workspace_does_not_shadow_path(tree: Tree) -> None:
    fake = tree.ws / "echo"
    fake.write_text(f"#!{PY}\nopen('{tree.ws}/shadowed', 'w').close()\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tree.ws}:.::{os.environ['PATH']}"}
    result = run(_ctx(tree, "echo", env=env), ["echo", "real"])
    assert result.content == "real\n[exit code 0]"
    assert not (tree.ws / "shadowed").exists()


def test_environment_is_scrubbed_of_secrets(tree: Tree) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "FOO_API_KEY": CANARY,
        "GITHUB_TOKEN": CANARY + "-2",
        "DB_PASSWORD": CANARY + "-3",
        "MY_SECRET_THING": CANARY + "-4",
        "aws_secret_access_key": CANARY + "-5",
        "HARMLESS": "visible-value",
    }
    ctx = _ctx(tree, "env", PY, env=env)
    listed = run(ctx, ["env"])
    assert listed.ok and "HARMLESS=visible-value" in listed.content
    for name in env:
        if name not in ("PATH", "HARMLESS"):
            assert name not in listed.content
    assert CANARY not in listed.content
    tree.workspace.write_text(
        "show.py", "import os\nprint(os.environ.get('FOO_API_KEY'), os.environ.get('HARMLESS'))\n"
    )
    assert run(ctx, [PY, "show.py"]).content == "None visible-value\n[exit code 0]"


def test_secret_values_are_redacted_from_tool_output(tree: Tree) -> None:
    ctx = _ctx(tree, "echo", env={"PATH": os.environ["PATH"], "FOO_API_KEY": CANARY})
    tree.workspace.write_text("leak.txt", f"key={CANARY}\n")
    read = asyncio.run(call_tool(BUILTIN_TOOLS["read_file"], {"path": "leak.txt"}, ctx))
    assert read.content == "key=[redacted]\n"
    echoed = run(ctx, ["echo", CANARY])
    assert CANARY not in echoed.content and "[redacted]" in echoed.content


def test_scrub_env_rules() -> None:
    secret = [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "DB_PASSWORD",
        "CLIENT_SECRET",
        "my_api_key",
        "SECRET",
        "TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_PRIVATE_KEY",
        "STRIPE_KEY",
    ]
    public = ["PATH", "HOME", "LANG", "TOKENIZERS_PARALLELISM", "KEYBOARD", "PYTHONPATH"]
    assert [n for n in secret if not is_secret_name(n)] == []
    assert [n for n in public if is_secret_name(n)] == []
    env = {n: "v" for n in secret + public}
    assert scrub_env(env) == {n: "v" for n in public}


def _pids_written(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def _read_pids(path: Path, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _pids_written(path):
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written")


HANGS = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open("pids.txt", "w") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
print("started", flush=True)
time.sleep(600)
"""


# The three tests below read the pids a command writes, so they run it unsandboxed (in a
# sandbox those are pids of its own namespace); tests/test_sandbox.py shows the same for
# sandboxed commands by looking for them on the host.


def test_hanging_command_is_killed_with_its_children(tree: Tree) -> None:
    tree.workspace.write_text("hang.py", HANGS)
    ctx = _ctx(tree, PY, timeout=1, sandbox="none")
    start = time.monotonic()
    result = run(ctx, [PY, "hang.py"], timeout=100)  # the model cannot raise the ceiling
    elapsed = time.monotonic() - start
    assert result.error_code == "timeout" and not result.ok, result
    assert "started" in result.content and elapsed < 8
    assert wait_dead(_read_pids(tree.ws / "pids.txt"), within=10.0) == []


def test_children_left_behind_are_killed_when_the_command_ends(tree: Tree) -> None:
    tree.workspace.write_text(
        "bg.py",
        "import os, subprocess, sys\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "open('pids.txt', 'w').write(f'{c.pid}\\n')\n",
    )
    start = time.monotonic()
    result = run(_ctx(tree, PY, timeout=30, sandbox="none"), [PY, "bg.py"])
    assert result.content == "[exit code 0]" and time.monotonic() - start < 10
    assert wait_dead(_read_pids(tree.ws / "pids.txt"), within=10.0) == []


def test_cancelled_command_is_killed_with_its_children(tree: Tree) -> None:
    tree.workspace.write_text("hang.py", HANGS)
    ctx = _ctx(tree, PY, timeout=60, sandbox="none")

    async def scenario() -> None:
        task = asyncio.create_task(
            call_tool(BUILTIN_TOOLS["run_command"], {"argv": [PY, "hang.py"]}, ctx)
        )
        pids_file = tree.ws / "pids.txt"
        deadline = time.monotonic() + 10
        while not _pids_written(pids_file) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert wait_dead(_read_pids(tree.ws / "pids.txt"), within=10.0) == []


def test_command_output_is_bounded(tree: Tree) -> None:
    ctx = _ctx(tree, PY, max_output=2000)
    tree.workspace.write_text("loud.py", "print('a' * 1000000)\nprint('the end')\n")
    result = run(ctx, [PY, "loud.py"])
    assert len(result.content) <= 2000
    assert "bytes of output cut" in result.content
    assert result.content.endswith("the end\n[exit code 0]")


def test_bad_timeouts_and_missing_programs(tree: Tree) -> None:
    ctx = _ctx(tree, "echo", "no-such-program-xyz", "./missing.sh")
    assert run(ctx, ["echo", "x"], timeout=0).error_code == "bad_arguments"
    assert run(ctx, ["echo", "x"], timeout=-1).error_code == "bad_arguments"
    assert run(ctx, ["echo", "x"], timeout="1").error_code == "bad_arguments"
    assert run(ctx, ["echo", "x"], timeout=None).ok
    assert run(ctx, ["no-such-program-xyz"]).error_code == "not_found"
    assert run(ctx, ["./missing.sh"]).error_code == "not_found"


# =========================================================================== tool()


def greet(name: str, times: int = 1, loud: bool = False, tags: list[str] | None = None) -> str:
    """Greet someone.

    More words about greeting.

    Args:
        name: who to greet
        times: how many times,
            at least one
        loud (bool): shout it
    """
    text = " ".join([f"hello {name}"] * times) + "".join(f" #{t}" for t in tags or [])
    return text.upper() if loud else text


def test_tool_schema_from_signature_and_docstring() -> None:
    spec = tool(greet)
    assert spec.name == "greet" and not spec.needs_context
    assert spec.description == "Greet someone.\n\nMore words about greeting."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "who to greet"},
            "times": {
                "type": "integer",
                "description": "how many times, at least one",
                "default": 1,
            },
            "loud": {"type": "boolean", "description": "shout it", "default": False},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    json.dumps(spec.parameters)  # plain JSON
    assert spec.to_def() == ToolDef(
        name="greet", description=spec.description, parameters=spec.parameters
    )


def test_tool_options_and_types() -> None:
    def measure(
        ctx: ToolContext,
        unit: Literal["m", "ft"],
        ratio: float,
        level: Literal[1, 2],
        note: str | None,
        *,
        flags: list[bool] | None = None,
    ) -> dict[str, Any]:
        """:param unit: the unit
        :param ratio: a ratio
        """
        return {"unit": unit, "ratio": ratio, "note": note, "root": str(ctx.workspace.root)}

    spec = tool(name="measure-it", description="Measure.")(measure)
    assert spec.name == "measure-it" and spec.description == "Measure." and spec.needs_context
    props = spec.parameters["properties"]
    assert props["unit"] == {"type": "string", "enum": ["m", "ft"], "description": "the unit"}
    assert props["ratio"] == {"type": "number", "description": "a ratio"}
    assert props["level"] == {"type": "integer", "enum": [1, 2]}
    assert props["flags"] == {"type": "array", "items": {"type": "boolean"}}
    assert spec.parameters["required"] == ["unit", "ratio", "level"]


class Custom:
    pass


def test_unsupported_tool_definitions_are_clear_errors() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def with_dict(x: dict[str, int]) -> None: ...
    def with_any(x: Any) -> None: ...
    def with_union(x: int | str) -> None: ...
    def with_custom(x: Custom) -> None: ...
    def with_nested(x: list[list[str]]) -> None: ...
    def with_args(*xs: str) -> None: ...
    def with_kwargs(**kw: str) -> None: ...
    def positional(x: str, /) -> None: ...

    for func in (
        untyped,
        with_dict,
        with_any,
        with_union,
        with_custom,
        with_nested,
        with_args,
        with_kwargs,
        positional,
    ):
        with pytest.raises(UsageError) as info:
            tool(func)
        message = str(info.value)
        assert func.__name__ in message and "parameter" in message and "\n" not in message
    with pytest.raises(UsageError):
        tool(name="has space")(greet)

    class Local:
        pass

    def unresolvable(x: Local) -> None: ...

    with pytest.raises(UsageError, match=r"unresolvable.*type annotations"):
        tool(unresolvable)


def test_call_tool_validates_arguments(tree: Tree) -> None:
    spec = tool(greet)
    ctx = ToolContext(workspace=tree.workspace)

    def call(arguments: object) -> ToolResult:
        return asyncio.run(call_tool(spec, arguments, ctx))

    assert call({"name": "ann"}) == ToolResult(ok=True, content="hello ann")
    assert call({"name": "bo", "times": 2.0, "loud": True, "tags": ["x"]}).content == (
        "HELLO BO HELLO BO #X"
    )
    assert call({"name": "cy", "times": None, "tags": None}).content == "hello cy"
    bad: list[object] = [
        {},
        {"times": 2},
        {"name": "a", "extra": 1},
        {"name": 3},
        {"name": "a", "times": "2"},
        {"name": "a", "times": True},
        {"name": "a", "times": 1.5},
        {"name": "a", "loud": "yes"},
        {"name": "a", "tags": "x"},
        {"name": "a", "tags": ["x", 1]},
        {"name": None},
        "name=a",
        ["a"],
        None,
    ]
    for arguments in bad:
        result = call(arguments)
        assert (result.ok, result.error_code) == (False, "bad_arguments"), arguments
        assert result.content.startswith("error: bad_arguments: ")


def test_validate_arguments_against_a_handwritten_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": ["integer", "null"]}, "s": {}},
        "required": ["n"],
    }
    assert validate_arguments(schema, {"n": None, "s": [1], "free": 1}) == {
        "n": None,
        "s": [1],
        "free": 1,
    }
    with pytest.raises(ToolError):
        validate_arguments(schema, {"n": "1"})


def test_call_tool_never_raises_for_tool_failures(tree: Tree) -> None:
    ctx = ToolContext(workspace=tree.workspace)

    @tool
    def crashes(x: int) -> str:
        """Divide."""
        return str(1 // x)

    @tool
    def refuses() -> str:
        raise ToolError("edit_no_match", "nothing\nto do")

    @tool
    async def waits(ctx: ToolContext, x: int) -> list[int]:
        await asyncio.sleep(0)
        return [x, len(str(ctx.workspace.root)) > 0]

    crashed = asyncio.run(call_tool(crashes, {"x": 0}, ctx))
    assert (crashed.ok, crashed.error_code) == (False, "tool_crashed")
    assert (
        crashed.content
        == "error: tool_crashed: ZeroDivisionError: integer division or modulo by zero"
    )
    refused = asyncio.run(call_tool(refuses, {}, ctx))
    assert refused == ToolResult(
        ok=False, content="error: edit_no_match: nothing to do", error_code="edit_no_match"
    )
    assert asyncio.run(call_tool(waits, {"x": 5}, ctx)).content == "[5, true]"


def test_results_are_cut_to_max_output(tree: Tree) -> None:
    ctx = ToolContext(workspace=tree.workspace, max_output=500)

    @tool
    def big() -> str:
        return "z" * 10_000

    result = asyncio.run(call_tool(big, {}, ctx))
    assert len(result.content) == 500 and "[cut: " in result.content


def test_tool_error_str() -> None:
    err = ToolError("timeout", "took\ntoo long", detail="partial")
    assert str(err) == "timeout: took too long" and err.code == "timeout"
    assert err.message == "took too long" and err.detail == "partial"

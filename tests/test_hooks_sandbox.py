"""Command hooks can opt in to run_command's bubblewrap sandbox (``sandbox: true``): their
``cwd`` is the only place they can write, the home folder, the state dir and other folders are
not visible, /tmp is private and there is no network unless ``network: true``. Without bwrap a
sandboxed hook fails in one line naming the install."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.agents import sandbox
from phalanx.agents.hooks import from_config, payload
from phalanx.exceptions import PlanError

pytestmark = pytest.mark.skipif(sandbox.bwrap_path() is None, reason="needs bwrap")

PROBE = r"""
import json, os, socket, sys
out, outside, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {}
def attempt(name, fn):
    try:
        fn()
        seen[name] = "ok"
    except Exception as exc:
        seen[name] = type(exc).__name__
attempt("write_inside", lambda: open("inside.txt", "w").write("x"))
attempt("write_outside", lambda: open(os.path.join(outside, "escaped.txt"), "w").write("x"))
attempt("read_outside", lambda: open(os.path.join(outside, "secret.txt")).read())
attempt("read_home", lambda: open(os.path.expanduser("~/.phalanx-home-canary")).read())
attempt("host_tmp", lambda: open("/tmp/phalanx-host-tmp-canary").read())
attempt("network", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
seen["stdin"] = json.load(sys.stdin)["point"]
json.dump(seen, open(out, "w"))
"""


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "work", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    (inside / "probe.py").write_text(PROBE)
    return inside, outside


def _fire(hook: dict[str, object]) -> object:
    hooks = from_config([hook])
    return asyncio.run(hooks.fire("on_run_start", payload("on_run_start")))


def _listener() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.listen()
    return server


@pytest.mark.parametrize("network", [False, True])
def test_a_sandboxed_hook_reaches_only_its_cwd(
    places: tuple[Path, Path], network: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, outside = places
    home = inside.parent / "home"
    home.mkdir()
    (home / ".phalanx-home-canary").write_text("home")
    monkeypatch.setenv("HOME", str(home))
    host_tmp = Path("/tmp/phalanx-host-tmp-canary")
    host_tmp.write_text("tmp")
    server = _listener()
    try:
        port = server.getsockname()[1]
        out = inside / "seen.json"
        argv = [sys.executable, "probe.py", str(out), str(outside), str(port)]
        hook = {"on": "on_run_start", "command": argv, "cwd": str(inside), "sandbox": True}
        outcome = _fire({**hook, "network": network})
    finally:
        server.close()
        host_tmp.unlink()
    assert getattr(outcome, "ok", False), outcome
    seen = json.loads(out.read_text())
    assert seen["stdin"] == "on_run_start"  # the payload still arrives on stdin
    assert seen["write_inside"] == "ok" and (inside / "inside.txt").read_text() == "x"
    assert seen["write_outside"] != "ok" and not (outside / "escaped.txt").exists()
    assert seen["read_outside"] != "ok"
    assert seen["read_home"] != "ok"
    assert seen["host_tmp"] != "ok"
    assert (seen["network"] == "ok") is network


def test_without_sandbox_the_hook_runs_as_before(places: tuple[Path, Path]) -> None:
    inside, outside = places
    server = _listener()
    try:
        out = inside / "seen.json"
        argv = [sys.executable, "probe.py", str(out), str(outside), str(server.getsockname()[1])]
        outcome = _fire({"on": "on_run_start", "command": argv, "cwd": str(inside)})
    finally:
        server.close()
    assert getattr(outcome, "ok", False), outcome
    seen = json.loads(out.read_text())
    assert seen["read_outside"] == "ok" and seen["network"] == "ok"  # what the sandbox stops


def test_a_sandboxed_hook_without_bwrap_fails_in_one_line(
    places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, _ = places
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    outcome = _fire(
        {"on": "on_run_start", "command": ["true"], "cwd": str(inside), "sandbox": True}
    )
    assert not getattr(outcome, "ok", True)
    assert sandbox.INSTALL_HINT.split()[0] in str(outcome)


def test_sandbox_and_network_must_be_booleans() -> None:
    with pytest.raises(PlanError, match=r"hooks\[0\]\.sandbox"):
        from_config([{"on": "on_run_start", "command": ["true"], "sandbox": "yes"}])
    with pytest.raises(PlanError, match=r"hooks\[0\]\.network"):
        from_config([{"on": "on_run_start", "command": ["true"], "network": 1}])


STATE_PROBE = r"""
import json, os, sys
seen = {}
for name, path in (("default", ".phalanx/journal.sqlite"), ("given", "state/journal.sqlite")):
    try:
        seen[name] = open(path).read()
    except OSError as exc:
        seen[name] = type(exc).__name__
    try:  # a write lands in the empty mask, never in the state dir
        open(path, "a").write("x")
    except OSError:
        pass
json.dump(seen, open("seen.json", "w"))
"""


def test_a_sandboxed_hook_never_sees_a_state_dir_inside_its_cwd(tmp_path: Path) -> None:
    """The cwd of a hook is often the project, which holds ``.phalanx`` (the journal, the
    quota file, other runs): masked, as is a run's --state-dir anywhere inside it."""
    work = tmp_path / "project"
    for state in (work / ".phalanx", work / "state"):
        state.mkdir(parents=True)
        (state / "journal.sqlite").write_text("journal")
    sandbox.hide(work / "state")  # what phalanx.run does with its state dir
    (work / "probe.py").write_text(STATE_PROBE)
    hook = {"on": "on_run_start", "command": [sys.executable, "probe.py"], "cwd": str(work)}
    outcome = _fire({**hook, "sandbox": True})
    assert getattr(outcome, "ok", False), outcome
    seen = json.loads((work / "seen.json").read_text())
    assert seen == {"default": "FileNotFoundError", "given": "FileNotFoundError"}, seen
    for state in (work / ".phalanx", work / "state"):
        assert (state / "journal.sqlite").read_text() == "journal"  # untouched


def test_a_run_hides_its_state_dir_from_sandboxed_hooks(tmp_path: Path) -> None:
    """End to end: ``phalanx run`` from the project folder, a hook with ``sandbox: true``
    and no cwd (the project, which holds .phalanx) cannot write the journal."""
    plan = tmp_path / "plan.yaml"
    probe = "import os, sys; sys.exit(0 if not os.path.exists('.phalanx/journal.sqlite') else 3)"
    plan.write_text(
        "name: hidden\nprovider: sim\nagents: [{role: generalist}]\n"
        "tasks: [{id: t, prompt: x}]\n"
        "hooks:\n"
        f"  - {{on: after_task, sandbox: true, "
        f"command: [{sys.executable}, -c, {json.dumps(probe)}]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "phalanx", "run", str(plan), "-q", "--json", "--run-id", "h"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PHALANX_STATE_DIR"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".phalanx" / "journal.sqlite").is_file()
    events = subprocess.run(
        ["sqlite3", str(tmp_path / ".phalanx" / "journal.sqlite"),
         "select count(*) from events where type = 'alert'"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert events.stdout.strip() in ("0", ""), done.stderr  # the hook failed nowhere

"""run_command's sandbox (bubblewrap): escapes through allowed commands stay contained.

Each case runs allowed commands that try to read or change something outside the agent's
workspace: a sibling agent's worktree, the state dir's journal, the home, the host's /tmp,
/etc/shadow, other processes, the network. The test controls every file and marker it
checks: secrets never appear in a tool result nor in the workspace, and every file outside
the workspace is byte for byte and mode for mode what it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import os
import shutil
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.agents import sandbox
from phalanx.agents.tools import BUILTIN_TOOLS, ToolContext, ToolResult, call_tool
from phalanx.agents.workspace import Workspace
from phalanx.cost import Usage
from phalanx.exceptions import PlanError
from phalanx.plan import Commands
from phalanx.providers.base import Completion, ToolCall
from phalanx.testing import ScriptedProvider

pytestmark = pytest.mark.skipif(
    sandbox.bwrap_path() is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap (make test does)",
)

ALLOWED = (
    "env", "cat", "cp", "ln", "ls", "find", "head", "dd", "mv", "rm", "touch", "chmod",
    "python3", "curl", "mknod", "mount",
)  # fmt: skip
SECRETS = ("ALPHA-SECRET-5e1", "JOURNAL-SECRET-9a2", "HOME-SECRET-7c3", "OUTSIDE-SECRET-1d4")


@dataclass
class Box:
    tmp: Path
    ws: Path
    alpha: Path
    journal: Path
    home: Path
    outside: Path
    marker: Path  # in the host's /tmp
    ctx: ToolContext
    extra: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        values = {
            "ws": self.ws,
            "tmp": self.tmp,
            "alpha": self.alpha,
            "journal": self.journal,
            "home": self.home,
            "outside": self.outside,
            "marker": self.marker,
            **self.extra,
        }
        for key, value in values.items():
            text = text.replace("{" + key + "}", str(value))
        return text


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    state = tmp_path / "state"
    trees = state / "runs" / "r1" / "worktrees"
    ws, alpha_dir, home = trees / "Beta", trees / "Alpha", tmp_path / "home"
    for d in (ws, alpha_dir, home / ".ssh"):
        d.mkdir(parents=True)
    (alpha_dir / "alpha-secret.txt").write_text(SECRETS[0])
    (state / "journal.sqlite").write_text(SECRETS[1])
    (home / ".ssh" / "id_rsa").write_text(SECRETS[2])
    (tmp_path / "outside.txt").write_text(SECRETS[3])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    ctx = ToolContext(
        workspace=Workspace(ws),
        allowed_commands=frozenset(ALLOWED),
        command_timeout=20,
        env=env,
    )
    marker = Path(f"/tmp/outside-marker-{uuid.uuid4().hex}")
    yield Box(
        tmp_path,
        ws,
        alpha_dir / "alpha-secret.txt",
        state / "journal.sqlite",
        home,
        tmp_path / "outside.txt",
        marker,
        ctx,
    )
    marker.unlink(missing_ok=True)


def run(ctx: ToolContext, argv: list[str], **extra: Any) -> ToolResult:
    args: dict[str, Any] = {"argv": argv, **extra}
    return asyncio.run(call_tool(BUILTIN_TOOLS["run_command"], args, ctx))


def snapshot(root: Path, skip: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under ``root`` but ``skip``: its content and mode."""
    seen: dict[str, tuple[bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            seen[str(p.relative_to(root))] = (data, st.st_mode)
    return seen


def workspace_text(ws: Path) -> str:
    """The text of the workspace's files (a mount point inside it fails the test: the
    command mounted something on the host)."""
    parts = []
    for dirpath, dirnames, filenames in os.walk(ws):
        mounts = [d for d in dirnames if os.path.ismount(os.path.join(dirpath, d))]
        assert mounts == [], f"a command mounted {mounts} in {dirpath}"
        for name in filenames:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                parts.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


# ------------------------------------------------------------------ escape attempts

READ_MANY = """
import os, sys
paths = sys.argv[1:]
for p in paths:
    try:
        print(p, open(p).read())
    except Exception as exc:
        print(p, type(exc).__name__)
"""
WRITE_MANY = """
import sys
for p in sys.argv[1:]:
    try:
        open(p, "a").write("pwned")
        print("wrote", p)
    except Exception as exc:
        print(p, type(exc).__name__)
"""
WALK = """
import os
for top in ("/", "..", "../.."):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "usr", "dev")]
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                print(p, open(p, errors="replace").read(200))
            except Exception:
                pass
"""
CHDIR_UP = """
import os
os.chdir("..")
open("pwned-sibling.txt", "w").write("x")
os.chdir("/")
print(os.listdir("."))
"""
SH_SCRIPT = """id > {tmp}/id.txt
id > {marker}
echo pwned >> {alpha}
cat {journal} {home}/.ssh/id_rsa {outside}
"""
HARDLINK_FROM_INSIDE = """
import os
for src, dst in (("{alpha}", "hl1"), ("{outside}", "hl2"), ("/etc/passwd", "{tmp}/hl3")):
    try:
        os.link(src, dst)
        print("linked", src, open(dst).read())
    except Exception as exc:
        print(src, type(exc).__name__)
"""

CASES: dict[str, tuple[list[list[str]], dict[str, str]]] = {
    "env-touch-host-tmp": ([["env", "touch", "{marker}"]], {}),
    "env-touch-test-tmp": ([["env", "touch", "{tmp}/outside-marker"]], {}),
    "env-touch-home": ([["env", "touch", "{home}/.bashrc"]], {}),
    "env-touch-usr": ([["env", "touch", "/usr/pwned-by-agent"]], {}),
    "env-sh-c-id": ([["env", "sh", "-c", "id"]], {}),
    "env-sh-c-touch-outside": ([["env", "sh", "-c", "touch {tmp}/sh-marker {marker}"]], {}),
    "env-sh-script": ([["env", "sh", "s.sh"]], {"s.sh": SH_SCRIPT}),
    "cat-sibling-relative": ([["cat", "../Alpha/alpha-secret.txt"]], {}),
    "cat-sibling-absolute": ([["cat", "{alpha}"]], {}),
    "cat-journal": ([["cat", "{journal}"]], {}),
    "cat-home": ([["cat", "{home}/.ssh/id_rsa"]], {}),
    "cat-outside": ([["cat", "{outside}"]], {}),
    "cat-etc-shadow": ([["cat", "/etc/shadow"]], {}),
    "cat-proc-1-environ": ([["cat", "/proc/1/environ"]], {}),
    "cat-host-process-environ": ([["cat", "/proc/{hostpid}/environ"]], {}),
    "cat-host-process-cmdline": ([["cat", "/proc/{hostpid}/cmdline"]], {}),
    "head-journal": ([["head", "-c", "100", "{journal}"]], {}),
    "dd-journal": ([["dd", "if={journal}", "of=copy.db"]], {}),
    "cp-sibling-in": ([["cp", "{alpha}", "stolen.txt"]], {}),
    "cp-journal-in": ([["cp", "{journal}", "j.db"]], {}),
    "cp-over-sibling": ([["cp", "x.txt", "{alpha}"]], {"x.txt": "overwritten"}),
    "cp-over-journal": ([["cp", "x.txt", "{journal}"]], {"x.txt": "overwritten"}),
    "mv-sibling-in": ([["mv", "../Alpha/alpha-secret.txt", "moved.txt"]], {}),
    "rm-sibling": ([["rm", "-f", "{alpha}"]], {}),
    "rm-journal": ([["rm", "-f", "{journal}"]], {}),
    "chmod-outside": ([["chmod", "777", "{outside}"]], {}),
    "ln-hard-sibling": ([["ln", "{alpha}", "hard.txt"], ["cat", "hard.txt"]], {}),
    "ln-hard-etc": ([["ln", "/etc/passwd", "{tmp}/pw"]], {}),
    "ln-symlink-sibling": ([["ln", "-s", "{alpha}", "soft.txt"], ["cat", "soft.txt"]], {}),
    "ln-symlink-out-of-ws": ([["ln", "-s", "{ws}", "{tmp}/evil-link"]], {}),
    "ls-parent": ([["ls", "-la", ".."]], {}),
    "ls-state-and-tmp": ([["ls", "-laR", "{tmp}"]], {}),
    "ls-home": ([["ls", "-la", "{home}", "{home}/.ssh"]], {}),
    "find-root": ([["find", "/", "-name", "*secret*", "-not", "-path", "/proc/*"]], {}),
    "python-read-outside": (
        [["python3", "read.py", "{alpha}", "{journal}", "{home}/.ssh/id_rsa", "{outside}"]],
        {"read.py": READ_MANY},
    ),
    "python-write-outside": (
        [["python3", "write.py", "{alpha}", "{journal}", "{outside}", "{marker}", "{tmp}/new"]],
        {"write.py": WRITE_MANY},
    ),
    "python-walk-filesystem": ([["python3", "walk.py"]], {"walk.py": WALK}),
    "python-chdir-up": ([["python3", "up.py"]], {"up.py": CHDIR_UP}),
    "python-hardlink": ([["python3", "hl.py"]], {"hl.py": HARDLINK_FROM_INSIDE}),
    "mknod-disk": ([["mknod", "sda", "b", "8", "0"], ["head", "-c", "64", "sda"]], {}),
    "mount-root": ([["env", "mkdir", "mnt"], ["mount", "--bind", "/", "mnt"]], {}),
}


@pytest.fixture
def host_process() -> Iterator[int]:
    """A process outside any sandbox, with a secret in its environment and argv."""
    env = {**os.environ, "HOST_PROCESS_VALUE": SECRETS[3]}
    code = "import time, sys; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, SECRETS[3]], env=env)
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("case", sorted(CASES))
def test_escape_attempts_are_contained(box: Box, host_process: int, case: str) -> None:
    steps, files = CASES[case]
    box.extra["hostpid"] = str(host_process)
    for name, content in files.items():
        (box.ws / name).write_text(box.fill(content))
    before = snapshot(box.tmp, box.ws)
    outputs = [run(box.ctx, [box.fill(a) for a in argv]).content for argv in steps]
    seen = "\n".join(outputs) + workspace_text(box.ws)
    assert [s for s in SECRETS if s in seen] == [], outputs
    assert snapshot(box.tmp, box.ws) == before, outputs
    assert not box.marker.exists(), outputs
    assert not Path("/usr/pwned-by-agent").exists()
    shadow = Path("/etc/shadow")
    if os.access(shadow, os.R_OK):
        assert shadow.read_text().splitlines()[0] not in seen
    if case.startswith(("ls-", "find-")):  # not even the names show
        names = ("Alpha", "alpha-secret", "journal.sqlite", "id_rsa", "outside.txt")
        assert [n for n in names if n in seen] == [], outputs


# ------------------------------------------------------------------ what still works


def test_the_workspace_stays_writable(box: Box) -> None:
    (box.ws / "w.py").write_text("open('made-by-python.txt', 'w').write('hello')\n")
    assert run(box.ctx, ["env", "touch", "touched.txt"]).content == "[exit code 0]"
    assert run(box.ctx, ["python3", "w.py"]).content == "[exit code 0]"
    assert run(box.ctx, ["cp", "made-by-python.txt", "copy.txt"]).content == "[exit code 0]"
    assert run(box.ctx, ["env", "mkdir", "-p", "a/b"]).ok
    assert run(box.ctx, ["ln", "copy.txt", "a/b/hard.txt"]).content == "[exit code 0]"
    assert (box.ws / "touched.txt").exists()
    assert (box.ws / "a" / "b" / "hard.txt").read_text() == "hello"
    listed = run(box.ctx, ["ls"])
    assert "made-by-python.txt" in listed.content and "copy.txt" in listed.content
    pwd = run(box.ctx, ["env", "pwd"])
    assert pwd.content == f"{box.ws}\n[exit code 0]"


def test_the_private_tmp_and_home_are_writable_and_thrown_away(box: Box) -> None:
    (box.ws / "t.py").write_text(
        "import os\n"
        "open('/tmp/scratch', 'w').write('x')\n"
        "open(os.path.expanduser('~/.cache-file'), 'w').write('x')\n"
        "print(sorted(os.listdir(os.path.expanduser('~'))))\n"
    )
    result = run(box.ctx, ["python3", "t.py"])
    assert result.content == "['.cache-file']\n[exit code 0]"
    assert not Path("/tmp/scratch").exists() and not (box.home / ".cache-file").exists()


# ------------------------------------------------------------------ processes


def _host_pids_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


DETACH = """
import subprocess, sys
code = "import time; time.sleep(2); open('late.txt', 'w').write('x')"
subprocess.Popen([sys.executable, "-c", code, "{token}"], start_new_session=True)
print("detached")
"""


def test_a_detached_child_dies_with_the_command(box: Box) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    (box.ws / "d.py").write_text(DETACH.replace("{token}", token))
    result = run(box.ctx, ["python3", "d.py"])
    assert result.content == "detached\n[exit code 0]"
    assert _host_pids_with(token) == []  # a new session left the group; the namespace died
    time.sleep(2.5)
    assert not (box.ws / "late.txt").exists()


def test_a_hanging_command_is_killed_with_its_children(box: Box) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    (box.ws / "h.py").write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{token}'])\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    start = time.monotonic()
    result = run(box.ctx, ["python3", "h.py", token], timeout=1)
    assert result.error_code == "timeout" and "started" in result.content
    assert time.monotonic() - start < 8
    deadline = time.monotonic() + 5
    while _host_pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_pids_with(token) == []


def test_other_processes_are_not_visible(box: Box, host_process: int) -> None:
    listed = run(box.ctx, ["ls", "/proc"]).content.split()
    assert str(host_process) not in listed and str(os.getpid()) not in listed
    assert run(box.ctx, ["cat", f"/proc/{host_process}/cmdline"]).content.endswith("[exit code 1]")


# ------------------------------------------------------------------ network


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"LISTENER-REPLY")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1; its port."""
    _Hits.hits = []
    server = socketserver.TCPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


CONNECT = """
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    s.sendall(b"GET /python HTTP/1.0" + bytes([13, 10, 13, 10]))
    reply = b""
    while chunk := s.recv(1000):
        reply += chunk
    print(reply.decode())
except OSError as exc:
    print("refused", type(exc).__name__)
"""


def _net_attempts(box: Box, port: int) -> list[str]:
    (box.ws / "c.py").write_text(CONNECT)
    attempts = [["python3", "c.py", str(port)]]
    if shutil.which("curl"):
        attempts.append(["curl", "-sS", "-m", "3", f"http://127.0.0.1:{port}/curl"])
    return [run(box.ctx, argv).content for argv in attempts]


def test_no_network_unless_the_plan_allows_it(box: Box, listener: int) -> None:
    outputs = _net_attempts(box, listener)
    assert all("LISTENER-REPLY" not in o for o in outputs), outputs
    assert _Hits.hits == []


def test_network_true_reaches_the_listener(box: Box, listener: int) -> None:
    box.ctx = dataclasses.replace(box.ctx, network=True)
    outputs = _net_attempts(box, listener)
    assert all("LISTENER-REPLY" in o for o in outputs), outputs
    assert _Hits.hits[0] == "/python"


# ------------------------------------------------------------------ limits


def test_memory_and_cpu_are_limited(box: Box) -> None:
    (box.ws / "mem.py").write_text("b = bytearray(1024 * 1024 * 1024)\nprint('allocated')\n")
    (box.ws / "cpu.py").write_text("while True:\n    pass\n")
    ctx = dataclasses.replace(box.ctx, memory_mb=256, cpu_seconds=1)
    mem = run(ctx, ["python3", "mem.py"])
    assert "MemoryError" in mem.content and "allocated" not in mem.content
    start = time.monotonic()
    cpu = run(ctx, ["python3", "cpu.py"])
    assert cpu.ok and "[exit code 0]" not in cpu.content and time.monotonic() - start < 10
    assert run(box.ctx, ["python3", "mem.py"]).content == "allocated\n[exit code 0]"


# ------------------------------------------------------------------ without bwrap


def test_without_bwrap_commands_are_refused_with_the_install_line(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    result = run(box.ctx, ["env", "touch", "ran.txt"])
    assert result.error_code == "sandbox_unavailable"
    assert "apt-get install bubblewrap" in result.content
    assert "sandbox: none" in result.content and len(result.content.splitlines()) == 1
    assert not (box.ws / "ran.txt").exists()
    unsandboxed = dataclasses.replace(box.ctx, sandbox="none")
    assert run(unsandboxed, ["env", "touch", "ran.txt"]).content == "[exit code 0]"
    assert (box.ws / "ran.txt").exists()
    assert sandbox.sandbox_warning(("env",), "bwrap") is not None
    assert sandbox.sandbox_warning((), "bwrap") is None


# ------------------------------------------------------------------ plans

U = Usage(input_tokens=10, output_tokens=5)


def _agent_runs(argv: list[str]) -> ScriptedProvider:
    call = ToolCall(id="c1", name="run_command", arguments={"argv": argv})
    return ScriptedProvider(
        [
            Completion(text="", stop_reason="tool_use", usage=U, tool_calls=(call,)),
            Completion(text="done", usage=U),
        ]
    )


def _plan(commands: Commands) -> Plan:
    return Plan.build(
        agents=[AgentSpec(role="coder", provider="scripted", tools=("run_command",))],
        tasks=[Task(id="t", prompt="go")],
        commands=commands,
    )


def test_a_plan_run_cannot_read_its_journal(state: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (state / "journal.sqlite").parent.mkdir(parents=True, exist_ok=True)
    script = _agent_runs(["cp", str(state / "journal.sqlite"), "stolen.db"])
    plan = _plan(Commands(allow=("cp",)))
    result = phalanx.run_sync(plan, workspace=ws, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    tool_msg = next(m for m in script.requests[-1].messages if m.role == "tool")
    assert "No such file" in tool_msg.content and not (ws / "stolen.db").exists()
    assert _alerts(state, result.run_id) == []


def test_sandbox_none_warns_at_run_start(state: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    script = _agent_runs(["env", "touch", str(tmp_path / "outside.txt")])
    plan = _plan(Commands(allow=("env",), sandbox="none"))
    result = phalanx.run_sync(plan, workspace=ws, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert (tmp_path / "outside.txt").exists()  # what sandbox: none means
    alerts = _alerts(state, result.run_id)
    assert len(alerts) == 1 and "without a sandbox" in alerts[0]


def _alerts(state: Path, run_id: str) -> list[str]:
    db = sqlite3.connect(state / "journal.sqlite")
    rows = db.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = 'alert' ORDER BY seq", (run_id,)
    )
    return [d["message"] for (raw,) in rows if (d := json.loads(raw))["kind"] == "sandbox"]


PLAN = {
    "agents": [{"role": "coder", "tools": ["run_command"]}],
    "tasks": [{"id": "t", "prompt": "go"}],
}


def test_plan_commands_sandbox_fields_parse_and_round_trip() -> None:
    from phalanx.plan.file import plan_from_data, plan_to_dict

    default = plan_from_data({**PLAN, "commands": {"allow": ["make"]}}).commands
    assert (default.sandbox, default.network, default.cpu, default.memory) == (
        "bwrap",
        False,
        None,
        4096,
    )
    given = {"allow": ["make"], "sandbox": "none", "network": True, "cpu": 30, "memory": 0}
    plan = plan_from_data({**PLAN, "commands": given})
    assert plan.commands == Commands(
        allow=("make",), sandbox="none", network=True, cpu=30, memory=0
    )
    assert plan_from_data(plan_to_dict(plan)).commands == plan.commands
    for bad in ({"sandbox": "docker"}, {"network": "maybe"}, {"memory": -1}, {"cpu": 0}):
        with pytest.raises(PlanError) as caught:
            plan_from_data({**PLAN, "commands": bad})
        assert "commands" in str(caught.value) and "\n" not in str(caught.value)


def test_the_program_installation_is_visible_read_only_and_nothing_beside_it(box: Box) -> None:
    inst = box.tmp / "opt-tool"
    (inst / "shims").mkdir(parents=True)
    (inst / "share").mkdir()
    (inst / "share" / "data.txt").write_text("tool-data")
    prog = inst / "shims" / "tool"
    prog.write_text(
        box.fill(f"#!/bin/sh\ncat {inst}/share/data.txt {{outside}}\ntouch {inst}/share/new\n")
    )
    prog.chmod(0o755)
    ctx = dataclasses.replace(box.ctx, allowed_commands=frozenset({str(prog)}))
    before = snapshot(box.tmp, box.ws)
    result = run(ctx, [str(prog)])
    assert result.ok and "tool-data" in result.content, result.content
    assert SECRETS[3] not in result.content and "Read-only file system" in result.content
    assert snapshot(box.tmp, box.ws) == before


def test_a_program_in_the_users_local_bin_does_not_show_the_rest_of_local(box: Box) -> None:
    """pip --user, pipx and uv put programs in ~/.local/bin; ~/.local/share holds keyrings
    and histories: the sandbox shows that bin folder alone, never ~/.local."""
    local_bin = box.home / ".local" / "bin"
    keyrings = box.home / ".local" / "share" / "keyrings"
    local_bin.mkdir(parents=True)
    keyrings.mkdir(parents=True)
    (keyrings / "login.keyring").write_text(SECRETS[0])
    shutil.copy2("/usr/bin/cat", local_bin / "mycat")
    ctx = dataclasses.replace(
        box.ctx,
        allowed_commands=frozenset({"mycat"}),
        env={**(box.ctx.env or {}), "PATH": f"{local_bin}:/usr/bin:/bin"},
    )
    result = run(ctx, ["mycat", str(keyrings / "login.keyring")])
    assert SECRETS[0] not in result.content
    assert "No such file" in result.content, result.content  # ~/.local is not there at all
    (box.ws / "note.txt").write_text("inside")
    assert "inside" in run(ctx, ["mycat", "note.txt"]).content  # the program itself runs

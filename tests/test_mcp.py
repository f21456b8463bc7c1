"""MCP tool servers as agent tools (issue 21, item 1), with real servers written with the
``mcp`` SDK's MCPServer (FastMCP in SDK 1.x): one over stdio (a script in tmp_path, started
by the run inside the command sandbox) and one over streamable HTTP on 127.0.0.1 (uvicorn
in a thread, a bearer token checked on every request). A scripted model calls a tool of
each; the calls are journaled; a tool outside the agent's allow list is refused and never
reaches the server; an argument error in a nested schema is caught before anything is
sent; the stdio server's processes are gone when the run ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import events, rows, wait_dead, write_plan
from phalanx.agents.mcp import McpHub, McpServer, header_values
from phalanx.agents.sandbox import bwrap_path
from phalanx.agents.tools import ToolContext, ToolSpec, call_tool
from phalanx.agents.workspace import Workspace
from phalanx.cost import Usage
from phalanx.exceptions import PlanError, UsageError
from phalanx.plan.file import plan_from_data, plan_to_dict
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.testing import ScriptedProvider

pytest.importorskip("mcp")
import uvicorn
from mcp.server.mcpserver import MCPServer

U = Usage(input_tokens=50, output_tokens=10)
TOKEN = "tok-9f3b2c7d5e1a4608"  # the HTTP server's bearer token, from $SEARCH_TOKEN
SERVER_START = 20.0  # seconds for the HTTP server to listen

STDIO_SERVER = '''
import sys
from pydantic import BaseModel
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

srv = MCPServer("files")


class Where(BaseModel):
    dir: str
    depth: int


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # stderr: the run's mcp-files.log


@srv.tool(annotations=ToolAnnotations(read_only_hint=True))
def list_dir(where: Where, tags: list[str] = []) -> str:
    """List a directory of the project."""
    note(f"CALL list_dir {where.dir} {where.depth}")
    return f"listed {where.dir} at depth {where.depth}: a.py b.py"


@srv.tool()
def write_note(text: str) -> str:
    """Write a note."""
    note("CALL write_note")
    return "noted"


@srv.tool()
def delete_all() -> str:
    """Delete everything."""
    note("CALL delete_all")
    return "deleted"


if __name__ == "__main__":
    note("STARTED")
    srv.run()
'''


# -- the HTTP server: in this process, on 127.0.0.1, a token on every request ------------


class HttpServer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refused = 0
        srv = MCPServer("search")

        @srv.tool()
        def query(q: str, limit: int = 3) -> str:
            """Search the index."""
            self.calls.append(("query", {"q": q, "limit": limit}))
            return f"{limit} results for {q}: phalanx.dev, docs"

        app = srv.streamable_http_app(host="127.0.0.1")
        outer = self

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                auth = dict(scope["headers"]).get(b"authorization", b"").decode()
                if auth != f"Bearer {TOKEN}":
                    outer.refused += 1
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"no"})
                    return
            await app(scope, receive, send)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        config = uvicorn.Config(guarded, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> HttpServer:
        self.thread.start()
        deadline = time.monotonic() + SERVER_START
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the MCP HTTP server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        assert not self.thread.is_alive(), "the MCP HTTP server did not stop"


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


def _processes_running(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (the stdio server's unique path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def _call(*calls: tuple[str, str, dict[str, Any]]) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=tuple(ToolCall(id=cid, name=name, arguments=a) for cid, name, a in calls),
    )


def _project(tmp_path: Path, url: str, sandbox: str = "bwrap") -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    server = project / f"files_server_{secrets.token_hex(4)}.py"  # unique: found in /proc
    server.write_text(STDIO_SERVER)
    plan = write_plan(
        project / "plan.yaml",
        {
            "name": "mcp",
            "commands": {"sandbox": sandbox},
            "mcp": {
                "files": {"command": [sys.executable, server.name], "timeout": 20},
                "search": {
                    "url": url,
                    "headers": {"Authorization": {"env": "SEARCH_TOKEN", "prefix": "Bearer "}},
                },
            },
            "agents": [
                {
                    "role": "coder",
                    "provider": "scripted",
                    "tools": [
                        "read_file",
                        "mcp:files/list_*",
                        "mcp:files/write_note",
                        "mcp:search",
                    ],
                }
            ],
            "tasks": [{"id": "look", "prompt": "Look around and search."}],
        },
    )
    return plan, server


def _run_with_both_servers(
    tmp_path: Path, state: Path, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch,
    sandbox: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("SEARCH_TOKEN", TOKEN)
    plan, server = _project(tmp_path, http_server.url, sandbox)
    seen: dict[str, Any] = {}

    def while_running(request: CompletionRequest) -> Completion:
        seen["pids"] = _processes_running(server.name)
        return _call(("c4", "mcp__files__delete_all", {}))

    script = ScriptedProvider(
        [
            # a nested argument missing: caught by the schema, never sent
            _call(("c1", "mcp__files__list_dir", {"where": {"dir": "src"}})),
            _call(
                ("c2", "mcp__files__list_dir", {"where": {"dir": "src", "depth": 2.0}}),
                ("c3", "mcp__search__query", {"q": "phalanx", "limit": 2}),
            ),
            while_running,  # a tool of the server outside the agent's allow list
            "Found a.py and b.py; the search found the docs.",
        ]
    )
    ws = tmp_path / "ws"
    result = phalanx.run_sync(plan, workspace=ws, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()

    # what the model was offered: its allowed tools, the server's own input schema
    offered = {t.name: t for t in script.requests[0].tools}
    assert set(offered) == {
        "read_file",
        "mcp__files__list_dir",
        "mcp__files__write_note",
        "mcp__search__query",
    }
    assert offered["mcp__files__list_dir"].parameters["$defs"]["Where"]["required"] == [
        "dir",
        "depth",
    ]
    assert "List a directory" in offered["mcp__files__list_dir"].description

    # journaled like built-ins: tool_calls rows and events, read-only from readOnlyHint
    calls = rows(
        state,
        "SELECT tool, ok, error_code, writes, result FROM tool_calls WHERE run_id=?"
        " ORDER BY turn, idx",
        result.run_id,
    )
    assert [(r["tool"], r["ok"], r["error_code"], r["writes"]) for r in calls] == [
        ("mcp__files__list_dir", 0, "bad_arguments", 0),
        ("mcp__files__list_dir", 1, None, 0),
        ("mcp__search__query", 1, None, 1),
        ("mcp__files__delete_all", 0, "tool_not_allowed", 0),
    ]
    assert "$.where" in calls[0]["result"] and "depth" in calls[0]["result"]
    assert calls[1]["result"] == "listed src at depth 2: a.py b.py"
    assert calls[2]["result"] == "2 results for phalanx: phalanx.dev, docs"
    assert "not one of your tools" in calls[3]["result"]
    assert [e["tool"] for e in events(state, result.run_id, "tool_started")] == [
        r["tool"] for r in calls
    ]
    tool_msgs = [m.content for m in script.requests[-1].messages if m.role == "tool"]
    assert tool_msgs[0].startswith("error: bad_arguments: ")
    assert tool_msgs[3].startswith("error: tool_not_allowed: ")

    # what reached the servers: the good calls only
    log = (state / "runs" / result.run_id / "mcp-files.log").read_text()
    assert log.count("STARTED") == 1
    assert log.count("CALL list_dir src 2") == 1 and "delete_all" not in log
    assert http_server.calls == [("query", {"q": "phalanx", "limit": 2})]
    assert http_server.refused == 0

    # the stdio server ran during the run, and nothing of it is left
    assert seen["pids"], "the stdio server was not running during the run"
    assert wait_dead(seen["pids"], within=5.0) == []
    assert _processes_running(server.name) == []

    # the token never reaches the journal (the plan keeps the variable's name only)
    journal = b"".join(p.read_bytes() for p in state.glob("journal.sqlite*"))
    assert TOKEN.encode() not in journal
    assert b"SEARCH_TOKEN" in journal


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
def test_stdio_and_http_servers_in_one_run_sandboxed(
    tmp_path: Path, state: Path, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_with_both_servers(tmp_path, state, http_server, monkeypatch, sandbox="bwrap")


def test_stdio_and_http_servers_in_one_run_unsandboxed(
    tmp_path: Path, state: Path, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_with_both_servers(tmp_path, state, http_server, monkeypatch, sandbox="none")


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
def test_a_stdio_server_runs_in_the_sandbox(tmp_path: Path) -> None:
    """The server sees the workspace (writable), its folder (read-only), no home."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe.py").write_text(
        "import os\n"
        "from mcp.server.mcpserver import MCPServer\n"
        "srv = MCPServer('probe')\n"
        "@srv.tool()\n"
        "def probe(path: str) -> str:\n"
        "    try:\n"
        "        with open(path, 'a') as f:\n"
        "            f.write('x')\n"
        "        return 'wrote'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        "srv.run()\n"
    )
    secret_dir = tmp_path / "elsewhere"
    secret_dir.mkdir()
    (secret_dir / "s.txt").write_text("secret")
    ws = tmp_path / "ws"
    ws.mkdir()
    server = McpServer(name="probe", command=(sys.executable, "probe.py"))

    async def go() -> list[str]:
        hub = await McpHub.start([server], workspace=ws, base_dir=project)
        ctx = ToolContext(workspace=Workspace(ws))
        try:
            spec = hub.tools["mcp__probe__probe"]
            paths = [ws / "w.txt", project / "p.txt", secret_dir / "s.txt"]
            return [(await call_tool(spec, {"path": str(p)}, ctx)).content for p in paths]
        finally:
            await hub.aclose()

    assert asyncio.run(go()) == ["wrote", "OSError", "FileNotFoundError"]
    assert (ws / "w.txt").read_text() == "x"
    assert not (project / "p.txt").exists()
    assert (secret_dir / "s.txt").read_text() == "secret"


def test_http_server_refuses_a_wrong_token_and_the_run_says_why(
    tmp_path: Path, state: Path, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEARCH_TOKEN", "tok-wrong-0000000000")
    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            "mcp": {
                "search": {
                    "url": http_server.url,
                    "headers": {"Authorization": {"env": "SEARCH_TOKEN", "prefix": "Bearer "}},
                    "start_timeout": 10,
                }
            },
            "agents": [{"provider": "scripted", "tools": ["mcp:search/query"]}],
            "tasks": [{"id": "t", "prompt": "p"}],
        },
    )
    with pytest.raises(PlanError, match=r"mcp\.search: the http server .* did not start"):
        phalanx.run_sync(plan, custom_providers={"scripted": ScriptedProvider(["x"])})
    assert http_server.refused >= 1 and http_server.calls == []


def test_a_stdio_server_that_cannot_start_fails_the_run_before_it_starts(
    tmp_path: Path, state: Path
) -> None:
    (tmp_path / "broken.py").write_text("import sys\nsys.exit(3)\n")
    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            "commands": {"sandbox": "none"},
            "mcp": {"broken": {"command": f"{sys.executable} broken.py", "start_timeout": 10}},
            "agents": [{"provider": "scripted", "tools": ["mcp:broken"]}],
            "tasks": [{"id": "t", "prompt": "p"}],
        },
    )
    t0 = time.monotonic()
    with pytest.raises(PlanError, match=r"mcp\.broken: the stdio server .* did not start"):
        phalanx.run_sync(plan, custom_providers={"scripted": ScriptedProvider(["x"])})
    assert time.monotonic() - t0 < 15


# -- the plan format ------------------------------------------------------------------------


def _plan(mcp: dict[str, Any], tools: list[str], **extra: Any) -> Any:
    return plan_from_data(
        {
            "mcp": mcp,
            "agents": [{"provider": "sim", "tools": tools}],
            "tasks": [{"id": "t", "prompt": "p"}],
            **extra,
        }
    )


def test_plan_mcp_section_round_trips_and_is_checked() -> None:
    plan = _plan(
        {
            "files": {"command": "python3 server.py --root .", "env": {"pass": ["GH_TOKEN"]}},
            "search": {
                "url": "http://127.0.0.1:9/mcp",
                "headers": {"Authorization": {"env": "SEARCH_TOKEN", "prefix": "Bearer "}},
            },
        },
        ["read_file", "mcp:files/*", "!mcp:files/delete_*", "mcp:search/query"],
    )
    files, search = plan.mcp
    assert files.command == ("python3", "server.py", "--root", ".")
    assert files.env_pass == ("GH_TOKEN",) and files.kind == "stdio"
    assert search.kind == "http"
    assert search.headers == {"Authorization": {"env": "SEARCH_TOKEN", "prefix": "Bearer "}}
    again = plan_from_data(plan_to_dict(plan))
    assert again.mcp == plan.mcp and again.agents[0].tools == plan.agents[0].tools

    bad: list[tuple[dict[str, Any], list[str], dict[str, Any], str]] = [
        ({"x": {"command": ["a"], "url": "http://h/"}}, [], {}, "either 'command'"),
        ({"x": {}}, [], {}, "either 'command'"),
        ({"x": {"url": "ftp://h/"}}, [], {}, "must start with http"),
        ({"x": {"url": "http://h/", "cwd": "."}}, [], {}, "'cwd' is for stdio"),
        ({"x": {"command": ["a"], "headers": {"A": "b"}}}, [], {}, "'headers' are for HTTP"),
        ({"x": {"url": "http://h/", "headers": {"A": {"env": "1X"}}}}, [], {}, "not an env"),
        ({"x_y": {"command": ["a"]}}, [], {}, "MCP server name 'x_y'"),
        ({"x": {"command": ["a"]}}, ["mcp:nope/*"], {}, "names MCP server 'nope'"),
        ({"x": {"command": ["a"]}}, [], {"engine": "ray"}, "need engine: local"),
    ]
    for mcp, tools, extra, message in bad:
        with pytest.raises(PlanError, match=message):
            _plan(mcp, tools, **extra)


def test_header_values_come_from_the_environment_never_the_plan() -> None:
    server = McpServer(
        name="s",
        url="http://127.0.0.1:9/mcp",
        headers={"Authorization": {"env": "S_TOKEN", "prefix": "Bearer "}, "X-Client": "phalanx"},
    )
    assert header_values(server, {"S_TOKEN": "abcdefgh1234"}) == {
        "Authorization": "Bearer abcdefgh1234",
        "X-Client": "phalanx",
    }
    with pytest.raises(UsageError, match="S_TOKEN is not set"):
        header_values(server, {})
    literal = McpServer(name="s", url="http://h/", headers={"Authorization": "Bearer abc"})
    with pytest.raises(UsageError, match="never written in the plan"):
        header_values(literal, {})
    from phalanx.redaction import redact

    assert "abcdefgh1234" not in redact("the header was Bearer abcdefgh1234 and abcdefgh1234")


def test_nested_schema_errors_name_their_path_for_any_tool(tmp_path: Path) -> None:
    """Validation is the whole JSON Schema, for built-in style tools as for MCP ones."""
    got: list[dict[str, Any]] = []

    async def record(**arguments: Any) -> str:
        got.append(arguments)
        return "ok"

    spec = ToolSpec(
        name="plan_trip",
        description="",
        parameters={
            "type": "object",
            "properties": {
                "legs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "mode": {"enum": ["rail", "road"]},
                            "nights": {"type": "integer", "minimum": 1},
                        },
                        "required": ["city", "mode"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["legs"],
        },
        func=record,
    )
    ctx = ToolContext(workspace=Workspace(tmp_path))

    def call(arguments: object) -> str:
        return asyncio.run(call_tool(spec, arguments, ctx)).content

    good = {"legs": [{"city": "Lyon", "mode": "rail", "nights": 2.0}]}
    assert call(good) == "ok" and got == [{"legs": [{"city": "Lyon", "mode": "rail", "nights": 2}]}]
    cases = {
        "$.legs[0]": {"legs": [{"city": "Lyon"}]},
        "$.legs[1].mode": {"legs": [{"city": "A", "mode": "rail"}, {"city": "B", "mode": "air"}]},
        "$.legs[0].nights": {"legs": [{"city": "A", "mode": "rail", "nights": 0}]},
        "$.legs[0].boat": {"legs": [{"city": "A", "mode": "rail", "boat": True}]},
        "$.legs": {"legs": {"city": "A"}},
    }
    for path, arguments in cases.items():
        content = call(arguments)
        assert content.startswith("error: bad_arguments: ") and path in content, (path, content)
    assert len(got) == 1  # no bad call reached the tool


def test_mcp_servers_refuse_the_ray_engine_given_on_the_command_line(
    tmp_path: Path, state: Path
) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            "mcp": {"files": {"command": [sys.executable, "-c", "pass"]}},
            "agents": [{"provider": "scripted", "tools": ["mcp:files"]}],
            "tasks": [{"id": "t", "prompt": "p"}],
        },
    )
    with pytest.raises(PlanError, match="MCP servers need the local engine"):
        phalanx.run_sync(plan, engine="ray", custom_providers={"scripted": ScriptedProvider(["x"])})


def test_a_run_whose_mcp_server_cannot_start_ends_failed_in_the_journal(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is created before its servers start: when one does not, the run ends
    ``failed`` with the reason (never left running, shown stopped and resumable), and
    ``phalanx status`` without a run id reads it."""
    from phalanx.cli.app import main

    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            "commands": {"sandbox": "none"},
            "mcp": {"broken": {"command": ["no-such-mcp-server-xyz"]}},
            "agents": [{"provider": "sim", "tools": ["mcp:broken"]}],
            "tasks": [{"id": "t", "prompt": "p"}],
        },
    )
    assert main(["run", str(plan), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mcp.broken" in err and "not found" in err, err
    (run,) = rows(state, "SELECT run_id, status, reason, owner_pid FROM runs")
    assert run["status"] == "failed" and run["owner_pid"] is None
    assert "mcp.broken: command 'no-such-mcp-server-xyz' not found" in run["reason"]
    assert [e["status"] for e in events(state, run["run_id"], "run_finished")] == ["failed"]

    assert main(["runs", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["run_id"], listed["status"]) == (run["run_id"], "failed")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"Run {run['run_id']}" in out and "failed" in out and "stopped" not in out
    assert main(["status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "failed" and "mcp.broken" in shown["reason"]


CANARY_KEY = "sk-canary" + "7Qz2Lm9Xw4Rt8Yp3"  # key-shaped: the secret rule knows it by its form
CHATTY_SERVER = """
import os, sys
from mcp.server.mcpserver import MCPServer
srv = MCPServer("chatty")
@srv.tool()
def ping() -> str:
    print("ping with " + os.environ["CANARY_TOKEN"], file=sys.stderr, flush=True)
    return "pong"
print("STARTED token=" + os.environ["CANARY_TOKEN"] + " key=" + sys.argv[1], file=sys.stderr)
sys.stderr.write("no newline " + os.environ["CANARY_TOKEN"][:6])
sys.stderr.write(os.environ["CANARY_TOKEN"][6:] + " end\\n")  # one line in two writes
sys.stderr.flush()
if sys.argv[2] == "quit":
    sys.exit(3)
srv.run()
"""


def _chatty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, **options: Any
) -> tuple[McpServer, Path, str]:
    """The chatty stdio server (it prints a passed-through canary and a key to its stderr,
    then serves or quits), the run folder its log goes to, and the canary."""
    canary = "canary-" + secrets.token_hex(8)
    monkeypatch.setenv("CANARY_TOKEN", canary)
    (tmp_path / "chatty.py").write_text(CHATTY_SERVER)
    server = McpServer(
        name="chatty",
        command=(sys.executable, "chatty.py", CANARY_KEY, mode),
        env_pass=("CANARY_TOKEN",),
        **{"sandbox": "none", **options},
    )
    return server, tmp_path / "runs" / "r1", canary


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_stdio_servers_stderr_log_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """What a server prints to its stderr goes to the run's mcp-NAME.log through the secret
    rule: a passed-through secret variable's value and a key-shaped string never reach it."""
    if sandbox == "bwrap" and bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    server, logs, canary = _chatty(tmp_path, monkeypatch, "serve", sandbox=sandbox)

    async def go() -> str:
        hub = await McpHub.start([server], workspace=tmp_path / "ws", base_dir=tmp_path,
                                 log_dir=logs)  # fmt: skip
        try:
            spec = hub.tools["mcp__chatty__ping"]
            return (await call_tool(spec, {}, ToolContext(workspace=Workspace(tmp_path)))).content
        finally:
            await hub.aclose()

    assert asyncio.run(go()) == "pong"
    assert not [t for t in threading.enumerate() if t.name.startswith("mcp-log-")]
    log = (logs / "mcp-chatty.log").read_text()
    assert canary not in log and CANARY_KEY not in log and "sk-canary" not in log
    assert log.splitlines() == [
        "STARTED token=[redacted] key=[redacted]",
        "no newline [redacted] end",
        "ping with [redacted]",
    ]


def test_a_stdio_server_that_quits_leaves_a_redacted_log_and_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, logs, canary = _chatty(tmp_path, monkeypatch, "quit", start_timeout=10)
    with pytest.raises(UsageError) as caught:
        asyncio.run(McpHub.start([server], workspace=tmp_path, base_dir=tmp_path, log_dir=logs))
    assert "its stderr: no newline [redacted] end" in str(caught.value)
    log = (logs / "mcp-chatty.log").read_text()
    assert canary not in log and CANARY_KEY not in log
    assert log.splitlines() == [
        "STARTED token=[redacted] key=[redacted]",
        "no newline [redacted] end",
    ]

"""A canary API key set in the environment appears nowhere in the journal, logs or outputs.

A fake server on 127.0.0.1 speaks just enough of the Anthropic Messages API and of OpenAI
Chat Completions (both streamed) and misbehaves on purpose: it echoes the key it received
(``x-api-key`` / ``Authorization``) into error bodies (401, 429 with Retry-After, 500, an
error event inside a 200 stream), into the text of a stream it then cuts, into every field
of an error body, and into the text of a successful answer. Plans run through the real CLI
in subprocesses with the SDKs' debug logging on (``ANTHROPIC_LOG`` / ``OPENAI_LOG``), then
``status --json``, ``runs --json``, ``status`` and ``resume`` run over the same state dir.

Every byte of the journal (main file, -wal, -shm; and every cell of every table), every
file under the state dir, and stdout/stderr of every command are searched for the canaries.
The scenarios are grouped so that a leak points at its cause:

* ``errors``: the key inside an error's message, a cut stream's text, a stream error event;
* ``error_fields``: the key in every string field of an error body (type, code, param);
* ``answers``: the key echoed inside a successful answer (the model's own output);
* ``response_headers``: the key echoed in response headers (request-id, x-request-id), which
  the SDKs' debug logs print.

Each (group, place) test lists every leak it finds and where it is.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

A_KEY = "sk-ant-CANARY-7f3a9c1e5b2d4a60"
O_KEY = "sk-CANARY-openai-9d8c7b6a5f4e3d2c"
# the keys, plus distinctive pieces of them: a truncated or half-masked key still leaks
NEEDLES = (
    A_KEY,
    O_KEY,
    "CANARY-7f3a9c1e",
    "7f3a9c1e5b2d4a60",
    "CANARY-openai-9d8c7b6a",
    "9d8c7b6a5f4e3d2c",
)
CMD_TIMEOUT = 20  # seconds, per CLI command (each normally takes about one)

GROUPS: dict[str, tuple[str, ...]] = {
    "errors": ("ok", "e401", "e429", "e500", "cut", "sse_error"),
    "error_fields": ("ok", "fields401", "fields500", "sse_fields"),
    "answers": ("ok", "echo"),
    "response_headers": ("ok", "headers"),
}
PROVIDERS = {"a": "anthropic:claude-test", "o": "openai:gpt-test"}
# scenario -> (task state, error class) the journal must show
EXPECTED = {
    "ok": ("succeeded", None),
    "echo": ("succeeded", None),
    "headers": ("succeeded", None),
    "e401": ("failed", "auth"),
    "fields401": ("failed", "auth"),
    "e429": ("failed", "rate_limited"),
    "e500": ("failed", "server_error"),
    "fields500": ("failed", "server_error"),
    "cut": ("failed", "stream_cut"),
}
RETRIED = {"e429", "e500", "fields500", "cut"}  # retryable: both attempts reach the server
# the echoed key reached phalanx's error message and was redacted there
REDACTED = {"e401", "e429", "e500", "sse_error"}


# =========================================================================== fake server


@dataclass
class Seen:
    path: str
    key_header: str | None  # the x-api-key or else the Authorization header
    scenario: str


@dataclass
class FakeServer:
    url: str
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, scenario: str, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.scenario == scenario and s.path == path]


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def a_stream(texts: list[str]) -> list[bytes]:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in texts
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    return [sse(e) for e in events]


def o_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def o_stream(texts: list[str]) -> list[bytes]:
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    return [
        o_chunk({"role": "assistant", "content": ""}),
        *(o_chunk({"content": t}) for t in texts),
        o_chunk({}, "stop"),
        o_chunk(None, usage=usage),
        b"data: [DONE]\n\n",
    ]


def a_error(etype: str, message: str, *, everywhere: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": everywhere or etype, "message": message}
    body: dict[str, Any] = {"type": "error", "error": err, "request_id": "req_1"}
    if everywhere:
        err["details"] = {"error_code": everywhere}
        body["request_id"] = everywhere
    return body


def o_error(etype: str, code: str | None, message: str, *, everywhere: str | None = None) -> Any:
    return {
        "error": {
            "message": message,
            "type": everywhere or etype,
            "param": everywhere,
            "code": everywhere or code,
        }
    }


def echo_headers(echo: str) -> dict[str, str]:
    return {"request-id": echo, "x-request-id": echo, "x-echo": echo}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any  # the ThreadingHTTPServer, carrying ``fake``

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        found = re.search(rb"SCENARIO=([a-z0-9_]+)", body)
        scenario = found.group(1).decode() if found else "?"
        anthropic = self.path.endswith("/v1/messages")
        # the Anthropic SDK here sends its key as a Bearer token; older ones used x-api-key
        header = "x-api-key" if self.headers.get("x-api-key") else "authorization"
        received = self.headers.get(header)
        fake: FakeServer = self.server.fake
        with fake.lock:
            fake.seen.append(Seen(self.path, received, scenario))
        if not (anthropic or self.path.endswith("/v1/chat/completions")):
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        echo = f"{header}: {received}"  # the key as the server received it
        try:
            (self.anthropic if anthropic else self.openai)(scenario, echo)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- the two dialects ------------------------------------------------------------------
    def anthropic(self, scenario: str, echo: str) -> None:
        if scenario == "ok":
            self.stream(a_stream(["A fine ", "answer."]))
        elif scenario == "echo":
            self.stream(a_stream(["You sent me ", echo, " - keep it safe."]))
        elif scenario == "headers":  # the SDK's debug log prints response headers
            self.stream(a_stream(["A fine answer."]), headers=echo_headers(echo))
        elif scenario == "e401":
            self.send_json(401, a_error("authentication_error", f"invalid {echo}"))
        elif scenario == "fields401":
            self.send_json(401, a_error("authentication_error", echo, everywhere=echo))
        elif scenario == "e429":
            body = a_error("rate_limit_error", f"slow down, {echo}")
            self.send_json(429, body, {"retry-after": "0.05"})
        elif scenario == "e500":
            self.send_json(500, a_error("api_error", f"internal error handling {echo}"))
        elif scenario == "fields500":
            self.send_json(500, a_error("api_error", echo, everywhere=echo))
        elif scenario == "cut":
            self.stream(a_stream(["partial ", echo, " and then..."])[:4], cut=True)
        elif scenario == "sse_error":
            error = a_error("overloaded_error", f"overloaded while serving {echo}")
            self.stream([*a_stream(["half"])[:3], sse(error)])
        elif scenario == "sse_fields":
            self.stream([*a_stream(["half"])[:3], sse(a_error("x", echo, everywhere=echo))])
        else:
            self.send_json(400, a_error("invalid_request_error", "unknown scenario"))

    def openai(self, scenario: str, echo: str) -> None:
        if scenario == "ok":
            self.stream(o_stream(["A fine ", "answer."]))
        elif scenario == "echo":
            self.stream(o_stream(["You sent me ", echo, " - keep it safe."]))
        elif scenario == "headers":  # the SDK's debug log prints x-request-id
            self.stream(o_stream(["A fine answer."]), headers=echo_headers(echo))
        elif scenario == "e401":
            body = o_error("invalid_request_error", "invalid_api_key", f"Incorrect {echo}")
            self.send_json(401, body)
        elif scenario == "fields401":
            body = o_error("invalid_request_error", "invalid_api_key", echo, everywhere=echo)
            self.send_json(401, body)
        elif scenario == "e429":
            body = o_error("requests", "rate_limit_exceeded", f"slow down, {echo}")
            self.send_json(429, body, {"retry-after": "0.05"})
        elif scenario == "e500":
            self.send_json(500, o_error("server_error", None, f"internal error with {echo}"))
        elif scenario == "fields500":
            self.send_json(500, o_error("server_error", None, echo, everywhere=echo))
        elif scenario == "cut":
            self.stream(o_stream(["partial ", echo, " and then..."])[:3], cut=True)
        elif scenario == "sse_error":
            error = o_error("server_error", "server_error", f"failed serving {echo}")
            self.stream([*o_stream(["half"])[:2], f"data: {json.dumps(error)}\n\n".encode()])
        elif scenario == "sse_fields":
            error = o_error("server_error", None, echo, everywhere=echo)
            self.stream([*o_stream(["half"])[:2], f"data: {json.dumps(error)}\n\n".encode()])
        else:
            self.send_json(400, o_error("invalid_request_error", None, "unknown scenario"))

    # -- wire helpers ----------------------------------------------------------------------
    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def stream(
        self, pieces: list[bytes], *, cut: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        """A chunked event stream; ``cut`` sends half of one more piece and drops the line."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if cut:
            pieces = [*pieces, pieces[-1][: len(pieces[-1]) // 2]]
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        if cut:  # no terminating chunk: the client sees the connection drop mid-body
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up is part of the test, not noise


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    httpd = _Server(("127.0.0.1", 0), Handler)
    fake = FakeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# =========================================================================== the runs


@dataclass
class Command:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def name(self) -> str:
        return " ".join(self.argv)


@dataclass
class GroupRun:
    group: str
    run_id: str
    state: Path
    commands: list[Command]


def task_id(provider: str, scenario: str) -> str:
    return f"{provider}-{scenario}"


def plan_for(group: str, server: FakeServer) -> dict[str, Any]:
    tasks = [
        {
            "id": task_id(p, s),
            "prompt": f"Misbehave as told. SCENARIO={s}",
            "role": f"{p}-agent",
            "max_attempts": 2,
        }
        for s in GROUPS[group]
        for p in PROVIDERS
    ]
    return {
        "name": f"secrets-{group}",
        "providers": {
            "anthropic": {"base_url": server.url, "timeout": 5},
            "openai": {"base_url": f"{server.url}/v1", "timeout": 5},
        },
        "retry": {"base_seconds": 0.01, "cap_seconds": 0.05},
        "agents": [
            {"role": f"{p}-agent", "provider": name, "count": 2} for p, name in PROVIDERS.items()
        ],
        "tasks": tasks,
    }


def cli_env() -> dict[str, str]:
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "PHALANX_")) and k.lower() not in proxies
    }
    env.update(
        ANTHROPIC_API_KEY=A_KEY,
        OPENAI_API_KEY=O_KEY,
        ANTHROPIC_LOG="debug",  # the SDKs' own debug logging, to stderr
        OPENAI_LOG="debug",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def phalanx(state: Path, *args: str) -> Command:
    argv = [sys.executable, "-m", "phalanx", "--state-dir", str(state), *args]
    p = subprocess.run(
        argv,
        env=cli_env(),
        cwd=state.parent,
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        check=False,
    )
    return Command(list(args), p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def runs(server: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, GroupRun]:
    out = {}
    for group in GROUPS:
        base = tmp_path_factory.mktemp(group)
        plan = base / "plan.yaml"
        plan.write_text(yaml.safe_dump(plan_for(group, server), sort_keys=False))
        state, run_id = base / "state", f"secrets-{group}"
        commands = [phalanx(state, "run", str(plan), "--no-tui", "--run-id", run_id)]
        for args in (
            ("status", run_id, "--json"),
            ("runs", "--json"),
            ("status", run_id),
            ("resume", run_id, "--no-tui"),
        ):
            commands.append(phalanx(state, *args))
        out[group] = GroupRun(group, run_id, state, commands)
    return out


# =========================================================================== the search


def hits(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [n for n in NEEDLES if n.encode() in text]
    return [n for n in NEEDLES if n in text]


def around(text: str, needle: str, width: int = 90) -> str:
    i = text.find(needle)
    return repr(text[max(0, i - width) : i + len(needle) + 20])


def journal_files(state: Path) -> list[Path]:
    return sorted(state.glob("journal.sqlite*"))


def leaks_in_journal_bytes(state: Path) -> list[str]:
    return [f"{f.name}: {n}" for f in journal_files(state) for n in hits(f.read_bytes())]


def leaks_in_journal_rows(state: Path) -> list[str]:
    found = []
    db = sqlite3.connect(f"file:{state / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = db.execute(f'SELECT * FROM "{table}"')  # names from the schema
            cols = [d[0] for d in cur.description]
            for i, row in enumerate(cur):
                for col, cell in zip(cols, row, strict=True):
                    if isinstance(cell, bytes):
                        cell = cell.decode("utf-8", "replace")
                    if isinstance(cell, str):
                        found += [
                            f"{table}[{i}].{col} ({row[1] if len(row) > 1 else ''}): "
                            f"{around(cell, n)}"
                            for n in hits(cell)[:1]
                        ]
        dump = "\n".join(db.iterdump())
        found += [f"sqlite dump: {around(dump, n)}" for n in hits(dump)[:1]]
    finally:
        db.close()
    return found


def leaks_in_files(state: Path) -> list[str]:
    found = []
    for f in sorted(p for p in state.rglob("*") if p.is_file()):
        if f.name.startswith("journal.sqlite"):
            continue  # searched on its own
        data = f.read_bytes()
        found += [
            f"{f.relative_to(state)}: {around(data.decode('utf-8', 'replace'), n)}"
            for n in hits(data)[:1]
        ]
    return found


def leaks_in_commands(commands: list[Command]) -> list[str]:
    """Every line of a command's stdout or stderr that holds a canary, whole."""
    found = []
    for c in commands:
        for stream, text in (("stdout", c.stdout), ("stderr", c.stderr)):
            found += [f"`{c.name}` {stream}: {line!r}" for line in text.splitlines() if hits(line)]
    return found


SINKS = {
    "journal_file_bytes": lambda r: leaks_in_journal_bytes(r.state),
    "journal_rows": lambda r: leaks_in_journal_rows(r.state),
    "output_files": lambda r: leaks_in_files(r.state),
    "command_output": lambda r: leaks_in_commands(r.commands),
}


# =========================================================================== the tests


@pytest.mark.parametrize("sink", list(SINKS))
@pytest.mark.parametrize("group", list(GROUPS))
def test_canary_key_appears_nowhere(runs: dict[str, GroupRun], group: str, sink: str) -> None:
    r = runs[group]
    assert (r.state / "journal.sqlite").is_file(), f"no journal: {r.commands[0].stderr[-2000:]}"
    leaks = SINKS[sink](r)
    assert not leaks, f"the API key leaked ({group} / {sink}):\n" + "\n".join(leaks)


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_runs_really_happened(
    runs: dict[str, GroupRun], server: FakeServer, group: str
) -> None:
    """Guards against a vacuous pass: requests carried the key, the journal holds the
    outcomes, the outputs exist, every command worked and the SDK debug logs were on."""
    r = runs[group]
    run, status_json, runs_json, status_text, resume = r.commands
    failing = any(EXPECTED.get(s, ("failed",))[0] == "failed" for s in GROUPS[group])
    assert run.rc == int(failing), f"rc {run.rc}\n{run.stdout}\n{run.stderr}"
    for scenario in GROUPS[group]:
        for p, path in (("a", "/v1/messages"), ("o", "/v1/chat/completions")):
            seen = server.requests(scenario, path)
            assert seen, f"{scenario} never reached {path}"
            want = A_KEY if p == "a" else O_KEY
            assert all(want in (s.key_header or "") for s in seen), seen
            if scenario in RETRIED:
                assert len(seen) >= 2 * len([g for g in GROUPS.values() if scenario in g])

    db = sqlite3.connect(f"file:{r.state / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        rows, errors = {}, {}
        for tid, state, cls, error in db.execute(
            "SELECT task_id, state, error_class, error FROM tasks WHERE run_id = ?", (r.run_id,)
        ):
            rows[tid], errors[tid] = (state, cls), error or ""
        results = {tid for (tid,) in db.execute("SELECT task_id FROM results")}
        attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    finally:
        db.close()
    assert attempts >= len(rows)
    for scenario in GROUPS[group]:
        for p in PROVIDERS:
            tid = task_id(p, scenario)
            assert tid in rows, tid
            if scenario in EXPECTED:
                assert rows[tid] == EXPECTED[scenario], (tid, rows[tid])
            else:
                assert rows[tid][0] == "failed", (tid, rows[tid])
            if scenario in REDACTED:
                assert "[redacted]" in errors[tid], (tid, errors[tid])
            if rows[tid][0] == "succeeded":
                assert tid in results
                outputs = r.state / "runs" / r.run_id / "outputs"
                assert any(outputs.glob(f"{tid}.*")), f"no output file for {tid}"

    assert status_json.rc == 0, status_json.stderr
    snap = json.loads(status_json.stdout)
    assert snap["run_id"] == r.run_id
    assert snap["total"] == len(rows)
    assert runs_json.rc == 0, runs_json.stderr
    assert [x["run_id"] for x in json.loads(runs_json.stdout)] == [r.run_id]
    assert status_text.rc == 0 and r.run_id in status_text.stdout, status_text.stderr
    assert resume.rc in (0, 1), f"rc {resume.rc}\n{resume.stdout}\n{resume.stderr}"
    # the SDKs' debug logging really was on, so "no key in stderr" means something
    assert "anthropic._base_client" in run.stderr, run.stderr[-2000:]
    assert "openai._base_client" in run.stderr, run.stderr[-2000:]

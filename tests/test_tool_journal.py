"""The tool journal, resumable agent loops and in-doubt tool calls (issue 18, item 2).

Every tool call is journaled when it starts and when it ends; the start of a tool that
writes is committed before the tool runs. ``phalanx run`` in a subprocess, whose agent
(an OpenAI-compatible model on 127.0.0.1, scripted by the conversation it is sent) runs
a counted command and then one that blocks, is killed with SIGKILL during the blocking
call; ``phalanx resume`` then continues the loop from the journal: the completed calls are
replayed to the model, never run again (their counters prove it), and the call that was
in flight is in doubt, handled per ``retry.on_in_doubt`` (one test per mode). The journal
is read with sqlite3 directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import events, journal_sql, rewind_journal, rows, wait_dead, write_plan
from fakeserver import _o_chunk
from phalanx import AgentSpec, Plan, Task
from phalanx._util import kill_group
from phalanx.agents.tools import BUILTIN_TOOLS, ToolContext, tool
from phalanx.agents.workspace import Workspace
from phalanx.cli.app import main
from phalanx.cost import Usage
from phalanx.events import ToolInDoubt
from phalanx.exceptions import PlanError
from phalanx.ids import AgentName
from phalanx.journal import SCHEMA_VERSION, Journal, RecordedCall, RecordedLoop, RecordedTurn
from phalanx.plan import RetryConfig, load_plan
from phalanx.plan.file import plan_to_dict
from phalanx.providers.base import Completion, ToolCall
from phalanx.runtime.executor import IN_DOUBT_NOTE, AgentRunner, Attempt, digest
from phalanx.status.snapshot import StatusTracker
from phalanx.status.text import swarm_lines
from phalanx.testing import ScriptedProvider

START_TIMEOUT = 30.0  # until the blocking call is under way (interpreter start-up included)
RUN_TIMEOUT = 60.0  # a whole resume
SLEEP = "47.25"  # the blocking step's sleep: a duration no other process uses

STEP = f"""#!/bin/sh
mktemp -p . "ran-$1.XXXXXX" > /dev/null
if [ "$1" = two ] && [ ! -e slept-two ]; then
    touch slept-two
    sleep {SLEEP}
fi
echo "step $1 done"
"""


# -- a model on 127.0.0.1 that follows a script by the conversation it is sent ----------


def _call(cid: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def _script(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The next answer, from the tool results seen: turn 1 lists the files and runs step
    one, turn 2 runs step two (which blocks the first time), then the final answer."""
    done = sum(1 for m in messages if m.get("role") == "tool")
    if done == 0:
        return "", [
            _call("c1", "list_files", {"path": "."}),
            _call("c2", "run_command", {"argv": ["./step.sh", "one"]}),
        ]
    if done == 2:
        return "", [_call("c3", "run_command", {"argv": ["./step.sh", "two"]})]
    return "all steps done", []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        messages = body.get("messages") or []
        with self.server.lock:
            self.server.requests.append(messages)
        text, calls = _script(messages)
        pieces = [_o_chunk({"role": "assistant", "content": text})]
        for i, c in enumerate(calls):
            fn = {
                "name": c["function"]["name"],
                "arguments": json.dumps(c["function"]["arguments"]),
            }
            pieces.append(
                _o_chunk(
                    {
                        "tool_calls": [
                            {"index": i, "id": c["id"], "type": "function", "function": fn}
                        ]
                    }
                )
            )
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        pieces += [
            _o_chunk({}, "tool_calls" if calls else "stop"),
            _o_chunk(None, usage=usage),
            b"data: [DONE]\n\n",
        ]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[list[dict[str, Any]]]
    lock: threading.Lock


@pytest.fixture
def model() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests, srv.lock = [], threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


# -- the run, killed during the blocking call ---------------------------------------------


def _plan(tmp_path: Path, srv: _Server, on_in_doubt: str) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "step.sh").write_text(STEP)
    (ws / "step.sh").chmod(0o755)
    port = srv.server_address[1]
    return write_plan(
        tmp_path / "plan.yaml",
        {
            "name": "tool-journal",
            "provider": "openai:gpt-fake",
            "providers": {"openai": {"base_url": f"http://127.0.0.1:{port}/v1"}},
            "retry": {"on_in_doubt": on_in_doubt, "base_seconds": 0.01, "cap_seconds": 0.02},
            "commands": {"allow": ["./step.sh"], "timeout": 120},
            "workspace": "ws",
            "agents": [{"name": "Ada", "role": "coder", "tools": ["list_files", "run_command"]}],
            "tasks": [{"id": "t", "prompt": "run the steps"}],
        },
    )


def _cli(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx", "--state-dir", str(state), *args]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OPENAI_API_KEY": "dummy-key-for-a-local-model"}


def _sleepers() -> list[int]:
    """Processes running the blocking step's sleep (its unique duration)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == f"sleep\0{SLEEP}\0".encode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _in_flight(state: Path) -> bool:
    """The journal holds the blocking call's start and no result (read with sqlite3)."""
    path = state / "journal.sqlite"
    if not path.exists():
        return False
    db = sqlite3.connect(path, timeout=5)
    try:
        found = db.execute(
            "SELECT 1 FROM tool_calls WHERE turn = 2 AND tool = 'run_command'"
            " AND finished_at IS NULL"
        ).fetchall()
    except sqlite3.OperationalError:  # the tables are not made yet
        return False
    finally:
        db.close()
    return bool(found)


def _killed_during_step_two(tmp_path: Path, state: Path, plan: Path, run_id: str) -> None:
    """``phalanx run`` until step two sleeps (its start journaled), then SIGKILL."""
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _cli(state, "run", str(plan), "-q", "--run-id", run_id),
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (_in_flight(state) and (tmp_path / "ws" / "slept-two").exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                said = log.read_text(errors="replace")[-1500:]
                if proc.poll() is not None:  # the run ended: say why its attempts failed
                    said += str([tuple(r) for r in rows(state, "SELECT error FROM attempts")])
                raise AssertionError(f"step two never started (rc={proc.poll()}): {said}")
            time.sleep(0.02)
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert wait_dead([proc.pid]) == []
    assert wait_dead(_sleepers(), within=5.0) == []  # the sandbox died with its parent


def _resume(state: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli(state, "resume", run_id, "-q"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        start_new_session=True,
    )


def _ran(tmp_path: Path, step: str) -> int:
    """How many times step ``step`` ran (each run leaves one ``ran-STEP.*`` file)."""
    return len(list((tmp_path / "ws").glob(f"ran-{step}.*")))


def _interrupted(tmp_path: Path, state: Path, model: _Server, mode: str) -> str:
    """The shared first half: a run killed during step two, its journal checked."""
    run_id = f"tj-{mode}"
    _killed_during_step_two(tmp_path, state, _plan(tmp_path, model, mode), run_id)
    assert (_ran(tmp_path, "one"), _ran(tmp_path, "two")) == (1, 1)
    calls = rows(state, "SELECT * FROM tool_calls WHERE run_id=? ORDER BY turn, idx", run_id)
    seen = [
        (c["turn"], c["idx"], c["tool"], c["writes"], c["finished_at"] is not None) for c in calls
    ]
    assert seen == [
        (1, 0, "list_files", 0, True),
        (1, 1, "run_command", 1, True),
        (2, 0, "run_command", 1, False),  # started, committed, no result: in doubt
    ]
    assert calls[1]["ok"] == 1 and "step one done" in calls[1]["result"]
    assert len(calls[1]["result_digest"]) == 16 and calls[1]["duration"] > 0
    assert all(len(c["args_digest"]) == 16 for c in calls)
    turns = rows(state, "SELECT turn, calls_json FROM agent_turns WHERE run_id=?", run_id)
    assert [t["turn"] for t in turns] == [1, 2]
    assert json.loads(turns[1]["calls_json"])[0]["arguments"] == {"argv": ["./step.sh", "two"]}
    model.requests.clear()
    return run_id


def _resumed_requests(model: _Server) -> list[list[dict[str, Any]]]:
    return list(model.requests)


def _tool_messages(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["tool_call_id"], m["content"]) for m in messages if m.get("role") == "tool"]


# -- one test per mode -------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_ask_resumes_the_loop_and_tells_the_model_the_call_is_in_doubt(
    tmp_path: Path, state: Path, model: _Server, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = _interrupted(tmp_path, state, model, "ask")
    done = _resume(state, run_id)
    assert done.returncode == 0, done.stderr[-2000:]

    # nothing ran again: step one once, step two once (the in-doubt call is not re-run)
    assert (_ran(tmp_path, "one"), _ran(tmp_path, "two")) == (1, 1)
    # the resumed model got the recorded results and the in-doubt note, and answered
    first = model.requests[0]
    results = _tool_messages(first)
    assert [cid for cid, _ in results] == ["c1", "c2", "c3"]
    assert "step.sh" in results[0][1] and "step one done" in results[1][1]
    assert results[2][1] == IN_DOUBT_NOTE.format(tool="run_command")
    assert len(model.requests) == 1  # one new model call: the final answer

    doubts = events(state, run_id, "tool_in_doubt")
    assert [(d["tool"], d["turn"], d["call_id"], d["action"]) for d in doubts] == [
        ("run_command", 2, "c3", "ask")
    ]
    resumed = events(state, run_id, "loop_resumed")
    assert [(r["turns"], r["results"], r["in_doubt"]) for r in resumed] == [(2, 2, 1)]
    attempts = rows(state, "SELECT attempt_id, outcome FROM attempts WHERE run_id=?", run_id)
    assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]
    assert rows(state, "SELECT output FROM results WHERE run_id=?", run_id)[0][0] == (
        "all steps done"
    )
    # the resumed attempt's journal: the replayed calls (copied) and the in-doubt answer
    new = attempts[1]["attempt_id"]
    calls = rows(
        state, "SELECT * FROM tool_calls WHERE run_id=? AND attempt_id=? ORDER BY turn, idx",
        run_id, new,
    )  # fmt: skip
    assert [(c["turn"], c["from_attempt"], c["error_code"]) for c in calls] == [
        (1, attempts[0]["attempt_id"], None),
        (1, attempts[0]["attempt_id"], None),
        (2, attempts[0]["attempt_id"], "in_doubt"),
    ]

    # status shows the in-doubt call: --json and the text view
    capsys.readouterr()
    assert main(["--state-dir", str(state), "status", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(d["tool"], d["agent"], d["task"], d["action"]) for d in shown["in_doubt"]] == [
        ("run_command", "Ada", "t", "ask")
    ]
    assert main(["--state-dir", str(state), "status", run_id]) == 0
    out = capsys.readouterr().out
    assert "In doubt: 1 tool call(s) at resume: run_command on Ada (task t, call 2)" in out


@pytest.mark.timeout(120)
def test_rerun_runs_the_in_doubt_call_again_and_nothing_else(
    tmp_path: Path, state: Path, model: _Server
) -> None:
    run_id = _interrupted(tmp_path, state, model, "rerun")
    done = _resume(state, run_id)
    assert done.returncode == 0, done.stderr[-2000:]

    # step one still once; step two twice: the in-doubt call ran again (it now returns)
    assert (_ran(tmp_path, "one"), _ran(tmp_path, "two")) == (1, 2)
    results = _tool_messages(model.requests[0])
    assert [cid for cid, _ in results] == ["c1", "c2", "c3"]
    assert "step two done" in results[2][1]
    doubts = events(state, run_id, "tool_in_doubt")
    assert [(d["tool"], d["action"]) for d in doubts] == [("run_command", "rerun")]
    assert [
        a["outcome"] for a in rows(state, "SELECT outcome FROM attempts WHERE run_id=?", run_id)
    ] == [
        "lost",
        "succeeded",
    ]
    rerun = rows(
        state,
        "SELECT * FROM tool_calls WHERE run_id=? AND turn=2 AND finished_at IS NOT NULL",
        run_id,
    )
    assert len(rerun) == 1 and rerun[0]["from_attempt"] is None and rerun[0]["ok"] == 1


@pytest.mark.timeout(120)
def test_fail_fails_the_attempt_naming_the_call_and_runs_nothing(
    tmp_path: Path, state: Path, model: _Server
) -> None:
    run_id = _interrupted(tmp_path, state, model, "fail")
    done = _resume(state, run_id)
    assert done.returncode != 0

    assert (_ran(tmp_path, "one"), _ran(tmp_path, "two")) == (1, 1)  # nothing ran again
    assert model.requests == []  # and the model was not called
    doubts = events(state, run_id, "tool_in_doubt")
    assert [(d["tool"], d["action"]) for d in doubts] == [("run_command", "fail")]
    task = rows(state, "SELECT state, error_class, error FROM tasks WHERE run_id=?", run_id)[0]
    assert (task["state"], task["error_class"]) == ("failed", "in_doubt")
    assert "tool call run_command (call c3 of model call 2" in task["error"]
    assert "retry.on_in_doubt is fail" in task["error"]
    # not retried as a fresh loop: that would run the steps again
    attempts = rows(state, "SELECT outcome FROM attempts WHERE run_id=?", run_id)
    assert [a["outcome"] for a in attempts] == ["lost", "failed"]


# -- the start of a writing tool is committed before it runs --------------------------------


def _journal_rows(state: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows read through a connection of their own: what is committed, nothing buffered."""
    db = sqlite3.connect(state / "journal.sqlite", timeout=5)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_writing_tools_start_is_committed_before_it_runs(state: Path, tmp_path: Path) -> None:
    seen: dict[str, list[tuple[Any, ...]]] = {}

    @tool(read_only=True)
    def peek(n: int) -> str:
        """Look.

        Args:
            n: the step
        """
        seen["peek"] = _journal_rows(state, "SELECT tool FROM tool_calls")
        return "looked"

    @tool
    def poke(n: int) -> str:
        """Change something.

        Args:
            n: the step
        """
        seen["poke"] = _journal_rows(
            state, "SELECT tool, turn, finished_at IS NULL FROM tool_calls ORDER BY turn"
        )
        seen["turns"] = _journal_rows(state, "SELECT turn FROM agent_turns ORDER BY turn")
        return "changed"

    script = ScriptedProvider(
        [_completion(("peek", "p1", {"n": 1})), _completion(("poke", "p2", {"n": 2})), "done"]
    )
    plan = Plan.build(
        agents=[AgentSpec(name=AgentName("Ada"), provider="scripted", tools=("peek", "poke"))],
        tasks=[Task(id="t", prompt="x")],
    )
    result = asyncio.run(
        phalanx.run(
            plan,
            workspace=tmp_path / "ws",
            tools=[peek, poke],
            custom_providers={"scripted": script},
            flush_interval=3600,  # no periodic flush: only the commit before a write
        )
    )
    assert result.status == "succeeded", result.summary()
    assert seen["peek"] == []  # a read-only tool's start waits for the next flush
    assert seen["poke"] == [("peek", 1, 0), ("poke", 2, 1)]  # its own start, no result yet
    assert seen["turns"] == [(1,), (2,)]
    calls = rows(state, "SELECT tool, ok, result, writes FROM tool_calls ORDER BY turn")
    assert [tuple(c) for c in calls] == [("peek", 1, "looked", 0), ("poke", 1, "changed", 1)]
    started = events(state, result.run_id, "tool_started")
    assert [(e["tool"], e["writes"], e["call_id"]) for e in started] == [
        ("peek", False, "p1"),
        ("poke", True, "p2"),
    ]
    ended = events(state, result.run_id, "tool_called")
    assert all("content" not in e and e["duration"] >= 0 for e in ended)  # text in the table
    assert ended[1]["result_digest"] == digest("changed")


def _completion(*calls: tuple[str, str, dict[str, Any]], text: str = "") -> Completion:
    return Completion(
        text=text,
        stop_reason="tool_use",
        usage=Usage(input_tokens=10, output_tokens=5),
        tool_calls=tuple(ToolCall(id=cid, name=n, arguments=a) for n, cid, a in calls),
    )


# -- what is stored: redacted ---------------------------------------------------------------


def test_turns_and_results_are_stored_redacted(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "canary-value-0123456789abcdef"
    monkeypatch.setenv("SERVICE_API_KEY", canary)
    ws = tmp_path / "ws"
    script = ScriptedProvider(
        [
            _completion(
                ("write_file", "w1", {"path": "k.txt", "content": f"key={canary}"}),
                text=f"writing {canary}",
            ),
            _completion(("read_file", "r1", {"path": "k.txt"})),
            "done",
        ]
    )
    plan = Plan.build(
        agents=[
            AgentSpec(name=AgentName("Ada"), provider="scripted", tools=("write_file", "read_file"))
        ],
        tasks=[Task(id="t", prompt="x")],
    )
    result = phalanx.run_sync(plan, workspace=ws, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    assert (ws / "k.txt").read_text() == f"key={canary}"  # the tool got the real value
    dump = "\n".join(
        str(tuple(r))
        for t in ("agent_turns", "tool_calls")
        for r in rows(state, f"SELECT * FROM {t}")
    )
    assert canary not in dump and "[redacted]" in dump
    assert rows(state, "SELECT count(*) FROM events WHERE data LIKE ?", f"%{canary}%")[0][0] == 0


# -- resuming a recorded loop, in process ---------------------------------------------------


def _loop(*calls: RecordedCall, turn: int = 1) -> RecordedLoop:
    return RecordedLoop(
        task_id="t",
        attempt_id=7,
        agent="Ada",
        turns=(RecordedTurn(turn=turn, text="on it", calls=calls),),
    )


def _runner(
    tmp_path: Path, script: ScriptedProvider, mode: str, counted: dict[str, int]
) -> AgentRunner:
    def counter(name: str, read_only: bool) -> Any:
        def run(n: int) -> str:
            counted[name] = counted.get(name, 0) + 1
            return f"{name} {n}"

        run.__doc__ = "Count.\n\nArgs:\n    n: the step\n"
        return tool(name=name, read_only=read_only)(run)

    tools = {t.name: t for t in (counter("look", True), counter("change", False))}
    return AgentRunner(
        AgentSpec(name=AgentName("Ada"), tools=tuple(tools)),
        script,
        tools=tools,
        tool_context=ToolContext(workspace=Workspace(tmp_path)),
        retry=RetryConfig(on_in_doubt=mode),  # type: ignore[arg-type]
    )


def _attempt(loop: RecordedLoop) -> Attempt:
    return Attempt(
        run_id="r", attempt_id=8, attempt_no=1, task=Task(id="t", prompt="x"), agent="Ada",
        resume=loop,
    )  # fmt: skip


def _recorded(index: int, cid: str, name: str, state: str, result: str = "") -> RecordedCall:
    return RecordedCall(
        index=index,
        call_id=cid,
        tool=name,
        arguments={"n": index},
        state=state,
        ok=state == "done",
        result=result,
        writes=name != "look",
    )


@pytest.mark.parametrize("mode", ["ask", "rerun", "fail"])
def test_a_read_only_call_in_doubt_is_run_again_whatever_the_mode(
    tmp_path: Path, mode: str
) -> None:
    counted: dict[str, int] = {}
    script = ScriptedProvider(["ok"])
    loop = _loop(
        _recorded(0, "a", "change", "done", "change 0"), _recorded(1, "b", "look", "in_doubt")
    )
    out = asyncio.run(_runner(tmp_path, script, mode, counted).run(_attempt(loop)))
    assert out.ok and out.output == "ok"
    assert counted == {"look": 1}  # the done call is replayed, the read-only one re-run
    sent = script.requests[0].messages
    assert [(m.role, m.content) for m in sent[2:]] == [
        ("assistant", "on it"),
        ("tool", "change 0"),
        ("tool", "look 1"),
    ]
    assert [c.id for c in sent[2].tool_calls] == ["a", "b"]


def test_calls_that_never_started_run_and_turns_continue_their_numbering(
    tmp_path: Path,
) -> None:
    counted: dict[str, int] = {}
    script = ScriptedProvider([_completion(("look", "d", {"n": 9})), "ok"])
    loop = _loop(
        _recorded(0, "a", "change", "in_doubt"),
        _recorded(1, "b", "change", "not_started"),
        _recorded(2, "c", "look", "not_started"),
        turn=3,
    )
    runner = _runner(tmp_path, script, "ask", counted)
    out = asyncio.run(runner.run(_attempt(loop)))
    assert out.ok and counted == {"change": 1, "look": 2}  # b, c, then the new call d
    sent = script.requests[0].messages
    assert [m.content for m in sent[3:]] == [
        IN_DOUBT_NOTE.format(tool="change"),
        "change 1",
        "look 2",
    ]
    assert out.turns == 5  # the replayed turn was call 3; then calls 4 and 5


def test_in_doubt_events_fold_into_status() -> None:
    tracker = StatusTracker()
    tracker.emit(
        ToolInDoubt(
            ts=1.0, task_id="t", attempt_id=2, agent="Ada", from_attempt=1,
            tool="run_command", turn=4, call_id="c9", action="fail",
        )
    )  # fmt: skip
    snap = tracker.snapshot()
    assert snap.to_dict()["in_doubt"] == [
        {
            "task": "t", "attempt": 2, "from_attempt": 1, "agent": "Ada",
            "tool": "run_command", "call_id": "c9", "turn": 4, "action": "fail",
        }
    ]  # fmt: skip
    assert any("In doubt: 1 tool call(s)" in line for line in swarm_lines(snap))
    assert snap.alerts[-1].startswith("in doubt: run_command on Ada (task t, call 4)")


# -- the plan and the journal's schema ------------------------------------------------------


def test_on_in_doubt_loads_defaults_to_ask_and_refuses_others(tmp_path: Path) -> None:
    base = {"agents": [{"name": "Ada"}], "tasks": [{"id": "t", "prompt": "x"}]}
    assert load_plan(write_plan(tmp_path / "a.yaml", base)).retry.on_in_doubt == "ask"
    plan = load_plan(write_plan(tmp_path / "b.yaml", {**base, "retry": {"on_in_doubt": "fail"}}))
    assert plan.retry.on_in_doubt == "fail"
    assert Plan.from_dict(plan_to_dict(plan)).retry.on_in_doubt == "fail"
    with pytest.raises(PlanError, match="on_in_doubt"):
        load_plan(write_plan(tmp_path / "c.yaml", {**base, "retry": {"on_in_doubt": "maybe"}}))
    with pytest.raises(PlanError, match=r"retry\.on_in_doubt"):
        RetryConfig(on_in_doubt="maybe")  # type: ignore[arg-type]


def test_a_version_2_journal_opens_and_gains_the_tool_tables(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    rewind_journal(path, "2", "DROP TABLE agent_turns", "DROP TABLE tool_calls")
    journal = Journal(path)
    try:
        assert journal.tool_calls("none") == []
        assert journal.interrupted_loops("none") == {}
    finally:
        journal.close()
    (version,) = journal_sql(path, "SELECT value FROM meta WHERE key = 'schema'")
    assert version == SCHEMA_VERSION == "4"


def test_the_built_in_read_only_tools() -> None:
    assert {n for n, t in BUILTIN_TOOLS.items() if t.read_only} == {
        "read_file",
        "list_files",
        "search",
    }

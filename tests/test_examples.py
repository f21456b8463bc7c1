"""Every shipped example runs as its comments say (issue 21, item 7).

Each is executed the way a user would run it (the CLI in a subprocess, or the script with
Python), from a copy made by ``phalanx init --example NAME``. Models are local stand-ins:
the real-provider plans talk to tests/fakeserver.py (Anthropic and OpenAI wire formats) with
a fake key; the tools and MCP examples to a scripted OpenAI-compatible server below, which
answers each task with the tool calls a model would make. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fakeserver import FakeProviderServer
from phalanx.agents.sandbox import bwrap_path
from phalanx.agents.spec import AgentSpec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "src" / "phalanx" / "examples"
SRC = ROOT / "src"
RUN_TIMEOUT = 120  # seconds for one example run (the Ray one starts a local Ray)
SHIPPED = [
    "anthropic",
    "evals",
    "feature-team",
    "llama-server",
    "mcp",
    "openai",
    "python_api",
    "ray",
    "tools-and-hooks",
]


def env_for(state: Path, **extra: str) -> dict[str, str]:
    """The test's environment without real keys, with this checkout's phalanx first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(SRC),
        PHALANX_STATE_DIR=str(state),
        # python3 in the examples' commands is this interpreter (mcp, pydantic installed)
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env


def phalanx(
    *args: str | Path, cwd: Path, env: Mapping[str, str], timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phalanx", *map(str, args)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_out(name: str, dest: Path, env: Mapping[str, str]) -> Path:
    """``phalanx init --example NAME DEST``, as the examples' README says."""
    proc = phalanx("init", "--example", name, dest, cwd=dest.parent, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (made,) = [p for p in dest.iterdir() if p.name.startswith(name)]
    assert f"wrote {made}" in proc.stdout
    return made


def journal(state: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    with sqlite3.connect(state / "journal.sqlite") as c:
        c.row_factory = sqlite3.Row
        return c.execute(sql, args).fetchall()


# -- a scripted OpenAI-compatible model ----------------------------------------------------


class ScriptedChat:
    """``POST /v1/chat/completions`` answered from a script, whole (not streamed), the way
    the ``openai-compatible`` provider asks by default. ``script[marker]`` is the list of
    steps of the task whose first user message contains ``marker``; the step is chosen by
    the number of assistant turns already in the conversation, so retries and concurrency
    cannot reorder it. A step is ``("tool", name, args)`` or ``("text", answer)``."""

    def __init__(self, script: Mapping[str, Sequence[tuple[Any, ...]]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(body)
                data = json.dumps(outer.answer(body)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        first = next(m["content"] for m in messages if m["role"] == "user")
        marker = next(k for k in self.script if k in first)
        turn = sum(1 for m in messages if m["role"] == "assistant")
        step = self.script[marker][turn]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "tool_calls"
        if step[0] == "tool":
            call = {"name": step[1], "arguments": json.dumps(step[2])}
            message["tool_calls"] = [{"id": f"call_{turn}", "type": "function", "function": call}]
        else:
            message["content"], finish = step[1], "stop"
        usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return {"id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [choice], "usage": usage}  # fmt: skip

    def tools_offered(self, marker: str) -> set[str]:
        for body in self.requests:
            first = next(m["content"] for m in body["messages"] if m["role"] == "user")
            if marker in first:
                return {t["function"]["name"] for t in body.get("tools", [])}
        return set()

    def __enter__(self) -> ScriptedChat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# -- the index -----------------------------------------------------------------------------


def test_every_example_is_listed_indexed_and_tested(tmp_path: Path) -> None:
    env = env_for(tmp_path / "state")
    listed = phalanx("init", "--example", "list", cwd=tmp_path, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == SHIPPED
    assert all(len(line.split(None, 1)) == 2 for line in listed.stdout.splitlines())  # + what
    readme = (EXAMPLES / "README.md").read_text()
    mine = Path(__file__).read_text()
    for name in SHIPPED:
        assert f"`{name}" in readme, f"examples/README.md does not index {name}"
        if name not in ("evals", "feature-team"):  # tested in test_evals.py / test_wheel.py
            assert f'"{name}"' in mine.split("\n# -- the examples -")[1], f"no test runs {name}"
    assert "examples/README.md" in (ROOT / "README.md").read_text()


def test_agent_spec_takes_skills_as_any_iterable() -> None:
    """python_api.py passes skills as a tuple: matching compares sets."""
    spec = AgentSpec(skills=("security", "python"), categories=["research"])  # type: ignore[arg-type]
    assert spec.skills == frozenset({"security", "python"})
    assert spec.categories == frozenset({"research"})
    assert AgentSpec(skills="python").skills == frozenset({"python"})  # type: ignore[arg-type]


# -- the examples --------------------------------------------------------------------------


def test_python_api_on_sim_prints_typed_results(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = copy_out("python_api", tmp_path, env_for(state))
    proc = subprocess.run(
        [sys.executable, script], cwd=tmp_path, env=env_for(state),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("risk (severity ")
    assert sum(line.startswith("estimate: ") for line in lines) == 2
    assert lines[-1].startswith("total: 2 day(s); run ")  # two estimates of at least a day
    assert "succeeded" in proc.stderr and "SIMULATED" in proc.stderr  # summary: stderr
    run_id = lines[-1].rsplit(" ", 1)[1]
    ok = journal(
        state, "SELECT count(*) FROM attempts WHERE run_id=? AND outcome='succeeded'", run_id
    )
    assert ok[0][0] == 3


def test_python_api_takes_the_provider_from_the_environment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = copy_out("python_api", tmp_path, env_for(state))
    with FakeProviderServer() as srv:
        env = env_for(state, PHALANX_PROVIDER="openai:gpt-4.1-mini", OPENAI_API_KEY="sk-fake-1")
        proc = subprocess.run(
            [sys.executable, script, "--base-url", srv.url + "/v1"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )  # fmt: skip
        # the fake model answers {"answer": ...}, which no Risks is: re-asked, then failed
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "output_invalid" in phalanx("status", "--json", cwd=tmp_path, env=env).stdout
        assert {s.path for s in srv.served} == {"/v1/chat/completions"}
        assert len(srv.served) == 3  # the first answer and the two re-asks


@pytest.mark.parametrize(
    ("name", "key", "path"),
    [
        ("anthropic", "ANTHROPIC_API_KEY", "/v1/messages"),
        ("openai", "OPENAI_API_KEY", "/v1/chat/completions"),
        ("llama-server", None, "/v1/chat/completions"),
    ],
)
def test_provider_plans_run_against_a_local_fake_server(
    tmp_path: Path, name: str, key: str | None, path: str
) -> None:
    state = tmp_path / "state"
    fake_key = "sk-fake-examples-7c1d9e"
    env = env_for(state, **({key: fake_key} if key else {}))
    plan = copy_out(name, tmp_path, env)
    with FakeProviderServer(rate_headers=True) as srv:
        base = srv.url if name == "anthropic" else srv.url + "/v1"
        proc = phalanx("run", plan, "--base-url", base, "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # stdout: the JSON result only
    assert result["status"] == "succeeded" and not result["simulated"]
    assert len(result["tasks"]) == 4
    assert all(t["state"] == "succeeded" for t in result["tasks"].values())
    assert [s.path for s in srv.served] == [path] * 4  # one request per task, no retry
    if name != "llama-server":  # list prices known for the models the plans name
        assert result["usage"]["cost_usd"] > 0
    journal_bytes = b"".join(p.read_bytes() for p in state.glob("journal.sqlite*"))
    assert fake_key.encode() not in journal_bytes


def test_a_provider_plan_without_its_key_says_which_variable(tmp_path: Path) -> None:
    env = env_for(tmp_path / "state")
    plan = copy_out("anthropic", tmp_path, env)
    proc = phalanx("run", plan, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


FIXED_SLUG = (
    "import re\n\n\n"
    "def slugify(title: str) -> str:\n"
    '    """\'Hello, World!\' -> \'hello-world\'"""\n'
    '    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")\n'
)
TOOLS_SCRIPT = {
    "test_slug.py fails": [
        ("tool", "read_file", {"path": "slug.py"}),
        ("tool", "write_file", {"path": "slug.py", "content": FIXED_SLUG}),
        ("tool", "run_command", {"argv": ["python3", "test_slug.py"]}),
        ("text", "slugify now lower-cases the title first; test_slug.py passes."),
    ],
    "CHANGELOG.md": [
        ("tool", "write_file", {"path": "CHANGELOG.md",
                                "content": "## Unreleased\n\n- slugify lower-cases titles\n"}),
        ("text", "Recorded the fix in CHANGELOG.md."),
    ],
}  # fmt: skip


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
def test_tools_and_hooks_fix_the_code_and_the_hooks_fire(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = env_for(state)
    folder = copy_out("tools-and-hooks", tmp_path, env)
    with ScriptedChat(TOOLS_SCRIPT) as model:
        proc = phalanx(
            "run", "plan.yaml", "--provider", "openai-compatible:scripted",
            "--base-url", model.url, "--json", cwd=folder, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = json.loads(proc.stdout)["run_id"]

        # the files changed, in the workspace only; the fixed code passes its test
        project = folder / "project"
        assert project.joinpath("slug.py").read_text() == FIXED_SLUG
        assert "slugify lower-cases" in project.joinpath("CHANGELOG.md").read_text()
        calls = journal(
            state,
            "SELECT task_id, tool, ok, result FROM tool_calls WHERE run_id=? ORDER BY started_at",
            run_id,
        )
        assert [(c["task_id"], c["tool"], c["ok"]) for c in calls] == [
            ("fix-slug", "read_file", 1),
            ("fix-slug", "write_file", 1),
            ("fix-slug", "run_command", 1),
            ("changelog", "write_file", 1),
        ]
        assert "ok: 3 tests passed" in calls[2]["result"]
        assert "[exit code 0]" in calls[2]["result"]
        assert "run_command" not in model.tools_offered("CHANGELOG.md")  # the writer's tools

        # the hooks fired: the guard once for the coder's task, the notifier per task
        hooks = folder / "hooks"
        assert hooks.joinpath("guard.log").read_text() == "fix-slug: allowed\n"
        notes = hooks.joinpath("notifications.log").read_text().splitlines()
        assert sorted(n.split()[1] for n in notes) == ["changelog", "fix-slug"]
        assert all(n.startswith(f"{run_id} ") and "done by " in n for n in notes)

        # a release freeze: the guard vetoes the coder's task, the writer's is skipped
        hooks.joinpath("FREEZE").write_text("until the 2.0 release")
        proc = phalanx("run", "plan.yaml", "--provider", "openai-compatible:scripted",
                       "--base-url", model.url, "--json", cwd=folder, env=env)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    assert tasks["fix-slug"]["state"] == "failed"
    assert "release freeze: until the 2.0 release" in tasks["fix-slug"]["error"]
    assert tasks["changelog"]["state"] == "skipped"
    assert hooks.joinpath("guard.log").read_text().endswith("fix-slug: vetoed\n")


MCP_SCRIPT = {
    "HTTP client": [
        ("tool", "mcp__notes__add_note", {"note": {"title": "httpx", "tags": ["http"],
                                                   "body": "sync and async, HTTP/2"}}),
        ("text", "Saved a note on httpx."),
    ],
    "command-line parsing": [
        ("tool", "mcp__notes__add_note", {"note": {"title": "typer", "tags": ["cli"],
                                                   "body": "type hints as options"}}),
        ("tool", "mcp__notes__delete_notes", {}),  # not one of its tools: refused
        ("text", "Saved a note on typer."),
    ],
    "one-page recommendation": [
        ("tool", "mcp__notes__find_notes", {}),
        ("text", "# Recommendation\n\nUse httpx and typer."),
    ],
}  # fmt: skip


def test_mcp_example_server_tools_are_called_over_stdio(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    state = tmp_path / "state"
    env = env_for(state)
    folder = copy_out("mcp", tmp_path, env)
    with ScriptedChat(MCP_SCRIPT) as model:
        proc = phalanx(
            "run", folder / "plan.yaml", "--provider", "openai-compatible:scripted",
            "--base-url", model.url, "--json", cwd=tmp_path, env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    calls = journal(
        state, "SELECT task_id, tool, ok, error_code, result FROM tool_calls WHERE run_id=?",
        run_id,
    )  # fmt: skip
    by_task = {(c["task_id"], c["tool"]): c for c in calls}
    assert len(calls) == 4
    assert by_task["python-http", "mcp__notes__add_note"]["result"].startswith("saved note ")
    refused = by_task["python-cli", "mcp__notes__delete_notes"]
    assert (refused["ok"], refused["error_code"]) == (0, "tool_not_allowed")
    found = by_task["summary", "mcp__notes__find_notes"]["result"]
    assert "- httpx: sync and async, HTTP/2" in found and "- typer: " in found
    assert model.tools_offered("HTTP client") == {
        "mcp__notes__add_note",
        "mcp__notes__find_notes",
    }
    assert model.tools_offered("one-page") == {"mcp__notes__find_notes"}
    log = (state / "runs" / run_id / "mcp-notes.log").read_text()
    assert log.count("notes server started") == 1 and "delete_notes" not in log


def test_ray_example_runs_on_a_local_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    state = tmp_path / "state"
    env = env_for(state)
    plan = copy_out("ray", tmp_path, env)
    t0 = time.monotonic()
    proc = phalanx("run", plan, "--json", cwd=tmp_path, env=env)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["simulated"]
    placed = journal(
        state,
        "SELECT count(*) FROM events WHERE run_id=? AND type='agent_placed'",
        result["run_id"],
    )
    assert placed[0][0] == 4  # every agent in a Ray actor
    assert took < RUN_TIMEOUT

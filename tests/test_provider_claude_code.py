"""The ``claude-code`` provider against a fake ``claude`` executable: argv, stream-json
parsing, error classes, timeouts and cancellation that kill the whole process group."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import phalanx
from conftest import wait_dead
from phalanx import AgentSpec, Plan, Task
from phalanx.exceptions import ErrorClass, ProviderError, UsageError
from phalanx.ids import TaskId
from phalanx.providers import resolve_provider
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.claude_code import ClaudeCodeProvider, classify, parse_retry_after

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

FAKE = r'''#!{python}
"""A fake `claude -p ... --output-format stream-json`. Mode: $FAKE_CLAUDE_MODE, else a
[mode] marker in the prompt, else "echo"."""
import json, os, subprocess, sys, time

MODES = ("success", "noise", "cut", "rate_limit", "auth", "exit_stderr", "hang",
         "max_turns", "linger", "big_line", "echo")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result(text, subtype="success", is_error=False, **extra):
    emit(dict({{"type": "result", "subtype": subtype, "is_error": is_error,
               "duration_ms": 12, "num_turns": 2, "result": text, "session_id": "s-1",
               "total_cost_usd": 0.0123,
               "usage": {{"input_tokens": 10, "output_tokens": 20,
                         "cache_read_input_tokens": 3, "cache_creation_input_tokens": 4}}}},
               **extra))


argv = sys.argv[1:]
prompt, stdin_text = None, None
if "-p" in argv:
    i = argv.index("-p")
    if i + 1 < len(argv) and argv[i + 1] != "--output-format":
        prompt = argv[i + 1]
if prompt is None:
    stdin_text = sys.stdin.read()
    prompt = stdin_text
mode = os.environ.get("FAKE_CLAUDE_MODE") or next(
    (m for m in MODES if f"[{{m}}]" in prompt), "echo")
dump = os.environ.get("FAKE_CLAUDE_DUMP")
if dump:
    with open(dump, "w") as f:
        json.dump({{"argv": sys.argv, "stdin": stdin_text, "cwd": os.getcwd(),
                   "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
                   "sid": os.getsid(0), "extra_env": os.environ.get("FAKE_CLAUDE_EXTRA"),
                   "removed_env": os.environ.get("FAKE_CLAUDE_REMOVE")}}, f)

model = argv[argv.index("--model") + 1] if "--model" in argv else "claude-default"
emit({{"type": "system", "subtype": "init", "session_id": "s-1", "model": model,
      "tools": ["Bash", "Read"]}})

if mode in ("success", "noise", "echo", "big_line", "linger"):
    if mode == "noise":
        print("Loading plugins... not json", flush=True)
        print("{{half a json object", flush=True)
        print("[1, 2, 3]", flush=True)
        print("", flush=True)
        sys.stderr.write("warning: something harmless\n")
    text = "the answer is 42" if mode != "echo" else "echo: " + prompt
    if mode == "big_line":
        emit({{"type": "user", "message": {{"content": [
            {{"type": "tool_result", "content": "x" * 3_000_000}}]}}}})
    emit({{"type": "assistant", "message": {{"model": model, "content": [
        {{"type": "text", "text": "thinking out loud"}}],
        "usage": {{"input_tokens": 1, "output_tokens": 1}}}}}})
    result(text)
    if mode == "linger":
        time.sleep(600)
    sys.exit(0)
if mode == "cut":
    emit({{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "partial"}}]}}}})
    sys.exit(0)
if mode == "rate_limit":
    result("Claude AI usage limit reached|" + str(int(time.time()) + 120), is_error=True)
    sys.exit(1)
if mode == "auth":
    result("Invalid API key · Please run /login", is_error=True)
    sys.exit(1)
if mode == "max_turns":
    result(None, subtype="error_max_turns", is_error=True)
    sys.exit(1)
if mode == "exit_stderr":
    sys.stderr.write("\x1b[31mError:\x1b[0m API Error: 529 "
                     + '{{"type":"error","error":{{"type":"overloaded_error"}}}} token='
                     + os.environ.get("FAKE_CLAUDE_EXTRA", "") + "\n")
    sys.exit(3)
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["FAKE_CLAUDE_PIDS"], "w") as f:
        json.dump([os.getpid(), child.pid], f)
    time.sleep(600)
sys.exit(9)
'''


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def request(prompt: str = "hello", system: str = "You are terse.") -> CompletionRequest:
    messages = [Message(role="user", content=prompt)]
    if system:
        messages.insert(0, Message(role="system", content=system))
    return CompletionRequest(model="", messages=tuple(messages), task_id="t1", agent="a")


def provider(fake: Path, model: str = "", **options: Any) -> ClaudeCodeProvider:
    return ClaudeCodeProvider(model, {"executable": str(fake), **options})


async def complete(p: ClaudeCodeProvider, req: CompletionRequest) -> Any:
    try:
        return await p.complete(req)
    finally:
        await p.aclose()


def failure(p: ClaudeCodeProvider, req: CompletionRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        run(complete(p, req))
    return info.value


def read_pids(path: Path, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            pids = json.loads(path.read_text())
            if isinstance(pids, list) and len(pids) == 2:
                return [int(p) for p in pids]
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"the fake never wrote {path}")


# -- success ---------------------------------------------------------------------------------


def test_success_text_usage_cost_and_argv(fake: Path, tmp_path: Path) -> None:
    dump = tmp_path / "argv.json"
    marker = tmp_path / "pwned"
    prompt = f"[success] quote 'it' \"now\"; $(touch {marker}) `touch {marker}` | cat *"
    p = provider(
        fake,
        "opus",
        args=["--max-turns", "3"],
        cwd=str(tmp_path),
        env={"FAKE_CLAUDE_DUMP": str(dump), "FAKE_CLAUDE_EXTRA": "passed-through"},
    )
    assert p.name == "claude-code:opus" and p.simulated is False
    c = run(complete(p, request(prompt, "Be brief; use $HOME as is.")))

    assert c.text == "the answer is 42"
    assert c.usage.input_tokens == 10 and c.usage.output_tokens == 20
    assert c.usage.cache_read_tokens == 3 and c.usage.cache_write_tokens == 4
    assert c.usage.cost_usd == pytest.approx(0.0123)
    assert c.model == "opus" and c.simulated is False and c.stop_reason == "end"
    assert c.raw["num_turns"] == 2

    seen = json.loads(dump.read_text())
    assert seen["argv"][1:] == [
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "opus",
        "--append-system-prompt",
        "Be brief; use $HOME as is.",
        "--max-turns",
        "3",
    ]
    # no shell: the fake's parent is this process, metacharacters arrived verbatim
    assert seen["ppid"] == os.getpid()
    assert not marker.exists()
    assert seen["stdin"] is None
    assert seen["cwd"] == str(tmp_path)
    assert seen["extra_env"] == "passed-through"
    assert seen["pgid"] == seen["pid"] == seen["sid"]  # its own session and process group


def test_plain_claude_code_has_no_model_flag_and_no_empty_system(
    fake: Path, tmp_path: Path
) -> None:
    dump = tmp_path / "argv.json"
    p = provider(fake, env={"FAKE_CLAUDE_DUMP": str(dump)})
    assert p.name == "claude-code"
    c = run(complete(p, request("hi there", system="")))
    assert c.text == "echo: hi there"
    assert c.model == "claude-default"  # from the init event
    argv = json.loads(dump.read_text())["argv"][1:]
    assert argv == ["-p", "hi there", "--output-format", "stream-json", "--verbose"]


def test_non_json_noise_is_ignored(fake: Path) -> None:
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "noise"})
    c = run(complete(p, request()))
    assert c.text == "the answer is 42"
    assert c.usage.cost_usd == pytest.approx(0.0123)


def test_very_long_stdout_lines_are_read(fake: Path) -> None:
    c = run(complete(provider(fake, env={"FAKE_CLAUDE_MODE": "big_line"}), request()))
    assert c.text == "the answer is 42"


def test_huge_or_dash_prompt_goes_through_stdin(fake: Path, tmp_path: Path) -> None:
    dump = tmp_path / "argv.json"
    p = provider(fake, env={"FAKE_CLAUDE_DUMP": str(dump)})
    for prompt in ("x" * 200_000, "--help me"):
        c = run(complete(p, request(prompt)))
        assert c.text == "echo: " + prompt
        seen = json.loads(dump.read_text())
        assert seen["stdin"] == prompt
        assert prompt not in seen["argv"]
        assert seen["argv"][1:3] == ["-p", "--output-format"]


def test_lingering_process_after_result_is_killed_and_result_kept(
    fake: Path, tmp_path: Path
) -> None:
    dump = tmp_path / "argv.json"
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "linger", "FAKE_CLAUDE_DUMP": str(dump)})
    p.exit_grace = 0.2
    t0 = time.monotonic()
    c = run(complete(p, request()))
    assert time.monotonic() - t0 < 5
    assert c.text == "the answer is 42"
    assert wait_dead([json.loads(dump.read_text())["pid"]]) == []


def test_env_null_removes_a_variable(
    fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLAUDE_REMOVE", "present")
    dump = tmp_path / "argv.json"
    p = provider(fake, env={"FAKE_CLAUDE_DUMP": str(dump), "FAKE_CLAUDE_REMOVE": None})
    run(complete(p, request()))
    assert json.loads(dump.read_text())["removed_env"] is None


# -- failures --------------------------------------------------------------------------------


def test_exit_without_result_event_is_stream_cut(fake: Path) -> None:
    err = failure(provider(fake, env={"FAKE_CLAUDE_MODE": "cut"}), request())
    assert err.error_class is ErrorClass.STREAM_CUT
    assert err.retryable
    assert "partial" not in str(err)


def test_rate_limit_result_is_rate_limited_with_retry_time(fake: Path) -> None:
    err = failure(provider(fake, env={"FAKE_CLAUDE_MODE": "rate_limit"}), request())
    assert err.error_class is ErrorClass.RATE_LIMITED
    assert err.retryable
    assert err.retry_after is not None and 100 <= err.retry_after <= 121


def test_auth_result_is_auth_and_not_retryable(fake: Path) -> None:
    err = failure(provider(fake, env={"FAKE_CLAUDE_MODE": "auth"}), request())
    assert err.error_class is ErrorClass.AUTH
    assert not err.retryable
    assert "Invalid API key" in str(err)


def test_max_turns_is_truncated(fake: Path) -> None:
    err = failure(provider(fake, env={"FAKE_CLAUDE_MODE": "max_turns"}), request())
    assert err.error_class is ErrorClass.TRUNCATED
    assert not err.retryable


def test_nonzero_exit_classified_from_sanitised_stderr(fake: Path) -> None:
    secret = "sekrit-value-123456"
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "exit_stderr", "FAKE_CLAUDE_EXTRA": secret})
    err = failure(p, request())
    assert err.error_class is ErrorClass.OVERLOADED
    assert err.retryable
    msg = str(err)
    assert "exit 3" in msg and "API Error: 529" in msg
    assert "\x1b" not in msg and "\n" not in msg
    assert secret not in msg  # environment values never reach a message
    assert len(msg) < 700


def test_timeout_kills_the_whole_process_group(fake: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    p = provider(
        fake, timeout=1, env={"FAKE_CLAUDE_MODE": "hang", "FAKE_CLAUDE_PIDS": str(pids_file)}
    )
    t0 = time.monotonic()
    err = failure(p, request())
    elapsed = time.monotonic() - t0
    assert err.error_class is ErrorClass.TIMEOUT and err.retryable
    assert elapsed < 2.5, elapsed
    pids = read_pids(pids_file)
    assert wait_dead(pids) == [], "the fake or its child survived the timeout"


def test_cancellation_kills_the_process_group(fake: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "hang", "FAKE_CLAUDE_PIDS": str(pids_file)})

    async def scenario() -> list[int]:
        task = asyncio.create_task(p.complete(request()))
        deadline = time.monotonic() + 10
        while not pids_file.exists() or len(pids_file.read_text()) < 3:
            assert time.monotonic() < deadline, "the fake never started"
            await asyncio.sleep(0.02)
        pids = read_pids(pids_file)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        return pids

    pids = run(scenario())
    assert wait_dead(pids) == [], "the fake or its child survived cancellation"


def test_task_deadline_in_the_caller_kills_the_process(fake: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "hang", "FAKE_CLAUDE_PIDS": str(pids_file)})

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await p.complete(request())

    run(scenario())
    assert wait_dead(read_pids(pids_file)) == []


def test_aclose_kills_running_children(fake: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    p = provider(fake, env={"FAKE_CLAUDE_MODE": "hang", "FAKE_CLAUDE_PIDS": str(pids_file)})

    async def scenario() -> BaseException | None:
        task = asyncio.create_task(p.complete(request()))
        deadline = time.monotonic() + 10
        while not pids_file.exists() or len(pids_file.read_text()) < 3:
            assert time.monotonic() < deadline, "the fake never started"
            await asyncio.sleep(0.02)
        await asyncio.wait_for(p.aclose(), 5)
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "complete() did not return after aclose()"
        return task.exception()

    exc = run(scenario())
    assert isinstance(exc, ProviderError) and exc.retryable
    assert wait_dead(read_pids(pids_file)) == []


# -- construction ----------------------------------------------------------------------------


def test_missing_executable_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError) as info:
        ClaudeCodeProvider("", {})
    assert str(info.value) == (
        "claude-code: executable 'claude' not found on PATH (set providers.claude-code.executable)"
    )
    with pytest.raises(UsageError, match=r"'nope-claude'.*providers\.claude-code\.executable"):
        resolve_provider("claude-code:sonnet", {"claude-code": {"executable": "nope-claude"}})


def test_bad_options_are_usage_errors(fake: Path) -> None:
    with pytest.raises(UsageError, match="unknown option"):
        provider(fake, bogus=1)
    with pytest.raises(UsageError, match="args"):
        provider(fake, args="--max-turns 3")
    with pytest.raises(UsageError, match="timeout"):
        provider(fake, timeout=0)


def test_resolve_provider_builds_it(fake: Path) -> None:
    p = resolve_provider("claude-code:haiku", {"claude-code": {"executable": str(fake)}})
    assert isinstance(p, ClaudeCodeProvider)
    assert p.name == "claude-code:haiku" and p.model == "haiku"


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "expected"),
    [
        ('API Error: 429 {"type":"rate_limit_error"}', 1, ErrorClass.RATE_LIMITED),
        ("Claude AI usage limit reached|1760000000", 1, ErrorClass.RATE_LIMITED),
        ('API Error: 529 {"type":"overloaded_error"}', 1, ErrorClass.OVERLOADED),
        ("Invalid API key · Please run /login", 1, ErrorClass.AUTH),
        ("API Error: 401 authentication_error", 1, ErrorClass.AUTH),
        ("Prompt is too long", 1, ErrorClass.CONTEXT_LENGTH),
        ("Credit balance is too low", 1, ErrorClass.QUOTA_EXHAUSTED),
        ("error_max_turns", 1, ErrorClass.TRUNCATED),
        ("error: unknown option '--frobnicate'", 1, ErrorClass.BAD_REQUEST),
        ("fetch failed: ECONNREFUSED", 1, ErrorClass.CONNECTION),
        ("error_during_execution", 1, ErrorClass.SERVER_ERROR),
        ("at Object.<anonymous> (cli.js:401:12)", 1, ErrorClass.SERVER_ERROR),
        ("", -9, ErrorClass.STREAM_CUT),
        ("", 2, ErrorClass.SERVER_ERROR),
    ],
)
def test_classify(text: str, code: int, expected: ErrorClass) -> None:
    assert classify(text, code) is expected


def test_classify_uses_the_reported_status_when_the_text_says_nothing() -> None:
    assert classify("something odd", 1, 429) is ErrorClass.RATE_LIMITED
    assert classify("something odd", 0, 404) is ErrorClass.BAD_REQUEST
    assert classify("something odd", 0, 500) is ErrorClass.SERVER_ERROR


def test_parse_retry_after() -> None:
    now = 1_760_000_000.0
    assert parse_retry_after("Claude AI usage limit reached|1760000300", now) == 300
    assert parse_retry_after("rate limited, retry after 7 seconds", now) == 7
    assert parse_retry_after("try again in 2 minutes", now) == 120
    assert parse_retry_after("retry-after: 1500ms", now) == pytest.approx(1.5)
    wait = parse_retry_after("Your limit will reset at 9pm (UTC)", now)
    assert wait is not None and 0 <= wait <= 24 * 3600
    assert parse_retry_after("rate limit exceeded", now) is None


# -- end to end ------------------------------------------------------------------------------


def test_plan_runs_end_to_end_on_claude_code(fake: Path, state: Path) -> None:
    plan = Plan.build(
        name="cc",
        agents=[AgentSpec(provider="claude-code")],
        tasks=[
            Task(id=TaskId("a"), prompt="summarise the design"),
            Task(id=TaskId("b"), prompt="review the summary", needs=(TaskId("a"),)),
        ],
        providers={"claude-code": {"executable": str(fake), "timeout": 30}},
    )
    result = phalanx.run_sync(plan)
    assert result.status == "succeeded", {k: t.error for k, t in result.tasks.items()}
    assert result.simulated is False
    assert result.tasks["a"].output.startswith("echo: summarise the design")
    out_b = result.tasks["b"].output
    assert out_b.startswith("echo: review the summary")
    assert "echo: summarise the design" in out_b  # a's result was handed to b
    assert result.usage.cost_usd == pytest.approx(2 * 0.0123)
    assert result.usage.output_tokens == 40


def test_many_concurrent_calls_on_one_provider(fake: Path) -> None:
    p = provider(fake)

    async def scenario() -> list[str]:
        try:
            done = await asyncio.gather(*(p.complete(request(f"job {i}")) for i in range(12)))
        finally:
            await p.aclose()
        return [c.text for c in done]

    assert run(scenario()) == [f"echo: job {i}" for i in range(12)]

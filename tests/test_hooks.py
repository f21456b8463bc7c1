"""Hooks: Python and command hooks fire in order, veto tasks, and fail without crashing.

Command hooks are a small Python script written here and run with ``sys.executable``; its
first argument picks what it does (record its stdin, dump its environment, veto, fail,
hang with a child, linger in the background, flood stdout, ignore stdin).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import wait_dead
from phalanx.agents.hooks import (
    HOOK_POINTS,
    CommandHook,
    HookFailure,
    HookOutcome,
    HookRunner,
    Hooks,
    Veto,
    VetoTask,
    from_config,
    payload,
)
from phalanx.events import Alert, AttemptFinished
from phalanx.exceptions import PlanError

T = TypeVar("T")

SCRIPT = r"""
import json, os, subprocess, sys, time

mode, out = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")


def write(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def sleeper(**kw):
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw)


if mode == "noread":
    sys.exit(0)
data = sys.stdin.read()
if mode == "record":
    write(out, json.loads(data))
elif mode == "env":
    write(out, dict(os.environ))
elif mode == "veto":
    sys.stderr.write("  not today:\n   the tests are red  \n")
    sys.exit(2)
elif mode == "veto_silent":
    sys.exit(2)
elif mode == "fail":
    sys.stderr.write("something broke\nlast line of the trouble\n")
    sys.exit(1)
elif mode == "echo_fail":
    sys.stderr.write("leaking " + json.loads(data)["leak"] + "\n")
    sys.exit(1)
elif mode == "hang":
    child = sleeper()
    write(out, [os.getpid(), child.pid])
    time.sleep(60)
elif mode == "linger":
    child = sleeper()  # inherits stdout and stderr: the pipes stay open after we exit
    write(out, [os.getpid(), child.pid])
elif mode == "flood":
    sys.stdout.write("x" * 5_000_000)
    sys.stderr.write("e" * 500_000)
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "hook.py"
    path.write_text(SCRIPT)
    return path


def cmd(script: Path, on: str, mode: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"on": on, "command": [sys.executable, str(script), mode, *args], **extra}


def run(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def fire(runner: HookRunner, point: str, **fields: Any) -> HookOutcome:
    return run(runner.fire(point, payload(point, **fields)))


def read_json(path: Path, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return json.loads(path.read_text())


TASK = {"id": "t1", "title": "Write the parser", "category": "implementation"}


# -- Python hooks ----------------------------------------------------------------------------


class SyncRecorder(Hooks):
    def __init__(self, log: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.log = log

    def _record(self, payload: dict[str, Any]) -> None:
        self.log.append(("sync", payload["point"], payload))

    on_run_start = before_task = after_task = on_error = _record
    on_message = on_scale = on_breaker = on_run_end = _record


class AsyncRecorder:
    """A plain object (not a Hooks subclass) with async methods named like the points."""

    def __init__(self, log: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.log = log
        for point in HOOK_POINTS:
            setattr(self, point, self._record)

    async def _record(self, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        self.log.append(("async", payload["point"], payload))


def test_every_point_fires_sync_and_async_hooks_in_order_with_the_payload() -> None:
    log: list[tuple[str, str, dict[str, Any]]] = []
    runner = HookRunner([SyncRecorder(log), AsyncRecorder(log)])
    assert runner.points() == frozenset(HOOK_POINTS)

    async def scripted_run() -> list[HookOutcome]:
        outcomes = []
        for point in HOOK_POINTS:
            data = payload(point, run_id="r-1", task=TASK, agent="Nova", n=HOOK_POINTS.index(point))
            outcomes.append(await runner.fire(point, data))
        return outcomes

    outcomes = run(scripted_run())
    assert all(o.ok for o in outcomes)
    assert [(kind, point) for kind, point, _ in log] == [
        (kind, point) for point in HOOK_POINTS for kind in ("sync", "async")
    ]
    for _, point, data in log:
        assert data == {
            "point": point,
            "run_id": "r-1",
            "task": TASK,
            "agent": "Nova",
            "n": HOOK_POINTS.index(point),
        }


def test_several_hooks_on_one_point_run_in_the_order_given(script: Path, tmp_path: Path) -> None:
    order: list[str] = []

    class Second(Hooks):
        async def after_task(self, payload: dict[str, Any]) -> None:
            order.append("second")

    out = tmp_path / "third.json"
    runner = HookRunner(
        [
            {"after_task": lambda p: order.append("first")},
            Second(),
            cmd(script, "after_task", "record", str(out)),
            {"after_task": lambda p: order.append(f"fourth saw {out.exists()}")},
        ]
    )
    assert fire(runner, "after_task", task=TASK).ok
    assert order == ["first", "second", "fourth saw True"]


def test_only_overridden_methods_of_a_hooks_subclass_are_registered() -> None:
    calls: list[str] = []

    class OnlyAfter(Hooks):
        name = "only-after"

        def after_task(self, payload: dict[str, Any]) -> None:
            calls.append(payload["point"])

    runner = HookRunner([OnlyAfter()])
    assert runner.points() == frozenset({"after_task"})
    assert fire(runner, "before_task") == HookOutcome()
    assert fire(runner, "after_task").ok
    assert calls == ["after_task"]


def test_each_hook_gets_its_own_copy_of_the_payload() -> None:
    seen: list[dict[str, Any]] = []

    def mutate(p: dict[str, Any]) -> None:
        p["task"]["title"] = "changed"

    runner = HookRunner([{"after_task": mutate}, {"after_task": seen.append}])
    data = payload("after_task", task=dict(TASK))
    run(runner.fire("after_task", data))
    assert seen[0]["task"]["title"] == "Write the parser"
    assert data["task"]["title"] == "Write the parser"


def test_payload_is_json_ready() -> None:
    event = AttemptFinished(ts=1.0, task_id="t1", attempt_id=3, agent="Nova", ok=True, duration=2)
    data = payload(
        "after_task",
        run_id="r",
        event=event,
        where=Path("/tmp/x"),
        skills=frozenset({"b", "a"}),
        needs=("t0",),
        other=object,
    )
    assert json.loads(json.dumps(data)) == data
    assert data["point"] == "after_task"
    assert data["event"]["type"] == "attempt_finished" and data["event"]["attempt_id"] == 3
    assert data["where"] == "/tmp/x" and data["skills"] == ["a", "b"] and data["needs"] == ["t0"]
    with pytest.raises(ValueError, match="unknown hook point"):
        payload("before_everything")


def test_python_before_task_vetoes_by_false_veto_or_vetotask() -> None:
    def by_false(p: dict[str, Any]) -> bool:
        return False

    async def by_veto(p: dict[str, Any]) -> Veto:
        return Veto("budget is for the parser only")

    def by_raise(p: dict[str, Any]) -> None:
        raise VetoTask("needs review first")

    for hook, reason in (
        (by_false, "vetoed by hook"),
        (by_veto, "budget is for the parser only"),
        (by_raise, "needs review first"),
    ):
        later: list[str] = []
        runner = HookRunner([{"before_task": hook}, {"before_task": later.append}])
        outcome = fire(runner, "before_task", task=TASK)
        assert outcome.veto and reason in outcome.reason and not outcome.failures
        assert later == [], "hooks after a veto do not run"


def test_true_none_and_false_outside_before_task_do_not_veto() -> None:
    runner = HookRunner(
        [
            {"before_task": lambda p: True, "after_task": lambda p: False},
            {"before_task": lambda p: None},
        ]
    )
    assert fire(runner, "before_task").ok
    assert fire(runner, "after_task").ok


def test_a_veto_outside_before_task_is_a_reported_failure() -> None:
    def veto(p: dict[str, Any]) -> Veto:
        return Veto("no")

    def raise_veto(p: dict[str, Any]) -> None:
        raise VetoTask("no")

    outcome = fire(HookRunner([{"on_error": veto}, {"on_error": raise_veto}]), "on_error")
    assert not outcome.veto
    assert [f.message for f in outcome.failures] == [
        "cannot veto at on_error (only before_task)"
    ] * 2


def test_a_crashing_python_hook_is_reported_and_the_rest_still_run() -> None:
    later: list[str] = []

    class Broken(Hooks):
        def before_task(self, payload: dict[str, Any]) -> None:
            raise ValueError("boom\nsecond line")

        async def after_task(self, payload: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            _ = payload["no such key"]

    runner = HookRunner([Broken(), {"before_task": later.append, "after_task": later.append}])
    before = fire(runner, "before_task", task=TASK)
    assert not before.veto, "a crashing before_task hook fails open"
    (failure,) = before.failures
    assert failure.point == "before_task" and failure.hook == "Broken"
    assert failure.message.startswith("ValueError: boom second line (test_hooks.py:")
    assert "\n" not in str(failure)
    after = fire(runner, "after_task", task=TASK)
    assert after.failures[0].message.startswith("KeyError: 'no such key' (test_hooks.py:")
    assert len(later) == 2


def test_base_exceptions_and_cancellation_propagate() -> None:
    class Stop(BaseException):
        pass

    def stop(p: dict[str, Any]) -> None:
        raise Stop

    with pytest.raises(Stop):
        fire(HookRunner([{"on_run_end": stop}]), "on_run_end")

    async def slow(p: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    async def cancel_it() -> None:
        task = asyncio.create_task(HookRunner([{"on_scale": slow}]).fire("on_scale", {}))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        run(cancel_it())


def test_a_slow_async_python_hook_is_bounded_by_the_runner_timeout() -> None:
    async def slow(p: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    async def own_timeout(p: dict[str, Any]) -> None:
        raise TimeoutError("upstream timed out")

    t0 = time.monotonic()
    outcome = fire(HookRunner([{"on_message": slow}], timeout=0.2), "on_message")
    assert time.monotonic() - t0 < 2
    assert [f.message for f in outcome.failures] == ["timed out after 0.2s"]
    outcome = fire(HookRunner([{"on_message": own_timeout}]), "on_message")
    assert outcome.failures[0].message.startswith("TimeoutError: upstream timed out")


def test_a_payload_that_is_not_json_is_a_failure_not_a_crash() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    outcome = run(HookRunner([{"on_message": print}]).fire("on_message", {"x": loop}))
    assert outcome.failures and "not JSON-serialisable" in outcome.failures[0].message


def test_firing_an_unknown_point_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown hook point"):
        run(HookRunner().fire("before_lunch", {}))


# -- command hooks ---------------------------------------------------------------------------


def test_command_hook_gets_the_payload_as_json_on_stdin(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "payload.json"
    runner = from_config([cmd(script, "after_task", "record", str(out), timeout=10)])
    assert runner.points() == frozenset({"after_task"})
    outcome = fire(runner, "after_task", run_id="r-9", task=TASK, agent="Vega")
    assert outcome == HookOutcome()
    assert read_json(out) == {"point": "after_task", "run_id": "r-9", "task": TASK, "agent": "Vega"}


def test_exit_2_from_before_task_vetoes_with_stderr_as_reason(script: Path, tmp_path: Path) -> None:
    after = tmp_path / "after.json"
    runner = from_config(
        [cmd(script, "before_task", "veto"), cmd(script, "before_task", "record", str(after))]
    )
    outcome = fire(runner, "before_task", task=TASK)
    assert outcome.veto and not outcome.failures
    assert outcome.reason == "not today: the tests are red"
    time.sleep(0.1)
    assert not after.exists(), "hooks after a veto do not run"

    silent = fire(from_config([cmd(script, "before_task", "veto_silent")]), "before_task")
    assert silent.veto and silent.reason.startswith("vetoed by hook ")


def test_a_long_veto_reason_is_one_line_of_at_most_500_chars(tmp_path: Path) -> None:
    hook = tmp_path / "long.py"
    hook.write_text("import sys\nsys.stderr.write(('why ' * 400 + '\\n') * 3)\nsys.exit(2)\n")
    outcome = fire(
        HookRunner([{"on": "before_task", "command": [sys.executable, str(hook)]}]), "before_task"
    )
    assert outcome.veto and len(outcome.reason) <= 500 and "\n" not in outcome.reason


def test_exit_1_is_a_reported_failure_with_the_stderr_tail(script: Path) -> None:
    outcome = fire(from_config([cmd(script, "before_task", "fail")]), "before_task")
    assert not outcome.veto
    (failure,) = outcome.failures
    assert failure.point == "before_task"
    assert failure.message == "exited with 1: something broke last line of the trouble"
    assert failure.hook == f"{Path(sys.executable).name} hook.py fail"


def test_exit_2_outside_before_task_is_a_failure_not_a_veto(script: Path) -> None:
    outcome = fire(from_config([cmd(script, "after_task", "veto")]), "after_task")
    assert not outcome.veto
    (failure,) = outcome.failures
    assert failure.message.startswith("exited with 2 (only before_task can veto): not today")


def test_a_hanging_command_is_killed_with_its_group_on_timeout(
    script: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.json"
    runner = from_config([cmd(script, "on_scale", "hang", str(pids), timeout=0.5)])
    t0 = time.monotonic()
    outcome = fire(runner, "on_scale")
    assert time.monotonic() - t0 < 5
    (failure,) = outcome.failures
    assert failure.message.startswith("timed out after 0.5s; process group killed")
    assert wait_dead(read_json(pids)) == [], "the hook or its child survived the timeout"


def test_cancelling_fire_kills_a_running_command(script: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    runner = from_config([cmd(script, "on_scale", "hang", str(pids), timeout=30)])

    async def scenario() -> None:
        task = asyncio.create_task(runner.fire("on_scale", payload("on_scale")))
        while not pids.exists():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert wait_dead(read_json(pids)) == []


def test_a_command_that_leaves_a_child_holding_its_pipes_finishes_promptly(
    script: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids.json"
    runner = from_config([cmd(script, "on_run_end", "linger", str(pids), timeout=20)])
    t0 = time.monotonic()
    assert fire(runner, "on_run_end").ok
    assert time.monotonic() - t0 < 5
    assert wait_dead(read_json(pids)) == [], "what the hook left in its group is killed"


def test_stdout_floods_and_unread_stdin_are_fine(script: Path) -> None:
    big = payload("on_message", text="y" * 2_000_000)
    runner = from_config([cmd(script, "on_message", "noread"), cmd(script, "on_message", "flood")])
    assert run(runner.fire("on_message", big)).ok


def test_a_missing_executable_or_cwd_is_a_reported_failure(tmp_path: Path) -> None:
    runner = from_config(
        [
            {"on": "on_run_start", "command": [str(tmp_path / "no-such-hook"), "x"]},
            {"on": "on_run_start", "command": [sys.executable, "-c", "0"], "cwd": "/no/such/dir"},
        ]
    )
    outcome = fire(runner, "on_run_start")
    assert not outcome.veto
    first, second = (f.message for f in outcome.failures)
    assert first == f"cannot start {tmp_path / 'no-such-hook'}: No such file or directory"
    assert second.startswith(f"cannot start {sys.executable} in /no/such/dir:")


def test_the_hook_environment_has_no_secrets(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-CANARY-hooks-0123456789",
        "GITHUB_TOKEN": "ghp_CANARYCANARY",
        "MY_SECRET": "canary-secret-value",
        "DB_PASSWORD": "canary-password",
        "openai_api_key": "sk-CANARY-lower-0123456789",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PHALANX_PLAIN", "kept")
    out = tmp_path / "env.json"
    assert fire(from_config([cmd(script, "on_run_start", "env", str(out))]), "on_run_start").ok
    env = read_json(out)
    assert env["PHALANX_PLAIN"] == "kept"
    assert not [
        k for k in env if k.upper().endswith(("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"))
    ]
    assert not set(secrets.values()) & set(env.values())


def test_failure_messages_never_carry_environment_secrets(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "canary-3f9e1d7c5b"
    monkeypatch.setenv("SERVICE_API_KEY", secret)

    def leaky(p: dict[str, Any]) -> None:
        raise RuntimeError(f"bad key {os.environ['SERVICE_API_KEY']}")

    runner = HookRunner([{"on_error": leaky}, cmd(script, "on_error", "echo_fail")])
    outcome = fire(runner, "on_error", leak=secret)
    assert len(outcome.failures) == 2
    for failure in outcome.failures:
        assert secret not in str(failure) and "***" in failure.message


def test_a_failure_becomes_a_hook_alert() -> None:
    failure = HookFailure(point="after_task", hook="lint", message="exited with 1")
    alert = failure.alert(12.5, agent="Nova")
    assert alert == Alert(
        ts=12.5, kind="hook", message="hook lint at after_task: exited with 1", agent="Nova"
    )


def test_combined_runs_the_first_runners_hooks_first() -> None:
    order: list[str] = []
    run_level = HookRunner([{"after_task": lambda p: order.append("run")}])
    agent_level = HookRunner([{"after_task": lambda p: order.append("agent")}])
    both = run_level.combined(agent_level)
    assert len(both) == 2 and both
    fire(both, "after_task")
    assert order == ["run", "agent"]
    assert not HookRunner() and HookRunner().points() == frozenset()


def test_a_scripted_run_vetoes_a_task_reports_a_crash_and_finishes(
    script: Path, tmp_path: Path
) -> None:
    """The acceptance scenario, driven the way an orchestrator drives the runner."""
    guard = tmp_path / "guard.py"
    guard.write_text(
        "import json, sys\n"
        "task = json.load(sys.stdin)['task']\n"
        "if task['id'] == 't2':\n"
        "    sys.stderr.write('t2 touches production')\n"
        "    sys.exit(2)\n"
    )
    seen: list[str] = []

    class Recorder(Hooks):
        def on_run_start(self, payload: dict[str, Any]) -> None:
            seen.append("on_run_start")

        async def before_task(self, payload: dict[str, Any]) -> None:
            seen.append(f"before_task {payload['task']['id']}")

        def after_task(self, payload: dict[str, Any]) -> None:
            seen.append(f"after_task {payload['task']['id']}")

        def on_run_end(self, payload: dict[str, Any]) -> None:
            seen.append(f"on_run_end {payload['status']}")

    def crash(payload: dict[str, Any]) -> None:
        raise RuntimeError("hook bug")

    runner = from_config(
        [
            Recorder(),
            {"on": "before_task", "command": [sys.executable, str(guard)], "timeout": 10},
            {"after_task": crash},
        ]
    )

    async def scripted_run() -> tuple[dict[str, str], list[HookFailure]]:
        results: dict[str, str] = {}
        failures: list[HookFailure] = []
        failures += (
            await runner.fire("on_run_start", payload("on_run_start", run_id="r"))
        ).failures
        for tid in ("t1", "t2", "t3"):
            task = {"id": tid, "title": tid, "category": "other"}
            before = await runner.fire("before_task", payload("before_task", task=task))
            failures += before.failures
            if before.veto:
                results[tid] = f"vetoed: {before.reason}"
                continue
            results[tid] = "done"
            failures += (await runner.fire("after_task", payload("after_task", task=task))).failures
        end = await runner.fire("on_run_end", payload("on_run_end", status="succeeded"))
        return results, failures + list(end.failures)

    results, failures = run(scripted_run())
    assert results == {"t1": "done", "t2": "vetoed: t2 touches production", "t3": "done"}
    assert seen == [
        "on_run_start",
        "before_task t1",
        "after_task t1",
        "before_task t2",
        "before_task t3",
        "after_task t3",
        "on_run_end succeeded",
    ]
    assert [(f.point, f.hook) for f in failures] == [("after_task", "crash")] * 2
    assert all(f.message.startswith("RuntimeError: hook bug (test_hooks.py:") for f in failures)


# -- config ----------------------------------------------------------------------------------

BAD = [
    ({"on": "x", "command": ["a"]}, "hooks[0].on", "unknown hook point 'x' (known: on_run_start"),
    ({"command": ["a"]}, "hooks[0].on", "missing"),
    ({"on": "before_task"}, "hooks[0].command", "missing"),
    ({"on": "before_task", "command": "python3 check.py"}, "hooks[0].command", "not a string"),
    ({"on": "before_task", "command": []}, "hooks[0].command", "non-empty list"),
    ({"on": "before_task", "command": ["python3", 3]}, "hooks[0].command[1]", "non-empty string"),
    ({"on": "before_task", "command": ["a"], "timeout": -1}, "hooks[0].timeout", "positive"),
    ({"on": "before_task", "command": ["a"], "timeout": "10"}, "hooks[0].timeout", "positive"),
    ({"on": "before_task", "command": ["a"], "timeout": True}, "hooks[0].timeout", "positive"),
    ({"on": "before_task", "command": ["a"], "cwd": 3}, "hooks[0].cwd", "expected a string"),
    ({"on": "before_task", "command": ["a"], "shell": True}, "hooks[0]", "unknown key(s) 'shell'"),
    ("python3 check.py", "hooks[0]", "got str"),
    ({"before_lunch": print}, "hooks[0].before_lunch", "unknown hook point"),
    ({"before_task": "not callable"}, "hooks[0].before_task", "expected a callable"),
    (object(), "hooks[0]", "has no hook methods"),
]


@pytest.mark.parametrize(("item", "field", "message"), BAD)
def test_bad_hook_config_is_a_one_line_plan_error_naming_the_field(
    item: Any, field: str, message: str
) -> None:
    with pytest.raises(PlanError) as info:
        from_config([item])
    text = str(info.value)
    assert "\n" not in text
    assert info.value.field == field
    assert f"{field}: " in text and message in text


def test_config_errors_name_the_file_and_the_agent() -> None:
    ok = {"on": "on_run_end", "command": ["true"]}
    with pytest.raises(PlanError) as info:
        from_config([ok, {"on": "after", "command": ["a"]}], where="agents[2].hooks", file="p.yaml")
    assert str(info.value).startswith("p.yaml: agents[2].hooks[1].on: unknown hook point 'after'")
    with pytest.raises(PlanError, match=r"hooks: expected a list of hooks"):
        from_config("not a list")  # type: ignore[arg-type]


def test_command_hook_values_are_validated_too() -> None:
    hook = CommandHook(on="after_task", command=("python3", "check.py"))
    assert hook.timeout == 30.0 and hook.name == "python3 check.py" and hook.cwd is None
    with pytest.raises(PlanError, match=r"CommandHook\.command: expected a list of strings"):
        CommandHook(on="after_task", command="python3 check.py")  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=r"CommandHook\.on: unknown hook point"):
        CommandHook(on="later", command=("a",))

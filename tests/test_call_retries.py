"""Call-level retries: a retryable failure of one model call inside an attempt retries that
call, not the attempt.

A 429/5xx/cut stream/timeout on model call N (N > 1) of an agent loop sends call N again
with the same messages, after the plan's backoff and never before the error's Retry-After
(a 429's Retry-After still pauses the key for every agent through the run's gate). The
turns before it and their tools are kept: nothing is run or paid twice. Each call retry is
a ``CallRetried`` event, visible in status, metrics and the report. When the call's tries
(``retry.call_attempts``, default 3) are spent the attempt fails with the provider's class
and the attempt-level retry works as before; non-retryable classes are never retried at
call level; an attempt's first call is retried as a whole attempt, as before (nothing was
done yet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import events, rows
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.tools import BUILTIN_TOOLS, ToolContext, tool
from phalanx.agents.workspace import Workspace
from phalanx.cli.app import main
from phalanx.cost import Price, Usage
from phalanx.events import (
    AgentInfo,
    AttemptStarted,
    CallRetried,
    Event,
    RunStarted,
    TaskInfo,
    event_from_dict,
    event_to_dict,
    event_to_json,
)
from phalanx.exceptions import ErrorClass, PlanError, ProviderError
from phalanx.ids import AgentName
from phalanx.journal import Journal
from phalanx.plan import RetryConfig, load_plan
from phalanx.plan.file import plan_from_data, plan_to_dict
from phalanx.plan.model import DEFAULT_CALL_ATTEMPTS
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.runtime.executor import AgentRunner, Attempt
from phalanx.runtime.governor import Gate
from phalanx.runtime.remote import AgentBlueprint, HostCore, blueprint_of
from phalanx.status.metrics import compute_metrics, metrics_from_journal
from phalanx.status.prometheus import prometheus_text
from phalanx.status.report import render_markdown
from phalanx.status.report_model import build_report
from phalanx.status.snapshot import StatusTracker, fold
from phalanx.status.text import agent_line, swarm_lines
from phalanx.testing import ScriptedProvider, run_virtual

U = Usage(input_tokens=100, output_tokens=20)
PRICE = Price(input=3.0, output=15.0)  # USD per million tokens
FAST = RetryConfig(base_seconds=0.01, cap_seconds=0.02)


def call(name: str, cid: str, **arguments: Any) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=(ToolCall(id=cid, name=name, arguments=arguments),),
    )


def fails(
    cls: ErrorClass,
    status: int | None = None,
    retry_after: float | None = None,
    usage: Usage | None = None,
) -> Any:
    """A script step that raises the provider error (and records when it did)."""

    def step(request: CompletionRequest) -> Completion:
        raise ProviderError(
            f"simulated {cls.value}",
            error_class=cls,
            status=status,
            retry_after=retry_after,
            usage=usage,
        )

    return step


def ticker() -> tuple[Any, list[int]]:
    """An async tool that counts its runs."""
    runs: list[int] = []

    @tool
    async def tick(n: int) -> str:
        """Count one step of work.

        Args:
            n: the step
        """
        runs.append(n)
        return f"tick {n}"

    return tick, runs


# -- the acceptance test -----------------------------------------------------------------


def test_a_429_on_call_4_retries_that_call_and_never_reruns_write_file(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    builtin = BUILTIN_TOOLS["write_file"]
    writes: list[str] = []

    @functools.wraps(builtin.func)
    def counted(ctx: ToolContext, path: str, content: str) -> Any:
        writes.append(path)
        return builtin.func(ctx, path, content)

    write_file = dataclasses.replace(builtin, func=counted)  # the built-in, counted
    seen: dict[str, float] = {}

    def after_write(request: CompletionRequest) -> Completion:  # call 3: the file as written
        seen["mtime"] = (ws / "out.txt").stat().st_mtime_ns
        return call("list_files", "c3", path=".")

    def rate_limited(request: CompletionRequest) -> Completion:  # call 4, once
        seen["failed_at"] = time.monotonic()
        raise ProviderError(
            "429", error_class=ErrorClass.RATE_LIMITED, status=429, retry_after=0.05
        )

    def answer(request: CompletionRequest) -> Completion:  # call 4 again
        seen["retried_at"] = time.monotonic()
        return Completion(text="wrote out.txt", usage=U)

    script = ScriptedProvider(
        [
            call("list_files", "c1", path="."),
            call("write_file", "c2", path="out.txt", content="hello"),
            after_write,
            rate_limited,
            answer,
        ]
    )
    plan = Plan.build(
        agents=[
            AgentSpec(
                name=AgentName("Ada"), provider="scripted", tools=("list_files", "write_file")
            )
        ],
        tasks=[Task(id="t", prompt="write out.txt", max_attempts=3)],
        prices={"scripted": PRICE},
    )
    result = phalanx.run_sync(
        plan, workspace=ws, tools=[write_file], custom_providers={"scripted": script}
    )
    rid = result.run_id
    assert result.status == "succeeded", result.summary()
    assert result.tasks["t"].attempts == 1 and result.tasks["t"].output == "wrote out.txt"

    # write_file ran exactly once: its counter, the file's content and mtime, the journal
    assert writes == ["out.txt"]
    assert (ws / "out.txt").read_text() == "hello"
    assert (ws / "out.txt").stat().st_mtime_ns == seen["mtime"]
    called = [(e["tool"], e["turn"]) for e in events(state, rid, "tool_called")]
    assert called == [("list_files", 1), ("write_file", 2), ("list_files", 3)]

    # the attempt succeeded on its first attempt; the journal shows one call retry
    attempts = rows(state, "SELECT * FROM attempts WHERE run_id=?", rid)
    assert [(a["attempt_no"], a["outcome"]) for a in attempts] == [(1, "succeeded")]
    assert events(state, rid, "retry_scheduled") == []
    retried = events(state, rid, "call_retried")
    assert len(retried) == 1
    r = retried[0]
    assert (r["task_id"], r["attempt_id"], r["agent"]) == ("t", attempts[0]["attempt_id"], "Ada")
    assert (r["turn"], r["retry"], r["error_class"], r["status"]) == (4, 1, "rate_limited", 429)
    assert r["delay"] >= 0.05  # never sooner than Retry-After

    # the same call was sent again: same messages, not before Retry-After
    assert len(script.requests) == 5
    assert script.requests[4].messages == script.requests[3].messages
    assert seen["retried_at"] - seen["failed_at"] >= 0.05 - 1e-3

    # usage and cost: once per real call (the 429 returned none)
    assert result.usage.input_tokens == 4 * U.input_tokens
    assert result.usage.output_tokens == 4 * U.output_tokens
    assert result.usage.cost_usd == pytest.approx(4 * PRICE.cost(U))
    assert attempts[0]["input_tokens"] == 4 * U.input_tokens

    # visible: the journal's events fold to one retry, in the metrics, report and status
    journal = Journal(state / "journal.sqlite")
    typed = [e for _, e in journal.read_events(rid) if isinstance(e, CallRetried)]
    assert len(typed) == 1 and typed[0].error_class is ErrorClass.RATE_LIMITED
    assert metrics_from_journal(journal, rid).run.call_retries == 1
    report = build_report(journal, rid)
    assert report.to_dict()["metrics"]["run"]["call_retries"] == 1
    assert "call retries" in render_markdown(report)
    capsys.readouterr()
    assert main(["status", rid]) == 0
    out = capsys.readouterr().out
    assert "Call retries: 1" in out
    assert "call retry: rate_limited on Ada (task t, call 4)" in out


# -- retries spent, non-retryable, the first call ----------------------------------------


def test_spent_call_retries_fail_the_attempt_and_the_attempt_retry_runs_as_before(
    state: Path, tmp_path: Path
) -> None:
    tick, runs = ticker()
    boom = fails(ErrorClass.SERVER_ERROR, 500)
    script = ScriptedProvider(
        {
            # attempt 1: three turns, then call 4 fails on each of its 3 tries; attempt 2
            # starts the loop again from turn 1, as attempt retries always have
            "again": [
                *(call("tick", f"c{i}", n=i) for i in (1, 2, 3)),
                boom,
                boom,
                boom,
                call("tick", "c9", n=9),
                "done at last",
            ],
            "once": [call("tick", "d1", n=100), boom, boom, boom],
        }
    )
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("tick",))],
        tasks=[
            Task(id="again", prompt="work", max_attempts=2),
            Task(id="once", prompt="work", max_attempts=1),
        ],
        retry=FAST,
    )
    result = phalanx.run_sync(
        plan, workspace=tmp_path, tools=[tick], custom_providers={"scripted": script}
    )
    rid = result.run_id
    assert result.tasks["again"].state == "succeeded", result.summary()
    assert result.tasks["again"].attempts == 2
    atts = rows(
        state, "SELECT * FROM attempts WHERE run_id=? AND task_id='again' ORDER BY attempt_no", rid
    )
    assert [(a["outcome"], a["error_class"], a["status"]) for a in atts] == [
        ("failed", "server_error", 500),
        ("succeeded", None, None),
    ]
    assert atts[0]["error"].endswith("(model call 4, 3 tries)")
    retried = [e for e in events(state, rid, "call_retried") if e["task_id"] == "again"]
    assert [(e["attempt_id"], e["turn"], e["retry"]) for e in retried] == [
        (atts[0]["attempt_id"], 4, 1),
        (atts[0]["attempt_id"], 4, 2),
    ]
    assert all(0.005 <= e["delay"] <= 0.02 for e in retried)  # the plan's backoff
    scheduled = [e for e in events(state, rid, "retry_scheduled") if e["task_id"] == "again"]
    assert [(e["attempt_no"], e["error_class"]) for e in scheduled] == [(1, "server_error")]
    assert sorted(runs) == [1, 2, 3, 9, 100]  # no tool ran twice within an attempt

    once = result.tasks["once"]
    assert (once.state, once.error_class, once.attempts) == ("failed", "server_error", 1)
    assert len([e for e in events(state, rid, "call_retried") if e["task_id"] == "once"]) == 2


def test_a_non_retryable_error_is_not_retried_at_call_level(state: Path, tmp_path: Path) -> None:
    tick, runs = ticker()
    script = ScriptedProvider(
        [*(call("tick", f"c{i}", n=i) for i in (1, 2, 3)), fails(ErrorClass.AUTH, 401)]
    )
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("tick",))],
        tasks=[Task(id="t", prompt="work", max_attempts=3)],
        retry=FAST,
    )
    result = phalanx.run_sync(
        plan, workspace=tmp_path, tools=[tick], custom_providers={"scripted": script}
    )
    t = result.tasks["t"]
    assert (t.state, t.error_class, t.attempts) == ("failed", "auth", 1)
    assert len(script.requests) == 4 and runs == [1, 2, 3]
    assert events(state, result.run_id, "call_retried") == []
    assert "tries" not in (t.error or "")


def test_a_first_call_failure_is_retried_as_an_attempt_as_before(state: Path) -> None:
    script = ScriptedProvider([fails(ErrorClass.OVERLOADED, 529), "fine"])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted")],
        tasks=[Task(id="t", prompt="work", max_attempts=2)],
        retry=FAST,
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.tasks["t"].state == "succeeded" and result.tasks["t"].attempts == 2
    assert events(state, result.run_id, "call_retried") == []
    assert [e["error_class"] for e in events(state, result.run_id, "retry_scheduled")] == [
        "overloaded"
    ]


def test_call_attempts_1_turns_call_retries_off(state: Path, tmp_path: Path) -> None:
    tick, runs = ticker()
    script = ScriptedProvider(
        [call("tick", "c1", n=1), fails(ErrorClass.STREAM_CUT), call("tick", "c2", n=2), "ok"]
    )
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", tools=("tick",))],
        tasks=[Task(id="t", prompt="work", max_attempts=2)],
        retry=dataclasses.replace(FAST, call_attempts=1),
    )
    result = phalanx.run_sync(
        plan, workspace=tmp_path, tools=[tick], custom_providers={"scripted": script}
    )
    assert result.tasks["t"].state == "succeeded" and result.tasks["t"].attempts == 2
    assert events(state, result.run_id, "call_retried") == []
    assert runs == [1, 2]


# -- Retry-After and the shared pause, on a virtual clock --------------------------------


class _Clocked(ScriptedProvider):
    """A scripted model that notes the loop time of every request, per task."""

    def __init__(self, script: Any) -> None:
        super().__init__(script)
        self.sent: dict[str, list[float]] = {}

    async def complete(self, request: CompletionRequest) -> Completion:
        self.sent.setdefault(request.task_id, []).append(asyncio.get_running_loop().time())
        return await super().complete(request)


def test_a_retry_after_longer_than_the_backoff_is_honoured_and_pauses_the_key(
    state: Path, tmp_path: Path
) -> None:
    tick, _ = ticker()

    @tool
    async def wait(seconds: float) -> str:
        """Wait a while.

        Args:
            seconds: how long
        """
        await asyncio.sleep(seconds)
        return "waited"

    script = _Clocked(
        {
            "a": [
                call("tick", "a1", n=1),
                fails(ErrorClass.RATE_LIMITED, 429, retry_after=30.0),
                "a done",
            ],
            # b's second call falls inside a's pause: it waits for the key like everyone
            "b": [call("wait", "b1", seconds=5.0), "b done"],
            "c": [call("tick", "c1", n=1), fails(ErrorClass.OVERLOADED, 529), "c done"],
        }
    )
    plan = Plan.build(
        agents=AgentSpec(provider="scripted", tools=("tick", "wait")).clone(3),
        tasks=[Task(id=x, prompt="work") for x in ("a", "b", "c")],
        retry=RetryConfig(base_seconds=1.0, cap_seconds=2.0),
        policy="round_robin",
    )
    result = run_virtual(
        phalanx.run(
            plan, workspace=tmp_path, tools=[tick, wait], custom_providers={"scripted": script}
        )
    )
    assert result.status == "succeeded", result.summary()
    by_task = {e["task_id"]: e for e in events(state, result.run_id, "call_retried")}
    assert by_task["a"]["delay"] == 30.0  # Retry-After, not the 0.5-1 s backoff
    a = script.sent["a"]
    assert len(a) == 3 and 30.0 <= a[2] - a[1] < 30.5
    b = script.sent["b"]
    assert b[1] - a[1] >= 30.0 - 1e-9  # paused for everyone until a's Retry-After ended
    waits = [e for e in events(state, result.run_id, "agent_waiting") if e["task_id"] == "b"]
    assert waits and waits[0]["key"] == "scripted"
    # no Retry-After: the plan's backoff for a first retry, in [base/2, base]
    assert 0.5 <= by_task["c"]["delay"] <= 1.0
    c = script.sent["c"]
    assert by_task["c"]["delay"] - 1e-6 <= c[2] - c[1] < 30.0


# -- the executor with a recording gate ----------------------------------------------------


class _Recording(Gate):
    def __init__(self) -> None:
        self.spent: list[Usage] = []
        self.paused: list[tuple[str, float]] = []
        self.notes: list[tuple[type[Event], dict[str, Any]]] = []
        self.settled: list[int] = []
        self.stop: str | None = None

    def settle(self, ticket: object, tokens: int) -> None:
        self.settled.append(tokens)

    def pause(self, key: str, seconds: float) -> None:
        self.paused.append((key, seconds))

    def spend(self, usage: Usage) -> None:
        self.spent.append(usage)

    def stopped(self) -> str | None:
        return self.stop

    def note(self, event: type[Event], **fields: Any) -> None:
        self.notes.append((event, fields))


def _runner(
    tmp_path: Path, script: Any, gate: Gate, **kw: Any
) -> tuple[AgentRunner, Attempt, list[int]]:
    tick, runs = ticker()
    runner = AgentRunner(
        AgentSpec(name=AgentName("Ada"), provider="scripted", tools=("tick",)),
        script,
        "m",
        gate=gate,
        key="scripted:m",
        tools={"tick": tick},
        tool_context=ToolContext(workspace=Workspace(tmp_path)),
        retry=kw.pop("retry", FAST),
        **kw,
    )
    attempt = Attempt(
        run_id="r",
        attempt_id=7,
        attempt_no=1,
        task=Task(id="t", prompt="work"),
        agent="Ada",
    )
    return runner, attempt, runs


def test_a_failed_call_with_usage_is_charged_once_and_a_429_pauses_the_key(
    tmp_path: Path,
) -> None:
    partial = Usage(input_tokens=50)
    gate = _Recording()
    script = ScriptedProvider(
        [
            call("tick", "c1", n=1),
            fails(ErrorClass.STREAM_CUT, usage=partial),
            fails(ErrorClass.RATE_LIMITED, 429, retry_after=0.01),
            "done",
        ]
    )
    runner, attempt, runs = _runner(tmp_path, script, gate)
    outcome = asyncio.run(runner.run(attempt))
    assert outcome.ok and outcome.output == "done" and runs == [1]
    assert outcome.turns == 2  # two turns of the loop; the retries are not turns
    assert gate.spent == [U, partial, Usage(input_tokens=10, output_tokens=5)]
    assert outcome.usage == U + partial + Usage(input_tokens=10, output_tokens=5)
    assert gate.paused == [("scripted:m", 0.01)]  # the 429's Retry-After, through the gate
    retries = [f for e, f in gate.notes if e is CallRetried]
    assert [(f["turn"], f["retry"], f["error_class"]) for f in retries] == [
        (2, 1, ErrorClass.STREAM_CUT),
        (2, 2, ErrorClass.RATE_LIMITED),
    ]
    assert retries[1]["delay"] >= 0.01 and retries[1]["attempt_id"] == 7
    assert script.requests[1].messages == script.requests[2].messages == script.requests[3].messages


def test_a_spent_budget_during_the_backoff_stops_the_retry(tmp_path: Path) -> None:
    gate = _Recording()

    def cut(request: CompletionRequest) -> Completion:
        gate.stop = "budget exhausted: max_tokens"
        raise ProviderError("cut", error_class=ErrorClass.STREAM_CUT)

    script = ScriptedProvider([call("tick", "c1", n=1), cut, "never sent"])
    runner, attempt, _ = _runner(tmp_path, script, gate)
    outcome = asyncio.run(runner.run(attempt))
    assert not outcome.ok and outcome.error_class is ErrorClass.BUDGET
    assert len(script.requests) == 2


class _HangsOnce:
    """Answers with a tool call, then hangs once, then answers."""

    name, simulated = "hangs", True

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        if self.calls == 1:
            return call("tick", "c1", n=1)
        if self.calls == 2:
            await asyncio.sleep(3600)
        return Completion(text="late but fine", usage=U)

    async def aclose(self) -> None:
        return None


def test_a_call_that_passes_its_timeout_is_retried_at_call_level(tmp_path: Path) -> None:
    gate = _Recording()
    provider = _HangsOnce()
    runner, attempt, runs = _runner(tmp_path, provider, gate)
    attempt = dataclasses.replace(attempt, task=Task(id="t", prompt="work", timeout=2.0))
    outcome = run_virtual(runner.run(attempt))
    assert outcome.ok and outcome.output == "late but fine" and runs == [1]
    assert provider.calls == 3
    retries = [f for e, f in gate.notes if e is CallRetried]
    assert [(f["turn"], f["error_class"]) for f in retries] == [(2, ErrorClass.TIMEOUT)]


# -- the Ray host side -----------------------------------------------------------------------


def test_a_remote_host_retries_the_call_and_sends_the_event_and_pause_back(
    tmp_path: Path,
) -> None:
    tick, runs = ticker()
    script = ScriptedProvider(
        [call("tick", "c1", n=1), fails(ErrorClass.RATE_LIMITED, 429, retry_after=0.01), "ok"]
    )
    bp = AgentBlueprint(
        spec=AgentSpec(role="coder", name=AgentName("Ada"), tools=("tick",)),
        key="scripted",
        model="",
        provider=script,
        tools=(tick,),
        workspace=str(tmp_path),
        retry=RetryConfig(base_seconds=0.01, cap_seconds=0.02, call_attempts=4),
    )

    async def main() -> tuple[list[Any], Any]:
        core = HostCore("h1", {"Ada": bp})
        assert core.runners["Ada"].retry == bp.retry
        assert blueprint_of(core.runners["Ada"], frozenset()).retry == bp.retry
        run = asyncio.create_task(
            core.run(
                Attempt(
                    run_id="r",
                    attempt_id=3,
                    attempt_no=1,
                    task=Task(id="t", prompt="x"),
                    agent="Ada",
                )
            )
        )
        mail: list[Any] = []
        while not run.done():  # the driver: answer permits once the key is governed
            for m in await core.messages(wait=0.05):
                mail.append(m)
                if m[0] == "acquire":
                    core.reply(m[1], "ticket")
                elif m[0] == "commit":  # tick writes: its start is committed before it runs
                    core.reply(m[1], None)
        messages, outcome = await run
        return mail + messages, outcome

    mail, outcome = asyncio.run(main())
    assert outcome.ok and outcome.output == "ok" and runs == [1]
    assert ("pause", "scripted", 0.01) in mail
    notes = [m for m in mail if m[0] == "note" and m[1] is CallRetried]
    assert len(notes) == 1
    assert notes[0][2]["turn"] == 2 and notes[0][2]["error_class"] is ErrorClass.RATE_LIMITED
    assert len([m for m in mail if m[0] == "spend"]) == 2  # two answered calls
    assert [m[0] for m in mail].count("acquire") == 1  # the retry asked the driver
    assert [m[0] for m in mail].count("commit") == 1  # the one tool call's start


# -- the event, the status fold, metrics -----------------------------------------------------


def _retry_event(ts: float = 101.0, delay: float = 2.0) -> CallRetried:
    return CallRetried(
        ts=ts,
        task_id="t",
        attempt_id=1,
        agent="Ada",
        turn=4,
        retry=1,
        error_class=ErrorClass.RATE_LIMITED,
        delay=delay,
        status=429,
    )


def _run_events() -> list[Event]:
    return [
        RunStarted(
            ts=100.0,
            run_id="r1",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=False,
            agents=(AgentInfo(name="Ada", role="coder", provider="x"),),
            tasks=(TaskInfo(id="t", title="the task", category="other"),),
        ),
        AttemptStarted(ts=100.0, task_id="t", attempt_id=1, attempt_no=1, agent="Ada"),
        _retry_event(),
    ]


def test_the_event_round_trips_through_the_journal_form() -> None:
    e = _retry_event()
    assert event_from_dict(json.loads(event_to_json(e))) == e
    assert event_from_dict(event_to_dict(e)) == e
    assert event_to_dict(e)["type"] == "call_retried"


def test_status_shows_the_retry_on_the_agent_line_and_in_alerts() -> None:
    evs = _run_events()
    tracker = StatusTracker()
    for e in evs:
        tracker.emit(e)
    during = tracker.snapshot(now=102.0)
    ada = during.agents[0]
    assert ada.state == "waiting"
    assert "waiting: retry of model call 4 after rate_limited" in agent_line(ada, 102.0)
    assert during.call_retries == 1 and during.to_dict()["call_retries"] == 1
    assert "call retry: rate_limited on Ada (task t, call 4)" in during.alerts
    assert "Call retries: 1 (model calls sent again, turns kept)" in swarm_lines(during)
    after = tracker.snapshot(now=104.0)
    assert after.agents[0].state == "running"
    # a pure fold: the same events, the same snapshot
    assert fold(evs) == fold(list(evs))


def test_metrics_count_call_retries_per_scope() -> None:
    m = compute_metrics([*_run_events(), _retry_event(ts=104.0)])
    assert m.run.call_retries == 2
    assert m.by_agent["Ada"].call_retries == 2 and m.by_role["coder"].call_retries == 2
    assert m.to_dict()["run"]["call_retries"] == 2
    lines = prometheus_text(m).splitlines()
    assert 'phalanx_call_retries_total{run="r1",role="coder",agent="Ada"} 2' in lines
    assert sum(line.startswith("phalanx_call_retries_total{") for line in lines) == 1


# -- the plan ----------------------------------------------------------------------------------

PLAN = """\
provider: sim
retry:
  call_attempts: {value}
agents:
  - role: writer
tasks:
  - id: a
    prompt: do a
"""


def test_call_attempts_loads_and_survives_the_journal_round_trip(tmp_path: Path) -> None:
    assert DEFAULT_CALL_ATTEMPTS == 3 and RetryConfig().call_attempts == 3
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(value=5))
    plan = load_plan(path)
    assert plan.retry.call_attempts == 5
    assert plan_from_data(json.loads(json.dumps(plan_to_dict(plan)))).retry.call_attempts == 5
    path.write_text(PLAN.replace("retry:\n  call_attempts: {value}\n", ""))
    assert load_plan(path).retry.call_attempts == DEFAULT_CALL_ATTEMPTS


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "lots", "true", "null"])
def test_a_bad_call_attempts_is_one_plan_error_line(value: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(value=value))
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert caught.value.field == "retry.call_attempts" and caught.value.line == 3
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [0, -2, 2.0, True, None])
def test_a_bad_call_attempts_in_python_is_a_plan_error(value: Any) -> None:
    with pytest.raises(PlanError) as caught:
        RetryConfig(call_attempts=value)
    assert caught.value.field == "retry.call_attempts"


def test_call_retries_are_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "guarantees.md").read_text()
    assert "retry.call_attempts" in doc and "test_call_retries.py" in doc

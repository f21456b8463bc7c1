"""OpenTelemetry GenAI spans (run -> invoke_agent -> chat / execute_tool), checked with the
SDK's in-memory exporter; switching them on from the CLI and the OTEL_* variables."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import phalanx
from conftest import sim_plan, write_plan
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.tools import tool
from phalanx.cli.app import main
from phalanx.cost import Usage
from phalanx.events import (
    AgentTurn,
    AttemptFinished,
    AttemptStarted,
    CallRetried,
    RunFinished,
    RunStarted,
    ToolCalled,
    ToolStarted,
)
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.ids import AgentName
from phalanx.journal import Journal
from phalanx.plan import RetryConfig
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.status import otel as otel_mod
from phalanx.status.otel import PROVIDER_NAMES, OTelSink, otel_from_env, otel_wanted
from phalanx.testing import ScriptedProvider

U = Usage(input_tokens=100, output_tokens=20)
NS = 1_000_000_000


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    provider.shutdown()


def _sink(provider: TracerProvider) -> OTelSink:
    return OTelSink(provider.get_tracer("test"))


def _by_op(spans: Any, op: str) -> list[ReadableSpan]:
    return [s for s in spans if s.attributes["gen_ai.operation.name"] == op]


def _children(spans: Any, parent: ReadableSpan) -> list[ReadableSpan]:
    pid = parent.context.span_id
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == pid),
        key=lambda s: (s.start_time, s.end_time),
    )


# -- a simulated run with failures ---------------------------------------------------------


def test_sim_run_span_tree_and_gen_ai_attributes(state: Path, exporter: Any) -> None:
    exp, provider = exporter
    # 30% of calls fail (retried); 10 attempts make a task failing them all (0.3**10 per
    # task) too unlikely to flake the run's own success, which the span must show
    data = sim_plan(20, agents=3, latency_ms=5, faults={"server_error": 0.3}, max_attempts=10)
    result = phalanx.run_sync(phalanx.Plan.from_dict(data), sinks=[_sink(provider)])
    spans = exp.get_finished_spans()

    (run,) = _by_op(spans, "invoke_workflow")
    assert run.name == f"invoke_workflow {data['name']}" and run.parent is None
    assert run.attributes["gen_ai.workflow.name"] == data["name"]
    assert run.attributes["phalanx.run_id"] == result.run_id
    assert run.attributes["phalanx.session"] == 1
    assert result.status == "succeeded", result.summary()
    assert run.status.status_code is not StatusCode.ERROR  # the run succeeded

    agents = _by_op(spans, "invoke_agent")
    assert len(agents) == result.snapshot.attempts
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in agents)
    assert all(s.context.trace_id == run.context.trace_id for s in spans)
    for s in agents:
        assert s.name == f"invoke_agent {s.attributes['gen_ai.agent.name']}"
        assert s.kind is SpanKind.INTERNAL
        assert s.attributes["gen_ai.provider.name"] == "phalanx.sim"
        assert s.attributes["gen_ai.request.model"] == "sim"
        assert s.attributes["phalanx.run_id"] == result.run_id
        assert s.attributes["phalanx.task_id"] in result.tasks
        assert s.attributes["phalanx.attempt_no"] >= 1
        assert run.start_time <= s.start_time <= s.end_time <= run.end_time
    failed = [s for s in agents if not s.attributes["phalanx.ok"]]
    assert len(failed) == result.snapshot.failed_attempts > 0
    assert all(s.attributes["error.type"] == "server_error" for s in failed)
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)
    assert all("error.type" not in s.attributes for s in agents if s.attributes["phalanx.ok"])

    # one chat span per attempt (the sim answers in one request), a child of its attempt
    chats = _by_op(spans, "chat")
    assert len(chats) == len(agents)
    for a in agents:
        (chat,) = _children(spans, a)
        assert chat.name == "chat sim" and chat.kind is SpanKind.CLIENT
        assert chat.attributes["gen_ai.provider.name"] == "phalanx.sim"
        assert chat.attributes.get("error.type") == a.attributes.get("error.type")
        assert (chat.start_time, chat.end_time) == (a.start_time, a.end_time)
        # its only request: the attempt's usage is the request's
        for k in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            assert chat.attributes[k] == a.attributes[k]
    total_in = sum(s.attributes["gen_ai.usage.input_tokens"] for s in agents)
    assert total_in == result.usage.input_tokens > 0


# -- tools, a call retry, a failed attempt, times from the journal --------------------------


def _call(name: str, cid: str, **arguments: Any) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=(ToolCall(id=cid, name=name, arguments=arguments),),
    )


def _fails(cls: ErrorClass, status: int) -> Any:
    def step(request: CompletionRequest) -> Completion:
        raise ProviderError(f"simulated {cls.value}", error_class=cls, status=status)

    return step


@tool
def tick(n: int) -> str:
    """Count one step of work.

    Args:
        n: the step
    """
    return f"tick {n}"


def _tool_run(tmp_path: Path, sinks: list[Any]) -> phalanx.RunResult:
    script = ScriptedProvider(
        {
            # turn 1: two tools; turn 2: a 429, then its retry asks for a tool that does not
            # exist; turn 3: the answer
            "tools": [
                Completion(
                    text="",
                    stop_reason="tool_use",
                    usage=U,
                    tool_calls=(
                        ToolCall(id="c1", name="tick", arguments={"n": 1}),
                        ToolCall(id="c2", name="tick", arguments={"n": 2}),
                    ),
                ),
                _fails(ErrorClass.RATE_LIMITED, 429),
                _call("nope", "c3"),
                "done",
            ],
            # a non-retryable failure of the first request
            "denied": [_fails(ErrorClass.AUTH, 401)],
        }
    )
    plan = Plan.build(
        agents=[AgentSpec(name=AgentName("Ada"), provider="scripted", tools=("tick",))],
        tasks=[
            Task(id="tools", prompt="count", max_attempts=1),
            Task(id="denied", prompt="count", max_attempts=1),
        ],
        retry=RetryConfig(base_seconds=0.01, cap_seconds=0.02),
    )
    return phalanx.run_sync(
        plan,
        workspace=tmp_path,
        tools=[tick],
        custom_providers={"scripted": script},
        sinks=sinks,
    )


def _attempt_of(spans: Any, task: str) -> ReadableSpan:
    (a,) = [s for s in _by_op(spans, "invoke_agent") if s.attributes["phalanx.task_id"] == task]
    return a


def test_tool_calls_call_retries_and_failures_make_the_span_tree(
    state: Path, tmp_path: Path, exporter: Any
) -> None:
    exp, provider = exporter
    result = _tool_run(tmp_path, [_sink(provider)])
    assert result.tasks["tools"].ok and not result.tasks["denied"].ok
    spans = exp.get_finished_spans()
    (run,) = _by_op(spans, "invoke_workflow")
    assert run.attributes["error.type"] == "failed"  # a task failed: so did the run
    assert run.status.status_code is StatusCode.ERROR

    a = _attempt_of(spans, "tools")
    assert a.name == "invoke_agent Ada" and a.attributes["gen_ai.agent.name"] == "Ada"
    assert a.attributes["gen_ai.provider.name"] == "scripted"  # a custom provider: its name
    assert a.attributes["gen_ai.usage.input_tokens"] == 2 * U.input_tokens + 10  # "done": 10
    assert a.attributes["phalanx.model_requests"] == 4
    assert a.status.status_code is not StatusCode.ERROR
    kids = _children(spans, a)
    assert [
        (s.name, s.attributes.get("phalanx.turn"), s.attributes.get("error.type")) for s in kids
    ] == [
        ("chat", 1, None),
        ("execute_tool tick", 1, None),
        ("execute_tool tick", 1, None),
        ("chat", 2, "rate_limited"),  # the 429: one span per try
        ("chat", 2, None),
        ("execute_tool nope", 2, "unknown_tool"),
        ("chat", 3, None),
    ]
    assert [s.attributes.get("phalanx.try") for s in kids if s.name == "chat"] == [1, 1, 2, 1]
    tools = _by_op(kids, "execute_tool")
    assert [s.attributes["gen_ai.tool.name"] for s in tools] == ["tick", "tick", "nope"]
    assert all(s.attributes["gen_ai.tool.type"] == "function" for s in tools)
    assert tools[2].status.status_code is StatusCode.ERROR
    assert all(s.kind is SpanKind.INTERNAL for s in tools)
    # usage per request is not in the journal: only the attempt has it (four requests)
    assert all("gen_ai.usage.input_tokens" not in s.attributes for s in _by_op(kids, "chat"))
    # the steps follow each other, inside the attempt
    for before, after in itertools.pairwise(kids):
        assert before.end_time <= after.start_time
    assert a.start_time <= kids[0].start_time and kids[-1].end_time <= a.end_time

    d = _attempt_of(spans, "denied")
    assert d.attributes["error.type"] == "auth" and d.status.status_code is StatusCode.ERROR
    (chat,) = _children(spans, d)
    assert chat.attributes["error.type"] == "auth" and chat.status.status_code is StatusCode.ERROR


def test_span_times_are_the_journals_not_the_sinks(
    state: Path, tmp_path: Path, exporter: Any
) -> None:
    """Spans made later from the journal's events carry the events' times exactly."""
    exp, provider = exporter
    result = _tool_run(tmp_path, [])
    journal = Journal(state / "journal.sqlite")
    try:
        evs = [e for _, e in journal.read_events(result.run_id)]
    finally:
        journal.close()
    sink = _sink(provider)
    for e in evs:
        sink.emit(e)
    spans = exp.get_finished_spans()

    def ns(ts: float) -> int:
        return int(ts * NS)

    (run,) = _by_op(spans, "invoke_workflow")
    started = next(e for e in evs if isinstance(e, RunStarted))
    finished = next(e for e in evs if isinstance(e, RunFinished))
    assert (run.start_time, run.end_time) == (ns(started.ts), ns(finished.ts))
    for e in evs:
        if isinstance(e, AttemptStarted | AttemptFinished):
            span = _attempt_of(spans, e.task_id)
            assert (span.start_time if isinstance(e, AttemptStarted) else span.end_time) == ns(e.ts)
    a = _attempt_of(spans, "tools")
    kids = _children(spans, a)
    called = [e for e in evs if isinstance(e, ToolCalled)]
    assert [(s.start_time, s.end_time) for s in _by_op(kids, "execute_tool")] == [
        (ns(e.ts - e.duration), ns(e.ts)) for e in called
    ]
    turns = [e for e in evs if isinstance(e, AgentTurn) and e.task_id == "tools"]
    asked = [s for s in _by_op(kids, "chat") if "error.type" not in s.attributes][:2]
    assert [s.end_time for s in asked] == [ns(e.ts) for e in turns]  # asked for tools then
    (retried,) = [e for e in evs if isinstance(e, CallRetried)]
    failed_try = next(s for s in kids if s.attributes.get("error.type") == "rate_limited")
    assert failed_try.end_time == ns(retried.ts)
    next_try = kids[kids.index(failed_try) + 1]
    assert next_try.start_time == ns(retried.ts + retried.delay)  # sent after its delay
    assert retried.delay > 0


def test_agent_turn_and_tool_duration_place_the_spans(exporter: Any) -> None:
    """``AgentTurn`` ends the model request; a tool span is its ``duration`` up to its end."""
    exp, provider = exporter
    sink = _sink(provider)
    ids = {"task_id": "t", "attempt_id": 1, "agent": "A"}
    sink.emit(AttemptStarted(ts=100.0, attempt_no=1, **ids))
    sink.emit(AgentTurn(ts=102.0, turn=1, tools=("x",), **ids))
    sink.emit(ToolStarted(ts=102.5, tool="x", turn=1, call_id="c1", **ids))
    sink.emit(ToolCalled(ts=105.0, tool="x", ok=True, turn=1, duration=2.0, call_id="c1", **ids))
    sink.emit(AttemptFinished(ts=109.0, ok=True, duration=9.0, usage=U, **ids))
    spans = exp.get_finished_spans()
    chats = sorted((s for s in spans if s.name == "chat"), key=lambda s: s.start_time)
    assert [(s.start_time / NS, s.end_time / NS) for s in chats] == [(100.0, 102.0), (105.0, 109.0)]
    (t,) = [s for s in spans if s.name == "execute_tool x"]
    assert (t.start_time / NS, t.end_time / NS) == (103.0, 105.0)
    assert t.attributes["gen_ai.tool.call.id"] == "c1"


def test_provider_names() -> None:
    model = otel_mod._model_of
    assert model("anthropic:claude-sonnet-4-5") == otel_mod._Model(
        "anthropic", "claude-sonnet-4-5", "anthropic:claude-sonnet-4-5"
    )
    assert model("openai:gpt-5").provider == "openai"
    assert model("openai-compatible:qwen3").provider == "openai"  # the API flavour
    assert model("openai-compatible:qwen3").full == "openai-compatible:qwen3"
    assert model("local:smollm2").provider == "llama_cpp"
    assert (model("sim").provider, model("sim").model) == ("phalanx.sim", "sim")
    assert (model("claude-code").provider, model("claude-code").model) == ("anthropic", "")
    assert model("mine").provider == "mine"
    assert set(PROVIDER_NAMES) >= {"anthropic", "openai", "openai-compatible", "local", "sim"}


def test_a_broken_span_never_breaks_the_run(state: Path) -> None:
    class Broken:
        def start_span(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("exporter down")

    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(3)), sinks=[OTelSink(Broken())])
    assert result.status == "succeeded"


# -- switching it on -------------------------------------------------------------------------


def test_otel_wanted_by_flag_or_variables() -> None:
    assert not otel_wanted(False, {})
    assert otel_wanted(True, {})
    assert otel_wanted(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert otel_wanted(False, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"})
    assert otel_wanted(False, {"OTEL_TRACES_EXPORTER": "console"})
    assert not otel_wanted(True, {"OTEL_TRACES_EXPORTER": "none"})
    assert not otel_wanted(True, {"OTEL_SDK_DISABLED": "true"})


def test_missing_otlp_exporter_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_mod, "_has", lambda m: "exporter" not in m)
    # the environment alone asks for OTLP: one line, no spans
    setup = otel_from_env(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert setup.sink is None
    assert setup.note == (
        "OTLP export needs its exporter: pip install opentelemetry-exporter-otlp-proto-http"
    )
    grpc = otel_from_env(
        False, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp"}
    )
    assert grpc.note.endswith("pip install opentelemetry-exporter-otlp-proto-grpc")
    # --otel: the same line, and the spans go to the console exporter on stderr
    setup = otel_from_env(True, {})
    assert setup.sink is not None and setup.provider is not None
    assert "pip install opentelemetry-exporter-otlp-proto-http" in setup.note
    assert setup.note.endswith("spans: console (stderr)")
    setup.close()
    monkeypatch.setattr(otel_mod, "_has", lambda m: False)
    assert (
        otel_from_env(True, {}).note == "tracing needs the otel extra: pip install 'phalanx[otel]'"
    )


def test_the_applications_tracer_provider_is_used(
    state: Path, monkeypatch: pytest.MonkeyPatch, exporter: Any
) -> None:
    exp, provider = exporter
    import opentelemetry.trace as api

    monkeypatch.setattr(api, "get_tracer_provider", lambda: provider)
    setup = otel_from_env(True, {})
    assert setup.note == "spans: the application's TracerProvider" and setup.provider is None
    assert setup.sink is not None
    phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(2)), sinks=[setup.sink])
    assert len(_by_op(exp.get_finished_spans(), "invoke_agent")) == 2


def test_cli_run_otel_console_spans_on_stderr(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(3, agents=2))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert main(["run", str(plan), "--json", "-q"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "succeeded"  # stdout: the result only
    assert "otel: spans: console (stderr)" in err
    names = [json.loads(chunk)["name"] for chunk in _json_objects(err)]
    assert names.count("invoke_agent") == 0  # names carry the agent
    assert sum(n.startswith("invoke_agent ") for n in names) == 3
    assert sum(n == "chat sim" for n in names) == 3
    assert sum(n.startswith("invoke_workflow ") for n in names) == 1
    rid = json.loads(out)["run_id"]
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    # resume takes --otel too (a succeeded run: nothing to resume, the flag still says where)
    main(["resume", rid, "--otel", "-q"])
    err = capsys.readouterr().err
    assert "otel: " in err


def _json_objects(text: str) -> list[str]:
    """The console exporter's pretty-printed spans among other lines."""
    out, depth, buf = [], 0, []
    for line in text.splitlines():
        if depth == 0 and line.startswith("{"):
            buf = []
        if depth or line.startswith("{"):
            buf.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                out.append("\n".join(buf))
    return out

"""OpenTelemetry traces of a run in the GenAI semantic conventions (optional extra ``otel``).

    from phalanx.status.otel import OTelSink
    phalanx.run_sync(plan, sinks=[OTelSink()])      # spans go to your configured exporter

The sink turns the run's events into one trace per session (``phalanx run`` turns it on
with ``--otel`` or the standard ``OTEL_*`` variables, :func:`otel_from_env`)::

    invoke_workflow {plan}                 the session (gen_ai.operation.name invoke_workflow)
    └── invoke_agent {agent}               one per attempt (invoke_agent)
        ├── chat {model}                   one per model request (chat): a retried call
        │                                  is one span per try
        └── execute_tool {tool}            one per tool call (execute_tool)

Attributes follow the conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.agent.name``, ``gen_ai.tool.name``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``error.type`` with span status ERROR);
phalanx's own are under ``phalanx.*`` (run id, session, task id, attempt id and number,
model turn, cost). Nothing from prompts, answers or tool arguments is attached.

``gen_ai.provider.name`` by phalanx provider (:data:`PROVIDER_NAMES`): ``anthropic:`` and
``claude-code`` are ``anthropic``; ``openai:`` and ``openai-compatible:`` are ``openai`` (the
API flavour, as the conventions ask for OpenAI-compatible servers; ``phalanx.provider`` keeps
the full name); ``local:`` (llama.cpp in process) is ``llama_cpp``; ``sim`` is
``phalanx.sim``; any other (custom providers) is its own name.

``error.type`` is phalanx's error class (:class:`~phalanx.exceptions.ErrorClass`:
``rate_limited``, ``server_error``, ``timeout``, ``max_turns``, ...); a failed tool call's is
its error code (``unknown_tool``, ``invalid_arguments``, ... or ``tool_error``); a session's
is its run status when it did not succeed (``failed``, ``interrupted``, ...).

Times are the journal's, never the moment the sink saw an event: an attempt span runs from
``AttemptStarted`` to ``AttemptFinished``; a model request from the end of the step before it
(the attempt's start, the last tool call, a rejected answer, or ``delay`` after a failed try
of the same call) to the event that shows it answered: ``AgentTurn`` (it asked for tools), a
rejected answer, ``CallRetried`` (it failed), the attempt's end. A tool span runs for the
``ToolCalled`` event's ``duration``, up to its time. A resumed loop (``LoopResumed``) replays
its recorded turns without sending them: they have no chat spans. The journal has no
per-request token counts, so ``gen_ai.usage.*`` is on the attempt span (the sum of its
requests) and on a chat span only when it is the attempt's only model request.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import UsageError

__all__ = ["PROVIDER_NAMES", "OTelSetup", "OTelSink", "otel_from_env", "otel_wanted"]

_NS = 1_000_000_000
LOG = logging.getLogger("phalanx.otel")

# gen_ai.provider.name of each provider kind (the part of ``provider:model`` before the colon)
PROVIDER_NAMES: Mapping[str, str] = {
    "anthropic": "anthropic",
    "claude-code": "anthropic",
    "openai": "openai",
    "openai-compatible": "openai",
    "local": "llama_cpp",
    "sim": "phalanx.sim",
}
# attempts that failed before sending another model request: no chat span for their end
_NO_CALL = frozenset({"max_turns", "budget", "context_length", "vetoed", "in_doubt"})
# attempts whose last model request answered, the answer then refused by phalanx
_ANSWERED = frozenset({"output_invalid"})


def _version() -> str | None:
    """phalanx's version, for the tracer's instrumentation scope (None when not installed)."""
    try:
        return importlib.metadata.version("phalanx")
    except importlib.metadata.PackageNotFoundError:
        return None


def _ns(ts: float) -> int:
    return int(ts * _NS)


@dataclass(frozen=True, slots=True)
class _Model:
    provider: str  # gen_ai.provider.name
    model: str  # gen_ai.request.model ("" unknown)
    full: str  # phalanx's provider:model


def _model_of(provider: str) -> _Model:
    kind, _, model = provider.partition(":")
    kind, model = kind.strip(), model.strip()
    if kind == "sim":
        model = model or "sim"
    return _Model(PROVIDER_NAMES.get(kind, kind or "_OTHER"), model, provider)


@dataclass(slots=True)
class _Attempt:
    """An attempt's open span and where its loop is."""

    span: Any
    model: _Model
    mark: float  # the end of the last step seen (the attempt's start at first)
    turn: int = 0  # model turns that have answered
    tries: int = 1  # the try of the model request in flight
    requests: int = 0  # chat spans made


class OTelSink:
    """An EventSink turning a run's events into GenAI spans (see the module's text).
    ``tracer``: an OpenTelemetry tracer (default: the global provider's ``phalanx``)."""

    def __init__(self, tracer: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ModuleNotFoundError:
            raise UsageError(
                "OpenTelemetry spans need the otel extra: pip install 'phalanx[otel]'"
            ) from None
        self._trace = trace
        if tracer is None:
            tracer = trace.get_tracer("phalanx", _version())
        self.tracer = tracer
        self.run_id = ""
        self._run: Any = None  # the open session span
        self._models: dict[str, _Model] = {}  # agent -> its model
        self._attempts: dict[int, _Attempt] = {}

    # -- dispatch --------------------------------------------------------------------------
    def emit(self, event: Any) -> None:
        handler = _HANDLERS.get(getattr(event, "type", ""))
        if handler is None:
            return
        try:
            handler(self, event)
        except Exception:  # a sink must not break the run
            LOG.debug("OpenTelemetry span for %s failed", type(event).__name__, exc_info=True)

    def _start(self, name: str, ts: float, parent: Any, kind: str, attrs: dict[str, Any]) -> Any:
        trace = self._trace
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=getattr(trace.SpanKind, kind),
            attributes=attrs,
            start_time=_ns(ts),
        )

    def _end(self, span: Any, ts: float, error: str | None = None) -> None:
        if error:
            span.set_attribute("error.type", error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=_ns(ts))

    # -- the session -----------------------------------------------------------------------
    def _run_started(self, e: Any) -> None:
        if self._run is not None:  # a session without its end (not expected in one process)
            self._run.end(end_time=_ns(e.ts))
        self.run_id = e.run_id
        for a in e.agents:
            self._models[a.name] = _model_of(a.provider)
        attrs = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": e.plan,
            "phalanx.run_id": e.run_id,
            "phalanx.session": e.session,
            "phalanx.policy": e.policy,
            "phalanx.simulated": e.simulated,
            "phalanx.tasks": len(e.tasks),
            "phalanx.agents": len(e.agents),
        }
        self._run = self._start(f"invoke_workflow {e.plan}", e.ts, None, "INTERNAL", attrs)

    def _agent_joined(self, e: Any) -> None:
        self._models[e.agent.name] = _model_of(e.agent.provider)

    def _run_finished(self, e: Any) -> None:
        for attempt_id in list(self._attempts):  # cut short without their end: cancelled
            a = self._attempts.pop(attempt_id)
            self._end(a.span, max(e.ts, a.mark), "cancelled")
        if self._run is not None:
            self._run.set_attribute("phalanx.status", e.status)
            self._end(self._run, e.ts, None if e.status == "succeeded" else e.status)
            self._run = None

    # -- attempts --------------------------------------------------------------------------
    def _attempt_started(self, e: Any) -> None:
        self._open(e.attempt_id, e.task_id, e.agent, e.ts, e.attempt_no)

    def _open(self, attempt_id: int, task: str, agent: str, ts: float, no: int | None) -> _Attempt:
        model = self._models.get(agent) or _Model("_OTHER", "", "")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": model.provider,
            "gen_ai.agent.name": agent,
            "phalanx.run_id": self.run_id,
            "phalanx.task_id": task,
            "phalanx.attempt_id": attempt_id,
            "phalanx.provider": model.full,
        }
        if model.model:
            attrs["gen_ai.request.model"] = model.model
        if no is not None:
            attrs["phalanx.attempt_no"] = no
        span = self._start(f"invoke_agent {agent}", ts, self._run, "INTERNAL", attrs)
        a = _Attempt(span=span, model=model, mark=ts)
        self._attempts[attempt_id] = a
        return a

    def _attempt_finished(self, e: Any) -> None:
        a = self._attempts.pop(e.attempt_id, None)
        if a is None:  # its start was not seen: the span starts at its duration before
            a = self._open(e.attempt_id, e.task_id, e.agent, e.ts - e.duration, None)
        error = None if e.ok else str(e.error_class or "_OTHER")
        end = max(e.ts, a.mark)
        if e.ok or error in _ANSWERED:
            self._chat(a, end, usage=e.usage if a.requests == 0 else None)
        elif error not in _NO_CALL:
            self._chat(a, end, error, usage=e.usage if a.requests == 0 else None)
        span = a.span
        span.set_attribute("phalanx.ok", e.ok)
        span.set_attribute("gen_ai.usage.input_tokens", e.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", e.usage.output_tokens)
        span.set_attribute("phalanx.model_requests", a.requests)
        if e.usage.cost_usd is not None:
            span.set_attribute("phalanx.cost_usd", e.usage.cost_usd)
        if e.stale:
            span.set_attribute("phalanx.stale", True)
        self._end(span, end, error)

    # -- model calls and tools -------------------------------------------------------------
    def _chat(
        self, a: _Attempt, end: float, error: str | None = None, *, usage: Any = None
    ) -> None:
        """The model request in flight answered (or failed) at ``end``."""
        model = a.model
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "phalanx.turn": a.turn + 1,
            "phalanx.try": a.tries,
        }
        if model.model:
            attrs["gen_ai.request.model"] = model.model
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        name = f"chat {model.model}" if model.model else "chat"
        start = min(a.mark, end)
        self._end(self._start(name, start, a.span, "CLIENT", attrs), end, error)
        a.requests += 1
        a.mark = end

    def _answered(self, a: _Attempt, end: float) -> None:
        """The model turn in flight answered at ``end``: its chat span, the next turn next."""
        self._chat(a, end)
        a.turn += 1
        a.tries = 1

    def _call_retried(self, e: Any) -> None:
        a = self._attempts.get(e.attempt_id)
        if a is None:
            return
        a.turn = e.turn - 1  # the turn whose request failed
        self._chat(a, e.ts, str(e.error_class))
        a.tries = e.retry + 1
        a.mark = e.ts + e.delay  # the next try is sent after the delay

    def _output_rejected(self, e: Any) -> None:
        a = self._attempts.get(e.attempt_id)
        if a is not None:
            self._answered(a, e.ts)

    def _agent_turn(self, e: Any) -> None:
        """The model asked for tools (``AgentTurn``): its request ended then."""
        a = self._attempts.get(e.attempt_id)
        if a is not None and e.turn > a.turn:
            self._answered(a, e.ts)

    def _loop_resumed(self, e: Any) -> None:
        """The attempt continues an interrupted one's loop: its recorded turns are replayed
        to the model, not sent again (the tool journal's ``LoopResumed``)."""
        a = self._attempts.get(e.attempt_id)
        if a is not None:
            a.turn = max(a.turn, e.turns)
            a.span.set_attribute("phalanx.resumed_from_attempt", e.from_attempt)

    def _tool_called(self, e: Any) -> None:
        a = self._attempts.get(e.attempt_id)
        if a is None:
            return
        duration = float(getattr(e, "duration", 0.0) or 0.0)
        begin = e.ts - duration if duration > 0 else None
        if e.turn > a.turn:  # the first tool call of its turn: the model had answered
            self._answered(a, begin if begin is not None else e.ts)
        start = max(a.mark, begin) if begin is not None else a.mark
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": e.tool,
            "gen_ai.tool.type": "function",
            "phalanx.turn": e.turn,
        }
        call_id = getattr(e, "call_id", "")
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        span = self._start(f"execute_tool {e.tool}", min(start, e.ts), a.span, "INTERNAL", attrs)
        self._end(span, e.ts, None if e.ok else (e.error_code or "tool_error"))
        a.mark = max(a.mark, e.ts)


_HANDLERS: dict[str, Callable[[OTelSink, Any], None]] = {
    "run_started": OTelSink._run_started,
    "agent_joined": OTelSink._agent_joined,
    "run_finished": OTelSink._run_finished,
    "attempt_started": OTelSink._attempt_started,
    "attempt_finished": OTelSink._attempt_finished,
    "call_retried": OTelSink._call_retried,
    "output_rejected": OTelSink._output_rejected,
    "agent_turn": OTelSink._agent_turn,
    "loop_resumed": OTelSink._loop_resumed,
    "tool_called": OTelSink._tool_called,
}


# -- switching it on from the CLI ------------------------------------------------------------
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_OTLP = {  # protocol -> (module of the span exporter, its package)
    "http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "grpc": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


def otel_wanted(flag: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether to trace: ``--otel``, an OTLP endpoint, or ``OTEL_TRACES_EXPORTER`` (not
    ``none``). ``OTEL_SDK_DISABLED=true`` turns it off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return flag or bool(exporter) or any(env.get(k, "").strip() for k in _ENDPOINTS)


@dataclass
class OTelSetup:
    """What :func:`otel_from_env` made: the sink, a note for the user (what is missing, where
    spans go) and the provider to flush at the end (None: the application's own)."""

    sink: OTelSink | None
    note: str = ""
    provider: Any = None

    def close(self) -> None:
        """Send the spans still buffered (at the end of the run)."""
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _sdk_provider_set() -> bool:
    """Whether the application (or ``opentelemetry-instrument``) set a real TracerProvider."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _exporter(env: Mapping[str, str]) -> tuple[Any, str]:
    """The span exporter the variables ask for, or (None, what to install)."""
    kind = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    kind = kind.split(",")[0].strip()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr), "spans: console (stderr)"
    if kind != "otlp":
        return None, f"OTEL_TRACES_EXPORTER={kind} is not supported here (otlp or console)"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    module, package = _OTLP.get(protocol.strip(), _OTLP["http/protobuf"])
    if not _has(module):
        return None, f"OTLP export needs its exporter: pip install {package}"
    mod = __import__(module, fromlist=["OTLPSpanExporter"])
    return mod.OTLPSpanExporter(), f"spans: OTLP ({protocol})"  # reads the OTEL_* variables


def otel_from_env(flag: bool, env: Mapping[str, str] | None = None) -> OTelSetup:
    """The tracing of a CLI run: none unless :func:`otel_wanted`. A TracerProvider the
    application set already is used as it is; otherwise one of the SDK's, exporting by
    ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, to ``OTEL_EXPORTER_OTLP_*``; or
    ``console``). Without the SDK, or without the OTLP exporter package, the note says what
    to install (and ``--otel`` falls back to the console exporter on stderr)."""
    env = os.environ if env is None else env
    if not otel_wanted(flag, env):
        return OTelSetup(None)
    if not _has("opentelemetry.trace"):
        return OTelSetup(None, "tracing needs the otel extra: pip install 'phalanx[otel]'")
    if _sdk_provider_set():
        return OTelSetup(OTelSink(), "spans: the application's TracerProvider")
    if not _has("opentelemetry.sdk.trace"):
        return OTelSetup(None, "tracing needs the OpenTelemetry SDK: pip install opentelemetry-sdk")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter, note = _exporter(env)
    if exporter is None:
        if not flag:  # traced by the environment only: say what is missing, trace nothing
            return OTelSetup(None, note)
        exporter, note = ConsoleSpanExporter(out=sys.stderr), f"{note}; spans: console (stderr)"
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "phalanx"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return OTelSetup(OTelSink(provider.get_tracer("phalanx", _version())), note, provider)

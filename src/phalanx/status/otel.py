"""OpenTelemetry: one span per attempt, as an event sink (optional extra ``otel``).

    from phalanx.status.otel import OTelSink
    phalanx.run_sync(plan, sinks=[OTelSink()])      # spans go to your configured exporter

Each span is named ``phalanx.attempt``, starts and ends at the attempt's times, and carries
the run, task, agent, attempt id and number, outcome, error class and token counts. Nothing
from prompts or answers is attached.
"""

from __future__ import annotations

from typing import Any

from ..events import AttemptFinished, AttemptStarted, Event, RunStarted
from ..exceptions import UsageError

__all__ = ["OTelSink"]

_NS = 1_000_000_000


class OTelSink:
    """An EventSink turning attempts into OpenTelemetry spans."""

    def __init__(self, tracer: Any = None) -> None:
        if tracer is None:
            try:
                from opentelemetry import trace
            except ModuleNotFoundError:
                raise UsageError(
                    "OpenTelemetry spans need the otel extra: pip install 'phalanx[otel]'"
                ) from None
            tracer = trace.get_tracer("phalanx")
        self.tracer = tracer
        self.run_id = ""
        self._started: dict[int, AttemptStarted] = {}

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        elif isinstance(event, AttemptStarted):
            self._started[event.attempt_id] = event
        elif isinstance(event, AttemptFinished):
            self._span(event)

    def _span(self, e: AttemptFinished) -> None:
        start = self._started.pop(e.attempt_id, None)
        begin = start.ts if start is not None else e.ts - e.duration
        attributes: dict[str, Any] = {
            "phalanx.run_id": self.run_id,
            "phalanx.task_id": e.task_id,
            "phalanx.agent": e.agent,
            "phalanx.attempt_id": e.attempt_id,
            "phalanx.ok": e.ok,
            "phalanx.input_tokens": e.usage.input_tokens,
            "phalanx.output_tokens": e.usage.output_tokens,
        }
        if start is not None:
            attributes["phalanx.attempt_no"] = start.attempt_no
        if e.error_class:
            attributes["phalanx.error_class"] = e.error_class
        if e.usage.cost_usd is not None:
            attributes["phalanx.cost_usd"] = e.usage.cost_usd
        span = self.tracer.start_span(
            "phalanx.attempt", start_time=int(begin * _NS), attributes=attributes
        )
        if not e.ok:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, e.error_class or "failed"))
        span.end(end_time=int(max(e.ts, begin) * _NS))

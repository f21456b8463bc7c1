"""OpenTelemetry spans per attempt, into the SDK's in-memory exporter."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import phalanx
from conftest import sim_plan
from phalanx.status.otel import OTelSink


def test_one_span_per_attempt(state: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider.get_tracer("test"))
    data = sim_plan(20, agents=3, latency_ms=5, faults={"server_error": 0.3}, max_attempts=6)
    result = phalanx.run_sync(phalanx.Plan.from_dict(data), sinks=[sink])
    spans = exporter.get_finished_spans()
    assert len(spans) == result.snapshot.attempts
    failed = [s for s in spans if not s.attributes["phalanx.ok"]]
    assert len(failed) == result.snapshot.failed_attempts > 0
    assert all(s.attributes["phalanx.error_class"] == "server_error" for s in failed)
    assert {s.attributes["phalanx.run_id"] for s in spans} == {result.run_id}
    assert all(s.end_time >= s.start_time for s in spans)

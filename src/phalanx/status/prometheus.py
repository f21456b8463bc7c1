"""Prometheus text exposition of a run's :class:`~phalanx.status.metrics.Metrics`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from .metrics import Figures, Latency, Metrics

__all__ = ["prometheus_text"]


_NAME = re.compile(r"[^a-zA-Z0-9_:]")

# (name, type, help, value of a Figures)
_FIGURES: tuple[tuple[str, str, str, Any], ...] = (
    (
        "throughput_tasks_per_hour",
        "gauge",
        "Succeeded tasks per hour of wall time.",
        lambda f: f.throughput_per_hour,
    ),
    ("tasks_succeeded_total", "counter", "Succeeded tasks.", lambda f: f.tasks_succeeded),
    ("attempts_total", "counter", "Attempts started.", lambda f: f.attempts),
    (
        "attempts_failed_total",
        "counter",
        "Attempts that failed (rate-limited ones included).",
        lambda f: f.failed_attempts,
    ),
    (
        "attempts_rate_limited_total",
        "counter",
        "Attempts stopped by rate limits (backpressure).",
        lambda f: f.rate_limited_attempts,
    ),
    (
        "call_retries_total",
        "counter",
        "Model calls sent again inside their attempt (turns kept).",
        lambda f: f.call_retries,
    ),
    (
        "error_ratio",
        "gauge",
        "Failed attempts (not rate limited) over finished attempts.",
        lambda f: f.error_rate,
    ),
    (
        "backpressure_ratio",
        "gauge",
        "Rate-limited attempts over finished attempts.",
        lambda f: f.backpressure_rate,
    ),
    ("utilisation_ratio", "gauge", "Busy time over agent time.", lambda f: f.utilisation),
    ("busy_seconds_total", "counter", "Sum of attempt durations.", lambda f: f.busy_seconds),
    ("tokens_total", "counter", "Tokens of every attempt.", lambda f: f.usage.total_tokens),
    ("cost_usd_total", "counter", "Known cost in USD.", lambda f: f.cost_usd),
    (
        "token_efficiency_ratio",
        "gauge",
        "Output tokens of succeeded results over all tokens spent.",
        lambda f: f.token_efficiency,
    ),
    (
        "communication_overhead_ratio",
        "gauge",
        "Communication tokens over attempt tokens.",
        lambda f: f.communication_overhead,
    ),
)
_RUN_ONLY: tuple[tuple[str, str, str, Any], ...] = (
    ("wall_seconds", "gauge", "Active time (sum of session spans).", lambda m: m.wall_seconds),
    (
        "calendar_seconds",
        "gauge",
        "Calendar time (first start to last end, downtime between sessions included).",
        lambda m: m.calendar_seconds,
    ),
    ("sessions", "gauge", "Sessions (1 + resumes).", lambda m: m.sessions),
    ("speedup_ratio", "gauge", "Speedup over a sequential run.", lambda m: m.speedup),
    (
        "scaling_efficiency_ratio",
        "gauge",
        "Speedup per agent.",
        lambda m: m.scaling_efficiency,
    ),
)
_LATENCIES = (
    ("task_latency_seconds", "Task latency, first attempt start to success.", "task_latency"),
    ("attempt_service_seconds", "Attempt service time.", "attempt_latency"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{_NAME.sub("_", k)}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if isinstance(value, bool | int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _scopes(m: Metrics, run_id: str) -> list[tuple[dict[str, str], Figures]]:
    out: list[tuple[dict[str, str], Figures]] = [({"run": run_id}, m.run)]
    out += [({"run": run_id, "role": r}, f) for r, f in m.by_role.items()]
    out += [
        ({"run": run_id, "agent": a, "role": m.agent_roles.get(a, "")}, f)
        for a, f in m.by_agent.items()
    ]
    return out


def _latency_lines(name: str, attr: str, scopes: list[tuple[dict[str, str], Figures]]) -> list[str]:
    lines: list[str] = []
    for labels, f in scopes:
        lat: Latency = getattr(f, attr)
        for q, v in (("0.5", lat.p50), ("0.95", lat.p95)):
            if v is not None:
                lines.append(f"{name}{_labels({**labels, 'quantile': q})} {_number(v)}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(lat.total)}")
        lines.append(f"{name}_count{_labels(labels)} {lat.count}")
    return lines


def prometheus_text(metrics: Metrics, run_id: str | None = None) -> str:
    """The metrics in the Prometheus text exposition format (names ``phalanx_*``; labels
    ``run``, ``role``, ``agent``). Unknown values (``None``) are left out."""
    rid = run_id if run_id is not None else metrics.run_id
    scopes = _scopes(metrics, rid)
    lines: list[str] = []
    for short, kind, help_text, get in _RUN_ONLY:
        value = get(metrics)
        if value is not None:
            name = f"phalanx_{short}"
            lines += _header(name, kind, help_text)
            lines.append(f"{name}{_labels({'run': rid})} {_number(value)}")
    name = "phalanx_tasks"
    lines += _header(name, "gauge", "Tasks by final state.")
    for state, n in sorted(metrics.task_states.items()):
        lines.append(f"{name}{_labels({'run': rid, 'state': state})} {n}")
    for short, kind, help_text, get in _FIGURES:
        name = f"phalanx_{short}"
        samples = [(labels, get(f)) for labels, f in scopes]
        samples = [(labels, v) for labels, v in samples if v is not None]
        if samples:
            lines += _header(name, kind, help_text)
            lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in samples]
    for short, help_text, attr in _LATENCIES:
        name = f"phalanx_{short}"
        lines += [*_header(name, "summary", help_text), *_latency_lines(name, attr, scopes)]
    return "\n".join(lines) + "\n"

"""Prometheus text exposition of a run's :class:`~phalanx.status.metrics.Metrics` (the one
writer: the dashboard's ``/metrics`` serves it).

One family per metric, and each family holds only its finest series, so that ``sum()`` over
a family is the truth and Prometheus does the grouping:

- **per agent** (labels ``run``, ``role``, ``agent``): counters of tasks, attempts (failed
  ones also by ``error_class``), call retries, busy and present seconds, tokens (by ``kind``:
  ``input``, ``output``, ``cache_read``, ``cache_write``), known cost, communication tokens;
  histograms of task latency and attempt service time (``_bucket``/``_sum``/``_count``).
  ``sum by (role) (phalanx_tokens_total)`` is a role's, ``sum(...)`` the run's.
- **per run** (label ``run``): wall and calendar time, sessions, speedup, scaling efficiency,
  tasks by ``state``, and the run's ratios (throughput, error, backpressure, utilisation,
  token efficiency, communication overhead). A role's or an agent's ratio is a quotient of
  the counters, e.g. utilisation: ``sum by (role) (phalanx_busy_seconds_total) /
  sum by (role) (phalanx_agent_seconds_total)``.

:class:`PrometheusExporter` keeps a :class:`~phalanx.status.metrics.MetricsFeed` per run, so
that a scrape reads only the events written since the last one.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .metrics import Figures, Metrics, MetricsFeed

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = ["BUCKETS", "PrometheusExporter", "prometheus_text"]

_NAME = re.compile(r"[^a-zA-Z0-9_:]")

# histogram bounds in seconds: simulated calls (milliseconds) to long agent tasks (an hour)
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
)  # fmt: skip

# per run: (name, type, help, value of the Metrics)
_RUN: tuple[tuple[str, str, str, Callable[[Metrics], Any]], ...] = (
    ("wall_seconds", "gauge", "Active time (sum of session spans).", lambda m: m.wall_seconds),
    (
        "calendar_seconds",
        "gauge",
        "Calendar time (first start to last end, downtime between sessions included).",
        lambda m: m.calendar_seconds,
    ),
    ("sessions", "gauge", "Sessions (1 + resumes).", lambda m: m.sessions),
    ("speedup_ratio", "gauge", "Speedup over a sequential run.", lambda m: m.speedup),
    ("scaling_efficiency_ratio", "gauge", "Speedup per agent.", lambda m: m.scaling_efficiency),
    (
        "throughput_tasks_per_hour",
        "gauge",
        "Succeeded tasks per hour of wall time.",
        lambda m: m.run.throughput_per_hour,
    ),
    (
        "error_ratio",
        "gauge",
        "Failed attempts (not rate limited) over finished attempts.",
        lambda m: m.run.error_rate,
    ),
    (
        "backpressure_ratio",
        "gauge",
        "Rate-limited attempts over finished attempts.",
        lambda m: m.run.backpressure_rate,
    ),
    ("utilisation_ratio", "gauge", "Busy time over agent time.", lambda m: m.run.utilisation),
    (
        "token_efficiency_ratio",
        "gauge",
        "Output tokens of succeeded results over all tokens spent.",
        lambda m: m.run.token_efficiency,
    ),
    (
        "communication_overhead_ratio",
        "gauge",
        "Communication tokens over attempt tokens.",
        lambda m: m.run.communication_overhead,
    ),
)
# per agent counters: (name, help, value of the agent's Figures; None: no series)
_COUNTERS: tuple[tuple[str, str, Callable[[Figures], Any]], ...] = (
    ("tasks_succeeded_total", "Succeeded tasks.", lambda f: f.tasks_succeeded),
    ("attempts_total", "Attempts started.", lambda f: f.attempts),
    (
        "attempts_finished_total",
        "Attempts finished (cancelled ones excluded): the ratios' denominator.",
        lambda f: f.finished_attempts,
    ),
    (
        "attempts_rate_limited_total",
        "Attempts stopped by rate limits (backpressure; also in attempts_failed_total).",
        lambda f: f.rate_limited_attempts,
    ),
    (
        "attempts_cancelled_total",
        "Attempts the run cancelled.",
        lambda f: f.cancelled_attempts,
    ),
    (
        "call_retries_total",
        "Model calls sent again inside their attempt (turns kept).",
        lambda f: f.call_retries,
    ),
    ("busy_seconds_total", "Service time: the sum of attempt durations.", lambda f: f.busy_seconds),
    (
        "agent_seconds_total",
        "Seconds the agent was present (utilisation = busy / agent seconds).",
        lambda f: f.agent_seconds,
    ),
    (
        "success_output_tokens_total",
        "Output tokens of the attempts that produced succeeded results.",
        lambda f: f.success_output_tokens,
    ),
    (
        "communication_tokens_total",
        "Tokens of messages and shared context read or written.",
        lambda f: f.communication_tokens,
    ),
    (
        "cost_usd_total",
        "Known cost in USD (an agent with no known cost has no series).",
        lambda f: f.cost_usd,
    ),
)
_TOKENS = ("input", "output", "cache_read", "cache_write")
_HISTOGRAMS = (
    (
        "task_latency_seconds",
        "Task latency, first attempt start to success (by the agent that succeeded).",
        "task_latency_samples",
    ),
    ("attempt_service_seconds", "Attempt service time.", "attempt_latency_samples"),
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


_Scope = tuple[dict[str, str], Figures]


def _agents(m: Metrics, run_id: str) -> list[_Scope]:
    """The finest series: one per agent (labels run, role, agent)."""
    return [
        ({"run": run_id, "role": m.agent_roles.get(a, ""), "agent": a}, f)
        for a, f in m.by_agent.items()
    ]


def _unattributed_tokens(m: Metrics) -> int:
    """Communication tokens of no agent: their series has an empty agent and role."""
    return m.run.communication_tokens - sum(f.communication_tokens for f in m.by_agent.values())


def _counter_lines(scopes: list[_Scope], m: Metrics, run_id: str) -> list[str]:
    lines: list[str] = []
    for short, help_text, get in _COUNTERS:
        name = f"phalanx_{short}"
        samples = [(labels, get(f)) for labels, f in scopes]
        extra = _unattributed_tokens(m) if short == "communication_tokens_total" else 0
        if extra:
            samples.append(({"run": run_id, "role": "", "agent": ""}, extra))
        samples = [(labels, v) for labels, v in samples if v is not None]
        if samples:
            lines += _header(name, "counter", help_text)
            lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in samples]
    name = "phalanx_attempts_failed_total"
    lines += _header(name, "counter", "Failed attempts (rate-limited included) by error class.")
    for labels, f in scopes:
        for cls, n in sorted(f.failed_by_class.items()):
            lines.append(f"{name}{_labels({**labels, 'error_class': cls})} {n}")
    name = "phalanx_tokens_total"
    lines += _header(name, "counter", "Tokens of every attempt, by kind.")
    for labels, f in scopes:
        for kind in _TOKENS:
            value = getattr(f.usage, f"{kind}_tokens")
            lines.append(f"{name}{_labels({**labels, 'kind': kind})} {value}")
    return lines


def _histogram_lines(name: str, samples: Sequence[float], labels: dict[str, str]) -> list[str]:
    ordered = sorted(samples)
    lines = [
        f"{name}_bucket{_labels({**labels, 'le': _number(b)})} {bisect.bisect_right(ordered, b)}"
        for b in BUCKETS
    ]
    lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {len(ordered)}")
    lines.append(f"{name}_sum{_labels(labels)} {_number(math.fsum(ordered))}")
    lines.append(f"{name}_count{_labels(labels)} {len(ordered)}")
    return lines


def prometheus_text(metrics: Metrics, run_id: str | None = None) -> str:
    """The metrics in the Prometheus text exposition format (names ``phalanx_*``; see the
    module's text for the families and their labels). Unknown values (``None``) are left
    out."""
    rid = run_id if run_id is not None else metrics.run_id
    scopes = _agents(metrics, rid)
    lines: list[str] = []
    for short, kind, help_text, get in _RUN:
        value = get(metrics)
        if value is not None:
            name = f"phalanx_{short}"
            lines += _header(name, kind, help_text)
            lines.append(f"{name}{_labels({'run': rid})} {_number(value)}")
    name = "phalanx_tasks"
    lines += _header(name, "gauge", "Tasks by state (pending until they end).")
    for state, n in sorted(metrics.task_states.items()):
        lines.append(f"{name}{_labels({'run': rid, 'state': state})} {n}")
    lines += _counter_lines(scopes, metrics, rid)
    for short, help_text, attr in _HISTOGRAMS:
        name = f"phalanx_{short}"
        lines += _header(name, "histogram", help_text)
        for labels, f in scopes:
            lines += _histogram_lines(name, getattr(f, attr), labels)
    return "\n".join(lines) + "\n"


class PrometheusExporter:
    """The Prometheus text of journaled runs, folded incrementally: one
    :class:`~phalanx.status.metrics.MetricsFeed` per run (the ``keep`` most recently
    scraped), so that a scrape reads only the events written since the last one. Safe to
    call from several threads (the dashboard's routes run in a thread pool)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._feeds: OrderedDict[str, MetricsFeed] = OrderedDict()
        self._lock = threading.Lock()

    def feed(self, run_id: str) -> MetricsFeed:
        """The run's feed (made on first use)."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = MetricsFeed(run_id)
            while len(self._feeds) > self.keep:
                self._feeds.popitem(last=False)
        self._feeds.move_to_end(run_id)
        return feed

    def text(self, journal: Journal, run_id: str) -> str:
        """The run's Prometheus text (``run_id`` exact: resolve prefixes before)."""
        with self._lock:
            metrics = self.feed(run_id).update(journal)
        return prometheus_text(metrics, run_id)

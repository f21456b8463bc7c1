"""Visibility: every view is a fold of the journal's events.

- ``fold``: the status snapshot and its text (the three levels);
- ``console`` (line log), ``tui`` (live terminal view), ``web`` (dashboard);
- ``metrics`` (throughput, latency, cost, Prometheus text), ``report`` (HTML, md, json);
- ``otel``: OpenTelemetry spans;
- ``liveness``: whether a running run's process is still there (an input to the views).
"""

from __future__ import annotations

from .snapshot import AgentStatus, Snapshot, StatusTracker, fold
from .text import render_swarm_status, render_text

__all__ = [
    "AgentStatus",
    "Snapshot",
    "StatusTracker",
    "fold",
    "render_swarm_status",
    "render_text",
]

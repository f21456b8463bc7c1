"""The web dashboard: the three status levels, a live timeline, alerts and per-agent detail.

A small Starlette app (the ``web`` extra) that follows a run in the journal. ``/events``
streams server-sent ``snapshot`` events (at most four a second); the page draws the progress
model that ``phalanx status`` renders (:mod:`phalanx.status.progress`) as HTML: a stacked bar
per run, team and agent (failed red, skipped grey), tables of teams and agents, the failed
and skipped tasks with their reasons (error class and one-line error), a ``stopped (process
gone)`` banner with the resume command, a Gantt timeline of agents x time, alerts, and an
agent's prompt, last output, failures and usage on click. Icons are inline SVG, never emoji.

Security: loopback by default; every request, whatever its path or method, needs the
access token (``?token=``, ``Authorization: Bearer`` or the cookie the first page load
sets): none is 401, a wrong one 403. A foreign ``Host`` (DNS rebinding) or a cross-origin
``Origin`` is 403. Only GET passes (405 otherwise). The token is never logged: uvicorn's
access log is off and the token is registered with :mod:`phalanx.redaction`.

Modules: ``auth`` (token, cookie, Host/Origin guard, bind checks, security headers),
``views`` (the run folded for the page: spans, snapshot/agent JSON, Prometheus text),
``app`` (routes, SSE stream, :func:`create_app`), ``server`` (uvicorn: :func:`serve`,
:class:`DashboardThread`) and ``static/dashboard.html`` (the page).

    url = DashboardThread(state_dir).start()   # for ``phalanx run --web`` and tests
    asyncio.run(serve(state_dir, ready=print))  # for ``phalanx dashboard``
"""

from __future__ import annotations

from .app import create_app
from .auth import (
    LOOPBACK_HOSTS,
    check_bind,
    dashboard_url,
    default_allowed_hosts,
    is_loopback,
    new_token,
    split_host,
)
from .server import DashboardThread, serve
from .views import (
    RunView,
    Span,
    excerpt,
    metrics_text,
    snapshot_json,
    team_line,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "DashboardThread",
    "RunView",
    "Span",
    "check_bind",
    "create_app",
    "dashboard_url",
    "default_allowed_hosts",
    "excerpt",
    "is_loopback",
    "metrics_text",
    "new_token",
    "serve",
    "snapshot_json",
    "split_host",
    "team_line",
]

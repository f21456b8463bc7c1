"""The web dashboard: the three status levels, a live timeline, alerts and per-agent detail.

A small Starlette app (the ``web`` extra) that follows a run in the journal. ``/events``
streams server-sent ``snapshot`` events (at most four a second); the page draws the same
strings as ``phalanx status`` (agent lines, team bars, swarm lines), a Gantt timeline of
agents x time, alerts, and an agent's prompt, last output and usage on click.

Security: loopback by default; every request, whatever its path or method, needs the
access token (``?token=``, ``Authorization: Bearer`` or the cookie the first page load
sets): none is 401, a wrong one 403. A foreign ``Host`` (DNS rebinding) or a cross-origin
``Origin`` is 403. Only GET passes (405 otherwise). The token is never logged: uvicorn's
access log is off and the token is registered with :mod:`phalanx.redaction`.

    url = DashboardThread(state_dir).start()   # for ``phalanx run --web`` and tests
    asyncio.run(serve(state_dir, ready=print))  # for ``phalanx dashboard``
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import importlib
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import AttemptFinished, AttemptStarted, Event, RunFinished, RunStarted
from ..exceptions import UsageError
from ..journal import Journal, RunRecord
from ..redaction import RedactingFilter, redact, register
from .fold import (
    AgentStatus,
    Snapshot,
    StatusTracker,
    agent_line,
    agent_progress,
    bar,
    fmt_cost,
    swarm_lines,
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
    "fallback_metrics",
    "is_loopback",
    "metrics_text",
    "new_token",
    "serve",
    "snapshot_json",
    "split_host",
    "team_line",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
COOKIE = "phalanx_token"
INTERVAL = 0.25  # seconds between journal polls: at most 4 snapshots a second
TICK = 1.0  # a running run is re-sent at least this often (its durations move)
HEARTBEAT = 15.0  # an SSE comment after this long without data
LATEST_CHECK = 1.0  # how often a follow-the-latest stream looks for a newer run
EXCERPT = 800  # characters of a prompt or output shown in the drill-down
MAX_AGENT_LINES = 500
_WILDCARD_BINDS = ("0.0.0.0", "::", "")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


# -- tokens, URLs, binding ------------------------------------------------------------------
def new_token() -> str:
    """A fresh random access token (URL-safe)."""
    return secrets.token_urlsafe(24)


def _url_host(host: str) -> str:
    if host in _WILDCARD_BINDS:
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def dashboard_url(host: str, port: int, token: str) -> str:
    """The one URL to print: it carries the token (the page then moves it into a cookie)."""
    return f"http://{_url_host(host)}:{port}/?{urlencode({'token': token})}"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback unless the caller chose the token."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"the dashboard listens on {host!r}, beyond this machine: give an explicit --token"
        )


def default_allowed_hosts(host: str) -> tuple[str, ...]:
    """Host headers accepted when listening on ``host``: loopback names, and for a
    non-loopback bind its address and this machine's name."""
    hosts = [*LOOPBACK_HOSTS, "::1"]
    if not is_loopback(host):
        if host not in _WILDCARD_BINDS:
            hosts.append(host)
        hosts.append(socket.gethostname())
    return tuple(dict.fromkeys(h.lower() for h in hosts))


# -- the guard: every request, before routing -----------------------------------------------
def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` (IPv6 in brackets) as (host, port); port '' when absent."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, port
    return value, ""


def _presented_tokens(scope: Scope) -> list[str]:
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    found = list(query.get("token", []))
    auth = _header(scope, b"authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip())
    cookies = cookie_parser(_header(scope, b"cookie") or "")
    found += [v for k, v in cookies.items() if k == COOKIE or k.startswith(COOKIE + "_")]
    return found


def _token_ok(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


class _Guard:
    """Pure ASGI middleware: Host, Origin and token on every request; then GET only."""

    def __init__(self, app: ASGIApp, *, token: str, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.token = token
        self.any_host = "*" in allowed_hosts
        self.hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        denied = self.verdict(scope)
        if denied is None and scope["method"] != "GET":
            denied = (405, "method not allowed")
        if denied is not None:
            await _deny(*denied)(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send))

    def verdict(self, scope: Scope) -> tuple[int, str] | None:
        """Why a request is refused (status, text), or None when it may pass."""
        host = _header(scope, b"host")
        if host is None or not self._host_ok(host):
            return 403, "forbidden: unknown Host"
        origin = _header(scope, b"origin")
        if origin is not None and not _same_origin(origin, host):
            return 403, "forbidden: cross-origin request"
        given = _presented_tokens(scope)
        if not given:
            return 401, "unauthorized: the access token is required"
        if not any(_token_ok(g, self.token) for g in given):
            return 403, "forbidden: wrong access token"
        return None

    def _host_ok(self, value: str) -> bool:
        host, _ = split_host(value)
        return self.any_host or host in self.hosts


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin.strip())
    return parts.scheme == "http" and parts.netloc.lower() == host.strip().lower()


def _deny(status: int, text: str) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="phalanx"'
    if status == 405:
        headers["Allow"] = "GET"
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += _SECURITY_HEADERS
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


# -- following a run: the status fold plus attempt spans for the timeline ---------------------
@dataclass(slots=True)
class Span:
    """One attempt on the timeline."""

    id: int
    agent: str
    task: str
    no: int
    start: float
    end: float | None = None
    state: str = "running"  # running | succeeded | failed | cancelled | stale | lost

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "task": self.task,
            "no": self.no,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "state": self.state,
        }


def _outcome(e: AttemptFinished) -> str:
    if e.error_class == "cancelled":
        return "cancelled"
    if e.stale:
        return "stale"
    return "succeeded" if e.ok else "failed"


@dataclass
class RunView:
    """A run folded from its journal events: the status tracker and the attempt spans."""

    run_id: str
    tracker: StatusTracker = field(default_factory=StatusTracker)
    spans: dict[int, Span] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    seq: int = 0
    started: RunStarted | None = None

    def feed(self, journal: Journal) -> bool:
        """Read the events after the last one seen; True when there were any."""
        before = self.seq
        for seq, event in journal.read_events(self.run_id, after=self.seq):
            self.emit(event)
            self.seq = seq
        return self.seq != before

    def emit(self, e: Event) -> None:
        self.tracker.emit(e)
        if isinstance(e, AttemptStarted):
            self._put(
                Span(id=e.attempt_id, agent=e.agent, task=e.task_id, no=e.attempt_no, start=e.ts)
            )
        elif isinstance(e, AttemptFinished):
            done = self.spans.get(e.attempt_id)
            if done is not None:
                done.end, done.state = e.ts, _outcome(e)
                self.dirty.add(done.id)
        elif isinstance(e, RunStarted | RunFinished):
            if isinstance(e, RunStarted):
                self.started = e
            self._close_open(e.ts)  # attempts cut short by a crash or the end

    def _put(self, span: Span) -> None:
        self.spans[span.id] = span
        self.dirty.add(span.id)

    def _close_open(self, ts: float) -> None:
        for span in self.spans.values():
            if span.end is None:
                span.end, span.state = max(ts, span.start), "lost"
                self.dirty.add(span.id)

    def take_dirty(self) -> list[Span]:
        out = [self.spans[i] for i in sorted(self.dirty)]
        self.dirty.clear()
        return out

    def snapshot(self) -> Snapshot:
        return self.tracker.snapshot(now=time.time())


# -- JSON ------------------------------------------------------------------------------------
def team_line(a: AgentStatus) -> str:
    """A level-2 line, exactly as :func:`phalanx.status.fold.render_text` writes it."""
    what = a.task_title or ("idle" if a.state == "idle" else a.state)
    ctx = f" · context {a.context_tokens:,} tokens" if a.context_tokens else ""
    p = agent_progress(a)
    return f"- {a.name}: {what} [{bar(p)}] {p * 100:.0f}% ({a.done}/{a.assigned}){ctx}"


def _title(s: Snapshot) -> str:
    sim = " · SIMULATED (sim provider)" if s.simulated else ""
    return f"Run {s.run_id} · plan {s.plan} · {s.status}{sim}"


def _agent_json(a: AgentStatus, now: float) -> dict[str, Any]:
    return {
        "name": a.name,
        "role": a.role,
        "provider": a.provider,
        "state": a.state,
        "task_id": a.task_id,
        "task_title": a.task_title,
        "line": agent_line(a, now),
        "done": a.done,
        "assigned": a.assigned,
        "failures": a.failures,
        "progress": agent_progress(a),
        "busy_seconds": a.busy,
        "usage": a.usage.to_dict(),
        "context_tokens": a.context_tokens,
    }


def _teams_json(s: Snapshot) -> list[dict[str, Any]]:
    teams = []
    for role, agents in s.agents_by_role().items():
        done, assigned = sum(a.done for a in agents), sum(a.assigned for a in agents)
        teams.append(
            {
                "role": role,
                "title": f"{role.capitalize()} team:",
                "progress": done / assigned if assigned else 0.0,
                "lines": [team_line(a) for a in agents[:MAX_AGENT_LINES]],
            }
        )
    return teams


def snapshot_json(
    s: Snapshot, spans: Sequence[Span] = (), *, reset: bool = False
) -> dict[str, Any]:
    """The snapshot as JSON for the page: numbers, the three levels' strings, and the
    attempt spans (all of them with ``reset``, else those changed since the last send)."""
    return {
        "run_id": s.run_id,
        "plan": s.plan,
        "status": s.status,
        "reason": s.reason,
        "simulated": s.simulated,
        "session": s.session,
        "title": _title(s),
        "started": s.started,
        "now": s.now,
        "finished": s.finished,
        "elapsed": s.elapsed,
        "counts": s.counts,
        "total": s.total,
        "progress": s.progress,
        "eta_seconds": s.eta_seconds,
        "usage": s.usage.to_dict(),
        "cost": fmt_cost(s.usage, s.simulated),
        "attempts": s.attempts,
        "failed_attempts": s.failed_attempts,
        "alerts": list(s.alerts),
        "agents": [_agent_json(a, s.now) for a in s.agents[:MAX_AGENT_LINES]],
        "more_agents": max(0, len(s.agents) - MAX_AGENT_LINES),
        "teams": _teams_json(s),
        "swarm": swarm_lines(s),
        "spans": [sp.to_json() for sp in spans],
        "reset": reset,
    }


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# -- settings and journal access --------------------------------------------------------------
@dataclass
class _Settings:
    journal_path: Path
    token: str
    run_id: str | None
    closing: threading.Event = field(default_factory=threading.Event)


def _settings(request: Request) -> _Settings:
    return cast(_Settings, request.app.state.phalanx)


@contextlib.contextmanager
def _journal(settings: _Settings) -> Iterator[Journal]:
    journal = Journal(settings.journal_path)
    try:
        yield journal
    finally:
        journal.close()


def _wanted_run(request: Request) -> str | None:
    """``?run=ID``; ``?run=`` (empty) follows the latest run; absent: the app's default."""
    if "run" in request.query_params:
        return request.query_params["run"] or None
    return _settings(request).run_id


def _resolve(journal: Journal, run_id: str | None) -> RunRecord:
    return journal.get_run(run_id) if run_id else journal.latest_run()


def _full_view(journal: Journal, run_id: str) -> RunView:
    view = RunView(run_id)
    view.feed(journal)
    return view


# -- the SSE stream ----------------------------------------------------------------------------
class _Follower:
    """One SSE client's view: resolves its run (switching to a newer one when following
    the latest), reads new events, and says what to send. Runs in its own worker thread."""

    def __init__(self, journal_path: Path, run_id: str | None) -> None:
        self.path, self.wanted = journal_path, run_id
        self.journal: Journal | None = None
        self.view: RunView | None = None
        self.reset = True
        self.sent = 0.0
        self.checked = 0.0
        self.waited = ""

    def tick(self, now: float) -> str | None:
        if self.journal is None:
            self.journal = Journal(self.path)
        switched = self._follow(self.journal, now)
        if self.view is None:
            return self._waiting(f"waiting for run {self.wanted}" if self.wanted else "")
        changed = self.view.feed(self.journal) or switched
        if self.view.started is None:  # created, its first events not yet written
            return self._waiting(f"run {self.view.run_id} is starting")
        live = self.view.tracker.finished is None
        if not (changed or self.reset or (live and now - self.sent >= TICK)):
            return None
        self.sent = now
        reset, self.reset = self.reset, False
        spans = list(self.view.spans.values()) if reset else self.view.take_dirty()
        if reset:
            self.view.dirty.clear()
        return _sse("snapshot", snapshot_json(self.view.snapshot(), spans, reset=reset))

    def _follow(self, journal: Journal, now: float) -> bool:
        if self.view is not None and (self.wanted or now - self.checked < LATEST_CHECK):
            return False
        self.checked = now
        try:
            rec = _resolve(journal, self.wanted)
        except UsageError:
            return False
        if self.view is not None and rec.run_id == self.view.run_id:
            return False
        self.view, self.reset = RunView(rec.run_id), True
        return True

    def _waiting(self, what: str) -> str | None:
        what = what or "no runs yet: waiting"
        if self.waited == what:
            return None
        self.waited = what
        return _sse("waiting", {"message": what})

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None


async def _stream(follower: _Follower, closing: threading.Event) -> AsyncIterator[str]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phalanx-sse")
    loop = asyncio.get_running_loop()
    try:
        yield "retry: 2000\n\n"
        quiet_since = time.monotonic()
        while not closing.is_set():
            message = await loop.run_in_executor(pool, follower.tick, time.time())
            if message is not None:
                yield message
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(INTERVAL)
    finally:
        pool.submit(follower.close)
        pool.shutdown(wait=False)


async def _events(request: Request) -> Response:
    settings = _settings(request)
    follower = _Follower(settings.journal_path, _wanted_run(request))
    return StreamingResponse(
        _stream(follower, settings.closing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- the JSON routes (sync: Starlette runs them in its thread pool) ---------------------------
def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=404)


def _api_snapshot(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError as exc:
            return _not_found(str(exc))
        view = _full_view(journal, rec.run_id)
    data = snapshot_json(view.snapshot(), list(view.spans.values()), reset=True)
    data["run_id"] = rec.run_id  # also before the run's first event
    return JSONResponse(data)


def _api_runs(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        return JSONResponse(journal.run_summaries())


def excerpt(text: str | None, limit: int = EXCERPT) -> str:
    """Redacted first, then cut: a secret is never half shown."""
    clean = redact(text or "")
    return clean if len(clean) <= limit else clean[:limit] + " …"


def _task_prompt(rec: RunRecord, task_id: str) -> str:
    for t in rec.plan.get("tasks", ()):
        if isinstance(t, dict) and t.get("id") == task_id:
            return str(t.get("prompt") or "")
    return ""


def _agent_detail(journal: Journal, rec: RunRecord, name: str) -> dict[str, Any] | None:
    view = _full_view(journal, rec.run_id)
    snap = view.snapshot()
    agent = next((a for a in snap.agents if a.name == name), None)
    if agent is None:
        return None
    spans = [s for s in view.spans.values() if s.agent == name]
    infos = view.started.agents if view.started else ()
    info = next((a for a in infos if a.name == name), None)
    out = _agent_json(agent, snap.now)
    out["run_id"], out["now"] = rec.run_id, snap.now
    out["style"] = info.style if info else ""
    out["skills"] = list(info.skills) if info else []
    out["prompt"] = _prompt_json(view, rec, agent, spans)
    out["last_output"] = _last_output(journal, rec.run_id, spans)
    out["attempts"] = [s.to_json() for s in spans[-10:]]
    return out


def _prompt_json(
    view: RunView, rec: RunRecord, agent: AgentStatus, spans: list[Span]
) -> dict[str, Any] | None:
    task_id = agent.task_id or (spans[-1].task if spans else None)
    if task_id is None:
        return None
    titles = {t.id: t.title for t in view.started.tasks} if view.started else {}
    return {
        "task_id": task_id,
        "title": excerpt(titles.get(task_id, task_id), 200),
        "current": agent.task_id is not None,
        "excerpt": excerpt(_task_prompt(rec, task_id)),
    }


def _last_output(journal: Journal, run_id: str, spans: list[Span]) -> dict[str, Any] | None:
    done = [s for s in spans if s.state == "succeeded"]
    if not done:
        return None
    row = journal.results(run_id).get(done[-1].task)
    if row is None:
        return None
    return {"task_id": row.task_id, "excerpt": excerpt(row.output)}


def _api_agent(request: Request) -> Response:
    name = request.path_params["name"]
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError as exc:
            return _not_found(str(exc))
        detail = _agent_detail(journal, rec, name)
    if detail is None:
        return _not_found(f"no agent {name!r} in run {rec.run_id}")
    return JSONResponse(detail)


# -- /metrics ----------------------------------------------------------------------------------
def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def fallback_metrics(s: Snapshot) -> str:
    """A minimal Prometheus exposition from the snapshot (until phalanx.status.metrics exists)."""
    run = f'run="{_label(s.run_id)}"'  # the labels phalanx.status.metrics uses
    out = ["# HELP phalanx_tasks Tasks of the run by state.", "# TYPE phalanx_tasks gauge"]
    for state in ("queued", "running", "retrying", "succeeded", "failed", "skipped"):
        out.append(f'phalanx_tasks{{{run},state="{state}"}} {s.counts.get(state, 0)}')
    agents: dict[str, int] = {}
    for a in s.agents:
        agents[a.state] = agents.get(a.state, 0) + 1
    out += ["# HELP phalanx_agents Agents by state.", "# TYPE phalanx_agents gauge"]
    out += [f'phalanx_agents{{{run},state="{_label(k)}"}} {v}' for k, v in sorted(agents.items())]
    gauges = [
        ("phalanx_tasks_total", "gauge", "Tasks in the run.", s.total),
        ("phalanx_progress_ratio", "gauge", "Terminal tasks over all tasks.", s.progress),
        ("phalanx_attempts_total", "counter", "Attempts started.", s.attempts),
        ("phalanx_attempts_failed_total", "counter", "Attempts failed.", s.failed_attempts),
        ("phalanx_tokens_total", "counter", "Tokens used.", s.usage.total_tokens),
    ]
    if s.usage.cost_usd is not None:
        gauges.append(("phalanx_cost_usd_total", "counter", "Cost in USD.", s.usage.cost_usd))
    for name, kind, help_text, value in gauges:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{run}}} {value}"]
    return "\n".join(out) + "\n"


def metrics_text(journal: Journal, run_id: str) -> str:
    """Prometheus text for a run: ``phalanx.status.metrics`` when present, else the fallback."""
    try:
        mod = importlib.import_module("phalanx.status.metrics")
    except ModuleNotFoundError as exc:
        if exc.name != "phalanx.status.metrics":
            raise
        mod = None
    if mod is not None and hasattr(mod, "prometheus_text"):
        return str(mod.prometheus_text(mod.metrics_from_journal(journal, run_id), run_id))
    return fallback_metrics(_full_view(journal, run_id).snapshot())


def _metrics(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError:
            text = "# no runs yet\n"
        else:
            text = metrics_text(journal, rec.run_id)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- the page ----------------------------------------------------------------------------------
def _page(request: Request) -> Response:
    settings = _settings(request)
    given = request.query_params.get("token")
    if given is not None:  # move the token out of the URL (history) into a cookie
        return _to_cookie(request, given, settings.token)
    nonce = secrets.token_urlsafe(16)
    run = html.escape(settings.run_id or "", quote=True)
    body = _PAGE.replace("__NONCE__", nonce).replace("__RUN__", run)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": csp})


def _to_cookie(request: Request, given: str, token: str) -> Response:
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = "/" + ("?" + urlencode(rest) if rest else "")
    response = RedirectResponse(target, status_code=303)
    if _token_ok(given, token):
        _, port = split_host(request.headers.get("host", ""))
        response.set_cookie(
            f"{COOKIE}_{port}" if port else COOKIE,
            token,
            httponly=True,
            samesite="strict",
            path="/",
        )
    return response


# -- the app -----------------------------------------------------------------------------------
def create_app(
    state_dir: Path,
    *,
    token: str,
    run_id: str | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> Starlette:
    """The dashboard as an ASGI app over ``state_dir``'s journal. ``run_id``: the run to
    show (default: the latest, switching when a newer one starts). ``allowed_hosts``: the
    names the Host header may carry (any port); ``"*"`` allows any."""
    if not token:
        raise UsageError("the dashboard needs an access token")
    register(token)  # redact() now scrubs it wherever it could appear
    app = Starlette(
        routes=[
            Route("/", _page),
            Route("/events", _events),
            Route("/api/snapshot", _api_snapshot),
            Route("/api/runs", _api_runs),
            Route("/api/agents/{name:path}", _api_agent),
            Route("/metrics", _metrics),
        ],
        middleware=[Middleware(_Guard, token=token, allowed_hosts=tuple(allowed_hosts))],
    )
    app.state.phalanx = _Settings(
        journal_path=Path(state_dir) / "journal.sqlite", token=token, run_id=run_id
    )
    return app


# -- serving -----------------------------------------------------------------------------------
def _install_log_filter() -> None:
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Dashboard:
    """A bound socket, the app and its uvicorn server: built in the caller's thread (so bind
    errors surface there), run in any loop."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str,
        port: int,
        token: str | None,
        run_id: str | None,
        allowed_hosts: Sequence[str] | None,
    ) -> None:
        check_bind(host, token)
        self.token = token or new_token()
        self.sock = _listen(host, port)
        self.port = int(self.sock.getsockname()[1])
        self.url = dashboard_url(host, self.port, self.token)
        hosts = allowed_hosts if allowed_hosts is not None else default_allowed_hosts(host)
        self.app = create_app(state_dir, token=self.token, run_id=run_id, allowed_hosts=hosts)
        self.settings = cast(_Settings, self.app.state.phalanx)
        _install_log_filter()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,  # access logs would carry the token
            log_config=None,  # leave the host program's logging alone
            lifespan="off",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)

    async def run(self, ready: Callable[[str], None] | None = None) -> None:
        task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        watcher = asyncio.create_task(self._watch(ready))
        try:
            await task
        finally:
            self.settings.closing.set()
            watcher.cancel()
            self.sock.close()

    async def _watch(self, ready: Callable[[str], None] | None) -> None:
        while not self.server.started:
            await asyncio.sleep(0.01)
        if ready is not None:
            ready(self.url)
        while not self.server.should_exit:
            await asyncio.sleep(0.1)
        self.settings.closing.set()  # let the event streams end before the server waits

    def stop(self) -> None:
        self.settings.closing.set()
        self.server.should_exit = True


async def serve(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    run_id: str | None = None,
    ready: Callable[[str], None] | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> None:
    """Serve the dashboard until cancelled or interrupted; ``ready(url)`` once listening
    (the URL carries the token: print it once, never log it). A non-loopback ``host``
    needs an explicit ``token`` (:class:`UsageError` otherwise)."""
    dashboard = _Dashboard(
        state_dir,
        host=host,
        port=port,
        token=token,
        run_id=run_id,
        allowed_hosts=allowed_hosts,
    )
    try:
        await dashboard.run(ready)
    except asyncio.CancelledError:
        dashboard.stop()
        raise


class DashboardThread:
    """The dashboard in a background thread with its own event loop (``phalanx run --web``,
    tests). ``start()`` returns the URL once it listens; ``stop()`` ends it."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        run_id: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self._args = (Path(state_dir), host, port, token, run_id, allowed_hosts)
        self._dashboard: _Dashboard | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def token(self) -> str:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.token

    @property
    def url(self) -> str:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.url

    @property
    def port(self) -> int:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.port

    def start(self, timeout: float = 10.0) -> str:
        state, host, port, token, run_id, hosts = self._args
        self._dashboard = _Dashboard(
            state, host=host, port=port, token=token, run_id=run_id, allowed_hosts=hosts
        )
        self._thread = threading.Thread(target=self._main, name="phalanx-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise UsageError(f"the dashboard did not start: {self._error or 'timed out'}")
        return self._dashboard.url

    def _main(self) -> None:
        assert self._dashboard is not None
        try:
            asyncio.run(self._dashboard.run(lambda _url: self._ready.set()))
        except BaseException as exc:  # reported by start(); a thread must not die loudly
            self._error = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._dashboard is not None:
            self._dashboard.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


_PAGE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>phalanx dashboard</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">
:root{--bg:#0f1115;--fg:#d8dee9;--dim:#7b8394;--ok:#4caf7a;--run:#4a90d9;--bad:#d9534f;
  --warn:#e0a030;--panel:#171a21;--line:#262a33}
body{margin:0;background:var(--bg);color:var(--fg);
  font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
header{padding:10px 16px;border-bottom:1px solid var(--line);display:flex;gap:16px;
  align-items:center;flex-wrap:wrap}
h1{font-size:15px;margin:0;font-weight:600}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--dim);margin:0 0 6px}
h3{font-size:13px;margin:8px 0 2px}
main{display:grid;grid-template-columns:minmax(0,1fr) 380px;gap:12px;padding:12px 16px}
section,aside{background:var(--panel);border:1px solid var(--line);border-radius:6px;
  padding:10px 12px;margin-bottom:12px}
aside{align-self:start;position:sticky;top:12px}
aside .line{white-space:pre-wrap}
select{background:var(--panel);color:var(--fg);border:1px solid var(--line)}
.line{white-space:pre;overflow:hidden;text-overflow:ellipsis}
.agent{cursor:pointer}.agent:hover,.agent.sel{background:#222734}
.running{color:#9fd0ff}.waiting{color:var(--warn)}.idle,.retired{color:var(--dim)}
.failed,.paused{color:var(--bad)}
.meter{height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin:4px 0 6px}
.meter>div{height:100%;background:var(--ok);width:0}
#alerts .line{color:var(--warn)}
#gantt{display:block;width:100%}
#gantt rect{fill:var(--run)}#gantt rect.succeeded{fill:var(--ok)}
#gantt rect.failed,#gantt rect.lost{fill:var(--bad)}
#gantt rect.cancelled,#gantt rect.stale{fill:#666}
#gantt text{fill:var(--dim);font-size:10px;cursor:pointer}
#gantt line{stroke:var(--line)}
pre{white-space:pre-wrap;word-break:break-word;background:#0b0d11;padding:6px;
  border-radius:4px;max-height:240px;overflow:auto;margin:2px 0 8px}
#conn{color:var(--dim)}
@media (max-width:900px){main{grid-template-columns:1fr}aside{position:static}}
</style></head>
<body data-run="__RUN__">
<header><h1 id="title">phalanx</h1>
<label>run <select id="runs"><option value="">latest (follow)</option></select></label>
<span id="conn">connecting…</span></header>
<main><div>
<section id="alerts" hidden><h2>Alerts</h2><div id="alert-lines"></div></section>
<section id="swarm"><h2>Level 3 · swarm</h2><div class="meter"><div id="total-bar"></div></div>
<div id="swarm-lines"></div></section>
<section id="teams"><h2>Level 2 · teams</h2><div id="team-list"></div></section>
<section id="agents"><h2>Level 1 · agents</h2><div id="agent-lines"></div></section>
<section id="timeline"><h2>Timeline</h2>
<svg id="gantt" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 20"></svg></section>
</div>
<aside id="drill"><h2>Agent</h2><div id="drill-body" class="idle">click an agent line or a
timeline row</div></aside>
</main>
<script nonce="__NONCE__">
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let run = new URLSearchParams(location.search).get("run") ?? document.body.dataset.run;
let source = null, spans = new Map(), last = null, selected = null, drillAt = 0;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function lines(box, items, cls) {
  box.replaceChildren(...items.map((t) => el("div", "line " + (cls || ""), t)));
}
function connect() {
  if (source) source.close();
  spans = new Map();
  source = new EventSource("/events?run=" + encodeURIComponent(run || ""));
  source.onopen = () => { $("conn").textContent = "live"; };
  source.onerror = () => { $("conn").textContent = "reconnecting…"; };
  source.addEventListener("waiting", (e) => {
    $("title").textContent = JSON.parse(e.data).message;
    $("conn").textContent = "waiting";
  });
  source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
}
function render(s) {
  if (s.reset) spans = new Map();
  for (const sp of s.spans) spans.set(sp.id, sp);
  last = s;
  $("title").textContent = s.title;
  document.title = "phalanx · " + s.run_id + " · " + Math.round(s.progress * 100) + "%";
  $("conn").textContent = s.finished ? "finished" : "live";
  $("alerts").hidden = !s.alerts.length;
  lines($("alert-lines"), s.alerts);
  $("total-bar").style.width = (s.progress * 100).toFixed(1) + "%";
  lines($("swarm-lines"), s.swarm);
  renderTeams(s.teams);
  renderAgents(s);
  drawGantt(s);
  if (selected && Date.now() - drillAt > 1000) openAgent(selected);
}
function renderTeams(teams) {
  $("team-list").replaceChildren(...teams.map((t) => {
    const box = el("div", "team");
    const meter = el("div", "meter"), fill = el("div");
    fill.style.width = (t.progress * 100).toFixed(1) + "%";
    meter.append(fill);
    box.append(el("h3", "", t.title), meter);
    for (const line of t.lines) box.append(el("div", "line", "  " + line));
    return box;
  }));
}
function renderAgents(s) {
  const rows = s.agents.map((a) => {
    const d = el("div", "line agent " + a.state + (a.name === selected ? " sel" : ""), a.line);
    d.dataset.agent = a.name;
    return d;
  });
  if (s.more_agents) rows.push(el("div", "line idle", "… and " + s.more_agents + " more agents"));
  $("agent-lines").replaceChildren(...rows);
}
function drawGantt(s) {
  const names = s.agents.map((a) => a.name), row = new Map(names.map((n, i) => [n, i]));
  const W = 1000, L = 150, RH = 14, TOP = 16, H = TOP + names.length * RH + 4;
  const t0 = s.started, width = Math.max(s.now - t0, 0.001);
  const x = (t) => L + Math.max(0, t - t0) / width * (W - L - 4);
  const kids = [];
  for (let k = 0; k <= 4; k++) {
    const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
    const t = t0 + width * k / 4, label = svgEl("text", {x: x(t), y: 10, "text-anchor": anchor});
    label.textContent = (width * k / 4).toFixed(1) + "s";
    kids.push(svgEl("line", {x1: x(t), x2: x(t), y1: 12, y2: H}), label);
  }
  names.forEach((n, i) => {
    const t = svgEl("text", {x: 2, y: TOP + i * RH + 10, "data-agent": n});
    t.textContent = n.length > 22 ? n.slice(0, 21) + "…" : n;
    kids.push(t);
  });
  for (const sp of spans.values()) {
    const i = row.get(sp.agent);
    if (i === undefined) continue;
    const end = sp.end ?? s.now;
    const r = svgEl("rect", {x: x(sp.start), y: TOP + i * RH + 2, height: RH - 4,
      width: Math.max(1, x(end) - x(sp.start)), class: sp.state, "data-agent": sp.agent});
    const tip = svgEl("title");
    tip.textContent = sp.task + " #" + sp.no + " · " + sp.state + " · "
      + (end - sp.start).toFixed(2) + "s";
    r.append(tip);
    kids.push(r);
  }
  const svg = $("gantt");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.replaceChildren(...kids);
}
function usageText(u, s) {
  const cost = u.cost_usd === null ? (s && s.simulated ? "n/a (simulated)" : "unknown")
    : "$" + u.cost_usd.toFixed(4);
  return "tokens in " + u.input_tokens + " · out " + u.output_tokens + " · cache "
    + (u.cache_read_tokens + u.cache_write_tokens) + " · cost " + cost;
}
async function openAgent(name) {
  selected = name;
  drillAt = Date.now();
  const q = last ? "?run=" + encodeURIComponent(last.run_id) : "";
  const body = $("drill-body");
  let r;
  try { r = await fetch("/api/agents/" + encodeURIComponent(name) + q); } catch (e) { return; }
  if (!r.ok) { body.replaceChildren(el("div", "line failed", "cannot load " + name)); return; }
  const a = await r.json();
  const p = a.prompt, o = a.last_output;
  body.replaceChildren(
    el("div", "line " + a.state, a.line),
    el("div", "line", "role " + a.role + " · provider " + a.provider + " · style " + a.style),
    el("div", "line", "done " + a.done + "/" + a.assigned + " · failures " + a.failures
      + " · busy " + a.busy_seconds.toFixed(1) + "s"),
    el("div", "line", usageText(a.usage, last)),
    el("h3", "", (p && !p.current ? "Last prompt" : "Prompt")
      + (p ? " · " + p.task_id + (p.title !== p.task_id ? ": " + p.title : "") : "")),
    el("pre", "prompt", p ? p.excerpt : "-"),
    el("h3", "", "Last output" + (o ? " · " + o.task_id : "")),
    el("pre", "output", o ? o.excerpt : "-"),
    el("h3", "", "Recent attempts"),
    ...a.attempts.map((s) => el("div", "line " + s.state, s.task + " #" + s.no + " · "
      + s.state + " · " + ((s.end ?? a.now ?? s.start) - s.start).toFixed(2) + "s")));
  for (const d of document.querySelectorAll("#agent-lines .agent")) {
    d.classList.toggle("sel", d.dataset.agent === name);
  }
}
function onPick(e) {
  const d = e.target.closest("[data-agent]");
  if (d) openAgent(d.getAttribute("data-agent"));
}
async function loadRuns() {
  let r;
  try { r = await fetch("/api/runs"); } catch (e) { return; }
  if (!r.ok) return;
  const sel = $("runs"), runs = await r.json(), ids = new Set(runs.map((x) => x.run_id));
  const opts = [new Option("latest (follow)", "")];
  if (run && !ids.has(run)) opts.push(new Option(run, run));
  for (const x of runs) {
    opts.push(new Option(x.run_id + " · " + x.plan + " · " + x.status, x.run_id));
  }
  sel.replaceChildren(...opts);
  sel.value = run || "";
}
$("agent-lines").addEventListener("click", onPick);
$("gantt").addEventListener("click", onPick);
$("runs").addEventListener("change", (e) => {
  run = e.target.value;
  const u = new URL(location.href);
  if (run) u.searchParams.set("run", run); else u.searchParams.delete("run");
  history.replaceState(null, "", u);
  selected = null;
  connect();
});
connect();
loadRuns();
setInterval(loadRuns, 5000);
</script></body></html>
"""

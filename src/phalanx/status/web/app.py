"""The dashboard's ASGI app: its routes, the server-sent event stream and the page.

:func:`create_app` builds a Starlette app over a state directory's journal, behind
:class:`~phalanx.status.web.auth.Guard`. ``/events`` streams ``snapshot`` events (at most
four a second) from a :class:`_Follower` that runs in its own worker thread and switches to
a newer run when following the latest; ``/api/snapshot``, ``/api/runs`` and
``/api/agents/{name}`` answer JSON; ``POST /api/approve`` decides a task awaiting approval
(the only route that changes anything: same-origin or bearer token, see ``auth``);
``/metrics`` Prometheus text; ``/`` the page (``static/dashboard.html``, read once) with a
fresh CSP nonce per load.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ...exceptions import PhalanxError, UsageError
from ...journal import Journal, RunRecord
from ...redaction import register
from ...runtime.approvals import record_decision
from ..liveness import run_summaries
from ..prometheus import PrometheusExporter
from .auth import LOOPBACK_HOSTS, Guard, to_cookie
from .views import RunView, agent_detail, full_view, metrics_text

__all__ = ["Settings", "create_app", "page_template"]

INTERVAL = 0.25  # seconds between journal polls: at most 4 snapshots a second
TICK = 1.0  # a running run is re-sent at least this often (its durations move)
HEARTBEAT = 15.0  # an SSE comment after this long without data
LATEST_CHECK = 1.0  # how often a follow-the-latest stream looks for a newer run


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# -- settings and journal access --------------------------------------------------------------
@dataclass
class Settings:
    """What the routes need, kept on ``app.state.phalanx``; ``closing`` ends the streams."""

    journal_path: Path
    token: str
    run_id: str | None
    closing: threading.Event = field(default_factory=threading.Event)
    # /metrics: a fold per run, reading only the events since the last scrape
    prometheus: PrometheusExporter = field(default_factory=PrometheusExporter)


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.phalanx)


@contextlib.contextmanager
def _journal(settings: Settings) -> Iterator[Journal]:
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
        live = self.view.tracker.finished is None and self.view.gone is None
        if not (changed or self.reset or (live and now - self.sent >= TICK)):
            return None
        self.sent = now
        reset, self.reset = self.reset, False
        spans = list(self.view.spans.values()) if reset else self.view.take_dirty()
        if reset:
            self.view.dirty.clear()
        return _sse("snapshot", self.view.page_json(spans, reset=reset))

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


# -- the JSON and text routes (sync: Starlette runs them in its thread pool) -------------------
def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=404)


def _api_snapshot(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError as exc:
            return _not_found(str(exc))
        view = full_view(journal, rec.run_id)
    data = view.page_json(list(view.spans.values()), reset=True)
    data["run_id"] = rec.run_id  # also before the run's first event
    return JSONResponse(data)


def _api_runs(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        return JSONResponse(run_summaries(journal))


def _api_agent(request: Request) -> Response:
    name = request.path_params["name"]
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError as exc:
            return _not_found(str(exc))
        detail = agent_detail(journal, rec, name)
    if detail is None:
        return _not_found(f"no agent {name!r} in run {rec.run_id}")
    return JSONResponse(detail)


def _metrics(request: Request) -> Response:
    with _journal(_settings(request)) as journal:
        try:
            rec = _resolve(journal, _wanted_run(request))
        except UsageError:
            text = "# no runs yet\n"
        else:
            text = metrics_text(journal, rec.run_id, _settings(request).prometheus)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


MAX_DECISION_BYTES = 4096


async def _api_approve(request: Request) -> Response:
    """``POST /api/approve`` with ``{"run", "task", "reject": bool, "reason"}``: the
    decision goes into the journal (the run's process picks it up within a second). 400
    for a bad body, 409 when the task is not awaiting approval or was already decided."""
    body = await request.body()
    if len(body) > MAX_DECISION_BYTES:
        return JSONResponse({"error": "request too large"}, status_code=413)
    try:
        data = json.loads(body or b"{}")
        run_id, task_id = str(data["run"]), str(data["task"])
        reject, reason = bool(data.get("reject", False)), str(data.get("reason") or "")
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected JSON {run, task, reject, reason}"}, 400)
    settings = _settings(request)

    def decide() -> dict[str, Any]:
        with _journal(settings) as journal:
            rec, d = record_decision(
                journal, run_id, task_id, approve=not reject, reason=reason, by="dashboard"
            )
        return {"run": rec.run_id, "task": task_id, "decision": d.decision, "reason": d.reason}

    try:
        return JSONResponse(await run_in_threadpool(decide))
    except PhalanxError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)


# -- the page ----------------------------------------------------------------------------------
@functools.cache
def page_template() -> str:
    """``static/dashboard.html``, read once: ``__NONCE__`` and ``__RUN__`` still to fill."""
    return (files("phalanx.status.web") / "static" / "dashboard.html").read_text(encoding="utf-8")


def _page(request: Request) -> Response:
    settings = _settings(request)
    given = request.query_params.get("token")
    if given is not None:  # move the token out of the URL (history) into a cookie
        return to_cookie(request, given, settings.token)
    nonce = secrets.token_urlsafe(16)
    run = html.escape(settings.run_id or "", quote=True)
    body = page_template().replace("__NONCE__", nonce).replace("__RUN__", run)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": csp})


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
            Route("/api/approve", _api_approve, methods=["POST"]),
            Route("/metrics", _metrics),
        ],
        middleware=[Middleware(Guard, token=token, allowed_hosts=tuple(allowed_hosts))],
    )
    app.state.phalanx = Settings(
        journal_path=Path(state_dir) / "journal.sqlite", token=token, run_id=run_id
    )
    return app

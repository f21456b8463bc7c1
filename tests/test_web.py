"""The web dashboard: the auth matrix on every route and method, no token in any log, the
SSE stream, and headless Debian Chromium following a live sim run."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import phalanx
from conftest import CHROMIUM, CHROMIUM_ARGS, sim_plan, write_plan
from phalanx.events import AttemptFinished, AttemptStarted, TaskFailed, TaskSucceeded
from phalanx.exceptions import UsageError
from phalanx.journal import Journal
from phalanx.status.progress import failure_reason
from phalanx.status.snapshot import fold
from phalanx.status.text import render_text, swarm_lines
from phalanx.status.web import (
    DashboardThread,
    RunView,
    check_bind,
    create_app,
    dashboard_url,
    excerpt,
    metrics_text,
    new_token,
    serve,
    snapshot_json,
    split_host,
)
from phalanx.status.web.app import page_template
from phalanx.status.web.views import REASON_CHARS
from test_status import _events, failed_events

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-token-0123456789abcdef"
BASE = "http://127.0.0.1:8123"
ROUTES = ["/", "/events", "/api/snapshot", "/api/runs", "/api/agents/Cipher", "/metrics"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
SECRET_KEY = "sk-test-abcdefghijklmnop"


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding one finished sim run ``r1`` (every prompt holds a key)."""
    root = tmp_path_factory.mktemp("web")
    data = sim_plan(30, agents=3, latency_ms=5)
    for i, task in enumerate(data["tasks"]):
        task["prompt"] = f"do part {i} with {SECRET_KEY} please"
    plan = write_plan(root / "plan.yaml", data)
    result = phalanx.run_sync(str(plan), state=root / "state", run_id="r1")
    assert result.status == "succeeded"
    return root / "state"


@pytest.fixture
def client(finished: Path) -> Iterator[TestClient]:
    app = create_app(finished, token=TOKEN)
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        yield c


@pytest.fixture
def live_dashboard(finished: Path) -> Iterator[DashboardThread]:
    dash = DashboardThread(finished)
    dash.start()
    try:
        yield dash
    finally:
        dash.stop()


def _raw(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- the auth matrix ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_no_token_is_401_on_every_route(client: TestClient, method: str) -> None:
    for path in [*ROUTES, "/nope", "/api/agents/x/y"]:
        r = client.request(method, path)
        assert r.status_code == 401, (method, path)
        if method != "HEAD":
            assert TOKEN not in r.text


@pytest.mark.parametrize("method", METHODS)
def test_wrong_token_is_403_on_every_route(client: TestClient, method: str) -> None:
    wrong = TOKEN[:-1] + "X"
    ways: list[dict[str, Any]] = [
        {"params": {"token": wrong}},
        {"headers": {"Authorization": f"Bearer {wrong}"}},
        {"headers": {"Cookie": f"phalanx_token={wrong}"}},
        {"headers": {"Cookie": f"phalanx_token_8123={wrong}"}},
        {"headers": {"Authorization": "Bearer é-not-ascii".encode()}},
    ]
    for path in [*ROUTES, "/nope"]:
        for way in ways:
            assert client.request(method, path, **way).status_code == 403, (method, path, way)


@pytest.mark.parametrize("method", METHODS)
def test_foreign_host_or_cross_site_origin_is_403(client: TestClient, method: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = [
        {"Host": "evil.example"},
        {"Host": "evil.example:8123"},
        {"Host": "127.0.0.1.evil.example:8123"},
        {"Host": "localhost.evil.example"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},  # same site, another origin
        {"Origin": "https://127.0.0.1:8123"},
        {"Origin": "null"},
    ]
    for path in [*ROUTES, "/nope"]:
        for headers in bad:
            r = client.request(method, path, headers={**auth, **headers})
            assert r.status_code == 403, (method, path, headers)
            # without the token too: Host and Origin are checked first
            assert client.request(method, path, headers=headers).status_code == 403


@pytest.mark.parametrize("method", METHODS[1:])
def test_right_token_but_not_get_is_405(client: TestClient, method: str) -> None:
    for path in ROUTES:
        r = client.request(method, path, params={"token": TOKEN})
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == "GET"


def test_right_token_get_is_200(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    same_origin = {**auth, "Origin": BASE}
    for path in ROUTES:
        if path == "/events":
            continue  # an endless stream: tested over a real server below
        assert client.get(path, headers=auth).status_code == 200, path
        assert client.get(path, headers=same_origin).status_code == 200, path
        assert client.get(path, headers={**auth, "Host": "localhost:8123"}).status_code == 200
    assert client.get("/nope", headers=auth).status_code == 404


def test_token_in_the_url_moves_into_a_cookie(client: TestClient) -> None:
    r = client.get("/", params={"token": TOKEN, "run": "r1"})
    assert r.status_code == 303
    assert r.headers["location"] == "/?run=r1"  # the token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"phalanx_token_8123={TOKEN};")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    page = client.get("/?run=r1")  # the client's cookie jar sends it back
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert TOKEN not in page.text
    # a wrong token in the URL never becomes a cookie
    client.cookies.clear()
    assert client.get("/", params={"token": "nope-nope-nope"}).status_code == 403


def test_real_server_refuses_too(live_dashboard: DashboardThread) -> None:
    port, token = live_dashboard.port, live_dashboard.token
    for method in METHODS:
        assert _raw(port, method, "/", {})[0] == 401
        assert _raw(port, method, "/api/runs", {"Authorization": "Bearer wrong"})[0] == 403
        auth = {"Authorization": f"Bearer {token}"}
        assert _raw(port, method, "/metrics", {**auth, "Host": "evil.example"})[0] == 403
        origin = {**auth, "Origin": "http://evil.example"}
        assert _raw(port, method, "/api/runs", origin)[0] == 403
    assert _raw(port, "DELETE", "/api/runs", {"Authorization": f"Bearer {token}"})[0] == 405
    assert _raw(port, "GET", "/api/runs", {"Authorization": f"Bearer {token}"})[0] == 200


# -- the token never reaches a log -------------------------------------------------------------
def test_token_is_never_logged(
    finished: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    dash = DashboardThread(finished)
    url = dash.start()
    try:
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", ""):
            caplog.set_level(1, logger=name)  # everything, even uvicorn's TRACE
        token = dash.token
        for path in [*ROUTES[1:], "/", "/nope", "/api/agents/nobody"]:
            if path != "/events":
                _raw(dash.port, "GET", f"{path}?token={token}", {})
            _raw(dash.port, "POST", f"{path}?token={token}", {})
        _raw(dash.port, "GET", "/", {"Host": "evil.example", "Cookie": f"phalanx_token={token}"})
        with socket.create_connection(("127.0.0.1", dash.port), timeout=5) as s:
            s.sendall(f"GARBAGE /?token={token} HTTP/9\r\n\r\n".encode())
            s.recv(1024)
    finally:
        dash.stop()
    out, err = capfd.readouterr()
    assert url.endswith(token)  # the one place it is shown: the URL handed to the caller
    assert token not in caplog.text
    assert token not in out and token not in err


# -- binding -----------------------------------------------------------------------------------
def test_non_loopback_needs_an_explicit_token(finished: Path) -> None:
    with pytest.raises(UsageError, match="explicit --token") as exc:
        check_bind("0.0.0.0", None)
    assert "\n" not in str(exc.value)
    with pytest.raises(UsageError, match="explicit --token"):
        asyncio.run(serve(finished, host="0.0.0.0"))
    with pytest.raises(UsageError, match="explicit --token"):
        DashboardThread(finished, host="192.0.2.1").start()
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    dash = DashboardThread(finished, host="0.0.0.0", token="explicit-token-42")
    url = dash.start()
    try:
        assert url == f"http://127.0.0.1:{dash.port}/?token=explicit-token-42"
        auth = {"Authorization": "Bearer explicit-token-42"}
        assert _raw(dash.port, "GET", "/api/runs", auth)[0] == 200
        assert _raw(dash.port, "GET", "/api/runs", {})[0] == 401
    finally:
        dash.stop()


def test_serve_reports_its_url_once_listening(finished: Path) -> None:
    urls: list[str] = []

    async def main() -> None:
        task = asyncio.create_task(serve(finished, token="serve-token-123", ready=urls.append))
        for _ in range(500):
            if urls:
                break
            await asyncio.sleep(0.01)
        port = int(urls[0].split(":")[2].split("/")[0])
        status = await asyncio.to_thread(
            _raw, port, "GET", "/api/runs", {"Authorization": "Bearer serve-token-123"}
        )
        assert status[0] == 200
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(urls) == 1 and urls[0].endswith("/?token=serve-token-123")


def test_tokens_urls_and_hosts() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", a)
    assert dashboard_url("127.0.0.1", 8080, "t") == "http://127.0.0.1:8080/?token=t"
    assert dashboard_url("::1", 8080, "t") == "http://[::1]:8080/?token=t"
    assert split_host("[::1]:80") == ("::1", "80")
    assert split_host("LocalHost:8000") == ("localhost", "8000")
    assert split_host("example.org") == ("example.org", "")


# -- what is shown -----------------------------------------------------------------------------
def test_snapshot_json_has_the_three_levels_as_status_writes_them() -> None:
    view = RunView("r1")
    for e in _events():
        view.emit(e)
    snap = fold(_events())
    data = snapshot_json(snap, list(view.spans.values()), reset=True)
    text = render_text(snap)
    assert data["swarm"] == swarm_lines(snap)
    assert next(a["line"] for a in data["agents"]).startswith("Agent: ")
    # the terminal pads its columns to line up: the same words, spaced apart
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for line in [a["line"] for a in data["agents"]] + data["swarm"]:
        assert any(" ".join(line.split()) in x for x in lines), line
    for team in data["teams"]:
        assert any(x.startswith(team["title"]) for x in lines), team["title"]
        for line in team["lines"]:
            assert " ".join(line.split()) in lines, line
    assert {s["state"] for s in data["spans"]} <= {"succeeded", "failed", "running", "lost"}
    assert len(data["spans"]) == snap.attempts
    json.dumps(data)  # JSON-ready


def test_snapshot_json_names_each_failure_and_its_reason() -> None:
    view = RunView("r1")
    for e in failed_events():
        view.emit(e)
    data = view.page_json(list(view.spans.values()), reset=True)
    assert data["headline"] == "4/4 done · 1 failed · 2 skipped"
    title = "Run r1 · plan p · failed · 4/4 done · 1 failed · 2 skipped · SIMULATED (sim provider)"
    assert data["title"] == title
    problems = [(p["task"], p["state"], p["agent"], p["reason"]) for p in data["problems"]]
    assert problems == [
        ("db", "failed", "Quantum", "auth: 401"),  # failed first
        ("tests", "skipped", None, "upstream"),
        ("docs", "skipped", None, "upstream"),
    ]
    assert data["problems"][0]["attempts"] == 2 and data["problems"][1]["upstream"] == "db"
    by = {a["name"]: a for a in data["agents"]}
    assert by["Quantum"]["failed_tasks"] == [{"task": "db", "reason": "auth: 401"}]
    assert by["Quantum"]["last_error"]["reason"] == "auth: 401"
    assert by["Quantum"]["tasks"]["headline"] == "1/1 done · 1 failed"  # not dropped
    assert by["Cipher"]["failed_tasks"] == [] and by["Cipher"]["last_error"] is None
    reasons = [s["reason"] for s in data["spans"] if s["state"] == "failed"]
    assert reasons == ["server_error: 500", "auth: 401"]  # every failed attempt says why
    assert all(s["reason"] == "" for s in data["spans"] if s["state"] != "failed")
    assert data["eta_text"] == "finished" and data["more_problems"] == 0
    json.dumps(data)


def test_failure_reasons_are_one_redacted_line() -> None:
    view = RunView("r1")
    for e in _events():
        view.emit(e)
    view.emit(AttemptStarted(ts=102.1, task_id="db", attempt_id=4, attempt_no=3, agent="Nova"))
    error = f"bad key {SECRET_KEY}\ntraceback line 2\n" + "x" * 400
    view.emit(
        AttemptFinished(
            ts=102.2,
            task_id="db",
            attempt_id=4,
            agent="Nova",
            ok=False,
            duration=0.1,
            error_class="auth",
            error=error,
        )
    )
    view.emit(TaskFailed(ts=102.2, task_id="db", error_class="auth", error=error, attempts=3))
    data = view.page_json(list(view.spans.values()))
    (db,) = data["problems"]
    nova = next(a for a in data["agents"] if a["name"] == "Nova")
    for reason in (db["reason"], nova["failed_tasks"][0]["reason"], data["spans"][-1]["reason"]):
        assert reason.startswith("auth: bad key [redacted] traceback line 2 xxx")
        assert "\n" not in reason and len(reason) <= REASON_CHARS and reason.endswith("…")
    assert SECRET_KEY not in json.dumps(data)
    assert failure_reason("rate_limited", "") == "rate_limited"
    assert failure_reason("", "upstream task 'a' did not succeed").startswith("upstream")


def test_a_failed_task_run_again_is_no_longer_listed() -> None:
    view = RunView("r1")
    for e in failed_events():
        view.emit(e)
    view.emit(AttemptStarted(ts=110.0, task_id="db", attempt_id=7, attempt_no=1, agent="Nova"))
    assert "db" not in view.problems  # a resume re-runs it: not a failure while it runs
    view.emit(TaskSucceeded(ts=111.0, task_id="db", attempt_id=7, agent="Nova"))
    assert "db" not in view.problems


def test_a_stopped_runs_clock_keeps_its_last_event() -> None:
    """Killed between two heartbeats: the clock stops at its last event, not before it."""
    view = RunView("r1")
    for e in _events():  # the last event at 102.0
        view.emit(e)
    view.gone = 100.5  # its last heartbeat, before its last events
    s = view.snapshot()
    assert s.status == "stopped" and s.now == 102.0
    view.gone = 0.0  # no heartbeat known
    assert view.snapshot().now == 102.0
    data = view.page_json([])
    assert data["eta_text"] == "none: stopped (process gone) — phalanx resume r1"


def test_the_page_holds_no_terminal_art_and_no_emoji() -> None:
    page = page_template()
    art = re.compile("[\u2500-\u259f\u2600-\u27bf\U0001f000-\U0001faff\ufe0f]")
    assert art.findall(page) == []
    for gone in ("swarm-lines", "agent-lines", "team-list", ".line"):  # the old text levels
        assert gone not in page


def test_api_snapshot_runs_and_agent_drill_down(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    runs = client.get("/api/runs", headers=auth).json()
    assert [r["run_id"] for r in runs] == ["r1"]
    snap = client.get("/api/snapshot?run=r1", headers=auth).json()
    assert snap["counts"] == {"succeeded": 30} and len(snap["spans"]) == 30
    assert "Tasks: 30 done" in snap["swarm"][1]
    name = snap["agents"][0]["name"]
    detail = client.get(f"/api/agents/{name}?run=r1", headers=auth).json()
    last = max((s for s in snap["spans"] if s["agent"] == name), key=lambda s: s["id"])
    assert detail["name"] == name and detail["done"] == snap["agents"][0]["done"] > 0
    assert detail["line"].startswith(f"Agent: {name} | Task: ")
    assert detail["prompt"]["task_id"] == last["task"] and not detail["prompt"]["current"]
    assert detail["prompt"]["excerpt"].startswith(f"do part {last['task'][1:]} with ")
    assert detail["last_output"]["task_id"] == last["task"]
    assert detail["last_output"]["excerpt"].startswith("[simulated]")
    assert detail["usage"]["output_tokens"] > 0 and detail["attempts"]
    assert client.get("/api/agents/nobody", headers=auth).status_code == 404
    assert client.get("/api/snapshot?run=zzz", headers=auth).status_code == 404


def test_drill_down_excerpts_are_redacted(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for agent in client.get("/api/snapshot", headers=auth).json()["agents"]:
        detail = client.get(f"/api/agents/{agent['name']}", headers=auth)
        assert SECRET_KEY not in detail.text
        assert "[redacted]" in detail.json()["prompt"]["excerpt"]
    assert excerpt(f"x {SECRET_KEY} y") == "x [redacted] y"
    long = excerpt("a" * 2000)
    assert long.endswith(" …") and len(long) < 900


def test_metrics(client: TestClient, finished: Path) -> None:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'phalanx_tasks{run="r1",state="succeeded"} 30' in r.text
    journal = Journal(finished / "journal.sqlite")
    try:
        text = metrics_text(journal, "r1")
    finally:
        journal.close()
    assert text == r.text  # one writer: phalanx.status.prometheus
    attempts = [ln for ln in text.splitlines() if ln.startswith("phalanx_attempts_total{")]
    assert attempts and all('run="r1",role="' in ln and ',agent="' in ln for ln in attempts)
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in attempts) == 30  # sum() is the truth
    again = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.text == r.text  # the app's fold, scraped again: the same


def _read(state: Path, run_id: str) -> list[Any]:
    journal = Journal(state / "journal.sqlite")
    try:
        return list(journal.read_events(run_id))
    finally:
        journal.close()


# -- the SSE stream ----------------------------------------------------------------------------
class _Stream:
    """A raw SSE client: ``next()`` returns (event, data) pairs."""

    def __init__(self, port: int, token: str, path: str = "/events") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("content-type", "").startswith("text/event-stream")
        self.buf = ""

    def next(self) -> tuple[str, Any]:
        while True:
            block, sep, rest = self.buf.partition("\n\n")
            if sep:
                self.buf = rest
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "event" in fields:
                    return fields["event"], json.loads(fields["data"])
                continue
            chunk = self.resp.read1(65536)
            assert chunk, "the stream ended"
            self.buf += chunk.decode()

    def close(self) -> None:
        self.conn.close()


def test_events_stream_a_snapshot_with_every_span(live_dashboard: DashboardThread) -> None:
    stream = _Stream(live_dashboard.port, live_dashboard.token, "/events?run=r1")
    try:
        kind, data = stream.next()
    finally:
        stream.close()
    assert kind == "snapshot" and data["reset"] is True
    assert data["run_id"] == "r1" and data["status"] == "succeeded"
    assert len(data["spans"]) == 30 and data["swarm"][1].startswith("Tasks: 30 done")
    _wait_for(lambda: not _sse_threads(), "the stream's worker ends with its client")


def test_stop_ends_open_streams_quickly(finished: Path) -> None:
    dash = DashboardThread(finished)
    dash.start()
    streams = [_Stream(dash.port, dash.token) for _ in range(3)]
    try:
        assert all(s.next()[0] == "snapshot" for s in streams)
        t0 = time.monotonic()
        dash.stop()
        assert time.monotonic() - t0 < 2.5
        for s in streams:  # each stream has ended
            with contextlib.suppress(http.client.IncompleteRead, ConnectionError):
                while s.resp.read1(65536):
                    pass
    finally:
        for s in streams:
            s.close()
        dash.stop()
    _wait_for(lambda: not _sse_threads(), "no stream worker outlives the server")


def _sse_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("phalanx-sse")]


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_events_follow_the_latest_run_at_most_4_per_second(tmp_path: Path) -> None:
    state = tmp_path / "state"
    dash = DashboardThread(state)
    dash.start()
    stream = _Stream(dash.port, dash.token)
    try:
        assert stream.next() == ("waiting", {"message": "no runs yet: waiting"})
        plan = write_plan(tmp_path / "plan.yaml", sim_plan(60, agents=4, latency_ms=50))
        proc = _start_run(state, plan, "follow")
        try:
            kind, first = stream.next()
            while kind == "waiting":  # the run exists before its first event is written
                assert first == {"message": "run follow is starting"}
                kind, first = stream.next()
            assert kind == "snapshot" and first["reset"] and first["run_id"] == "follow"
            t0, n, last = time.monotonic(), 0, first
            while last["finished"] is None:
                _, last = stream.next()
                n += 1
            rate_window = time.monotonic() - t0
            assert n <= 4 * rate_window + 2
            assert last["swarm"][1].startswith("Tasks: 60 done")
            assert proc.wait(timeout=20) == 0
        finally:
            _stop(proc)
    finally:
        stream.close()
        dash.stop()


# -- Chromium ----------------------------------------------------------------------------------
def _start_run(state: Path, plan: Path, run_id: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "phalanx", "--state-dir", str(state), "run", str(plan)]
    return subprocess.Popen(
        [*cmd, "--no-tui", "--quiet", "--run-id", run_id],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


# the succeeded count of the page's legend (an HTML table cell, not a terminal line)
_DONE = "(() => { const e = document.querySelector('#legend [data-state=succeeded]');"
_DONE += " return e ? parseInt(e.textContent) : -1; })()"


def _done(page: Any) -> int:
    return int(page.evaluate(_DONE))


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"],
            timeout=20_000,
        )
        try:
            yield browser
        finally:
            browser.close()


def test_chromium_follows_a_live_run(tmp_path: Path, chromium: Any) -> None:
    state = tmp_path / "state"
    plan = write_plan(tmp_path / "plan.yaml", sim_plan(120, agents=6, latency_ms=150))
    dash = DashboardThread(state, run_id="live")
    url = dash.start()
    proc: subprocess.Popen[bytes] | None = None
    page = chromium.new_page()
    page.set_default_timeout(20_000)
    try:
        base = url.split("?")[0]
        assert page.goto(base).status == 401  # no token
        assert page.goto(base + "?token=wrong-token").status == 403
        rebound = base.replace("127.0.0.1", "evil.test")
        assert page.goto(f"{rebound}?token={dash.token}").status == 403  # DNS rebinding
        assert page.goto(url).status == 200  # redirected, the token now in a cookie
        assert "token" not in page.url
        page.wait_for_function("() => $('title').textContent.includes('waiting for run live')")

        proc = _start_run(state, plan, "live")
        page.wait_for_function(f"() => {_DONE} >= 1 && {_DONE} < 100")
        first = _done(page)
        assert (page.text_content("#status") or "").strip() == "running"
        page.wait_for_function(f"() => {_DONE} > {first}")  # live: the counter moves
        assert _done(page) > first
        assert page.locator("#agent-rows tr.agent").count() == 6  # level 1: one row each
        team = page.locator("#team-rows tr[data-role='generalist']")  # level 2
        assert (team.locator("td").first.text_content() or "") == "Generalist team"
        assert re.fullmatch(r"[0-6]/6", team.locator("td").nth(1).text_content() or "")
        page.wait_for_function(f"() => {_DONE} === 120", timeout=30_000)
        assert page.text_content("#headline") == "120/120 done"  # level 3
        segments = page.locator("#total-bar > span")
        assert segments.count() == 1 and segments.first.get_attribute("class") == "succeeded"
        assert proc.wait(timeout=20) == 0

        assert page.locator("#gantt rect").count() == 120
        page.locator("#agent-rows tr.agent").first.click()
        page.wait_for_function("() => document.querySelector('#drill-body pre.prompt') !== null")
        assert "do part" in (page.text_content("#drill-body pre.prompt") or "")
        assert "[simulated]" in (page.text_content("#drill-body pre.output") or "")
        assert "tokens in" in (page.text_content("#drill-body") or "")
    finally:
        page.close()
        if proc is not None:
            _stop(proc)
        dash.stop()


def test_loading_the_page_without_the_token_is_401(finished: Path, chromium: Any) -> None:
    with DashboardThread(finished) as url:
        page = chromium.new_page()
        try:
            response = page.goto(url.split("?")[0])
            assert response.status == 401
            assert "Agent: " not in (page.content() or "")
        finally:
            page.close()

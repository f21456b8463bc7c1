"""The dashboard in a real browser (Playwright + Debian chromium): a web page that tells what
the journal says.

A real run with injected non-retryable faults (one tester agent's provider fails every call
with ``auth``: deterministic) and a real ``phalanx run`` killed with SIGKILL are served by
the dashboard; the assertions read the rendered DOM: no team or agent bar is fully green
while one of its tasks failed, the failed count and each failure's reason are visible, the
killed run reads ``stopped (process gone)`` with ``phalanx resume RUN_ID``, and the page
holds no terminal art and no emoji. Full-page screenshots are saved under
``build/test-artifacts/``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import CHROMIUM, CHROMIUM_ARGS, sim_plan, write_plan
from phalanx.journal import Journal
from phalanx.status.web import DashboardThread

pytestmark = pytest.mark.timeout(120)

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
PAGE_TIMEOUT_MS = 20_000
START_TIMEOUT = 30.0  # the killed run: until it has an owner and two successes
STOP_SEEN_MS = 10_000  # from the kill until the page says stopped
AUTH_REASON = "auth: simulated auth (auth is not retryable)"
SKIP_REASON = "upstream task 'f0' did not succeed"
# terminal art (block and box-drawing characters, the bars' ✗) and emoji: none in the page
ART = r"/[\u2500-\u259F\u2600-\u27BF\u{1F000}-\u{1FAFF}\uFE0F]/u"


def _fault_plan() -> dict[str, Any]:
    """Coders on ``sim`` (all succeed); testers Solid (on ``sim``) and Flaky (on ``sim:bad``,
        whose every call fails with ``auth``, not retryable). Skills pin each tester task to one
        of them, so the tester team always ends 3 succeeded, 2 failed and 2 skipped (``after``
    needs ``f0``, ``later`` needs ``after``)."""

    def task(tid: str, role: str, category: str, **more: Any) -> dict[str, Any]:
        return {"id": tid, "prompt": f"do {tid}", "role": role, "category": category, **more}

    return {
        "name": "faults",
        "provider": "sim",
        "providers": {
            "sim": {"latency": 20, "seed": 1},
            "sim:bad": {"latency": 20, "seed": 1, "faults": {"auth": 1.0}},
        },
        "breaker": {"enabled": False},
        "agents": [
            {"role": "coder", "count": 2},
            {"role": "tester", "name": "Solid", "skills": ["solid"]},
            {"role": "tester", "name": "Flaky", "skills": ["flaky"], "provider": "sim:bad"},
        ],
        "tasks": [
            *[task(f"c{i}", "coder", "implementation") for i in range(4)],
            *[task(f"s{i}", "tester", "testing", skills=["solid"]) for i in range(3)],
            *[
                task(f"f{i}", "tester", "testing", skills=["flaky"], title=f"Flaky check {i}")
                for i in range(2)
            ],
            task("after", "tester", "testing", needs=["f0"], title="After the flaky check"),
            task("later", "tester", "testing", needs=["after"]),
        ],
    }


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding the finished run ``faulty`` of :func:`_fault_plan`."""
    root = tmp_path_factory.mktemp("webb")
    plan = write_plan(root / "plan.yaml", _fault_plan())
    result = phalanx.run_sync(str(plan), state=root / "state", run_id="faulty")
    assert result.status == "failed"
    p = result.snapshot.tasks
    assert (p.succeeded, p.failed, p.skipped) == (7, 2, 2)
    return root / "state"


@pytest.fixture(scope="module")
def dashboard(state: Path) -> Iterator[DashboardThread]:
    dash = DashboardThread(state)
    dash.start()
    try:
        yield dash
    finally:
        dash.stop()


@pytest.fixture(scope="module")
def browser(state: Path) -> Iterator[Any]:
    """Started after ``state``: Playwright's sync API runs an event loop in this thread, and
    the in-process run needs its own."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=20_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(dashboard: DashboardThread, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        assert pg.goto(dashboard.start()).status == 200  # the token moves into a cookie
        yield pg
    finally:
        context.close()


def _open(page: Any, dash: DashboardThread, run_id: str) -> None:
    base = f"http://127.0.0.1:{dash.port}/"
    assert page.goto(f"{base}?run={run_id}").status == 200
    page.wait_for_function(
        f"() => document.title.includes({run_id!r}) && "
        "document.querySelectorAll('#team-rows tr').length > 0"
    )


def _screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


# -- reading the DOM ---------------------------------------------------------------------------
_BARS = """(sel) => [...document.querySelectorAll(sel)].map((row) => {
  const meter = row.querySelector('.meter');
  const seg = {};
  for (const s of meter.children) seg[s.dataset.state] = s.getBoundingClientRect().width;
  const counts = {};
  for (const td of row.querySelectorAll('td[data-state]')) counts[td.dataset.state] =
    Number(td.textContent);
  return {key: row.dataset.role || row.dataset.agent, width: meter.getBoundingClientRect().width,
          seg, counts, text: row.innerText};
})"""


def _bars(page: Any, selector: str) -> dict[str, dict[str, Any]]:
    return {b["key"]: b for b in page.evaluate(_BARS, selector)}


def _never_green_over_a_failure(bar: dict[str, Any], failed: int) -> None:
    green, red = bar["seg"].get("succeeded", 0.0), bar["seg"].get("failed", 0.0)
    if failed:
        assert red >= 3, bar  # a visible red segment
        assert green <= bar["width"] - red + 0.5, bar  # green never covers the red
        assert green < bar["width"] - 2, bar
    else:
        assert red == 0, bar


# -- the tests ---------------------------------------------------------------------------------
def test_failures_and_their_reasons_show_in_the_page(page: Any, dashboard: DashboardThread) -> None:
    _open(page, dashboard, "faulty")
    headline = page.locator("#headline")
    assert headline.inner_text() == "11/11 done · 2 failed · 2 skipped"
    assert "bad" in (headline.get_attribute("class") or "")
    assert page.locator("#status").inner_text().strip() == "failed"
    legend = page.locator("#legend [data-state='failed']").inner_text()
    assert legend.strip() == "2 failed"

    teams = _bars(page, "#team-rows tr")
    assert set(teams) == {"coder", "tester"}
    tester, coder = teams["tester"], teams["coder"]
    assert tester["counts"] == {
        "succeeded": 3, "failed": 2, "skipped": 2, "running": 0, "waiting": 0, "pending": 0
    }  # fmt: skip
    assert coder["counts"]["succeeded"] == 4 and coder["counts"]["failed"] == 0
    for bar in teams.values():
        _never_green_over_a_failure(bar, bar["counts"]["failed"])
    assert tester["seg"]["skipped"] >= 3  # the skipped task is a grey segment of its own
    assert coder["seg"]["succeeded"] >= coder["width"] - 0.5  # all succeeded: all green

    agents = _bars(page, "#agent-rows tr")
    assert set(agents) == {"Cipher", "Nova", "Solid", "Flaky"}  # none dropped
    flaky = agents["Flaky"]
    assert "2/2 done · 2 failed" in flaky["text"]  # its failed tasks stay counted
    assert flaky["seg"].get("succeeded", 0.0) == 0 and flaky["seg"]["failed"] >= flaky["width"] - 1
    assert AUTH_REASON in flaky["text"]  # the last failure's class and one-line error
    for name, bar in agents.items():
        failed = 2 if name == "Flaky" else 0
        _never_green_over_a_failure(bar, failed)

    problems = {
        r["task"]: r
        for r in page.evaluate(
            "() => [...document.querySelectorAll('#problem-rows tr')].map((r) => ({task:"
            " r.dataset.task, text: r.innerText, reason: r.querySelector('td:last-child')"
            ".innerText}))"
        )
    }
    # failed tasks first, one row each; skipped ones one row per reason
    assert list(problems) == ["f0", "f1", "after later"]
    assert problems["f0"]["reason"] == problems["f1"]["reason"] == AUTH_REASON
    assert "Flaky" in problems["f0"]["text"] and "Flaky check 0" in problems["f0"]["text"]
    skipped = problems["after later"]
    assert skipped["reason"] == SKIP_REASON and "skipped" in skipped["text"]
    assert "2 tasks" in skipped["text"] and "after, later" in skipped["text"]

    page.locator("#agent-rows tr[data-agent='Flaky']").click()
    page.wait_for_function("() => document.querySelector('#drill-body pre.prompt') !== null")
    drill = page.locator("#drill-body").inner_text()
    assert f"f0: {AUTH_REASON}" in drill and f"f1: {AUTH_REASON}" in drill
    assert "auth: simulated auth" in drill  # the attempts list names the error too

    _no_terminal_art(page)
    _screenshot(page, "web-dashboard-failures.png")


def _no_terminal_art(page: Any) -> None:
    html = page.evaluate("() => document.documentElement.outerHTML")
    found = page.evaluate(f"() => (document.documentElement.outerHTML.match({ART}g) || [])")
    assert found == [], found[:10]
    assert "Agent: " not in html  # no terminal status lines drawn in the page
    assert "[" + "-" * 3 not in html


def test_a_killed_run_reads_stopped_with_the_resume_hint(
    page: Any, dashboard: DashboardThread, state: Path, tmp_path: Path
) -> None:
    plan = write_plan(tmp_path / "slow.yaml", sim_plan(40, agents=2, latency_ms=400))
    cmd = [sys.executable, "-m", "phalanx", "--state-dir", str(state), "run", str(plan)]
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--no-tui", "--quiet", "--run-id", "killed"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_running(state, "killed", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        t0 = time.monotonic()
        _open(page, dashboard, "killed")
        page.wait_for_selector("#stopped:not([hidden])", timeout=STOP_SEEN_MS)
        seen = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    assert seen < STOP_SEEN_MS / 1000
    banner = page.locator("#stopped").inner_text()
    assert "stopped (process gone)" in banner and "phalanx resume killed" in banner
    assert page.locator("#status").inner_text().strip() == "stopped (process gone)"
    assert page.locator("#conn").inner_text() == "stopped"
    eta = page.evaluate(
        "() => [...document.querySelectorAll('#stats tr')].find((r) =>"
        " r.cells[0].innerText === 'ETA').cells[1].innerText"
    )
    assert eta == "none: stopped (process gone) — phalanx resume killed"
    states = page.evaluate(
        "() => [...document.querySelectorAll('#agent-rows tr .state')].map((s) => s.innerText)"
    )
    assert len(states) == 2 and not any(s.startswith("running") for s in states)
    teams = _bars(page, "#team-rows tr")
    (team,) = teams.values()
    assert team["counts"]["running"] == 0 and team["counts"]["succeeded"] >= 2
    legend = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#legend [data-state]')]"
        ".map((s) => [s.dataset.state, parseInt(s.innerText)]))"
    )
    assert legend["running"] == 0 and legend["succeeded"] >= 2
    assert sum(legend.values()) == 40  # what was running is pending again: none dropped
    # the clock stops at its last event or heartbeat: what it did stays on the timeline
    assert page.locator("#gantt rect.succeeded").count() >= 2
    widths = page.evaluate(
        "() => [...document.querySelectorAll('#gantt rect.succeeded')]"
        ".map((r) => r.width.baseVal.value)"
    )
    assert all(w > 1 for w in widths), widths
    runs = page.locator("#runs option[value='killed']").inner_text()
    assert "stopped (process gone) — phalanx resume killed" in runs
    _no_terminal_art(page)
    _screenshot(page, "web-dashboard-stopped.png")


def _wait_running(state: Path, run_id: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the run has an owner and two succeeded tasks (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        if (state / "journal.sqlite").exists():
            journal = Journal(state / "journal.sqlite")
            try:
                runs = {r.run_id: (r, c) for r, c in journal.list_runs(10)}
            finally:
                journal.close()
            got = runs.get(run_id)
            if got and got[0].owner is not None and got[1].get("succeeded", 0) >= 2:
                return
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not start within {START_TIMEOUT}s")

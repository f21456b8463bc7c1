"""Approvals that pause one branch (issue 20, item 4): a task with ``approval: required`` or
one a ``before_task`` hook asked about waits in ``awaiting_approval`` while the rest of the
DAG runs; ``phalanx approve`` (CLI), the dashboard's POST route and ``phalanx.approve``
decide; a rejection skips only what needs the task; ``approval_timeout`` fails or skips it;
a wait survives ``kill -9`` and a decision taken while no process runs is acted on at resume.
"""

from __future__ import annotations

import json
import os
import signal
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
from conftest import events, rows, wait_dead, write_plan
from phalanx import Plan
from phalanx.agents.hooks import Ask, CommandHook
from phalanx.exceptions import UsageError
from phalanx.status.web import create_app

pytestmark = pytest.mark.timeout(90)

TOKEN = "approve-token-0123456789abcdef"
BASE = "http://127.0.0.1:8123"


def plan_data(latency_ms: int = 150, **deploy: Any) -> dict[str, Any]:
    """build -> deploy (approval) -> announce, beside docs and tests -> lint."""
    return {
        "name": "approvals",
        "provider": "sim",
        "providers": {"sim": {"latency": {"distribution": "fixed", "ms": latency_ms}}},
        "agents": [{"role": "generalist", "count": 2}],
        "tasks": [
            {"id": "build", "prompt": "build it"},
            {"id": "deploy", "prompt": "deploy it", "needs": ["build"], **deploy},
            {"id": "announce", "prompt": "announce it", "needs": ["deploy"]},
            {"id": "docs", "prompt": "write the docs"},
            {"id": "tests", "prompt": "run the tests"},
            {"id": "lint", "prompt": "lint it", "needs": ["tests"]},
        ],
    }


def cli(state: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHALANX_STATE_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "phalanx", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def spawn(state: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``phalanx ARGS`` in the background; any left alive at the end is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PHALANX_STATE_DIR": str(state)}
        p = subprocess.Popen(
            [sys.executable, "-m", "phalanx", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def task_states(state: Path, run_id: str) -> dict[str, str]:
    found = rows(state, "SELECT task_id, state FROM tasks WHERE run_id=?", run_id)
    return {r["task_id"]: r["state"] for r in found}


def wait_for(check: Callable[[], bool], within: float = 20.0, what: str = "") -> float:
    """Seconds until ``check()`` holds (fails the test after ``within``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def awaiting(state: Path, run_id: str, *tids: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            st = task_states(state, run_id)
        except Exception:  # the journal or its tables are not there yet
            return False
        return all(st.get(t) == "awaiting_approval" for t in tids)

    return check


def attempts_of(state: Path, run_id: str, tid: str) -> list[Any]:
    return rows(
        state, "SELECT outcome FROM attempts WHERE run_id=? AND task_id=? ORDER BY attempt_id",
        run_id, tid,
    )  # fmt: skip


# -- 1. one branch waits, the rest runs, the CLI releases it --------------------------------
def test_one_branch_waits_its_siblings_finish_and_phalanx_approve_releases_it(
    state: Path, tmp_path: Path, spawn: Any
) -> None:
    plan = write_plan(tmp_path / "plan.yaml", plan_data(approval="required"))
    proc = spawn("run", str(plan), "--run-id", "A1", "--no-tui", "-q")
    wait_for(awaiting(state, "A1", "deploy"), what="deploy awaiting approval")
    # the siblings and their own dependants finish while deploy waits
    wait_for(
        lambda: all(task_states(state, "A1")[t] == "succeeded" for t in ("docs", "tests", "lint")),
        what="the other branches",
    )
    st = task_states(state, "A1")
    assert st["build"] == "succeeded" and st["announce"] == "pending"
    assert attempts_of(state, "A1", "deploy") == [] and attempts_of(state, "A1", "announce") == []
    assert proc.poll() is None, "the run waits for the decision"

    shown = cli(state, "status", "A1")
    assert "1 awaiting approval" in shown.stdout.splitlines()[0]
    assert "awaiting approval: deploy (since " in shown.stdout
    assert "— phalanx approve A1 deploy" in shown.stdout
    assert "ETA: waits on a person (1 approval)" in shown.stdout
    data = json.loads(cli(state, "status", "A1", "--json").stdout)
    assert [w["task"] for w in data["awaiting_approval"]] == ["deploy"]
    assert data["tasks"]["waiting"] == 1 and data["tasks"]["awaiting_approval"] == 1
    assert data["tasks"]["running"] == 0  # counted as waiting: not running, not pending
    assert data["tasks"]["pending"] == 1  # announce, behind it

    # a task that does not wait is refused, in one line
    refused = cli(state, "approve", "A1", "announce")
    assert refused.returncode == 2 and "not awaiting approval" in refused.stderr

    said = cli(state, "approve", "A1", "deploy", "--reason", "release window open")
    assert said.returncode == 0, said.stderr
    assert "deploy approved in run A1; the run picks it up within a second" in said.stdout
    decided = time.monotonic()
    picked = wait_for(lambda: bool(attempts_of(state, "A1", "deploy")), within=5, what="pickup")
    assert picked < 1.5, f"the running orchestrator took {picked:.2f}s to notice"
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - decided < 10
    assert set(task_states(state, "A1").values()) == {"succeeded"}
    assert [a["outcome"] for a in attempts_of(state, "A1", "deploy")] == ["succeeded"]
    (d,) = events(state, "A1", "approval_decided")
    assert (d["decision"], d["by"], d["reason"]) == ("approved", "cli", "release window open")
    again = cli(state, "approve", "A1", "deploy")
    assert again.returncode == 2 and "already approved by cli" in again.stderr


def run_in_thread(data: dict[str, Any], state: Path, run_id: str, **kw: Any) -> Any:
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["result"] = phalanx.run_sync(Plan.from_dict(data), state=state, run_id=run_id, **kw)
        except BaseException as exc:  # surfaced by the caller
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    box["thread"] = t
    return box


def finish(box: dict[str, Any]) -> phalanx.RunResult:
    box["thread"].join(60)
    assert not box["thread"].is_alive()
    if "error" in box:
        raise box["error"]
    result: phalanx.RunResult = box["result"]
    return result


# -- 2. a rejection skips only what needs the task ------------------------------------------
def test_a_rejected_approval_skips_only_its_dependants(state: Path) -> None:
    box = run_in_thread(plan_data(approval="required"), state, "A2")
    wait_for(awaiting(state, "A2", "deploy"), what="deploy awaiting approval")
    d = phalanx.approve("A2", "deploy", reject=True, reason="change freeze", state=state)
    assert (d.decision, d.by) == ("rejected", "api")
    result = finish(box)
    states = {k: t.state for k, t in result.tasks.items()}
    assert states == {
        "build": "succeeded",
        "deploy": "skipped",
        "announce": "skipped",
        "docs": "succeeded",
        "tests": "succeeded",
        "lint": "succeeded",
    }
    assert result.status == "failed" and result.exit_code == 1  # not every task succeeded
    skipped = {e["task_id"]: e["reason"] for e in events(state, "A2", "task_skipped")}
    assert skipped["deploy"] == "approval rejected by api: change freeze"
    assert skipped["announce"] == "upstream task 'deploy' did not succeed"
    assert attempts_of(state, "A2", "deploy") == []
    with pytest.raises(UsageError, match="already rejected by api"):
        phalanx.approve("A2", "deploy", state=state)


# -- 3. the dashboard's approve route ------------------------------------------------------
def test_dashboard_approve_route_needs_the_token_and_the_same_origin(state: Path) -> None:
    box = run_in_thread(plan_data(approval="required"), state, "A3")
    wait_for(awaiting(state, "A3", "deploy"), what="deploy awaiting approval")
    body = {"run": "A3", "task": "deploy", "reason": "ok from the page"}
    app = create_app(state, token=TOKEN)
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        page = c.get("/api/snapshot", params={"run": "A3", "token": TOKEN}).json()
        assert [w["task"] for w in page["awaiting_approval"]] == ["deploy"]
        assert "1 awaiting approval" in page["title"]
        assert page["eta_text"].endswith("waits on a person (1 approval)")
        html = c.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "Awaiting approval" in html and '"/api/approve"' in html

        assert c.post("/api/approve", json=body).status_code == 401  # no token
        assert c.post("/api/approve", json=body, headers={"Origin": BASE}).status_code == 401
        cookie = {"Cookie": f"phalanx_token_8123={TOKEN}"}
        for origin in ("http://evil.example", "http://127.0.0.1:9999", "null"):
            r = c.post("/api/approve", json=body, headers={**cookie, "Origin": origin})
            assert r.status_code == 403, origin
        cross = {**cookie, "Origin": BASE, "Sec-Fetch-Site": "cross-site"}
        assert c.post("/api/approve", json=body, headers=cross).status_code == 403
        # the cookie alone, without the page's Origin (a form or a script elsewhere): refused
        assert c.post("/api/approve", json=body, headers=cookie).status_code == 403
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
        assert c.post("/api/approve", json=body, headers=wrong).status_code == 403
        assert c.post("/api/other", headers={**cookie, "Origin": BASE}).status_code == 405
        assert rows(state, "SELECT * FROM approvals") == []  # nothing refused got through

        bad = c.post("/api/approve", content=b"nope", headers={**cookie, "Origin": BASE})
        assert bad.status_code == 400
        ok = c.post("/api/approve", json=body, headers={**cookie, "Origin": BASE})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "run": "A3", "task": "deploy", "decision": "approved", "reason": "ok from the page"
        }  # fmt: skip
        twice = c.post("/api/approve", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert twice.status_code == 409 and "already approved" in twice.json()["error"]
    result = finish(box)
    assert result.status == "succeeded"
    (d,) = events(state, "A3", "approval_decided")
    assert d["by"] == "dashboard"


# -- 4. approval_timeout ---------------------------------------------------------------------
@pytest.mark.parametrize("on_timeout", ["fail", "skip"])
def test_approval_timeout_fails_or_skips_the_task(state: Path, on_timeout: str) -> None:
    data = plan_data(
        latency_ms=20,
        approval="required",
        approval_timeout=0.6,
        approval_on_timeout=on_timeout,
    )
    t0 = time.monotonic()
    result = phalanx.run_sync(Plan.from_dict(data), state=state, run_id=f"T-{on_timeout}")
    took = time.monotonic() - t0
    assert 0.6 <= took < 5
    want = "failed" if on_timeout == "fail" else "skipped"
    assert result.tasks["deploy"].state == want
    assert result.tasks["announce"].state == "skipped"
    assert all(result.tasks[t].state == "succeeded" for t in ("build", "docs", "tests", "lint"))
    (d,) = events(state, f"T-{on_timeout}", "approval_decided")
    assert (d["decision"], d["by"]) == ("timed_out", "timeout")
    assert "approval_timeout 0.6s" in d["reason"]
    (req,) = events(state, f"T-{on_timeout}", "approval_requested")
    assert req["deadline"] == pytest.approx(req["since"] + 0.6)
    with pytest.raises(UsageError, match="already timed out"):
        phalanx.approve(f"T-{on_timeout}", "deploy", state=state)


# -- 5. kill -9 while awaiting, resume, approve ---------------------------------------------
def test_kill_9_while_awaiting_then_approve_and_resume(
    state: Path, tmp_path: Path, spawn: Any
) -> None:
    data = plan_data(approval="required")
    data["tasks"].append(
        {"id": "release", "prompt": "release it", "needs": ["docs"], "approval": "required"}
    )
    plan = write_plan(tmp_path / "plan.yaml", data)
    proc = spawn("run", str(plan), "--run-id", "K1", "--no-tui", "-q")
    wait_for(awaiting(state, "K1", "deploy", "release"), what="both awaiting approval")
    (first,) = [e for e in events(state, "K1", "approval_requested") if e["task_id"] == "release"]
    proc.send_signal(signal.SIGKILL)
    assert wait_dead([proc.pid]) == []
    proc.communicate(timeout=10)

    # while no process runs: the status still shows the waits; a decision is recorded
    shown = cli(state, "status", "K1")
    assert "stopped (process gone)" in shown.stdout
    assert "awaiting approval: deploy" in shown.stdout
    said = cli(state, "approve", "K1", "deploy")
    assert said.returncode == 0, said.stderr
    assert "no process drives the run: 'phalanx resume K1' acts on it" in said.stdout
    assert attempts_of(state, "K1", "deploy") == []

    resumed = spawn("resume", "K1", "--no-tui", "-q")
    # the decision taken while nothing ran is acted on; the other wait goes on
    wait_for(
        lambda: [a["outcome"] for a in attempts_of(state, "K1", "deploy")] == ["succeeded"],
        what="deploy ran after the resume",
    )
    wait_for(awaiting(state, "K1", "release"), what="release still awaiting")
    time.sleep(0.3)
    assert resumed.poll() is None and attempts_of(state, "K1", "release") == []
    again = [e for e in events(state, "K1", "approval_requested") if e["task_id"] == "release"]
    assert len(again) == 2 and again[-1]["since"] == first["since"]  # the wait's clock kept
    data = json.loads(cli(state, "status", "K1", "--json").stdout)
    assert [w["task"] for w in data["awaiting_approval"]] == ["release"]

    assert cli(state, "approve", "K1", "release").returncode == 0
    _out, err = resumed.communicate(timeout=30)
    assert resumed.returncode == 0, err
    assert set(task_states(state, "K1").values()) == {"succeeded"}
    for tid in ("deploy", "release", "announce"):
        assert [a["outcome"] for a in attempts_of(state, "K1", tid)] == ["succeeded"], tid
    decided = events(state, "K1", "approval_decided")
    assert sorted(e["task_id"] for e in decided) == ["deploy", "release"]  # each said once


# -- 6. a before_task hook that asks --------------------------------------------------------
def test_a_before_task_hook_answering_ask_pauses_the_task(state: Path, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def guard(payload: dict[str, Any]) -> Any:
        if payload["task"]["id"] == "deploy":
            seen.append(payload)
            return Ask("deploys need a human")
        return None

    box = run_in_thread(plan_data(), state, "H1", hooks=[{"before_task": guard}])
    wait_for(awaiting(state, "H1", "deploy"), what="deploy awaiting approval")
    (req,) = events(state, "H1", "approval_requested")
    assert (req["reason"], req["by"]) == ("deploys need a human", "hook:guard")
    (cut,) = attempts_of(state, "H1", "deploy")
    assert cut["outcome"] == "cancelled"  # the agent was given back, nothing counted
    shown = cli(state, "status", "H1")
    assert "awaiting approval: deploy (since " in shown.stdout
    assert "deploys need a human" in shown.stdout
    phalanx.approve("H1", "deploy", state=state)
    result = finish(box)
    assert result.status == "succeeded"
    assert [a["outcome"] for a in attempts_of(state, "H1", "deploy")] == ["cancelled", "succeeded"]
    # asked again after the approval, the hook sees the decision, and its ask does not stop it
    assert seen[0]["approval"] is None
    assert seen[-1]["approval"]["decision"] == "approved"


def test_command_hook_asks_with_exit_3_or_a_json_answer(tmp_path: Path) -> None:
    import asyncio

    script = tmp_path / "hook.py"
    script.write_text(
        "import json, sys\n"
        "json.load(sys.stdin)\n"
        "how = sys.argv[1]\n"
        "if how == 'exit3':\n"
        "    sys.stderr.write('needs a human')\n"
        "    sys.exit(3)\n"
        "if how == 'json':\n"
        "    print(json.dumps({'decision': 'ask', 'reason': 'prod change'}))\n"
        "if how == 'veto':\n"
        "    print(json.dumps({'decision': 'veto', 'reason': 'no'}))\n"
        "if how == 'odd':\n"
        "    print(json.dumps({'decision': 'maybe'}))\n"
    )

    def fire(how: str, on: str = "before_task") -> Any:
        hook = CommandHook(on=on, command=(sys.executable, str(script), how))
        return asyncio.run(hook.run(json.dumps({"task": {"id": "t"}})))

    out = fire("exit3")
    assert out.ask and not out.veto and out.reason == "needs a human"
    out = fire("json")
    assert out.ask and out.reason == "prod change"
    out = fire("veto")
    assert out.veto and not out.ask and out.reason == "no"
    out = fire("odd")
    assert not out.ask and not out.veto and "unknown decision 'maybe'" in out.failures[0].message
    out = fire("plain")
    assert out.ok
    out = fire("exit3", on="after_task")
    assert not out.ask and "exited with 3 (only before_task can ask)" in out.failures[0].message


def test_plan_fields_validate_and_round_trip() -> None:
    data = plan_data(approval="required", approval_timeout=30, approval_on_timeout="skip")
    plan = Plan.from_dict(data)
    deploy = plan.task_map["deploy"]  # type: ignore[index]
    assert (deploy.approval, deploy.approval_timeout, deploy.approval_on_timeout) == (
        "required",
        30,
        "skip",
    )
    from phalanx.plan.file import plan_to_dict

    again = Plan.from_dict(plan_to_dict(plan)).task_map["deploy"]  # type: ignore[index]
    assert again == deploy
    for bad in ({"approval": "maybe"}, {"approval_on_timeout": "explode"}, {"approval_timeout": 0}):
        with pytest.raises(phalanx.PlanError):
            Plan.from_dict(plan_data(**bad))
    task = phalanx.Task(id="x", prompt="p", approval="required")  # the Python API
    assert task.approval == "required"

"""Fault injection against the real SDK-based providers (``anthropic:``, ``openai:``).

The providers are pointed at :class:`fakeserver.FakeProviderServer` on 127.0.0.1, which
answers each request with a seeded, per-request behaviour (see its module docstring). The
guarantees checked here:

* faults: 30% mixed retryable faults over 1000 tasks with 6 attempts: >= 997 succeed; every
  failure has its class, last status and attempts; no wait is shorter than Retry-After;
* non-retryable classes (spend cap 429, 401, 400 context length) are retried 0 times;
* truncation: a ``max_tokens`` (or cut) answer is never committed, and no tool call in it runs;
* hang: an attempt that hangs is aborted within its timeout + 1 s and retried;
* malformed JSON is re-asked, and fails as ``output_invalid`` if it never parses.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import events, rows
from fakeserver import RETRYABLE_FAULTS, FakeProviderServer
from phalanx import Plan

PROVIDERS = ("anthropic", "openai")
RETRYABLE_CLASSES = ("rate_limited", "overloaded", "server_error", "stream_cut")
# behaviour -> (error class, HTTP status) of the attempt it ends
EXPECTED = {
    "anthropic": {
        "ok": (None, None),
        "rate_limited": ("rate_limited", 429),
        "overloaded": ("overloaded", 529),
        "server_error": ("server_error", 500),
        "cut": ("stream_cut", None),
        "sse_error": ("overloaded", None),  # an overloaded_error event after 200
    },
    "openai": {
        "ok": (None, None),
        "rate_limited": ("rate_limited", 429),
        "overloaded": ("overloaded", 503),
        "server_error": ("server_error", 500),
        "cut": ("stream_cut", None),
        "sse_error": ("server_error", None),  # a server_error chunk after 200
    },
}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy-fault-tests")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-fault-tests")


@pytest.fixture
def server_factory() -> Iterator[Any]:
    """Start servers on demand; every one is stopped, and checked to leave no thread."""
    started: list[FakeProviderServer] = []

    def make(**kwargs: Any) -> FakeProviderServer:
        srv = FakeProviderServer(**kwargs).start()
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()
    for srv in started:
        assert srv.open_handlers == 0, "a handler thread outlived its server"
    assert not [t for t in threading.enumerate() if t.name == "fakeprovider-accept"]


def plan_for(
    srv: FakeProviderServer,
    provider: str,
    tasks: list[dict[str, Any]],
    *,
    agents: int = 1,
    style: str | None = None,
    tools: list[str] | None = None,
    provider_timeout: float = 5,
) -> Plan:
    base = srv.url if provider == "anthropic" else srv.url + "/v1"
    agent: dict[str, Any] = {"role": "generalist", "count": agents, "provider": f"{provider}:m"}
    if style:
        agent["style"] = style
    if tools:
        agent["tools"] = tools
    return Plan.from_dict(
        {
            "name": "faults",
            "providers": {provider: {"base_url": base, "timeout": provider_timeout}},
            "retry": {"base_seconds": 0.01, "cap_seconds": 0.05},
            "breaker": {"enabled": False},
            "limits": {"rate_limits": {provider: {}}},  # no client-side rpm/tpm pacing
            "agents": [agent],
            "tasks": tasks,
        }
    )


# =========================================================================== the server


def test_behaviours_are_seeded_and_per_request() -> None:
    faults = {f: 0.06 for f in RETRYABLE_FAULTS}
    a = FakeProviderServer(seed=7, faults=faults)
    b = FakeProviderServer(seed=7, faults=faults)
    c = FakeProviderServer(seed=8, faults=faults)
    draws = [a.behaviour_for(f"task {i}", n) for i in range(2000) for n in range(2)]
    assert draws == [b.behaviour_for(f"task {i}", n) for i in range(2000) for n in range(2)]
    assert draws != [c.behaviour_for(f"task {i}", n) for i in range(2000) for n in range(2)]
    share = sum(d != "ok" for d in draws) / len(draws)
    assert 0.27 < share < 0.33, share
    assert a.behaviour_for("x FAULTS=hang,ok", 0) == "hang"
    assert a.behaviour_for("x FAULTS=hang,ok", 5) == "ok"
    with pytest.raises(ValueError):
        FakeProviderServer(faults={"nonsense": 0.1})


# =========================================================================== faults


@pytest.mark.parametrize("provider", PROVIDERS)
def test_mixed_retryable_faults_over_1000_tasks(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory(seed=1, faults={f: 0.3 / len(RETRYABLE_FAULTS) for f in RETRYABLE_FAULTS})
    tasks = [{"id": f"t{i}", "prompt": f"do part {i}", "max_attempts": 6} for i in range(1000)]
    t0 = time.monotonic()
    result = phalanx.run_sync(plan_for(srv, provider, tasks, agents=20))
    wall = time.monotonic() - t0
    rid = result.run_id
    ok = sum(t.state == "succeeded" for t in result.tasks.values())
    print(f"\n{provider}: {ok}/1000 succeeded in {wall:.1f}s; served {dict(srv.counts)}")
    assert wall < 60
    assert ok >= 997
    assert sum(srv.counts[f] for f in RETRYABLE_FAULTS) > 250  # the faults did happen

    failed = rows(state, "SELECT * FROM tasks WHERE run_id=? AND state!='succeeded'", rid)
    assert len(failed) == 1000 - ok
    for t in failed:
        last = rows(
            state,
            "SELECT * FROM attempts WHERE run_id=? AND task_id=? ORDER BY attempt_no DESC",
            rid,
            t["task_id"],
        )
        print(f"  failed: {t['task_id']} {t['error_class']} status={last[0]['status']}")
        assert t["state"] == "failed"
        assert t["error_class"] in RETRYABLE_CLASSES, dict(t)
        assert t["attempts"] == 6 and len(last) == 6, dict(t)
        assert t["error"]
        assert last[0]["error_class"] == t["error_class"]

    attempts = rows(
        state, "SELECT * FROM attempts WHERE run_id=? ORDER BY task_id, attempt_no", rid
    )
    assert all(a["outcome"] != "running" for a in attempts)
    by_task: dict[str, list[sqlite3.Row]] = {}
    for a in attempts:
        by_task.setdefault(a["task_id"], []).append(a)
    limited, slack = 0, float("inf")
    for seq in by_task.values():
        assert [a["attempt_no"] for a in seq] == list(range(1, len(seq) + 1))
        for prev, nxt in itertools.pairwise(seq):
            if prev["error_class"] != "rate_limited":
                continue
            limited += 1
            assert prev["status"] == 429 and prev["retry_after"] == pytest.approx(srv.retry_after)
            waited = nxt["started_at"] - prev["finished_at"]
            slack = min(slack, waited - prev["retry_after"])
            assert waited >= prev["retry_after"] - 1e-3, (dict(prev), dict(nxt), waited)
    print(
        f"  {limited} retries after a 429: each waited Retry-After + {slack * 1000:.1f} ms or more"
    )
    assert limited > 20
    # every attempt reached the server, and no request was made outside an attempt
    assert len(attempts) == len(srv.served), (len(attempts), len(srv.served))
    # each attempt is its request's behaviour, classified: class and HTTP status (the last
    # status of a failed task included; a failure inside a 200 stream has none)
    seen = {(s.key, s.n): s.behaviour for s in srv.served}
    prompts = {t["id"]: t["prompt"] for t in tasks}
    expect = EXPECTED[provider]
    for a in attempts:
        behaviour = seen[(prompts[a["task_id"]], a["attempt_no"] - 1)]
        assert (a["error_class"], a["status"]) == expect[behaviour], (behaviour, dict(a))


# =========================================================================== non-retryable


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_retryable_classes_are_not_retried(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory()
    expected = {
        "quota": ("quota_exhausted", 429),
        "auth": ("auth", 401),
        "context": ("context_length", 400),
    }
    tasks = [
        {"id": name, "prompt": f"task {name} FAULTS={name}", "max_attempts": 6} for name in expected
    ]
    result = phalanx.run_sync(plan_for(srv, provider, tasks, agents=3))
    for name, (cls, status) in expected.items():
        atts = rows(
            state, "SELECT * FROM attempts WHERE run_id=? AND task_id=?", result.run_id, name
        )
        task = rows(state, "SELECT * FROM tasks WHERE run_id=? AND task_id=?", result.run_id, name)
        assert len(atts) == 1, (name, [dict(a) for a in atts])
        assert (atts[0]["error_class"], atts[0]["status"]) == (cls, status), dict(atts[0])
        assert (task[0]["state"], task[0]["error_class"]) == ("failed", cls)
        assert len(srv.requests_for(f"FAULTS={name}")) == 1


# =========================================================================== truncation


@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_or_cut_answers_are_never_committed(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory()
    tasks = [
        {"id": "trunc", "prompt": "write FAULTS=truncated", "max_attempts": 3},
        {"id": "cut", "prompt": "write FAULTS=cut", "max_attempts": 2},
    ]
    result = phalanx.run_sync(plan_for(srv, provider, tasks, agents=2))
    rid = result.run_id
    assert result.tasks["trunc"].state == "failed"
    assert result.tasks["cut"].state == "failed"
    by_id = {r["task_id"]: r for r in rows(state, "SELECT * FROM tasks WHERE run_id=?", rid)}
    assert by_id["trunc"]["error_class"] == "truncated"
    assert by_id["trunc"]["attempts"] == 1  # not retryable: the same prompt stops the same way
    assert by_id["cut"]["error_class"] == "stream_cut"
    assert by_id["cut"]["attempts"] == 2
    assert rows(state, "SELECT * FROM results WHERE run_id=?", rid) == []
    outputs = result.outputs_dir
    assert not outputs.exists() or not [p for p in outputs.iterdir() if p.stem in by_id]
    assert not result.tasks["trunc"].output and not result.tasks["cut"].output


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_tool_runs_from_a_truncated_answer(
    provider: str, state: Path, tmp_path: Path, server_factory: Any
) -> None:
    # control: the same tool call in a complete answer does write the file
    srv = server_factory(tool_call=("write_file", {"path": "made.txt", "content": "hi"}))
    ws_ok = tmp_path / "ws_ok"
    ws_ok.mkdir()
    tasks: list[dict[str, Any]] = [{"id": "w", "prompt": "write FAULTS=tool_call,ok"}]
    done = phalanx.run_sync(plan_for(srv, provider, tasks, tools=["write_file"]), workspace=ws_ok)
    assert done.status == "succeeded", done.summary()
    assert (ws_ok / "made.txt").read_text() == "hi"

    ws = tmp_path / "ws"
    ws.mkdir()
    tasks = [{"id": "w", "prompt": "write FAULTS=truncated_tool", "max_attempts": 3}]
    result = phalanx.run_sync(plan_for(srv, provider, tasks, tools=["write_file"]), workspace=ws)
    assert result.tasks["w"].state == "failed"
    assert not (ws / "made.txt").exists()
    assert events(state, result.run_id, "tool_called") == []
    task = rows(state, "SELECT * FROM tasks WHERE run_id=?", result.run_id)[0]
    assert (task["error_class"], task["attempts"]) == ("truncated", 1)
    assert rows(state, "SELECT * FROM results WHERE run_id=?", result.run_id) == []


# =========================================================================== hang


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hanging_attempt_is_aborted_within_its_timeout_and_retried(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory()
    tasks = [{"id": "h", "prompt": "answer FAULTS=hang,ok", "timeout": 1, "max_attempts": 3}]
    t0 = time.monotonic()
    result = phalanx.run_sync(plan_for(srv, provider, tasks, provider_timeout=30))
    assert time.monotonic() - t0 < 10
    assert result.tasks["h"].state == "succeeded", result.summary()
    atts = rows(state, "SELECT * FROM attempts WHERE run_id=? ORDER BY attempt_no", result.run_id)
    assert [a["outcome"] for a in atts] == ["failed", "succeeded"]
    assert atts[0]["error_class"] == "timeout"
    duration = atts[0]["finished_at"] - atts[0]["started_at"]
    assert 1.0 - 0.05 <= duration <= 1.0 + 1.0, duration
    hung = srv.requests_for("FAULTS=hang")
    assert [s.behaviour for s in hung] == ["hang", "ok"]
    # the client hung up: the server saw it go (well before HANG_LIMIT)
    assert hung[0].ended is not None and hung[0].ended - hung[0].started < 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_read_timeout_mid_stream_is_retried(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory()
    tasks = [{"id": "s", "prompt": "answer FAULTS=slow,ok", "max_attempts": 3}]
    result = phalanx.run_sync(plan_for(srv, provider, tasks, provider_timeout=0.5))
    assert result.tasks["s"].state == "succeeded", result.summary()
    atts = rows(state, "SELECT * FROM attempts WHERE run_id=? ORDER BY attempt_no", result.run_id)
    assert [(a["outcome"], a["error_class"]) for a in atts] == [
        ("failed", "timeout"),
        ("succeeded", None),
    ]
    assert atts[0]["finished_at"] - atts[0]["started_at"] < 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_dropped_connection_is_retried(provider: str, state: Path, server_factory: Any) -> None:
    srv = server_factory()
    tasks = [{"id": "r", "prompt": "answer FAULTS=reset,ok", "max_attempts": 3}]
    result = phalanx.run_sync(plan_for(srv, provider, tasks))
    assert result.tasks["r"].state == "succeeded", result.summary()
    atts = rows(state, "SELECT * FROM attempts WHERE run_id=? ORDER BY attempt_no", result.run_id)
    assert atts[0]["error_class"] in ("connection", "stream_cut"), dict(atts[0])
    assert len(atts) == 2


# =========================================================================== malformed


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_json_is_reasked_then_fails_as_output_invalid(
    provider: str, state: Path, server_factory: Any
) -> None:
    srv = server_factory()
    tasks = [
        {"id": "fixed", "prompt": "answer FAULTS=malformed,ok", "max_attempts": 3},
        {"id": "never", "prompt": "answer FAULTS=malformed", "max_attempts": 3},
    ]
    result = phalanx.run_sync(plan_for(srv, provider, tasks, agents=2, style="json"))
    rid = result.run_id
    rejected = events(state, rid, "output_rejected")
    assert result.tasks["fixed"].state == "succeeded", result.summary()
    assert json.loads(result.tasks["fixed"].output)["answer"].startswith("done")
    assert [e["reask"] for e in rejected if e["task_id"] == "fixed"] == [1]
    assert result.tasks["never"].state == "failed"
    never = rows(state, "SELECT * FROM tasks WHERE run_id=? AND task_id='never'", rid)[0]
    assert (never["error_class"], never["attempts"]) == ("output_invalid", 1)
    reasks = [e["reask"] for e in rejected if e["task_id"] == "never"]
    assert reasks and reasks == list(range(1, len(reasks) + 1))
    assert reasks == [1, 2]  # max_reasks (2): three answers in all, one attempt
    assert len([s for s in srv.served if s.key == "answer FAULTS=malformed"]) == 3

"""The rate governor and budgets, on a virtual clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

import pytest

import phalanx
import phalanx.api as api
from conftest import sim_plan
from phalanx import Plan
from phalanx.cost import Usage
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.providers.base import Completion, CompletionRequest
from phalanx.runtime.governor import RateGovernor, RateLimit
from phalanx.testing import run_virtual


class QuotaServer:
    """A fake provider that allows ``rpm`` requests per sliding minute and answers 429 with
    Retry-After beyond that. Records the (virtual) time of every request it receives."""

    name, simulated = "sim", True

    def __init__(self, rpm: int, latency: float = 0.5, retry_after: float = 7.0) -> None:
        self.rpm, self.latency, self.retry_after = rpm, latency, retry_after
        self.accepted: deque[float] = deque()
        self.calls: list[float] = []
        self.rejected = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        now = asyncio.get_running_loop().time()
        self.calls.append(now)
        while self.accepted and self.accepted[0] <= now - 60:
            self.accepted.popleft()
        if len(self.accepted) >= self.rpm:
            self.rejected += 1
            raise ProviderError(
                "429",
                error_class=ErrorClass.RATE_LIMITED,
                status=429,
                retry_after=self.retry_after,
            )
        self.accepted.append(now)
        await asyncio.sleep(self.latency)
        return Completion(
            text=f"ok {request.task_id}", usage=Usage(input_tokens=10, output_tokens=5)
        )

    async def aclose(self) -> None:
        return None


def max_in_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _run_with(provider: Any, plan: Plan, monkeypatch: pytest.MonkeyPatch) -> phalanx.RunResult:
    monkeypatch.setattr(api, "resolve_provider", lambda *a, **k: provider)
    return run_virtual(phalanx.run(plan))


def _events(state: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(state / "journal.sqlite")
    rows = db.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, kind)
    )
    return [json.loads(d) for (d,) in rows]


@pytest.mark.parametrize("rpm", [30, 120])
def test_governor_keeps_every_window_under_the_limit(
    state: Path, monkeypatch: pytest.MonkeyPatch, rpm: int
) -> None:
    data = sim_plan(200, agents=50, max_attempts=6)
    data["limits"] = {"rate_limits": {"sim": {"rpm": rpm}}}
    server = QuotaServer(rpm)
    result = _run_with(server, Plan.from_dict(data), monkeypatch)
    assert result.status == "succeeded"
    assert len(server.calls) == 200
    assert server.rejected == 0
    assert max_in_window(server.calls) <= rpm
    # 200 requests at rpm per minute cannot take less than (200/rpm - 1) minutes
    assert result.wall_seconds >= (200 // rpm - 1) * 60
    waits = _events(state, result.run_id, "agent_waiting")
    assert waits and all(w["reason"] == "rate limit" and w["key"] == "sim" for w in waits)
    print(f"rpm={rpm}: {len(waits)} waits, makespan {result.wall_seconds:.0f}s (virtual)")


def test_429_waits_honour_retry_after_and_pause_the_key(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Governor not told the limit: the server's 429s are backpressure, not failures."""
    data = sim_plan(200, agents=50, max_attempts=20)
    data["limits"] = {"rate_limits": {"sim": {}}}  # no client-side limit
    data["retry"] = {"base_seconds": 0.1, "cap_seconds": 2}
    server = QuotaServer(60, retry_after=7.0)
    result = _run_with(server, Plan.from_dict(data), monkeypatch)
    assert result.status == "succeeded", result.summary()
    assert server.rejected > 0
    for r in _events(state, result.run_id, "retry_scheduled"):
        assert r["error_class"] == "rate_limited"
        assert r["delay"] >= 7.0
    # After a 429 the key is paused for everyone: rejections stay a small share of calls.
    assert server.rejected <= 0.5 * len(server.calls)


def test_governor_token_window_and_settle() -> None:
    async def go() -> list[float]:
        gov = RateGovernor({"m": RateLimit(tpm=1000)}, defaults={})
        loop = asyncio.get_running_loop()
        grants = []
        for _ in range(5):
            ticket = await gov.acquire("m", 400, agent="a", task_id="t")
            grants.append(loop.time())
            gov.settle(ticket, 400)
        return grants

    grants = run_virtual(go())
    # 1000 tokens per minute, 400 each: two per window
    assert grants[:2] == [0.0, 0.0]
    assert grants[2] >= 60.0 and grants[4] >= 120.0


def test_governor_pause_applies_to_everyone() -> None:
    async def go() -> float:
        gov = RateGovernor({}, defaults={})
        loop = asyncio.get_running_loop()
        gov.pause("k", 12.5)
        await gov.acquire("k", 1, agent="b", task_id="t")
        return loop.time()

    assert run_virtual(go()) >= 12.5


def test_budget_max_usd_stops_within_one_in_flight_round(state: Path) -> None:
    data = sim_plan(400, agents=10, latency_ms=100)
    data["prices"] = {"sim": {"input": 1000.0, "output": 1000.0}}  # USD per million tokens
    data["limits"] = {"max_usd": 0.5}
    data["providers"]["sim"]["output_tokens"] = 40
    result = phalanx.run_sync(Plan.from_dict(data))
    assert result.status == "budget_exhausted"
    assert result.exit_code == 1
    spent = result.usage.cost_usd
    assert spent is not None and spent >= 0.5
    per_call = max((t.usage.cost_usd or 0) for t in result.tasks.values() if t.state == "succeeded")
    assert spent <= 0.5 + 10 * per_call  # at most one in-flight call per agent past the cap
    done = sum(t.ok for t in result.tasks.values())
    assert 0 < done < 400
    assert sum(t.state == "pending" for t in result.tasks.values()) > 0
    assert "why: budget exhausted: spent $" in result.summary()
    assert "of limits.max_usd $0.5" in result.summary()
    alerts = _events(state, result.run_id, "alert")
    assert any("max_usd" in a["message"] for a in alerts)
    assert result.outputs_dir.exists() and len(list(result.outputs_dir.iterdir())) == done


def test_budget_max_tokens(state: Path) -> None:
    data = sim_plan(300, agents=5, latency_ms=10)
    data["limits"] = {"max_tokens": 2000}
    result = phalanx.run_sync(Plan.from_dict(data))
    assert result.status == "budget_exhausted"
    assert 2000 <= result.usage.total_tokens <= 2000 + 5 * 400


def test_budget_wall_time_cancels_in_flight(state: Path) -> None:
    data = sim_plan(50, agents=2, latency_ms=400)
    data["limits"] = {"max_wall_seconds": 1.0}
    result = phalanx.run_sync(Plan.from_dict(data))
    assert result.status == "budget_exhausted"
    assert result.wall_seconds < 2.0
    assert 0 < sum(t.ok for t in result.tasks.values()) < 50
    db = sqlite3.connect(state / "journal.sqlite")
    outcomes = dict(
        db.execute(
            "SELECT outcome, COUNT(*) FROM attempts WHERE run_id = ? GROUP BY outcome",
            (result.run_id,),
        ).fetchall()
    )
    assert outcomes.get("cancelled", 0) >= 1 and "running" not in outcomes
    assert "running" not in result.snapshot.counts  # cancelled attempts went back to the queue


def test_max_usd_without_a_price_is_a_clear_error(state: Path) -> None:
    data = sim_plan(3)
    data["limits"] = {"max_usd": 1.0}
    with pytest.raises(phalanx.PlanError, match=r"limits.max_usd.*no known price"):
        phalanx.run_sync(Plan.from_dict(data))

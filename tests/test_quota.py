"""Limits learned from the provider, and one quota per key across processes.

* The rate-limit headers of every response (Anthropic's ``anthropic-ratelimit-*``, OpenAI's
  ``x-ratelimit-*``, a 429's too) are read robustly; the governor adopts them after the
  first response, on both SDK paths.
* A request that never reached the server (a refused connection) gives its permit back.
* A key's window lives in ``<state>/quota.sqlite``: two ``phalanx run`` processes on one
  key share it, against a server enforcing R requests per window.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import phalanx
from conftest import events
from fakeserver import FakeProviderServer, Served
from phalanx import Plan
from phalanx.exceptions import ProviderError
from phalanx.plan.config import RateLimit
from phalanx.providers.anthropic_api import AnthropicProvider
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.openai_api import OpenAIProvider
from phalanx.providers.ratelimits import Quota, RateInfo, parse, quota_id
from phalanx.runtime.governor import RateGovernor
from phalanx.runtime.quota import DEFER_MAX, DEFER_SECONDS, QuotaStore
from phalanx.runtime.windows import MemoryWindow, SharedWindow
from phalanx.testing import run_virtual

KEY = "sk-test-quota-0123456789abcdef"  # a dummy key; it must never reach the quota file
NOW = 1_700_000_000.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- header parsing


def test_anthropic_headers_with_rfc3339_resets() -> None:
    rate = parse(
        {
            "Anthropic-RateLimit-Requests-Limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": _iso(NOW + 1.5),
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:22+00:00",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": _iso(NOW + 7),
            "content-type": "text/event-stream",
        },
        now=NOW,
    )
    assert rate is not None
    assert rate.requests == Quota(50, 49, pytest.approx(1.5))
    assert rate.tokens.limit == 40000 and rate.tokens.remaining == 39000
    assert rate.tokens.reset == pytest.approx(2.0)  # 22:13:22Z is NOW + 2 s
    assert rate.exhausted_for == pytest.approx(7.0)  # output tokens used up: wait for them
    assert rate.at == NOW


def test_anthropic_tokens_headers_when_input_tokens_are_absent() -> None:
    rate = parse(
        {
            "anthropic-ratelimit-tokens-limit": "80000",
            "anthropic-ratelimit-tokens-remaining": "123",
            "anthropic-ratelimit-tokens-reset": _iso(NOW - 5),  # already past: 0, not negative
        },
        now=NOW,
    )
    assert rate is not None and rate.tokens == Quota(80000, 123, 0.0)
    assert rate.requests == Quota()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("250us", 0.00025),
        ("17", 17.0),
        ("2.5", 2.5),
    ],
)
def test_openai_duration_resets(text: str, seconds: float) -> None:
    rate = parse(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": text,
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "199000.0",
            "x-ratelimit-reset-tokens": "20ms",
        },
        now=NOW,
    )
    assert rate is not None
    assert rate.requests.limit == 500 and rate.requests.remaining == 499
    assert rate.requests.reset == pytest.approx(seconds)
    assert rate.tokens == Quota(200000, 199000, pytest.approx(0.02))
    assert rate.exhausted_for == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"content-type": "application/json"},
        {"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "-3"},
        {"x-ratelimit-limit-requests": "nan", "x-ratelimit-limit-tokens": "inf"},
        {"anthropic-ratelimit-requests-limit": "", "anthropic-ratelimit-tokens-limit": "1e999"},
    ],
)
def test_garbage_or_no_headers_teach_nothing(headers: Any) -> None:
    assert parse(headers, now=NOW) is None


@pytest.mark.parametrize(
    "reset",
    ["soon", "6x", "1m1", "2025-13-45T99:00:00Z", "2025-01-01T00:00:00", "-1s", "99999h", "ms"],
)
def test_unknown_reset_formats_are_ignored(reset: str) -> None:
    rate = parse(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": reset,
        },
        now=NOW,
    )
    assert rate is not None and rate.requests == Quota(60, 0, None)
    assert rate.exhausted_for == 0.0  # no known reset: no pause invented


def test_headers_that_cannot_be_read_teach_nothing() -> None:
    class Broken:
        def items(self) -> Any:
            raise RuntimeError("no")

    assert parse(Broken(), now=NOW) is None  # type: ignore[arg-type]


def test_the_quota_id_hides_the_key_and_tells_keys_and_servers_apart() -> None:
    a = quota_id("anthropic", "https://api.anthropic.com", KEY)
    assert KEY not in a and len(a) == 24
    assert a == quota_id("anthropic", "https://api.anthropic.com/", KEY)
    assert a != quota_id("anthropic", "https://api.anthropic.com", KEY + "x")
    assert a != quota_id("anthropic", "http://127.0.0.1:8080", KEY)
    assert a != quota_id("openai", "https://api.anthropic.com", KEY)


# --------------------------------------------------------------------------- windows


def _info(limit: int, remaining: int | None = None, reset: float | None = None) -> RateInfo:
    return RateInfo(requests=Quota(limit, remaining, reset), at=time.time())


def test_the_memory_window_adopts_headers_and_the_plan_caps_them() -> None:
    async def go() -> None:
        gov = RateGovernor({"capped": RateLimit(rpm=2)}, defaults={"k": RateLimit(rpm=50)})
        assert gov.limit_for("k:m") == RateLimit(rpm=50)
        assert gov.limit_for("free:m") is None
        gov.learn("k:m", _info(3))
        gov.learn("free:m", _info(4))
        gov.learn("capped:m", _info(9))
        limits = {k: gov.limit_for(k) for k in ("k:m", "free:m", "capped:m")}
        assert {k: v.rpm for k, v in limits.items() if v} == {"k:m": 3, "free:m": 4, "capped:m": 2}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(3):
            await gov.acquire("k:m", 1, agent="a", task_id="t")
        assert loop.time() - t0 < 0.5
        waited = asyncio.create_task(gov.acquire("k:m", 1, agent="a", task_id="t"))
        await asyncio.sleep(0.2)
        assert not waited.done()  # the 4th of 3 per minute waits
        waited.cancel()

    asyncio.run(go())


def test_remaining_and_reset_hold_the_window_until_the_reset() -> None:
    async def go() -> float:
        gov = RateGovernor({}, defaults={})
        gov.learn("k:m", _info(100, remaining=1, reset=0.4))  # others used the rest
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await gov.acquire("k:m", 1, agent="a", task_id="t")  # the one left
        await gov.acquire("k:m", 1, agent="a", task_id="t")  # waits for the reset
        return loop.time() - t0

    assert 0.35 <= asyncio.run(go()) < 2.0


def test_a_released_permit_counts_no_more_in_either_window(tmp_path: Path) -> None:
    store = QuotaStore(tmp_path / "quota.sqlite")
    limit = RateLimit(rpm=1)
    for window in (MemoryWindow(), SharedWindow(store, "q|k:m")):
        now = 1000.0
        wait, entry = window.take(now, 10, limit, None)
        assert wait == 0
        assert window.take(now, 10, limit, None)[0] == pytest.approx(60.0)
        window.release(entry)
        assert window.take(now + 0.001, 10, limit, None)[0] == 0
    store.close()


def test_two_stores_on_one_file_share_the_window_and_never_hold_the_key(tmp_path: Path) -> None:
    path = tmp_path / "quota.sqlite"
    qid = quota_id("openai", "http://127.0.0.1:1/v1", KEY)
    one, two = QuotaStore(path), QuotaStore(path)
    a, b = SharedWindow(one, f"{qid}|openai:m"), SharedWindow(two, f"{qid}|openai:m")
    other = SharedWindow(two, f"{quota_id('openai', 'http://x', KEY)}|openai:m")
    limit = RateLimit(rpm=3, window=10)
    now = time.time()
    assert a.take(now, 1, limit, None)[0] == 0
    assert a.take(now, 1, limit, None)[0] == 0
    assert b.take(now, 1, limit, None)[0] == 0
    assert b.take(now, 1, limit, None)[0] == pytest.approx(10.0, abs=0.01)  # 3 of 3 used
    assert a.take(now, 1, limit, None)[0] > 9
    assert other.take(now, 1, limit, None)[0] == 0  # another server: another quota
    # what one learns, the other adopts at its next permit
    a.learn(_info(2))
    assert a.take(now, 1, None, None)[0] > 0  # (the learned limit is written first)
    b.take(now, 1, None, None)
    assert b.learned_rpm == 2
    one.close()
    two.close()
    assert KEY.encode() not in path.read_bytes()
    assert not any(KEY.encode() in p.read_bytes() for p in tmp_path.glob("quota.sqlite*"))


def test_the_shared_window_keeps_time_by_the_event_loop(tmp_path: Path) -> None:
    """On a virtual-time loop the shared window's clock moves with the loop: 5 permits at
    2 a minute are granted at 0, 0, 60, 60, 120 virtual seconds, in no real time."""

    async def go() -> list[float]:
        store = QuotaStore(tmp_path / "quota.sqlite")
        gov = RateGovernor({"openai": RateLimit(rpm=2)}, store=store, shared={"openai:m": "q"})
        loop = asyncio.get_running_loop()
        grants = []
        for i in range(5):
            await gov.acquire("openai:m", 1, agent="a", task_id=str(i))
            grants.append(loop.time())
        gov.close()
        return grants

    t0 = time.perf_counter()
    grants = run_virtual(go())
    assert time.perf_counter() - t0 < 5
    assert [round(g - grants[0]) for g in grants] == [0, 0, 60, 60, 120]


def test_the_cost_of_a_permit(tmp_path: Path) -> None:
    """One small transaction per permit: settles are written by the next one."""
    n = 2000

    async def go(gov: RateGovernor) -> float:
        t0 = time.process_time()  # CPU time: the machine's load does not count
        for i in range(n):
            ticket = await gov.acquire("openai:m", 100, agent="a", task_id=str(i))
            gov.settle(ticket, 90)
        return (time.process_time() - t0) / n * 1e6

    store = QuotaStore(tmp_path / "quota.sqlite")
    shared = RateGovernor({"openai": RateLimit(rpm=100_000, tpm=10**9)}, store=store,
                          shared={"openai:m": "q"})  # fmt: skip
    us_shared = asyncio.run(go(shared))
    transactions = store.transactions
    shared.close()
    memory = RateGovernor({"openai": RateLimit(rpm=100_000, tpm=10**9)})
    us_memory = asyncio.run(go(memory))
    print(f"per permit (CPU): {us_shared:.0f} us shared (quota.sqlite), {us_memory:.1f} us here")
    assert transactions <= n + 1  # one per permit (plus the window's row)
    assert us_shared < 1000  # ~45 us measured; counting the window's rows was 300 us at 2000
    db = sqlite3.connect(tmp_path / "quota.sqlite")
    assert db.execute("SELECT count(*), total(tokens) FROM grants").fetchone() == (n, 90.0 * n)


def test_an_unlimited_key_writes_its_grants_in_batches(tmp_path: Path) -> None:
    """A key nothing limits (a local server without rate-limit headers) takes its permits
    with a read of its row: 300 permits cost a few transactions, not 300, and every grant
    reaches the file with its settled tokens (one given back never does)."""
    n = 300

    async def go(gov: RateGovernor) -> None:
        for i in range(n):
            ticket = await gov.acquire("openai-compatible:m", 100, agent="a", task_id=str(i))
            gov.settle(ticket, 90)
        gov.release(await gov.acquire("openai-compatible:m", 100, agent="a", task_id="x"))

    store = QuotaStore(tmp_path / "quota.sqlite")
    gov = RateGovernor({}, defaults={}, store=store, shared={"openai-compatible:m": "q"})
    asyncio.run(go(gov))
    transactions = store.transactions
    gov.close()
    assert transactions <= n // DEFER_MAX + 3  # the window's row, the batches
    db = sqlite3.connect(tmp_path / "quota.sqlite")
    assert db.execute("SELECT count(*), total(tokens) FROM grants").fetchone() == (n, 90.0 * n)
    assert db.execute("SELECT n, token_sum FROM windows").fetchone() == (n, 90.0 * n)


def test_another_run_counts_an_unlimited_keys_grants_within_the_defer_time(
    tmp_path: Path,
) -> None:
    """Run A has no limit on a key, run B holds it to 5 a window: A's 3 permits, taken
    without a transaction, are in B's window within DEFER_SECONDS (a timer writes them),
    so B gets 2 more, not 5."""
    path = tmp_path / "quota.sqlite"

    async def go() -> tuple[int, int, float]:
        store = QuotaStore(path)
        gov = RateGovernor({}, defaults={}, store=store, shared={"openai-compatible:m": "q"})
        for i in range(3):
            await gov.acquire("openai-compatible:m", 1, agent="a", task_id=str(i))
        written = store.transactions
        await asyncio.sleep(DEFER_SECONDS + 0.2)  # no permit, no close: the timer writes
        written = store.transactions - written
        b = SharedWindow(QuotaStore(path), "q|openai-compatible:m")
        limit = RateLimit(rpm=5, window=60)
        now = time.time()
        granted = sum(b.take(now, 1, limit, None)[0] == 0 for _ in range(5))
        wait = b.take(now, 1, limit, None)[0]
        b.store.close()
        gov.close()
        return written, granted, wait

    written, granted, wait = asyncio.run(go())
    assert granted == 2
    assert wait > 50
    assert written == 1  # one transaction for the three


def test_a_pause_or_a_limit_ends_the_unlimited_path_at_once(tmp_path: Path) -> None:
    """What stops a key is seen by the very next permit: another run's learned limit or
    pause (read from the row), and this run's own pause (written before that permit)."""
    path = tmp_path / "quota.sqlite"
    one, two = QuotaStore(path), QuotaStore(path)
    a, b = SharedWindow(one, "q|k:m"), SharedWindow(two, "q|k:m")
    now = time.time()
    assert a.take(now, 1, None, None)[0] == 0 and one.deferred == 1
    b.pause(30)
    two.flush()
    assert a.take(now, 1, None, None)[0] == pytest.approx(30, abs=1)  # b's pause
    assert one.deferred == 0  # the transaction wrote a's grant first
    later = now + 31  # b's pause has run out
    assert a.take(later, 1, None, None)[0] == 0
    a.pause(40)
    assert a.take(later, 1, None, None)[0] > 0  # a's own pause, written first
    b.learn(_info(1))
    two.flush()
    assert a.take(later + 100, 1, None, None)[0] == 0  # the limit's first permit
    assert a.learned_rpm == 1
    assert a.take(later + 100, 1, None, None)[0] > 0  # and it holds
    one.close()
    two.close()


# --------------------------------------------------------------------------- adoption, live

WINDOW = 1.0
MARGIN = 0.15


def _provider(kind: str, url: str) -> Any:
    if kind == "anthropic":
        return AnthropicProvider("claude-test", {"base_url": url}, env={"ANTHROPIC_API_KEY": KEY})
    if kind == "openai":
        return OpenAIProvider("gpt-test", {"base_url": url + "/v1"}, env={"OPENAI_API_KEY": KEY})
    opts = {"base_url": url + "/v1", "stream": False}  # the whole-answer path
    return OpenAIProvider("m", opts, compatible=True, env={"OPENAI_COMPATIBLE_API_KEY": KEY})


def _request(prompt: str) -> CompletionRequest:
    return CompletionRequest(model="m", messages=(Message(role="user", content=prompt),))


async def _call(provider: Any, gov: RateGovernor, prompt: str) -> bool:
    """One model call as the executor makes it; False on a 429."""
    key = provider.name
    ticket = await gov.acquire(key, 100, agent="a", task_id=prompt)
    try:
        completion = await provider.complete(_request(prompt))
    except ProviderError as exc:
        if exc.rate is not None:
            gov.learn(key, exc.rate)
        if exc.status != 429:
            raise
        return False
    gov.learn(key, completion.rate)
    gov.settle(ticket, completion.usage.total_tokens)
    return True


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("kind", ["anthropic", "openai", "openai-compatible"])
def test_the_governor_adopts_smaller_limits_after_the_first_response(
    kind: str, tmp_path: Path
) -> None:
    """The server allows 3 requests per window, 1/16 of the default: after the first answer
    the governor holds the key to 3, and 7 requests go 3, 3, 1 with no 429."""
    default = RateLimit(rpm=50, tpm=40_000, window=WINDOW, margin=MARGIN)  # scaled in time

    async def go(url: str) -> tuple[int | None, int | None, int | None, float]:
        provider = _provider(kind, url)
        store = QuotaStore(tmp_path / "quota.sqlite")
        gov = RateGovernor({}, defaults={kind: default}, store=store,
                           shared={provider.name: provider.quota_id})  # fmt: skip
        before = gov.limit_for(provider.name)
        assert await _call(provider, gov, "first")
        after = gov.limit_for(provider.name)
        t0 = time.perf_counter()
        ok = await asyncio.gather(*(_call(provider, gov, f"p{i}") for i in range(6)))
        took = time.perf_counter() - t0
        assert all(ok)
        await provider.aclose()
        gov.close()
        assert before is not None and after is not None
        row = sqlite3.connect(tmp_path / "quota.sqlite").execute("SELECT rpm FROM windows")
        return before.rpm, after.rpm, row.fetchone()[0], took

    with FakeProviderServer(quota=3, quota_window=WINDOW, rate_headers=True) as srv:
        before, after, stored, took = asyncio.run(go(srv.url))
    assert (before, after, stored) == (50, 3, 3)
    arrivals = [s.started for s in srv.served]
    assert len(arrivals) == 7 and srv.counts["rate_limited"] == 0
    assert max_in_window(arrivals, WINDOW) <= 3
    assert took >= 2 * WINDOW  # paced: 2 more now, 3 a window later, the last one after that
    print(f"{kind}: 7 requests at 3/{WINDOW:g}s in {took:.2f}s after the first, no 429")


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_429_with_headers_teaches_too(kind: str) -> None:
    async def go(url: str) -> tuple[ProviderError, float]:
        provider = _provider(kind, url)
        await provider.complete(_request("one"))
        with pytest.raises(ProviderError) as caught:
            await provider.complete(_request("two"))
        await provider.aclose()
        gov = RateGovernor({}, defaults={})
        gov.learn(provider.name, caught.value.rate)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await gov.acquire(provider.name, 1, agent="a", task_id="t")  # waits for the reset
        return caught.value, loop.time() - t0

    with FakeProviderServer(quota=1, quota_window=0.6, rate_headers=True) as srv:
        error, waited = asyncio.run(go(srv.url))
    assert error.status == 429 and error.retry_after is not None
    assert isinstance(error.rate, RateInfo) and error.rate.requests.limit == 1
    assert error.rate.requests.remaining == 0 and error.rate.exhausted_for > 0
    assert waited >= 0.3


# --------------------------------------------------------------------------- no permit unsent


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_a_refused_connection_does_not_spend_a_permit(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request per minute, four attempts at a closed port: had each spent a permit, the
    run would wait minutes; it ends in seconds, no agent ever waits for a permit."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    data = {
        "name": "refused",
        "provider": "anthropic:claude-test",
        "providers": {"anthropic": {"base_url": f"http://127.0.0.1:{_closed_port()}"}},
        "limits": {"rate_limits": {"anthropic": {"rpm": 1}}, "max_wall_seconds": 30},
        "retry": {"base_seconds": 0.01, "cap_seconds": 0.05},
        "breaker": {"enabled": False},
        "agents": [{"role": "generalist"}],
        "tasks": [{"id": "t0", "prompt": "hello", "max_attempts": 4}],
    }
    t0 = time.perf_counter()
    result = phalanx.run_sync(Plan.from_dict(data))
    took = time.perf_counter() - t0
    assert result.status == "failed", result.summary()
    assert result.tasks["t0"].error_class == "connection"
    assert result.tasks["t0"].attempts == 4
    assert took < 15
    assert events(state, result.run_id, "agent_waiting") == []
    db = sqlite3.connect(state / "quota.sqlite")
    assert db.execute("SELECT count(*) FROM grants").fetchone() == (0,)


# --------------------------------------------------------------------------- two processes

R, W, MARGIN_2P = 8, 2.0, 0.15  # the server: 8 requests per 2 s window (60 rpm, scaled)
N_EACH, AGENTS = 16, 3  # tasks per process; agents per process (2 x 3 < R before learning)


def _plan(path: Path, url: str, name: str) -> Path:
    data = {
        "name": name,
        "provider": "openai:gpt-test",
        "providers": {"openai": {"base_url": url + "/v1"}},
        # no rpm: the limit is learned from the headers; the window length is the server's
        "limits": {"rate_limits": {"openai": {"window": W, "margin": MARGIN_2P}}},
        "retry": {"base_seconds": 0.05, "cap_seconds": 0.5},
        "breaker": {"enabled": False},
        "agents": [{"role": "generalist", "count": AGENTS}],
        "tasks": [
            {"id": f"{name}-{i}", "prompt": f"{name} task {i}", "max_attempts": 6}
            for i in range(N_EACH)
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_processes_share_one_keys_window(tmp_path: Path, state: Path) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": KEY,
        "PHALANX_STATE_DIR": str(state),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("OPENAI_BASE_URL", None)
    with FakeProviderServer(quota=R, quota_window=W, rate_headers=True) as srv:
        plans = [_plan(tmp_path / f"{name}.yaml", srv.url, name) for name in ("a", "b")]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "phalanx", "run", "-q", str(plan)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for plan in plans
        ]
        try:
            errs = [p.communicate(timeout=60)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.wait()
        served: list[Served] = list(srv.served)
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-2000:]
    ok = [s for s in served if s.behaviour == "ok"]
    limited = srv.counts["rate_limited"]
    assert len(ok) == 2 * N_EACH
    assert {s.key.split()[0] for s in ok} == {"a", "b"}
    first = min(s.started for s in served)
    makespan = max(s.ended or s.started for s in served) - first
    ideal = 2 * N_EACH / R * W  # N/R windows
    floor = (2 * N_EACH / R - 1) * W  # R at once, then R a window later, ...
    print(
        f"two processes: {2 * N_EACH} requests at {R}/{W:g}s: makespan {makespan:.2f}s "
        f"(N/R = {ideal:.1f}s, least possible {floor:.1f}s), 429s: {limited}"
    )
    assert limited <= 2  # a small margin (jitter between a grant and its arrival)
    assert makespan >= floor - 0.1
    assert makespan <= ideal + 4 * (W + MARGIN_2P)
    db = sqlite3.connect(state / "quota.sqlite")
    assert db.execute("SELECT count(*), max(rpm) FROM windows").fetchone() == (1, R)

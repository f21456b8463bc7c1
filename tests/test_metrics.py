"""Metrics are a pure function of the events: hand-built runs with hand-computed values, a
resumed run, an empty run, nearest-rank percentiles, the Prometheus text, a real sim run that
agrees with its own summary, and the status ETA acceptance on a steady sim run."""

from __future__ import annotations

import gc
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import sim_plan
from phalanx.cost import Usage
from phalanx.events import (
    AgentInfo,
    AgentJoined,
    AgentRetired,
    Alert,
    AttemptFinished,
    AttemptStarted,
    ContextRead,
    Event,
    MessageSent,
    RetryScheduled,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskInfo,
    TaskSucceeded,
)
from phalanx.journal import Journal
from phalanx.status.metrics import (
    Metrics,
    compute_metrics,
    metrics_from_journal,
    percentile,
    with_baseline,
)
from phalanx.status.prometheus import prometheus_text
from phalanx.status.snapshot import Snapshot, StatusTracker
from phalanx.testing import run_virtual

T0 = 1000.0
AGENTS = (
    AgentInfo(name="Ada", role="coder", provider="sim"),
    AgentInfo(name="Bob", role="coder", provider="sim"),
    AgentInfo(name="Cy", role="tester", provider="sim"),
)
TASKS = tuple(TaskInfo(id=f"t{i}", title=f"task {i}", category="other") for i in range(1, 5))


def run_started(ts: float, session: int = 1, agents: tuple[AgentInfo, ...] = AGENTS) -> Event:
    return RunStarted(
        ts=T0 + ts,
        run_id="r1",
        plan="p",
        session=session,
        policy="best_fit",
        simulated=True,
        agents=agents,
        tasks=TASKS,
    )


def start(ts: float, task: str, aid: int, agent: str, no: int = 1) -> Event:
    return AttemptStarted(ts=T0 + ts, task_id=task, attempt_id=aid, attempt_no=no, agent=agent)


def finish(
    ts: float,
    task: str,
    aid: int,
    agent: str,
    duration: float,
    *,
    tokens: tuple[int, int] = (0, 0),
    cost: float | None = None,
    error: str | None = None,
    stale: bool = False,
) -> Event:
    return AttemptFinished(
        ts=T0 + ts,
        task_id=task,
        attempt_id=aid,
        agent=agent,
        ok=error is None,
        duration=duration,
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost),
        error_class=error,
        error=error,
        stale=stale,
    )


def succeeded(ts: float, task: str, aid: int, agent: str) -> Event:
    return TaskSucceeded(ts=T0 + ts, task_id=task, attempt_id=aid, agent=agent)


def retry(ts: float, task: str, no: int, cls: str) -> Event:
    return RetryScheduled(ts=T0 + ts, task_id=task, attempt_no=no, delay=0.0, error_class=cls)


def one_session() -> list[Any]:
    """Three agents (Ada, Bob: coder; Cy: tester), 10 s of wall time, four tasks:
    t1 Ada ok first time; t2 Bob fails (server_error) then succeeds; t3 Cy is rate limited
    then succeeds; t4 Ada fails for good (auth). Ada sends a 30-token message."""
    return [
        run_started(0),
        start(0, "t1", 1, "Ada"),
        start(0, "t2", 2, "Bob"),
        start(0, "t3", 3, "Cy"),
        finish(0.5, "t3", 3, "Cy", 0.5, error="rate_limited"),
        retry(0.5, "t3", 1, "rate_limited"),
        finish(1, "t2", 2, "Bob", 1.0, tokens=(100, 0), cost=0.005, error="server_error"),
        retry(1, "t2", 1, "server_error"),
        start(1, "t3", 5, "Cy", no=2),
        finish(2, "t1", 1, "Ada", 2.0, tokens=(100, 50), cost=0.01),
        succeeded(2, "t1", 1, "Ada"),
        start(2, "t2", 4, "Bob", no=2),
        finish(4, "t3", 5, "Cy", 3.0, tokens=(200, 100), cost=0.02),
        succeeded(4, "t3", 5, "Cy"),
        finish(6, "t2", 4, "Bob", 4.0, tokens=(100, 80), cost=0.01),
        succeeded(6, "t2", 4, "Bob"),
        start(6, "t4", 6, "Ada"),
        MessageSent(
            ts=T0 + 6.5,
            message_id="m1",
            sender="Ada",
            recipients=("Bob", "Cy"),
            kind="broadcast",
            tokens=30,  # 15 tokens x 2 recipients
        ),
        finish(7, "t4", 6, "Ada", 1.0, tokens=(50, 0), cost=0.0025, error="auth"),
        TaskFailed(ts=T0 + 7, task_id="t4", error_class="auth", error="401", attempts=1),
        RunFinished(ts=T0 + 10, status="failed"),
    ]


# -- each metric, by hand -----------------------------------------------------------------
def test_wall_time_and_throughput() -> None:
    m = compute_metrics(one_session())
    assert m.wall_seconds == 10.0  # RunStarted at +0 .. RunFinished at +10
    assert m.sessions == 1 and m.status == "failed"
    assert m.task_states == {"succeeded": 3, "failed": 1}
    # 3 succeeded tasks in 10 s: 3 / 10 * 3600 = 1080 per hour
    assert m.run.throughput_per_hour == pytest.approx(1080.0)
    # per agent, one success each over the same 10 s: 1 / 10 * 3600 = 360
    for agent in ("Ada", "Bob", "Cy"):
        assert m.by_agent[agent].throughput_per_hour == pytest.approx(360.0)
    # coder: Ada + Bob = 2 -> 720; tester: Cy = 1 -> 360 (the parts add up to the run)
    assert m.by_role["coder"].throughput_per_hour == pytest.approx(720.0)
    assert m.by_role["tester"].throughput_per_hour == pytest.approx(360.0)


def test_task_and_attempt_latency() -> None:
    m = compute_metrics(one_session())
    # task latency = success - first start: t1 2-0 = 2, t3 4-0 = 4, t2 6-0 = 6
    lat = m.run.task_latency
    assert lat.count == 3
    assert lat.mean == pytest.approx(4.0)  # (2 + 4 + 6) / 3
    assert lat.p50 == pytest.approx(4.0)  # rank ceil(0.50 * 3) = 2 of [2, 4, 6]
    assert lat.p95 == pytest.approx(6.0)  # rank ceil(0.95 * 3) = 3
    assert m.by_agent["Bob"].task_latency.p50 == pytest.approx(6.0)  # t2 only
    assert m.by_role["coder"].task_latency.mean == pytest.approx(4.0)  # (2 + 6) / 2
    # attempt service times: [0.5, 1, 2, 3, 4, 1] -> sorted [0.5, 1, 1, 2, 3, 4]
    att = m.run.attempt_latency
    assert att.count == 6
    assert att.mean == pytest.approx(11.5 / 6)
    assert att.p50 == pytest.approx(1.0)  # rank ceil(0.50 * 6) = 3
    assert att.p95 == pytest.approx(4.0)  # rank ceil(0.95 * 6) = 6
    assert att.max == 4.0


def test_token_efficiency_and_communication_overhead() -> None:
    m = compute_metrics(one_session())
    # attempt tokens: id1 150, id2 100, id3 0, id5 300, id4 180, id6 50 = 780; comm 30
    assert m.run.usage.total_tokens == 780
    assert m.run.communication_tokens == 30
    # output tokens of the successful attempts: 50 + 100 + 80 = 230; spent 780 + 30 = 810
    assert m.run.token_efficiency == pytest.approx(230 / 810)
    assert m.run.communication_overhead == pytest.approx(30 / 780)
    # Ada: tokens 150 + 50 = 200, comm 30; success output 50 -> 50 / 230; overhead 30 / 200
    assert m.by_agent["Ada"].token_efficiency == pytest.approx(50 / 230)
    assert m.by_agent["Ada"].communication_overhead == pytest.approx(0.15)
    # Bob: 100 + 180 = 280 tokens, 80 useful; Cy: 0 + 300, 100 useful; neither talks
    assert m.by_agent["Bob"].token_efficiency == pytest.approx(80 / 280)
    assert m.by_agent["Cy"].token_efficiency == pytest.approx(100 / 300)
    assert m.by_agent["Bob"].communication_overhead == 0.0


def test_no_communication_events_means_zero_overhead() -> None:
    events = [e for e in one_session() if not isinstance(e, MessageSent)]
    m = compute_metrics(events)
    assert m.run.communication_tokens == 0
    assert m.run.communication_overhead == 0.0
    assert m.run.token_efficiency == pytest.approx(230 / 780)


def test_communication_events_of_every_kind_count() -> None:
    events = [
        *one_session()[:-1],
        ContextRead(ts=T0 + 8, keys=("design",), agent="Cy", tokens=20),
        {"type": "context_written", "ts": T0 + 8, "agent": "Bob"},  # a mapping, no tokens: 0
        RunFinished(ts=T0 + 10, status="failed"),
    ]
    m = compute_metrics(events)
    assert m.run.communication_tokens == 30 + 20
    assert m.by_agent["Cy"].communication_tokens == 20
    assert m.by_agent["Bob"].communication_tokens == 0


def test_cost() -> None:
    m = compute_metrics(one_session())
    # 0.005 + 0.01 + 0.02 + 0.01 + 0.0025 = 0.0475 (the rate-limited attempt cost nothing)
    assert m.run.cost_usd == pytest.approx(0.0475)
    assert m.by_agent["Ada"].cost_usd == pytest.approx(0.0125)  # 0.01 + 0.0025
    assert m.by_agent["Bob"].cost_usd == pytest.approx(0.015)  # 0.005 + 0.01
    assert m.by_role["tester"].cost_usd == pytest.approx(0.02)
    assert m.run.unpriced_attempts == 0


def test_cost_unknown_is_none_never_zero() -> None:
    events = [
        run_started(0),
        start(0, "t1", 1, "Ada"),
        finish(1, "t1", 1, "Ada", 1.0, tokens=(10, 5)),  # no price
        succeeded(1, "t1", 1, "Ada"),
        start(1, "t2", 2, "Bob"),
        finish(2, "t2", 2, "Bob", 1.0, tokens=(10, 5), cost=0.5),
        succeeded(2, "t2", 2, "Bob"),
        RunFinished(ts=T0 + 2, status="failed"),
    ]
    m = compute_metrics(events)
    assert m.by_agent["Ada"].cost_usd is None
    assert m.by_agent["Cy"].cost_usd is None  # did nothing: unknown, not $0
    assert m.by_agent["Bob"].cost_usd == 0.5
    assert m.run.cost_usd == 0.5 and m.run.unpriced_attempts == 1  # a known part, flagged


def test_utilisation() -> None:
    m = compute_metrics(one_session())
    # busy: Ada 2 + 1 = 3, Bob 1 + 4 = 5, Cy 0.5 + 3 = 3.5; total 11.5
    assert m.run.busy_seconds == pytest.approx(11.5)
    # run: 11.5 / (3 agents x 10 s) ; agents: busy / 10 s
    assert m.run.utilisation == pytest.approx(11.5 / 30)
    assert m.by_agent["Ada"].utilisation == pytest.approx(0.3)
    assert m.by_agent["Bob"].utilisation == pytest.approx(0.5)
    assert m.by_agent["Cy"].utilisation == pytest.approx(0.35)
    assert m.by_role["coder"].utilisation == pytest.approx(8 / 20)  # (3 + 5) / (2 x 10)


def test_error_rate_and_backpressure() -> None:
    m = compute_metrics(one_session())
    # 6 attempts, 3 not ok: server_error, rate_limited, auth; the 429 is backpressure
    assert (m.run.attempts, m.run.failed_attempts, m.run.rate_limited_attempts) == (6, 3, 1)
    assert m.run.error_rate == pytest.approx(2 / 6)
    assert m.run.backpressure_rate == pytest.approx(1 / 6)
    assert m.by_agent["Ada"].error_rate == pytest.approx(1 / 2)  # ok + auth
    assert m.by_agent["Cy"].error_rate == 0.0  # rate limited + ok: no fault of Cy's
    assert m.by_agent["Cy"].backpressure_rate == pytest.approx(1 / 2)


def test_cancelled_and_stale_attempts() -> None:
    events = [
        run_started(0),
        start(0, "t1", 1, "Ada"),
        start(0, "t2", 2, "Bob"),
        finish(1, "t1", 1, "Ada", 1.0, tokens=(10, 10)),
        succeeded(1, "t1", 1, "Ada"),
        finish(1.5, "t1", 9, "Cy", 1.5, tokens=(10, 10), stale=True),  # a superseded attempt
        finish(2, "t2", 2, "Bob", 0.0, error="cancelled"),  # the budget stopped it
        RunFinished(ts=T0 + 2, status="budget_exhausted"),
    ]
    m = compute_metrics(events)
    # attempts started 2 (the stale one's start is not in this list); finished: 2 (the
    # cancelled one is neither a success nor a failure)
    assert m.run.attempts == 2 and m.run.finished_attempts == 2
    assert m.run.cancelled_attempts == 1 and m.run.failed_attempts == 0
    assert m.run.error_rate == 0.0
    # the stale attempt spent 20 tokens and 1.5 s: counted as spent, not as useful work
    assert m.run.busy_seconds == pytest.approx(2.5)
    assert m.run.token_efficiency == pytest.approx(10 / 40)
    assert m.run.work_seconds == pytest.approx(1.0)


def test_scaling_efficiency_and_speedup_estimate() -> None:
    m = compute_metrics(one_session())
    # work = service time of succeeded tasks: 2 (t1) + 3 (t3) + 4 (t2) = 9
    assert m.run.work_seconds == pytest.approx(9.0)
    assert m.speedup_basis == "estimate"
    assert m.speedup == pytest.approx(0.9)  # 9 / 10
    assert m.scaling_efficiency == pytest.approx(0.3)  # 9 / (3 x 10)
    assert m.agents == pytest.approx(3.0)


def sequential_session() -> list[Any]:
    """``one_session``'s work on Ada alone, one task after another, with the same outcomes
    (t1, t2, t3 succeed, t4 fails for good): 20 s of wall time."""
    return [
        run_started(0, agents=AGENTS[:1]),
        start(0, "t1", 1, "Ada"),
        finish(5, "t1", 1, "Ada", 5.0),
        succeeded(5, "t1", 1, "Ada"),
        start(5, "t2", 2, "Ada"),
        finish(11, "t2", 2, "Ada", 6.0),
        succeeded(11, "t2", 2, "Ada"),
        start(11, "t3", 3, "Ada"),
        finish(16, "t3", 3, "Ada", 5.0),
        succeeded(16, "t3", 3, "Ada"),
        start(16, "t4", 4, "Ada"),
        finish(20, "t4", 4, "Ada", 4.0, error="auth"),
        TaskFailed(ts=T0 + 20, task_id="t4", error_class="auth", error="401", attempts=1),
        RunFinished(ts=T0 + 20, status="failed"),
    ]


def test_speedup_measured_against_a_baseline() -> None:
    """A like-for-like baseline (the same tasks, the same outcomes): wall times compared."""
    base = compute_metrics(sequential_session())
    m = compute_metrics(one_session(), baseline=base)
    assert m.comparison is not None and m.comparison.like_for_like
    assert m.comparison.matched == ("t1", "t2", "t3")
    assert m.speedup_basis == "measured"
    assert m.speedup == pytest.approx(2.0)  # 20 s / 10 s
    assert m.scaling_efficiency == pytest.approx(20 * 1 / (10 * 3))  # (20 x 1) / (10 x 3)
    assert m.baseline_wall_seconds == 20.0 and m.baseline_agents == 1.0
    assert with_baseline(compute_metrics(one_session()), base) == m


def test_agents_joining_and_retiring_count_only_while_present() -> None:
    """Ada from 0 to her retirement at 8; Bob from joining at 4 to the end at 10."""
    events = [
        run_started(0, agents=AGENTS[:1]),
        start(0, "t1", 1, "Ada"),
        finish(2, "t1", 1, "Ada", 2.0),
        succeeded(2, "t1", 1, "Ada"),
        AgentJoined(ts=T0 + 4, agent=AGENTS[1]),
        start(4, "t2", 2, "Bob"),
        finish(7, "t2", 2, "Bob", 3.0),
        succeeded(7, "t2", 2, "Bob"),
        AgentRetired(ts=T0 + 8, agent="Ada", reason="idle"),
        RunFinished(ts=T0 + 10, status="succeeded"),
    ]
    m = compute_metrics(events)
    assert m.run.agent_seconds == pytest.approx(14.0)  # Ada 8 - 0 + Bob 10 - 4
    assert m.by_agent["Ada"].utilisation == pytest.approx(2 / 8)
    assert m.by_agent["Bob"].utilisation == pytest.approx(3 / 6)
    assert m.run.utilisation == pytest.approx(5 / 14)  # busy 2 + 3
    assert m.scaling_efficiency == pytest.approx(5 / 14)  # work 2 + 3 over agent-seconds
    assert m.agents == pytest.approx(1.4)  # 14 agent-seconds over 10 s
    assert m.by_role["coder"].agents == 2


# -- resumed and empty runs, percentiles --------------------------------------------------
def resumed() -> list[Any]:
    """Session 1 (Ada only): 0..3, crashes with t2's attempt running. Session 2 (Ada and
    Bob) at +100..+102 re-runs t2."""
    return [
        run_started(0, agents=AGENTS[:1]),
        start(0, "t1", 1, "Ada"),
        finish(2, "t1", 1, "Ada", 2.0, tokens=(10, 10)),
        succeeded(2, "t1", 1, "Ada"),
        start(2, "t2", 2, "Ada"),
        Alert(ts=T0 + 3, kind="budget", message="last thing before the crash"),
        run_started(100, session=2, agents=AGENTS[:2]),
        start(100, "t2", 3, "Ada"),
        finish(101, "t2", 3, "Ada", 1.0, tokens=(10, 10)),
        succeeded(101, "t2", 3, "Ada"),
        RunFinished(ts=T0 + 102, status="succeeded"),
    ]


def test_resumed_run_counts_session_spans_only() -> None:
    m = compute_metrics(resumed())
    assert m.sessions == 2
    assert m.session_spans == ((T0, T0 + 3), (T0 + 100, T0 + 102))
    assert m.wall_seconds == pytest.approx(5.0)  # (3 - 0) + (102 - 100), not 102
    assert m.lost_attempts == 1  # t2's first attempt, cut short by the crash
    assert m.run.throughput_per_hour == pytest.approx(2 / 5 * 3600)
    # t2: first start at +2, success at +101; active time (3 - 2) + (101 - 100) = 2
    assert sorted(m.run.task_latency_samples) == pytest.approx([2.0, 2.0])
    # agent-seconds: 1 agent x 3 s + 2 agents x 2 s = 7; busy 2 + 1 = 3
    assert m.run.agent_seconds == pytest.approx(7.0)
    assert m.run.utilisation == pytest.approx(3 / 7)
    assert m.by_agent["Ada"].utilisation == pytest.approx(3 / 5)
    assert m.by_agent["Bob"].utilisation == 0.0  # present 2 s, idle
    assert m.run.attempts == 3 and m.run.finished_attempts == 2
    assert m.status == "succeeded"


@pytest.mark.parametrize("events", [[], [run_started(0)]], ids=["no events", "started only"])
def test_empty_run_has_no_division_by_zero(events: list[Any]) -> None:
    m = compute_metrics(events)
    assert m.wall_seconds == 0.0
    f = m.run
    for value in (
        f.throughput_per_hour,
        f.utilisation,
        f.error_rate,
        f.backpressure_rate,
        f.token_efficiency,
        f.communication_overhead,
        f.cost_usd,
        f.task_latency.p50,
        f.attempt_latency.mean,
        m.speedup,
        m.scaling_efficiency,
    ):
        assert value is None
    assert m.agents == 0.0
    json.dumps(m.to_dict())
    assert parse_prometheus(prometheus_text(m, "empty"))


def test_percentile_nearest_rank() -> None:
    xs = [40.0, 15.0, 35.0, 20.0, 50.0]  # sorted: 15 20 35 40 50
    assert percentile(xs, 5) == 15.0  # rank ceil(0.25) = 1
    assert percentile(xs, 30) == 20.0  # rank ceil(1.5) = 2
    assert percentile(xs, 40) == 20.0  # rank ceil(2.0) = 2
    assert percentile(xs, 50) == 35.0  # rank ceil(2.5) = 3
    assert percentile(xs, 95) == 50.0  # rank ceil(4.75) = 5
    assert percentile(xs, 100) == 50.0
    assert percentile([7.0], 50) == percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0  # rank ceil(1.0) = 1
    assert percentile([1.0, 2.0], 95) == 2.0  # rank ceil(1.9) = 2
    assert percentile([], 50) is None


# -- Prometheus text ----------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parses the exposition format strictly: every line a comment or `name{labels} value`."""
    samples, typed = [], set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, inner, value = match.groups()
        labels: dict[str, str] = {}
        pos = 0
        while inner and pos < len(inner):
            lm = _LABEL.match(inner, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no TYPE line before it"
        samples.append((name, labels, float(value)))
    return samples


def _sum(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    """What ``sum(name{match})`` gives in Prometheus."""
    picked = [v for n, labels, v in samples if n == name and labels.items() >= match.items()]
    assert picked, f"no series {name}{match}"
    return sum(picked)


def test_prometheus_text_parses_and_carries_the_values() -> None:
    m = compute_metrics(one_session())
    samples = parse_prometheus(prometheus_text(m, "r1"))
    by = {(n, tuple(sorted(labels.items()))): v for n, labels, v in samples}
    assert by[("phalanx_throughput_tasks_per_hour", (("run", "r1"),))] == pytest.approx(1080)
    # a role's or an agent's ratio: a quotient of the per-agent counters, summed as needed
    bob = {"agent": "Bob", "role": "coder"}
    busy = _sum(samples, "phalanx_busy_seconds_total", **bob)
    assert busy / _sum(samples, "phalanx_agent_seconds_total", **bob) == pytest.approx(0.5)
    faults = _sum(samples, "phalanx_attempts_failed_total", role="coder") - _sum(
        samples, "phalanx_attempts_rate_limited_total", role="coder"
    )
    finished = _sum(samples, "phalanx_attempts_finished_total", role="coder")
    assert faults / finished == pytest.approx(0.5) == m.by_role["coder"].error_rate
    assert _sum(samples, "phalanx_attempts_failed_total", error_class="auth") == 1
    assert _sum(samples, "phalanx_attempts_failed_total", error_class="rate_limited") == 1
    # task latencies: a histogram per agent; summed, the run's (p95 6.0 s, in the le=10 bucket)
    assert _sum(samples, "phalanx_task_latency_seconds_count") == 3
    assert _sum(samples, "phalanx_task_latency_seconds_sum") == pytest.approx(
        m.run.task_latency.total
    )
    assert m.run.task_latency.p95 == pytest.approx(6.0)
    assert _sum(samples, "phalanx_task_latency_seconds_bucket", le="5.0") == 2
    assert _sum(samples, "phalanx_task_latency_seconds_bucket", le="10.0") == 3
    assert _sum(samples, "phalanx_cost_usd_total") == pytest.approx(0.0475)
    assert _sum(samples, "phalanx_tokens_total", kind="input") == m.run.usage.input_tokens
    assert _sum(samples, "phalanx_communication_tokens_total") == 30
    assert by[("phalanx_wall_seconds", (("run", "r1"),))] == 10.0
    assert by[("phalanx_utilisation_ratio", (("run", "r1"),))] == pytest.approx(m.run.utilisation)
    assert all(n.startswith("phalanx_") for n, _, _ in samples)


def test_prometheus_families_sum_to_the_run() -> None:
    """Only the finest series: every per-agent family sums to the run's figure (no run or
    role series beside them to count twice)."""
    m = compute_metrics(one_session())
    samples = parse_prometheus(prometheus_text(m, "r1"))
    f = m.run
    for name, want in (
        ("phalanx_tasks_succeeded_total", f.tasks_succeeded),
        ("phalanx_attempts_total", f.attempts),
        ("phalanx_attempts_finished_total", f.finished_attempts),
        ("phalanx_attempts_failed_total", f.failed_attempts),
        ("phalanx_attempts_rate_limited_total", f.rate_limited_attempts),
        ("phalanx_busy_seconds_total", f.busy_seconds),
        ("phalanx_agent_seconds_total", f.agent_seconds),
        ("phalanx_tokens_total", f.usage.total_tokens),
        ("phalanx_success_output_tokens_total", f.success_output_tokens),
        ("phalanx_attempt_service_seconds_count", f.attempt_latency.count),
    ):
        assert _sum(samples, name) == pytest.approx(want), name
    assert _sum(samples, "phalanx_tasks") == m.tasks_total
    for name, labels, _ in samples:
        if name.startswith(("phalanx_tokens", "phalanx_attempts", "phalanx_busy")):
            assert {"run", "role", "agent"} <= set(labels), (name, labels)


def test_prometheus_labels_are_escaped() -> None:
    weird = 'we"ird\\name\nline'
    agents = (AgentInfo(name=weird, role="co\\der", provider="sim"),)
    events = [
        run_started(0, agents=agents),
        start(0, "t1", 1, weird),
        finish(1, "t1", 1, weird, 1.0),
        succeeded(1, "t1", 1, weird),
        RunFinished(ts=T0 + 1, status="succeeded"),
    ]
    text = prometheus_text(compute_metrics(events), 'run "x"')
    assert "\nline" not in text.replace("\\n", "")  # no raw newline inside a label
    samples = parse_prometheus(text)
    agents_seen = {labels.get("agent") for _, labels, _ in samples}
    assert weird in agents_seen
    assert {labels["run"] for _, labels, _ in samples} == {'run "x"'}
    assert "co\\der" in {labels.get("role") for _, labels, _ in samples}


# -- a real run ---------------------------------------------------------------------------
def test_sim_run_metrics_agree_with_the_run_summary(state: Path) -> None:
    plan = sim_plan(
        40,
        agents=4,
        latency_ms=5,
        deps="layered",
        faults={"server_error": 0.15, "rate_limited": 0.1},
        max_attempts=5,
        seed=7,
    )
    plan["prices"] = {"sim": {"input": 3.0, "output": 15.0}}
    result = phalanx.run_sync(phalanx.Plan.from_dict(plan))
    journal = Journal(state / "journal.sqlite")
    m = metrics_from_journal(journal, result.run_id)
    s = result.snapshot
    assert m.run_id == result.run_id and m.status == result.status
    assert m.run.attempts == s.attempts
    assert m.run.failed_attempts == s.failed_attempts
    assert m.run.rate_limited_attempts > 0 and m.run.failed_attempts > m.run.rate_limited_attempts
    assert m.run.usage.input_tokens == s.usage.input_tokens == result.usage.input_tokens
    assert m.run.usage.output_tokens == s.usage.output_tokens
    assert m.run.cost_usd == pytest.approx(s.usage.cost_usd)
    assert m.run.busy_seconds == pytest.approx(s.busy_seconds)
    assert m.wall_seconds == pytest.approx(s.elapsed)
    ok = [t for t in result.tasks.values() if t.ok]
    assert m.run.tasks_succeeded == len(ok) == m.task_states.get("succeeded", 0)
    assert sum(t.usage.total_tokens for t in result.tasks.values()) == m.run.usage.total_tokens
    assert m.run.task_latency.count == len(ok)
    # the parts add up to the run
    assert sum(f.tasks_succeeded for f in m.by_agent.values()) == m.run.tasks_succeeded
    assert sum(f.attempts for f in m.by_agent.values()) == m.run.attempts
    assert sum(f.busy_seconds for f in m.by_role.values()) == pytest.approx(m.run.busy_seconds)
    assert 0 < m.run.utilisation <= 1.0 + 1e-9  # type: ignore[operator]
    assert 0 < m.scaling_efficiency <= 1.0 + 1e-9  # type: ignore[operator]
    assert parse_prometheus(prometheus_text(m, m.run_id))
    journal.close()


# -- the status ETA acceptance ------------------------------------------------------------
N_TASKS, N_AGENTS = 200, 8
LATENCY_MS = {"virtual": 20, "real": 50}  # on the real clock, longer: scheduler jitter
TOLERANCE = 0.25


class EtaRecorder:
    """Folds a StatusTracker and, at every TaskSucceeded, records (ts, eta, done) — with the
    ETA of status.py and with the estimator proposed for it (:func:`proposed_eta`)."""

    def __init__(self) -> None:
        self.tracker = StatusTracker()
        self.rows: list[tuple[float, float | None, float | None, int]] = []
        self.durations: list[float] = []
        self.session_start = 0.0
        self.end: float | None = None
        self.events: list[Event] = []

    def emit(self, e: Event) -> None:
        self.events.append(e)
        self.tracker.emit(e)
        if isinstance(e, RunStarted):
            self.session_start = e.ts
        elif isinstance(e, AttemptFinished) and e.ok:
            self.durations.append(e.duration)
        elif isinstance(e, TaskSucceeded):
            s = self.tracker.snapshot(now=e.ts)
            eta = proposed_eta(s, self.durations[-50:], self.session_start)
            self.rows.append((e.ts, s.eta_seconds, eta, s.counts.get("succeeded", 0)))
        elif isinstance(e, RunFinished):
            self.end = e.ts


def proposed_eta(s: Snapshot, durations: list[float], session_start: float) -> float | None:
    """The ETA proposed for status.py: remaining work over the parallelism observed.

    remaining work = tasks not started x mean service time + what running attempts have
    left of it; parallelism = busy agent-seconds so far (finished attempts + the running
    ones' ages) / elapsed time. Both are read at one instant, so bursts of completions and
    the in-flight tasks that are about to finish do not swing it."""
    remaining = s.total - sum(s.counts.get(k, 0) for k in ("succeeded", "failed", "skipped"))
    if remaining == 0:
        return 0.0
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    ages = [s.now - a.since for a in s.agents if a.state in ("running", "waiting")]
    elapsed = s.now - session_start
    busy = s.busy_seconds + sum(ages)
    if elapsed <= 0 or busy <= 0:
        return None
    work = (remaining - len(ages)) * mean + sum(max(0.0, mean - age) for age in ages)
    return work / (busy / elapsed)


def steady_run(clock: str, state: Path) -> EtaRecorder:
    rec = EtaRecorder()
    plan = phalanx.Plan.from_dict(sim_plan(N_TASKS, agents=N_AGENTS, latency_ms=LATENCY_MS[clock]))
    if clock == "virtual":
        result = run_virtual(phalanx.run(plan, sinks=[rec]))
    else:
        result = phalanx.run_sync(plan, sinks=[rec])
    assert result.status == "succeeded" and rec.end is not None
    return rec


def eta_errors(rec: EtaRecorder, which: int) -> list[tuple[int, float, float]]:
    """(done, eta, actual remaining) from 10% to 90% done; the last record per timestamp
    (the status after every event of that instant), as a viewer would see it."""
    assert rec.end is not None
    at: dict[float, tuple[float | None, int]] = {}
    for row in rec.rows:
        at[row[0]] = (row[which], row[3])
    out = []
    for ts, (eta, done) in sorted(at.items()):
        if 0.1 * N_TASKS <= done <= 0.9 * N_TASKS:
            assert eta is not None, f"no ETA at {done} done"
            out.append((done, eta, rec.end - ts))
    assert len(out) >= 10
    return out


def _worst(errors: list[tuple[int, float, float]]) -> tuple[float, int, float, float]:
    return max((abs(eta - actual) / actual, done, eta, actual) for done, eta, actual in errors)


@pytest.fixture(scope="module")
def steady_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EtaRecorder]:
    out = {}
    mp = pytest.MonkeyPatch()
    # A steady run as in a fresh `phalanx run` process: the objects the whole test session
    # piled up before (Ray, models, thousands of tests) are moved out of the collector's
    # reach, so a full collection of *their* heap cannot stall the real-clock run.
    gc.collect()
    gc.freeze()
    try:
        for clock in ("virtual", "real"):
            state = tmp_path_factory.mktemp(f"eta-{clock}")
            mp.setenv("PHALANX_STATE_DIR", str(state))
            out[clock] = steady_run(clock, state)
    finally:
        gc.unfreeze()
        mp.undo()
    return out


@pytest.mark.parametrize("clock", ["virtual", "real"])
def test_status_eta_within_25_percent_on_a_steady_run(
    steady_runs: dict[str, EtaRecorder], clock: str
) -> None:
    """Acceptance: the ETA is within 25% of the actual remaining time on a steady sim run
    once 10% of tasks are done (up to 90%, after which the remaining time is tiny)."""
    worst = _worst(eta_errors(steady_runs[clock], 1))
    assert worst[0] <= TOLERANCE, "worst: {:.0%} at {} done (eta {:.3f}s, actual {:.3f}s)".format(
        *worst
    )


@pytest.mark.parametrize("clock", ["virtual", "real"])
def test_proposed_eta_within_25_percent_on_a_steady_run(
    steady_runs: dict[str, EtaRecorder], clock: str
) -> None:
    """The estimator proposed for status.py meets the acceptance on the same runs."""
    worst = _worst(eta_errors(steady_runs[clock], 2))
    assert worst[0] <= TOLERANCE, "worst: {:.0%} at {} done (eta {:.3f}s, actual {:.3f}s)".format(
        *worst
    )
    assert not math.isnan(worst[0])


def test_metrics_of_the_steady_run(steady_runs: dict[str, EtaRecorder]) -> None:
    """On the virtual clock the steady run is exact: 25 rounds of 8 x 20 ms in 0.5 s."""
    m: Metrics = compute_metrics(steady_runs["virtual"].events)
    assert m.wall_seconds == pytest.approx(0.5, abs=1e-6)
    assert m.run.throughput_per_hour == pytest.approx(200 / 0.5 * 3600, rel=1e-6)
    assert m.run.utilisation == pytest.approx(1.0, abs=1e-6)  # 200 x 20 ms / (8 x 0.5 s)
    assert m.speedup == pytest.approx(8.0, abs=1e-5)
    assert m.scaling_efficiency == pytest.approx(1.0, abs=1e-6)
    assert m.run.task_latency.p95 == pytest.approx(0.02, abs=1e-6)

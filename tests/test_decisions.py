"""The pure decision functions: retry, backoff, policies, DAG state, ready queue."""

from __future__ import annotations

import random

import pytest

from phalanx import AgentSpec, Plan, Task
from phalanx.exceptions import RETRYABLE, ErrorClass
from phalanx.ids import TaskId
from phalanx.runtime.policies import (
    AgentSlot,
    BestFit,
    LeastLoaded,
    RoundRobin,
    can_serve,
    fit_score,
)
from phalanx.runtime.retry import backoff_delay, decide_retry, is_retryable
from phalanx.runtime.scheduler import DagState, ReadyQueue

# -- retry --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", sorted(RETRYABLE))
def test_retryable_classes_retry_until_max_attempts(cls: ErrorClass) -> None:
    assert is_retryable(cls)
    for n in range(1, 6):
        assert decide_retry(cls, attempt_no=n, max_attempts=6).retry
    last = decide_retry(cls, attempt_no=6, max_attempts=6)
    assert not last.retry and "6 attempts" in last.reason


@pytest.mark.parametrize("cls", sorted(set(ErrorClass) - RETRYABLE))
def test_non_retryable_classes_never_retry(cls: ErrorClass) -> None:
    assert not is_retryable(cls)
    d = decide_retry(cls, attempt_no=1, max_attempts=100)
    assert not d.retry and "not retryable" in d.reason


def test_rate_limit_and_quota_are_told_apart() -> None:
    assert decide_retry("rate_limited", attempt_no=1, max_attempts=3).retry
    assert not decide_retry("quota_exhausted", attempt_no=1, max_attempts=3).retry


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    rng = random.Random(1)
    for n in range(1, 12):
        d = min(30.0, 0.5 * 2 ** (n - 1))
        for _ in range(50):
            assert d / 2 <= backoff_delay(n, rng=rng) <= d
    delays = {round(backoff_delay(3, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10  # jitter spreads retries apart


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(0)
    for ra in (0.0, 0.1, 3.0, 45.0):
        d = decide_retry("rate_limited", attempt_no=1, max_attempts=5, retry_after=ra, rng=rng)
        assert d.retry and d.delay >= ra
    d = decide_retry("rate_limited", attempt_no=1, max_attempts=5, retry_after=45.0)
    assert d.delay == 45.0  # honoured even above the backoff cap


# -- policies -----------------------------------------------------------------------------


def _slot(
    i: int, role: str = "generalist", skills: str = "", cats: str = "", **kw: int
) -> AgentSlot:
    return AgentSlot(
        name=f"a{i}",
        role=role,
        skills=frozenset(skills.split()),
        specialities=frozenset(cats.split()),
        index=i,
        **kw,  # type: ignore[arg-type]
    )


def test_round_robin_cycles_through_the_fleet() -> None:
    slots = [_slot(i) for i in range(4)]
    rr = RoundRobin(4)
    t = Task(id=TaskId("t"), prompt="p")
    assert [rr.pick(t, slots).index for _ in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    # with some agents busy it takes the next free one after the cursor
    assert rr.pick(t, [slots[0], slots[3]]).index == 3
    assert rr.pick(t, [slots[0], slots[2]]).index == 0


def test_least_loaded_prefers_fewer_running_then_fewer_done_then_less_busy() -> None:
    t = Task(id=TaskId("t"), prompt="p")
    a, b, c = _slot(0, running=1), _slot(1, done=3), _slot(2, done=1)
    assert LeastLoaded().pick(t, [a, b, c]) is c
    d = _slot(3, done=1)
    d.busy, c.busy = 1.0, 2.0
    assert LeastLoaded().pick(t, [a, b, c, d]) is d


def test_fit_score_weights_role_category_and_skills() -> None:
    t = Task(
        id=TaskId("t"), prompt="p", category="testing", role="tester", skills=frozenset({"py"})
    )
    assert fit_score(t, _slot(0, "tester", "py", "testing")) == 4 + 2 + 1
    assert fit_score(t, _slot(0, "coder", "py", "implementation")) == 1
    assert fit_score(t, _slot(0, "reviewer", "", "testing")) == 2


def test_best_fit_picks_the_specialist_and_ties_to_least_loaded() -> None:
    t = Task(id=TaskId("t"), prompt="p", category="research")
    coder = _slot(0, "coder", cats="implementation")
    r1 = _slot(1, "researcher", cats="research", done=2)
    r2 = _slot(2, "researcher", cats="research", done=1)
    assert BestFit().pick(t, [coder, r1, r2]) is r2
    assert BestFit().pick(t, [coder]) is coder  # never starves: someone always takes it


def test_can_serve_requires_role_and_all_skills() -> None:
    a = _slot(0, "coder", "python sql")
    assert can_serve(a, None, frozenset())
    assert can_serve(a, "coder", frozenset({"python"}))
    assert not can_serve(a, "tester", frozenset())
    assert not can_serve(a, None, frozenset({"python", "go"}))


# -- DAG state and ready queue ------------------------------------------------------------


def _plan(*tasks: Task) -> Plan:
    return Plan.build(agents=[AgentSpec(provider="sim")], tasks=list(tasks))


def _t(tid: str, *needs: str, priority: int = 0) -> Task:
    return Task(
        id=TaskId(tid), prompt=tid, needs=tuple(TaskId(n) for n in needs), priority=priority
    )


def test_dag_releases_tasks_when_all_needs_succeed() -> None:
    dag = DagState(_plan(_t("a"), _t("b"), _t("c", "a", "b"), _t("d", "c")))
    assert sorted(dag.initially_ready()) == ["a", "b"]
    assert dag.succeed(TaskId("a")) == []
    assert dag.succeed(TaskId("b")) == ["c"]
    assert dag.succeed(TaskId("c")) == ["d"]
    assert not dag.done
    dag.succeed(TaskId("d"))
    assert dag.done


def test_dag_failure_skips_everything_downstream_only() -> None:
    dag = DagState(_plan(_t("a"), _t("b", "a"), _t("c", "b"), _t("x"), _t("y", "x")))
    assert sorted(dag.fail(TaskId("a"))) == ["b", "c"]
    assert dag.remaining == 2
    assert dag.state["x"] == "pending"


def test_dag_resume_counts_terminal_tasks_and_finds_orphans() -> None:
    plan = _plan(_t("a"), _t("b", "a"), _t("c", "b"), _t("d"))
    dag = DagState(plan, {TaskId("a"): "failed", TaskId("d"): "succeeded"})
    assert dag.initially_ready() == []  # b waits on failed a -> it is an orphan
    assert sorted(dag.orphans()) == [("b", "a"), ("c", "a")]
    assert dag.done


def test_ready_queue_orders_by_priority_then_critical_path() -> None:
    plan = _plan(_t("short"), _t("long"), _t("long2", "long"), _t("urgent", priority=5))
    q = ReadyQueue(plan)
    q.extend([TaskId("short"), TaskId("long"), TaskId("urgent")])
    order = []
    while len(q):
        bucket, _ = q.heads()[0]
        order.append(q.pop(bucket).id)
    assert order == ["urgent", "long", "short"]


def test_ready_queue_buckets_by_role() -> None:
    plan = Plan.build(
        agents=[AgentSpec(role="coder", provider="sim"), AgentSpec(role="tester", provider="sim")],
        tasks=[
            Task(id=TaskId("c1"), prompt="x", role="coder"),
            Task(id=TaskId("t1"), prompt="x", role="tester", priority=1),
        ],
    )
    q = ReadyQueue(plan)
    q.extend([TaskId("c1"), TaskId("t1")])
    heads = q.heads()
    assert [(b.role, t.id) for b, t in heads] == [("tester", "t1"), ("coder", "c1")]

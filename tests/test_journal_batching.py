"""The journal's fast paths change nothing but speed.

A batch's table writes are folded (one insert per attempt with its final values, one update
per task): the tables must end exactly as when every event is flushed on its own, whatever
the batch boundaries, with stale results, cancellations, failures, skips and resumed
sessions in the stream; a second success of a task in one batch must still fail the batch.
Events are encoded by hand-made encoders: the text must be exactly ``json.dumps`` of
``event_to_dict``, for odd values too.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import new_run
from phalanx.cost import Usage
from phalanx.events import (
    AgentInfo,
    AgentJoined,
    Alert,
    AttemptFinished,
    AttemptStarted,
    Event,
    MessageSent,
    RetryScheduled,
    RunFinished,
    RunStarted,
    ScaleDecision,
    TaskFailed,
    TaskInfo,
    TaskSkipped,
    TaskSucceeded,
    event_from_dict,
    event_to_dict,
    event_to_json,
)
from phalanx.journal import Journal

TABLES = ("runs", "agents", "tasks", "attempts", "results", "events")


def _started(ts: float, session: int, n_tasks: int) -> RunStarted:
    return RunStarted(
        ts=ts,
        run_id="r",
        plan="p",
        session=session,
        policy="best_fit",
        simulated=True,
        agents=(AgentInfo(name="a0", role="coder", provider="sim", skills=("py",)),),
        tasks=tuple(
            TaskInfo(id=f"t{i}", title=f"task {i}", category="implementation")
            for i in range(n_tasks)
        ),
    )


def _stream(seed: int, n_tasks: int = 40) -> list[Event]:
    """A plausible event stream: attempts that succeed, fail and retry, fail for good, are
    cancelled, time out and then answer late (stale), skips, and a resumed session."""
    rng = random.Random(seed)
    events: list[Event] = [_started(1.0, 1, n_tasks)]
    aid, ts = 0, 1.0
    done: set[int] = set()
    for session in (1, 2):
        if session == 2:
            events.append(_started(ts, 2, n_tasks))
        for i in rng.sample(range(n_tasks), n_tasks):
            if i in done:
                continue
            for no in range(1, 4):
                aid, ts = aid + 1, ts + 0.25
                agent = f"a{rng.randrange(3)}"
                events.append(
                    AttemptStarted(
                        ts=ts, task_id=f"t{i}", attempt_id=aid, attempt_no=no, agent=agent
                    )
                )
                fate = rng.choice(["ok", "ok", "fail", "stale", "cancel", "crash", "fatal", "skip"])
                if fate == "crash" and session == 1:
                    break  # no end: the resumed session marks it lost
                if fate == "cancel":
                    events.append(_finished(ts, i, aid, agent, ok=False, cls="cancelled"))
                    break
                if fate == "stale":  # the lease expires, then the late answer comes in
                    events.append(_finished(ts, i, aid, agent, ok=False, cls="timeout"))
                    events.append(_finished(ts + 1, i, aid, agent, ok=True, stale=True))
                    continue
                if fate in ("fail", "fatal", "skip"):
                    events.append(_finished(ts, i, aid, agent, ok=False, cls="server_error"))
                    events.append(
                        RetryScheduled(
                            ts=ts,
                            task_id=f"t{i}",
                            attempt_no=no,
                            delay=0.1,
                            error_class="server_error",
                        )
                    )
                    if fate == "fail":
                        continue
                    if fate == "fatal":
                        events.append(
                            TaskFailed(
                                ts=ts, task_id=f"t{i}", error_class="auth", error="no", attempts=no
                            )
                        )
                    else:
                        events.append(
                            TaskSkipped(ts=ts, task_id=f"t{i}", upstream="t0", reason="upstream")
                        )
                    done.add(i)
                    break
                events.append(_finished(ts, i, aid, agent, ok=True))
                events.append(
                    TaskSucceeded(
                        ts=ts,
                        task_id=f"t{i}",
                        attempt_id=aid,
                        agent=agent,
                        output=f"answer {i}",
                        parsed={"n": i} if i % 3 == 0 else None,
                    )
                )
                done.add(i)
                break
        if session == 2:
            events.append(RunFinished(ts=ts, status="failed", reason="some failed"))
    return events


def _finished(
    ts: float,
    i: int,
    aid: int,
    agent: str,
    *,
    ok: bool,
    cls: str | None = None,
    stale: bool = False,
) -> AttemptFinished:
    return AttemptFinished(
        ts=ts,
        task_id=f"t{i}",
        attempt_id=aid,
        agent=agent,
        ok=ok,
        duration=0.5,
        usage=Usage(input_tokens=10 + i, output_tokens=5, cost_usd=0.001 * i),
        error_class=cls,
        error=None if cls is None else f"{cls} on t{i}",
        status=500 if cls == "server_error" else None,
        retry_after=1.5 if cls == "server_error" else None,
        stale=stale,
    )


def _write(path: Path, events: list[Event], flush_after: Any) -> dict[str, list[tuple[Any, ...]]]:
    journal = new_run(Journal(path))
    for k, e in enumerate(events):
        journal.append("r", 2 if k and isinstance(e, RunStarted) else 1, e)
        if flush_after(k):
            journal.flush()
    journal.close()
    db = sqlite3.connect(path)
    try:
        out = {}
        for table in TABLES:
            cols = "run_id, status, reason, finished_at" if table == "runs" else "*"
            out[table] = sorted(db.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)
        return out
    finally:
        db.close()


@pytest.mark.parametrize("seed", range(6))
def test_folded_batches_leave_the_tables_of_one_by_one_writes(tmp_path: Path, seed: int) -> None:
    events = _stream(seed)
    reference = _write(tmp_path / "each.sqlite", events, lambda k: True)
    assert any(r[8] == "stale" for r in reference["attempts"])
    assert any(r[8] == "cancelled" for r in reference["attempts"])
    assert any(r[8] == "lost" for r in reference["attempts"])
    rng = random.Random(seed)
    for name, rule in (
        ("one batch", lambda k: False),
        ("random batches", lambda k: rng.random() < 0.15),
        ("pairs", lambda k: k % 2 == 1),
    ):
        got = _write(tmp_path / f"{name}.sqlite", events, rule)
        for table in TABLES:
            assert got[table] == reference[table], (name, table)


def test_a_second_success_in_one_batch_still_fails_the_batch(tmp_path: Path) -> None:
    journal = new_run(Journal(tmp_path / "j.sqlite"))
    journal.append("r", 1, _started(1.0, 1, 2))
    journal.flush()
    for aid in (1, 2):
        journal.append(
            "r", 1, AttemptStarted(ts=2.0, task_id="t0", attempt_id=aid, attempt_no=aid, agent="a")
        )
        journal.append("r", 1, _finished(2.0, 0, aid, "a", ok=True))
        journal.append("r", 1, TaskSucceeded(ts=2.0, task_id="t0", attempt_id=aid, agent="a"))
    with pytest.raises(sqlite3.IntegrityError):
        journal.flush()
    assert journal.results("r") == {}  # the whole batch rolled back
    journal.close()


def _odd_events() -> list[Event]:
    rng = random.Random(7)
    floats: list[Any] = [0.0, 1.5, 1e300, -2.0, 1700000000.123456, float("nan"), float("inf"), 3]
    out: list[Event] = []
    for _ in range(300):
        ts = rng.choice(floats)
        out.append(
            AttemptStarted(
                ts=ts,
                task_id=rng.choice(["t1", 'ü"x\n\u2028']),
                attempt_id=rng.choice([1, 2**70, True]),
                attempt_no=1,
                agent="A",
                max_turns=rng.choice([0, 8]),
            )
        )
        out.append(
            AttemptFinished(
                ts=ts,
                task_id="t",
                attempt_id=3,
                agent="b",
                ok=rng.choice([True, False, 1]),
                duration=rng.choice(floats),
                usage=rng.choice(
                    [Usage(), Usage(input_tokens=3, cost_usd=rng.choice([None, 0.1, float("nan")]))]
                ),
                error_class=rng.choice([None, "timeout"]),
                error=rng.choice([None, "é"]),
                status=rng.choice([None, 429, 1.5]),
                retry_after=rng.choice([None, 2, 2.5]),
                stale=rng.choice([True, False]),
            )
        )
        out.append(
            TaskSucceeded(
                ts=ts,
                task_id="t",
                attempt_id=rng.choice([1, 1.0]),
                agent="c",
                output="z",
                parsed=[1],
            )
        )
    return out


def test_event_json_is_json_dumps_of_event_to_dict() -> None:
    events: list[Event] = [
        *_stream(0, n_tasks=8),
        *_odd_events(),
        AgentJoined(ts=1.0, agent=AgentInfo(name="a", role="coder", provider="sim")),
        ScaleDecision(
            ts=1.0, action="add", role="r", before=1, after=2, reason="x", numbers={"a": 1.5}
        ),
        MessageSent(ts=1.0, message_id="m", sender="a", recipients=("b", "c"), kind="direct"),
        Alert(ts=1.0, kind="budget", message="spent"),
        RunStarted(
            ts=1.0,
            run_id="r",
            plan="p",
            session=1,
            policy="p",
            simulated=False,
            agents=(),
            tasks=(),
        ),
        RunStarted(  # its tasks written by the fast encoder; odd values by the general one
            ts=2.5,
            run_id="r",
            plan="p",
            session=2,
            policy="best_fit",
            simulated=True,
            agents=(AgentInfo(name="a", role="coder", provider="sim", skills=("x", "é")),),
            tasks=(
                TaskInfo(id="t1", title='é "q" \n', category="code", needs=("a", "b")),
                TaskInfo(id="t2", title="x", category="other", role="coder", grows=True),
                TaskInfo(id="t3", title=3, category="other"),  # type: ignore[arg-type]
                TaskInfo(id="t4", title="y", category="other", grows=1),  # type: ignore[arg-type]
                TaskInfo(id="t5", title="z", category="other", needs=["a"]),  # type: ignore[arg-type]
                TaskInfo(id="t6", title="z", category="other", needs={"a"}),  # type: ignore[arg-type]
                TaskInfo(id="t7", title="z", category="other", needs="ab"),  # type: ignore[arg-type]
            ),
            done=("t0",),
            timed=False,
        ),
    ]
    for e in events:
        assert event_to_json(e) == json.dumps(event_to_dict(e), separators=(",", ":"), default=str)
    for e in _stream(1, n_tasks=8):  # answers are kept in ``results``, not in the event
        kept = dataclasses.replace(e, output="", parsed=None) if isinstance(e, TaskSucceeded) else e
        assert event_from_dict(json.loads(event_to_json(e))) == kept

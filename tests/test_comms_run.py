"""Agents talking inside a run: broadcast and direct messages arrive in the next prompt
exactly once, the blackboard keeps provenance, and the overhead is measured and alerted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.agents.context import estimate_tokens
from phalanx.comms import overhead_from_events
from phalanx.cost import Usage
from phalanx.journal import Journal
from phalanx.providers.base import Completion, ToolCall
from phalanx.testing import ScriptedProvider

U = Usage(input_tokens=100, output_tokens=20)
TOOLS = ("broadcast", "send_message", "context_put", "context_get")


def call(name: str, cid: str, **arguments: Any) -> Completion:
    return Completion(
        text="",
        stop_reason="tool_use",
        usage=U,
        tool_calls=(ToolCall(id=cid, name=name, arguments=arguments),),
    )


def done(text: str = "ok") -> Completion:
    return Completion(text=text, usage=U)


def _plan(**extra: Any) -> Plan:
    names = ["A", "B", "C", "D"]
    t = [
        Task(id="a0", prompt="start", agent="A"),
        *[Task(id=f"{n.lower()}1", prompt="next", agent=n, needs=("a0",)) for n in names],
        Task(id="c2", prompt="last", agent="C", needs=("b1",)),
        Task(id="d2", prompt="last", agent="D", needs=("b1",)),
    ]
    return Plan.build(
        agents=[
            AgentSpec(name=n, provider="scripted", tools=TOOLS, subscribe=("api/",))  # type: ignore[arg-type]
            for n in names
        ],
        tasks=t,  # type: ignore[arg-type]
        limits=phalanx.Limits(work_stealing=False),
        **extra,
    )


SCRIPT = {
    "a0": [
        call("broadcast", "x1", text="hello team"),
        call("context_put", "x2", key="api/schema", value='{"v": 1}'),
        done(),
    ],
    "a1": [done()],
    "b1": [call("send_message", "x3", to="C", text="for C only"), done()],
    "c1": [done()],
    "d1": [done()],
    "c2": [done()],
    "d2": [done()],
}


def test_messages_arrive_exactly_once_and_only_to_their_targets(state: Path) -> None:
    script = ScriptedProvider({k: list(v) for k, v in SCRIPT.items()})
    result = phalanx.run_sync(_plan(), custom_providers={"scripted": script})
    assert result.status == "succeeded", result.summary()
    prompts: dict[str, list[str]] = {}
    for r in script.requests:
        prompts.setdefault(r.task_id, []).append(r.messages[1].content)
    first = {tid: texts[0] for tid, texts in prompts.items()}
    for tid in ("b1", "c1", "d1"):
        assert first[tid].count("from A (broadcast") == 1, tid
        assert "hello team" in first[tid]
    assert "hello team" not in first["a1"]  # not to the sender
    # a message is delivered once: C had it in c1, not again in c2
    assert sum("hello team" in first[t] for t in ("c1", "c2")) == 1
    assert sum("for C only" in first[t] for t in ("c1", "c2")) == 1  # to C, once
    assert not any("for C only" in first[t] for t in ("a1", "b1", "d1", "d2"))
    # the blackboard entry A wrote reaches subscribers with its provenance
    assert "api/schema (v1, by A in task a0)" in first["b1"]

    journal = Journal(state / "journal.sqlite")
    events = [e for _, e in journal.read_events(result.run_id)]
    sent = [e for e in events if e.type == "message_sent"]
    assert [(e.sender, e.recipients, e.kind) for e in sent] == [
        ("A", ("B", "C", "D"), "broadcast"),
        ("B", ("C",), "direct"),
    ]
    # the overhead, by hand: each recipient reads the message text
    msg_tokens = {
        "B": estimate_tokens("hello team"),
        "C": estimate_tokens("hello team") + estimate_tokens("for C only"),
        "D": estimate_tokens("hello team"),
    }
    work = {a.name: a.usage.total_tokens for a in result.snapshot.agents}
    report = overhead_from_events(events, work)
    for agent, tokens in msg_tokens.items():
        assert report.agent(agent).message_tokens == tokens
    assert report.message_tokens == sum(msg_tokens.values())


def test_overhead_warning_fires_past_the_threshold(state: Path) -> None:
    script = ScriptedProvider({k: list(v) for k, v in SCRIPT.items()})
    plan = _plan()
    plan = Plan.build(
        agents=plan.agents,
        tasks=plan.tasks,
        limits=phalanx.Limits(work_stealing=False, comm_overhead_warning=0.01),
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    db = sqlite3.connect(state / "journal.sqlite")
    alerts = [
        json.loads(d)["message"]
        for (d,) in db.execute(
            "SELECT data FROM events WHERE run_id = ? AND type = 'alert'", (result.run_id,)
        )
    ]
    assert any("communication overhead of the run is" in a for a in alerts), alerts
    assert any(a.startswith("overhead: ") for a in result.snapshot.alerts)


def test_messaging_can_be_switched_off(state: Path) -> None:
    script = ScriptedProvider({k: list(v) for k, v in SCRIPT.items()})
    plan = _plan(messaging=phalanx.comms.MessagePolicy(enabled=False))
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    tool_msgs = [m.content for r in script.requests for m in r.messages if m.role == "tool"]
    assert any(c.startswith("error: messaging_disabled") for c in tool_msgs)
    assert result.status == "succeeded"


def test_on_message_hook_fires_for_each_message(state: Path) -> None:
    seen: list[dict[str, Any]] = []
    script = ScriptedProvider({k: list(v) for k, v in SCRIPT.items()})
    phalanx.run_sync(
        _plan(), custom_providers={"scripted": script}, hooks=[{"on_message": seen.append}]
    )
    assert [(m["agent"], m["recipients"], m["kind"]) for m in seen] == [
        ("A", ["B", "C", "D"], "broadcast"),
        ("B", ["C"], "direct"),
    ]

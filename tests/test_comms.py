"""The communication layer: message bus, shared context (blackboard), tools, overhead."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from phalanx.agents.context import estimate_tokens
from phalanx.agents.tools import ToolContext, ToolResult, call_tool
from phalanx.agents.workspace import ToolError, Workspace
from phalanx.comms import (
    COMMS_TOOLS,
    Comms,
    CommsError,
    MessageBus,
    MessagePolicy,
    SharedContext,
    broadcast,
    mesh_communicate,
    overhead_from_events,
    render_inbox,
)
from phalanx.comms.tools import decode_value
from phalanx.events import (
    ContextRead,
    ContextWritten,
    Event,
    MessageSent,
    event_from_dict,
    event_to_dict,
)
from phalanx.exceptions import PhalanxError, UsageError

TEAM = {"A": "architect", "B": "coder", "C": "coder", "D": "tester", "E": "reviewer"}


class Clock:
    """A fake clock: 1000.0, 1001.0, ... one second per reading."""

    def __init__(self) -> None:
        self.now = 999.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def make_bus(policy: MessagePolicy | None = None) -> tuple[MessageBus, Recorder]:
    rec = Recorder()
    return MessageBus(TEAM, policy, clock=Clock(), emit=rec), rec


def make_comms(policy: MessagePolicy | None = None) -> tuple[Comms, Recorder]:
    rec = Recorder()
    return Comms(TEAM, policy, clock=Clock(), emit=rec), rec


def make_board() -> tuple[SharedContext, Recorder]:
    rec = Recorder()
    return SharedContext(clock=Clock(), emit=rec), rec


def refused(code: str, fn: Any, *args: Any, **kwargs: Any) -> CommsError:
    with pytest.raises(CommsError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code
    return info.value


# ------------------------------------------------------------------------ bus


def test_broadcast_reaches_every_other_agent_exactly_once() -> None:
    bus, rec = make_bus()
    first = bus.broadcast("A", "the API is frozen", task_id="t1")
    second = bus.broadcast("C", "tests are green")
    assert first.recipients == ("B", "C", "D", "E")
    assert second.recipients == ("A", "B", "D", "E")
    assert {n: bus.pending(n) for n in TEAM} == {"A": 1, "B": 2, "C": 1, "D": 2, "E": 2}
    received = {n: bus.take(n) for n in TEAM}
    assert received["A"] == [second]
    assert received["C"] == [first]
    for name in ("B", "D", "E"):
        assert received[name] == [first, second]  # once each, in send order
    assert all(bus.take(n) == [] and bus.pending(n) == 0 for n in TEAM)  # delivered once
    assert len(rec.of(MessageSent)) == 2


def test_direct_reaches_only_its_target() -> None:
    bus, _ = make_bus()
    one = bus.direct("A", "C", "please check the schema", task_id="t2")
    assert one.kind == "direct" and one.recipients == ("C",)
    assert {n: bus.pending(n) for n in TEAM} == {"A": 0, "B": 0, "C": 1, "D": 0, "E": 0}
    assert bus.take("C") == [one]
    few = bus.mesh_communicate("B", ["D", " E", "D"], "pair with me")  # deduplicated
    assert few.recipients == ("D", "E")
    assert bus.take("D") == [few] and bus.take("E") == [few] and bus.take("A") == []


def test_policy_refusals_send_nothing() -> None:
    bus, rec = make_bus(MessagePolicy(enabled=False))
    refused("messaging_disabled", bus.broadcast, "A", "hi")
    refused("messaging_disabled", bus.direct, "A", "B", "hi")

    policy = MessagePolicy(broadcast_roles=frozenset({"architect"}), max_recipients=3)
    bus, rec = make_bus(policy)
    err = refused("not_allowed", bus.broadcast, "B", "hi")
    assert "coder" in err.message and "architect" in err.message
    refused("too_many_recipients", bus.broadcast, "A", "hi")  # 4 others > 3
    refused("too_many_recipients", bus.direct, "B", ["A", "C", "D", "E"], "hi")
    assert bus.direct("B", ["A", "C", "D"], "hi").recipients == ("A", "C", "D")

    bus, rec = make_bus(MessagePolicy(max_chars=10, allow_direct=True))
    refused("too_long", bus.broadcast, "A", "x" * 11)
    refused("unknown_agent", bus.broadcast, "Zed", "hi")
    err = refused("unknown_agent", bus.direct, "A", "Zed", "hi")
    assert "Zed" in err.message and "B" in err.message  # names who exists
    refused("bad_arguments", bus.direct, "A", "A", "hi")
    refused("bad_arguments", bus.direct, "A", "B", "   ")
    refused("bad_arguments", bus.direct, "A", [], "hi")
    assert bus.communication_log == [] and rec.events == []

    bus, _ = make_bus(MessagePolicy(allow_direct=False, broadcast_roles=frozenset()))
    refused("not_allowed", bus.direct, "A", "B", "hi")
    refused("not_allowed", bus.broadcast, "A", "hi")  # nobody may broadcast
    with pytest.raises(UsageError):
        MessagePolicy(max_recipients=0)
    assert issubclass(CommsError, ToolError) and issubclass(CommsError, PhalanxError)


def test_agents_joining_and_retiring() -> None:
    bus, _ = make_bus()
    bus.broadcast("A", "before")
    bus.add_agent("F", "coder")
    after = bus.broadcast("A", "after")
    assert bus.take("F") == [after]  # only what was sent after it joined
    left = bus.remove_agent("B")
    assert [m.text for m in left] == ["before", "after"]
    assert "B" not in bus.broadcast("A", "later").recipients
    refused("unknown_agent", bus.direct, "A", "B", "hi")
    assert bus.remove_agent("nobody") == []
    assert bus.agents == {
        "A": "architect",
        "C": "coder",
        "D": "tester",
        "E": "reviewer",
        "F": "coder",
    }


def test_a_lone_agent_broadcasts_to_nobody() -> None:
    bus = MessageBus({"A": "coder"}, clock=Clock())
    message = bus.broadcast("A", "anyone?")
    assert message.recipients == () and message.tokens == 0


def test_render_inbox() -> None:
    bus, _ = make_bus()
    bus.broadcast("A", "the API is frozen")
    bus.direct("C", "B", "check the schema\nand the docs", task_id="t3")
    assert render_inbox(bus.take("B")) == (
        "Messages for you:\n"
        "- from A (broadcast): the API is frozen\n"
        "- from C (direct, task t3): check the schema\n  and the docs"
    )
    assert render_inbox([]) == ""


# ------------------------------------------------------------------------ log and overhead


def test_communication_log_and_overhead_match_a_hand_count() -> None:
    comms, rec = make_comms()
    comms.begin_task("A", "t0")
    comms.broadcast("A", "abcdefgh")  # 8 chars: 2 tokens, read by 4 agents: 8
    mesh_communicate(comms, "B", "A", "abcd", task_id="t9")  # 1 token, 1 reader: 1
    comms.context.put("k", "xyz", agent="C", task_id="t1")  # '"xyz"' 5 chars: 2 tokens
    entry = comms.context.get("k", agent="D", task_id="t2")
    assert entry is not None
    shown = 'k (v1, by C in task t1): "xyz"'  # 30 chars: 8 tokens
    assert SharedContext.render([entry]) == shown and estimate_tokens(shown) == 8
    text, tokens = comms.inbox_for("E", "t5", subscriptions=["k"])  # injected: 8 more

    log = [
        (m.id, m.sender, m.recipients, m.kind, m.task_id, m.ts, m.tokens)
        for m in comms.communication_log
    ]
    assert log == [
        ("m1", "A", ("B", "C", "D", "E"), "broadcast", "t0", 1000.0, 8),
        ("m2", "B", ("A",), "direct", "t9", 1001.0, 1),
    ]
    assert text == (
        "Messages for you:\n- from A (broadcast, task t0): abcdefgh\n\n"
        "Shared context you follow (key (version, author): value):\n" + shown
    )
    assert tokens == estimate_tokens(text)

    work = {"A": 100, "B": 50, "C": 40, "D": 20, "E": 10}
    report = comms.overhead(work)
    rows = {a.agent: (a.message_tokens, a.context_tokens, a.work_tokens) for a in report.agents}
    assert rows == {
        "A": (1, 0, 100),
        "B": (2, 0, 50),
        "C": (2, 2, 40),  # its write
        "D": (2, 8, 20),  # its read
        "E": (2, 8, 10),  # its subscription
    }
    assert report.agent("D").ratio == pytest.approx(10 / 20)
    assert report.agent("E").ratio == pytest.approx(1.0)
    assert (report.comm_tokens, report.work_tokens) == (1 + 2 + 4 + 10 + 10, 220)
    assert report.ratio == pytest.approx(27 / 220)
    assert report.agent("nobody").ratio is None
    assert overhead_from_events(rec.events, work) == report  # recomputable from the journal
    round_tripped = [event_from_dict(json.loads(json.dumps(event_to_dict(e)))) for e in rec.events]
    assert overhead_from_events(round_tripped, work) == report


def test_overhead_without_work_tokens() -> None:
    comms, _ = make_comms()
    comms.context.put("k", 1, agent="orchestrator")
    report = comms.overhead({})
    assert report.agent("orchestrator").context_tokens == 1
    assert report.agent("orchestrator").ratio is None and report.ratio is None


def test_inbox_is_empty_when_nothing_waits() -> None:
    comms, rec = make_comms()
    assert comms.inbox_for("A", "t1", subscriptions=["api/"]) == ("", 0)
    assert rec.events == []  # a subscription that matched nothing read nothing
    assert comms.task_of("A") == "t1"


# ------------------------------------------------------------------------ blackboard


def test_versions_conflicts_and_provenance() -> None:
    board, rec = make_board()
    first = board.put(
        "api/schema", {"fields": ["id"]}, agent="Nova", task_id="t7", expected_version=0
    )
    assert (first.version, first.source, first.task_id, first.ts) == (1, "Nova", "t7", 1000.0)
    second = board.update("api/schema", {"fields": ["id", "name"]}, "Atlas")
    assert second.version == 2 and second.source == "Atlas"

    err = refused("version_conflict", board.put, "api/schema", {}, agent="Echo", expected_version=1)
    assert "version 2" in err.message and "Atlas" in err.message
    err = refused("version_conflict", board.put, "api/schema", {}, agent="Echo", expected_version=0)
    assert "version 2" in err.message
    err = refused("version_conflict", board.put, "missing", 1, agent="Echo", expected_version=3)
    assert "does not exist" in err.message
    refused("bad_arguments", board.put, "k", 1, agent="Echo", expected_version=-1)
    assert board.snapshot()["api/schema"] == second  # a refused write changes nothing

    third = board.put(
        "api/schema", "v3", agent="Nova", task_id="t8", expected_version=2, tags=["api"]
    )
    assert [e.version for e in board.history("api/schema")] == [1, 2, 3]
    assert SharedContext.render([third]) == 'api/schema (v3, by Nova in task t8) [tags: api]: "v3"'
    assert SharedContext.render([second]) == 'api/schema (v2, by Atlas): {"fields": ["id", "name"]}'
    assert [e.version for e in rec.of(ContextWritten)] == [1, 2, 3]


def test_values_are_json_copies_and_bounded() -> None:
    board = SharedContext(clock=Clock(), max_value_chars=20)
    value = {"items": [1, 2]}
    board.put("k", value, agent="A")
    value["items"].append(3)
    assert board.snapshot()["k"].value == {"items": [1, 2]}  # not the caller's object
    refused("bad_arguments", board.put, "k", {1, 2}, agent="A")
    refused("bad_arguments", board.put, "k", float("nan"), agent="A")
    refused("too_long", board.put, "k", "x" * 30, agent="A")
    for key in ("", " k", "a\nb"):
        refused("bad_arguments", board.put, key, 1, agent="A")
    refused("too_long", board.put, "k" * 201, 1, agent="A")


def test_query_by_prefix_and_tag_and_subscriptions() -> None:
    board, rec = make_board()
    board.put("api/users", 1, agent="A", tags=["api", "draft"])
    board.put("db/schema", 2, agent="B", tags=["db"])
    board.put("api/orders", 3, agent="C", tags=["api"])
    board.put("api/orders", 4, agent="C")  # tags=None keeps them
    keys = lambda entries: [e.key for e in entries]  # noqa: E731
    assert keys(board.query("api/", agent="D")) == ["api/orders", "api/users"]  # by key
    assert keys(board.query(tag="draft", agent="D")) == ["api/users"]
    assert keys(board.query("db/", tag="api", agent="D")) == []
    assert keys(board.query(agent="D")) == ["api/orders", "api/users", "db/schema"]
    assert board.get("nothing", agent="D") is None
    assert keys(board.subscribed(["db/", "#draft"], agent="E", task_id="t1")) == [
        "api/users",
        "db/schema",
    ]
    assert board.subscribed(["zzz"], agent="E") == []
    reads = rec.of(ContextRead)
    assert [(r.via, r.keys) for r in reads] == [
        ("query", ("api/orders", "api/users")),
        ("query", ("api/users",)),
        ("query", ()),
        ("query", ("api/orders", "api/users", "db/schema")),
        ("get", ()),
        ("subscription", ("api/users", "db/schema")),
    ]
    snap = board.snapshot()
    shown = SharedContext.render([snap["api/users"], snap["db/schema"]])
    assert shown == "api/users (v1, by A) [tags: api, draft]: 1\ndb/schema (v1, by B) [tags: db]: 2"
    assert reads[-1].tokens == estimate_tokens(shown)


def test_concurrent_stale_writers_conflict_and_nothing_is_lost() -> None:
    board, rec = make_board()
    board.put("counter", 0, agent="init", expected_version=0)
    writers, rounds = 12, 5
    conflicts = 0

    async def writer(name: str) -> None:
        nonlocal conflicts
        for _ in range(rounds):
            while True:
                entry = board.get("counter", agent=name)
                assert entry is not None
                await asyncio.sleep(0)  # let the others read the same version
                try:
                    board.put(
                        "counter", entry.value + 1, agent=name, expected_version=entry.version
                    )
                    break
                except CommsError as exc:
                    assert exc.code == "version_conflict"
                    conflicts += 1

    async def main() -> None:
        await asyncio.gather(*(writer(f"W{i}") for i in range(writers)))

    asyncio.run(main())
    final = board.snapshot()["counter"]
    assert final.value == writers * rounds  # every increment is there
    assert final.version == writers * rounds + 1
    history = board.history("counter")
    assert [e.value for e in history] == list(range(writers * rounds + 1))  # none lost
    assert conflicts > 0  # stale writers were refused, not overwritten
    per_writer = {e.source for e in history[1:]}
    assert per_writer == {f"W{i}" for i in range(writers)}
    assert len(rec.of(ContextWritten)) == writers * rounds + 1


# ------------------------------------------------------------------------ tools


def run_tool(ctx: ToolContext, name: str, **args: Any) -> ToolResult:
    return asyncio.run(call_tool(COMMS_TOOLS[name], args, ctx))


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def test_tools_send_and_broadcast(workspace: Workspace) -> None:
    comms, _ = make_comms(MessagePolicy(broadcast_roles=frozenset({"architect"})))
    comms.begin_task("A", "t1")
    ctx = ToolContext(workspace=workspace, agent="A", comms=comms)
    assert set(COMMS_TOOLS) == {
        "send_message",
        "broadcast",
        "context_put",
        "context_get",
        "context_query",
    }
    assert all(spec.needs_context for spec in COMMS_TOOLS.values())

    result = run_tool(ctx, "send_message", to="B, C", text="hello")
    assert result.ok and result.content == "sent m1 to B, C"
    result = run_tool(ctx, "broadcast", text="frozen")
    assert result.content == "sent m2 to 4 agent(s): B, C, D, E"
    assert [m.task_id for m in comms.communication_log] == ["t1", "t1"]
    assert comms.inbox_for("B", "t2")[0] == (
        "Messages for you:\n- from A (direct, task t1): hello\n"
        "- from A (broadcast, task t1): frozen"
    )

    coder = ToolContext(workspace=workspace, agent="B", comms=comms)
    result = run_tool(coder, "broadcast", text="me too")
    assert not result.ok and result.error_code == "not_allowed"
    assert result.content.startswith("error: not_allowed: B (coder) may not broadcast")
    result = run_tool(coder, "send_message", to="Zed", text="hi")
    assert result.error_code == "unknown_agent"

    off = ToolContext(workspace=workspace, agent="A")
    result = run_tool(off, "broadcast", text="hi")
    assert result.content == "error: messaging_disabled: messaging is not enabled for this run"
    nobody = ToolContext(workspace=workspace, comms=comms)
    assert run_tool(nobody, "broadcast", text="hi").error_code == "unknown_agent"


def test_tools_shared_context(workspace: Workspace) -> None:
    comms, rec = make_comms()
    comms.begin_task("A", "t1")
    a = ToolContext(workspace=workspace, agent="A", comms=comms)
    b = ToolContext(workspace=workspace, agent="B", comms=comms)

    assert (
        run_tool(
            a, "context_put", key="api/schema", value='{"fields": ["id"]}', tags=["api"]
        ).content
        == "stored api/schema (v1)"
    )
    assert run_tool(a, "context_put", key="notes", value="plain text, not JSON").ok
    assert run_tool(a, "context_put", key="n", value="42").ok
    assert run_tool(a, "context_put", key="obj", value={"a": [1, 2]}).ok  # JSON, not a string
    snap = comms.context.snapshot()
    assert snap["api/schema"].value == {"fields": ["id"]}
    assert snap["notes"].value == "plain text, not JSON" and snap["n"].value == 42
    assert snap["obj"].value == {"a": [1, 2]} and snap["api/schema"].task_id == "t1"

    got = run_tool(b, "context_get", key="api/schema")
    assert got.content == 'api/schema (v1, by A in task t1) [tags: api]: {"fields": ["id"]}'
    assert "never written" in run_tool(b, "context_get", key="nope").content
    stale = run_tool(b, "context_put", key="api/schema", value="[]", expected_version=0)
    assert stale.error_code == "version_conflict"
    assert stale.content.startswith("error: version_conflict: key 'api/schema' is at version 1")
    assert "by A in task t1" in stale.content
    ok = run_tool(b, "context_put", key="api/schema", value="[]", expected_version=1)
    assert ok.content == "stored api/schema (v2)"

    listing = run_tool(b, "context_query", prefix="api/")
    assert listing.content == "api/schema (v2, by B) [tags: api]: []"
    assert run_tool(b, "context_query", tag="api").content == listing.content
    assert run_tool(b, "context_query", prefix="zzz").content == "(no entries)"
    assert run_tool(b, "context_put", key="x", value=[1]).content == "stored x (v1)"
    assert run_tool(b, "context_put", key="x", value=1, tags="api").error_code == "bad_arguments"
    reads = [(r.agent, r.via, r.keys) for r in rec.of(ContextRead)]
    assert reads[0] == ("B", "get", ("api/schema",))
    assert decode_value("[1") == "[1" and decode_value(3) == 3


def test_tools_concurrent_creators_one_wins(workspace: Workspace) -> None:
    comms, _ = make_comms()

    async def main() -> list[ToolResult]:
        calls = [
            call_tool(
                COMMS_TOOLS["context_put"],
                {"key": "owner", "value": name, "expected_version": 0},
                ToolContext(workspace=workspace, agent=name, comms=comms),
            )
            for name in TEAM
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert sum(r.ok for r in results) == 1
    assert all(r.error_code == "version_conflict" for r in results if not r.ok)
    assert comms.context.snapshot()["owner"].version == 1


# ------------------------------------------------------------------------ events and names


def test_events_have_the_right_fields_and_round_trip() -> None:
    comms, rec = make_comms()
    comms.broadcast("A", "abcdefgh", task_id="t1")
    comms.context.put("k", [1, 2], agent="B", task_id="t2", tags=["x"])
    comms.context.query("k", agent="C", task_id="t3")
    sent, written, read = rec.events
    assert sent == MessageSent(
        ts=1000.0,
        message_id="m1",
        sender="A",
        recipients=("B", "C", "D", "E"),
        kind="broadcast",
        task_id="t1",
        tokens=8,
    )
    assert written == ContextWritten(
        ts=1001.0, key="k", version=1, agent="B", task_id="t2", tokens=2
    )
    assert read == ContextRead(
        ts=1002.0,
        keys=("k",),
        agent="C",
        task_id="t3",
        tokens=estimate_tokens("k (v1, by B in task t2) [tags: x]: [1, 2]"),
        via="query",
    )
    for event in rec.events:
        data = json.loads(json.dumps(event_to_dict(event)))
        assert event_from_dict(data) == event
    assert event_to_dict(sent)["type"] == "message_sent"


def test_strategy_names() -> None:
    bus, _ = make_bus()
    message = broadcast(bus, "A", "hello")
    assert message.recipients == ("B", "C", "D", "E")
    assert mesh_communicate(bus, "A", "B", "hi").recipients == ("B",)
    board = SharedContext(clock=Clock())
    board.update("k", "v", "Nova")
    assert [e.value for e in board.query("k", agent="Nova")] == ["v"]
    comms, _ = make_comms()
    assert broadcast(comms, "A", "x").kind == "broadcast"
    assert comms.mesh_communicate("A", "B", "y").recipients == ("B",)

"""The host side of a remote engine, without Ray: what travels to a host (blueprints, no
secrets) and the link back to the driver (usage, events, permits, driver-side tools)."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest

from phalanx.agents.spec import AgentSpec
from phalanx.agents.tools import ToolContext, ToolResult
from phalanx.agents.workspace import Workspace
from phalanx.comms.tools import COMMS_TOOLS
from phalanx.cost import Usage
from phalanx.events import ToolCalled
from phalanx.exceptions import ErrorClass
from phalanx.plan import Task
from phalanx.providers import ProviderRecipe
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.providers.ratelimits import Quota, RateInfo
from phalanx.runtime.executor import AgentRunner, Attempt
from phalanx.runtime.remote import AgentBlueprint, HostCore, blueprint_of


def _attempt(task_id: str = "t1", agent: str = "Ada", aid: int = 1) -> Attempt:
    return Attempt(
        run_id="r",
        attempt_id=aid,
        attempt_no=1,
        task=Task(id=task_id, prompt="do it"),  # type: ignore[arg-type]
        agent=agent,
    )


def _sim_blueprint(tmp_path: Path, **kw: Any) -> AgentBlueprint:
    return AgentBlueprint(
        spec=AgentSpec(role="coder", name="Ada"),  # type: ignore[arg-type]
        key="sim",
        model="",
        provider=ProviderRecipe(name="sim", options={"sim": {"output_tokens": 7}}, seed=1),
        workspace=str(tmp_path),
        **kw,
    )


def test_an_attempt_returns_its_usage_before_its_outcome(tmp_path: Path) -> None:
    async def main() -> None:
        core = HostCore("h1", {"Ada": _sim_blueprint(tmp_path)})
        messages, outcome = await core.run(_attempt())
        assert outcome.ok and outcome.task_id == "t1"
        spends = [m for m in messages if m[0] == "spend"]
        assert len(spends) == 1 and spends[0][1] == outcome.usage
        assert core.outbox == []  # drained with the outcome

    asyncio.run(main())


def test_one_provider_per_key_per_host(tmp_path: Path) -> None:
    bp = _sim_blueprint(tmp_path)
    core = HostCore("h1", {"Ada": bp, "Bo": bp})
    assert len(core.providers) == 1
    assert core.runners["Ada"].provider is core.runners["Bo"].provider


def test_governed_keys_ask_the_driver_for_permits(tmp_path: Path) -> None:
    async def main() -> None:
        core = HostCore("h1", {"Ada": _sim_blueprint(tmp_path)}, governed=frozenset({"sim"}))
        run = asyncio.create_task(core.run(_attempt()))
        mail = await core.messages(wait=2)
        assert mail[0][0] == "acquire"
        _, rid, key, tokens, agent, task_id = mail[0]
        assert (key, agent, task_id) == ("sim", "Ada", "t1") and tokens > 0
        assert not run.done()  # waiting for the permit
        core.reply(rid, 99)
        messages, outcome = await run
        assert outcome.ok
        settle = [m for m in messages if m[0] == "settle"]
        assert settle == [("settle", 99, outcome.usage.total_tokens)]

    asyncio.run(main())


def test_a_retry_after_pauses_the_driver_and_governs_the_key_from_then_on(
    tmp_path: Path,
) -> None:
    core = HostCore("h1", {"Ada": _sim_blueprint(tmp_path)})
    core.gate.pause("sim", 2.5)
    assert core.drain() == [("pause", "sim", 2.5)]
    assert "sim" in core.governed


def test_learned_limits_and_given_back_permits_travel_to_the_driver(tmp_path: Path) -> None:
    """A response's rate-limit headers set the driver's limits and govern the key from then
    on; a permit whose request never reached the server goes back to the driver."""
    core = HostCore("h1", {"Ada": _sim_blueprint(tmp_path)})
    rate = RateInfo(requests=Quota(3, 2, 1.0), at=1.0)
    core.gate.learn("sim", rate)
    core.gate.release(7)
    core.gate.release(None)  # a key nobody governs: no permit to give back
    sent = core.drain()
    assert sent == [("learn", "sim", rate), ("release", 7)]
    assert pickle.loads(pickle.dumps(sent)) == sent  # they cross to the driver
    assert "sim" in core.governed


def test_a_spent_budget_stops_the_next_call(tmp_path: Path) -> None:
    async def main() -> None:
        core = HostCore("h1", {"Ada": _sim_blueprint(tmp_path)}, stopped="budget exhausted: x")
        _, outcome = await core.run(_attempt())
        assert not outcome.ok and outcome.error_class is ErrorClass.BUDGET
        core.set_stopped(None)
        _, outcome = await core.run(_attempt(aid=2))
        assert outcome.ok

    asyncio.run(main())


class _CallsContextPut:
    simulated = True
    name = "calls"

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.messages[-1].role == "tool":
            return Completion(text="tool said: " + request.messages[-1].content)
        call = ToolCall(id="1", name="context_put", arguments={"key": "k", "value": "v"})
        return Completion(text="", tool_calls=(call,), usage=Usage(input_tokens=1))

    async def aclose(self) -> None:
        return None


def test_driver_tools_travel_to_the_driver_and_keep_their_error_codes(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        bp = _sim_blueprint(tmp_path)
        bp = AgentBlueprint(
            **{
                **bp.__dict__,
                "provider": _CallsContextPut(),
                "tools": (COMMS_TOOLS["context_put"],),
                "driver_tools": frozenset({"context_put"}),
            }
        )
        core = HostCore("h1", {"Ada": bp})
        run = asyncio.create_task(core.run(_attempt()))
        mail: list[Any] = []
        while not any(m[0] == "tool" for m in mail):  # the driver: commits answered
            for m in await core.messages(wait=2):
                mail.append(m)
                if m[0] == "commit":  # the tool writes: its start is journaled first
                    core.reply(m[1], None)
        assert mail[0][0] == "spend"  # the first call's usage, as soon as it ended
        kinds = [m[0] if m[0] != "note" else m[1].__name__ for m in mail]
        assert kinds == ["spend", "AgentTurn", "ToolStarted", "commit", "tool"]
        kind, rid, agent, tool, args = mail[-1]
        assert (kind, agent, tool, args) == (
            "tool",
            "Ada",
            "context_put",
            {"key": "k", "value": "v"},
        )
        core.reply(
            rid,
            ToolResult(
                ok=False,
                content="error: version_conflict: k is at v3, you read v2",
                error_code="version_conflict",
            ),
        )
        messages, outcome = await run
        assert outcome.ok
        assert outcome.output == "tool said: error: version_conflict: k is at v3, you read v2"
        notes = [m for m in messages if m[0] == "note" and m[1] is ToolCalled]
        assert notes and notes[0][2]["error_code"] == "version_conflict"

    asyncio.run(main())


def test_cancel_stops_a_running_attempt(tmp_path: Path) -> None:
    async def main() -> None:
        bp = _sim_blueprint(tmp_path)
        slow = ProviderRecipe(name="sim", options={"sim": {"latency": 30_000}}, seed=1)
        core = HostCore("h1", {"Ada": AgentBlueprint(**{**bp.__dict__, "provider": slow})})
        run = asyncio.create_task(core.run(_attempt(aid=7)))
        await asyncio.sleep(0.05)
        assert core.cancel(7)
        with pytest.raises(asyncio.CancelledError):
            await run
        assert not core.inflight

    asyncio.run(main())


def test_a_blueprint_carries_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("anthropic")
    canary = "sk-ant-" + "canary" * 8
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    recipe = ProviderRecipe(name="anthropic:claude-x", options={}, seed=0)
    provider = recipe.build()  # the driver's own provider holds the key
    runner = AgentRunner(
        AgentSpec(role="coder", name="Ada"),  # type: ignore[arg-type]
        provider,
        "claude-x",
        key="anthropic:claude-x",
        tool_context=ToolContext(workspace=Workspace(tmp_path)),
        recipe=recipe,
    )
    blob = pickle.dumps(blueprint_of(runner, frozenset()))
    assert canary.encode() not in blob
    rebuilt = pickle.loads(blob)
    assert rebuilt.provider == recipe  # the host builds its own, from its environment

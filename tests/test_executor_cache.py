"""An agent's runner makes its system prompt once per style and context (issue 22), and
never sends a stale one; a call with no deadline arms no timer, and a provider's own
timeout then still fails the attempt as a timeout (found by review)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.agents import styles as st
from phalanx.ids import AgentName
from phalanx.runtime.executor import AgentRunner, Attempt
from phalanx.testing import ScriptedProvider


def _attempt(n: int) -> Attempt:
    return Attempt(
        run_id="r", attempt_id=n, attempt_no=1, task=Task(id=f"t{n}", prompt="p"), agent="solo"
    )


def test_the_system_prompt_is_made_once_and_follows_the_spec_and_the_style() -> None:
    script = ScriptedProvider(["one", "two", "three", "four"])
    runner = AgentRunner(AgentSpec(provider="scripted", name=AgentName("solo")), script, "m")
    old = st.STYLES["text"]
    try:
        asyncio.run(runner.run(_attempt(1)))
        asyncio.run(runner.run(_attempt(2)))
        assert len(runner._systems) == 1  # made once, for the text style
        first = script.requests[0].messages[0].content
        assert script.requests[1].messages[0].content == first
        # a style registered again (the process registry: no run's styles here)
        st.register_style(dataclasses.replace(old, instruction="SAY IT IN FRENCH."), replace=True)
        asyncio.run(runner.run(_attempt(3)))
        assert "SAY IT IN FRENCH." in script.requests[2].messages[0].content
    finally:
        st.STYLES["text"] = old
    runner.spec = dataclasses.replace(runner.spec, system_prompt="Be brief.")  # a new spec
    runner.context = "the repo is small"  # and context
    asyncio.run(runner.run(_attempt(4)))
    system = script.requests[3].messages[0].content
    assert "Be brief." in system and "the repo is small" in system


class _Fake:
    """A provider that raises ``error``, or else answers ``None`` (not a Completion)."""

    simulated = True

    def __init__(self, name: str, error: BaseException | None = None) -> None:
        self.name, self.error = name, error

    async def complete(self, request):  # type: ignore[no-untyped-def]
        if self.error is not None:
            raise self.error
        return None

    async def aclose(self) -> None:
        pass


def test_a_providers_own_timeout_without_a_task_deadline_fails_as_a_timeout(
    tmp_path: Path,
) -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="slow")], tasks=[Task(id="t", prompt="p", max_attempts=1)]
    )
    result = phalanx.run_sync(
        plan,
        state=tmp_path,
        custom_providers={"slow": _Fake("slow", TimeoutError("the SDK's own read timeout"))},
    )
    task = result.tasks["t"]
    assert (task.state, task.error_class) == ("failed", "timeout")
    assert "the SDK's own read timeout" in (task.error or "")


def test_a_bug_under_the_executor_fails_the_attempt_instead_of_hanging_the_run(
    tmp_path: Path,
) -> None:
    plan = Plan.build(
        agents=[AgentSpec(provider="broken")], tasks=[Task(id="t", prompt="p", max_attempts=1)]
    )

    async def go() -> phalanx.RunResult:
        run = phalanx.run(plan, state=tmp_path, custom_providers={"broken": _Fake("broken")})
        return await asyncio.wait_for(run, 30)  # it hung for ever before

    result = asyncio.run(go())
    task = result.tasks["t"]
    assert (task.state, task.error_class) == ("failed", "internal")
    assert "AttributeError" in (task.error or "")

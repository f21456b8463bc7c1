"""The strategy reads as phalanx's manual: every name its code sketches use (listed in
DESIGN.md's glossary) is a function, method or documented alias in the package."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from phalanx import AgentSpec, Plan, Task
from phalanx.runtime.policies import AgentSlot, balance_load, match_task_to_agent, pick_victim

# name -> where it lives ("module:attribute" or "module:Class.method")
GLOSSARY = {
    "set_output_style": "phalanx.agents.spec:AgentSpec.set_output_style",
    "add_hooks": "phalanx.agents.spec:AgentSpec.add_hooks",
    "configure_context": "phalanx.agents.spec:AgentSpec.configure_context",
    "AgentPipeline": "phalanx:AgentPipeline",
    "AgentSwarm.distribute_work": "phalanx:AgentSwarm.distribute_work",
    "SharedContext.update/query": "phalanx.comms:SharedContext.update",
    "broadcast": "phalanx.comms:broadcast",
    "scale_horizontally": "phalanx.runtime.scaling:scale_horizontally",
    "scale_vertically": "phalanx.runtime.scaling:scale_vertically",
    "hybrid_scale": "phalanx.runtime.scaling:hybrid_scale",
    "balance_load": "phalanx.runtime.policies:balance_load",
    "match_task_to_agent": "phalanx.runtime.policies:match_task_to_agent",
    "circuit_breaker": "phalanx.runtime.breaker:circuit_breaker",
    "decompose_project": "phalanx:decompose_project",
    "assign_agents": "phalanx.plan:assign_agents",
    "render_swarm_status": "phalanx.status:render_swarm_status",
}
DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def resolve(where: str) -> object:
    module, _, path = where.partition(":")
    obj: object = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(GLOSSARY))
def test_every_strategy_name_is_in_the_code(name: str) -> None:
    obj = resolve(GLOSSARY[name])
    assert callable(obj), name
    assert (obj.__doc__ or "").strip() or name == "balance_load", f"{name} is undocumented"


@pytest.mark.skipif(not DESIGN.exists(), reason="shared/DESIGN.md lies beside the checkout")
def test_the_list_is_the_designs() -> None:
    text = DESIGN.read_text()
    intro = r"Its code sketches name what a reader of\s+it will look for: (.*?)\.\s+Offer those"
    sketched = re.search(intro, text, re.S)
    assert sketched is not None
    named = {n.strip() for n in re.findall(r"`([^`]+)`", sketched.group(1))}
    assert named == set(GLOSSARY)


def test_balance_load_is_work_stealing_and_documented_so() -> None:
    assert balance_load is pick_victim
    source = Path(importlib.import_module("phalanx.runtime.policies").__file__ or "").read_text()
    assert "The strategy's balance_load" in source


def slot(name: str, role: str, load: int = 0) -> AgentSlot:
    specialities = AgentSpec(role=role).specialities
    return AgentSlot(
        name=name, role=role, skills=frozenset(), specialities=specialities, index=0, running=load
    )


def test_match_task_to_agent_picks_the_best_fit() -> None:
    task = Task(id="t", prompt="p", category="testing", role="tester")
    agents = [slot("a", "implementer"), slot("b", "tester", load=1), slot("c", "tester")]
    assert match_task_to_agent(task, agents) is agents[2]  # same fit, less loaded
    assert match_task_to_agent(Task(id="u", prompt="p", role="nobody"), agents) is None


def test_assign_agents_and_swarm_status() -> None:
    from phalanx.plan import assign_agents
    from phalanx.status import StatusTracker, render_swarm_status

    plan = Plan.build(
        agents=[AgentSpec(role="implementer", name="i"), AgentSpec(role="tester", name="t")],
        tasks=[Task(id="a", prompt="x", category="implementation")],
    )
    assert assign_agents(plan)["implementation"] == ["i"]
    assert "Total progress" in render_swarm_status(StatusTracker().snapshot())

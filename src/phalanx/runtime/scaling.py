"""Scaling: the strategy's horizontal, vertical and hybrid scaling, and the autoscaler's
decision ("start small, scale gradually") as a pure function of measured evidence.

The autoscaler adds agents to a role while work waits for that role, the last growth still
paid (its marginal throughput per added agent stayed above ``min_gain`` of what an agent
did before), the rate governor had headroom (nobody waited for a permit), the budget
allows and the fleet is under ``max_agents``; it retires agents idle for ``retire_after``
seconds once nothing waits. Every decision carries its reason and numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..agents.spec import AgentSpec
from ..plan.config import AutoscaleConfig

__all__ = [
    "AutoscaleConfig",
    "RoleEvidence",
    "ScaleChoice",
    "agents_needed",
    "decide_scale",
    "hybrid_scale",
    "scale_horizontally",
    "scale_vertically",
]


def agents_needed(workload: float, agent_capacity: float) -> int:
    """``ceil(workload / agent_capacity)``: how many agents a workload needs."""
    if agent_capacity <= 0:
        raise ValueError("agent_capacity must be positive")
    return max(0, math.ceil(workload / agent_capacity))


def scale_horizontally(spec: AgentSpec, workload: float, agent_capacity: float) -> list[AgentSpec]:
    """More agents: as many clones of ``spec`` as the workload needs."""
    return spec.clone(agents_needed(workload, agent_capacity))


def scale_vertically(
    spec: AgentSpec,
    *,
    tools: Sequence[str] = (),
    style: str | None = None,
    hooks: Sequence[Any] = (),
    provider: str | None = None,
    context: Sequence[Any] = (),
) -> AgentSpec:
    """A better agent: more tools, a better style, hooks, specialised context, a stronger
    model."""
    better = spec.add_tools(*tools).add_hooks(*hooks).configure_context(*context)
    if style is not None:
        better = better.set_output_style(style)
    if provider is not None:
        better = better.with_provider(provider)
    return better


def hybrid_scale(spec: AgentSpec, count: int, **improvements: Any) -> list[AgentSpec]:
    """Optimise one spec, then clone it: the strategy's "perfect one, then replicate"."""
    return scale_vertically(spec, **improvements).clone(count)


@dataclass(frozen=True, kw_only=True, slots=True)
class RoleEvidence:
    """What was measured for one role over the last interval."""

    role: str
    active: int  # agents of the role, not retired
    waiting: int  # tasks ready for this role that no agent of it is running
    throughput: float  # tasks finished per second by the role over the last interval
    before_growth: tuple[int, float] | None = None  # (agents, throughput) before last growth
    rate_limited: bool = False  # some agent of the role waited for a rate permit
    # requests/s the role's provider allows minus what it used last interval (None: no limit)
    rate_headroom: float | None = None
    budget_left: bool = True
    room: int = 0  # agents that may still be added under max_agents
    idle: Sequence[tuple[str, float]] = field(default_factory=tuple)  # (agent, idle seconds)
    requests: float = 0.0  # requests/s the role's agents made last interval

    @property
    def requests_per_agent(self) -> float:
        return self.requests / self.active if self.active else 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ScaleChoice:
    action: Literal["add", "retire", "hold"]
    count: int = 0
    reason: str = ""
    retire: tuple[str, ...] = ()
    numbers: dict[str, float] = field(default_factory=dict)


def _numbers(e: RoleEvidence, **more: float) -> dict[str, float]:
    out = {
        "active": float(e.active),
        "waiting": float(e.waiting),
        "throughput": round(e.throughput, 4),
        "room": float(e.room),
    }
    out.update({k: round(v, 4) for k, v in more.items()})
    return out


def _marginal_gain(e: RoleEvidence) -> tuple[float, float] | None:
    """(gain per added agent, an agent's throughput before) for the last growth."""
    if e.before_growth is None:
        return None
    n0, t0 = e.before_growth
    added = e.active - n0
    if added <= 0 or n0 <= 0:
        return None
    return (e.throughput - t0) / added, t0 / n0


def decide_scale(e: RoleEvidence, cfg: AutoscaleConfig) -> ScaleChoice:
    """Add, retire or hold, with the reason and the numbers behind it."""
    if e.waiting > 0:
        return _grow(e, cfg)
    stale = tuple(name for name, idle in e.idle if idle >= cfg.retire_after)
    keep = max(0, cfg.start_agents)
    can_retire = max(0, e.active - keep)
    if stale and can_retire:
        chosen = stale[:can_retire]
        return ScaleChoice(
            action="retire",
            count=len(chosen),
            retire=chosen,
            reason=f"nothing waits and {len(chosen)} agent(s) idle for >= {cfg.retire_after:g}s",
            numbers=_numbers(e),
        )
    return ScaleChoice(action="hold", reason="nothing waits", numbers=_numbers(e))


def _grow(e: RoleEvidence, cfg: AutoscaleConfig) -> ScaleChoice:
    if e.room <= 0:
        return ScaleChoice(action="hold", reason="limits.max_agents reached", numbers=_numbers(e))
    if e.rate_limited:
        return ScaleChoice(
            action="hold",
            reason="no rate-limit headroom: agents already wait "
            "for the governor, more would only queue",
            numbers=_numbers(e),
        )
    if not e.budget_left:
        return ScaleChoice(action="hold", reason="the budget is spent", numbers=_numbers(e))
    per_agent = e.requests_per_agent
    if e.rate_headroom is not None and per_agent > 0 and e.rate_headroom < per_agent:
        return ScaleChoice(
            action="hold",
            reason=f"no rate-limit headroom: {max(0.0, e.rate_headroom):.2f} requests/s left, "
            f"one more agent would use {per_agent:.2f}",
            numbers=_numbers(e, rate_headroom=e.rate_headroom, requests_per_agent=per_agent),
        )
    gain = _marginal_gain(e)
    if gain is not None and gain[0] < cfg.min_gain * gain[1]:
        return ScaleChoice(
            action="hold",
            reason=f"the last agents added {gain[0]:.3f} tasks/s each, under "
            f"{cfg.min_gain:g} x {gain[1]:.3f} (what one agent did before)",
            numbers=_numbers(e, marginal_gain=gain[0], per_agent_before=gain[1]),
        )
    step = max(1, e.active)  # start small, then double
    if cfg.max_step is not None:
        step = min(step, cfg.max_step)
    if e.rate_headroom is not None and per_agent > 0:  # no more than the limit can take
        step = min(step, max(1, int(e.rate_headroom / per_agent)))
    count = min(step, e.room, e.waiting)
    extra = {"marginal_gain": gain[0], "per_agent_before": gain[1]} if gain else {}
    return ScaleChoice(
        action="add",
        count=count,
        reason=f"{e.waiting} task(s) wait for this role",
        numbers=_numbers(e, **extra),
    )


def with_name(spec: AgentSpec, name: str) -> AgentSpec:
    return dataclasses.replace(spec, name=name)  # type: ignore[arg-type]

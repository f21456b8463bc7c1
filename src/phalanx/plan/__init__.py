"""The plan: a DAG of tasks by category, and everything that makes or reads one.

- ``model``: :class:`Plan`, :class:`Task`, :class:`Limits` and the other plan values (pure);
- ``config``: the settings a plan gives the runtime's parts (breakers, rate limits,
  autoscaling, messages), so the plan never imports the runtime;
- ``schema`` and ``file``: the YAML plan file (pydantic at the edge, one-line errors);
- ``library``: saved agents (``agent: NAME@VERSION``) and their eval history;
- ``templates`` (``phalanx init``) and ``planner`` (``phalanx plan``: a goal -> a plan).
"""

from __future__ import annotations

from .config import AutoscaleConfig, BreakerConfig, MessagePolicy, RateLimit
from .file import load_plan, plan_from_data, plan_to_dict
from .model import (
    POLICIES,
    Commands,
    EngineConfig,
    Limits,
    Plan,
    RetryConfig,
    Task,
    assign_agents,
    decompose_project,
)

__all__ = [
    "POLICIES",
    "AutoscaleConfig",
    "BreakerConfig",
    "Commands",
    "EngineConfig",
    "Limits",
    "MessagePolicy",
    "Plan",
    "RateLimit",
    "RetryConfig",
    "Task",
    "assign_agents",
    "decompose_project",
    "load_plan",
    "plan_from_data",
    "plan_to_dict",
]

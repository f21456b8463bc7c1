"""phalanx: run many specialised LLM agents in parallel on one piece of work.

First make agents better (:class:`AgentSpec`: role, style, context, hooks, tools, model),
then add more agents (:class:`Plan`, :func:`run`, :class:`Swarm`). Importing phalanx has no
side effects and imports no optional extra. It logs to the ``phalanx`` logger, which has only a
``NullHandler`` until the application (or ``phalanx -v``) gives it one; phalanx never touches
the root logger.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

__version__ = "0.1.0"

from .agents.spec import ROLES, AgentSpec, Role
from .api import RunResult, TaskResult, approve, resume, run, run_sync
from .cost import Usage
from .exceptions import (
    BudgetExhausted,
    ErrorClass,
    JournalError,
    PhalanxError,
    PlanError,
    ProviderError,
    UsageError,
)
from .patterns import AgentPipeline, AgentSwarm, Pipeline, Swarm, Team
from .plan.file import load_plan
from .plan.model import Limits, Plan, Task, decompose_project
from .status.snapshot import Snapshot, StatusTracker, fold
from .status.text import render_text

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ROLES",
    "AgentPipeline",
    "AgentSpec",
    "AgentSwarm",
    "BudgetExhausted",
    "ErrorClass",
    "JournalError",
    "Limits",
    "PhalanxError",
    "Pipeline",
    "Plan",
    "PlanError",
    "ProviderError",
    "Role",
    "RunResult",
    "Snapshot",
    "StatusTracker",
    "Swarm",
    "Task",
    "TaskResult",
    "Team",
    "Usage",
    "UsageError",
    "__version__",
    "approve",
    "decompose_project",
    "fold",
    "load_plan",
    "render_status",
    "resume",
    "run",
    "run_sync",
]

render_status = render_text

# Modules that lived at the top level before the pillars became packages: the old dotted
# names (``phalanx.styles.register_style``, ``@phalanx.tools.tool``) still resolve, loaded
# on first use so that importing phalanx stays light.
_MOVED = {
    "styles": "phalanx.agents.styles",
    "hooks": "phalanx.agents.hooks",
    "context": "phalanx.agents.context",
    "tools": "phalanx.agents.tools",
    "workspace": "phalanx.agents.workspace",
    "isolation": "phalanx.agents.isolation",
    "library": "phalanx.plan.library",
    "planner": "phalanx.plan.planner",
    "templates": "phalanx.plan.templates",
    "console": "phalanx.status.console",
    "tui": "phalanx.status.tui",
    "metrics": "phalanx.status.metrics",
    "report": "phalanx.status.report",
    "otel": "phalanx.status.otel",
    "web": "phalanx.status.web",
}


def __getattr__(name: str) -> ModuleType:
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'phalanx' has no attribute {name!r}")

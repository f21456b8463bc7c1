"""Better agents: what one agent is and how it behaves.

- ``spec``: :class:`AgentSpec` (role, style, context, tools, hooks, model), roles, names;
- ``styles``: output styles (an instruction and a parser each, re-ask prompts, tts audio);
- ``context``: specialised context (text, files, globs, a token cap);
- ``tools`` and ``workspace``: tools in a sandboxed workspace; ``isolation``: worktrees;
- ``hooks``: Python and command hooks around tasks and attempts.
"""

from __future__ import annotations

from .spec import (
    CATEGORIES,
    NAME_POOL,
    ROLES,
    AgentSpec,
    Category,
    Role,
    assign_names,
)

__all__ = [
    "CATEGORIES",
    "NAME_POOL",
    "ROLES",
    "AgentSpec",
    "Category",
    "Role",
    "assign_names",
]

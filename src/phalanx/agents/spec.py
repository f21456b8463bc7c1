"""Agents: who does the work. A frozen :class:`AgentSpec` per agent, memorable names, roles.

The strategy's "better agents" verbs (``set_output_style``, ``configure_context``,
``add_hooks``, ``add_tools``) return a new spec: specs are values, so a tuned spec can be
cloned into a fleet (``spec.clone(5)``) without the clones sharing mutable state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..ids import AgentName

__all__ = [
    "CATEGORIES",
    "NAME_POOL",
    "ROLES",
    "AgentSpec",
    "Category",
    "Role",
    "assign_names",
]

Category = Literal[
    "research", "architecture", "implementation", "testing", "documentation", "other"
]
CATEGORIES: tuple[Category, ...] = (
    "research",
    "architecture",
    "implementation",
    "testing",
    "documentation",
    "other",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Role:
    """A named role: what it is for, and which task categories it specialises in."""

    name: str
    description: str
    categories: frozenset[str] = frozenset()


def _roles(*rows: tuple[str, str, str]) -> dict[str, Role]:
    return {n: Role(name=n, description=d, categories=frozenset(c.split())) for n, d, c in rows}


# The strategy's AGENT_ROLES plus the roles its case studies name.
ROLES: dict[str, Role] = _roles(
    ("researcher", "Find and analyze information", "research"),
    ("analyzer", "Map dependencies and analyze the existing system", "research"),
    ("architect", "Design system structure", "architecture"),
    ("designer", "Design interfaces and APIs", "architecture"),
    ("planner", "Design the path from the current state to the goal", "architecture"),
    ("coder", "Implement features", "implementation"),
    ("implementer", "Implement features", "implementation"),
    ("migrator", "Execute changes", "implementation"),
    ("tester", "Verify functionality", "testing"),
    ("validator", "Verify functionality and report results", "testing"),
    ("reviewer", "Ensure quality", "testing"),
    ("documenter", "Document the implementation", "documentation"),
    ("synthesiser", "Combine several findings into one coherent answer", "research documentation"),
    ("deployer", "Release the result and say how it rolls out", "other"),
    ("worker", "Process one work item of a shared batch", ""),
    ("generalist", "Do whatever the task asks", ""),
)

# Memorable, pronounceable, distinct at a glance in a status line.
NAME_POOL: tuple[str, ...] = (
    "Cipher", "Nova", "Quantum", "Phoenix", "Atlas", "Echo", "Vega", "Orion", "Lyra", "Nimbus",
    "Pulse", "Zephyr", "Comet", "Raven", "Sable", "Titan", "Ember", "Flux", "Halo", "Iris",
    "Juno", "Kestrel", "Lumen", "Mosaic", "Nyx", "Onyx", "Pixel", "Quill", "Rune", "Solace",
    "Tempo", "Umbra", "Vertex", "Wren", "Xenon", "Yarrow", "Zenith", "Aurora", "Bolt", "Cobalt",
    "Delta", "Ether", "Falcon", "Glyph", "Helix", "Indigo", "Jade", "Karma", "Lotus", "Meteor",
    "Nebula", "Oracle", "Prism", "Quasar", "Radiant", "Sierra", "Tango", "Ultra", "Vortex",
    "Whisper", "Axiom", "Beacon", "Cosmo", "Drift",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentSpec:
    """One agent: its role, specialisation, output style and model.

    ``provider`` is ``"provider:model"`` (``"sim"``, ``"local:smollm2"``,
    ``"anthropic:claude-sonnet-4-5"`` …); ``None`` takes the run's default.
    ``output_type``: a pydantic model class (or a JSON Schema dict) its answers must be:
    it answers in JSON with that schema, and the task's result is parsed into it (over
    ``style``; a task's own ``output_type`` or ``style`` wins over the agent's).
    """

    role: str = "generalist"
    name: AgentName | None = None
    skills: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()  # empty: those of the role, if it is a known one
    style: str = "text"
    provider: str | None = None
    system_prompt: str = ""
    context: tuple[Any, ...] = ()  # text, {text:}, {file:}, {glob:} (see phalanx.agents.context)
    context_max_tokens: int = 4000
    tools: tuple[str, ...] = ()  # built-in tool names, or names of tools given to run()
    max_turns: int = 8  # model calls per attempt (tool rounds and style re-asks)
    subscribe: tuple[str, ...] = ()  # shared-context key prefixes (or "#tag") to be shown
    hooks: tuple[Any, ...] = field(default=(), compare=False)
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # a typed answer: a pydantic model class, or a JSON Schema (a plan's ``schema:``); the
    # agent answers in JSON that validates against it (phalanx.agents.styles.typed_style)
    output_type: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        # skills=("python",) or ["python"] as well as a frozenset: matching compares sets
        for name in ("skills", "categories"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                items = (value,) if isinstance(value, str) else value
                object.__setattr__(self, name, frozenset(items))

    @property
    def specialities(self) -> frozenset[str]:
        """Task categories this agent is specialised in (explicit, else from its role)."""
        if self.categories:
            return self.categories
        role = ROLES.get(self.role)
        return role.categories if role else frozenset()

    @property
    def description(self) -> str:
        role = ROLES.get(self.role)
        return role.description if role else ""

    # -- the strategy's "vertical scaling" verbs: each returns a new spec -----------------
    def set_output_style(self, style: str) -> AgentSpec:
        """The strategy's ``set_output_style``: this spec answering in ``style``."""
        return dataclasses.replace(self, style=style)

    def configure_context(self, *context: Any) -> AgentSpec:
        """The strategy's ``configure_context``: this spec with more specialised context
        (text, files, globs)."""
        return dataclasses.replace(self, context=self.context + tuple(context))

    def add_hooks(self, *hooks: Any) -> AgentSpec:
        """The strategy's ``add_hooks``: this spec with more hooks around its tasks."""
        return dataclasses.replace(self, hooks=self.hooks + tuple(hooks))

    def add_tools(self, *tools: str) -> AgentSpec:
        return dataclasses.replace(self, tools=self.tools + tuple(tools))

    def with_provider(self, provider: str) -> AgentSpec:
        return dataclasses.replace(self, provider=provider)

    def clone(self, count: int) -> list[AgentSpec]:
        """``count`` copies without names (names are given per run by :func:`assign_names`)."""
        return [dataclasses.replace(self, name=None) for _ in range(count)]


def _name_candidates() -> Iterable[str]:
    yield from NAME_POOL
    round_ = 2
    while True:
        for base in NAME_POOL:
            yield f"{base}-{round_}"
        round_ += 1


def assign_names(specs: Sequence[AgentSpec]) -> list[AgentSpec]:
    """Give every unnamed spec a memorable name, unique within the sequence.

    Deterministic: the same specs always get the same names (a resumed run keeps them).
    """
    taken = {s.name for s in specs if s.name}
    candidates = (n for n in _name_candidates() if n not in taken)
    out = []
    for spec in specs:
        if spec.name:
            out.append(spec)
        else:
            out.append(dataclasses.replace(spec, name=AgentName(next(candidates))))
    return out

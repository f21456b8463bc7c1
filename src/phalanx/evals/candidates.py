"""The specs under test: a :class:`Candidate` is one spec with its label in reports, what it
needs from a plan (its own styles, provider options, prices) and, for a saved agent, where
its results are recorded; :func:`candidate` makes one from a saved agent's reference, a
plan's agent (``plan.yaml:ROLE``) or a spec object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agents.spec import AgentSpec
from ..cost import Price
from ..plan.file import from_plan
from ..plan.library import Library, SavedAgent


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A spec under test: its label in reports, the spec, what it needs from a plan (its own
    styles, provider options, prices) and, for a saved agent, where results are recorded."""

    label: str
    spec: AgentSpec
    styles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    saved: SavedAgent | None = None


def candidate(ref: str | AgentSpec | SavedAgent | Candidate) -> Candidate:
    """A saved agent (``reviewer``, ``reviewer@2``), an agent of a plan (``plan.yaml:ROLE``
    or ``plan.yaml:NAME``), or a spec object."""
    if isinstance(ref, Candidate):
        return ref
    if isinstance(ref, SavedAgent):
        return _from_saved(ref)
    if isinstance(ref, AgentSpec):
        return Candidate(label=ref.name or ref.role, spec=dataclasses.replace(ref, name=None))
    path, sep, _ = ref.rpartition(":")
    if sep and (path.endswith((".yaml", ".yml")) or Path(path).is_file()):
        spec, styles, providers, prices = from_plan(ref)
        return Candidate(
            label=ref,
            spec=dataclasses.replace(spec, name=None),
            styles=styles,
            providers=providers,
            prices=prices,
        )
    return _from_saved(Library().get(ref))


def _from_saved(saved: SavedAgent) -> Candidate:
    return Candidate(
        label=saved.ref,
        spec=saved.spec,
        styles=saved.styles,
        providers=saved.providers,
        prices=saved.prices,
        saved=saved,
    )

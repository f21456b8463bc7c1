"""Specialised context: what makes an agent a specialist, read once per run.

An agent's ``context`` is a list of items: plain text, ``{text: ...}``, ``{file: PATH}`` or
``{glob: PATTERN}`` (paths relative to the run's workspace, read through its sandbox). The
whole is token-counted (about 4 characters a token) and capped at ``max_tokens``; what does
not fit is cut, and the cut is said in the context itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import PlanError
from .workspace import ToolError, Workspace

__all__ = ["ContextBundle", "estimate_tokens", "load_context"]

CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 4000


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextBundle:
    text: str = ""
    tokens: int = 0
    sources: tuple[str, ...] = ()
    truncated: bool = False


def _sections(
    items: Sequence[Any], workspace: Workspace | None, where: str
) -> list[tuple[str, str]]:
    """(source, text) for every item, in order."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            out.append(("text", item))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise PlanError(
                "expected text, {text: ...}, {file: PATH} or {glob: PATTERN}", field=here
            )
        ((kind, value),) = item.items()
        if kind == "text":
            out.append(("text", str(value)))
        elif kind in ("file", "glob"):
            if workspace is None:
                raise PlanError(f"a {kind} needs a workspace", field=here)
            out.extend(_read(kind, str(value), workspace, here))
        else:
            raise PlanError(f"unknown context kind {kind!r} (text, file, glob)", field=here)
    return out


def _read(kind: str, value: str, ws: Workspace, here: str) -> list[tuple[str, str]]:
    try:
        if kind == "file":
            return [(ws.display(value), ws.read_text(value))]
        names = [
            e for e in ws.list(".", value, recursive=True).entries if not e.endswith(("/", "@"))
        ]
        return [(name, ws.read_text(name)) for name in names]
    except ToolError as exc:
        raise PlanError(f"{kind} {value!r}: {exc}", field=here) from None


def load_context(
    items: Sequence[Any],
    workspace: Workspace | None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    where: str = "context",
) -> ContextBundle:
    """Read, label and cap an agent's context."""
    parts: list[str] = []
    sources: list[str] = []
    budget = max_tokens * CHARS_PER_TOKEN
    truncated = False
    for source, text in _sections(items, workspace, where):
        block = text if source == "text" else f"### {source}\n{text}"
        if len(block) > budget:
            block = block[: max(0, budget)] + f"\n[context cut at {max_tokens} tokens]"
            truncated = True
        parts.append(block)
        sources.append(source)
        budget -= len(block)
        if truncated or budget <= 0:
            truncated = truncated or len(sources) < len(items)
            break
    text = "\n\n".join(parts)
    return ContextBundle(
        text=text, tokens=estimate_tokens(text), sources=tuple(sources), truncated=truncated
    )

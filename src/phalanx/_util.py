"""Small helpers every layer shares (the bottom layer: imports nothing of phalanx)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe_error"]


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as a short, human phrase."""
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{msg}, got {value!r}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"{msg[0].lower()}{msg[1:]}, got {shown}"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    return f"{msg[0].lower()}{msg[1:]}"

"""JSON text of plain values, for the hand-made encoders of what a run writes thousands of
(its events, its plan's tasks): each piece exactly as ``json.dumps(...,
separators=(",", ":"))`` writes it, or a TypeError/ValueError for any value of another
type, so that the caller falls back to the general encoder."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["jbool", "jnum", "jopt_num", "jopt_str", "jstr"]

jstr = json.encoder.encode_basestring_ascii  # a JSON string, quoted; TypeError if not a str
_INF = float("inf")


def jnum(value: Any) -> str:
    """A JSON number (``int``/``float`` exactly, finite); ValueError otherwise."""
    t = type(value)
    if t is float and -_INF < value < _INF:
        return float.__repr__(value)
    if t is int:
        return int.__repr__(value)
    raise ValueError(value)


def jopt_num(value: Any) -> str:
    return "null" if value is None else jnum(value)


def jopt_str(value: Any) -> str:
    return "null" if value is None else jstr(value)


def jbool(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise ValueError(value)

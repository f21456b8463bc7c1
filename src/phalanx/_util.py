"""Small helpers every layer shares (the bottom layer: imports nothing of phalanx)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

__all__ = [
    "blocking",
    "describe_error",
    "jbool",
    "jnum",
    "jopt_num",
    "jopt_str",
    "jstr",
    "kill_group",
    "one_line",
    "packed",
    "percentile",
]

P = ParamSpec("P")
T = TypeVar("T")


def kill_group(pid: int) -> None:
    """SIGKILL a whole process group (its leader started with ``start_new_session``);
    a group already gone, or not ours, is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest value with at
    least ``q``% of the values at or below it. ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


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


def packed(parts: Sequence[str], width: int = 80, *, indent: str = "    ") -> list[str]:
    """``parts`` joined into lines of at most ``width`` characters, a part never cut: each
    part starts with its separator (``" · "``, ``" "``; the first part has none), dropped
    where a new line begins (indented by ``indent``). A part longer than a line has one of
    its own (a path, say: a terminal wraps it, but it holds nothing else)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(indent + part.lstrip(" ·") if lines else part)
    return lines


def one_line(
    text: str,
    limit: int | None = None,
    *,
    keep: Literal["head", "tail", "ends"] = "head",
    mark: str = "…",
    escape: bool = False,
) -> str:
    """``text`` on one line, at most ``limit`` characters.

    Runs of whitespace (line breaks too) become one space; with ``escape``, line breaks and
    other control characters are escaped instead (``\\n``), so a value shows as it is. A
    longer text is cut keeping its ``head``, its ``tail`` or both ``ends``, ``mark`` where
    the cut is.
    """
    if escape:
        if not text.isprintable():
            text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    else:
        text = " ".join(text.split())
    if limit is None or len(text) <= limit:
        return text
    room = limit - len(mark)
    if keep == "head":
        return text[:room] + mark
    if keep == "tail":
        return mark + text[len(text) - room :]
    half = room // 2
    return text[:half] + mark + text[len(text) - (room - half) :]


def blocking(fn: Callable[P, Coroutine[Any, Any, T]], name: str, doc: str) -> Callable[P, T]:
    """The sync facade of the coroutine function ``fn``: the same (typed) parameters, run
    to its end with ``asyncio.run``; one facade, never a hand-written twin."""

    @functools.wraps(fn)
    def facade(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(fn(*args, **kwargs))

    facade.__name__ = facade.__qualname__ = name
    facade.__doc__ = doc
    return facade


# -- JSON text of plain values ------------------------------------------------------------
# For the hand-made encoders of what a run writes thousands of (its events, its plan's
# tasks): each piece exactly as ``json.dumps(..., separators=(",", ":"))`` writes it, or a
# TypeError/ValueError for a value of another type, so that the caller falls back to the
# general encoder.
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

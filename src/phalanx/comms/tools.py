"""The communication tools: how an agent sends messages and uses the shared context.

Each reads :attr:`ToolContext.agent <phalanx.agents.tools.ToolContext.agent>` (who calls) and
:attr:`ToolContext.comms <phalanx.agents.tools.ToolContext.comms>` (the run's
:class:`~phalanx.comms.Comms`; ``None`` -> ``error: messaging_disabled: ...``). Messages and
writes are logged under the agent's current task (:meth:`~phalanx.comms.Comms.task_of`).
Results are short text for the model; a refusal (:class:`~phalanx.comms.bus.CommsError`)
comes back through :func:`~phalanx.agents.tools.call_tool` as ``"error: code: message"``.

The tools are coroutines, so they run on the run's event loop, never in a worker thread:
the bus and the board need no locks.

``context_put``'s ``value`` may be any JSON value. A string is parsed as JSON when it is
JSON (``"42"`` stores the number 42, ``'{"a": 1}'`` an object) and kept as text otherwise;
to store a string that is itself valid JSON, pass it JSON-quoted (``'"42"'``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, cast

from ..agents.tools import ToolContext, ToolSpec, tool
from .blackboard import SharedContext
from .bus import CommsError

if TYPE_CHECKING:
    from .hub import Comms

__all__ = ["COMMS_TOOLS", "decode_value"]

_ANY_JSON = ["string", "number", "integer", "boolean", "array", "object"]


def _hub(ctx: ToolContext) -> tuple[Comms, str]:
    """The run's hub and the calling agent, or the error the model should see."""
    if ctx.comms is None:
        raise CommsError("messaging_disabled", "messaging is not enabled for this run")
    if not ctx.agent:
        raise CommsError("unknown_agent", "this tool context names no agent")
    return cast("Comms", ctx.comms), ctx.agent


def decode_value(value: object) -> Any:
    """A model's value: a string that parses as JSON becomes that JSON, any other string
    stays text, and a JSON value (number, list, object, ...) is kept as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _send_message(ctx: ToolContext, to: str, text: str) -> str:
    """Send a message to one or more other agents of this run. They see it at the start of
    their next prompt.

    Args:
        to: the recipient's name, or several names separated by commas
        text: the message (short: put long material in the shared context)
    """
    comms, agent = _hub(ctx)
    message = comms.direct(agent, to.split(","), text)
    return f"sent {message.id} to {', '.join(message.recipients)}"


async def _broadcast(ctx: ToolContext, text: str) -> str:
    """Send a message to every other agent of this run. Use it sparingly: every agent pays
    to read it.

    Args:
        text: the message
    """
    comms, agent = _hub(ctx)
    message = comms.broadcast(agent, text)
    names = ", ".join(message.recipients) or "nobody (you are the only agent)"
    return f"sent {message.id} to {len(message.recipients)} agent(s): {names}"


async def _context_put(
    ctx: ToolContext,
    key: str,
    value: str,
    expected_version: int | None = None,
    tags: list[str] | None = None,
) -> str:
    """Write an entry of the shared context that every agent can read. To change an
    existing entry safely, pass the version you read as expected_version: if someone wrote
    it since, you get a version_conflict error; read it again, merge and retry.

    Args:
        key: the entry's name, such as 'api/schema' (use '/' to group entries)
        value: a JSON value, or plain text
        expected_version: the version you read (0: the key must not exist yet); omit to overwrite
        tags: labels to find the entry by; omit to keep the current ones
    """
    comms, agent = _hub(ctx)
    entry = comms.context.put(
        key,
        decode_value(value),
        agent=agent,
        task_id=comms.task_of(agent),
        expected_version=expected_version,
        tags=tags,
    )
    return f"stored {entry.key} (v{entry.version})"


async def _context_get(ctx: ToolContext, key: str) -> str:
    """Read one entry of the shared context: its value, version and who wrote it.

    Args:
        key: the entry's name
    """
    comms, agent = _hub(ctx)
    entry = comms.context.get(key, agent=agent, task_id=comms.task_of(agent))
    if entry is None:
        return f"no entry {key!r} (it was never written; create it with expected_version=0)"
    return SharedContext.render([entry])


async def _context_query(ctx: ToolContext, prefix: str = "", tag: str | None = None) -> str:
    """List the shared-context entries whose key starts with a prefix and/or that carry a
    tag, with their values, versions and authors.

    Args:
        prefix: the start of the keys, such as 'api/' (empty: every key)
        tag: only entries with this tag
    """
    comms, agent = _hub(ctx)
    entries = comms.context.query(prefix, tag, agent=agent, task_id=comms.task_of(agent))
    return SharedContext.render(entries) or "(no entries)"


def _any_json_value(spec: ToolSpec) -> ToolSpec:
    """``spec`` with its ``value`` parameter accepting any JSON value, not only text."""
    properties = dict(spec.parameters["properties"])
    properties["value"] = {**properties["value"], "type": _ANY_JSON}
    return dataclasses.replace(spec, parameters={**spec.parameters, "properties": properties})


COMMS_TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        tool(name="send_message")(_send_message),
        tool(name="broadcast")(_broadcast),
        _any_json_value(tool(name="context_put")(_context_put)),
        tool(name="context_get", read_only=True)(_context_get),
        tool(name="context_query", read_only=True)(_context_query),
    )
}
"""The communication tools by name; each needs a :class:`~phalanx.agents.tools.ToolContext` whose
``comms`` is the run's :class:`~phalanx.comms.Comms` and whose ``agent`` is the caller."""

"""The message bus: broadcast (one to all but the sender) and direct (mesh: any to any).

The third pattern, pipeline hand-off, is the plan's DAG: a task's upstream results are in
its prompt. Messages are queued per recipient and delivered by :meth:`MessageBus.take`
(each message to each recipient exactly once, in send order); the orchestrator injects them
into the agent's next prompt (:func:`render_inbox`). Every send is kept in
:attr:`MessageBus.communication_log` and emitted as one
:class:`~phalanx.events.MessageSent`, whose ``tokens`` are the text's estimated tokens
(:func:`~phalanx.agents.context.estimate_tokens`) times the number of recipients: each recipient
pays to read it; the sender's cost of writing it is already in its own output tokens.

A :class:`MessagePolicy` bounds the fan-out, so "everyone talks to everyone" can be switched
off: messaging on or off, which roles may broadcast, whether direct messages are allowed,
how many recipients one message may have, and how long a message may be. A refused send
raises :class:`CommsError` and sends nothing.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..agents.context import estimate_tokens
from ..events import Event, MessageSent
from ..exceptions import CommsError, UsageError
from ..plan.config import MessagePolicy

__all__ = [
    "CommsError",
    "Message",
    "MessageBus",
    "MessageKind",
    "MessagePolicy",
    "render_inbox",
]

MessageKind = Literal["broadcast", "direct"]


@dataclass(frozen=True, kw_only=True)
class Message:
    """One message as sent: ``tokens`` is what all its recipients pay to read it."""

    id: str
    sender: str
    recipients: tuple[str, ...]
    kind: MessageKind
    text: str
    task_id: str
    ts: float
    tokens: int


def _no_event(event: Event) -> None:
    """The default ``emit``: drop the event."""


class MessageBus:
    """Queues messages between the run's agents (``agents``: name -> role)."""

    def __init__(
        self,
        agents: Mapping[str, str] | None = None,
        policy: MessagePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        emit: Callable[[Event], None] = _no_event,
    ) -> None:
        self.policy = policy or MessagePolicy()
        self.communication_log: list[Message] = []
        self._roles: dict[str, str] = {}
        self._inboxes: dict[str, deque[Message]] = {}
        self._clock = clock
        self._emit = emit
        self._ids = itertools.count(1)
        for name, role in (agents or {}).items():
            self.add_agent(name, role)

    # -- membership --------------------------------------------------------------------
    @property
    def agents(self) -> dict[str, str]:
        """The agents that can send and receive now: name -> role."""
        return dict(self._roles)

    def add_agent(self, name: str, role: str) -> None:
        """Register an agent (or change its role); it receives messages sent from now on."""
        if not name:
            raise UsageError("an agent on the message bus needs a name")
        self._roles[name] = role
        self._inboxes.setdefault(name, deque())

    def remove_agent(self, name: str) -> list[Message]:
        """Unregister an agent (a retired one); returns the messages it had not taken."""
        self._roles.pop(name, None)
        return list(self._inboxes.pop(name, ()))

    # -- sending -----------------------------------------------------------------------
    def broadcast(self, sender: str, text: str, task_id: str = "") -> Message:
        """Send ``text`` to every registered agent but the sender."""
        self._check_sender(sender, text)
        allowed = self.policy.broadcast_roles
        if allowed is not None and self._roles[sender] not in allowed:
            who = ", ".join(sorted(allowed)) or "no role"
            raise CommsError(
                "not_allowed",
                f"{sender} ({self._roles[sender]}) may not broadcast; only {who} may: "
                "send a direct message instead",
            )
        recipients = tuple(name for name in self._roles if name != sender)
        return self._send(sender, recipients, "broadcast", text, task_id)

    def direct(self, sender: str, to: str | Sequence[str], text: str, task_id: str = "") -> Message:
        """Send ``text`` to one agent, or to each of a few (``to`` a sequence of names)."""
        self._check_sender(sender, text)
        if not self.policy.allow_direct:
            raise CommsError("not_allowed", "direct messages are switched off for this run")
        recipients = self._recipients(sender, [to] if isinstance(to, str) else to)
        return self._send(sender, recipients, "direct", text, task_id)

    mesh_communicate = direct
    """The strategy's name for :meth:`direct`."""

    def _check_sender(self, sender: str, text: str) -> None:
        if not self.policy.enabled:
            raise CommsError("messaging_disabled", "messaging is switched off for this run")
        if sender not in self._roles:
            raise CommsError("unknown_agent", f"{sender!r} is not an agent of this run")
        if not text.strip():
            raise CommsError("bad_arguments", "a message needs some text")
        if len(text) > self.policy.max_chars:
            raise CommsError(
                "too_long",
                f"the message has {len(text)} characters; at most {self.policy.max_chars} "
                "are allowed: shorten it or put the detail in the shared context",
            )

    def _recipients(self, sender: str, names: Iterable[str]) -> tuple[str, ...]:
        recipients = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
        if not recipients:
            raise CommsError("bad_arguments", "name at least one recipient")
        unknown = [n for n in recipients if n not in self._roles]
        if unknown:
            known = ", ".join(n for n in self._roles if n != sender) or "none"
            raise CommsError(
                "unknown_agent", f"no agent named {', '.join(unknown)} (agents: {known})"
            )
        if sender in recipients:
            raise CommsError("bad_arguments", "an agent cannot send a message to itself")
        return recipients

    def _send(
        self, sender: str, recipients: tuple[str, ...], kind: MessageKind, text: str, task_id: str
    ) -> Message:
        limit = self.policy.max_recipients
        if limit is not None and len(recipients) > limit:
            raise CommsError(
                "too_many_recipients",
                f"the message would reach {len(recipients)} agents; at most {limit} allowed",
            )
        message = Message(
            id=f"m{next(self._ids)}",
            sender=sender,
            recipients=recipients,
            kind=kind,
            text=text,
            task_id=task_id,
            ts=self._clock(),
            tokens=estimate_tokens(text) * len(recipients),
        )
        self.communication_log.append(message)
        for name in recipients:
            self._inboxes[name].append(message)
        self._emit(_sent_event(message))
        return message

    # -- receiving ---------------------------------------------------------------------
    def pending(self, agent: str) -> int:
        """How many messages wait for ``agent`` (0 for an unknown agent)."""
        return len(self._inboxes.get(agent, ()))

    def take(self, agent: str) -> list[Message]:
        """The messages waiting for ``agent``, oldest first; they are delivered only once."""
        inbox = self._inboxes.get(agent)
        if not inbox:
            return []
        messages = list(inbox)
        inbox.clear()
        return messages


def _sent_event(message: Message) -> MessageSent:
    return MessageSent(
        ts=message.ts,
        message_id=message.id,
        sender=message.sender,
        recipients=message.recipients,
        kind=message.kind,
        task_id=message.task_id,
        tokens=message.tokens,
    )


def render_inbox(messages: Sequence[Message]) -> str:
    """The text injected into a prompt for ``messages`` ("" for none)::

    Messages for you:
    - from Nova (broadcast): the API is frozen
    - from Atlas (direct, task t3): please check the schema
    """
    if not messages:
        return ""
    lines = ["Messages for you:"]
    for m in messages:
        where = f", task {m.task_id}" if m.task_id else ""
        body = m.text.strip().replace("\n", "\n  ")
        lines.append(f"- from {m.sender} ({m.kind}{where}): {body}")
    return "\n".join(lines)

"""Communication between agents: a message bus, a shared context, and what they cost.

:class:`Comms` is what a run holds (and what the communication tools reach through
:attr:`phalanx.agents.tools.ToolContext.comms`): a :class:`~phalanx.comms.bus.MessageBus`
(broadcast and direct/mesh messages; pipeline hand-off is the plan's DAG) and a
:class:`~phalanx.comms.blackboard.SharedContext` (a versioned blackboard with provenance).
Before each prompt, :meth:`Comms.inbox_for` gives the text to inject into it: the agent's
pending messages and the shared-context entries it subscribed to.

Communication overhead (:meth:`Comms.overhead`, :func:`overhead_from_events`) is measured
from the events the bus and the board emit, so it can be recomputed from a journal:

- an agent's **message tokens**: for every :class:`~phalanx.events.MessageSent` it is a
  recipient of, the message text's estimated tokens (the event's ``tokens`` divided by its
  number of recipients). Sending costs the sender nothing here: writing a message is part
  of its model output, which is work.
- an agent's **context tokens**: the ``tokens`` of every
  :class:`~phalanx.events.ContextWritten` and :class:`~phalanx.events.ContextRead` it did
  (values written, entries read through tools, entries injected by its subscriptions).
- **communication tokens** = message tokens + context tokens; the **ratio** is
  communication tokens / work tokens, per agent and for the run (the sums), where work
  tokens are what the caller passes: the tokens of the agent's model calls. ``None`` when
  there were no work tokens.

Token counts are :func:`phalanx.agents.context.estimate_tokens` (about 4 characters a token).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..agents.context import estimate_tokens
from ..events import ContextRead, ContextWritten, Event, MessageSent
from .blackboard import DEFAULT_MAX_VALUE_CHARS, SharedContext
from .bus import Message, MessageBus, MessagePolicy, render_inbox

__all__ = [
    "AgentOverhead",
    "CommTally",
    "Comms",
    "OverheadReport",
    "broadcast",
    "mesh_communicate",
    "overhead_from_events",
]

CONTEXT_HEADER = "Shared context you follow (key (version, author): value):"


# ------------------------------------------------------------------------ overhead


@dataclass(frozen=True, kw_only=True)
class AgentOverhead:
    """One agent's communication tokens against its work tokens."""

    agent: str
    message_tokens: int = 0
    context_tokens: int = 0
    work_tokens: int = 0

    @property
    def comm_tokens(self) -> int:
        return self.message_tokens + self.context_tokens

    @property
    def ratio(self) -> float | None:
        """Communication tokens / work tokens (``None`` without work tokens)."""
        return self.comm_tokens / self.work_tokens if self.work_tokens else None


@dataclass(frozen=True, kw_only=True)
class OverheadReport:
    """Communication overhead per agent (sorted by name) and for the run."""

    agents: tuple[AgentOverhead, ...] = ()

    @property
    def message_tokens(self) -> int:
        return sum(a.message_tokens for a in self.agents)

    @property
    def context_tokens(self) -> int:
        return sum(a.context_tokens for a in self.agents)

    @property
    def comm_tokens(self) -> int:
        return self.message_tokens + self.context_tokens

    @property
    def work_tokens(self) -> int:
        return sum(a.work_tokens for a in self.agents)

    @property
    def ratio(self) -> float | None:
        """The run's communication tokens / work tokens (``None`` without work tokens)."""
        return self.comm_tokens / self.work_tokens if self.work_tokens else None

    def agent(self, name: str) -> AgentOverhead:
        """One agent's row (zeros for an agent the report does not know)."""
        return next((a for a in self.agents if a.agent == name), AgentOverhead(agent=name))


class CommTally:
    """Communication tokens per agent, folded from events (see the module's docstring)."""

    def __init__(self) -> None:
        self.message_tokens: dict[str, int] = {}
        self.context_tokens: dict[str, int] = {}

    def add(self, event: Event) -> None:
        """Count one event (events other than the three communication ones are ignored)."""
        if isinstance(event, MessageSent) and event.recipients:
            each = event.tokens // len(event.recipients)
            for name in event.recipients:
                self.message_tokens[name] = self.message_tokens.get(name, 0) + each
        elif isinstance(event, ContextRead | ContextWritten):
            self.context_tokens[event.agent] = self.context_tokens.get(event.agent, 0) + (
                event.tokens
            )

    def report(self, work_tokens_by_agent: Mapping[str, int]) -> OverheadReport:
        """The overhead against each agent's work tokens (agents from both sides)."""
        names = sorted({*self.message_tokens, *self.context_tokens, *work_tokens_by_agent})
        rows = tuple(
            AgentOverhead(
                agent=n,
                message_tokens=self.message_tokens.get(n, 0),
                context_tokens=self.context_tokens.get(n, 0),
                work_tokens=work_tokens_by_agent.get(n, 0),
            )
            for n in names
        )
        return OverheadReport(agents=rows)


def overhead_from_events(
    events: Iterable[Event], work_tokens_by_agent: Mapping[str, int]
) -> OverheadReport:
    """The overhead of a run from its events (e.g. read back from the journal)."""
    tally = CommTally()
    for event in events:
        tally.add(event)
    return tally.report(work_tokens_by_agent)


# ------------------------------------------------------------------------ the hub


def _no_event(event: Event) -> None:
    """The default ``emit``: drop the event."""


class Comms:
    """A run's communication hub: :attr:`bus`, :attr:`context` and their overhead.

    ``agents`` maps names to roles; ``max_value_chars`` caps a shared-context value. Every
    event of the bus and the board goes through ``emit`` (the run's event sink) after it is
    counted for :meth:`overhead`.
    """

    def __init__(
        self,
        agents: Mapping[str, str] | None = None,
        policy: MessagePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        emit: Callable[[Event], None] = _no_event,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
    ) -> None:
        self._emit = emit
        self._tally = CommTally()
        self._tasks: dict[str, str] = {}
        self.bus = MessageBus(agents, policy, clock=clock, emit=self._record)
        self.context = SharedContext(
            clock=clock, emit=self._record, max_value_chars=max_value_chars
        )

    def _record(self, event: Event) -> None:
        self._tally.add(event)
        self._emit(event)

    @property
    def communication_log(self) -> list[Message]:
        """Every message sent, in order."""
        return self.bus.communication_log

    # -- agents and their tasks --------------------------------------------------------
    def add_agent(self, name: str, role: str) -> None:
        """Register an agent that joined the run."""
        self.bus.add_agent(name, role)

    def remove_agent(self, name: str) -> list[Message]:
        """Unregister a retired agent; returns the messages it had not taken."""
        self._tasks.pop(name, None)
        return self.bus.remove_agent(name)

    def begin_task(self, agent: str, task_id: str) -> None:
        """Say which task ``agent`` works on now: its tool calls are logged under it."""
        self._tasks[agent] = task_id

    def task_of(self, agent: str) -> str:
        """The task ``agent`` works on, as last given to :meth:`begin_task` or
        :meth:`inbox_for` ("" if none)."""
        return self._tasks.get(agent, "")

    # -- prompts -----------------------------------------------------------------------
    def inbox_for(
        self, agent: str, task_id: str = "", subscriptions: Sequence[str] = ()
    ) -> tuple[str, int]:
        """The text to inject into ``agent``'s next prompt, and its tokens: its pending
        messages (now delivered) and the current entries of its ``subscriptions`` (key
        prefixes or ``"#tag"``). ``("", 0)`` when there is nothing. Also
        :meth:`begin_task` ``(agent, task_id)``."""
        self.begin_task(agent, task_id)
        parts = [render_inbox(self.bus.take(agent))]
        if subscriptions:
            entries = self.context.subscribed(subscriptions, agent=agent, task_id=task_id)
            if entries:
                parts.append(f"{CONTEXT_HEADER}\n{SharedContext.render(entries)}")
        text = "\n\n".join(p for p in parts if p)
        return text, estimate_tokens(text)

    # -- sending (the strategy's names) ------------------------------------------------
    def broadcast(self, sender: str, text: str, task_id: str | None = None) -> Message:
        """:meth:`MessageBus.broadcast`; the task defaults to the sender's current one."""
        return self.bus.broadcast(sender, text, self._task(sender, task_id))

    def direct(
        self, sender: str, to: str | Sequence[str], text: str, task_id: str | None = None
    ) -> Message:
        """:meth:`MessageBus.direct`; the task defaults to the sender's current one."""
        return self.bus.direct(sender, to, text, self._task(sender, task_id))

    mesh_communicate = direct
    """The strategy's name for :meth:`direct`."""

    def _task(self, agent: str, task_id: str | None) -> str:
        return self.task_of(agent) if task_id is None else task_id

    # -- overhead ----------------------------------------------------------------------
    @property
    def has_traffic(self) -> bool:
        """Whether any message or shared-context read/write has been counted yet."""
        return bool(self._tally.message_tokens or self._tally.context_tokens)

    def overhead(self, work_tokens_by_agent: Mapping[str, int]) -> OverheadReport:
        """Communication tokens / work tokens per agent and for the run (see the module's
        docstring for what each count holds)."""
        return self._tally.report(work_tokens_by_agent)


def broadcast(
    hub: Comms | MessageBus, sender: str, text: str, task_id: str | None = None
) -> Message:
    """The strategy's ``broadcast``: ``text`` from ``sender`` to every other agent."""
    if isinstance(hub, Comms):
        return hub.broadcast(sender, text, task_id)
    return hub.broadcast(sender, text, task_id or "")


def mesh_communicate(
    hub: Comms | MessageBus, sender: str, receiver: str, text: str, task_id: str | None = None
) -> Message:
    """The strategy's ``mesh_communicate``: a direct message from ``sender`` to ``receiver``,
    kept in the communication log."""
    if isinstance(hub, Comms):
        return hub.direct(sender, receiver, text, task_id)
    return hub.direct(sender, receiver, text, task_id or "")

"""Events: everything that happens in a run, as small frozen dataclasses with a ``type``.

The journal stores them; the status snapshot is a pure fold of them; sinks (line log, TUI,
web) consume them. Timestamps are seconds since the epoch on the run's clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from .cost import ZERO, Usage

__all__ = [
    "AgentInfo",
    "AgentJoined",
    "AgentRetired",
    "AgentWaiting",
    "Alert",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerChanged",
    "ContextRead",
    "ContextWritten",
    "Event",
    "EventSink",
    "MessageSent",
    "OutputRejected",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "ScaleDecision",
    "TaskFailed",
    "TaskInfo",
    "TaskSkipped",
    "TaskStolen",
    "TaskSucceeded",
    "ToolCalled",
    "event_from_dict",
    "event_to_dict",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted", "budget_exhausted", "error"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentInfo:
    name: str
    role: str
    provider: str
    style: str = "text"
    skills: tuple[str, ...] = ()
    context_tokens: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskInfo:
    id: str
    title: str
    category: str
    needs: tuple[str, ...] = ()
    role: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted:
    type: Literal["run_started"] = "run_started"
    ts: float
    run_id: str
    plan: str
    session: int  # 1 for the first start, +1 per resume
    policy: str
    simulated: bool
    agents: tuple[AgentInfo, ...]
    tasks: tuple[TaskInfo, ...]
    done: tuple[str, ...] = ()  # tasks already terminal from earlier sessions (resume)


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptStarted:
    type: Literal["attempt_started"] = "attempt_started"
    ts: float
    task_id: str
    attempt_id: int
    attempt_no: int
    agent: str
    max_turns: int = 0  # model calls this attempt may make (0: unknown)


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptFinished:
    type: Literal["attempt_finished"] = "attempt_finished"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    ok: bool
    duration: float
    usage: Usage = ZERO
    error_class: str | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    stale: bool = False  # a superseded attempt's late result: recorded, then ignored


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryScheduled:
    type: Literal["retry_scheduled"] = "retry_scheduled"
    ts: float
    task_id: str
    attempt_no: int  # the attempt that failed
    delay: float
    error_class: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSucceeded:
    type: Literal["task_succeeded"] = "task_succeeded"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    output: str = field(default="", repr=False)
    parsed: Any = field(default=None, repr=False)
    journal_exclude: ClassVar[tuple[str, ...]] = ("output", "parsed")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFailed:
    type: Literal["task_failed"] = "task_failed"
    ts: float
    task_id: str
    error_class: str
    error: str
    attempts: int
    status: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSkipped:
    type: Literal["task_skipped"] = "task_skipped"
    ts: float
    task_id: str
    upstream: str  # the failed task this one depended on (directly or through others)
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCalled:
    """An agent ran a tool inside an attempt (its arguments and result stay out of the log)."""

    type: Literal["tool_called"] = "tool_called"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    tool: str
    ok: bool
    turn: int
    error_code: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputRejected:
    """An answer did not parse in its style; the agent is asked again with the error."""

    type: Literal["output_rejected"] = "output_rejected"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    style: str
    error: str
    reask: int  # 1 for the first re-ask


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerChanged:
    """A circuit breaker moved: ``open`` pauses the agent (or every agent of a provider)."""

    type: Literal["breaker_changed"] = "breaker_changed"
    ts: float
    scope: Literal["agent", "provider"]
    key: str  # the agent's name or provider:model
    state: Literal["open", "half_open", "closed"]
    error_rate: float
    window: int  # attempts in the window the rate is over
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStolen:
    """An idle agent took a task queued on a busier agent."""

    type: Literal["task_stolen"] = "task_stolen"
    ts: float
    task_id: str
    from_agent: str
    to_agent: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentJoined:
    """The autoscaler added an agent."""

    type: Literal["agent_joined"] = "agent_joined"
    ts: float
    agent: AgentInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentRetired:
    type: Literal["agent_retired"] = "agent_retired"
    ts: float
    agent: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ScaleDecision:
    """What the autoscaler decided, why, and the numbers behind it."""

    type: Literal["scale_decision"] = "scale_decision"
    ts: float
    action: Literal["add", "retire", "hold"]
    role: str
    before: int
    after: int
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentWaiting:
    """An agent holds an attempt but may not send yet (rate limit) until ``until``."""

    type: Literal["agent_waiting"] = "agent_waiting"
    ts: float
    agent: str
    task_id: str
    reason: str  # "rate limit"
    key: str  # provider:model
    until: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Alert:
    """Something an operator should see: a budget reached, a breaker open, a warning."""

    type: Literal["alert"] = "alert"
    ts: float
    kind: str  # budget | rate_limit | breaker | overhead | hook | ...
    message: str
    agent: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageSent:
    """An agent sent a message (the communication log; the text stays out of the journal).

    ``tokens`` is the message's estimated tokens times the number of recipients: every
    recipient pays to read it."""

    type: Literal["message_sent"] = "message_sent"
    ts: float
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    kind: Literal["broadcast", "direct"]
    task_id: str = ""
    tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", tuple(self.recipients))  # a list from JSON


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextWritten:
    """An agent wrote a shared-context (blackboard) entry; ``tokens``: the value's size."""

    type: Literal["context_written"] = "context_written"
    ts: float
    key: str
    version: int
    agent: str
    task_id: str = ""
    tokens: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextRead:
    """An agent read shared-context entries: through a tool (``get``/``query``) or injected
    into its prompt by a subscription. ``tokens``: the size of what it was shown."""

    type: Literal["context_read"] = "context_read"
    ts: float
    keys: tuple[str, ...]
    agent: str
    task_id: str = ""
    tokens: int = 0
    via: Literal["get", "query", "subscription"] = "get"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))  # a list from JSON


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished:
    type: Literal["run_finished"] = "run_finished"
    ts: float
    status: RunStatus
    reason: str = ""


Event = (
    RunStarted
    | AttemptStarted
    | AttemptFinished
    | RetryScheduled
    | TaskSucceeded
    | TaskFailed
    | TaskSkipped
    | ToolCalled
    | OutputRejected
    | BreakerChanged
    | TaskStolen
    | AgentJoined
    | AgentRetired
    | ScaleDecision
    | AgentWaiting
    | Alert
    | MessageSent
    | ContextWritten
    | ContextRead
    | RunFinished
)

_TYPES: dict[str, type[Any]] = {
    next(f.default for f in dataclasses.fields(c) if f.name == "type"): c  # type: ignore[misc]
    for c in (
        RunStarted,
        AttemptStarted,
        AttemptFinished,
        RetryScheduled,
        TaskSucceeded,
        TaskFailed,
        TaskSkipped,
        ToolCalled,
        OutputRejected,
        BreakerChanged,
        TaskStolen,
        AgentJoined,
        AgentRetired,
        ScaleDecision,
        AgentWaiting,
        Alert,
        MessageSent,
        ContextWritten,
        ContextRead,
        RunFinished,
    )
}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    c: tuple(f.name for f in dataclasses.fields(c)) for c in _TYPES.values()
}


class EventSink(Protocol):
    """Anything that consumes events. ``emit`` must be cheap and must not raise."""

    def emit(self, event: Event) -> None: ...


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict (the journal's form: large payloads are stored elsewhere)."""
    exclude = getattr(event, "journal_exclude", ())
    out: dict[str, Any] = {}
    for name in _FIELDS[type(event)]:
        if name in exclude:
            continue
        value = getattr(event, name)
        if isinstance(value, Usage):
            value = value.to_dict()
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        elif isinstance(value, AgentInfo):
            value = dataclasses.asdict(value)
        out[name] = value
    return out


def event_from_dict(d: Mapping[str, Any]) -> Event:
    cls = _TYPES[d["type"]]
    kw = dict(d)
    if cls is RunStarted:
        kw["agents"] = tuple(
            AgentInfo(**{**a, "skills": tuple(a.get("skills", ()))}) for a in kw["agents"]
        )
        kw["tasks"] = tuple(
            TaskInfo(**{**t, "needs": tuple(t.get("needs", ()))}) for t in kw["tasks"]
        )
        kw["done"] = tuple(kw.get("done", ()))
    elif cls is AttemptFinished:
        kw["usage"] = Usage.from_dict(kw.get("usage"))
    elif cls is AgentJoined:
        a = kw["agent"]
        kw["agent"] = AgentInfo(**{**a, "skills": tuple(a.get("skills", ()))})
    event: Event = cls(**kw)
    return event

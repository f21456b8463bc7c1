"""Events: everything that happens in a run, as small frozen dataclasses with a ``type``.

The journal stores them; the status snapshot is a pure fold of them; sinks (line log, TUI,
web) consume them. Timestamps are seconds since the epoch on the run's clock.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ._util import jbool as _bool
from ._util import jnum as _num
from ._util import jopt_num as _opt_num
from ._util import jopt_str as _opt_str
from ._util import jstr as _str
from .cost import ZERO, Usage
from .exceptions import ErrorClass

__all__ = [
    "AgentInfo",
    "AgentJoined",
    "AgentPlaced",
    "AgentRetired",
    "AgentState",
    "AgentTurn",
    "AgentWaiting",
    "Alert",
    "AnswerContinued",
    "ApprovalDecided",
    "ApprovalRequested",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerChanged",
    "CallRetried",
    "ContextRead",
    "ContextWritten",
    "Event",
    "EventSink",
    "InDoubtAction",
    "LoopResumed",
    "MessageSent",
    "OutputRejected",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "ScaleDecision",
    "TaskFailed",
    "TaskInfo",
    "TaskSkipped",
    "TaskState",
    "TaskStolen",
    "TaskSucceeded",
    "TasksAdded",
    "ToolCalled",
    "ToolInDoubt",
    "ToolStarted",
    "event_from_dict",
    "event_to_dict",
    "event_to_json",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted", "budget_exhausted", "error"]
# a task in the runtime's records: pending until it is ready and dispatched
TaskState = Literal[
    "pending",
    "queued",
    "running",
    "retrying",
    "awaiting_approval",
    "succeeded",
    "failed",
    "skipped",
]
AgentState = Literal["idle", "running", "waiting", "paused", "failed", "retired"]


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
    grows: bool = False  # may add tasks while it runs (a foreach template, a spawner)


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
    # false when every model of the run is simulated with zero latency: its times measure
    # nothing, so no speedup is claimed (phalanx.status.speedup)
    timed: bool = True


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
    error_class: ErrorClass | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    stale: bool = False  # a superseded attempt's late result: recorded, then ignored
    # seconds its model calls waited for capacity (rate-limit permits, a provider's pool or
    # concurrency limit): queue wait, not counted in ``duration`` (the service time)
    queued: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryScheduled:
    type: Literal["retry_scheduled"] = "retry_scheduled"
    ts: float
    task_id: str
    attempt_no: int  # the attempt that failed
    delay: float
    error_class: ErrorClass


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
    error_class: ErrorClass
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
class TasksAdded:
    """The plan grew: a foreach template was expanded (``kind`` foreach: ``group`` is the
    template, ``by_task``/``by_attempt`` the upstream result it was expanded over) or an
    agent spawned subtasks (``kind`` spawn: ``group`` and ``by_task`` the spawning task,
    ``by_attempt`` its attempt, ``call`` the spawn call's place in its loop, ``TURN.INDEX``).
    ``tasks``: each new task as plan-file data, with its ``depth``; ``joins``: tasks that now
    also need every new one (the template; a spawn's collector). One event, journaled with
    the upstream's success (foreach) or right after the spawn call's committed start, so a
    resume rebuilds exactly this DAG. ``result``: what the spawn call answered at once (a
    call made again at the same place gets it back; a waiting call adds the results)."""

    type: Literal["tasks_added"] = "tasks_added"
    ts: float
    kind: Literal["foreach", "spawn"]
    group: str
    by_task: str
    by_attempt: int
    tasks: tuple[Mapping[str, Any], ...]
    joins: tuple[str, ...] = ()
    call: str = ""
    wait: bool = False
    items: int = 0
    result: str = ""

    def __post_init__(self) -> None:  # lists from JSON
        object.__setattr__(self, "tasks", tuple(dict(t) for t in self.tasks))
        object.__setattr__(self, "joins", tuple(self.joins))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(str(t["id"]) for t in self.tasks)


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentTurn:
    """The model asked for tools (model call ``turn`` of the attempt): what it said and the
    calls it made, kept (redacted) in the journal's ``agent_turns`` table so that a resumed
    attempt can continue its loop. The event log keeps only the tool names."""

    type: Literal["agent_turn"] = "agent_turn"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    turn: int
    tools: tuple[str, ...] = ()  # the tools called, in order
    text: str = field(default="", repr=False)
    calls: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)  # id, name, arguments
    journal_exclude: ClassVar[tuple[str, ...]] = ("text", "calls")


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolStarted:
    """A tool call begins (call ``index`` of model call ``turn``). For a tool that writes
    (``writes``: anything but the read-only tools) the journal commits this record before
    the tool runs, so a crash during the call leaves a start without a result: in doubt."""

    type: Literal["tool_started"] = "tool_started"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    tool: str
    turn: int
    index: int = 0
    call_id: str = ""
    args_digest: str = ""  # sha256 (16 hex) of the arguments as JSON, redacted
    writes: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCalled:
    """An agent's tool call ended (the result's text is kept, redacted and cut to the
    tool's ``max_output``, in the journal's ``tool_calls`` table, not in the event log)."""

    type: Literal["tool_called"] = "tool_called"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    tool: str
    ok: bool
    turn: int
    error_code: str | None = None
    index: int = 0
    call_id: str = ""
    result_digest: str = ""  # sha256 (16 hex) of the result's text
    duration: float = 0.0
    error: str | None = None  # the first line of a failed call's result
    content: str = field(default="", repr=False)
    journal_exclude: ClassVar[tuple[str, ...]] = ("content",)


InDoubtAction = Literal["rerun", "ask", "fail"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolInDoubt:
    """A resumed attempt found a tool call of ``from_attempt`` that started and has no
    result, and handled it: ``rerun`` (a read-only tool, or ``retry.on_in_doubt: rerun``),
    ``ask`` (the model is told the outcome is unknown) or ``fail`` (the attempt fails)."""

    type: Literal["tool_in_doubt"] = "tool_in_doubt"
    ts: float
    task_id: str
    attempt_id: int  # the resumed attempt
    agent: str
    from_attempt: int  # the interrupted attempt the call belongs to
    tool: str
    turn: int
    index: int = 0
    call_id: str = ""
    args_digest: str = ""
    action: InDoubtAction = "ask"
    content: str = field(default="", repr=False)  # what the model is told (``ask``)
    journal_exclude: ClassVar[tuple[str, ...]] = ("content",)


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopResumed:
    """An attempt continues the agent loop of an interrupted one (``from_attempt``): its
    ``turns`` recorded model turns and ``results`` recorded tool results are replayed to the
    model as messages, not run again; ``in_doubt`` calls had a start and no result."""

    type: Literal["loop_resumed"] = "loop_resumed"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    from_attempt: int
    turns: int
    results: int
    in_doubt: int = 0


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
class CallRetried:
    """A model call inside an attempt failed with a retryable class and is sent again, with
    the same messages, after ``delay`` seconds (never less than its Retry-After): the turns
    and tools before it are kept (``retry.call_attempts``)."""

    type: Literal["call_retried"] = "call_retried"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    turn: int  # the model call of the attempt that failed (1 is the first)
    retry: int  # 1 for the call's first retry
    error_class: ErrorClass
    delay: float
    status: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AnswerContinued:
    """An answer stopped at ``max_tokens`` and was not given up (``retry.truncation``):
    ``mode`` ``continue`` sent continuation call ``n`` with the partial answer so far
    (``chars`` long); ``retry`` sent the call again with ``factor`` times the room."""

    type: Literal["answer_continued"] = "answer_continued"
    ts: float
    task_id: str
    attempt_id: int
    agent: str
    turn: int  # the model call of the attempt whose answer was cut (1 is the first)
    mode: Literal["continue", "retry"]
    n: int  # 1 for the first continuation (or the retry)
    chars: int = 0  # the partial answer's length so far
    factor: int = 1  # the room the call is sent with, as a multiple of max_tokens


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
class AgentPlaced:
    """Where a remote engine hosts an agent: its host (a Ray actor), node and process.
    Emitted when the host starts, when it is replaced and when the agent moves."""

    type: Literal["agent_placed"] = "agent_placed"
    ts: float
    agent: str
    host: str
    node: str
    pid: int
    reason: str = "started"


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
class ApprovalRequested:
    """A ready task waits for a person's decision (``approval: required``, or a
    ``before_task`` hook asked): nothing that needs it starts until someone approves it
    (``phalanx approve RUN TASK``); the rest of the run goes on. ``since``: when the wait
    began (a resumed run keeps the first session's); ``deadline``: when
    ``approval_timeout`` ends it (``on_timeout``: fail or skip), None without one."""

    type: Literal["approval_requested"] = "approval_requested"
    ts: float
    task_id: str
    reason: str  # "approval: required" or what the hook said
    by: str = "plan"  # "plan" or "hook:NAME"
    since: float = 0.0
    deadline: float | None = None
    on_timeout: Literal["fail", "skip"] = "fail"


@dataclass(frozen=True, kw_only=True, slots=True)
class ApprovalDecided:
    """A decision on a task awaiting approval: written by whoever decided (``phalanx
    approve``, the dashboard, the Python API: ``by``), or by the run when
    ``approval_timeout`` passed (``decision`` ``timed_out``). The first decision on a task
    wins (the journal's ``approvals`` table holds it)."""

    type: Literal["approval_decided"] = "approval_decided"
    ts: float
    task_id: str
    decision: Literal["approved", "rejected", "timed_out"]
    reason: str = ""
    by: str = ""


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
    | TasksAdded
    | AgentTurn
    | ToolStarted
    | ToolCalled
    | ToolInDoubt
    | LoopResumed
    | OutputRejected
    | CallRetried
    | AnswerContinued
    | BreakerChanged
    | TaskStolen
    | AgentJoined
    | AgentRetired
    | AgentPlaced
    | ScaleDecision
    | AgentWaiting
    | ApprovalRequested
    | ApprovalDecided
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
        TasksAdded,
        AgentTurn,
        ToolStarted,
        ToolCalled,
        ToolInDoubt,
        LoopResumed,
        OutputRejected,
        CallRetried,
        AnswerContinued,
        BreakerChanged,
        TaskStolen,
        AgentJoined,
        AgentRetired,
        AgentPlaced,
        ScaleDecision,
        AgentWaiting,
        ApprovalRequested,
        ApprovalDecided,
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
# What the journal keeps of each event (``journal_exclude`` left out), and a getter of those
# fields' values as one tuple; which of them may need converting (usage, agent/task infos).
_JOURNAL_FIELDS: dict[type[Any], tuple[str, ...]] = {
    c: tuple(n for n in names if n not in getattr(c, "journal_exclude", ()))
    for c, names in _FIELDS.items()
}
_JOURNAL_GET: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    c: operator.attrgetter(*names) for c, names in _JOURNAL_FIELDS.items()
}
_RUN_STARTED_HEAD = operator.attrgetter(*_JOURNAL_FIELDS[RunStarted][:-3])
_CONVERTED: dict[type[Any], tuple[str, ...]] = {
    c: tuple(
        f.name
        for f in dataclasses.fields(c)
        if f.name in _JOURNAL_FIELDS[c]
        and any(k in str(f.type) for k in ("Usage", "AgentInfo", "TaskInfo"))
    )
    for c in _TYPES.values()
}
_INFO_FIELDS: dict[type[Any], tuple[str, ...]] = {
    c: tuple(f.name for f in dataclasses.fields(c)) for c in (AgentInfo, TaskInfo)
}
_INFO_GET: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    c: operator.attrgetter(*names) for c, names in _INFO_FIELDS.items()
}


class EventSink(Protocol):
    """Anything that consumes events. ``emit`` must be cheap and must not raise."""

    def emit(self, event: Event) -> None: ...


def _info_dict(value: AgentInfo | TaskInfo) -> dict[str, Any]:
    cls = type(value)
    return dict(zip(_INFO_FIELDS[cls], _INFO_GET[cls](value), strict=True))


def _jsonable(value: Any) -> Any:
    """A field's value in the journal's form: usage and agent/task infos as dicts."""
    if isinstance(value, Usage):
        return value.to_dict()
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return [_info_dict(v) if type(v) in _INFO_FIELDS else dataclasses.asdict(v) for v in value]
    if isinstance(value, AgentInfo):
        return _info_dict(value)
    return value


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict (the journal's form: large payloads are stored elsewhere)."""
    cls = type(event)
    out = dict(zip(_JOURNAL_FIELDS[cls], _JOURNAL_GET[cls](event), strict=True))
    for name in _CONVERTED[cls]:
        out[name] = _jsonable(out[name])
    return out


def _json_default(value: Any) -> Any:
    """What JSON cannot encode by itself: usage and infos as dicts, anything else as text."""
    if isinstance(value, Usage):
        return value.to_dict()
    if type(value) in _INFO_FIELDS:
        return _info_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _make_encode() -> Callable[[Any], str]:
    """The C encoder, built once (``JSONEncoder.encode`` builds it again on every call)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
    encoder = make(
        None, _json_default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, True,
    )  # fmt: skip
    return lambda value: "".join(encoder(value, 0))


_encode = _make_encode()


def event_to_json(event: Event) -> str:
    """The journal's text of an event: exactly ``json.dumps(event_to_dict(event),
    separators=(",", ":"), default=str)``, made without the intermediate conversions.
    The three events every attempt writes have hand-made encoders (a few times faster);
    a value of an unexpected type sends them through the general one."""
    fast = _FAST.get(type(event))
    if fast is not None:
        try:
            return fast(event)
        except (TypeError, ValueError):
            pass
    cls = type(event)
    return _encode(dict(zip(_JOURNAL_FIELDS[cls], _JOURNAL_GET[cls](event), strict=True)))


def _attempt_started_json(e: AttemptStarted) -> str:
    aid, no, turns = e.attempt_id, e.attempt_no, e.max_turns
    if type(aid) is not int or type(no) is not int or type(turns) is not int:
        raise ValueError(e)  # exactly int (checked): an f-string writes them as JSON does
    return (
        f'{{"type":"attempt_started","ts":{_num(e.ts)},"task_id":{_str(e.task_id)},'
        f'"attempt_id":{aid},"attempt_no":{no},'
        f'"agent":{_str(e.agent)},"max_turns":{turns}}}'
    )


def _usage_json(u: Usage) -> str:
    if (
        type(u) is Usage
        and type(u.input_tokens) is int
        and type(u.output_tokens) is int
        and type(u.cache_read_tokens) is int
        and type(u.cache_write_tokens) is int
    ):
        return (  # the four are exactly int (checked): an f-string writes them as JSON does
            f'{{"input_tokens":{u.input_tokens},"output_tokens":{u.output_tokens},'
            f'"cache_read_tokens":{u.cache_read_tokens},'
            f'"cache_write_tokens":{u.cache_write_tokens},"cost_usd":{_opt_num(u.cost_usd)}}}'
        )
    raise TypeError(u)


_NO_ERROR = ',"error_class":null,"error":null,"status":null,"retry_after":null,'


def _attempt_finished_json(e: AttemptFinished) -> str:
    if e.error_class is None and e.error is None and e.status is None and e.retry_after is None:
        error = _NO_ERROR  # the common case, an attempt that worked
    else:
        error = (
            f',"error_class":{_opt_str(e.error_class)},"error":{_opt_str(e.error)},'
            f'"status":{_opt_num(e.status)},"retry_after":{_opt_num(e.retry_after)},'
        )
    aid = e.attempt_id
    if type(aid) is not int:
        raise ValueError(e)
    return (
        f'{{"type":"attempt_finished","ts":{_num(e.ts)},"task_id":{_str(e.task_id)},'
        f'"attempt_id":{aid},"agent":{_str(e.agent)},"ok":{_bool(e.ok)},'
        f'"duration":{_num(e.duration)},"usage":{_usage_json(e.usage)}{error}'
        f'"stale":{_bool(e.stale)},"queued":{_num(e.queued)}}}'
    )


def _task_succeeded_json(e: TaskSucceeded) -> str:
    aid = e.attempt_id
    if type(aid) is not int:
        raise ValueError(e)
    return (
        f'{{"type":"task_succeeded","ts":{_num(e.ts)},"task_id":{_str(e.task_id)},'
        f'"attempt_id":{aid},"agent":{_str(e.agent)}}}'
    )


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
    elif cls is AgentTurn:
        kw["tools"] = tuple(kw.get("tools", ()))
    if kw.get("error_class") is not None:
        kw["error_class"] = ErrorClass(kw["error_class"])
    elif cls is AgentJoined:
        a = kw["agent"]
        kw["agent"] = AgentInfo(**{**a, "skills": tuple(a.get("skills", ()))})
    event: Event = cls(**kw)
    return event


def _task_info_json(t: TaskInfo) -> str:
    if type(t) is not TaskInfo or type(t.needs) not in (tuple, list):
        raise TypeError(t)  # (a set of needs, say: the general encoder writes it as text)
    needs = ",".join([_str(n) for n in t.needs])
    return (
        f'{{"id":{_str(t.id)},"title":{_str(t.title)},"category":{_str(t.category)},'
        f'"needs":[{needs}],"role":{_opt_str(t.role)},"grows":{_bool(t.grows)}}}'
    )


def _run_started_json(e: RunStarted) -> str:
    """A run's start, its tasks (thousands) each written by :func:`_task_info_json`, the
    rest by the general encoder."""
    if _JOURNAL_FIELDS[RunStarted][-3:] != ("tasks", "done", "timed"):
        raise TypeError(e)  # pragma: no cover - the fields moved: the general encoder
    head = _encode(dict(zip(_JOURNAL_FIELDS[RunStarted][:-3], _RUN_STARTED_HEAD(e), strict=True)))
    tail = _encode({"done": e.done, "timed": e.timed})
    tasks = ",".join([_task_info_json(t) for t in e.tasks])
    return f'{head[:-1]},"tasks":[{tasks}],{tail[1:]}'


_FAST: dict[type[Any], Callable[[Any], str]] = {
    RunStarted: _run_started_json,
    AttemptStarted: _attempt_started_json,
    AttemptFinished: _attempt_finished_json,
    TaskSucceeded: _task_succeeded_json,
}

"""Plans: tasks by category in a dependency DAG, the agents that will do them, and limits.

A :class:`Plan` is a validated value: every task id is unique, every dependency exists, the
graph has no cycle, and every task can be served by some agent. Plans come from YAML files
(:func:`load_plan`), from dicts (:meth:`Plan.from_dict`), or from Python (:meth:`Plan.build`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..agents.mcp import MCP_PREFIX, McpServer
from ..agents.spec import CATEGORIES, AgentSpec, Category, assign_names
from ..cost import Price

if TYPE_CHECKING:
    from ..agents.styles import Style
from ..exceptions import PlanError, UsageError
from ..ids import AgentName, TaskId
from .config import AutoscaleConfig, BreakerConfig, MessagePolicy, RateLimit

__all__ = [
    "DEFAULT_CALL_ATTEMPTS",
    "DEFAULT_MAX_CONTINUATIONS",
    "DEFAULT_MAX_PROMPT_TOKENS",
    "DEFAULT_PROVIDER",
    "POLICIES",
    "TRUNCATION_MODES",
    "Commands",
    "EngineConfig",
    "Limits",
    "Plan",
    "RetryConfig",
    "Task",
    "assign_agents",
    "decompose_project",
    "style_of",
]

DEFAULT_PROVIDER = "local:smollm2"  # the embedded model: a plan runs with nothing else
POLICIES = ("round_robin", "least_loaded", "best_fit", "llm")
MAX_AGENTS = 100_000
# limits.max_prompt_tokens by default: 200,000 estimated tokens (about 4 characters a token),
# the largest context window common to today's hosted models (Claude's standard window;
# OpenAI's o-series); a prompt above it would be refused by most of them anyway. A plan on
# a model with a larger window raises it; there is no "no limit" (docs/guarantees.md).
DEFAULT_MAX_PROMPT_TOKENS = 200_000
# retry.call_attempts by default: a model call after an attempt's first is tried 3 times
# (the first and two retries, after ~0.25-0.5 s and ~0.5-1 s with the default backoff, or
# the provider's Retry-After) before its attempt fails and is retried as a whole
DEFAULT_CALL_ATTEMPTS = 3
# retry.max_continuations by default: an answer cut at max_tokens is continued at most 3
# times (4 calls, about 4x the room) before the attempt fails as truncated
DEFAULT_MAX_CONTINUATIONS = 3
TRUNCATION_MODES = ("continue", "retry", "fail")
# a foreach template's bound on items (Task.max_items) and the run's bounds on growth
# (limits.max_tasks in all, limits.max_depth of nested spawns, limits.max_width per spawn)
DEFAULT_MAX_ITEMS = 100
DEFAULT_MAX_TASKS = 1000
DEFAULT_MAX_DEPTH = 3
DEFAULT_MAX_WIDTH = 20
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# The plan-file layer above this module (phalanx.plan.file) registers its parser here when
# phalanx.plan is imported (always before any of its modules), so Plan.from_dict works
# without this module importing the layer that imports it.
_PARSER: list[Callable[..., Plan]] = []


@dataclass(frozen=True, kw_only=True, slots=True)
class Task:
    """One unit of work. ``needs`` are the tasks whose results it receives."""

    id: TaskId
    prompt: str
    category: Category = "other"
    title: str = ""
    needs: tuple[TaskId, ...] = ()
    role: str | None = None
    skills: frozenset[str] = frozenset()
    priority: int = 0
    max_attempts: int = 3
    style: str | None = None
    timeout: float | None = None  # seconds per model call
    max_turns: int | None = None  # model calls per attempt (tools, re-asks); agent default 8
    agent: str | None = None  # assigned to this agent (idle agents may still steal it)
    # a typed answer: a pydantic model class or a JSON Schema (a plan's ``schema:``); wins
    # over the agent's style and output type (see style_of)
    output_type: Any = field(default=None, hash=False)
    # ``"required"``: the task waits for a person's decision once it is ready (phalanx
    # approve RUN TASK); ``approval_timeout`` (seconds) bounds any such wait, also one a
    # ``before_task`` hook asked for; ``approval_on_timeout`` then fails or skips the task
    approval: Literal["required"] | None = None
    approval_timeout: float | None = None
    approval_on_timeout: Literal["fail", "skip"] = "fail"
    # a template expanded at run time: one task per item of a list in an upstream task's
    # parsed answer (``UPSTREAM.FIELD``, FIELD a dotted path); ids ``ID[0]``.. or by
    # ``foreach_key`` (a field of each item); more than ``max_items`` items fail the task.
    # The upstream task is one of its needs (added when missing).
    foreach: str | None = None
    foreach_key: str | None = None
    max_items: int = DEFAULT_MAX_ITEMS

    def __post_init__(self) -> None:
        if self.foreach:
            source = TaskId(self.foreach.partition(".")[0])
            if source not in self.needs:
                object.__setattr__(self, "needs", (*self.needs, source))

    @property
    def label(self) -> str:
        return self.title or self.id

    @property
    def foreach_source(self) -> tuple[TaskId, str] | None:
        """``(upstream task, field path)`` of a template, None for a plain task."""
        if not self.foreach:
            return None
        source, _, path = self.foreach.partition(".")
        return TaskId(source), path


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Run limits. Reaching a budget stops new work and ends the run ``budget_exhausted``."""

    max_agents: int | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    max_wall_seconds: float | None = None
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)  # key: provider[:model]
    work_stealing: bool = True  # idle agents take tasks queued on busier ones
    start_agents: int | None = None  # per role; set => the autoscaler grows and shrinks roles
    comm_overhead_warning: float = 0.25  # alert when communication tokens / work tokens pass it
    lease_seconds: float | None = None  # an attempt without a result by then is reassigned
    # the autoscaler clones a role beyond start_agents only if its spec's last eval pass rate
    # (phalanx.plan.library) is at least this; a spec with no eval is held too (docs/eval.md)
    min_eval_score: float | None = None
    # no model call is sent with a prompt estimated above this (messages, tool calls and tool
    # definitions so far, ~4 characters a token); the attempt fails as context_length instead
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
    # a plan that grows (foreach, spawn_tasks): the most tasks in all, the deepest nesting of
    # spawned subtasks (a plan's tasks are depth 0), the most subtasks one spawn call adds
    max_tasks: int = DEFAULT_MAX_TASKS
    max_depth: int = DEFAULT_MAX_DEPTH
    max_width: int = DEFAULT_MAX_WIDTH

    def __post_init__(self) -> None:
        n = self.max_prompt_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PlanError(
                f"must be a positive whole number of tokens, got {n!r}",
                field="limits.max_prompt_tokens",
            )


IN_DOUBT_ACTIONS = ("ask", "rerun", "fail")  # retry.on_in_doubt


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryConfig:
    """Backoff between attempts: equal jitter in [d/2, d], d = min(cap, base * 2**(n-1)),
    never shorter than a provider's Retry-After.

    ``call_attempts``: tries of one model call inside an attempt (the first included) when
    it fails with a retryable class (429, 529, 5xx, timeout, connection, cut stream) after
    the attempt's first call: the same messages are sent again after the same backoff, so
    the turns and tools already done are kept. When they are spent the attempt fails and
    is retried as a whole (``max_attempts``). A failure of an attempt's first call goes
    straight to that attempt retry: nothing was done yet. 1 turns call retries off.

    ``on_in_doubt``: what a resumed attempt does with a call of a writing tool or command
    that started before a crash and has no recorded result (read-only tools are simply run
    again): ``ask`` (default) tells the model the outcome is unknown and that it must check
    before acting again; ``rerun`` runs it again; ``fail`` fails the attempt, naming it.

    ``truncation``: what an answer cut at ``max_tokens`` gets. ``continue`` (default): a
    continuation call is sent with the partial answer ("continue exactly where you stopped")
    and the parts are joined, up to ``max_continuations`` calls; ``retry``: the call is sent
    once more with twice the room (``max_tokens``); ``fail``: the attempt fails as
    ``truncated``. An answer cut inside a tool call is never continued as text: it is retried
    with twice the room (``continue`` and ``retry``). Each call is journaled
    (``AnswerContinued``) and charged."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    call_attempts: int = DEFAULT_CALL_ATTEMPTS
    on_in_doubt: Literal["ask", "rerun", "fail"] = "ask"
    truncation: Literal["continue", "retry", "fail"] = "continue"
    max_continuations: int = DEFAULT_MAX_CONTINUATIONS

    def __post_init__(self) -> None:
        for name, n, what in (
            ("call_attempts", self.call_attempts, "tries"),
            ("max_continuations", self.max_continuations, "calls"),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise PlanError(
                    f"must be a positive whole number of {what}, got {n!r}",
                    field=f"retry.{name}",
                )
        if self.truncation not in TRUNCATION_MODES:
            raise PlanError(
                f"must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation!r}",
                field="retry.truncation",
            )
        if self.on_in_doubt not in IN_DOUBT_ACTIONS:
            raise PlanError(
                f"must be one of {', '.join(IN_DOUBT_ACTIONS)}, got {self.on_in_doubt!r}",
                field="retry.on_in_doubt",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RouterConfig:
    """The router model of policy ``llm``."""

    provider: str | None = None  # default: the plan's provider
    timeout: float = 10.0  # seconds before a routing call is abandoned
    concurrency: int = 4  # routing calls at once


@dataclass(frozen=True, kw_only=True, slots=True)
class Commands:
    """What ``run_command`` may start: executables by name, and the longest it may run;
    where it runs (``sandbox``: bubblewrap, or ``none``), whether it may reach the network,
    and the CPU seconds (default: the timeout) and memory (MiB, 0: no limit) each process
    of a command may use."""

    allow: tuple[str, ...] = ()
    timeout: float = 60.0
    sandbox: Literal["bwrap", "none"] = "bwrap"
    network: bool = False
    cpu: float | None = None
    memory: int = 4096


ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Where agents run: ``local`` (coroutines of this process) or ``ray`` (agent hosts,
    each a Ray actor running many agents, spread over a Ray cluster's nodes)."""

    kind: str = "local"
    address: str | None = None  # ray: None starts Ray here; "auto", "HOST:PORT", "ray://..."
    hosts: int | None = None  # agent hosts; default: one per CPU of the cluster
    agents_per_host: int | None = None  # default: the agents spread evenly over the hosts
    host_cpus: float = 1.0  # CPUs each host reserves
    roles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # per role:
    # resources its hosts request, e.g. {num_cpus: 2, num_gpus: 1} for a local model
    max_restarts: int = 3  # a dead host is replaced at most this many times
    num_cpus: int | None = None  # CPUs of a Ray that phalanx starts itself


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A validated plan. Build with :meth:`build`, :meth:`from_dict` or :func:`load_plan`."""

    name: str
    agents: tuple[AgentSpec, ...]
    tasks: tuple[Task, ...]
    limits: Limits = Limits()
    retry: RetryConfig = RetryConfig()
    policy: str = "best_fit"
    provider: str | None = None  # default for agents that name none
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)  # overrides cost.PRICES
    hooks: tuple[Any, ...] = field(default=(), compare=False)  # run-level hooks
    workspace: str | None = None  # the agents' sandbox (relative to the plan file)
    commands: Commands = Commands()
    env_pass: tuple[str, ...] = ()  # env.pass: variables children get past the secret rule
    isolation: str = "none"  # "worktree": each agent in its own git worktree and branch
    styles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the plan's own
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    autoscale: AutoscaleConfig | None = None  # on when set (or limits.start_agents is)
    messaging: MessagePolicy = field(default_factory=MessagePolicy)
    router: RouterConfig = field(default_factory=RouterConfig)  # for policy "llm"
    engine: EngineConfig = field(default_factory=EngineConfig)
    mcp: tuple[McpServer, ...] = ()  # MCP tool servers (phalanx.agents.mcp)
    source: str | None = None  # the file it came from, for messages
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        agents: Sequence[AgentSpec],
        tasks: Sequence[Task],
        name: str = "plan",
        limits: Limits | None = None,
        retry: RetryConfig | None = None,
        policy: str = "best_fit",
        provider: str | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        prices: Mapping[str, Price] | None = None,
        hooks: Sequence[Any] = (),
        workspace: str | None = None,
        commands: Commands | None = None,
        env_pass: Sequence[str] = (),
        isolation: str = "none",
        styles: Mapping[str, Mapping[str, Any]] | None = None,
        breaker: BreakerConfig | None = None,
        autoscale: AutoscaleConfig | None = None,
        messaging: MessagePolicy | None = None,
        router: RouterConfig | None = None,
        engine: EngineConfig | None = None,
        mcp: Sequence[McpServer] = (),
        source: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> Plan:
        plan = cls(
            name=name,
            agents=tuple(assign_names(agents)),
            tasks=tuple(tasks),
            limits=limits or Limits(),
            retry=retry or RetryConfig(),
            policy=policy,
            provider=provider,
            providers=dict(providers or {}),
            prices=dict(prices or {}),
            hooks=tuple(hooks),
            workspace=workspace,
            commands=commands or Commands(),
            env_pass=tuple(env_pass),
            isolation=isolation,
            styles=dict(styles or {}),
            breaker=breaker or BreakerConfig(),
            autoscale=autoscale,
            messaging=messaging or MessagePolicy(),
            router=router or RouterConfig(),
            engine=engine or EngineConfig(),
            mcp=tuple(mcp),
            source=source,
            raw=raw,
        )
        plan.validate()
        return plan

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Plan:
        """A plan from plan-file data (what YAML gives), validated like a file."""
        assert _PARSER, "phalanx.plan.file registers the parser when phalanx.plan is imported"
        return _PARSER[0](data, source=source)

    # -- queries ---------------------------------------------------------------------------
    @property
    def task_map(self) -> dict[TaskId, Task]:
        return {t.id: t for t in self.tasks}

    def dependants(self) -> dict[TaskId, list[TaskId]]:
        out: dict[TaskId, list[TaskId]] = {t.id: [] for t in self.tasks}
        for t in self.tasks:
            for n in t.needs:
                out[n].append(t.id)
        return out

    def topological_order(self) -> list[TaskId]:
        order, cycle = _toposort(self.tasks)
        if cycle:
            raise self._error(
                "tasks", f"dependency cycle {' -> '.join(cycle)} (each needs the next)"
            )
        return order

    def critical_path(self) -> dict[TaskId, int]:
        """Length (in tasks) of the longest chain from each task to the end of the plan."""
        if not any(t.needs for t in self.tasks):  # independent tasks (a plan cannot cycle)
            return dict.fromkeys(self.task_map, 1)
        deps = self.dependants()
        length: dict[TaskId, int] = {}
        for tid in reversed(self.topological_order()):
            length[tid] = 1 + max((length[d] for d in deps[tid]), default=0)
        return length

    def by_category(self) -> dict[str, list[Task]]:
        """The strategy's ``decompose_project``: tasks grouped by category."""
        out: dict[str, list[Task]] = {c: [] for c in CATEGORIES}
        for t in self.tasks:
            out[t.category].append(t)
        return out

    # -- transformations -------------------------------------------------------------------
    def with_agent_count(self, n: int) -> Plan:
        """The same plan on ``n`` agents in total, spread over the plan's agent specs."""
        specs = _distinct_specs(self.agents)
        cap = self.limits.max_agents
        if cap is not None and n > cap:
            raise PlanError(
                f"--agents {n} is above the plan's limit of {cap}",
                file=self.source,
                field="limits.max_agents",
            )
        if n > MAX_AGENTS:
            raise PlanError(
                f"{n} agents is above phalanx's limit of {MAX_AGENTS:,}",
                file=self.source,
                field="--agents",
            )
        if n < 1:
            raise PlanError("must be at least 1", file=self.source, field="--agents")
        if n < len(specs):
            raise PlanError(
                f"{n} is fewer than the {len(specs)} distinct agent specs in the plan",
                file=self.source,
                field="--agents",
            )
        counts = [n // len(specs) + (1 if i < n % len(specs) else 0) for i in range(len(specs))]
        agents = [s for spec, c in zip(specs, counts, strict=True) for s in spec.clone(c)]
        return dataclasses.replace(self, agents=tuple(assign_names(agents))).checked()

    def with_overrides(
        self,
        *,
        policy: str | None = None,
        provider: str | None = None,
        agents: int | None = None,
        engine: str | None = None,
        address: str | None = None,
        base_url: str | None = None,
    ) -> Plan:
        plan = self if base_url is None else self._with_base_url(base_url, provider)
        if engine is not None or address is not None:
            kind = engine or self.engine.kind
            if kind not in ENGINES:
                raise PlanError(
                    f"unknown engine {kind!r} (choose from {', '.join(ENGINES)})",
                    file=self.source,
                    field="--engine",
                )
            plan = dataclasses.replace(
                plan,
                engine=dataclasses.replace(
                    self.engine, kind=kind, address=address or self.engine.address
                ),
            )
        if agents is not None:
            plan = plan.with_agent_count(agents)
        if policy is not None:
            if policy not in POLICIES:
                raise PlanError(
                    f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})",
                    file=self.source,
                    field="--policy",
                )
            plan = dataclasses.replace(plan, policy=policy)
        if provider is not None:
            plan = dataclasses.replace(
                plan,
                provider=provider,
                agents=tuple(a.with_provider(provider) for a in plan.agents),
            )
        return plan

    def _with_base_url(self, url: str, provider: str | None) -> Plan:
        """``--base-url``: the server of the ``--provider`` (else the plan's, else the one
        kind its agents use) provider kind."""
        name = provider or self.provider
        kinds = (
            {name.partition(":")[0]}
            if name
            else {(a.provider or DEFAULT_PROVIDER).partition(":")[0] for a in self.agents}
        )
        if len(kinds) != 1:
            raise PlanError(
                f"--base-url is the server of one provider; the agents use {len(kinds)} "
                "kinds: give --provider PROVIDER:MODEL",
                file=self.source,
            )
        (kind,) = kinds
        providers = {k: dict(v) for k, v in self.providers.items()}
        providers.setdefault(kind, {})["base_url"] = url
        return dataclasses.replace(self, providers=providers)

    def sequential(self) -> Plan:
        """The same tasks on ONE agent, one at a time in dependency order: the baseline a
        parallel run's speedup is measured against (``phalanx run --sequential``).

        The agent, ``Solo``, is a generalist with the union of the agents' skills, tools,
        context and subscriptions, on the first agent's provider. Every task keeps its
        prompt, needs and limits, loses its role, skills and agent requirements, and keeps
        the style the parallel run would have used: its own, else that of its pinned agent,
        of the first agent of its role, of the first agent specialised in its category, or
        of the first agent. Priorities follow the topological order, so the order is fixed.
        The plan's name gets " (sequential)"; the autoscaler is off; the policy and
        everything else are unchanged.
        """
        order = {tid: i for i, tid in enumerate(self.topological_order())}
        tasks = tuple(
            dataclasses.replace(
                t,
                role=None,
                skills=frozenset(),
                agent=None,
                style=self._style_for(t),
                output_type=self._output_type_for(t),
                priority=len(order) - order[t.id],
            )
            for t in self.tasks
        )
        return dataclasses.replace(
            self,
            name=f"{self.name} (sequential)",
            agents=(_solo(self.agents),),
            tasks=tasks,
            autoscale=None,
            limits=dataclasses.replace(self.limits, start_agents=None, min_eval_score=None),
            raw=None,
        ).checked()

    def _style_for(self, t: Task) -> str | None:
        """The style ``t`` is answered in by the agent the parallel run would give it
        (None for a typed task: its schema decides)."""
        if t.style or t.output_type is not None:
            return t.style
        return self._agent_for(t).style

    def _output_type_for(self, t: Task) -> Any:
        if t.output_type is not None or t.style:
            return t.output_type
        return self._agent_for(t).output_type

    def _agent_for(self, t: Task) -> AgentSpec:
        named = [a for a in self.agents if t.agent is not None and a.name == t.agent]
        by_role = [a for a in self.agents if t.role is not None and a.role == t.role]
        by_category = [a for a in self.agents if t.category in a.specialities]
        return (named or by_role or by_category or list(self.agents))[0]

    @property
    def scaling(self) -> AutoscaleConfig | None:
        """The autoscaler's settings, when it is on."""
        if self.autoscale is None and self.limits.start_agents is None:
            return None
        cfg = self.autoscale or AutoscaleConfig()
        if self.limits.start_agents is not None:
            cfg = dataclasses.replace(cfg, start_agents=self.limits.start_agents)
        return cfg

    def checked(self) -> Plan:
        self.validate()
        return self

    # -- validation ------------------------------------------------------------------------
    def _error(self, where: str, message: str) -> PlanError:
        return PlanError(message, file=self.source, field=where)

    def validate(self) -> None:
        """Raise :class:`PlanError` naming the first problem, or return."""
        if not self.agents:
            raise self._error("agents", "a plan needs at least one agent")
        if not self.tasks:
            raise self._error("tasks", "a plan needs at least one task")
        if self.scaling is not None and self.isolation != "none":
            raise self._error("autoscale", "the autoscaler cannot be combined with isolation")
        self._validate_eval_gate()
        if self.engine.kind not in ENGINES:
            raise self._error(
                "engine", f"unknown engine {self.engine.kind!r} (choose from {', '.join(ENGINES)})"
            )
        if self.isolation not in ("none", "worktree"):
            raise self._error("isolation", f"unknown isolation {self.isolation!r} (none, worktree)")
        if self.policy not in POLICIES:
            raise self._error(
                "policy", f"unknown policy {self.policy!r} (choose from {', '.join(POLICIES)})"
            )
        self._validate_agents()
        self._validate_tasks()
        self._validate_hooks()
        self._validate_styles()
        self._validate_mcp()
        _, cycle = _toposort(self.tasks)
        if cycle:
            i = next(i for i, t in enumerate(self.tasks) if t.id == cycle[0])
            raise self._error(
                f"tasks[{i}].needs",
                f"dependency cycle {' -> '.join(cycle)} (each needs the next)",
            )

    def _validate_eval_gate(self) -> None:
        floor = self.limits.min_eval_score
        if floor is None:
            return
        if not 0 <= floor <= 1:
            raise self._error("limits.min_eval_score", f"must be between 0 and 1, got {floor}")
        if self.scaling is None:
            raise self._error(
                "limits.min_eval_score",
                "needs the autoscaler: set limits.start_agents (where a spec below it is held)",
            )

    def _validate_agents(self) -> None:
        seen: set[str] = set()
        for i, a in enumerate(self.agents):
            if a.name in seen:
                raise self._error(f"agents[{i}].name", f"duplicate agent name {a.name!r}")
            seen.add(a.name or "")
        cap = self.limits.max_agents
        if cap is not None and len(self.agents) > cap:
            raise self._error(
                "limits.max_agents", f"the plan has {len(self.agents)} agents, above max {cap}"
            )

    def own_styles(self) -> list[Style]:
        """The plan's ``styles:`` as Style objects (a bad one is a PlanError), and one per
        typed output of its agents and tasks (``output_type``, a plan's ``schema:``)."""
        from ..agents.styles import BUILTIN_STYLES, style_from_config

        out = []
        for name, config in self.styles.items():
            if name in BUILTIN_STYLES:
                raise self._error(f"styles.{name}", "a built-in style cannot be redefined")
            try:
                out.append(style_from_config(name, config))
            except UsageError as exc:
                raise self._error(f"styles.{name}", str(exc)) from None
        return out + self._typed_styles()

    def _typed_styles(self) -> list[Style]:
        from ..agents.styles import typed_style

        # (part, index, output type) of those that have one; the field named only then
        where = [("agents", i, a.output_type) for i, a in enumerate(self.agents)]
        where += [("tasks", i, t.output_type) for i, t in enumerate(self.tasks)]
        seen: dict[str, tuple[Any, Style]] = {}
        for part, i, output_type in where:
            if output_type is None:
                continue
            field_ = f"{part}[{i}].schema"
            try:
                style = typed_style(output_type)
            except UsageError as exc:
                raise self._error(field_, str(exc)) from None
            first = seen.setdefault(style.name, (output_type, style))
            if first[0] is not output_type and first[0] != output_type:
                raise self._error(field_, f"two different output types are named {style.name}")
        return [style for _, style in seen.values()]

    def _validate_mcp(self) -> None:
        """Every ``mcp:SERVER/...`` tool pattern of an agent names a server of the plan;
        MCP servers need the local engine (their connections live in this process)."""
        names = {s.name for s in self.mcp}
        if len(names) != len(self.mcp):
            raise self._error("mcp", "two MCP servers have the same name")
        if self.mcp and self.engine.kind != "local":
            raise self._error("mcp", "MCP servers need engine: local (not ray)")
        for i, a in enumerate(self.agents):
            for pattern in a.tools:
                body = pattern.removeprefix("!")
                if not body.startswith(MCP_PREFIX):
                    continue
                server = body[len(MCP_PREFIX) :].partition("/")[0]
                if server not in names:
                    known = ", ".join(sorted(names)) or "none: add an mcp: section"
                    raise self._error(
                        f"agents[{i}].tools",
                        f"{pattern!r} names MCP server {server!r}, which the plan does not "
                        f"define (its servers: {known})",
                    )

    def _validate_styles(self) -> None:
        from ..agents.styles import STYLES

        known = set(STYLES) | {s.name for s in self.own_styles()}
        where = [(f"agents[{i}].style", a.style) for i, a in enumerate(self.agents)]
        where += [(f"tasks[{i}].style", t.style) for i, t in enumerate(self.tasks) if t.style]
        for field_, style in where:
            if style not in known:
                raise self._error(
                    field_, f"unknown style {style!r} (known: {', '.join(sorted(known))})"
                )
        for i, t in enumerate(self.tasks):
            if t.style and t.output_type is not None:
                raise self._error(
                    f"tasks[{i}].schema", "give a task either a style or a schema, not both"
                )

    def _validate_hooks(self) -> None:
        from ..agents.hooks import from_config

        from_config(list(self.hooks), where="hooks", file=self.source)
        if self.raw is not None:
            return  # a plan file's agent hooks were checked per agent entry, with their lines
        for i, a in enumerate(self.agents):
            from_config(list(a.hooks), where=f"agents[{i}].hooks", file=self.source)

    def _validate_tasks(self) -> None:
        names = {a.name for a in self.agents}
        ids: set[str] = set()
        for i, t in enumerate(self.tasks):
            if not TASK_ID_RE.fullmatch(t.id):
                raise self._error(
                    f"tasks[{i}].id", f"invalid id {t.id!r} (letters, digits, '_', '-', '.')"
                )
            if t.id in ids:
                raise self._error(f"tasks[{i}].id", f"duplicate task id {t.id!r}")
            ids.add(t.id)
            if t.category not in CATEGORIES:
                raise self._error(
                    f"tasks[{i}].category",
                    f"unknown category {t.category!r} (choose from {', '.join(CATEGORIES)})",
                )
            if t.max_attempts < 1:
                raise self._error(f"tasks[{i}].max_attempts", "must be at least 1")
            self._validate_approval(i, t)
            if t.foreach is not None:
                self._validate_foreach(i, t)
        for i, t in enumerate(self.tasks):
            for n in t.needs:
                if n not in ids:
                    raise self._error(f"tasks[{i}].needs", f"unknown task {n!r}")
                if n == t.id:
                    raise self._error(f"tasks[{i}].needs", f"task {t.id!r} needs itself")
            self._validate_servable(i, t)
            if t.agent is not None and t.agent not in names:
                raise self._error(f"tasks[{i}].agent", f"no agent named {t.agent!r}")

    def _validate_approval(self, i: int, t: Task) -> None:
        if t.approval not in (None, "required"):
            raise self._error(f"tasks[{i}].approval", f"expected 'required', got {t.approval!r}")
        if t.approval_timeout is not None and not t.approval_timeout > 0:
            raise self._error(f"tasks[{i}].approval_timeout", "must be positive (seconds)")
        if t.approval_on_timeout not in ("fail", "skip"):
            raise self._error(
                f"tasks[{i}].approval_on_timeout",
                f"expected 'fail' or 'skip', got {t.approval_on_timeout!r}",
            )

    def _validate_foreach(self, i: int, t: Task) -> None:
        source = t.foreach_source
        if source is None or not source[1] or source[0] not in self.task_map:
            raise self._error(
                f"tasks[{i}].foreach",
                f"{t.foreach!r} must be UPSTREAM.FIELD, UPSTREAM a task of the plan "
                "(e.g. analyze.files)",
            )
        if t.max_items < 0:
            raise self._error(f"tasks[{i}].max_items", "must be at least 0")

    def _validate_servable(self, i: int, t: Task) -> None:
        if t.role is not None and not any(a.role == t.role for a in self.agents):
            roles = ", ".join(sorted({repr(a.role) for a in self.agents}))
            raise self._error(
                f"tasks[{i}].role", f"no agent has role {t.role!r} (agents' roles: {roles})"
            )
        if t.skills and not any(
            t.skills <= a.skills and (t.role is None or a.role == t.role) for a in self.agents
        ):
            raise self._error(
                f"tasks[{i}].skills",
                f"no agent{' with role ' + repr(t.role) if t.role else ''} has all of "
                f"{', '.join(sorted(repr(s) for s in t.skills))}",
            )


SOLO = AgentName("Solo")


def _solo(agents: Sequence[AgentSpec]) -> AgentSpec:
    """One generalist able to do what all of ``agents`` do (see :meth:`Plan.sequential`)."""
    first = agents[0]
    return AgentSpec(
        role="generalist",
        name=SOLO,
        skills=frozenset().union(*(a.skills for a in agents)),
        style=first.style,
        provider=first.provider,
        context=tuple(_unique(c for a in agents for c in a.context)),
        context_max_tokens=max(a.context_max_tokens for a in agents),
        tools=tuple(_unique(t for a in agents for t in a.tools)),
        max_turns=max(a.max_turns for a in agents),
        subscribe=tuple(_unique(s for a in agents for s in a.subscribe)),
        hooks=tuple(_unique(h for a in agents for h in a.hooks)),
    )


def _unique(items: Iterable[Any]) -> list[Any]:
    """Items in order without repeats (by equality: they may be unhashable dicts)."""
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _distinct_specs(agents: Iterable[AgentSpec]) -> list[AgentSpec]:
    out: list[AgentSpec] = []
    for a in agents:
        unnamed = dataclasses.replace(a, name=None)
        if unnamed not in out:
            out.append(unnamed)
    return out


def _toposort(tasks: Sequence[Task]) -> tuple[list[TaskId], list[TaskId]]:
    """Kahn's algorithm. Returns (order, []) or ([], one cycle as a closed path)."""
    indeg = {t.id: len(set(t.needs)) for t in tasks}
    deps: dict[TaskId, list[TaskId]] = {t.id: [] for t in tasks}
    for t in tasks:
        for n in set(t.needs):
            if n in deps:
                deps[n].append(t.id)
    order = [tid for tid, d in indeg.items() if d == 0]
    i = 0
    while i < len(order):
        for d in deps[order[i]]:
            indeg[d] -= 1
            if indeg[d] == 0:
                order.append(d)
        i += 1
    if len(order) == len(tasks):
        return order, []
    return [], _find_cycle({t.id: t.needs for t in tasks if indeg[t.id] > 0})


def _find_cycle(needs: Mapping[TaskId, Sequence[TaskId]]) -> list[TaskId]:
    """One cycle among the tasks left after Kahn's pass (each of which is on or behind one)."""
    start = min(needs)
    path: list[TaskId] = []
    index: dict[TaskId, int] = {}
    node = start
    while node not in index:
        index[node] = len(path)
        path.append(node)
        node = next(n for n in sorted(needs[node]) if n in needs)
    cycle = path[index[node] :]
    return [*cycle, node]


def assign_agents(plan: Plan) -> dict[str, list[str]]:
    """The strategy's ``assign_agents``: per category of the plan's tasks, the agents
    specialised for it (by role or declared speciality); the scheduler spreads each
    category's tasks over these at run time."""
    out: dict[str, list[str]] = {}
    for category in plan.by_category():
        out[category] = [a.name or a.role for a in plan.agents if category in a.specialities]
    return out


def decompose_project(plan: Plan) -> dict[str, list[Task]]:
    """The strategy's ``decompose_project``: a plan's tasks by category."""
    return plan.by_category()


def style_of(task: Task, spec: AgentSpec) -> str:
    """The style ``task`` is answered in by ``spec``: the task's typed output, else its
    style, else the agent's typed output, else the agent's style."""
    if task.style and task.output_type is None:  # the common cases first: no import
        return task.style
    if task.output_type is None and spec.output_type is None:
        return spec.style
    from ..agents.styles import typed_style_name

    return typed_style_name(task.output_type if task.output_type is not None else spec.output_type)

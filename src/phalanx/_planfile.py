"""The plan file format (pydantic, at the edge) and its one-line error messages.

Line numbers come from the YAML node tree, so every message can say ``plan.yaml:14: field:``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .agents import AgentSpec, Category
from .comms.bus import MessagePolicy
from .cost import Price
from .exceptions import PlanError, UsageError
from .ids import AgentName, TaskId
from .plan import Commands, EngineConfig, Limits, Plan, RetryConfig, RouterConfig, Task
from .runtime.breaker import BreakerConfig
from .runtime.governor import RateLimit
from .runtime.scaling import AutoscaleConfig

_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PlanLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads ``on:``, ``yes``, ``no``, ``off``
    as booleans, which would turn a hook's ``on: before_task`` into ``True: before_task``.)"""


PlanLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PlanLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


_SAVED_AGENT_KEYS = frozenset({"agent", "count", "name", "names"})


class AgentModel(BaseModel):
    model_config = _STRICT

    role: str = "generalist"
    count: int = Field(default=1, ge=1, le=100_000)
    name: str | None = None
    names: list[str] | None = None
    skills: list[str] = []
    categories: list[Category] = []
    style: str = "text"
    provider: str | None = None
    system: str = ""
    context: list[str | dict[str, str]] = []
    context_max_tokens: int = Field(default=4000, ge=1, le=1_000_000)
    tools: list[str] = []
    max_turns: int = Field(default=8, ge=1, le=1000)
    subscribe: list[str] = []
    hooks: list[Any] = []
    agent: str | None = None  # a saved agent, NAME or NAME@VERSION (phalanx.library)
    eval_score: float | None = Field(default=None, ge=0, le=1)  # its last eval pass rate

    _as_list = field_validator("skills", "context", "tools", "names", mode="before")(_str_list)

    def _names(self) -> list[str | None]:
        if self.name is not None and self.names is not None:
            raise ValueError("give either 'name' or 'names', not both")
        names: list[str | None] = list(self.names or ([self.name] if self.name else []))
        if len(names) > self.count:
            raise ValueError(f"{len(names)} names given for count {self.count}")
        return names + [None] * (self.count - len(names))

    def specs(self, where: str = "agents[0]", file: str | None = None) -> list[AgentSpec]:
        from .hooks import from_config

        from_config(list(self.hooks), where=f"{where}.hooks", file=file)
        names = self._names()
        options = {} if self.eval_score is None else {"eval_score": self.eval_score}
        return [
            AgentSpec(
                role=self.role,
                name=AgentName(n) if n else None,
                skills=frozenset(self.skills),
                categories=frozenset(self.categories),
                style=self.style,
                provider=self.provider,
                system_prompt=self.system,
                context=tuple(self.context),
                context_max_tokens=self.context_max_tokens,
                tools=tuple(self.tools),
                max_turns=self.max_turns,
                subscribe=tuple(self.subscribe),
                hooks=tuple(self.hooks),
                options=dict(options),
            )
            for n in names
        ]

    def saved(self, where: str, file: str | None) -> tuple[list[AgentSpec], Any]:
        """The specs of an ``agent: NAME@VERSION`` entry, and the saved agent (its styles,
        provider options and prices go into the plan). Only count and names may be added."""
        from .library import Library

        ref = str(self.agent)
        extra = sorted(self.model_fields_set - _SAVED_AGENT_KEYS)
        if extra:
            raise PlanError(
                f"cannot be set beside 'agent: {ref}' (a saved agent is used as saved)",
                file=file,
                field=f"{where}.{extra[0]}",
            )
        try:
            saved = Library().get(ref)
        except UsageError as exc:
            raise PlanError(str(exc), file=file, field=f"{where}.agent") from None
        names = self._names()
        base = saved.agent_spec()
        return [dataclasses.replace(base, name=AgentName(n) if n else None) for n in names], saved


class TaskModel(BaseModel):
    model_config = _STRICT

    id: str
    prompt: str
    category: Category = "other"
    title: str = ""
    needs: list[str] = []
    role: str | None = None
    skills: list[str] = []
    priority: int = 0
    max_attempts: int = Field(default=3, ge=1, le=100)
    style: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_turns: int | None = Field(default=None, ge=1, le=1000)
    agent: str | None = None

    _as_list = field_validator("needs", "skills", mode="before")(_str_list)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def task(self) -> Task:
        return Task(
            id=TaskId(self.id),
            prompt=self.prompt,
            category=self.category,
            title=self.title,
            needs=tuple(TaskId(n) for n in self.needs),
            role=self.role,
            skills=frozenset(self.skills),
            priority=self.priority,
            max_attempts=self.max_attempts,
            style=self.style,
            timeout=self.timeout,
            max_turns=self.max_turns,
            agent=self.agent,
        )


class RateLimitModel(BaseModel):
    model_config = _STRICT

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    margin: float = Field(default=0.0, ge=0, le=60)


class PriceModel(BaseModel):
    model_config = _STRICT

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class CommandsModel(BaseModel):
    model_config = _STRICT

    allow: list[str] = []
    timeout: float = Field(default=60.0, gt=0)


class BreakerModel(BaseModel):
    model_config = _STRICT

    window: int = Field(default=20, ge=1)
    threshold: float = Field(default=0.5, gt=0, le=1)
    min_volume: int = Field(default=5, ge=1)
    cooldown: float = Field(default=30.0, ge=0)
    enabled: bool = True
    provider_window: int = Field(default=50, ge=1)
    provider_threshold: float = Field(default=0.9, gt=0, le=1)


class AutoscaleModel(BaseModel):
    model_config = _STRICT

    start_agents: int = Field(default=1, ge=0)
    interval: float = Field(default=5.0, gt=0)
    min_gain: float = Field(default=0.5, ge=0)
    retire_after: float = Field(default=30.0, ge=0)
    max_step: int | None = Field(default=None, ge=1)


class MessagingModel(BaseModel):
    model_config = _STRICT

    enabled: bool = True
    broadcast_roles: list[str] | None = None
    max_recipients: int | None = Field(default=None, ge=1)
    max_chars: int = Field(default=4000, ge=1)
    allow_direct: bool = True


class RouterModel(BaseModel):
    model_config = _STRICT

    provider: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=4, ge=1)


class LimitsModel(BaseModel):
    model_config = _STRICT

    work_stealing: bool = True
    comm_overhead_warning: float = Field(default=0.25, gt=0)
    lease_seconds: float | None = Field(default=None, gt=0)
    start_agents: int | None = Field(default=None, ge=0)
    min_eval_score: float | None = Field(default=None, ge=0, le=1)
    rate_limits: dict[str, RateLimitModel] = {}
    max_agents: int | None = Field(default=None, ge=1)
    max_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_wall_seconds: float | None = Field(default=None, gt=0)


def _engine_kind(value: Any) -> Any:
    """``engine: ray`` is short for ``engine: {kind: ray}``."""
    return {"kind": value} if isinstance(value, str) else value


class EngineModel(BaseModel):
    model_config = _STRICT

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    hosts: int | None = Field(default=None, ge=1)
    agents_per_host: int | None = Field(default=None, ge=1)
    host_cpus: float = Field(default=1.0, ge=0)
    roles: dict[str, dict[str, float]] = {}
    max_restarts: int = Field(default=3, ge=0)
    num_cpus: int | None = Field(default=None, ge=1)

    def config(self) -> EngineConfig:
        return EngineConfig(**{**self.model_dump(), "roles": dict(self.roles)})


class RetryModel(BaseModel):
    model_config = _STRICT

    base_seconds: float = Field(default=0.5, ge=0)
    cap_seconds: float = Field(default=30.0, ge=0)


class PlanModel(BaseModel):
    model_config = _STRICT

    name: str = "plan"
    description: str = ""
    policy: Literal["round_robin", "least_loaded", "best_fit", "llm"] = "best_fit"
    provider: str | None = None
    providers: dict[str, dict[str, Any]] = {}
    prices: dict[str, PriceModel] = {}
    limits: LimitsModel = LimitsModel()
    retry: RetryModel = RetryModel()
    hooks: list[Any] = []
    workspace: str | None = None
    commands: CommandsModel = CommandsModel()
    isolation: Literal["none", "worktree"] = "none"
    styles: dict[str, dict[str, Any]] = {}
    breaker: BreakerModel = BreakerModel()
    autoscale: AutoscaleModel | None = None
    messaging: MessagingModel = MessagingModel()
    router: RouterModel = RouterModel()
    engine: EngineModel = EngineModel()
    agents: list[AgentModel] = Field(min_length=1)
    tasks: list[TaskModel] = Field(min_length=1)

    _engine = field_validator("engine", mode="before")(_engine_kind)


def _loc_str(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        name = _key_name(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out


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


def _node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest ancestor)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        node = _child(node, part)
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node, part: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                return v if not isinstance(v, yaml.ScalarNode) or v.value != "" else k
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None


def _key_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line of the key itself (for unknown keys)."""
    parent = root
    for part in loc[:-1]:
        parent = _child(parent, part) if parent is not None else None
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(loc[-1]):
                return int(k.start_mark.line) + 1
    return _node_line(root, loc)


MAX_NODES = 1_000_000  # a plan whose aliases expand past this is refused, not expanded


def _key_name(key: str) -> str:
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def _check_tree(root: yaml.Node | None, source: str) -> None:
    """Refuse duplicate keys, recursive aliases and alias bombs, before anything expands."""
    sizes: dict[int, int] = {}

    def walk(node: yaml.Node | None, path: str, active: frozenset[int]) -> int:
        if node is None or isinstance(node, yaml.ScalarNode):
            return 1
        if id(node) in active:
            raise PlanError(
                "a YAML alias refers to itself",
                file=source,
                field=path or None,
                line=node.start_mark.line + 1,
            )
        if id(node) in sizes:
            return sizes[id(node)]
        inner = active | {id(node)}
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                key = _key_name(k.value if isinstance(k, yaml.ScalarNode) else str(k))
                where = f"{path}.{key}" if path else key
                if key in seen:
                    raise PlanError(
                        "duplicate key", file=source, field=where, line=k.start_mark.line + 1
                    )
                seen.add(key)
                total += walk(v, where, inner)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                total += walk(v, f"{path}[{i}]", inner)
        if total > MAX_NODES:
            raise PlanError(
                f"YAML aliases expand to more than {MAX_NODES:,} nodes",
                file=source,
                field=path or None,
                line=node.start_mark.line + 1,
            )
        sizes[id(node)] = total
        return total

    walk(root, "", frozenset())


def _field_to_loc(field: str) -> tuple[int | str, ...]:
    parts: list[int | str] = []
    for piece in field.replace("]", "").replace("[", ".").split("."):
        if piece:
            parts.append(int(piece) if piece.isdigit() else piece)
    return tuple(parts)


def plan_from_data(
    data: Any,
    *,
    source: str | None = None,
    line_of: Callable[[tuple[int | str, ...], bool], int | None] | None = None,
) -> Plan:
    """Validate parsed plan data into a :class:`Plan`, raising one :class:`PlanError`."""
    where = source or "plan"
    if not isinstance(data, Mapping):
        raise PlanError(
            f"the plan must be a mapping with 'agents' and 'tasks', got {type(data).__name__}",
            file=where,
            line=1,
        )
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        more = exc.error_count() - 1
        line = line_of(loc, err["type"] == "extra_forbidden") if line_of else None
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise PlanError(
            describe_error(err) + suffix, file=where, field=_loc_str(loc), line=line
        ) from None
    try:
        agents = []
        saved: list[tuple[str, Any]] = []  # (where, SavedAgent) of agent: NAME@VERSION entries
        for i, a in enumerate(model.agents):
            try:
                if a.agent is not None:
                    specs, entry = a.saved(f"agents[{i}]", where)
                    agents.extend(specs)
                    saved.append((f"agents[{i}].agent", entry))
                else:
                    agents.extend(a.specs(f"agents[{i}]", where))
            except ValueError as exc:
                raise PlanError(
                    str(exc),
                    file=where,
                    field=f"agents[{i}]",
                    line=line_of((("agents", i)), False) if line_of else None,
                ) from None
        styles, providers, prices = _with_saved(model, saved, where)
        return Plan.build(
            name=model.name,
            agents=agents,
            tasks=[t.task() for t in model.tasks],
            limits=Limits(
                **model.limits.model_dump(exclude={"rate_limits"}),
                rate_limits={
                    k: RateLimit(**v.model_dump()) for k, v in model.limits.rate_limits.items()
                },
            ),
            prices=prices,
            hooks=model.hooks,
            workspace=model.workspace,
            commands=Commands(allow=tuple(model.commands.allow), timeout=model.commands.timeout),
            isolation=model.isolation,
            styles=styles,
            breaker=BreakerConfig(**model.breaker.model_dump()),
            autoscale=AutoscaleConfig(**model.autoscale.model_dump()) if model.autoscale else None,
            messaging=_policy(model.messaging),
            router=RouterConfig(**model.router.model_dump()),
            engine=model.engine.config(),
            retry=RetryConfig(**model.retry.model_dump()),
            policy=model.policy,
            provider=model.provider,
            providers=providers,
            source=where,
            raw=dict(data),
        )
    except PlanError as exc:
        if exc.line is None and line_of and exc.field:
            loc = _field_to_loc(exc.field)
            line = line_of(loc, False)
            raise PlanError(exc.detail, file=where, field=exc.field, line=line) from None
        raise


def _with_saved(
    model: PlanModel, saved: list[tuple[str, Any]], where: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Price]]:
    """The plan's styles, provider options and prices, plus those its saved agents bring
    (the plan's own provider options and prices win; a style defined twice must agree)."""
    styles: dict[str, Any] = dict(model.styles)
    providers: dict[str, Any] = {}
    prices: dict[str, Price] = {}
    for field, entry in saved:
        for name, config in entry.styles.items():
            if styles.setdefault(name, config) != config:
                raise PlanError(
                    f"{entry.ref} needs style {name!r}, which this plan defines differently",
                    file=where,
                    field=field,
                )
        providers.update(entry.providers)
        prices.update(entry.prices)
    providers.update(model.providers)
    prices.update({k: Price(**v.model_dump()) for k, v in model.prices.items()})
    return styles, providers, prices


LineOf = Callable[[tuple[int | str, ...], bool], int | None]


def read_yaml(path: str | os.PathLike[str], what: str = "plan file") -> tuple[Any, LineOf]:
    """A YAML file's data (YAML 1.2 booleans) and a function giving the line of a field
    (``line_of(loc, is_key)``); every problem is one :class:`PlanError` line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError("no such file", file=source) from None
    except IsADirectoryError:
        raise PlanError(f"is a directory, not a {what}", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read: {exc.__class__.__name__}: {exc}", file=source) from None
    try:
        root = yaml.compose(text, Loader=PlanLoader)
        _check_tree(root, source)
        data = yaml.load(text, Loader=PlanLoader)
    except RecursionError:
        raise PlanError("the YAML is nested too deeply", file=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError(
            f"not valid YAML: {problem}",
            file=source,
            line=mark.line + 1 if mark is not None else None,
        ) from None

    def line_of(loc: tuple[int | str, ...], is_key: bool) -> int | None:
        return _key_line(root, loc) if is_key else _node_line(root, loc)

    return data, line_of


def load_plan_file(path: str | Path) -> Plan:
    data, line_of = read_yaml(path)
    return plan_from_data(data, source=str(path), line_of=line_of)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plan-file data, every agent named: what a resumed run is rebuilt from."""
    lim: dict[str, Any] = {
        k: v for k, v in vars_of(plan.limits).items() if v is not None and k != "rate_limits"
    }
    lim["rate_limits"] = {k: vars_of(v) for k, v in plan.limits.rate_limits.items()}
    return {
        "name": plan.name,
        "policy": plan.policy,
        "provider": plan.provider,
        "providers": {k: dict(v) for k, v in plan.providers.items()},
        "limits": lim,
        "prices": {k: vars_of(v) for k, v in plan.prices.items()},
        "hooks": [h for h in plan.hooks if isinstance(h, dict)],
        "workspace": plan.workspace,
        "commands": {"allow": list(plan.commands.allow), "timeout": plan.commands.timeout},
        "isolation": plan.isolation,
        "styles": {k: dict(v) for k, v in plan.styles.items()},
        "breaker": vars_of(plan.breaker),
        "autoscale": vars_of(plan.autoscale) if plan.autoscale else None,
        "router": vars_of(plan.router),
        "engine": {
            **vars_of(plan.engine),
            "roles": {k: dict(v) for k, v in plan.engine.roles.items()},
        },
        "messaging": {
            **vars_of(plan.messaging),
            "broadcast_roles": sorted(plan.messaging.broadcast_roles)
            if plan.messaging.broadcast_roles is not None
            else None,
        },
        "retry": vars_of(plan.retry),
        "agents": [
            {
                "role": a.role,
                "name": a.name,
                "skills": sorted(a.skills),
                "categories": sorted(a.categories),
                "style": a.style,
                "provider": a.provider,
                "system": a.system_prompt,
                "context": list(a.context),
                "context_max_tokens": a.context_max_tokens,
                "tools": list(a.tools),
                "max_turns": a.max_turns,
                "subscribe": list(a.subscribe),
                "hooks": [h for h in a.hooks if isinstance(h, dict | str)],
                **_eval_score(a),
            }
            for a in plan.agents
        ],
        "tasks": [
            {
                "id": t.id,
                "prompt": t.prompt,
                "category": t.category,
                "title": t.title,
                "needs": list(t.needs),
                "role": t.role,
                "skills": sorted(t.skills),
                "priority": t.priority,
                "max_attempts": t.max_attempts,
                "style": t.style,
                "timeout": t.timeout,
                "max_turns": t.max_turns,
                "agent": t.agent,
            }
            for t in plan.tasks
        ],
    }


def _eval_score(a: AgentSpec) -> dict[str, Any]:
    """A saved agent's score rides with its expanded spec, so a resumed run gates the same."""
    score = a.options.get("eval_score")
    return {} if score is None else {"eval_score": score}


def vars_of(obj: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _policy(m: MessagingModel) -> MessagePolicy:
    roles = frozenset(m.broadcast_roles) if m.broadcast_roles is not None else None
    return MessagePolicy(
        enabled=m.enabled,
        broadcast_roles=roles,
        max_recipients=m.max_recipients,
        max_chars=m.max_chars,
        allow_direct=m.allow_direct,
    )

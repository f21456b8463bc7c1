"""The plan file's schema: pydantic models at the edge, strict (unknown keys are errors).

:mod:`phalanx.plan.file` reads YAML into these models and turns them into a :class:`Plan`;
the agent library and eval case files validate their agent and price entries with them.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..agents.mcp import SERVER_NAME, McpServer
from ..agents.spec import AgentSpec, Category
from ..ids import AgentName, TaskId
from .model import (
    DEFAULT_CALL_ATTEMPTS,
    DEFAULT_MAX_CONTINUATIONS,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_TASKS,
    DEFAULT_MAX_WIDTH,
    EngineConfig,
    Task,
)

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
# The same loader on libyaml's parser, when PyYAML was built with it (its wheels are)
FastPlanLoader: type[Any] = PlanLoader
if hasattr(yaml, "CSafeLoader"):

    class _CPlanLoader(yaml.CSafeLoader):
        """:class:`PlanLoader`'s reading, parsed by libyaml."""

    _CPlanLoader.yaml_implicit_resolvers = PlanLoader.yaml_implicit_resolvers
    FastPlanLoader = _CPlanLoader


def _str_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


_SAVED_AGENT_KEYS = frozenset({"agent", "count", "name", "names"})


_STRICT_ALIASED = ConfigDict(
    extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True
)


class AgentModel(BaseModel):
    model_config = _STRICT_ALIASED

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
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # typed output
    agent: str | None = None  # a saved agent, NAME or NAME@VERSION (phalanx.plan.library)
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
        from ..agents.hooks import from_config

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
                output_type=self.schema_,
            )
            for n in names
        ]


class TaskModel(BaseModel):
    model_config = _STRICT_ALIASED

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
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # typed output
    approval: Literal["required"] | None = None
    approval_timeout: float | None = Field(default=None, gt=0)
    approval_on_timeout: Literal["fail", "skip"] = "fail"
    foreach: str | None = None  # UPSTREAM.FIELD: a template expanded at run time
    foreach_key: str | None = None
    max_items: int = Field(default=DEFAULT_MAX_ITEMS, ge=0)

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
            output_type=self.schema_,
            approval=self.approval,
            approval_timeout=self.approval_timeout,
            approval_on_timeout=self.approval_on_timeout,
            foreach=self.foreach,
            foreach_key=self.foreach_key,
            max_items=self.max_items,
        )


class RateLimitModel(BaseModel):
    model_config = _STRICT

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    margin: float = Field(default=0.0, ge=0, le=60)
    window: float = Field(default=60.0, gt=0, le=86400)


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
    sandbox: Literal["bwrap", "none"] = "bwrap"
    network: bool = False
    cpu: float | None = Field(default=None, gt=0)
    memory: int = Field(default=4096, ge=0)


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
    max_prompt_tokens: int = Field(default=DEFAULT_MAX_PROMPT_TOKENS, ge=1, strict=True)
    max_tasks: int = Field(default=DEFAULT_MAX_TASKS, ge=1)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=0)
    max_width: int = Field(default=DEFAULT_MAX_WIDTH, ge=1)


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
    call_attempts: int = Field(default=DEFAULT_CALL_ATTEMPTS, ge=1, strict=True)
    on_in_doubt: Literal["ask", "rerun", "fail"] = "ask"
    truncation: Literal["continue", "retry", "fail"] = "continue"
    max_continuations: int = Field(default=DEFAULT_MAX_CONTINUATIONS, ge=1, strict=True)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvModel(BaseModel):
    """``env: {pass: [NAME, ...]}``: variables child processes get even when the one secret
    rule calls them secret (``run_command``, command hooks, eval ``command`` checks)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pass_: list[str] = Field(default=[], alias="pass")

    @field_validator("pass_", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        v = _str_list(v)
        for name in v if isinstance(v, list) else ():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return v


_STDIO_ONLY = ("cwd", "sandbox", "network", "env")


class McpServerModel(BaseModel):
    """One MCP server: ``command`` (stdio: an argv list, or a string split like a shell
    would, without running one) or ``url`` (streamable HTTP)."""

    model_config = _STRICT

    command: list[str] | None = None
    url: str | None = None
    env: EnvModel = EnvModel()
    cwd: str | None = None
    headers: dict[str, Any] = {}  # a text, or {env: NAME, prefix: ...} (McpHeaderModel)
    timeout: float = Field(default=60.0, gt=0)
    start_timeout: float = Field(default=30.0, gt=0)
    sandbox: Literal["bwrap", "none"] | None = None
    network: bool | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return shlex.split(v) if isinstance(v, str) else v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for header, value in v.items():
            if isinstance(value, str):
                out[header] = value
            elif isinstance(value, dict) and set(value) <= {"env", "prefix"} and "env" in value:
                name, prefix = value["env"], value.get("prefix", "")
                if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                    raise ValueError(f"{header}: {name!r} is not an environment variable name")
                if not isinstance(prefix, str):
                    raise ValueError(f"{header}: prefix must be a text")
                out[header] = {"env": name, "prefix": prefix}
            else:
                raise ValueError(
                    f"{header}: a text, or {{env: NAME}} (optionally with prefix), got {value!r}"
                )
        return out

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerModel:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (a stdio server) or 'url' (HTTP), not both")
        if self.command is not None and not self.command:
            raise ValueError("'command' is empty")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"'url' must start with http:// or https://, got {self.url!r}")
        if self.url is not None:
            given = sorted(k for k in _STDIO_ONLY if k in self.model_fields_set)
            if given:
                raise ValueError(f"'{given[0]}' is for stdio servers (a command), not a url")
        if self.command is not None and self.headers:
            raise ValueError("'headers' are for HTTP servers (a url), not a command")
        return self

    def server(self, name: str) -> McpServer:
        return McpServer(
            name=name,
            command=tuple(self.command or ()),
            url=self.url,
            env_pass=tuple(self.env.pass_),
            cwd=self.cwd,
            headers=dict(self.headers),
            timeout=self.timeout,
            start_timeout=self.start_timeout,
            sandbox=self.sandbox,
            network=self.network,
        )


def _server_names(v: Any) -> Any:
    for name in v if isinstance(v, dict) else ():
        if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
            raise ValueError(
                f"MCP server name {name!r}: a letter, then letters, digits or '-' (at most 32)"
            )
    return v


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
    env: EnvModel = EnvModel()
    isolation: Literal["none", "worktree"] = "none"
    styles: dict[str, dict[str, Any]] = {}
    breaker: BreakerModel = BreakerModel()
    autoscale: AutoscaleModel | None = None
    messaging: MessagingModel = MessagingModel()
    router: RouterModel = RouterModel()
    engine: EngineModel = EngineModel()
    mcp: dict[str, McpServerModel] = {}
    agents: list[AgentModel] = Field(min_length=1)
    tasks: list[TaskModel] = Field(min_length=1)

    _engine = field_validator("engine", mode="before")(_engine_kind)
    _mcp = field_validator("mcp", mode="before")(_server_names)

"""The plan file format (pydantic, at the edge) and its one-line error messages.

Line numbers come from the YAML node tree, so every message can say ``plan.yaml:14: field:``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .._util import describe_error, jnum, jopt_num, jopt_str, jstr
from ..agents.mcp import McpServer
from ..agents.spec import AgentSpec
from ..cost import Price
from ..exceptions import PlanError, UsageError
from ..ids import AgentName
from .config import AutoscaleConfig, BreakerConfig, MessagePolicy, RateLimit
from .library import Library, schema_entry, spec_to_dict
from .model import _PARSER, Commands, Limits, Plan, RetryConfig, RouterConfig, Task
from .schema import (
    _SAVED_AGENT_KEYS,
    AgentModel,
    FastPlanLoader,
    MessagingModel,
    PlanLoader,
    PlanModel,
    TaskModel,
)


def _loc_str(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        name = _key_name(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out


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
    line_of: LineOf | None = None,
) -> Plan:
    """Validate parsed plan data into a :class:`Plan`, raising one :class:`PlanError`."""
    where = source or "plan"
    if not isinstance(data, Mapping):
        raise PlanError(
            f"the plan must be a mapping with 'agents' and 'tasks', got {type(data).__name__}",
            file=where,
            line=1,
        )
    model = _validated(data, where, line_of)
    try:
        agents, saved = _agent_specs(model, where, line_of)
        return _build(model, agents, saved, where, data)
    except PlanError as exc:
        if exc.line is None and line_of and exc.field:
            loc = _field_to_loc(exc.field)
            line = line_of(loc, False)
            raise PlanError(exc.detail, file=where, field=exc.field, line=line) from None
        raise


def _validated(data: Mapping[str, Any], where: str, line_of: LineOf | None) -> PlanModel:
    """The plan data checked by the schema; the first problem as one PlanError line."""
    try:
        return PlanModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        more = exc.error_count() - 1
        line = line_of(loc, err["type"] == "extra_forbidden") if line_of else None
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise PlanError(
            describe_error(err) + suffix, file=where, field=_loc_str(loc), line=line
        ) from None


def _agent_specs(
    model: PlanModel, where: str, line_of: LineOf | None
) -> tuple[list[AgentSpec], list[tuple[str, Any]]]:
    """Every agent spec of the plan, and the saved agents (``agent: NAME@VERSION``) used."""
    agents: list[AgentSpec] = []
    saved: list[tuple[str, Any]] = []  # (where, SavedAgent) of agent: NAME@VERSION entries
    for i, a in enumerate(model.agents):
        try:
            if a.agent is not None:
                specs, entry = saved_agent(a, f"agents[{i}]", where)
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
    return agents, saved


def _build(
    model: PlanModel,
    agents: list[AgentSpec],
    saved: list[tuple[str, Any]],
    where: str,
    data: Mapping[str, Any],
) -> Plan:
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
        commands=Commands(**{**model.commands.model_dump(), "allow": tuple(model.commands.allow)}),
        env_pass=tuple(model.env.pass_),
        isolation=model.isolation,
        styles=styles,
        breaker=BreakerConfig(**model.breaker.model_dump()),
        autoscale=AutoscaleConfig(**model.autoscale.model_dump()) if model.autoscale else None,
        messaging=_policy(model.messaging),
        router=RouterConfig(**model.router.model_dump()),
        engine=model.engine.config(),
        mcp=[server.server(name) for name, server in model.mcp.items()],
        retry=RetryConfig(**model.retry.model_dump()),
        policy=model.policy,
        provider=model.provider,
        providers=providers,
        source=where,
        raw=dict(data),
    )


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
        try:  # libyaml's parser when there is one (several times faster on a large plan)
            root, data = _parse(text, FastPlanLoader, source)
        except yaml.YAMLError:  # said as the Python parser says it (its words, its line)
            root, data = _parse(text, PlanLoader, source)
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


def _parse(text: str, loader: type[Any], source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML's tree, checked (:func:`_check_tree`), and the data built from that same
    tree: the text is parsed once."""
    parser = loader(text)
    try:
        root = parser.get_single_node()
        _check_tree(root, source)
        return root, (parser.construct_document(root) if root is not None else None)
    finally:
        parser.dispose()


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a YAML plan file; every problem is one :class:`PlanError` line."""
    data, line_of = read_yaml(path)
    return plan_from_data(data, source=str(path), line_of=line_of)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plan-file data, every agent named: what a resumed run is rebuilt from."""
    return {**_plan_head(plan), "tasks": [_task_to_dict(t) for t in plan.tasks]}


def plan_json(plan: Plan) -> str:
    """:func:`plan_to_dict` as JSON text, exactly ``json.dumps(plan_to_dict(plan),
    separators=(",", ":"), default=str)``; its tasks (thousands) are written by a
    hand-made encoder (a 10,000-task plan: ~10 ms, against ~40 ms)."""
    head = json.dumps(_plan_head(plan), separators=(",", ":"), default=str)
    tasks = ",".join([_task_json(t) for t in plan.tasks])
    return f'{head[:-1]},"tasks":[{tasks}]}}'


def _task_json(t: Task) -> str:
    """A task's :func:`_task_to_dict` as JSON text; tasks with anything beyond plain values
    (a typed output, an approval, a foreach), or an unexpected type, by ``json.dumps``."""
    plain = t.output_type is None and t.approval is None and t.approval_timeout is None
    if plain and t.approval_on_timeout == "fail" and not t.foreach:
        try:
            skills = ",".join([jstr(k) for k in sorted(t.skills)])
            needs = ",".join([jstr(n) for n in t.needs])
            return (
                f'{{"id":{jstr(t.id)},"prompt":{jstr(t.prompt)},'
                f'"category":{jstr(t.category)},"title":{jstr(t.title)},'
                f'"needs":[{needs}],"role":{jopt_str(t.role)},"skills":[{skills}],'
                f'"priority":{jnum(t.priority)},"max_attempts":{jnum(t.max_attempts)},'
                f'"style":{jopt_str(t.style)},"timeout":{jopt_num(t.timeout)},'
                f'"max_turns":{jopt_num(t.max_turns)},"agent":{jopt_str(t.agent)}}}'
            )
        except (TypeError, ValueError):
            pass
    return json.dumps(_task_to_dict(t), separators=(",", ":"), default=str)


def _plan_head(plan: Plan) -> dict[str, Any]:
    """:func:`plan_to_dict` but its tasks."""
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
        "commands": {**vars_of(plan.commands), "allow": list(plan.commands.allow)},
        "env": {"pass": list(plan.env_pass)},
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
        "mcp": {s.name: _mcp_to_dict(s) for s in plan.mcp},
        "agents": [_agent_to_dict(a) for a in plan.agents],
    }


def _agent_to_dict(a: AgentSpec) -> dict[str, Any]:
    return {
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
        **schema_entry(a.output_type),
        **_eval_score(a),
    }


def task_to_dict(t: Task) -> dict[str, Any]:
    """A task as plan-file data (a grown task journaled with its growth)."""
    return _task_to_dict(t)


def task_from_dict(data: Mapping[str, Any]) -> Task:
    """A task from :func:`task_to_dict` data (ids of grown tasks, ``migrate[3]``, are kept
    as they are: they never pass through a plan file)."""
    return TaskModel.model_validate(dict(data)).task()


def _task_to_dict(t: Task) -> dict[str, Any]:
    return {
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
        **schema_entry(t.output_type),
        **_approval_entry(t),
        **(
            {"foreach": t.foreach, "foreach_key": t.foreach_key, "max_items": t.max_items}
            if t.foreach
            else {}
        ),
    }


def _approval_entry(t: Task) -> dict[str, Any]:
    """A task's approval keys, only when it has any (plans without keep their shape)."""
    out: dict[str, Any] = {}
    if t.approval is not None:
        out["approval"] = t.approval
    if t.approval_timeout is not None:
        out["approval_timeout"] = t.approval_timeout
    if t.approval_on_timeout != "fail":
        out["approval_on_timeout"] = t.approval_on_timeout
    return out


def _mcp_to_dict(s: McpServer) -> dict[str, Any]:
    out: dict[str, Any] = {"timeout": s.timeout, "start_timeout": s.start_timeout}
    if s.command:
        out |= {"command": list(s.command), "env": {"pass": list(s.env_pass)}}
        out |= {k: v for k, v in (("cwd", s.cwd), ("sandbox", s.sandbox)) if v is not None}
        out |= {"network": s.network} if s.network is not None else {}
    else:
        out |= {"url": s.url, "headers": {k: v for k, v in s.headers.items()}}
    return out


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


def saved_agent(self: AgentModel, where: str, file: str | None) -> tuple[list[AgentSpec], Any]:
    """The specs of an ``agent: NAME@VERSION`` entry, and the saved agent (its styles,
    provider options and prices go into the plan). Only count and names may be added."""
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


# -- saving an agent from a plan (phalanx agents save PLAN:ROLE) ----------------------


def from_plan(source: str) -> tuple[AgentSpec, dict[str, Any], dict[str, Any], dict[str, Price]]:
    """``PLAN.yaml:ROLE`` (or ``PLAN.yaml:AGENT_NAME``): the agent spec of that plan, with the
    plan's own style it uses, its provider's options and price. Errors are one line."""
    path, sep, who = source.rpartition(":")
    if not sep or not path or not who:
        raise UsageError(f"{source!r}: expected PLAN.yaml:ROLE (a plan file and a role in it)")
    plan = load_plan(path)
    named = [a for a in plan.agents if a.name == who]
    chosen = named or [a for a in plan.agents if a.role == who]
    if not chosen:
        roles = ", ".join(sorted({a.role for a in plan.agents}))
        raise UsageError(f"{path}: no agent with role or name {who!r} (roles: {roles})")
    distinct: list[dict[str, Any]] = []
    for a in chosen:
        d = spec_to_dict(dataclasses.replace(a, provider=a.provider or plan.provider))
        if d not in distinct:
            distinct.append(d)
    if len(distinct) > 1:
        names = ", ".join(sorted(a.name or "" for a in chosen))
        raise UsageError(
            f"{path}: {len(distinct)} different specs have role {who!r} ({names}); "
            "name one agent instead: PLAN.yaml:NAME"
        )
    spec = dataclasses.replace(chosen[0], provider=chosen[0].provider or plan.provider)
    styles = {k: dict(v) for k, v in plan.styles.items() if k == spec.style}
    providers: dict[str, Any] = {}
    prices: dict[str, Price] = {}
    if spec.provider:
        kind = spec.provider.partition(":")[0]
        providers = {k: dict(v) for k, v in plan.providers.items() if k in (spec.provider, kind)}
        prices = {k: v for k, v in plan.prices.items() if spec.provider.startswith(k)}
    return spec, styles, providers, prices


_PARSER.append(plan_from_data)

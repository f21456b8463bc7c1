"""Decomposition: a planner agent turns a goal into a plan.

:func:`decompose` asks one model, the *planner*, for tasks in the five categories with
their dependencies and roles, and for the agents (role, output style, count), as JSON
constrained by :data:`PLAN_SCHEMA`, a compact subset of the plan format. The answer is
turned into plan-file data (:func:`plan_data`) and validated by the plan schema itself
(:func:`phalanx.plan.file.plan_from_data`). An answer that is not valid (not JSON, outside
the schema, an unknown dependency, a cycle, a duplicate id, a task that needs itself, cut
off at the token limit) is re-asked with its one-line error, up to ``max_reasks`` times;
then :class:`PlannerError` names the last error. A failing model is a one-line
:class:`PlannerError` too.

**The outline.** A grammar can force an answer's shape but not that dependencies name
existing ids, so a tiny model (SmolLM2-135M) decoding under :data:`PLAN_SCHEMA` invents
dependencies and repeats ids. With ``outline=True`` (the default for ``local:`` models,
which use constrained decoding) the model is sent :data:`OUTLINE_SCHEMA` instead: exactly
one task per category with fixed ids (``research``, ``design``, ``implement``, ``test``,
``document``), each role among those that fit the category, and dependencies chosen only
among earlier ids, at least one each after the first. An answer decoded under it can only
fail the plan check by being cut off or by a blank prompt; it is a refinement of
:data:`PLAN_SCHEMA` and is validated the same way.

**Agents.** A role that tasks use but no listed agent has is not an error: an agent with
that role (style :data:`ADDED_AGENT_STYLE`) is added, since the planner chose the role on
purpose and the plan is meant to be edited. A listed agent whose role no task uses is left
out (tasks go only to agents of their role, so it would never get work).

:func:`plan_yaml` renders plan data as a normal plan file under a comment header saying it
was generated; :func:`write_plan` asks the planner and writes that file.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, Unpack

import yaml

from .._util import blocking
from .._util import one_line as _one_line
from ..agents.spec import ROLES
from ..agents.styles import BUILTIN_STYLES, StyleError, parse_output
from ..exceptions import PlanError, PlannerError, ProviderError, UsageError
from ..providers import (
    Completion,
    CompletionRequest,
    Message,
    Provider,
    resolve_provider,
    split_provider,
)
from .model import Plan

__all__ = [
    "ADDED_AGENT_STYLE",
    "DEFAULT_PLANNER",
    "EXAMPLE",
    "OUTLINE_SCHEMA",
    "PLAN_CATEGORIES",
    "PLAN_SCHEMA",
    "PlannerError",
    "decompose",
    "decompose_async",
    "decompose_data_async",
    "plan_data",
    "plan_text",
    "plan_yaml",
    "write_plan",
]

DEFAULT_PLANNER = "local:smollm2"
PLAN_CATEGORIES = ("research", "architecture", "implementation", "testing", "documentation")
OUTLINE_IDS = ("research", "design", "implement", "test", "document")  # one per category
ROLE_NAMES = tuple(ROLES)
STYLE_NAMES = tuple(sorted(BUILTIN_STYLES))
ADDED_AGENT_STYLE = "markdown"  # for an agent added because tasks use a role none has
ID_PATTERN = "^[a-z][a-z0-9-]{0,40}$"
MIN_TASKS, MAX_TASKS = 3, 12
GOAL_MAX_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x1f]")
MAX_TOKENS = 2048  # for the planner's answer (a local model caps it at its max_tokens)
# Local models: one instance; room for a re-ask (question, previous answer, error, answer).
LOCAL_DEFAULTS: Mapping[str, Any] = {"pool_size": 1, "n_ctx": 4096, "max_tokens": 1536}


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _array(items: Mapping[str, Any], lo: int, hi: int) -> dict[str, Any]:
    return {"type": "array", "items": dict(items), "minItems": lo, "maxItems": hi}


_ID: dict[str, Any] = {"type": "string", "pattern": ID_PATTERN}
_AGENTS = _array(
    _object(
        {
            "role": {"enum": list(ROLE_NAMES)},
            "style": {"enum": list(STYLE_NAMES)},
            "count": {"enum": [1, 2, 3, 4]},  # the grammar converter ignores minimum/maximum
        }
    ),
    1,
    6,
)

PLAN_SCHEMA: dict[str, Any] = _object(
    {
        "agents": _AGENTS,
        "tasks": _array(
            _object(
                {
                    "id": _ID,
                    "category": {"enum": list(PLAN_CATEGORIES)},
                    "role": {"enum": list(ROLE_NAMES)},
                    "title": _text(80),
                    "prompt": _text(400),
                    "needs": _array(_ID, 0, 4),
                }
            ),
            MIN_TASKS,
            MAX_TASKS,
        ),
    }
)
"""What the planner answers. Only keywords llama.cpp's JSON-schema-to-grammar converter
supports: enum, const, pattern, min/maxLength, min/maxItems, prefixItems, required,
``additionalProperties: false``."""


def _fitting_roles(category: str) -> list[str]:
    return [r.name for r in ROLES.values() if category in r.categories or not r.categories]


def _outline_task(i: int) -> dict[str, Any]:
    earlier = list(OUTLINE_IDS[:i])
    needs = _array({"enum": earlier}, 1, min(i, 2)) if i else _array(_ID, 0, 0)
    return _object(
        {
            "id": {"const": OUTLINE_IDS[i]},
            "category": {"const": PLAN_CATEGORIES[i]},
            "role": {"enum": _fitting_roles(PLAN_CATEGORIES[i])},
            "title": _text(60),
            "prompt": _text(240),
            "needs": needs,
        }
    )


OUTLINE_SCHEMA: dict[str, Any] = _object(
    {
        "agents": _AGENTS,
        "tasks": {
            "type": "array",
            "prefixItems": [_outline_task(i) for i in range(len(OUTLINE_IDS))],
            "minItems": len(OUTLINE_IDS),
            "maxItems": len(OUTLINE_IDS),
        },
    }
)
"""A refinement of :data:`PLAN_SCHEMA` for models with constrained decoding: one task per
category, fixed ids, fitting roles, dependencies only on earlier tasks (so no cycle)."""

EXAMPLE: dict[str, Any] = {  # shown to the planner; fits both schemas
    "agents": [
        {"role": "researcher", "style": "concise", "count": 1},
        {"role": "architect", "style": "markdown", "count": 1},
        {"role": "coder", "style": "markdown", "count": 2},
        {"role": "tester", "style": "table", "count": 1},
        {"role": "documenter", "style": "markdown", "count": 1},
    ],
    "tasks": [
        {
            "id": "research",
            "category": "research",
            "role": "researcher",
            "title": "Study the problem",
            "prompt": "Find out what users of the goal need and how others solved it.",
            "needs": [],
        },
        {
            "id": "design",
            "category": "architecture",
            "role": "architect",
            "title": "Design the solution",
            "prompt": "Design the parts of the solution and how they fit together.",
            "needs": ["research"],
        },
        {
            "id": "implement",
            "category": "implementation",
            "role": "coder",
            "title": "Build the solution",
            "prompt": "Write the code for the goal, following the design.",
            "needs": ["design"],
        },
        {
            "id": "test",
            "category": "testing",
            "role": "tester",
            "title": "Test the solution",
            "prompt": "Write tests for the main features and the edge cases.",
            "needs": ["implement"],
        },
        {
            "id": "document",
            "category": "documentation",
            "role": "documenter",
            "title": "Document the solution",
            "prompt": "Explain how to install and use the result, with examples.",
            "needs": ["design", "implement"],
        },
    ],
}


# --- the question ---------------------------------------------------------------------------


def system_prompt(*, outline: bool = False) -> str:
    """What the planner is told: its job, the categories, roles and styles, the shape."""
    roles = "; ".join(f"{r.name}: {r.description.lower()}" for r in ROLES.values())
    count = (
        f"exactly {len(OUTLINE_IDS)} tasks, one per category, with the ids "
        + ", ".join(OUTLINE_IDS)
        if outline
        else f"{MIN_TASKS} to {MAX_TASKS} small tasks"
    )
    return "\n".join(
        [
            f"You are the planner of a team of AI agents. Split the user's goal into {count}.",
            "Categories, in this order: " + ", ".join(PLAN_CATEGORIES) + ". "
            "Give at least one task in each category.",
            f"Roles: {roles}.",
            "Output styles for agents: " + ", ".join(STYLE_NAMES) + ".",
            "Each task has: id (short, lowercase, words joined by '-'), category, role, "
            "title (a few words), prompt (one sentence: what to do for the goal), needs "
            "(ids of earlier tasks whose results it uses). Every id is different; a task "
            "never needs itself or a later task.",
            "List one agent for each role the tasks use (count: how many copies, 1 to 4).",
            "Answer with one JSON object and nothing else, shaped like this example: "
            + json.dumps(EXAMPLE),
        ]
    )


def _messages(goal: str, retry: tuple[str, str] | None, outline: bool) -> tuple[Message, ...]:
    """The question; after an invalid answer, that answer (only the last one, so a small
    context still fits) and its error."""
    messages = [
        Message(role="system", content=system_prompt(outline=outline)),
        Message(role="user", content=f"Goal: {goal}"),
    ]
    if retry is not None:
        answer, error = retry
        messages += [
            Message(role="assistant", content=answer),
            Message(
                role="user",
                content=f"Your plan was invalid: {error}. Answer again with the whole JSON, fixed.",
            ),
        ]
    return tuple(messages)


def _request(
    model: str, goal: str, retry: tuple[str, str] | None, attempt: int, outline: bool
) -> CompletionRequest:
    return CompletionRequest(
        model=model,
        messages=_messages(goal, retry, outline),
        max_tokens=MAX_TOKENS,
        style="json",
        json_schema=OUTLINE_SCHEMA if outline else PLAN_SCHEMA,
        task_id="plan",
        role="planner",
        agent="planner",
        attempt_no=attempt,  # a local model decodes each try with another seed
        title="decompose the goal",
    )


# --- the answer -----------------------------------------------------------------------------


def slug(goal: str) -> str:
    """A plan name from the goal: lowercase words joined by '-', at most 40 characters."""
    out = ""
    for word in re.findall(r"[a-z0-9]+", goal.lower()):
        if len(out) + len(word) + 1 > 40:
            break
        out = f"{out}-{word}" if out else word
    return out or "plan"


def _agents(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One agent spec per role the tasks use: those the planner listed (with their style
    and count), then one per role it did not list. Listed agents whose role no task uses are
    left out: tasks only go to agents of their role, so they would never get work."""
    used = list(dict.fromkeys(t["role"] for t in answer["tasks"]))
    agents: list[dict[str, Any]] = []
    for a in answer["agents"]:
        if a["role"] in used:
            agents.append({"role": a["role"], "style": a["style"]})
            if a["count"] > 1:
                agents[-1]["count"] = a["count"]
    listed = {a["role"] for a in agents}
    agents += [{"role": r, "style": ADDED_AGENT_STYLE} for r in used if r not in listed]
    return agents


def _task(t: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: t[k] for k in ("id", "category", "role")}
    out["title"] = _one_line(t["title"])
    if t["needs"]:
        out["needs"] = list(dict.fromkeys(t["needs"]))  # a repeated id adds nothing
    out["prompt"] = _one_line(t["prompt"])
    return out


def _check_prompts(tasks: list[dict[str, Any]]) -> None:
    for i, t in enumerate(tasks):
        if not t["prompt"]:
            raise ValueError(f"tasks[{i}].prompt: is empty; say what the task should do")


def plan_data(
    answer: Mapping[str, Any],
    *,
    name: str,
    provider: str,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Plan-file data from a planner answer that fits :data:`PLAN_SCHEMA` (not yet checked
    as a plan: dependencies may be unknown or cyclic)."""
    data: dict[str, Any] = {"name": name, "provider": provider}
    if providers:
        data["providers"] = {k: dict(v) for k, v in providers.items()}
    data["agents"] = _agents(answer)
    data["tasks"] = [_task(t) for t in answer["tasks"]]
    return data


def _check(completion: Completion, plan_kw: Mapping[str, Any]) -> tuple[dict[str, Any], Plan]:
    """The answer as plan data and a validated Plan, or ValueError with a one-line error."""
    if completion.stop_reason == "max_tokens":
        raise ValueError("the answer was cut off at the token limit; make it shorter")
    # A raw line break inside a string is not JSON, yet some grammars let one through:
    # control characters become spaces (outside strings a space is whitespace too).
    text = _CONTROL.sub(" ", completion.text)
    try:
        answer = parse_output("json", text, schema=PLAN_SCHEMA)
    except StyleError as exc:
        raise ValueError(str(exc)) from None
    data = plan_data(answer, **plan_kw)
    _check_prompts(data["tasks"])
    from .file import plan_from_data

    try:
        return data, plan_from_data(data, source="planner answer")
    except PlanError as exc:
        raise ValueError(f"{exc.field}: {exc.detail}" if exc.field else exc.detail) from None


# --- the loop -------------------------------------------------------------------------------


def _planner(
    provider: str,
    providers: Mapping[str, Mapping[str, Any]] | None,
    custom: Mapping[str, Provider] | None,
    seed: int,
) -> tuple[Provider, bool]:
    """The planner's model, and whether it was made here (and so is closed here)."""
    if custom and provider in custom:
        return custom[provider], False
    options = {k: dict(v) for k, v in (providers or {}).items()}
    if split_provider(provider)[0] == "local":
        key = provider if provider in options else "local"
        options[key] = {**LOCAL_DEFAULTS, "seed": seed, **options.get(key, {})}
    try:
        return resolve_provider(provider, options, seed=seed), True
    except PlanError as exc:  # a bad provider option names its field
        raise PlannerError(f"{exc.field}: {exc.detail}" if exc.field else exc.detail) from None


async def _ask(model: Provider, request: CompletionRequest) -> Completion:
    try:
        return await model.complete(request)
    except ProviderError as exc:
        raise PlannerError(f"the planner model {request.model!r} failed: {exc}") from exc


async def _reask_loop(
    goal: str,
    model: Provider,
    *,
    name: str,
    max_reasks: int,
    outline: bool,
    plan_kw: Mapping[str, Any],
) -> tuple[dict[str, Any], Plan]:
    retry: tuple[str, str] | None = None
    tries = max_reasks + 1
    for attempt in range(1, tries + 1):
        completion = await _ask(model, _request(name, goal, retry, attempt, outline))
        try:
            return _check(completion, plan_kw)
        except ValueError as exc:
            retry = (completion.text, str(exc))
    assert retry is not None
    raise PlannerError(
        f"the planner's answer was not a valid plan after {tries} "
        f"{'try' if tries == 1 else 'tries'}: {retry[1]}"
    )


def clean_goal(goal: str) -> str:
    """The goal on one line, whitespace collapsed; empty or over-long is a UsageError."""
    text = " ".join(str(goal).split())
    if not text:
        raise UsageError("the goal is empty: say what the plan should achieve")
    if len(text) > GOAL_MAX_CHARS:
        raise UsageError(f"the goal is {len(text)} characters; the limit is {GOAL_MAX_CHARS}")
    return text


async def decompose_data_async(
    goal: str,
    *,
    provider: str = DEFAULT_PLANNER,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    custom_providers: Mapping[str, Provider] | None = None,
    max_reasks: int = 2,
    seed: int = 0,
    plan_provider: str | None = None,
    outline: bool | None = None,
) -> tuple[dict[str, Any], Plan]:
    """:func:`decompose_async`, also returning the plan-file data the Plan was built from
    (what :func:`plan_yaml` writes)."""
    text = clean_goal(goal)
    if max_reasks < 0:
        raise UsageError(f"max_reasks must be at least 0, got {max_reasks}")
    model, owned = _planner(provider, providers, custom_providers, seed)
    if outline is None:
        outline = split_provider(provider)[0] == "local"
    plan_kw = {"name": slug(text), "provider": plan_provider or provider, "providers": providers}
    try:
        return await _reask_loop(
            text, model, name=provider, max_reasks=max_reasks, outline=outline, plan_kw=plan_kw
        )
    finally:
        if owned:
            await model.aclose()


async def decompose_async(
    goal: str,
    *,
    provider: str = DEFAULT_PLANNER,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    custom_providers: Mapping[str, Provider] | None = None,
    max_reasks: int = 2,
    seed: int = 0,
    plan_provider: str | None = None,
    outline: bool | None = None,
) -> Plan:
    """Ask the planner model to decompose ``goal`` into a validated :class:`Plan`.

    ``provider``: the planner's ``provider:model``; ``providers``: plan-style provider
    options (also written into the plan); ``custom_providers``: ``{name: Provider}`` used
    before resolving ``provider``; ``max_reasks``: how often an invalid answer is re-asked
    with its error before :class:`PlannerError`; ``seed``: for the model; ``plan_provider``:
    the plan's default ``provider:`` (default: the planner's); ``outline``: answer in
    :data:`OUTLINE_SCHEMA` (default: for ``local:`` models). A model failure, like a last
    invalid answer, is a one-line :class:`PlannerError`.
    """
    _, plan = await decompose_data_async(
        goal,
        provider=provider,
        providers=providers,
        custom_providers=custom_providers,
        max_reasks=max_reasks,
        seed=seed,
        plan_provider=plan_provider,
        outline=outline,
    )
    return plan


decompose = blocking(
    decompose_async,
    "decompose",
    ":func:`decompose_async` for code without an event loop (same keywords).",
)


# --- the file -------------------------------------------------------------------------------


class _PlanDumper(yaml.SafeDumper):
    """Block style, except lists of scalars (``needs: [a, b]``) in flow style."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_PlanDumper.add_representer(list, _represent_list)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + len(word) + 1 <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _header(goal: str, provider: str, now: _dt.datetime) -> str:
    lines = [
        f"# generated by `phalanx plan` on {now:%Y-%m-%d %H:%M} with the planner {provider},",
        "# from the goal:",
        *(f"#   {line}" for line in _wrap(goal, 86)),
        "# edit freely: this is a normal plan file; `phalanx run` it when it is ready.",
    ]
    return "\n".join(lines) + "\n"


def plan_yaml(
    plan_data: Mapping[str, Any],
    *,
    goal: str,
    provider: str,
    now: _dt.datetime | None = None,
) -> str:
    """``plan_data`` as a plan file: a comment header (generated by `phalanx plan`, when,
    by which planner, from which goal), then the YAML in plan-file order."""
    body = yaml.dump(
        dict(plan_data), Dumper=_PlanDumper, sort_keys=False, allow_unicode=True, width=100
    )
    return _header(clean_goal(goal), provider, now or _dt.datetime.now()) + body


class PlannerOptions(TypedDict, total=False):
    """The keywords of :func:`decompose_async` after the goal (a test keeps them equal)."""

    provider: str
    providers: Mapping[str, Mapping[str, Any]] | None
    custom_providers: Mapping[str, Provider] | None
    max_reasks: int
    seed: int
    plan_provider: str | None
    outline: bool | None


def plan_text(goal: str, **kwargs: Unpack[PlannerOptions]) -> str:
    """Decompose ``goal`` (keywords as for :func:`decompose_async`) and return the plan file's
    text (:func:`plan_yaml`), for code without an event loop."""
    data, _ = asyncio.run(decompose_data_async(goal, **kwargs))
    return plan_yaml(data, goal=goal, provider=str(kwargs.get("provider", DEFAULT_PLANNER)))


def write_plan(goal: str, path: str | Path, **kwargs: Unpack[PlannerOptions]) -> Path:
    """Decompose ``goal`` (keywords as for :func:`decompose_async`) and write the plan file
    to ``path``, only once the plan is valid; returns the path."""
    text = plan_text(goal, **kwargs)
    out = Path(path)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the plan to {out}: {exc.strerror or exc}") from None
    return out

"""Building the eval as one plan (:func:`build_plan`): for every spec, case and repeat a case
run (:class:`Slot`) with its own agent, its own copy of the case's fixture (its sandbox, where
the spec's ``{file:}``/``{glob:}`` context is read) and its task, plus a judge task per judge
check, pinned to a judge agent that answers ``{"verdict": "pass"|"fail", "reason": ...}``;
the specs' styles, provider options and prices merged (they must agree); and the tools that
need a workspace wrapped to work in the sandbox of the agent that calls them
(:func:`sandboxed_tools`)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agents.context import load_context
from ..agents.spec import AgentSpec, assign_names
from ..agents.tools import BUILTIN_TOOLS, ToolContext, ToolSpec
from ..agents.workspace import Workspace
from ..exceptions import PlanError, UsageError
from ..ids import TaskId
from ..plan.library import Library, SavedAgent
from ..plan.model import Plan, Task
from .candidates import Candidate
from .cases import Case, CaseFile
from .checks import Check

VERDICT_STYLE = "eval-verdict"
VERDICT_CONFIG: dict[str, Any] = {
    "base": "json",
    "instruction": 'Answer with one JSON object: {"verdict": "pass" or "fail", "reason": '
    '"one sentence"}.',
    "schema": {
        "type": "object",
        "required": ["verdict", "reason"],
        "properties": {"verdict": {"enum": ["pass", "fail"]}, "reason": {"type": "string"}},
    },
}
JUDGE_SYSTEM = (
    "You grade an AI agent's answer against a rubric, strictly and fairly: pass only an "
    "answer that meets every point of the rubric."
)


@dataclass(frozen=True, kw_only=True)
class Slot:
    """One case run in the plan: its task, agent, sandbox and judge tasks."""

    variant: int
    case: Case
    repeat: int
    task_id: str
    agent: str
    workspace: Path
    style: str
    judges: tuple[tuple[int, str], ...]  # (index of the check, judge task id)


@dataclass(frozen=True, kw_only=True)
class Build:
    plan: Plan
    slots: tuple[Slot, ...]
    workspaces: Mapping[str, Path]  # agent -> its sandbox


def build_plan(cf: CaseFile, cands: Sequence[Candidate], repeat: int, run_dir: Path) -> Build:
    """The plan of an eval: every case of ``cf`` on every spec, ``repeat`` times, with the
    sandboxes prepared under ``run_dir/cases``."""
    builder = _Builder(cf=cf, repeat=repeat, run_dir=run_dir)
    many = len(cands) > 1
    for vi, cand in enumerate(cands):
        builder.add(vi, cand, f"{chr(ord('a') + vi)}." if many else "")
    named = assign_names(builder.specs)
    slots, tasks, workspaces = _place(builder.drafts, named, cands, repeat)
    builder.providers.update(cf.providers)
    builder.prices.update(cf.prices)
    labels = " vs ".join(c.label for c in cands)
    plan = Plan.build(
        name=f"eval {cf.name}: {labels}"[:120],
        agents=named,
        tasks=tasks,
        limits=dataclasses.replace(cf.limits, work_stealing=False),
        providers=builder.providers,
        prices=builder.prices,
        styles=builder.styles,
        commands=cf.commands,
        env_pass=cf.env_pass,
        source=str(cf.path),
    )
    return Build(plan=plan, slots=tuple(slots), workspaces=workspaces)


@dataclass(frozen=True)
class _Draft:
    """A case run before its agents are named."""

    variant: int
    case: Case
    repeat: int
    task_id: str
    workspace: Path
    judges: list[tuple[int, str]]  # (index of the check, judge task id)


@dataclass
class _Builder:
    """Collects an eval's agent specs (in plan order), case runs and merged plan settings."""

    cf: CaseFile
    repeat: int
    run_dir: Path
    specs: list[AgentSpec] = field(default_factory=list)
    drafts: list[_Draft] = field(default_factory=list)
    styles: dict[str, Any] = field(default_factory=lambda: {VERDICT_STYLE: VERDICT_CONFIG})
    providers: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, SavedAgent] = field(default_factory=dict)  # judge agents by reference

    def add(self, vi: int, cand: Candidate, key: str) -> None:
        """Every case run of spec number ``vi``; ``key`` prefixes its task ids."""
        self._merge(cand.label, cand)
        for case in self.cf.cases:
            for k in range(1, self.repeat + 1):
                tid = f"{key}{case.id}.{k}"
                ws = self._sandbox(case, tid)
                where = f"{self.cf.path}: case {case.id} ({cand.label})"
                self.specs.append(_materialise(cand.spec, ws, where))
                judges = self._judges(case, cand, tid)
                self.drafts.append(_Draft(vi, case, k, tid, ws, judges))

    def _merge(self, who: str, extras: Candidate | SavedAgent) -> None:
        source = str(self.cf.path)
        _merge(self.styles, extras.styles, "style", who, source)
        _merge(self.providers, extras.providers, "provider options", who, source)
        _merge(self.prices, extras.prices, "price", who, source)

    def _sandbox(self, case: Case, tid: str) -> Path:
        """A fresh copy of the case's fixture (or an empty folder) for case run ``tid``."""
        ws = self.run_dir / "cases" / tid
        try:
            if case.workspace is not None:
                shutil.copytree(case.workspace, ws, symlinks=True)
            else:
                ws.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(
                f"{self.cf.path}: case {case.id}: cannot prepare its workspace {ws}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        return ws

    def _judges(self, case: Case, cand: Candidate, tid: str) -> list[tuple[int, str]]:
        """A judge agent per judge check of case run ``tid``: (index of the check, task id)."""
        judges: list[tuple[int, str]] = []
        rubrics = [i for i, c in enumerate(case.checks) if c.kind == "judge"]
        for n, ci in enumerate(rubrics, 1):
            spec, saved = _judge(case.checks[ci], self.cf, cand, self.cache)
            if saved is not None:
                self._merge(saved.ref, saved)
            self.specs.append(spec)
            judges.append((ci, f"{tid}.judge" + (str(n) if len(rubrics) > 1 else "")))
        return judges


def _place(
    drafts: Sequence[_Draft], named: Sequence[AgentSpec], cands: Sequence[Candidate], repeat: int
) -> tuple[list[Slot], list[Task], dict[str, Path]]:
    """The case runs' slots and tasks, and each agent's sandbox, once the agents are named
    (``named`` holds each draft's agent followed by its judges)."""
    slots, tasks, workspaces = [], [], {}
    i = 0
    for d in drafts:
        agent = named[i].name or ""
        workspaces[agent] = d.workspace
        label = cands[d.variant].label
        tasks.append(
            Task(
                id=TaskId(d.task_id),
                prompt=d.case.prompt,
                title=f"{label} · {d.case.title or d.case.id} ({d.repeat}/{repeat})",
                agent=agent,
                max_attempts=d.case.max_attempts,
                timeout=d.case.timeout,
            )
        )
        for n, (ci, jid) in enumerate(d.judges, 1):
            judge = named[i + n].name or ""
            workspaces[judge] = d.workspace  # a judge may read what the agent left in the sandbox
            tasks.append(
                Task(
                    id=TaskId(jid),
                    prompt=_judge_prompt(d.case, d.case.checks[ci], d.task_id),
                    title=f"judge {label} · {d.case.id} ({d.repeat}/{repeat})",
                    needs=(TaskId(d.task_id),),
                    agent=judge,
                    style=VERDICT_STYLE,
                )
            )
        slots.append(_slot(d, agent, cands[d.variant].spec.style))
        i += 1 + len(d.judges)
    return slots, tasks, workspaces


def _slot(d: _Draft, agent: str, style: str) -> Slot:
    return Slot(
        variant=d.variant,
        case=d.case,
        repeat=d.repeat,
        task_id=d.task_id,
        agent=agent,
        workspace=d.workspace,
        style=style,
        judges=tuple(d.judges),
    )


def _merge(into: dict[str, Any], more: Mapping[str, Any], what: str, who: str, source: str) -> None:
    for k, v in more.items():
        if k in into and into[k] != v:
            raise UsageError(f"{source}: {who} defines {what} {k!r} differently from another spec")
        into[k] = v


def _judge(
    check: Check, cf: CaseFile, cand: Candidate, cache: dict[str, SavedAgent]
) -> tuple[AgentSpec, SavedAgent | None]:
    ref = check.judge_agent or cf.judge_agent
    provider = check.judge_provider or cf.judge_provider
    if ref:
        if ref not in cache:
            try:
                cache[ref] = Library().get(ref)
            except UsageError as exc:
                raise UsageError(f"{cf.path}: judge agent: {exc}") from None
        saved = cache[ref]
        spec = saved.spec if provider is None else saved.spec.with_provider(provider)
        return dataclasses.replace(spec, name=None), saved
    spec = AgentSpec(
        role="judge",
        provider=provider or cand.spec.provider,
        system_prompt=JUDGE_SYSTEM,
        style=VERDICT_STYLE,
        max_turns=4,
    )
    return spec, None


def _judge_prompt(case: Case, check: Check, task_id: str) -> str:
    return (
        "Grade one answer against a rubric.\n\n"
        f"The task the answer was written for:\n<<<\n{case.prompt}\n>>>\n\n"
        f"Rubric (what a passing answer does):\n{check.rubric}\n\n"
        f"The answer is the result of task {task_id}, given below. Decide whether it meets "
        'the rubric and answer only with JSON: {"verdict": "pass" or "fail", '
        '"reason": "one sentence"}.'
    )


def _materialise(spec: AgentSpec, ws: Path, where: str) -> AgentSpec:
    """The spec with its ``{file:}``/``{glob:}`` context read from the case's sandbox."""
    if not any(isinstance(c, Mapping) and ({"file", "glob"} & set(c)) for c in spec.context):
        return spec
    try:
        bundle = load_context(
            spec.context, Workspace(ws), max_tokens=spec.context_max_tokens, where="context"
        )
    except PlanError as exc:
        raise UsageError(f"{where}: {exc.field or 'context'}: {exc.detail}") from None
    return dataclasses.replace(spec, context=({"text": bundle.text},) if bundle.text else ())


# -- tools in the sandbox ----------------------------------------------------------------------


def sandboxed_tools(build: Build, given: Sequence[ToolSpec]) -> list[ToolSpec]:
    """The tools of the eval's run: those the agents use that need a workspace, wrapped to
    work in the caller's sandbox, then the ``given`` ones not wrapped."""
    roots = {agent: Workspace(path) for agent, path in build.workspaces.items()}
    named = {**BUILTIN_TOOLS, **{t.name: t for t in given}}
    used = {t for a in build.plan.agents for t in a.tools}
    out = [
        _sandboxed(named[t], roots) for t in sorted(used) if t in named and named[t].needs_context
    ]
    wrapped = {t.name for t in out}
    return out + [t for t in given if t.name not in wrapped]


def _sandboxed(spec: ToolSpec, roots: Mapping[str, Workspace]) -> ToolSpec:
    """``spec`` run in the sandbox of the agent that calls it (its case's workspace)."""
    func = spec.func

    def inside(ctx: ToolContext) -> ToolContext:
        return dataclasses.replace(ctx, workspace=roots.get(ctx.agent, ctx.workspace))

    wrapper: Any
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(ctx: ToolContext, *args: Any, **kwargs: Any) -> Any:
            return await func(inside(ctx), *args, **kwargs)
    else:

        @functools.wraps(func)
        def wrapper(ctx: ToolContext, *args: Any, **kwargs: Any) -> Any:
            return func(inside(ctx), *args, **kwargs)

    return dataclasses.replace(spec, func=wrapper)

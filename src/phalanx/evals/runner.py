"""Evals: measure an agent spec on a file of cases before scaling it ("perfect one, then
replicate").

A case file (YAML, checked with one-line errors like a plan) lists cases: a prompt, an
optional workspace fixture, and checks on the answer::

    name: reviewer-cases
    judge: {provider: "anthropic:claude-haiku-4-5"}      # default grader for judge checks
    checks: [{style_valid: true}]                         # applied to every case
    cases:
      - id: sqli
        prompt: Review the function in db.py.
        workspace: fixtures/sqli                          # copied for every case run
        checks:
          - contains: injection                           # case-insensitive, all of a list
          - regex: "(?i)parameteri[sz]ed"
          - json_schema: {type: object, required: [verdict]}
          - command: [python3, -m, pytest, -q]            # in the case's workspace, exit 0
          - max_tokens: 4000                              # input + output, all attempts
          - max_seconds: 60
          - judge: "Names the SQL injection and shows the fix."

:func:`evaluate` runs every case of every spec, ``repeat`` times, as ONE plan through
:func:`phalanx.api.run`: the journal, the rate governor and the budgets of a normal run apply,
and the run shows in ``phalanx runs``, ``status``, ``report`` and the dashboard. Each case run
has its own agent and its own copy of the fixture (the agent's file tools and its
``run_command`` work there, its ``{file:}``/``{glob:}`` context is read from there); a judge
check is a task that needs the case's task, pinned to a judge agent that answers
``{"verdict": "pass"|"fail", "reason": ...}``. Then the checks are scored, and the report
(``eval.json``, ``eval.md``) is written beside the run's outputs. A saved agent's results
are appended to its eval history in the library (:mod:`phalanx.plan.library`), which is what
``limits.min_eval_score`` reads.

Statistics, per spec: pass rate = case runs whose task succeeded and passed every check,
over the case runs that ran; its 95% Wilson interval (over every case run, so repeats narrow
it); tokens and cost of the spec's own tasks (judges are counted apart); latency per case
run from its first attempt's start to its task's end, p50 and p95 by the nearest-rank
method; style validity = case runs whose first answer parsed in the spec's style, without a
re-ask. With several specs, the winner on quality per dollar has the highest pass rate per
dollar of cost per case run (per 1,000 tokens when a cost is unknown or zero).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._util import describe_error, kill_group, percentile
from ..agents.context import load_context
from ..agents.spec import AgentSpec, assign_names
from ..agents.styles import StyleError, get_style, parse_json, parse_output
from ..agents.tools import BUILTIN_TOOLS, ToolContext, ToolSpec, scrub_env
from ..agents.workspace import Workspace
from ..api import RunResult, new_run_id, run, state_dir, sync
from ..cost import ZERO, Price, Usage
from ..events import (
    Alert,
    AttemptStarted,
    EventSink,
    OutputRejected,
    RunFinished,
    TaskFailed,
    TaskSkipped,
    TaskSucceeded,
)
from ..exceptions import PlanError, UsageError
from ..ids import TaskId
from ..journal import Journal
from ..plan.config import RateLimit
from ..plan.file import _loc_str, from_plan, read_yaml
from ..plan.library import EvalRecord, Library, SavedAgent
from ..plan.model import Commands, Limits, Plan, Task
from ..plan.schema import CommandsModel, PriceModel, RateLimitModel
from ..providers import Provider

__all__ = [
    "CHECK_KINDS",
    "Candidate",
    "Case",
    "CaseFile",
    "CaseRun",
    "Check",
    "CheckResult",
    "Comparison",
    "EvalReport",
    "VariantReport",
    "candidate",
    "compare",
    "evaluate",
    "evaluate_sync",
    "load_cases",
    "percentile",
    "wilson_interval",
]

CHECK_KINDS = (
    "contains",
    "regex",
    "json_schema",
    "style_valid",
    "command",
    "max_tokens",
    "max_seconds",
    "judge",
)
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
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
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
COMMAND_TIMEOUT = 60.0
_OUTPUT_TAIL = 2000
_MAX_VARIANTS = 26


# -- case files --------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _JudgeModel(BaseModel):
    model_config = _STRICT

    provider: str | None = None
    agent: str | None = None


class _LimitsModel(BaseModel):
    model_config = _STRICT

    max_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_wall_seconds: float | None = Field(default=None, gt=0)
    rate_limits: dict[str, RateLimitModel] = {}


class _CaseModel(BaseModel):
    model_config = _STRICT

    id: str
    prompt: str
    title: str = ""
    workspace: str | None = None
    checks: list[Any] = []
    max_attempts: int = Field(default=3, ge=1, le=100)
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class _CaseFileModel(BaseModel):
    model_config = _STRICT

    name: str | None = None
    description: str = ""
    workspace: str | None = None
    providers: dict[str, dict[str, Any]] = {}
    prices: dict[str, PriceModel] = {}
    limits: _LimitsModel = _LimitsModel()
    commands: CommandsModel = CommandsModel()
    judge: _JudgeModel = _JudgeModel()
    checks: list[Any] = []
    cases: list[_CaseModel] = Field(min_length=1)


@dataclass(frozen=True, kw_only=True)
class Check:
    """One check on a case run. ``kind`` is one of :data:`CHECK_KINDS`."""

    kind: str
    needles: tuple[str, ...] = ()  # contains
    pattern: str = ""  # regex
    schema: Mapping[str, Any] | None = None  # json_schema
    argv: tuple[str, ...] = ()  # command
    timeout: float = COMMAND_TIMEOUT  # command
    limit: float = 0.0  # max_tokens, max_seconds
    rubric: str = ""  # judge
    judge_provider: str | None = None
    judge_agent: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "contains":
            return "contains " + ", ".join(repr(n) for n in self.needles)
        if self.kind == "regex":
            return f"regex /{self.pattern}/"
        if self.kind == "command":
            return "command " + " ".join(self.argv)
        if self.kind in ("max_tokens", "max_seconds"):
            return f"{self.kind} {self.limit:g}"
        return self.kind


@dataclass(frozen=True, kw_only=True)
class Case:
    id: str
    prompt: str
    title: str = ""
    workspace: Path | None = None  # a fixture folder, copied for every case run
    checks: tuple[Check, ...] = ()
    max_attempts: int = 3
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class CaseFile:
    name: str
    path: Path
    cases: tuple[Case, ...]
    description: str = ""
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    commands: Commands = field(default_factory=Commands)
    judge_provider: str | None = None
    judge_agent: str | None = None


LineOf = Any  # Callable[[tuple[int | str, ...], bool], int | None]


def _fail(message: str, source: str, where: str, line_of: LineOf) -> PlanError:
    loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", where) if p)
    return PlanError(message, file=source, field=where, line=line_of(loc, False))


def _parse_check(raw: Any, where: str, source: str, line_of: LineOf) -> Check:
    kinds = ", ".join(CHECK_KINDS)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise _fail(f"a check is one mapping key: {kinds}", source, where, line_of)
    ((kind, value),) = raw.items()
    here = f"{where}.{kind}"

    def bad(message: str) -> PlanError:
        return _fail(message, source, here, line_of)

    if kind == "contains":
        needles = [value] if isinstance(value, str) else value
        if not isinstance(needles, list) or not needles:
            raise bad("expected a string or a list of strings")
        if not all(isinstance(n, str) and n for n in needles):
            raise bad("expected non-empty strings")
        return Check(kind=kind, needles=tuple(needles))
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise bad("expected a regular expression (a string)")
        try:
            re.compile(value)
        except re.error as exc:
            raise bad(f"the regular expression does not compile: {exc}") from None
        return Check(kind=kind, pattern=value)
    if kind == "json_schema":
        if not isinstance(value, Mapping):
            raise bad("expected a JSON Schema (a mapping)")
        from jsonschema import exceptions, validators

        try:
            validators.validator_for(value, default=validators.Draft202012Validator).check_schema(
                dict(value)
            )
        except exceptions.SchemaError as exc:
            raise bad(f"the JSON Schema is invalid: {exc.message}") from None
        return Check(kind=kind, schema=dict(value))
    if kind == "style_valid":
        if value is not True:
            raise bad("the only value is true")
        return Check(kind=kind)
    if kind == "command":
        return _parse_command(value, bad)
    if kind in ("max_tokens", "max_seconds"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise bad("expected a positive number")
        if kind == "max_tokens" and not isinstance(value, int):
            raise bad("expected a whole number of tokens")
        return Check(kind=kind, limit=float(value))
    if kind == "judge":
        return _parse_judge(value, bad)
    raise _fail(f"unknown check {kind!r} (known: {kinds})", source, where, line_of)


def _parse_command(value: Any, bad: Any) -> Check:
    timeout: Any = COMMAND_TIMEOUT
    argv = value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"run", "timeout"})
        if unknown:
            raise bad(f"unknown key {unknown[0]!r} (run, timeout)")
        argv, timeout = value.get("run"), value.get("timeout", COMMAND_TIMEOUT)
    if isinstance(argv, str):
        raise bad("expected an argv list such as [pytest, -q] (no shell is used)")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise bad("expected a non-empty argv list of strings, e.g. [pytest, -q]")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise bad("timeout must be a positive number of seconds")
    return Check(kind="command", argv=tuple(argv), timeout=float(timeout))


def _parse_judge(value: Any, bad: Any) -> Check:
    if isinstance(value, str):
        value = {"rubric": value}
    if not isinstance(value, Mapping):
        raise bad("expected a rubric, or {rubric: ..., provider: ..., agent: ...}")
    unknown = sorted(set(value) - {"rubric", "provider", "agent"})
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (rubric, provider, agent)")
    rubric = value.get("rubric")
    if not isinstance(rubric, str) or not rubric.strip():
        raise bad("a judge needs a rubric: what a passing answer does")
    for key in ("provider", "agent"):
        if value.get(key) is not None and not isinstance(value.get(key), str):
            raise bad(f"{key} must be a string")
    return Check(
        kind="judge",
        rubric=rubric.strip(),
        judge_provider=value.get("provider"),
        judge_agent=value.get("agent"),
    )


def load_cases(path: str | os.PathLike[str]) -> CaseFile:
    """Read and check a case file; every problem is one :class:`PlanError` line naming the
    file, the line and the field."""
    source = str(path)
    data, line_of = read_yaml(path, "case file")

    if not isinstance(data, Mapping):
        raise PlanError("a case file is a mapping with 'cases'", file=source, line=1)
    try:
        model = _CaseFileModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        more = exc.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise PlanError(
            describe_error(err) + suffix,
            file=source,
            field=_loc_str(loc),
            line=line_of(loc, err["type"] == "extra_forbidden"),
        ) from None
    return _case_file(model, Path(path), line_of)


def _case_file(model: _CaseFileModel, path: Path, line_of: LineOf) -> CaseFile:
    source, base = str(path), path.resolve().parent

    def folder(value: str | None, where: str) -> Path | None:
        if value is None:
            return None
        found = (base / value).resolve()
        if not found.is_dir():
            raise _fail(
                f"no such folder {value!r} (relative to the case file)", source, where, line_of
            )
        return found

    shared = [_parse_check(c, f"checks[{i}]", source, line_of) for i, c in enumerate(model.checks)]
    default_ws = folder(model.workspace, "workspace")
    cases, seen = [], set()
    for i, c in enumerate(model.cases):
        if not CASE_ID_RE.fullmatch(c.id):
            raise _fail(
                f"invalid id {c.id!r} (letters, digits, '_', '-'; up to 64)",
                source,
                f"cases[{i}].id",
                line_of,
            )
        if c.id in seen:
            raise _fail(f"duplicate case id {c.id!r}", source, f"cases[{i}].id", line_of)
        seen.add(c.id)
        own = [
            _parse_check(x, f"cases[{i}].checks[{j}]", source, line_of)
            for j, x in enumerate(c.checks)
        ]
        cases.append(
            Case(
                id=c.id,
                prompt=c.prompt,
                title=c.title,
                workspace=folder(c.workspace, f"cases[{i}].workspace") or default_ws,
                checks=(*shared, *own),
                max_attempts=c.max_attempts,
                timeout=c.timeout,
            )
        )
    lim = model.limits
    return CaseFile(
        name=model.name or path.stem,
        path=path,
        cases=tuple(cases),
        description=model.description,
        providers=model.providers,
        prices={k: Price(**v.model_dump()) for k, v in model.prices.items()},
        limits=Limits(
            max_usd=lim.max_usd,
            max_tokens=lim.max_tokens,
            max_wall_seconds=lim.max_wall_seconds,
            rate_limits={k: RateLimit(**v.model_dump()) for k, v in lim.rate_limits.items()},
        ),
        commands=Commands(allow=tuple(model.commands.allow), timeout=model.commands.timeout),
        judge_provider=model.judge.provider,
        judge_agent=model.judge.agent,
    )


# -- the specs under test ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A spec under test: its label in reports, the spec, what it needs from a plan (its own
    styles, provider options, prices) and, for a saved agent, where results are recorded."""

    label: str
    spec: AgentSpec
    styles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    saved: SavedAgent | None = None


def candidate(ref: str | AgentSpec | SavedAgent | Candidate) -> Candidate:
    """A saved agent (``reviewer``, ``reviewer@2``), an agent of a plan (``plan.yaml:ROLE``
    or ``plan.yaml:NAME``), or a spec object."""
    if isinstance(ref, Candidate):
        return ref
    if isinstance(ref, SavedAgent):
        return _from_saved(ref)
    if isinstance(ref, AgentSpec):
        return Candidate(label=ref.name or ref.role, spec=dataclasses.replace(ref, name=None))
    path, sep, _ = ref.rpartition(":")
    if sep and (path.endswith((".yaml", ".yml")) or Path(path).is_file()):
        spec, styles, providers, prices = from_plan(ref)
        return Candidate(
            label=ref,
            spec=dataclasses.replace(spec, name=None),
            styles=styles,
            providers=providers,
            prices=prices,
        )
    return _from_saved(Library().get(ref))


def _from_saved(saved: SavedAgent) -> Candidate:
    return Candidate(
        label=saved.ref,
        spec=saved.spec,
        styles=saved.styles,
        providers=saved.providers,
        prices=saved.prices,
        saved=saved,
    )


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    check: str  # its label
    kind: str
    ok: bool
    detail: str = ""  # why it failed; a judge's reason either way


@dataclass(frozen=True, kw_only=True)
class CaseRun:
    """One case run: a case, on one spec, once."""

    variant: str
    case: str
    repeat: int
    task_id: str
    agent: str
    state: str  # the task's: succeeded | failed | skipped | pending (not run)
    passed: bool
    checks: tuple[CheckResult, ...] = ()
    output: str = ""
    usage: Usage = ZERO
    latency: float | None = None
    style_valid: bool = False
    reasks: int = 0
    error: str | None = None
    workspace: str = ""
    judged: bool = True  # its judges, if any, ran (a budget may stop them)

    @property
    def ran(self) -> bool:
        """Its task and its judges ran to an end: it counts in the statistics."""
        return self.state != "pending" and self.judged

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["usage"] = self.usage.to_dict()
        return d


@dataclass(frozen=True, kw_only=True)
class VariantReport:
    """Everything measured for one spec."""

    label: str
    key: str  # its prefix in task ids ("" when it is the only spec)
    provider: str | None
    runs: tuple[CaseRun, ...]
    n: int  # case runs that ran
    passed: int
    not_run: int
    pass_rate: float
    ci_low: float
    ci_high: float
    style_validity: float
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: unknown (a model without a price)
    p50: float | None
    p95: float | None
    per_case: Mapping[str, tuple[int, int]]  # case -> (passed, ran)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_per_run(self) -> float | None:
        return None if self.cost_usd is None or not self.n else self.cost_usd / self.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "key": self.key,
            "provider": self.provider,
            "n": self.n,
            "passed": self.passed,
            "not_run": self.not_run,
            "pass_rate": self.pass_rate,
            "ci95": [self.ci_low, self.ci_high],
            "style_validity": self.style_validity,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "cost_per_run_usd": self.cost_per_run,
            "latency_p50_seconds": self.p50,
            "latency_p95_seconds": self.p95,
            "per_case": {k: {"passed": p, "ran": n} for k, (p, n) in self.per_case.items()},
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Which spec wins on quality per dollar, and by what measure."""

    metric: str  # "passes per $" | "passes per 1k tokens" | "pass rate"
    values: Mapping[str, float | None]
    winner: str | None
    best_pass_rate: str | None
    note: str = ""

    def sentence(self) -> str:
        if self.winner is None:
            return f"no winner: {self.note}"
        shown = ", ".join(f"{label} {_num(v)}" for label, v in self.values.items() if v is not None)
        text = f"winner on quality per dollar: {self.winner} ({self.metric}: {shown})"
        if self.best_pass_rate and self.best_pass_rate != self.winner:
            text += f" · best pass rate: {self.best_pass_rate}"
        return text + (f" · {self.note}" if self.note else "")


@dataclass(frozen=True, kw_only=True)
class EvalReport:
    run_id: str
    cases: str  # the case file's name
    cases_path: str
    repeat: int
    status: str  # the run's
    simulated: bool
    variants: tuple[VariantReport, ...]
    comparison: Comparison | None
    judge_usage: Usage = ZERO
    judged: int = 0
    run_dir: Path = Path(".")
    recorded: tuple[str, ...] = ()  # saved agents whose history got this eval
    notes: tuple[str, ...] = ()
    finished_at: float = 0.0

    @property
    def complete(self) -> bool:
        return all(v.not_run == 0 for v in self.variants)

    @property
    def json_path(self) -> Path:
        return self.run_dir / "eval.json"

    @property
    def markdown_path(self) -> Path:
        return self.run_dir / "eval.md"

    def variant(self, label: str) -> VariantReport:
        for v in self.variants:
            if v.label == label:
                return v
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "run_id": self.run_id,
            "cases": self.cases,
            "cases_path": self.cases_path,
            "repeat": self.repeat,
            "status": self.status,
            "simulated": self.simulated,
            "complete": self.complete,
            "variants": [v.to_dict() for v in self.variants],
            "comparison": None
            if c is None
            else {
                "metric": c.metric,
                "values": dict(c.values),
                "winner": c.winner,
                "best_pass_rate": c.best_pass_rate,
                "note": c.note,
            },
            "judges": {"verdicts": self.judged, "usage": self.judge_usage.to_dict()},
            "recorded": list(self.recorded),
            "notes": list(self.notes),
        }

    def render_text(self, *, failures: int = 10) -> str:
        """The terminal summary: a row per spec, the winner, the first failed case runs."""
        rows = [_row(v) for v in self.variants]
        head = ("SPEC", "PASS", "95% CI", "STYLE OK", "TOKENS IN/OUT", "COST", "P50", "P95")
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        out = [self._title()]
        for row in [head, *rows]:
            cells = zip(row, widths, strict=True)
            out.append("  ".join(cell.ljust(w) for cell, w in cells).rstrip())
        if self.comparison is not None:
            out.append(self.comparison.sentence())
        failed = [(v.label, r) for v in self.variants for r in v.runs if r.ran and not r.passed]
        for label, r in failed[:failures]:
            out.append(f"  ✗ {r.task_id} ({label}): {_why(r)}")
        if len(failed) > failures:
            out.append(f"  … and {len(failed) - failures} more failed (see {self.markdown_path})")
        out.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(out)

    def _title(self) -> str:
        n_cases = len({r.case for v in self.variants for r in v.runs})
        sim = " · SIMULATED" if self.simulated else ""
        return (
            f"eval {self.run_id} · {self.cases}: {n_cases} case{'s' if n_cases != 1 else ''}"
            f" × {self.repeat} repeat{'s' if self.repeat != 1 else ''}{sim}"
        )

    def render_markdown(self) -> str:
        out = [f"# {self._title()}", ""]
        out.append(f"- cases: `{self.cases_path}`")
        out.append(f"- run: `{self.run_id}` ({self.status}); `phalanx report {self.run_id}`")
        if self.judged:
            cost = _money(self.judge_usage.cost_usd)
            out.append(
                f"- judges: {self.judged} verdicts, {self.judge_usage.total_tokens:,} tokens, "
                f"{cost} (not counted in the specs' cost)"
            )
        if self.recorded:
            out.append(f"- recorded in the library: {', '.join(self.recorded)}")
        out.extend(f"- note: {n}" for n in self.notes)
        out += ["", "| spec | pass | 95% CI | style ok | tokens in/out | cost | p50 | p95 |"]
        out.append("|---|---|---|---|---|---|---|---|")
        out += ["| " + " | ".join(_row(v)) + " |" for v in self.variants]
        if self.comparison is not None:
            out += ["", self.comparison.sentence()]
        out += ["", "## Cases", "", "| case | " + " | ".join(v.label for v in self.variants) + " |"]
        out.append("|---|" + "---|" * len(self.variants))
        for case in dict.fromkeys(r.case for v in self.variants for r in v.runs):
            cells = ["{}/{}".format(*v.per_case.get(case, (0, 0))) for v in self.variants]
            out.append(f"| {case} | " + " | ".join(cells) + " |")
        out += ["", "## Case runs", ""]
        for v in self.variants:
            for r in v.runs:
                mark = "✓" if r.passed else "✗"
                lat = "-" if r.latency is None else f"{r.latency:.2f}s"
                out.append(
                    f"- {mark} `{r.task_id}` {v.label}: {r.state}, {r.usage.total_tokens} "
                    f"tokens, {lat}" + (f", error: {r.error}" if r.error else "")
                )
                for c in r.checks:
                    detail = f": {c.detail}" if c.detail else ""
                    out.append(f"  - {'✓' if c.ok else '✗'} {c.check}{detail}")
        return "\n".join(out) + "\n"


def _why(r: CaseRun) -> str:
    """Why a case run failed, on one line: its task's error, or its first failed check."""
    if r.state != "succeeded":
        return f"task {r.state}" + (f": {r.error}" if r.error else "")
    bad = [c for c in r.checks if not c.ok]
    first = f"{bad[0].check}: {bad[0].detail}" if bad[0].detail else bad[0].check
    more = (
        f" (+{len(bad) - 1} more failed check{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    )
    return first[:160] + more


def _num(v: float) -> str:
    return f"{v:,.1f}" if v >= 10 else f"{v:.3g}"


def _money(cost: float | None) -> str:
    if cost is None:
        return "n/a"
    if cost == 0:
        return "$0"
    return f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _row(v: VariantReport) -> tuple[str, ...]:
    not_run = f", {v.not_run} not run" if v.not_run else ""
    return (
        v.label,
        f"{100 * v.pass_rate:.1f}% ({v.passed}/{v.n}{not_run})",
        f"{100 * v.ci_low:.1f}–{100 * v.ci_high:.1f}%",
        f"{100 * v.style_validity:.1f}%",
        f"{v.input_tokens:,}/{v.output_tokens:,}",
        _money(v.cost_usd),
        _secs(v.p50),
        _secs(v.p95),
    )


# -- statistics --------------------------------------------------------------------------------


def wilson_interval(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (95% by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def compare(variants: Sequence[VariantReport]) -> Comparison | None:
    """The winner on quality per dollar: the highest pass rate per dollar of cost per case
    run; per 1,000 tokens when some cost is unknown or zero. Ties go to the higher pass
    rate, then to the spec given first."""
    if len(variants) < 2:
        return None
    if all(v.cost_per_run for v in variants):
        metric = "passes per $"
        values: dict[str, float | None] = {
            v.label: v.pass_rate / v.cost_per_run for v in variants if v.cost_per_run
        }
        note = ""
    elif all(v.n and v.tokens for v in variants):
        metric = "passes per 1k tokens"
        values = {v.label: v.pass_rate / (v.tokens / v.n / 1000) for v in variants}
        note = "a cost is unknown or zero, so quality is compared per 1,000 tokens"
    else:
        metric, note = "pass rate", "no tokens were counted, so only pass rates are compared"
        values = {v.label: v.pass_rate for v in variants}
    order = sorted(
        range(len(variants)),
        key=lambda i: (-(values.get(variants[i].label) or 0.0), -variants[i].pass_rate, i),
    )
    best_rate = max(variants, key=lambda v: v.pass_rate)
    if best_rate.pass_rate == 0:
        return Comparison(
            metric=metric, values=values, winner=None, best_pass_rate=None, note="no spec passed"
        )
    first, second = variants[order[0]], variants[order[1]]
    if first.ci_low <= second.ci_high and second.ci_low <= first.ci_high:
        more = "the pass rates' 95% intervals overlap: more --repeat would make it surer"
        note = f"{note} · {more}" if note else more
    return Comparison(
        metric=metric,
        values=values,
        winner=first.label,
        best_pass_rate=best_rate.label,
        note=note,
    )


# -- building the eval plan --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Slot:
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
class _Build:
    plan: Plan
    slots: tuple[_Slot, ...]
    workspaces: Mapping[str, Path]  # agent -> its sandbox


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


def _build(cf: CaseFile, cands: Sequence[Candidate], repeat: int, run_dir: Path) -> _Build:
    many = len(cands) > 1
    specs: list[AgentSpec] = []
    drafts: list[tuple[int, Case, int, str, Path, list[tuple[int, str]]]] = []
    styles: dict[str, Any] = {VERDICT_STYLE: VERDICT_CONFIG}
    providers: dict[str, Any] = {}
    prices: dict[str, Any] = {}
    cache: dict[str, SavedAgent] = {}
    source = str(cf.path)
    for vi, cand in enumerate(cands):
        _merge(styles, cand.styles, "style", cand.label, source)
        _merge(providers, cand.providers, "provider options", cand.label, source)
        _merge(prices, cand.prices, "price", cand.label, source)
        key = f"{chr(ord('a') + vi)}." if many else ""
        for case in cf.cases:
            for k in range(1, repeat + 1):
                tid = f"{key}{case.id}.{k}"
                ws = run_dir / "cases" / tid
                try:
                    if case.workspace is not None:
                        shutil.copytree(case.workspace, ws, symlinks=True)
                    else:
                        ws.mkdir(parents=True)
                except OSError as exc:
                    raise UsageError(
                        f"{source}: case {case.id}: cannot prepare its workspace {ws}: "
                        f"{getattr(exc, 'strerror', None) or exc}"
                    ) from None
                where = f"{cf.path}: case {case.id} ({cand.label})"
                specs.append(_materialise(cand.spec, ws, where))
                judges: list[tuple[int, str]] = []
                rubrics = [i for i, c in enumerate(case.checks) if c.kind == "judge"]
                for n, ci in enumerate(rubrics, 1):
                    spec, saved = _judge(case.checks[ci], cf, cand, cache)
                    if saved is not None:
                        _merge(styles, saved.styles, "style", saved.ref, source)
                        _merge(providers, saved.providers, "provider options", saved.ref, source)
                        _merge(prices, saved.prices, "price", saved.ref, source)
                    specs.append(spec)
                    judges.append((ci, f"{tid}.judge" + (str(n) if len(rubrics) > 1 else "")))
                drafts.append((vi, case, k, tid, ws, judges))
    named = assign_names(specs)
    slots, tasks, workspaces = [], [], {}
    i = 0
    for vi, case, k, tid, ws, judges in drafts:
        agent = named[i].name or ""
        workspaces[agent] = ws
        label = cands[vi].label
        tasks.append(
            Task(
                id=TaskId(tid),
                prompt=case.prompt,
                title=f"{label} · {case.title or case.id} ({k}/{repeat})",
                agent=agent,
                max_attempts=case.max_attempts,
                timeout=case.timeout,
            )
        )
        for n, (ci, jid) in enumerate(judges, 1):
            judge = named[i + n].name or ""
            workspaces[judge] = ws  # a judge may read what the agent left in the sandbox
            tasks.append(
                Task(
                    id=TaskId(jid),
                    prompt=_judge_prompt(case, case.checks[ci], tid),
                    title=f"judge {label} · {case.id} ({k}/{repeat})",
                    needs=(TaskId(tid),),
                    agent=judge,
                    style=VERDICT_STYLE,
                )
            )
        slots.append(
            _Slot(
                variant=vi,
                case=case,
                repeat=k,
                task_id=tid,
                agent=agent,
                workspace=ws,
                style=cands[vi].spec.style,
                judges=tuple(judges),
            )
        )
        i += 1 + len(judges)
    providers.update(cf.providers)
    prices.update(cf.prices)
    labels = " vs ".join(c.label for c in cands)
    plan = Plan.build(
        name=f"eval {cf.name}: {labels}"[:120],
        agents=named,
        tasks=tasks,
        limits=dataclasses.replace(cf.limits, work_stealing=False),
        providers=providers,
        prices=prices,
        styles=styles,
        commands=cf.commands,
        source=source,
    )
    return _Build(plan=plan, slots=tuple(slots), workspaces=workspaces)


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


def _tools(build: _Build, given: Sequence[ToolSpec]) -> list[ToolSpec]:
    roots = {agent: Workspace(path) for agent, path in build.workspaces.items()}
    named = {**BUILTIN_TOOLS, **{t.name: t for t in given}}
    used = {t for a in build.plan.agents for t in a.tools}
    out = [
        _sandboxed(named[t], roots) for t in sorted(used) if t in named and named[t].needs_context
    ]
    wrapped = {t.name for t in out}
    return out + [t for t in given if t.name not in wrapped]


# -- scoring -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Timing:
    start: float | None = None
    end: float | None = None
    rejected: int = 0


def _timings(journal_path: Path, run_id: str) -> tuple[dict[str, _Timing], float]:
    """Per task: its first attempt's start, its end and its re-asks; and the run's end."""
    out: dict[str, _Timing] = {}
    finished = 0.0
    journal = Journal(journal_path)
    try:
        for _, e in journal.read_events(run_id):
            if isinstance(e, AttemptStarted):
                t = out.setdefault(e.task_id, _Timing())
                t.start = e.ts if t.start is None else t.start
            elif isinstance(e, TaskSucceeded | TaskFailed | TaskSkipped):
                out.setdefault(e.task_id, _Timing()).end = e.ts
            elif isinstance(e, OutputRejected):
                out.setdefault(e.task_id, _Timing()).rejected += 1
            elif isinstance(e, RunFinished):
                finished = e.ts
    finally:
        journal.close()
    return out, finished


def _run_command(argv: Sequence[str], cwd: Path, timeout: float) -> tuple[bool, str]:
    """Run a check's command in the case's sandbox: no shell, no secrets in its environment,
    its whole process group killed when it ends or times out. (ok, what happened)."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=scrub_env(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return False, f"cannot run {argv[0]}: {exc.strerror or exc}"
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()
            return False, f"did not finish within {timeout:g}s (killed)"
        finally:
            kill_group(proc.pid)
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - _OUTPUT_TAIL))
        tail = out.read().decode("utf-8", "replace")
    if code == 0:
        return True, "exit 0"
    last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
    return False, f"exit {code}" + (f": {last[:200]}" if last else "")


def _structured(output: str, style: str) -> Any:
    base = get_style(style)
    if base.structured:
        return parse_output(style, output)
    return parse_json(output)


def _check_one(
    check: Check,
    slot: _Slot,
    result: RunResult,
    timing: _Timing,
    command: tuple[bool, str] | None,
) -> CheckResult:
    tr = result.tasks[slot.task_id]
    output, label = tr.output, check.label

    def res(ok: bool, detail: str = "") -> CheckResult:
        return CheckResult(check=label, kind=check.kind, ok=ok, detail=detail)

    answered = tr.state == "succeeded"
    no_answer = f"no answer: the task {tr.state}"
    latency = None if timing.start is None or timing.end is None else timing.end - timing.start
    if check.kind == "max_tokens":
        used = tr.usage.total_tokens
        return res(
            used <= check.limit,
            f"{used:,} tokens" + ("" if used <= check.limit else f" > {check.limit:,.0f}"),
        )
    if check.kind == "max_seconds":
        if latency is None:
            return res(False, "not timed: the task did not run")
        return res(
            latency <= check.limit,
            f"{latency:.2f}s" + ("" if latency <= check.limit else f" > {check.limit:g}s"),
        )
    if check.kind == "style_valid":
        if not answered:
            return res(False, no_answer)
        if timing.rejected:
            return res(
                False, f"the first answer was not valid {slot.style} ({timing.rejected} re-ask(s))"
            )
        return res(True)
    if check.kind == "command":
        if command is None:
            return res(False, f"not run: the task {tr.state}")
        return res(*command)
    if check.kind == "judge":
        return _verdict(check, slot, result)
    if not answered:
        return res(False, no_answer)
    if check.kind == "contains":
        missing = [n for n in check.needles if n.lower() not in output.lower()]
        return res(not missing, "missing " + ", ".join(repr(m) for m in missing) if missing else "")
    if check.kind == "regex":
        found = re.search(check.pattern, output, re.MULTILINE) is not None
        return res(found, "" if found else "no match")
    if check.kind == "json_schema":
        from jsonschema import exceptions, validators

        try:
            value = _structured(output, slot.style)
        except StyleError as exc:
            return res(False, f"not JSON: {exc}")
        assert check.schema is not None
        cls = validators.validator_for(check.schema, default=validators.Draft202012Validator)
        error = exceptions.best_match(cls(check.schema).iter_errors(value))
        return res(error is None, "" if error is None else f"{error.json_path}: {error.message}")
    raise AssertionError(check.kind)  # pragma: no cover - load_cases admits no other kind


def _verdict(check: Check, slot: _Slot, result: RunResult) -> CheckResult:
    ci = next(i for i, c in enumerate(slot.case.checks) if c is check)
    jid = dict(slot.judges)[ci]
    judged = result.tasks[jid]

    def res(ok: bool, detail: str) -> CheckResult:
        return CheckResult(check=check.label, kind="judge", ok=ok, detail=detail)

    if judged.state != "succeeded":
        if result.tasks[slot.task_id].state != "succeeded":
            return res(False, f"no answer to judge: the task {result.tasks[slot.task_id].state}")
        return res(False, f"the judge {judged.state}: {judged.error_class}: {judged.error}")
    try:
        value = parse_json(judged.output)
    except StyleError as exc:
        return res(False, f"the judge's answer is not JSON: {exc}")
    if not isinstance(value, Mapping) or value.get("verdict") not in ("pass", "fail"):
        return res(False, "the judge gave no verdict")
    return res(value["verdict"] == "pass", f"{value['verdict']}: {value.get('reason', '')}")


async def _score(build: _Build, result: RunResult, timings: Mapping[str, _Timing]) -> list[CaseRun]:
    workers = asyncio.Semaphore(max(1, (os.cpu_count() or 2)))

    async def command(check: Check, slot: _Slot) -> tuple[bool, str] | None:
        if result.tasks[slot.task_id].state != "succeeded":
            return None
        async with workers:
            return await asyncio.to_thread(_run_command, check.argv, slot.workspace, check.timeout)

    pending = {
        (si, ci): asyncio.ensure_future(command(c, slot))
        for si, slot in enumerate(build.slots)
        for ci, c in enumerate(slot.case.checks)
        if c.kind == "command"
    }
    if pending:
        await asyncio.gather(*pending.values())
    runs = []
    for si, slot in enumerate(build.slots):
        tr = result.tasks[slot.task_id]
        timing = timings.get(slot.task_id, _Timing())
        checks = tuple(
            _check_one(
                c, slot, result, timing, pending[si, ci].result() if (si, ci) in pending else None
            )
            for ci, c in enumerate(slot.case.checks)
        )
        latency = None if timing.start is None or timing.end is None else timing.end - timing.start
        ok = tr.state == "succeeded"
        runs.append(
            CaseRun(
                variant=chr(ord("a") + slot.variant),
                case=slot.case.id,
                repeat=slot.repeat,
                task_id=slot.task_id,
                agent=slot.agent,
                state=tr.state,
                passed=ok and all(c.ok for c in checks),
                checks=checks,
                output=tr.output,
                usage=tr.usage,
                latency=latency,
                style_valid=ok and timing.rejected == 0,
                reasks=timing.rejected,
                error=None if ok else f"{tr.error_class}: {tr.error}" if tr.error_class else None,
                workspace=str(slot.workspace),
                judged=all(result.tasks[j].state != "pending" for _, j in slot.judges),
            )
        )
    return runs


def _variant(label: str, key: str, provider: str | None, runs: Sequence[CaseRun]) -> VariantReport:
    ran = [r for r in runs if r.ran]
    passed = sum(1 for r in ran if r.passed)
    n = len(ran)
    low, high = wilson_interval(passed, n)
    usage = sum((r.usage for r in ran), ZERO)
    unpriced = any(r.usage.cost_usd is None and r.usage.total_tokens for r in ran)
    latencies = [r.latency for r in ran if r.latency is not None]
    per_case: dict[str, tuple[int, int]] = {}
    for r in ran:
        p, m = per_case.get(r.case, (0, 0))
        per_case[r.case] = (p + r.passed, m + 1)
    return VariantReport(
        label=label,
        key=key,
        provider=provider,
        runs=tuple(runs),
        n=n,
        passed=passed,
        not_run=len(runs) - n,
        pass_rate=passed / n if n else 0.0,
        ci_low=low,
        ci_high=high,
        style_validity=sum(1 for r in ran if r.style_valid) / n if n else 0.0,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=None if unpriced else (usage.cost_usd or 0.0),
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        per_case=per_case,
    )


# -- the entry point ---------------------------------------------------------------------------


async def evaluate(
    specs: Sequence[str | AgentSpec | SavedAgent | Candidate],
    cases: str | os.PathLike[str] | CaseFile,
    *,
    repeat: int = 1,
    provider: str | None = None,
    seed: int = 0,
    state: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    sinks: Sequence[EventSink] = (),
    tools: Sequence[ToolSpec] = (),
    custom_providers: Mapping[str, Provider] | None = None,
    record: bool = True,
) -> EvalReport:
    """Run every case of ``cases`` on every spec ``repeat`` times, in one run, and score it.

    ``specs``: saved agents (``"reviewer@2"``), plan agents (``"plan.yaml:reviewer"``) or
    :class:`AgentSpec` objects. ``provider`` overrides every agent's model (then nothing is
    recorded in the library: the score would not be the saved spec's). ``record``: append
    each saved agent's result to its eval history (only for a complete eval)."""
    cf = cases if isinstance(cases, CaseFile) else load_cases(cases)
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    cands = [candidate(s) for s in specs]
    if not cands:
        raise UsageError("give at least one spec to evaluate")
    if len(cands) > _MAX_VARIANTS:
        raise UsageError(f"at most {_MAX_VARIANTS} specs in one eval, got {len(cands)}")
    labels = [c.label for c in cands]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UsageError(f"{twice[0]} is given twice")
    rid = run_id or new_run_id()
    run_dir = state_dir(state) / "runs" / rid
    if run_dir.exists():
        raise UsageError(f"run {rid!r} already exists in {run_dir.parent}")
    build = _build(cf, cands, repeat, run_dir)
    result = await run(
        build.plan,
        provider=provider,
        seed=seed,
        state=state,
        run_id=rid,
        sinks=sinks,
        tools=_tools(build, tools),
        workspace=run_dir / "workspace",
        custom_providers=custom_providers,
    )
    timings, finished = _timings(result.journal_path, rid)
    runs = await _score(build, result, timings)
    many = len(cands) > 1
    variants = tuple(
        _variant(
            c.label,
            chr(ord("a") + i) if many else "",
            provider or c.spec.provider or build.plan.provider,
            [r for r, s in zip(runs, build.slots, strict=True) if s.variant == i],
        )
        for i, c in enumerate(cands)
    )
    judge_ids = [jid for s in build.slots for _, jid in s.judges]
    judge_usage = sum((result.tasks[j].usage for j in judge_ids), ZERO)
    notes: list[str] = list(result.notes)
    if any(v.not_run for v in variants):
        notes.append(f"incomplete: the run ended {result.status} before every case ran")
    report = EvalReport(
        run_id=rid,
        cases=cf.name,
        cases_path=str(cf.path),
        repeat=repeat,
        status=result.status,
        simulated=result.simulated,
        variants=variants,
        comparison=compare(variants),
        judge_usage=judge_usage,
        judged=sum(1 for j in judge_ids if result.tasks[j].state == "succeeded"),
        run_dir=run_dir,
        notes=tuple(notes),
        finished_at=finished or time.time(),
    )
    report = _record(report, cands, provider, record)
    _write(report, result)
    return report


def _record(
    report: EvalReport, cands: Sequence[Candidate], provider: str | None, record: bool
) -> EvalReport:
    """Append each saved agent's result to its eval history, when it is its own result."""
    notes, recorded = list(report.notes), []
    for cand, v in zip(cands, report.variants, strict=True):
        if cand.saved is None or not record:
            continue
        if not report.complete:
            notes.append(f"not recorded for {cand.label}: the eval is incomplete")
            continue
        if provider is not None and provider != cand.spec.provider:
            notes.append(f"not recorded for {cand.label}: --provider {provider} replaced its model")
            continue
        cand.saved.record_eval(
            EvalRecord(
                run_id=report.run_id,
                at=report.finished_at,
                cases=report.cases,
                n=v.n,
                passed=v.passed,
                pass_rate=v.pass_rate,
                ci_low=v.ci_low,
                ci_high=v.ci_high,
                repeat=report.repeat,
                input_tokens=v.input_tokens,
                output_tokens=v.output_tokens,
                cost_usd=v.cost_usd,
                p50_seconds=v.p50,
                p95_seconds=v.p95,
                style_validity=v.style_validity,
                provider=v.provider,
                simulated=report.simulated,
            )
        )
        recorded.append(cand.label)
    return dataclasses.replace(report, notes=tuple(notes), recorded=tuple(recorded))


def _write(report: EvalReport, result: RunResult) -> None:
    """eval.json and eval.md beside the run's outputs, and one line per spec in the run's
    journal (so ``phalanx status`` and the dashboard show the scores)."""
    report.run_dir.mkdir(parents=True, exist_ok=True)
    report.json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    report.markdown_path.write_text(report.render_markdown(), encoding="utf-8")
    journal = Journal(result.journal_path)
    try:
        for v in report.variants:
            message = (
                f"{v.label}: {100 * v.pass_rate:.1f}% passed ({v.passed}/{v.n}), "
                f"95% CI {100 * v.ci_low:.1f}–{100 * v.ci_high:.1f}%, "
                f"style ok {100 * v.style_validity:.1f}%, cost {_money(v.cost_usd)}"
            )
            journal.append(
                report.run_id, 1, Alert(ts=report.finished_at, kind="eval", message=message)
            )
        if report.comparison is not None:
            journal.append(
                report.run_id,
                1,
                Alert(ts=report.finished_at, kind="eval", message=report.comparison.sentence()),
            )
        journal.flush()
    finally:
        journal.close()


def evaluate_sync(
    specs: Sequence[str | AgentSpec | SavedAgent | Candidate],
    cases: str | os.PathLike[str] | CaseFile,
    **kwargs: Any,
) -> EvalReport:
    """:func:`evaluate` for code without an event loop."""
    return sync(lambda: evaluate(specs, cases, **kwargs))

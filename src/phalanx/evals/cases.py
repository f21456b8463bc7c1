"""Case files: the cases a spec is measured on (:class:`Case`: a prompt, an optional
workspace fixture copied for every case run, its checks) and the file that lists them with
their shared checks, judge, limits, providers and prices (:class:`CaseFile`); their pydantic
models, and :func:`load_cases`, which reads and checks a YAML case file like a plan, every
problem one :class:`PlanError` line naming the file, the line and the field."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._util import describe_error
from ..cost import Price
from ..exceptions import PlanError
from ..plan.config import RateLimit
from ..plan.file import _loc_str, read_yaml
from ..plan.model import Commands, Limits
from ..plan.schema import CommandsModel, EnvModel, PriceModel, RateLimitModel
from .checks import Check, Fail, parse_check

CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

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
    env: EnvModel = EnvModel()
    judge: _JudgeModel = _JudgeModel()
    checks: list[Any] = []
    cases: list[_CaseModel] = Field(min_length=1)


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
    env_pass: tuple[str, ...] = ()  # env.pass: secrets the command checks get on purpose
    judge_provider: str | None = None
    judge_agent: str | None = None


LineOf = Any  # Callable[[tuple[int | str, ...], bool], int | None]


def _fail(message: str, source: str, where: str, line_of: LineOf) -> PlanError:
    loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", where) if p)
    return PlanError(message, file=source, field=where, line=line_of(loc, False))


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
    source = str(path)

    def fail(message: str, where: str) -> PlanError:
        return _fail(message, source, where, line_of)

    cases = _cases(model, path.resolve().parent, fail)
    lim = model.limits
    return CaseFile(
        name=model.name or path.stem,
        path=path,
        cases=cases,
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
        env_pass=tuple(model.env.pass_),
        judge_provider=model.judge.provider,
        judge_agent=model.judge.agent,
    )


def _cases(model: _CaseFileModel, base: Path, fail: Fail) -> tuple[Case, ...]:
    """The file's cases, each with the shared checks before its own; folders are relative
    to ``base``, the case file's folder."""
    shared = [parse_check(c, f"checks[{i}]", fail) for i, c in enumerate(model.checks)]
    default_ws = _folder(model.workspace, "workspace", base, fail)
    cases, seen = [], set()
    for i, c in enumerate(model.cases):
        if not CASE_ID_RE.fullmatch(c.id):
            raise fail(
                f"invalid id {c.id!r} (letters, digits, '_', '-'; up to 64)", f"cases[{i}].id"
            )
        if c.id in seen:
            raise fail(f"duplicate case id {c.id!r}", f"cases[{i}].id")
        seen.add(c.id)
        own = [parse_check(x, f"cases[{i}].checks[{j}]", fail) for j, x in enumerate(c.checks)]
        cases.append(
            Case(
                id=c.id,
                prompt=c.prompt,
                title=c.title,
                workspace=_folder(c.workspace, f"cases[{i}].workspace", base, fail) or default_ws,
                checks=(*shared, *own),
                max_attempts=c.max_attempts,
                timeout=c.timeout,
            )
        )
    return tuple(cases)


def _folder(value: str | None, where: str, base: Path, fail: Fail) -> Path | None:
    if value is None:
        return None
    found = (base / value).resolve()
    if not found.is_dir():
        raise fail(f"no such folder {value!r} (relative to the case file)", where)
    return found

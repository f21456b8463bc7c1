"""The checks on a case run: their kinds (:data:`CHECK_KINDS`), a :class:`Check` as read
from one entry of a case file's ``checks`` (:func:`parse_check`, one-line errors), and how one
check scores a finished task into a :class:`CheckResult` (:func:`check_one`): text checks read
its answer, ``max_tokens``/``max_seconds``/``style_valid`` its usage, latency and re-asks, a
``command`` check is run in the case's sandbox with no shell and no secrets
(:func:`run_command`), and a ``judge`` check reads the verdict of its judge task."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util import kill_group
from ..agents.styles import Style, StyleError, get_style, parse_json, parse_output
from ..api import TaskResult
from ..exceptions import PlanError
from ..redaction import scrubbed_env

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
COMMAND_TIMEOUT = 60.0
_OUTPUT_TAIL = 2000

Fail = Callable[[str, str], PlanError]  # (message, field) -> the one-line error to raise


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
class CheckResult:
    check: str  # its label
    kind: str
    ok: bool
    detail: str = ""  # why it failed; a judge's reason either way


# -- reading a check from a case file ----------------------------------------------------------


def parse_check(raw: Any, where: str, fail: Fail) -> Check:
    """The check written as ``raw`` (one mapping key: its kind) at field ``where``; a problem
    is ``fail(message, field)`` raised."""
    kinds = ", ".join(CHECK_KINDS)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise fail(f"a check is one mapping key: {kinds}", where)
    ((kind, value),) = raw.items()
    here = f"{where}.{kind}"

    def bad(message: str) -> PlanError:
        return fail(message, here)

    if kind == "contains":
        return _parse_contains(value, bad)
    if kind == "regex":
        return _parse_regex(value, bad)
    if kind == "json_schema":
        return _parse_json_schema(value, bad)
    if kind == "style_valid":
        if value is not True:
            raise bad("the only value is true")
        return Check(kind=kind)
    if kind == "command":
        return _parse_command(value, bad)
    if kind in ("max_tokens", "max_seconds"):
        return _parse_limit(kind, value, bad)
    if kind == "judge":
        return _parse_judge(value, bad)
    raise fail(f"unknown check {kind!r} (known: {kinds})", where)


def _parse_contains(value: Any, bad: Callable[[str], PlanError]) -> Check:
    needles = [value] if isinstance(value, str) else value
    if not isinstance(needles, list) or not needles:
        raise bad("expected a string or a list of strings")
    if not all(isinstance(n, str) and n for n in needles):
        raise bad("expected non-empty strings")
    return Check(kind="contains", needles=tuple(needles))


def _parse_regex(value: Any, bad: Callable[[str], PlanError]) -> Check:
    if not isinstance(value, str) or not value:
        raise bad("expected a regular expression (a string)")
    try:
        re.compile(value)
    except re.error as exc:
        raise bad(f"the regular expression does not compile: {exc}") from None
    return Check(kind="regex", pattern=value)


def _parse_json_schema(value: Any, bad: Callable[[str], PlanError]) -> Check:
    if not isinstance(value, Mapping):
        raise bad("expected a JSON Schema (a mapping)")
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(value, default=validators.Draft202012Validator).check_schema(
            dict(value)
        )
    except exceptions.SchemaError as exc:
        raise bad(f"the JSON Schema is invalid: {exc.message}") from None
    return Check(kind="json_schema", schema=dict(value))


def _parse_limit(kind: str, value: Any, bad: Callable[[str], PlanError]) -> Check:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise bad("expected a positive number")
    if kind == "max_tokens" and not isinstance(value, int):
        raise bad("expected a whole number of tokens")
    return Check(kind=kind, limit=float(value))


def _parse_command(value: Any, bad: Callable[[str], PlanError]) -> Check:
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


def _parse_judge(value: Any, bad: Callable[[str], PlanError]) -> Check:
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


# -- scoring one check -------------------------------------------------------------------------


def check_one(
    check: Check,
    task: TaskResult,
    *,
    style: str,
    latency: float | None,
    rejected: int,
    command: tuple[bool, str] | None,
    judge: TaskResult | None,
    styles: Mapping[str, Style] | None = None,
) -> CheckResult:
    """``check`` on a case run's finished ``task``: answered in ``style``, ``latency``
    seconds from its first attempt's start to its end, its answer ``rejected`` (re-asked) so
    many times; ``command`` is what a command check's run gave (None: not run), ``judge`` the
    judge task of a judge check."""
    if check.kind == "max_tokens":
        used = task.usage.total_tokens
        return _result(
            check,
            used <= check.limit,
            f"{used:,} tokens" + ("" if used <= check.limit else f" > {check.limit:,.0f}"),
        )
    if check.kind == "max_seconds":
        if latency is None:
            return _result(check, False, "not timed: the task did not run")
        return _result(
            check,
            latency <= check.limit,
            f"{latency:.2f}s" + ("" if latency <= check.limit else f" > {check.limit:g}s"),
        )
    if check.kind == "style_valid":
        return _style_valid(check, task, style, rejected)
    if check.kind == "command":
        if command is None:
            return _result(check, False, f"not run: the task {task.state}")
        return _result(check, *command)
    if check.kind == "judge":
        assert judge is not None
        return verdict(check, task, judge)
    if task.state != "succeeded":
        return _result(check, False, f"no answer: the task {task.state}")
    return _on_answer(check, task.output, style, styles)


def _result(check: Check, ok: bool, detail: str = "") -> CheckResult:
    return CheckResult(check=check.label, kind=check.kind, ok=ok, detail=detail)


def _style_valid(check: Check, task: TaskResult, style: str, rejected: int) -> CheckResult:
    if task.state != "succeeded":
        return _result(check, False, f"no answer: the task {task.state}")
    if rejected:
        return _result(
            check, False, f"the first answer was not valid {style} ({rejected} re-ask(s))"
        )
    return _result(check, True)


def _on_answer(
    check: Check, output: str, style: str, styles: Mapping[str, Style] | None
) -> CheckResult:
    """A check that reads the answer: contains, regex, json_schema."""
    if check.kind == "contains":
        missing = [n for n in check.needles if n.lower() not in output.lower()]
        return _result(
            check, not missing, "missing " + ", ".join(repr(m) for m in missing) if missing else ""
        )
    if check.kind == "regex":
        found = re.search(check.pattern, output, re.MULTILINE) is not None
        return _result(check, found, "" if found else "no match")
    if check.kind == "json_schema":
        from jsonschema import exceptions, validators

        try:
            value = _structured(output, style, styles)
        except StyleError as exc:
            return _result(check, False, f"not JSON: {exc}")
        assert check.schema is not None
        cls = validators.validator_for(check.schema, default=validators.Draft202012Validator)
        error = exceptions.best_match(cls(check.schema).iter_errors(value))
        return _result(
            check, error is None, "" if error is None else f"{error.json_path}: {error.message}"
        )
    raise AssertionError(check.kind)  # pragma: no cover - parse_check admits no other kind


def _structured(output: str, style: str, styles: Mapping[str, Style] | None) -> Any:
    base = get_style(style, styles)
    if base.structured:
        return parse_output(style, output, styles=styles)
    return parse_json(output)


def verdict(check: Check, task: TaskResult, judged: TaskResult) -> CheckResult:
    """A judge check: the verdict its judge task ``judged`` gave on ``task``'s answer."""

    def res(ok: bool, detail: str) -> CheckResult:
        return CheckResult(check=check.label, kind="judge", ok=ok, detail=detail)

    if judged.state != "succeeded":
        if task.state != "succeeded":
            return res(False, f"no answer to judge: the task {task.state}")
        return res(False, f"the judge {judged.state}: {judged.error_class}: {judged.error}")
    try:
        value = parse_json(judged.output)
    except StyleError as exc:
        return res(False, f"the judge's answer is not JSON: {exc}")
    if not isinstance(value, Mapping) or value.get("verdict") not in ("pass", "fail"):
        return res(False, "the judge gave no verdict")
    return res(value["verdict"] == "pass", f"{value['verdict']}: {value.get('reason', '')}")


def run_command(
    argv: Sequence[str], cwd: Path, timeout: float, env_pass: Sequence[str] = ()
) -> tuple[bool, str]:
    """Run a check's command in the case's sandbox: no shell, no secrets in its environment
    (but the names in ``env_pass``, the file's ``env.pass``), its whole process group killed
    when it ends or times out. (ok, what happened)."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=scrubbed_env(keep=env_pass),
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

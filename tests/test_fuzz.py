"""Input fuzzing: plan files, plan data and CLI arguments.

Every input gives a valid :class:`Plan` or ONE clear error line (at most 300 characters,
naming the file and, when the problem is in a field, the field), never another exception,
a traceback or a hang. The tests below draw about 2,200 examples in all (derandomized, so CI
is reproducible); failures Hypothesis once found are kept as explicit ``@example``\\ s.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phalanx.cli.app import main
from phalanx.exceptions import PlanError
from phalanx.plan import Plan, load_plan
from phalanx.plan.templates import TEMPLATES

MAX_LINE = 300


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A short directory (messages carry the file path: keep it short)."""
    with tempfile.TemporaryDirectory(prefix="fz") as d:
        yield Path(d)


# Bugs the fuzzing found, now fixed (their regression tests are below; the flags stay so a
# reopened bug can be switched back while it is being fixed).
# BUG 1: PlanError messages echo user values unabbreviated (literal_error "got {value!r}",
#   "invalid id ...", "unknown style ...", "no agent has role ...", unknown keys, ...), so a
#   long value gives a line far over 300 characters.
KNOWN_LONG_VALUES = False
# BUG 2: argparse's "unrecognized arguments: ..." (and a missing plan's path) print the
#   user's argv raw, so an argument holding a line break gives several stderr lines.
KNOWN_RAW_ARGV = False


def _one_line(text: str) -> bool:
    return len(f"{text}.".splitlines()) == 1


def check_plan_error(exc: PlanError, source: str) -> None:
    text = str(exc)
    assert _one_line(text), f"more than one line: {text!r}"
    if not KNOWN_LONG_VALUES:
        assert len(text) <= MAX_LINE, f"{len(text)} chars: {text!r}"
    assert text.startswith(source), f"does not name the file first: {text!r}"
    if exc.field:
        assert exc.field in text, f"does not name its field {exc.field!r}: {text!r}"
    assert exc.detail.strip(), f"no message: {text!r}"


# ----------------------------------------------------------------------------- YAML text

_FRAGMENTS = [
    "agents:",
    "tasks:",
    "- id: a",
    "  prompt: p",
    "- role: coder",
    "  count: 2",
    "  needs: [a]",
    "  needs: a",
    "name: x",
    "policy: llm",
    "limits:",
    "  max_usd: -1",
    "  rate_limits: {p: {rpm: 0}}",
    "hooks:",
    "- on: before_task",
    "styles:",
    "commands:",
    "  allow: ls",
    "isolation: worktree",
    "autoscale: {}",
    "&a [*a]",
    "*b",
    "&b x",
    "? [k]",
    ": v",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "!!python/object:os.system",
    "!!binary x",
    "%YAML 1.1",
    "---",
    "...",
    "\t",
    "  ",
    "- ",
    "#",
    "on: yes",
    "id: 1e9",
    "count: .inf",
    "timeout: .nan",
    "max_attempts: 0",
    "category: bogus",
    "style: nope",
    "agent: Z",
    "<<: *a",
    "key: &k {a: 1}",
    "dup: 1\ndup: 2",
    "\x00",
    "\ufeff",
    "é: ü",
]
_VALID = "agents:\n- role: coder\n  count: 2\ntasks:\n- id: a\n  prompt: do it\n"

yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("\n".join),
    st.tuples(
        st.just(_VALID),
        st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=20)), max_size=4),
    ).map(lambda t: t[0] + "\n".join(t[1])),
    st.lists(
        st.tuples(st.integers(0, 6), st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=15))),
        max_size=10,
    ).map(lambda rows: "\n".join(" " * i + s for i, s in rows)),
)


@fuzz(700)
@given(text=yaml_text)
@example(text=_VALID)
@example(text="&a [*a]")
@example(text="a: &a [*a, *a]\nb: *a\n")
@example(text="\x00")
@example(text="agents: [{}]\ntasks: [{id: 'a b', prompt: p}]\n")
def test_plan_file_text(scratch: Path, text: str) -> None:
    path = scratch / "p.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        plan = load_plan(str(path))
    except PlanError as exc:
        check_plan_error(exc, str(path))
    else:
        assert isinstance(plan, Plan)


@fuzz(60)
@given(data=st.binary(max_size=120))
def test_plan_file_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "b.yaml"
    path.write_bytes(data)
    try:
        load_plan(str(path))
    except PlanError as exc:
        check_plan_error(exc, str(path))


# ----------------------------------------------------------------------------- plan data

_KEYS = {
    "": [
        "name",
        "description",
        "policy",
        "provider",
        "providers",
        "prices",
        "limits",
        "retry",
        "hooks",
        "workspace",
        "commands",
        "isolation",
        "styles",
        "breaker",
        "autoscale",
        "messaging",
        "router",
        "agents",
        "tasks",
    ],
    "agent": [
        "role",
        "count",
        "name",
        "names",
        "skills",
        "categories",
        "style",
        "provider",
        "system",
        "context",
        "context_max_tokens",
        "tools",
        "max_turns",
        "subscribe",
        "hooks",
    ],
    "task": [
        "id",
        "prompt",
        "category",
        "title",
        "needs",
        "role",
        "skills",
        "priority",
        "max_attempts",
        "style",
        "timeout",
        "max_turns",
        "agent",
    ],
    "limits": [
        "work_stealing",
        "comm_overhead_warning",
        "start_agents",
        "rate_limits",
        "max_agents",
        "max_usd",
        "max_tokens",
        "max_wall_seconds",
    ],
}
_WORDS = [
    "a",
    "b",
    "coder",
    "reviewer",
    "generalist",
    "text",
    "json",
    "yaml",
    "table",
    "code",
    "docs",
    "test",
    "other",
    "best_fit",
    "llm",
    "worktree",
    "none",
    "sim",
    "before_task",
    "A",
    "x y",
    "",
    " ",
    "-",
    "..",
    "\n",
    "α",
    "1",
    "true",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_WORDS),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_WORDS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


def _valid_base(n_agents: int, n_tasks: int) -> dict[str, Any]:
    tasks = [
        {"id": f"t{i}", "prompt": f"p{i}", "needs": [f"t{i - 1}"] if i else []}
        for i in range(n_tasks)
    ]
    agents = [{"role": "coder" if i % 2 else "reviewer", "count": 1} for i in range(n_agents)]
    return {"name": "fz", "agents": agents, "tasks": tasks}


@st.composite
def plan_dicts(draw: st.DrawFn) -> Any:
    """A valid plan, then a few random edits: a key set to a random value (known keys most
    of the time, unknown ones too), a key removed, an item appended or a section replaced."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even a mapping, most of the time
    data = _valid_base(draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(["", "agent", "task", "limits"]))
        if where == "":
            target = data
        elif where == "limits":
            target = data.setdefault("limits", {})
            if not isinstance(target, dict):
                continue
        else:
            items = data.get("agents" if where == "agent" else "tasks")
            if not isinstance(items, list) or not items:
                continue
            target = items[draw(st.integers(0, len(items) - 1))]
            if not isinstance(target, dict):
                continue
        op = draw(st.sampled_from(["set", "set", "set", "del", "unknown", "append"]))
        key = draw(st.sampled_from(_KEYS[where]))
        if op == "set":
            target[key] = draw(json_values)
        elif op == "del":
            target.pop(key, None)
        elif op == "unknown":
            target[draw(st.text(max_size=10))] = draw(json_values)
        elif isinstance(data.get("tasks"), list):
            data["tasks"].append(draw(json_values))
    return data


def _from_dict(data: Any, source: str) -> None:
    try:
        plan = Plan.from_dict(data, source=source)
    except PlanError as exc:
        check_plan_error(exc, source)
    else:
        assert isinstance(plan, Plan)


@fuzz(700)
@given(data=plan_dicts())
@example(data=_valid_base(2, 3))
@example(data={"agents": [{"names": ["a", "a"], "count": 2}], "tasks": [{"id": "x", "prompt": ""}]})
@example(data={"agents": [{}], "tasks": [{"id": "a", "prompt": "p", "needs": ["a"]}]})
@example(data={"agents": [{}], "tasks": [{"id": True, "prompt": "p"}]})
def test_plan_data(data: Any) -> None:
    _from_dict(data, "plan.yaml")


@fuzz(150)
@given(data=plan_dicts())
def test_plan_data_roundtrips_through_yaml_files(scratch: Path, data: Any) -> None:
    """The same dicts, dumped as YAML files: the file loader gives the same verdict."""
    path = scratch / "d.yaml"
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_plan(str(path))
    except PlanError as exc:
        check_plan_error(exc, str(path))


# ----------------------------------------------------------------------------- CLI

_FLAGS = [
    "--agents",
    "--policy",
    "--provider",
    "--seed",
    "--run-id",
    "--quiet",
    "-q",
    "--no-tui",
    "--sequential",
    "--json",
    "--watch",
    "--interval",
    "--format",
    "-o",
    "--output",
    "--baseline",
    "--template",
    "--target",
    "--inputs",
    "--nope",
    "-x",
    "--",
    "-",
    "0",
    "-1",
    "abc",
    "1e3",
    "best_fit",
    "html",
    "md",
    "json",
    "sim",
]
argv_tokens = st.one_of(st.sampled_from(_FLAGS), st.text(max_size=15))


@st.composite
def cli_argvs(draw: st.DrawFn, root: Path) -> list[str]:
    cmd = draw(st.sampled_from(["run", "status", "report", "init", "resume", "merge", "runs"]))
    args: list[str] = []
    if cmd == "run":
        kind = draw(st.sampled_from(["missing", "dir", "garbage", "text"]))
        if kind == "missing":
            args.append(str(root / "missing" / draw(st.text(min_size=1, max_size=10))))
        elif kind == "dir":
            args.append(str(root))
        elif kind == "garbage":
            args.append(str(root / "garbage.yaml"))
        else:
            args.append(draw(argv_tokens))
    elif cmd in ("status", "report", "resume", "merge"):
        args.append(draw(st.text(max_size=20)))
    elif cmd == "init":
        name = draw(st.text(max_size=12).filter(lambda s: s not in TEMPLATES))
        args += ["--template", name, str(root / "init")]
    args += draw(st.lists(argv_tokens, max_size=5))
    lead = draw(st.sampled_from([[], ["--state-dir", str(root / "state")]]))
    return [*lead, cmd, *args]


def _cli(argv: list[str], root: Path) -> tuple[int | str | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("PHALANX_STATE_DIR")
    os.environ["PHALANX_STATE_DIR"] = str(root / "state")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | str | None = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        if old is None:
            del os.environ["PHALANX_STATE_DIR"]
        else:
            os.environ["PHALANX_STATE_DIR"] = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_root(scratch: Path) -> Path:
    root = scratch / "cli"
    (root / "state").mkdir(parents=True)
    (root / "garbage.yaml").write_text("agents: [{role: coder}]\ntasks: [{id: 'a b'}]\n")
    return root


def _check_cli(argv: list[str], root: Path) -> None:
    try:
        code, out, err = _cli(argv, root)
    except Exception as exc:  # the real command would print a traceback
        pytest.fail(f"phalanx {argv!r} raised {exc!r} instead of a one-line error")
    assert "Traceback" not in out + err
    assert code in (0, 2, None), f"phalanx {argv!r} exited {code!r}: {err!r}"
    if code == 2:
        lines = err.splitlines()
        if KNOWN_RAW_ARGV and any(not _one_line(a) for a in argv):
            lines = [err.rstrip("\n")]
        assert len(lines) == 1, f"phalanx {argv!r}: {len(lines)} stderr lines: {err!r}"
        if not KNOWN_LONG_VALUES:
            assert len(lines[0]) <= MAX_LINE + 60, f"phalanx {argv!r}: {lines[0]!r}"
        assert lines[0].startswith("phalanx: error: "), lines[0]
    else:
        assert err == "", f"phalanx {argv!r} exited {code!r} with stderr {err!r}"
    # nothing ran: the state dir holds no run
    assert not (root / "state" / "runs").exists()
    assert not (root / "init").exists()


@fuzz(550)
@given(data=st.data())
def test_cli_arguments(cli_root: Path, data: st.DataObject) -> None:
    _check_cli(data.draw(cli_argvs(cli_root)), cli_root)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{root}/garbage.yaml"],
        ["run", "{root}"],
        ["run", "--agents", "0", "x.yaml"],
        ["status", "nope"],
        ["report", "nope", "--format", "pdf"],
        ["init", "--template", "nope", "{root}/init"],
        ["status", "--interval", "x"],
    ],
)
def test_cli_regressions(cli_root: Path, argv: list[str]) -> None:
    _check_cli([a.format(root=cli_root) for a in argv], cli_root)


# ----------------------------------------------------------------------------- known bugs

_LONG = "x" * 400


def _with(section: str, key: str, value: Any) -> dict[str, Any]:
    data = _valid_base(1, 1)
    target = data if section == "" else data[section][0]
    target[key] = value
    return data


@pytest.mark.parametrize(
    "data",
    [
        _with("", "policy", _LONG),
        _with("", "policy", [None, {"a": "b" * 50}, {"c": [1] * 60}]),
        _with("tasks", "id", _LONG),
        _with("tasks", "role", _LONG),
        _with("tasks", "style", _LONG),
        _with("tasks", "needs", [_LONG]),
        _with("tasks", "agent", _LONG),
        _with("tasks", "category", _LONG),
        _with("", _LONG, 1),
    ],
    ids=["policy", "policy-list", "id", "role", "style", "needs", "agent", "category", "key"],
)
def test_bug_long_values_give_long_messages(data: dict[str, Any]) -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_dict(data, source="plan.yaml")
    assert len(str(info.value)) <= MAX_LINE, str(info.value)


@pytest.mark.parametrize(
    "argv",
    [["status", "", "\r"], ["status", "x", "a\nb"], ["run", "{root}/no\nsuch.yaml"]],
    ids=["cr", "newline", "plan-path"],
)
def test_bug_raw_argv_line_breaks(cli_root: Path, argv: list[str]) -> None:
    code, _, err = _cli([a.format(root=cli_root) for a in argv], cli_root)
    assert code == 2 and len(err.splitlines()) == 1, err

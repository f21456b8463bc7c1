"""Every bad input to ``phalanx run`` is one clear line on stderr, exit code 2, no traceback.

The line names the file, the field (``tasks[2].needs``) and, where the YAML position is known,
the line (``plan.yaml:14``). The plans below are written by hand so that line numbers are
deterministic: ``# <-`` marks the line a message must name.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import sim_plan, write_plan
from phalanx.cli.app import main
from phalanx.exceptions import PlanError
from phalanx.plan import load_plan

HERE = "# <-"


@dataclass(frozen=True)
class Bad:
    """A bad plan file and what its one-line error must say."""

    text: str  # the plan; HERE marks the line the message must name (none: line unknown)
    field: str | None = None  # the field path the message must name
    says: tuple[str, ...] = ()  # more fragments the message must contain (any case)
    at_load: bool = True  # False: only found once a run is attempted (e.g. the provider)

    @property
    def yaml(self) -> str:
        return textwrap.dedent(self.text).lstrip("\n")

    @property
    def line(self) -> int | None:
        lines = [i for i, text in enumerate(self.yaml.splitlines(), 1) if HERE in text]
        assert len(lines) <= 1, "mark at most one line"
        return lines[0] if lines else None


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    """``phalanx ARGV`` in-process: (exit code, stderr); stdout must stay empty."""
    try:
        code: int | str | None = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    except Exception as exc:  # the real command would print a traceback
        pytest.fail(f"phalanx {' '.join(argv)} raised {exc!r} instead of a one-line error")
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out == "", f"nothing belongs on stdout, got {out!r}"
    return code, err


def one_line(code: int | str | None, err: str) -> str:
    """Check exit code 2 and exactly one non-empty line on stderr; return that line."""
    assert code == 2, f"exit code {code!r}, stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].strip()
    return lines[0]


def names_field(message: str, field: str) -> bool:
    """``field`` appears as a whole path (``tasks[0].needs`` is not ``tasks[0].needs[1]``)."""
    return re.search(rf"(?<![\w.\]]){re.escape(field)}(?![\w.\[])", message) is not None


def names_line(message: str, path: Path, line: int) -> bool:
    return re.search(rf"{re.escape(str(path))}:{line}(?!\d)", message) is not None


def check_message(message: str, case: Bad, path: Path) -> None:
    assert str(path) in message, f"the file is not named: {message!r}"
    if case.line is not None:
        assert names_line(message, path, case.line), f"line {case.line} not named: {message!r}"
    if case.field is not None:
        assert names_field(message, case.field), f"{case.field} not named: {message!r}"
    rest = message.replace(str(path), "").lower()  # the path may hold any fragment
    for fragment in case.says:
        assert fragment.lower() in rest, f"{fragment!r} not in {message!r}"


# -- the plan-file cases ---------------------------------------------------------------------

CASES = [
    # unknown keys
    pytest.param(
        Bad(
            """
            provider: sim
            agentz: []  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="agentz",
            says=("unknown",),
        ),
        id="unknown-top-level-key",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                skillz: [python]  # <-
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents[0].skillz",
            says=("unknown",),
        ),
        id="unknown-agent-key",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
              - id: b
                prompt: do b
                neeeds: [a]  # <-
            """,
            field="tasks[1].neeeds",
            says=("unknown",),
        ),
        id="unknown-task-key",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            limits:
              max_dollars: 5  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="limits.max_dollars",
            says=("unknown",),
        ),
        id="unknown-limits-key",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            retry:
              jitter: full  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="retry.jitter",
            says=("unknown",),
        ),
        id="unknown-retry-key",
    ),
    # wrong types and values
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                priority: high  # <-
            """,
            field="tasks[0].priority",
            says=("high",),
        ),
        id="wrong-type-priority",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                count: many  # <-
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents[0].count",
            says=("many",),
        ),
        id="wrong-type-count",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks: do everything  # <-
            """,
            field="tasks",
            says=("list",),
        ),
        id="wrong-type-tasks",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
              - id: b
                prompt: do b
                needs: 5  # <-
            """,
            field="tasks[1].needs",
        ),
        id="wrong-type-needs",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: true  # <-
                prompt: do a
            """,
            field="tasks[0].id",
        ),
        id="wrong-type-id",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            policy: nope  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="policy",
            says=("nope",),
        ),
        id="unknown-policy",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                category: cooking  # <-
            """,
            field="tasks[0].category",
            says=("cooking",),
        ),
        id="unknown-category",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                max_attempts: 0  # <-
            """,
            field="tasks[0].max_attempts",
        ),
        id="max-attempts-0",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                timeout: 0  # <-
            """,
            field="tasks[0].timeout",
        ),
        id="timeout-0",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            retry:
              base_seconds: -1  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="retry.base_seconds",
        ),
        id="negative-retry-base",
    ),
    # missing or empty
    pytest.param(
        Bad(
            """
            provider: sim  # <-
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents",
            says=("missing",),
        ),
        id="missing-agents",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a  # <-
                title: no prompt
            """,
            field="tasks[0].prompt",
            says=("missing",),
        ),
        id="missing-prompt",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks: []  # <-
            """,
            field="tasks",
        ),
        id="no-tasks",
    ),
    # ids and dependencies
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
              - id: a  # <-
                prompt: do a again
            """,
            field="tasks[1].id",
            says=("duplicate", "'a'"),
        ),
        id="duplicate-task-id",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
              - id: bad id!  # <-
                prompt: do b
            """,
            field="tasks[1].id",
            says=("bad id!",),
        ),
        id="invalid-task-id",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
              - id: b
                prompt: do b
              - id: c
                prompt: do c
                needs: [a, nope]  # <-
            """,
            field="tasks[2].needs",
            says=("nope",),
        ),
        id="unknown-dependency",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                needs: [a]  # <-
            """,
            field="tasks[0].needs",
            says=("itself",),
        ),
        id="needs-itself",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                needs: [b]  # <-
              - id: b
                prompt: do b
                needs: [c]
              - id: c
                prompt: do c
                needs: [a]
            """,
            field="tasks[0].needs",
            says=("cycle", "a -> b -> c -> a"),
        ),
        id="dependency-cycle",
    ),
    # agents that cannot serve the tasks
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                role: tester  # <-
            """,
            field="tasks[0].role",
            says=("tester",),
        ),
        id="role-no-agent-has",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                skills: [python]
            tasks:
              - id: a
                prompt: do a
                skills: [rust]  # <-
            """,
            field="tasks[0].skills",
            says=("rust",),
        ),
        id="skills-no-agent-has",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                skills: [python]
              - role: tester
                skills: [rust]
            tasks:
              - id: a
                prompt: do a
                role: coder
                skills: [rust]  # <-
            """,
            field="tasks[0].skills",
            says=("rust", "coder"),
        ),
        id="skills-no-agent-of-the-role-has",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                name: Bob
              - role: tester
                name: Bob  # <-
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents[1].name",
            says=("Bob",),
        ),
        id="duplicate-agent-name",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder  # <-
                names: [Ann, Bob]
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents[0]",
            says=("count",),
        ),
        id="more-names-than-count",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            limits:
              max_agents: 2  # <-
            agents:
              - role: coder
                count: 3
            tasks:
              - id: a
                prompt: do a
            """,
            field="limits.max_agents",
            says=("3",),
        ),
        id="max-agents-exceeded",
    ),
    # YAML that is not a plan
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                prompt: do b  # <-
            """,
            field="tasks[0].prompt",
            says=("duplicate",),
        ),
        id="duplicate-yaml-key",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            tasks:
              - id: a
                prompt: do a
            agents:
              - role: coder
            tasks:  # <-
              - id: b
                prompt: do b
            """,
            field="tasks",
            says=("duplicate",),
        ),
        id="duplicate-top-level-key",
    ),
    pytest.param(
        Bad(
            """
            - id: a  # <-
              prompt: do a
            """,
            says=("mapping", "list"),
        ),
        id="list-not-mapping",
    ),
    pytest.param(Bad("", says=("mapping",)), id="empty-file"),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a: now  # <-
            """,
            says=("yaml",),
        ),
        id="unreadable-yaml",
    ),
    pytest.param(
        Bad(
            "provider: sim\nagents:\n\t- role: coder  # <-\ntasks:\n  - id: a\n    prompt: do a\n",
            says=("yaml",),
        ),
        id="unreadable-yaml-tab",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks: &tasks [*tasks]
            """,
        ),
        id="recursive-yaml-alias",
    ),
    # values with line breaks are quoted, so the message stays on one line
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: "co\\nder"
            tasks:
              - id: a
                prompt: do a
                role: tester  # <-
            """,
            field="tasks[0].role",
            says=("tester",),
        ),
        id="role-with-line-break",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
                skills: ["ru\\nst"]  # <-
            """,
            field="tasks[0].skills",
        ),
        id="skill-with-line-break",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            "bad\\nkey": 1  # <-
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            says=("unknown",),
        ),
        id="key-with-line-break",
    ),
    # found once a run is attempted: providers and their options
    pytest.param(
        Bad(
            """
            provider: nosuch
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="provider",
            says=("nosuch",),
            at_load=False,
        ),
        id="unknown-provider",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            agents:
              - role: coder
                provider: nosuch
            tasks:
              - id: a
                prompt: do a
            """,
            field="agents[0].provider",
            says=("nosuch",),
            at_load=False,
        ),
        id="unknown-agent-provider",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            providers:
              sim:
                colour: red
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="providers.sim.colour",
            says=("colour",),
            at_load=False,
        ),
        id="unknown-sim-option",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            providers:
              sim:
                seed: x
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="providers.sim.seed",
            at_load=False,
        ),
        id="wrong-type-sim-seed",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            providers:
              sim:
                latency: {distribution: fixed, ms: soon}
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="providers.sim.latency.ms",
            at_load=False,
        ),
        id="wrong-type-sim-latency",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            providers:
              sim:
                faults: [auth]
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="providers.sim.faults",
            at_load=False,
        ),
        id="wrong-type-sim-faults",
    ),
    pytest.param(
        Bad(
            """
            provider: sim
            providers:
              sim:
                faults: {auth: often}
            agents:
              - role: coder
            tasks:
              - id: a
                prompt: do a
            """,
            field="providers.sim.faults.auth",
            at_load=False,
        ),
        id="wrong-type-sim-fault-rate",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_plan_is_one_line_exit_2(
    case: Bad, tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_plan(tmp_path / "plan.yaml", case.yaml)
    code, err = run_cli(["run", str(path), "--quiet"], capsys)
    check_message(one_line(code, err), case, path)


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].at_load])
def test_load_plan_raises_plan_error_with_its_place(case: Bad, tmp_path: Path) -> None:
    path = write_plan(tmp_path / "plan.yaml", case.yaml)
    with pytest.raises(PlanError) as caught:
        load_plan(str(path))
    err = caught.value
    assert err.file == str(path)
    if case.field is not None:
        assert err.field == case.field
    if case.line is not None:
        assert err.line == case.line
    assert "\n" not in str(err)


def test_cycle_names_every_member_and_only_them(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``start`` leads into the cycle b -> c -> d -> b but is not part of it."""
    needs = {"start": ["b"], "b": ["c"], "c": ["d"], "d": ["b"], "free": []}
    plan = {
        "provider": "sim",
        "agents": [{"role": "coder"}],
        "tasks": [{"id": t, "prompt": f"do {t}", "needs": n} for t, n in needs.items()],
    }
    path = write_plan(tmp_path / "plan.yaml", plan)
    message = one_line(*run_cli(["run", str(path)], capsys))
    chain = re.search(r"[\w.-]+(?: -> [\w.-]+)+", message)
    assert chain, f"no 'x -> y -> x' chain in {message!r}"
    members = chain.group().split(" -> ")
    assert members[0] == members[-1], "the cycle is a closed path"
    assert sorted(members[:-1]) == ["b", "c", "d"]
    edges = {(t, n) for t, ns in needs.items() for n in ns}
    steps = set(itertools.pairwise(members))
    assert steps <= edges or {(b, a) for a, b in steps} <= edges, "each step is a dependency"
    assert str(path) in message
    assert names_field(message, "tasks[1].needs")  # b, the first member in the file


# -- files that cannot be read -----------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.yaml"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "plans").mkdir()
    return tmp_path / "plans"


def _not_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("provider: sim\nname: caf\xe9\n".encode("latin-1"))
    return path


def _no_permission(tmp_path: Path) -> Path:
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("file permissions do not stop this user")
    path = write_plan(tmp_path / "secret.yaml", sim_plan(1))
    path.chmod(0)
    return path


@pytest.mark.parametrize("make", [_missing, _directory, _not_utf8, _no_permission])
def test_unusable_plan_path(
    make: Callable[[Path], Path], tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)
    message = one_line(*run_cli(["run", str(path)], capsys))
    assert str(path) in message


# -- bad flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["--agents", "x"], ["--agents", "x"], id="agents-not-a-number"),
        pytest.param(["--agents", "0"], ["--agents"], id="agents-0"),
        pytest.param(["--agents", "-2"], ["--agents"], id="agents-negative"),
        pytest.param(["--policy", "nope"], ["--policy", "nope"], id="unknown-policy"),
        pytest.param(["--seed", "x"], ["--seed"], id="seed-not-a-number"),
        pytest.param(["--bogus"], ["--bogus"], id="unknown-option"),
        pytest.param(["--provider", "nosuch"], ["--provider", "nosuch"], id="unknown-provider"),
    ],
)
def test_bad_flag_is_one_line_exit_2(
    argv: list[str],
    says: list[str],
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_plan(tmp_path / "plan.yaml", sim_plan(2))
    message = one_line(*run_cli(["run", str(path), *argv], capsys))
    for fragment in says:
        assert fragment in message


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["run"], ["PLAN"], id="run-without-plan"),
        pytest.param(["frobnicate"], ["frobnicate"], id="unknown-command"),
        pytest.param(["--bogus", "runs"], ["--bogus"], id="unknown-global-option"),
    ],
)
def test_bad_command_line_is_one_line_exit_2(
    argv: list[str], says: list[str], state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = one_line(*run_cli(argv, capsys))
    for fragment in says:
        assert fragment in message


def test_agents_fewer_than_distinct_specs(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {
        "provider": "sim",
        "agents": [{"role": "coder"}, {"role": "tester"}, {"role": "writer"}],
        "tasks": [{"id": "a", "prompt": "do a"}],
    }
    path = write_plan(tmp_path / "plan.yaml", plan)
    message = one_line(*run_cli(["run", str(path), "--agents", "2"], capsys))
    assert str(path) in message
    assert "--agents" in message
    assert re.search(r"\b3\b", message.replace(str(path), "")), "names the 3 distinct specs"


def test_agents_above_max_agents(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {**sim_plan(1), "limits": {"max_agents": 4}}
    path = write_plan(tmp_path / "plan.yaml", plan)
    message = one_line(*run_cli(["run", str(path), "--agents", "5"], capsys))
    assert str(path) in message
    assert "max_agents" in message


# -- the real process --------------------------------------------------------------------------

CYCLE = """\
provider: sim
agents:
  - role: coder
tasks:
  - id: a
    prompt: do a
    needs: [b]
  - id: b
    prompt: do b
    needs: [a]
"""


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param([], ["plan.yaml:7", "tasks[0].needs", "a -> b -> a"], id="cycle"),
        pytest.param(["--agents", "x"], ["--agents"], id="bad-flag"),
    ],
)
def test_real_process_exits_2_with_one_line(
    argv: list[str], says: list[str], tmp_path: Path, state: Path
) -> None:
    path = write_plan(tmp_path / "plan.yaml", CYCLE)
    proc = subprocess.run(
        [sys.executable, "-m", "phalanx", "run", str(path), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PHALANX_STATE_DIR": str(state)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in says:
        assert fragment in lines[0]

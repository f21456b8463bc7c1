"""Evals: case files, checks, statistics against hand-computed values, ``--vs``, the
``limits.min_eval_score`` gate, and an eval of the embedded model.

Scripted models answer per task; an eval's task ids are ``CASE.REPEAT`` (``a.CASE.REPEAT``,
``b.CASE.REPEAT``... when several specs are compared), so a script can say exactly what
each case run answers and every number below can be worked out by hand.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import phalanx
from phalanx.cli.app import main
from phalanx.cost import Usage
from phalanx.evals import evaluate, evaluate_sync, load_cases, percentile, wilson_interval
from phalanx.evals import runner as evals
from phalanx.exceptions import PlanError, UsageError
from phalanx.journal import Journal
from phalanx.plan import load_plan
from phalanx.plan.library import EvalRecord, Library
from phalanx.providers.base import Completion, CompletionRequest, ToolCall
from phalanx.testing import ScriptedProvider, run_virtual

# USD per million tokens for the scripted models: a call of 10 in / 5 out costs
# (10 * 1 + 5 * 2) / 1e6 = $0.00002
PRICES = {
    "scripted:a": {"input": 1.0, "output": 2.0},
    "scripted:b": {"input": 1.0, "output": 2.0},
    "scripted:judge": {"input": 1.0, "output": 2.0},
}
CALL_USD = 20 / 1_000_000


pytestmark = pytest.mark.usefixtures("library")  # conftest: a library of its own


def write(path: Path, data: Mapping[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(dict(data), sort_keys=False))
    return path


def plan_with(tmp_path: Path, **agents: Mapping[str, Any]) -> Path:
    """A plan file whose agents are the specs under test, one per role."""
    return write(
        tmp_path / "plan.yaml",
        {
            "name": "specs",
            "prices": PRICES,
            "agents": [{"role": role, **spec} for role, spec in agents.items()],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )


def scripted(monkeypatch: pytest.MonkeyPatch, models: Mapping[str, Any]) -> None:
    """The command line's evals run on these scripted models."""

    async def run(*args: Any, **kwargs: Any) -> phalanx.RunResult:
        return await phalanx.run(*args, **{**kwargs, "custom_providers": models})

    monkeypatch.setattr(evals, "run", run)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- statistics ----------------------------------------------------------------------------


def test_wilson_interval_and_nearest_rank_percentiles_by_hand() -> None:
    # Wilson, z = 1.96: p = 5/6, n = 6: centre (p + z^2/2n) / (1 + z^2/n) = 0.7033,
    # half-width z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 0.2667
    low, high = wilson_interval(5, 6)
    assert low == pytest.approx(0.43650, abs=1e-4) and high == pytest.approx(0.96995, abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-4)
    assert wilson_interval(8, 8) == pytest.approx((0.67559, 1.0), abs=1e-4)
    assert wilson_interval(0, 4) == pytest.approx((0.0, 0.48989), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # nearest rank: the smallest value with at least q% of the values at or below it
    assert percentile([6, 1, 5, 2, 4, 3], 50) == 3
    assert percentile([6, 1, 5, 2, 4, 3], 95) == 6
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([0.2], 50) == 0.2
    assert percentile([], 50) is None


# -- case files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "cases:\n  - id: a\n    prompt: x\n    checks:\n      - contain: x\n",
            "cases.yaml:5: cases[0].checks[0]: unknown check 'contain' (known: contains,",
        ),
        (
            "cases:\n  - id: a\n    prompt: x\n    checks:\n      - regex: '(unclosed'\n",
            "cases.yaml:5: cases[0].checks[0].regex: the regular expression does not compile",
        ),
        (
            "cases:\n  - id: a\n    prompt: x\n    checks:\n      - command: pytest -q\n",
            "cases.yaml:5: cases[0].checks[0].command: expected an argv list such as [pytest, -q]",
        ),
        (
            "cases:\n  - id: a\n    prompt: x\n    workspace: nowhere\n",
            "cases.yaml:4: cases[0].workspace: no such folder 'nowhere'",
        ),
        (
            "cases:\n  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n",
            "cases.yaml:3: cases[1].id: duplicate case id 'a'",
        ),
        (
            "cases:\n  - id: a\n    prompt: x\n    checks:\n      - judge: {rubric: ''}\n",
            "cases.yaml:5: cases[0].checks[0].judge: a judge needs a rubric",
        ),
        (
            "cases:\n  - id: a\n    promt: x\n",
            "cases.yaml:2: cases[0].prompt: required field is missing (and 1 more problem)",
        ),
        ("cases: []\n", "cases.yaml:1: cases: list should have at least 1 item"),
    ],
)
def test_case_file_mistakes_are_one_line_with_file_and_line(
    tmp_path: Path, body: str, expected: str
) -> None:
    write(tmp_path / "cases.yaml", body)
    with pytest.raises(PlanError) as err:
        load_cases("cases.yaml")
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_shared_checks_apply_to_every_case_and_fixtures_are_relative_to_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "evals" / "fx").mkdir(parents=True)
    write(
        tmp_path / "evals" / "cases.yaml",
        {
            "checks": [{"style_valid": True}],
            "workspace": "fx",
            "cases": [
                {"id": "a", "prompt": "x", "checks": [{"contains": ["one", "two"]}]},
                {
                    "id": "b",
                    "prompt": "y",
                    "checks": [{"command": {"run": ["true"], "timeout": 5}}],
                },
            ],
        },
    )
    cf = load_cases(tmp_path / "evals" / "cases.yaml")
    assert cf.name == "cases"
    assert [[c.label for c in case.checks] for case in cf.cases] == [
        ["style_valid", "contains 'one', 'two'"],
        ["style_valid", "command true"],
    ]
    assert cf.cases[1].checks[1].timeout == 5
    assert all(case.workspace == (tmp_path / "evals" / "fx").resolve() for case in cf.cases)


# -- pass rates, intervals, costs and latencies --------------------------------------------


class Timed:
    """A scripted model that takes ``seconds[case]`` (virtual time) and answers ``answers``."""

    simulated = True
    name = "timed"

    def __init__(self, seconds: Mapping[str, float], answers: Mapping[str, str]) -> None:
        self.seconds, self.answers = seconds, answers

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(self.seconds[request.task_id])
        return Completion(
            text=self.answers[request.task_id], usage=Usage(input_tokens=10, output_tokens=5)
        )

    async def aclose(self) -> None:
        return None


def test_pass_rate_interval_cost_and_latency_match_hand_computed_values(
    tmp_path: Path, state: Path
) -> None:
    plan = plan_with(tmp_path, reviewer={"provider": "scripted:a", "style": "text"})
    write(
        tmp_path / "cases.yaml",
        {
            "cases": [
                {"id": "c1", "prompt": "say ok", "checks": [{"contains": "ok"}]},
                {
                    "id": "c2",
                    "prompt": "say ok",
                    "checks": [{"contains": "ok"}, {"max_seconds": 5.5}],
                },
            ]
        },
    )
    # case runs: c1.1 c1.2 c1.3 c2.1 c2.2 c2.3; c1.3 answers without "ok"; c2.3 is too slow
    seconds = {"c1.1": 1, "c1.2": 2, "c1.3": 3, "c2.1": 4, "c2.2": 5, "c2.3": 6}
    answers = {tid: "OK, done" for tid in seconds} | {"c1.3": "nope"}
    model = Timed(seconds, answers)
    report = run_virtual(
        evaluate(
            [f"{plan}:reviewer"],
            "cases.yaml",
            repeat=3,
            custom_providers={"scripted:a": model},
        )
    )
    (v,) = report.variants
    assert [(r.task_id, r.passed) for r in v.runs] == [
        ("c1.1", True),
        ("c1.2", True),
        ("c1.3", False),
        ("c2.1", True),
        ("c2.2", True),
        ("c2.3", False),
    ]
    assert (v.n, v.passed, v.pass_rate) == (6, 4, pytest.approx(4 / 6))
    # Wilson, p = 4/6, n = 6
    assert (v.ci_low, v.ci_high) == pytest.approx((0.29999, 0.90324), abs=1e-4)
    assert (v.input_tokens, v.output_tokens) == (60, 30)
    assert v.cost_usd == pytest.approx(6 * CALL_USD)
    assert v.cost_per_run == pytest.approx(CALL_USD)
    # latencies 1..6 s: nearest-rank p50 is the 3rd, p95 the 6th
    assert [r.latency for r in v.runs] == pytest.approx([1, 2, 3, 4, 5, 6])
    assert (v.p50, v.p95) == (pytest.approx(3.0), pytest.approx(6.0))
    assert v.style_validity == 1.0
    assert v.per_case == {"c1": (2, 3), "c2": (2, 3)}
    slow = v.runs[5].checks[1]
    assert (slow.ok, slow.detail) == (False, "6.00s > 5.5s")
    assert v.runs[2].checks[0].detail == "missing 'ok'"
    assert report.comparison is None and report.complete
    # the whole eval is one run in the journal, like any run; the scores are in it too
    journal = Journal(state / "journal.sqlite")
    try:
        rec = journal.get_run(report.run_id)
        alerts = [e.message for _, e in journal.read_events(report.run_id) if e.type == "alert"]
    finally:
        journal.close()
    assert rec.task_count == 6 and rec.status == "succeeded"
    assert any("66.7% passed (4/6)" in a for a in alerts), alerts
    saved = json.loads(report.json_path.read_text())
    assert saved["variants"][0]["pass_rate"] == pytest.approx(4 / 6)
    assert saved["variants"][0]["cost_usd"] == pytest.approx(6 * CALL_USD)
    assert "| c1 | 2/3 |" in report.markdown_path.read_text()


def test_a_command_check_runs_in_a_sandboxed_copy_of_the_fixture(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = tmp_path / "fixture"
    write(
        fixture / "check.py",
        "import os, pathlib, sys\n"
        "assert 'FAKE_API_KEY' not in os.environ, 'a secret reached the check'\n"
        "got = pathlib.Path('answer.txt').read_text()\n"
        "sys.exit(0 if got == '42' else 'wrong answer: ' + got)\n",
    )
    monkeypatch.setenv("FAKE_API_KEY", "sk-" + "x" * 20)
    plan = plan_with(tmp_path, coder={"provider": "scripted:a", "tools": ["write_file"]})
    write(
        tmp_path / "cases.yaml",
        {
            "cases": [
                {
                    "id": "answer",
                    "prompt": "Write the answer to answer.txt",
                    "workspace": "fixture",
                    "checks": [{"command": [sys.executable, "check.py"]}],
                }
            ]
        },
    )

    def writes(content: str, escape: bool = False) -> list[Any]:
        calls = [
            ToolCall(
                id="w", name="write_file", arguments={"path": "answer.txt", "content": content}
            )
        ]
        if escape:
            calls.append(
                ToolCall(
                    id="e", name="write_file", arguments={"path": "../escape.txt", "content": "x"}
                )
            )
        return [
            Completion(
                text="",
                tool_calls=tuple(calls),
                stop_reason="tool_use",
                usage=Usage(input_tokens=10, output_tokens=5),
            ),
            "written",
        ]

    model = ScriptedProvider({"answer.1": writes("42", escape=True), "answer.2": writes("41")})
    report = evaluate_sync(
        [f"{plan}:coder"], "cases.yaml", repeat=2, custom_providers={"scripted:a": model}
    )
    (v,) = report.variants
    first, second = v.runs
    assert first.passed and first.checks[0].detail == "exit 0"
    assert not second.passed
    assert second.checks[0].detail.startswith("exit 1: wrong answer: 41")
    # each case run got its own copy; the fixture itself is untouched; nothing escaped
    assert (Path(first.workspace) / "answer.txt").read_text() == "42"
    assert (Path(second.workspace) / "answer.txt").read_text() == "41"
    assert Path(first.workspace).parent == state / "runs" / report.run_id / "cases"
    assert sorted(p.name for p in fixture.iterdir()) == ["check.py"]
    assert not (Path(first.workspace).parent / "escape.txt").exists()
    tool_results = [m.content for r in model.requests for m in r.messages if m.role == "tool"]
    assert any("path_outside_workspace" in t for t in tool_results), tool_results


def test_checks_json_schema_style_tokens_and_a_judge_with_its_verdict(
    tmp_path: Path, state: Path
) -> None:
    plan = plan_with(tmp_path, reviewer={"provider": "scripted:a", "style": "json"})
    write(
        tmp_path / "cases.yaml",
        {
            "judge": {"provider": "scripted:judge"},
            "prices": {"scripted:judge": PRICES["scripted:judge"]},
            "cases": [
                {
                    "id": "r",
                    "prompt": "Review it",
                    "checks": [
                        {"json_schema": {"type": "object", "required": ["verdict"]}},
                        {"style_valid": True},
                        {"max_tokens": 20},
                        {"judge": "Says what is wrong."},
                        {"regex": '(?i)"VERDICT"'},
                    ],
                }
            ],
        },
    )
    model = ScriptedProvider(
        {
            "r.1": ['{"verdict": "bad", "why": "injection"}'],
            "r.2": ["not json", '{"why": "none"}'],  # re-asked once; then no verdict key
        }
    )
    judge = ScriptedProvider(
        {
            "r.1.judge": ['{"verdict": "pass", "reason": "it names the injection"}'],
            "r.2.judge": ['{"verdict": "fail", "reason": "it says nothing"}'],
        }
    )
    report = evaluate_sync(
        [f"{plan}:reviewer"],
        "cases.yaml",
        repeat=2,
        custom_providers={"scripted:a": model, "scripted:judge": judge},
    )
    (v,) = report.variants
    good, bad = v.runs
    assert good.passed and [c.ok for c in good.checks] == [True] * 5
    assert good.checks[3].detail == "pass: it names the injection"
    assert [(c.kind, c.ok) for c in bad.checks] == [
        ("json_schema", False),
        ("style_valid", False),
        ("max_tokens", False),
        ("judge", False),
        ("regex", False),
    ]
    assert bad.checks[0].detail == "$: 'verdict' is a required property"
    assert bad.checks[1].detail == "the first answer was not valid json (1 re-ask(s))"
    assert bad.checks[2].detail == "30 tokens > 20"
    assert bad.checks[3].detail == "fail: it says nothing"
    assert (v.style_validity, bad.reasks) == (0.5, 1)
    # the spec pays for its 3 calls; the judges' 2 calls are counted apart
    assert v.cost_usd == pytest.approx(3 * CALL_USD)
    assert report.judged == 2 and report.judge_usage.cost_usd == pytest.approx(2 * CALL_USD)
    judge_prompt = next(r for r in judge.requests if r.task_id == "r.1.judge").messages[-1].content
    assert "Says what is wrong." in judge_prompt and '"verdict": "bad"' in judge_prompt


# -- comparing variants ----------------------------------------------------------------------


def test_vs_names_the_variant_that_wins_on_quality_per_dollar(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_with(
        tmp_path,
        steady={"provider": "scripted:a", "style": "json"},
        flaky={"provider": "scripted:b", "style": "json"},
    )
    write(
        tmp_path / "cases.yaml",
        {
            "checks": [{"style_valid": True}, {"json_schema": {"required": ["answer"]}}],
            "cases": [{"id": "q1", "prompt": "answer"}, {"id": "q2", "prompt": "answer"}],
        },
    )
    good = '{"answer": 1}'
    steady = ScriptedProvider({f"a.q{c}.{k}": [good] for c in (1, 2) for k in range(1, 5)})
    # the flaky variant's first answer does not parse in half of its case runs (re-asked)
    flaky = ScriptedProvider(
        {
            f"b.q{c}.{k}": ["{answer: 1" if k % 2 else good, good][: 2 if k % 2 else 1]
            for c in (1, 2)
            for k in range(1, 5)
        }
    )
    scripted(monkeypatch, {"scripted:a": steady, "scripted:b": flaky})
    code, out, err = run_cli(
        ["eval", f"{plan}:steady", "cases.yaml", "--vs", f"{plan}:flaky", "--repeat", "4", "-q"],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    steady_row = next(line for line in lines if line.startswith(f"{plan}:steady"))
    flaky_row = next(line for line in lines if line.startswith(f"{plan}:flaky"))
    assert "100.0% (8/8)" in steady_row and "100.0%" in steady_row.split()[4]
    assert "50.0% (4/8)" in flaky_row and "50.0%" in flaky_row
    # steady: 8 calls; flaky: 12 calls (4 re-asks). passes per $: 1.0 / 2e-5 vs 0.5 / 3e-5
    assert "$0.0002 " in steady_row and "$0.0002 " in flaky_row
    winner = next(line for line in lines if line.startswith("winner on quality per dollar"))
    assert winner.startswith(f"winner on quality per dollar: {plan}:steady (passes per $: ")
    assert "50,000.0" in winner and "16,666.7" in winner
    assert f"✗ b.q1.1 ({plan}:flaky): style_valid: the first answer was not valid json" in out
    run_id = out.split()[1]
    report = json.loads((state / "runs" / run_id / "eval.json").read_text())
    assert report["comparison"]["winner"] == f"{plan}:steady"
    assert report["comparison"]["values"][f"{plan}:flaky"] == pytest.approx(
        0.5 / (12 * CALL_USD / 8)
    )

    # --fail-under makes a weak spec fail the command (for CI)
    flaky = ScriptedProvider({f"q{c}.1": ["{answer: 1", good] for c in (1, 2)})
    scripted(monkeypatch, {"scripted:b": flaky})
    code, _, err = run_cli(
        ["eval", f"{plan}:flaky", "cases.yaml", "--fail-under", "0.9", "-q", "--json"], capsys
    )
    assert code == 1 and "below --fail-under 0.9" in err


def test_eval_from_the_command_line_with_the_sim_provider(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path / "plan.yaml",
        {
            "provider": "sim",
            "providers": {"sim": {"latency": {"ms": 50}}},
            "agents": [{"role": "reviewer", "style": "json"}],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )
    write(
        tmp_path / "cases.yaml",
        {
            "cases": [
                {"id": "a", "prompt": "x", "checks": [{"json_schema": {"required": ["summary"]}}]},
                {"id": "b", "prompt": "y", "checks": [{"contains": "banana"}]},
            ]
        },
    )
    code, out, _ = run_cli(["eval", "plan.yaml:reviewer", "cases.yaml", "-q"], capsys)
    assert code == 0
    assert "· SIMULATED" in out.splitlines()[0]
    row = next(line for line in out.splitlines() if line.startswith("plan.yaml:reviewer"))
    assert "50.0% (1/2)" in row and "n/a" in row  # sim has no price: cost unknown
    assert "✗ b.1 (plan.yaml:reviewer): contains 'banana': missing 'banana'" in out
    assert "report: " in out and "eval.md" in out
    code, out, err = run_cli(["eval", "nobody@1", "cases.yaml"], capsys)
    assert code == 2 and err.strip() == (
        "phalanx: error: no saved agent 'nobody' (see 'phalanx agents list')"
    )
    code, out, err = run_cli(["eval", "plan.yaml:reviewer", "missing.yaml"], capsys)
    assert code == 2 and err.strip() == "phalanx: error: missing.yaml: no such file"


# -- the gate: scale only what has proven itself -----------------------------------------------


def _save(tmp_path: Path, library: Library, name: str, style: str) -> str:
    from phalanx.plan.file import from_plan

    plan = write(
        tmp_path / f"{name}-{style}.yaml",
        {
            "provider": "sim",
            "providers": {"sim": {"latency": {"ms": 1000}}},
            "agents": [{"role": "worker", "style": style}],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )
    spec, styles, providers, _ = from_plan(f"{plan}:worker")
    saved, _ = library.save(name, spec, styles=styles, providers=providers, source=str(plan))
    assert saved.spec.provider == "sim" and saved.providers == {"sim": {"latency": {"ms": 1000}}}
    return saved.ref


def _gated_plan(tmp_path: Path, ref: str) -> Path:
    return write(
        tmp_path / "gated.yaml",
        {
            "provider": "sim",
            "providers": {"sim": {"latency": {"ms": 1000}}},
            "limits": {"min_eval_score": 0.8, "start_agents": 1},
            "autoscale": {"interval": 2},
            "agents": [{"agent": ref, "count": 6}],
            "tasks": [{"id": f"t{i}", "prompt": "x"} for i in range(30)],
        },
    )


def _events(state: Path, run_id: str, kind: str) -> list[dict[str, Any]]:
    journal = Journal(state / "journal.sqlite")
    try:
        return [vars_of(e) for _, e in journal.read_events(run_id) if e.type == kind]
    finally:
        journal.close()


def vars_of(e: Any) -> dict[str, Any]:
    from phalanx.events import event_to_dict

    return event_to_dict(e)


def test_min_eval_score_holds_a_failing_spec_and_lets_a_passing_one_scale(
    tmp_path: Path, state: Path, library: Library
) -> None:
    # worker@1 answers in text, worker@2 in json; the cases want json with a summary
    v1 = _save(tmp_path, library, "worker", "text")
    v2 = _save(tmp_path, library, "worker", "json")
    write(
        tmp_path / "cases.yaml",
        {
            "checks": [{"json_schema": {"type": "object", "required": ["summary"]}}],
            "cases": [{"id": f"c{i}", "prompt": "summarise"} for i in range(4)],
        },
    )
    low = run_virtual(evaluate([v1], "cases.yaml"))
    high = run_virtual(evaluate([v2], "cases.yaml"))
    assert low.variants[0].pass_rate == 0.0 and high.variants[0].pass_rate == 1.0
    assert low.recorded == (v1,) and high.recorded == (v2,)
    last = library.get(v1).last_eval()
    assert last is not None and (last.n, last.passed, last.run_id) == (4, 0, low.run_id)

    held = run_virtual(phalanx.run(_gated_plan(tmp_path, v1)))
    assert held.status == "succeeded"
    decisions = _events(state, held.run_id, "scale_decision")
    alerts = [a["message"] for a in _events(state, held.run_id, "alert")]
    why = "worker@1: last eval pass rate 0.00 is below limits.min_eval_score 0.8: held at 1 agent"
    assert decisions[0]["action"] == "hold" and decisions[0]["reason"] == why
    assert decisions[0]["numbers"] == {"eval_score": 0.0, "min_eval_score": 0.8}
    assert alerts == [f"worker: {why}"]
    assert all(d["action"] == "hold" for d in decisions)
    assert _events(state, held.run_id, "agent_joined") == []
    assert len({t.agent for t in held.tasks.values()}) == 1  # held at start_agents

    grown = run_virtual(phalanx.run(_gated_plan(tmp_path, v2)))
    assert grown.status == "succeeded"
    assert any(d["action"] == "add" for d in _events(state, grown.run_id, "scale_decision"))
    assert _events(state, grown.run_id, "agent_joined")
    assert len({t.agent for t in grown.tasks.values()}) > 1
    assert grown.wall_seconds < held.wall_seconds


def test_a_spec_without_an_eval_is_held_and_the_run_says_no_eval(
    tmp_path: Path, state: Path, library: Library
) -> None:
    ref = _save(tmp_path, library, "fresh", "text")
    result = run_virtual(phalanx.run(_gated_plan(tmp_path, ref)))
    (first, *_) = _events(state, result.run_id, "scale_decision")
    assert first["action"] == "hold"
    assert first["reason"] == (
        "fresh@1 has no eval, below limits.min_eval_score 0.8: held at 1 agent"
    )
    assert _events(state, result.run_id, "agent_joined") == []
    # an inline spec has no eval either, unless the plan states its score
    inline = yaml.safe_load(_gated_plan(tmp_path, ref).read_text())
    inline["agents"] = [{"role": "worker", "count": 4}]
    result = run_virtual(phalanx.run(phalanx.Plan.from_dict(inline)))
    (first, *_) = _events(state, result.run_id, "scale_decision")
    assert first["reason"].startswith("the worker spec has no eval")


def test_a_resumed_plan_keeps_the_saved_agents_score(tmp_path: Path, library: Library) -> None:
    from phalanx.plan.file import plan_to_dict

    ref = _save(tmp_path, library, "kept", "json")
    saved = library.get(ref)
    saved.record_eval(
        EvalRecord(
            run_id="r1", at=0.0, cases="c", n=4, passed=3, pass_rate=0.75, ci_low=0.3, ci_high=0.95
        )
    )
    plan = load_plan(str(_gated_plan(tmp_path, ref)))
    assert plan.agents[0].options["eval_score"] == 0.75
    again = phalanx.Plan.from_dict(plan_to_dict(plan))  # what resume rebuilds
    assert again.agents[0].options["eval_score"] == 0.75
    assert again.agents[0].style == "json"


def test_swarm_requires_an_eval_score_before_it_clones(
    tmp_path: Path, state: Path, library: Library
) -> None:
    ref = _save(tmp_path, library, "swarmer", "text")
    swarm = phalanx.Swarm(size=6, spec=ref, min_eval_score=0.5)
    work = [f"item {i}" for i in range(24)]
    held = run_virtual(swarm.run(work))
    assert held.status == "succeeded"
    assert len({t.agent for t in held.tasks.values()}) == 1
    (first, *_) = _events(state, held.run_id, "scale_decision")
    assert (
        first["reason"] == "swarmer@1 has no eval, below limits.min_eval_score 0.5: held at 1 agent"
    )

    library.get(ref).record_eval(
        EvalRecord(
            run_id="r", at=0.0, cases="c", n=10, passed=9, pass_rate=0.9, ci_low=0.6, ci_high=0.98
        )
    )
    swarm = phalanx.Swarm(size=6, spec=ref, min_eval_score=0.5)
    grown = run_virtual(swarm.run(work))
    assert len({t.agent for t in grown.tasks.values()}) > 1
    with pytest.raises(UsageError, match="no saved agent 'ghost'"):
        phalanx.Swarm(size=2, spec="ghost@1")


def test_min_eval_score_needs_the_autoscaler(tmp_path: Path) -> None:
    write(
        tmp_path / "p.yaml",
        "limits:\n  min_eval_score: 0.8\nagents:\n  - role: x\ntasks:\n  - {id: t, prompt: x}\n",
    )
    with pytest.raises(PlanError) as err:
        load_plan("p.yaml")
    assert str(err.value) == (
        "p.yaml:2: limits.min_eval_score: needs the autoscaler: set limits.start_agents "
        "(where a spec below it is held)"
    )


# -- history --------------------------------------------------------------------------------------


def test_history_is_not_recorded_for_an_override_or_an_incomplete_eval(
    tmp_path: Path, state: Path, library: Library
) -> None:
    ref = _save(tmp_path, library, "hist", "json")
    write(tmp_path / "cases.yaml", {"cases": [{"id": f"c{i}", "prompt": "x"} for i in range(3)]})
    report = run_virtual(evaluate([ref], "cases.yaml", provider="sim:other"))
    assert report.recorded == ()
    assert f"not recorded for {ref}: --provider sim:other replaced its model" in report.notes
    # the budget is spent by the case tasks, so their judges never run: the eval is incomplete
    write(
        tmp_path / "budget.yaml",
        {
            "limits": {"max_tokens": 1},
            "checks": [{"judge": "Is it right?"}],
            "cases": [{"id": f"c{i}", "prompt": "x"} for i in range(3)],
        },
    )
    report = run_virtual(evaluate([ref], "budget.yaml"))
    assert report.status == "budget_exhausted" and not report.complete
    assert report.recorded == ()
    assert library.get(ref).history() == []
    assert report.variants[0].not_run > 0


# -- the embedded model, for real -------------------------------------------------------------


def test_an_eval_of_five_cases_on_local_smollm2(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path / "plan.yaml",
        {
            "provider": "local:smollm2",
            "providers": {"local": {"pool_size": 1, "max_tokens": 128}},
            "agents": [{"role": "generalist", "style": "concise"}],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )
    prompts = [
        "Name one primary color. Answer in one short sentence.",
        "Name one fruit. Answer in one short sentence.",
        "Say hello in one short sentence.",
        "Name one animal. Answer in one short sentence.",
        "Name one day of the week. Answer in one short sentence.",
    ]
    write(
        tmp_path / "cases.yaml",
        {
            "name": "smollm2-smoke",
            "checks": [{"style_valid": True}, {"max_tokens": 2000}, {"max_seconds": 120}],
            "cases": [
                {"id": f"q{i}", "prompt": p, "checks": [{"regex": "[A-Za-z]"}]}
                for i, p in enumerate(prompts, 1)
            ],
        },
    )
    code, out, err = run_cli(["eval", "plan.yaml:generalist", "cases.yaml", "-q"], capsys)
    assert code == 0, out + err
    run_id = out.split()[1]
    report = json.loads((state / "runs" / run_id / "eval.json").read_text())
    (v,) = report["variants"]
    assert v["n"] == 5 and v["not_run"] == 0 and report["simulated"] is False
    assert all(r["state"] == "succeeded" and r["output"].strip() for r in v["runs"]), v["runs"]
    assert v["cost_usd"] == 0.0 and v["input_tokens"] > 0 and v["output_tokens"] > 0
    assert v["latency_p50_seconds"] > 0
    assert 0.0 <= v["pass_rate"] <= 1.0
    markdown = (state / "runs" / run_id / "eval.md").read_text()
    assert markdown.startswith(f"# eval {run_id} · smollm2-smoke: 5 cases × 1 repeat")


# -- the shipped examples ------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "evals"


def test_the_example_coder_case_passes_when_the_agent_fixes_the_code(state: Path) -> None:
    cf = load_cases(EXAMPLES / "coder-cases.yaml")
    assert [c.label for c in cf.cases[0].checks] == [
        "command python3 -m unittest -q",
        "max_seconds 300",
    ]
    edit = ToolCall(
        id="e", name="edit_file", arguments={"path": "calc.py", "old": "a - b", "new": "a + b"}
    )
    test = ToolCall(id="t", name="run_command", arguments={"argv": ["python3", "-m", "unittest"]})
    model = ScriptedProvider(
        {
            task: [
                Completion(text="", tool_calls=(edit,), stop_reason="tool_use"),
                Completion(text="", tool_calls=(test,), stop_reason="tool_use"),
                "Fixed: add returned a - b.",
            ]
            for task in ("fix-add.1", "fix-add.2")
        }
        | {"fix-add.3": ["I could not fix it."]}
    )
    report = evaluate_sync(
        [f"{EXAMPLES}/team.yaml:coder"],
        cf,
        repeat=3,
        custom_providers={"local:smollm2": model},
    )
    (v,) = report.variants
    assert [r.passed for r in v.runs] == [True, True, False]
    assert v.runs[0].checks[0].detail == "exit 0"
    assert v.runs[2].checks[0].detail.startswith("exit 1")
    ran_tests = [m.content for r in model.requests for m in r.messages if m.role == "tool"]
    assert any("[exit code 0]" in t for t in ran_tests), ran_tests  # its run_command ran there
    assert (EXAMPLES / "fixtures" / "add" / "calc.py").read_text().count("a - b") == 1


def test_the_example_reviewer_cases_run_on_the_sim_provider(state: Path) -> None:
    report = run_virtual(
        evaluate(
            [f"{EXAMPLES}/team.yaml:reviewer"], EXAMPLES / "reviewer-cases.yaml", provider="sim"
        )
    )
    (v,) = report.variants
    assert (v.n, v.not_run) == (3, 0)
    assert report.simulated and report.markdown_path.exists()
    assert report.recorded == ()  # not a saved agent


# -- service time apart from queue wait (issue 17) ---------------------------------------------
def test_identical_specs_under_a_concurrency_limit_compare_on_service_time(
    tmp_path: Path, state: Path
) -> None:
    """Two identical specs on one sim model that serves one call at a time (200 ms each):
    eight case runs queue behind one another, the first spec's first. Their latencies
    (first attempt to end) differ by the order they ran in; their service times do not, and
    the queue wait is reported apart."""
    plan = write(
        tmp_path / "plan.yaml",
        {
            "name": "specs",
            "provider": "sim",
            "providers": {"sim": {"latency": {"ms": 200}, "concurrency": 1}},
            "agents": [
                {"role": "reviewer", "style": "text"},
                {"role": "tester", "style": "text"},
            ],
            "tasks": [{"id": "t", "prompt": "x"}],
        },
    )
    write(
        tmp_path / "cases.yaml",
        {"cases": [{"id": "q1", "prompt": "answer"}, {"id": "q2", "prompt": "answer"}]},
    )
    report = run_virtual(
        evaluate([f"{plan}:reviewer", f"{plan}:tester"], "cases.yaml", repeat=2, record=False)
    )
    first, second = report.variants
    assert first.n == second.n == 4 and first.passed == second.passed == 4
    for v in (first, second):
        for r in v.runs:
            assert r.service == pytest.approx(0.2, abs=1e-6)
            assert r.latency == pytest.approx(r.service + r.queue_wait, abs=1e-6)
    # one call at a time: the eight case runs waited 0, 0.2, ... 1.4 s in some order
    waits = sorted(r.queue_wait for v in (first, second) for r in v.runs)
    assert waits == pytest.approx([0.2 * i for i in range(8)], abs=1e-6)
    assert first.service_p50 == pytest.approx(second.service_p50, abs=1e-6)
    assert first.service_p50 == pytest.approx(0.2, abs=1e-6)
    assert abs(first.queue_p50 - second.queue_p50) >= 0.6  # type: ignore[operator]
    assert abs(first.p50 - second.p50) >= 0.6  # type: ignore[operator]  # latency: queue in it
    c = report.comparison
    assert c is not None
    assert c.service_p50 == {v.label: pytest.approx(0.2, abs=1e-6) for v in (first, second)}
    sentence = c.sentence()
    assert f"service time p50: {first.label} 0.20s, {second.label} 0.20s" in sentence
    assert "(queue wait p50 apart: " in sentence
    text = report.render_text()
    assert "SERVICE P50" in text and "QUEUE P50" in text
    row = next(line for line in text.splitlines() if line.startswith(first.label))
    assert "0.20s" in row
    data = json.loads(report.json_path.read_text())
    assert data["variants"][0]["service_p50_seconds"] == pytest.approx(0.2, abs=1e-6)
    assert data["variants"][1]["queue_p50_seconds"] == pytest.approx(second.queue_p50)
    assert "| service p50 | service p95 | queue p50 | queue p95 |" in report.render_markdown()


def test_eval_timings_use_active_time_across_a_resume() -> None:
    """A case run started in a session that crashed and finished after a resume 100 s
    later: its latency, service time and queue wait leave the downtime out."""
    from phalanx.evals.scoring import timings_from_events
    from phalanx.events import (
        AgentInfo,
        AttemptFinished,
        AttemptStarted,
        RunFinished,
        RunStarted,
        TaskInfo,
        TaskSucceeded,
    )

    def started(ts: float, session: int) -> RunStarted:
        return RunStarted(
            ts=ts,
            run_id="r",
            plan="p",
            session=session,
            policy="best_fit",
            simulated=True,
            agents=(AgentInfo(name="A", role="reviewer", provider="sim"),),
            tasks=(TaskInfo(id="q1.1", title="q1", category="other"),),
        )

    events = [
        started(0.0, 1),
        AttemptStarted(ts=0.5, task_id="q1.1", attempt_id=1, attempt_no=1, agent="A"),
        # the process dies at 2.0 (its last event); resumed at 102.0
        AttemptStarted(ts=2.0, task_id="other", attempt_id=9, attempt_no=1, agent="A"),
        started(102.0, 2),
        AttemptStarted(ts=102.0, task_id="q1.1", attempt_id=2, attempt_no=2, agent="A"),
        AttemptFinished(
            ts=105.0, task_id="q1.1", attempt_id=2, agent="A", ok=True, duration=2.0, queued=1.0
        ),
        TaskSucceeded(ts=105.0, task_id="q1.1", attempt_id=2, agent="A"),
        RunFinished(ts=105.0, status="succeeded"),
    ]
    timings, _ = timings_from_events(events)
    t = timings["q1.1"]
    # active clock: session 1 is 0..2 (2 s), session 2 starts at 2 s active
    assert t.start == pytest.approx(0.5) and t.ready == pytest.approx(0.0)
    assert t.end == pytest.approx(2.0 + 3.0)
    assert t.latency == pytest.approx(4.5)  # not 104.5: the 100 s downtime is left out
    assert t.service_time == pytest.approx(2.0)
    assert t.queue_wait == pytest.approx(0.5 + 1.0)

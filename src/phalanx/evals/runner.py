"""Running an eval: :func:`evaluate` (and :func:`evaluate_sync`, for code without an event
loop) runs every case of every spec, ``repeat`` times, as ONE plan through
:func:`phalanx.api.run`: the journal, the rate governor and the budgets of a normal run apply,
and the run shows in ``phalanx runs``, ``status``, ``report`` and the dashboard (each case run
has its own agent and its own copy of the fixture, and a judge check is a judge task, see
:mod:`phalanx.evals.build`). Then the checks are scored (:mod:`phalanx.evals.scoring`), the
statistics computed (:mod:`phalanx.evals.stats`), the :class:`EvalReport` (``eval.json``,
``eval.md``) written beside the run's outputs with a line per spec in the run's journal, and a
saved agent's results appended to its eval history in the library
(:mod:`phalanx.plan.library`), which is what ``limits.min_eval_score`` reads."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._util import blocking
from ..agents.spec import AgentSpec
from ..agents.tools import ToolSpec
from ..api import RunResult, new_run_id, run, state_dir
from ..cost import ZERO
from ..events import Alert, EventSink
from ..exceptions import UsageError
from ..journal import Journal
from ..plan.library import EvalRecord, SavedAgent
from ..providers import Provider
from .build import Build, build_plan, sandboxed_tools
from .candidates import Candidate, candidate
from .cases import CaseFile, load_cases
from .report import CaseRun, EvalReport, VariantReport, money
from .scoring import read_timings, score
from .stats import compare, variant_report

__all__ = ["EvalReport", "evaluate", "evaluate_sync"]

_MAX_VARIANTS = 26


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
    base_url: str | None = None,
) -> EvalReport:
    """Run every case of ``cases`` on every spec ``repeat`` times, in one run, and score it.

    ``specs``: saved agents (``"reviewer@2"``), plan agents (``"plan.yaml:reviewer"``) or
    :class:`AgentSpec` objects. ``provider`` overrides every agent's model (then nothing is
    recorded in the library: the score would not be the saved spec's). ``record``: append
    each saved agent's result to its eval history (only for a complete eval). ``base_url``:
    the server of that provider (else of the one provider kind the specs use)."""
    cf, cands, rid, run_dir = _prepare(specs, cases, repeat=repeat, state=state, run_id=run_id)
    build = build_plan(cf, cands, repeat, run_dir)
    result = await run(
        build.plan,
        provider=provider,
        seed=seed,
        state=state,
        run_id=rid,
        sinks=sinks,
        tools=sandboxed_tools(build, tools),
        workspace=run_dir / "workspace",
        custom_providers=custom_providers,
        base_url=base_url,
    )
    timings, finished = read_timings(result.journal_path, rid)
    runs = await score(build, result, timings)
    variants = _variants(cands, build, runs, provider)
    judge_ids = [jid for s in build.slots for _, jid in s.judges]
    report = EvalReport(
        run_id=rid,
        cases=cf.name,
        cases_path=str(cf.path),
        repeat=repeat,
        status=result.status,
        simulated=result.simulated,
        variants=variants,
        comparison=compare(variants),
        judge_usage=sum((result.tasks[j].usage for j in judge_ids), ZERO),
        judged=sum(1 for j in judge_ids if result.tasks[j].state == "succeeded"),
        run_dir=run_dir,
        notes=_notes(result, variants),
        finished_at=finished or time.time(),
    )
    report = _record(report, cands, provider, record)
    _write(report, result)
    return report


def _prepare(
    specs: Sequence[str | AgentSpec | SavedAgent | Candidate],
    cases: str | os.PathLike[str] | CaseFile,
    *,
    repeat: int,
    state: str | os.PathLike[str] | None,
    run_id: str | None,
) -> tuple[CaseFile, list[Candidate], str, Path]:
    """The case file, the specs under test (at least one, at most :data:`_MAX_VARIANTS`,
    each label once), and the id and folder of a run that does not exist yet."""
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
    return cf, cands, rid, run_dir


def _variants(
    cands: Sequence[Candidate], build: Build, runs: Sequence[CaseRun], provider: str | None
) -> tuple[VariantReport, ...]:
    """A report per spec, of its own case runs (keyed a, b, ... when there are several)."""
    many = len(cands) > 1
    return tuple(
        variant_report(
            c.label,
            chr(ord("a") + i) if many else "",
            provider or c.spec.provider or build.plan.provider,
            [r for r, s in zip(runs, build.slots, strict=True) if s.variant == i],
        )
        for i, c in enumerate(cands)
    )


def _notes(result: RunResult, variants: Sequence[VariantReport]) -> tuple[str, ...]:
    notes: list[str] = list(result.notes)
    if any(v.not_run for v in variants):
        notes.append(f"incomplete: the run ended {result.status} before every case ran")
    return tuple(notes)


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
                f"style ok {100 * v.style_validity:.1f}%, cost {money(v.cost_usd)}"
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


evaluate_sync = blocking(
    evaluate, "evaluate_sync", ":func:`evaluate` for code without an event loop."
)

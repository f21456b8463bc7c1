"""What an eval reports, and how it is shown: a :class:`CaseRun` per case run (its checks,
answer, usage, latency), a :class:`VariantReport` per spec (pass rate and its interval,
style validity, tokens, cost, latency percentiles, per case), the :class:`Comparison` of the
specs, and the :class:`EvalReport` of the whole eval with its JSON form, its terminal summary
and its markdown (``eval.json``, ``eval.md``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cost import ZERO, Usage
from .checks import CheckResult


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
    latency: float | None = None  # its first attempt's start to its end (queue wait included)
    style_valid: bool = False
    reasks: int = 0
    error: str | None = None
    workspace: str = ""
    judged: bool = True  # its judges, if any, ran (a budget may stop them)
    service: float | None = None  # its model calls' time (what the spec costs in time)
    queue_wait: float | None = None  # ready to its first call, and waits for capacity

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
    # service time (model calls) and queue wait per case run: specs compare on service time
    service_p50: float | None = None
    service_p95: float | None = None
    queue_p50: float | None = None
    queue_p95: float | None = None

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
            "service_p50_seconds": self.service_p50,
            "service_p95_seconds": self.service_p95,
            "queue_p50_seconds": self.queue_p50,
            "queue_p95_seconds": self.queue_p95,
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
    # speed compares on service time (p50 per spec), queue wait apart: specs that waited
    # for one another's model calls would otherwise differ by the order they ran in
    service_p50: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    queue_p50: Mapping[str, float | None] = dataclasses.field(default_factory=dict)

    def sentence(self) -> str:
        if self.winner is None:
            return f"no winner: {self.note}" + self._speed()
        shown = ", ".join(f"{label} {_num(v)}" for label, v in self.values.items() if v is not None)
        text = f"winner on quality per dollar: {self.winner} ({self.metric}: {shown})"
        if self.best_pass_rate and self.best_pass_rate != self.winner:
            text += f" · best pass rate: {self.best_pass_rate}"
        return text + (f" · {self.note}" if self.note else "") + self._speed()

    def _speed(self) -> str:
        """`` · service time p50: a 1.00s, b 1.02s (queue wait p50 apart: a 0.00s, b 3.00s)``."""
        if not any(v is not None for v in self.service_p50.values()):
            return ""
        service = ", ".join(f"{k} {_secs(v)}" for k, v in self.service_p50.items())
        queue = ", ".join(f"{k} {_secs(v)}" for k, v in self.queue_p50.items())
        return f" · service time p50: {service} (queue wait p50 apart: {queue})"


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
                "service_p50_seconds": dict(c.service_p50),
                "queue_p50_seconds": dict(c.queue_p50),
            },
            "judges": {"verdicts": self.judged, "usage": self.judge_usage.to_dict()},
            "recorded": list(self.recorded),
            "notes": list(self.notes),
        }

    def render_text(self, *, failures: int = 10) -> str:
        """The terminal summary: a row per spec, the winner, the first failed case runs."""
        rows = [_row(v) for v in self.variants]
        head = ("SPEC", "PASS", "95% CI", "STYLE OK", "TOKENS IN/OUT", "COST", *_TIME_HEAD)
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
            cost = money(self.judge_usage.cost_usd)
            out.append(
                f"- judges: {self.judged} verdicts, {self.judge_usage.total_tokens:,} tokens, "
                f"{cost} (not counted in the specs' cost)"
            )
        if self.recorded:
            out.append(f"- recorded in the library: {', '.join(self.recorded)}")
        out.extend(f"- note: {n}" for n in self.notes)
        times = " | ".join(h.lower() for h in _TIME_HEAD)
        out += ["", f"| spec | pass | 95% CI | style ok | tokens in/out | cost | {times} |"]
        out.append("|---|---|---|---|---|---|" + "---|" * len(_TIME_HEAD))
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
                    f"tokens, {lat} (service {_secs(r.service)}, queue {_secs(r.queue_wait)})"
                    + (f", error: {r.error}" if r.error else "")
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


def money(cost: float | None) -> str:
    """A cost as shown: ``n/a`` when unknown."""
    if cost is None:
        return "n/a"
    if cost == 0:
        return "$0"
    return f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


# latency columns: service time (the model calls) and queue wait apart
_TIME_HEAD = ("SERVICE P50", "SERVICE P95", "QUEUE P50", "QUEUE P95")


def _row(v: VariantReport) -> tuple[str, ...]:
    not_run = f", {v.not_run} not run" if v.not_run else ""
    return (
        v.label,
        f"{100 * v.pass_rate:.1f}% ({v.passed}/{v.n}{not_run})",
        f"{100 * v.ci_low:.1f}–{100 * v.ci_high:.1f}%",
        f"{100 * v.style_validity:.1f}%",
        f"{v.input_tokens:,}/{v.output_tokens:,}",
        money(v.cost_usd),
        _secs(v.service_p50),
        _secs(v.service_p95),
        _secs(v.queue_p50),
        _secs(v.queue_p95),
    )

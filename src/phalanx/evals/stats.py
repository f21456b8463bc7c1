"""The statistics of an eval, per spec (:func:`variant_report`): pass rate = case runs whose
task succeeded and passed every check, over the case runs that ran; its 95% Wilson interval
(:func:`wilson_interval`, over every case run, so repeats narrow it); tokens and cost of the
spec's own tasks (judges are counted apart); latency per case run from its first attempt's
start to its task's end, and apart its service time (its model calls) and its queue wait (from
when it could run to its first attempt, plus its attempts' waits for capacity), each p50 and
p95 by the nearest-rank method (:func:`phalanx._util.percentile`); specs compare their speed
on service time, since the queue wait depends on which spec's calls went first;
style validity = case runs whose first answer parsed in the spec's style, without a re-ask.
With several specs, :func:`compare` names the winner on quality per dollar: the highest pass
rate per dollar of cost per case run (per 1,000 tokens when a cost is unknown or zero)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._util import percentile
from ..cost import ZERO
from .report import CaseRun, Comparison, VariantReport

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson_interval(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (95% by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def variant_report(
    label: str, key: str, provider: str | None, runs: Sequence[CaseRun]
) -> VariantReport:
    """The statistics of one spec's case runs; those that did not run are counted apart."""
    ran = [r for r in runs if r.ran]
    passed = sum(1 for r in ran if r.passed)
    n = len(ran)
    low, high = wilson_interval(passed, n)
    usage = sum((r.usage for r in ran), ZERO)
    unpriced = any(r.usage.cost_usd is None and r.usage.total_tokens for r in ran)
    latencies = [r.latency for r in ran if r.latency is not None]
    service = [r.service for r in ran if r.service is not None]
    queue = [r.queue_wait for r in ran if r.queue_wait is not None]
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
        service_p50=percentile(service, 50),
        service_p95=percentile(service, 95),
        queue_p50=percentile(queue, 50),
        queue_p95=percentile(queue, 95),
    )


def compare(variants: Sequence[VariantReport]) -> Comparison | None:
    """The winner on quality per dollar: the highest pass rate per dollar of cost per case
    run; per 1,000 tokens when some cost is unknown or zero. Ties go to the higher pass
    rate, then to the spec given first."""
    if len(variants) < 2:
        return None
    metric, values, note = _quality(variants)
    order = sorted(
        range(len(variants)),
        key=lambda i: (-(values.get(variants[i].label) or 0.0), -variants[i].pass_rate, i),
    )
    best_rate = max(variants, key=lambda v: v.pass_rate)
    speed = {
        "service_p50": {v.label: v.service_p50 for v in variants},
        "queue_p50": {v.label: v.queue_p50 for v in variants},
    }
    if best_rate.pass_rate == 0:
        return Comparison(
            metric=metric,
            values=values,
            winner=None,
            best_pass_rate=None,
            note="no spec passed",
            **speed,
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
        **speed,
    )


def _quality(variants: Sequence[VariantReport]) -> tuple[str, dict[str, float | None], str]:
    """The measure of quality per dollar that every spec has: (its name, its value per
    spec, a note on why a fallback was used)."""
    if all(v.cost_per_run for v in variants):
        values: dict[str, float | None] = {
            v.label: v.pass_rate / v.cost_per_run for v in variants if v.cost_per_run
        }
        return "passes per $", values, ""
    if all(v.n and v.tokens for v in variants):
        values = {v.label: v.pass_rate / (v.tokens / v.n / 1000) for v in variants}
        return (
            "passes per 1k tokens",
            values,
            "a cost is unknown or zero, so quality is compared per 1,000 tokens",
        )
    values = {v.label: v.pass_rate for v in variants}
    return "pass rate", values, "no tokens were counted, so only pass rates are compared"

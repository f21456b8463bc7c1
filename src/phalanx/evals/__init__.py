"""Evals: perfect one agent, then replicate it (case files, checks, pass rates, history)."""

from __future__ import annotations

from .runner import (
    CHECK_KINDS,
    Candidate,
    Case,
    CaseFile,
    CaseRun,
    Check,
    CheckResult,
    Comparison,
    EvalReport,
    VariantReport,
    candidate,
    compare,
    evaluate,
    evaluate_sync,
    load_cases,
    percentile,
    wilson_interval,
)

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

"""Evals: perfect one agent, then replicate it (case files, checks, pass rates, history).

Measure an agent spec on a file of cases before scaling it. A case file (YAML, checked with
one-line errors like a plan) lists cases: a prompt, an optional workspace fixture, and checks
on the answer::

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

The modules, bottom up: :mod:`~phalanx.evals.checks` (the check kinds, reading and scoring
one check), :mod:`~phalanx.evals.cases` (case files, :func:`load_cases`),
:mod:`~phalanx.evals.candidates` (the specs under test), :mod:`~phalanx.evals.report` (the
report types and their rendering), :mod:`~phalanx.evals.stats` (pass rates, Wilson
intervals, quality per dollar), :mod:`~phalanx.evals.build` (the eval as one plan),
:mod:`~phalanx.evals.scoring` (timings from the journal, checks on the finished run) and
:mod:`~phalanx.evals.runner` (:func:`evaluate`, recording and writing the report).
"""

from __future__ import annotations

from .._util import percentile
from .candidates import Candidate, candidate
from .cases import Case, CaseFile, load_cases
from .checks import CHECK_KINDS, Check, CheckResult
from .report import CaseRun, Comparison, EvalReport, VariantReport
from .runner import evaluate, evaluate_sync
from .stats import compare, wilson_interval

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

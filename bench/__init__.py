"""phalanx benchmarks, each measured against its baseline in the same process run.

``python -m bench`` (or ``make bench``) runs every benchmark and writes
``docs/benchmarks.md`` and ``docs/benchmarks.json``; ``python -m bench --smoke`` runs tiny
versions in seconds that check the code paths, not the targets (``make test`` runs them).
One module per benchmark; each has ``run(cfg) -> list[Row]``.
"""

from __future__ import annotations

BENCHMARKS: tuple[str, ...] = (
    "b1_overhead",
    "b2_scaling",
    "b3_memory",
    "b4_journal",
    "b5_ray",
    "b6_local",
    "b7_quota",
    "b8_policy",
    "b9_status",
    "b10_provider",
)

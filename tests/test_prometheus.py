"""Prometheus done right: one family per metric with only its finest series (run, role,
agent), so that the sum of a family is the journal's total; scrapes fold incrementally."""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import rows, sim_plan
from phalanx.journal import Journal
from phalanx.status.prometheus import BUCKETS, PrometheusExporter
from phalanx.status.web.views import metrics_text

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The exposition text strictly parsed: family -> its samples (name suffixes kept in the
    family for histograms: ``x_bucket``, ``x_sum``, ``x_count``). Each family has one TYPE
    line, before its samples, and no sample repeats its labels."""
    families: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    typed: dict[str, str] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in typed, f"two TYPE lines for {name}"
            typed[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, inner, value = m.groups()
        labels: dict[str, str] = {}
        pos = 0
        while inner and pos < len(inner):
            lm = _LABEL.match(inner, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or typed.get(base) == "histogram", f"{name}: no TYPE before it"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"a repeated series: {line!r}"
        seen.add(key)
        families[name].append((labels, float(value)))
    return families


def total(
    families: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str
) -> float:
    return math.fsum(
        v for labels, v in families[name] if all(labels[k] == x for k, x in match.items())
    )


def _plan() -> dict[str, Any]:
    """Two roles (3 coders, 2 testers), faults, few attempts (some tasks fail, their
    dependents are skipped), known prices."""
    data = sim_plan(
        40,
        latency_ms=2,
        deps="layered",
        faults={"server_error": 0.25, "rate_limited": 0.1},
        max_attempts=2,
        seed=3,
    )
    data["agents"] = [{"role": "coder", "count": 3}, {"role": "tester", "count": 2}]
    data["prices"] = {"sim": {"input": 3.0, "output": 15.0}}
    return data


class CountingJournal:
    """A journal whose ``read_events`` counts the events it hands out."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.read = 0

    def read_events(self, run_id: str, after: int = 0) -> Iterator[tuple[int, Any]]:
        for item in self.journal.read_events(run_id, after=after):
            self.read += 1
            yield item

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)


def _check_against_the_journal(state: Path, rid: str, text: str) -> None:
    fam = parse(text)
    # tokens: each kind's family sum is the attempts table's
    (att,) = rows(
        state,
        "SELECT count(*) n, sum(input_tokens) i, sum(output_tokens) o, sum(cost_usd) c,"
        " sum(outcome='failed') f FROM attempts WHERE run_id=?",
        rid,
    )
    assert att["i"] > 0 and att["f"] > 0
    assert total(fam, "phalanx_tokens_total", kind="input") == att["i"]
    assert total(fam, "phalanx_tokens_total", kind="output") == att["o"]
    assert total(fam, "phalanx_tokens_total") == att["i"] + att["o"]  # no cache in the sim
    assert total(fam, "phalanx_attempts_total") == att["n"]
    assert total(fam, "phalanx_attempts_failed_total") == att["f"]
    assert total(fam, "phalanx_cost_usd_total") == pytest.approx(att["c"], rel=1e-9)
    # tasks by state: the tasks table
    for r in rows(state, "SELECT state, count(*) n FROM tasks WHERE run_id=? GROUP BY state", rid):
        assert total(fam, "phalanx_tasks", state=r["state"]) == r["n"]
    assert total(fam, "phalanx_tasks") == len(
        rows(state, "SELECT 1 FROM tasks WHERE run_id=?", rid)
    )
    succeeded = rows(
        state, "SELECT count(*) n FROM tasks WHERE run_id=? AND state='succeeded'", rid
    )
    assert total(fam, "phalanx_tasks_succeeded_total") == succeeded[0]["n"]
    # every per-agent family has the three labels; by role, the agents table's roles
    roles = {r["name"]: r["role"] for r in rows(state, "SELECT * FROM agents WHERE run_id=?", rid)}
    for name in ("phalanx_tokens_total", "phalanx_attempts_total", "phalanx_busy_seconds_total"):
        for labels, _ in fam[name]:
            assert labels["run"] == rid and roles[labels["agent"]] == labels["role"]
    by_role = rows(
        state,
        "SELECT a.role role, count(*) n FROM attempts t JOIN agents a"
        " ON a.run_id=t.run_id AND a.name=t.agent WHERE t.run_id=? GROUP BY a.role",
        rid,
    )
    assert {r["role"] for r in by_role} == {"coder", "tester"}
    for r in by_role:
        assert total(fam, "phalanx_attempts_total", role=r["role"]) == r["n"]
    # histograms: the attempt service times, summed over agents, are the finished attempts'
    (fin,) = rows(
        state,
        "SELECT count(*) n FROM attempts WHERE run_id=? AND outcome IN ('succeeded','failed')",
        rid,
    )
    assert total(fam, "phalanx_attempt_service_seconds_count") == fin["n"]
    assert total(fam, "phalanx_attempt_service_seconds_bucket", le="+Inf") == fin["n"]
    assert total(fam, "phalanx_task_latency_seconds_count") == succeeded[0]["n"]
    for labels, _ in fam["phalanx_attempt_service_seconds_count"]:
        cumulative = [
            v
            for lb, v in fam["phalanx_attempt_service_seconds_bucket"]
            if {k: lb[k] for k in ("run", "role", "agent")} == labels
        ]
        assert len(cumulative) == len(BUCKETS) + 1 and cumulative == sorted(cumulative)


def test_family_sums_equal_the_journals_totals_and_scrapes_read_only_new_events(
    state: Path,
) -> None:
    (state / "journal.sqlite").parent.mkdir(parents=True, exist_ok=True)
    journal = CountingJournal(Journal(state / "journal.sqlite"))
    exporter = PrometheusExporter()
    scraped: list[int] = []

    class Scraper:
        """Scrapes once in the middle of the run (what the journal has committed by then):
        at the 10th attempt's end, which every run reaches (its first layer has 10 tasks;
        a run has 25 to 35 attempts, as the faults fall, so the 25th was not always there)."""

        run_id = ""
        finished = 0

        def emit(self, event: Any) -> None:
            self.run_id = self.run_id or getattr(event, "run_id", "")
            self.finished += getattr(event, "type", "") == "attempt_finished"
            if self.finished == 10 and not scraped:
                exporter.text(journal, self.run_id)  # type: ignore[arg-type]
                scraped.append(journal.read)

    result = asyncio.run(
        phalanx.run(phalanx.Plan.from_dict(_plan()), sinks=[Scraper()], flush_interval=0.001)
    )
    rid = result.run_id
    assert result.snapshot.failed_attempts > 0 and result.status == "failed"
    try:
        n_events = rows(state, "SELECT count(*) n FROM events WHERE run_id=?", rid)[0]["n"]
        assert 0 < scraped[0] < n_events  # the scrape during the run saw part of it
        print(f"events: {scraped[0]} read mid-run, then {n_events - scraped[0]}", end=" ")
        first = exporter.text(journal, rid)  # type: ignore[arg-type]
        assert journal.read == n_events  # then only the rest: each event is read once
        _check_against_the_journal(state, rid, first)
        # the same text as a fold of the whole journal (the one writer)
        assert first == metrics_text(journal.journal, rid)

        again = exporter.text(journal, rid)  # type: ignore[arg-type]
        assert journal.read == n_events and again == first  # nothing new: nothing read

        resumed = asyncio.run(phalanx.resume(rid))  # a second session: more events
        more = rows(state, "SELECT count(*) n FROM events WHERE run_id=?", rid)[0]["n"] - n_events
        assert more > 0
        print(f"then {more} after a resume")
        second = exporter.text(journal, rid)  # type: ignore[arg-type]
        assert journal.read == n_events + more  # only the new ones
        assert exporter.feed(rid).events_read == n_events + more
        _check_against_the_journal(state, rid, second)
        assert total(parse(second), "phalanx_sessions") == 2
        assert second == metrics_text(journal.journal, rid)
        assert resumed.run_id == rid
    finally:
        journal.journal.close()


def test_one_writer_and_the_feeds_are_bounded(state: Path) -> None:
    rids = [phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(2))).run_id for _ in range(3)]
    exporter = PrometheusExporter(keep=2)
    journal = Journal(state / "journal.sqlite")
    try:
        for rid in rids:
            assert exporter.text(journal, rid) == metrics_text(journal, rid)
    finally:
        journal.close()
    assert list(exporter._feeds) == rids[1:]  # the least recently scraped went

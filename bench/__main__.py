"""``python -m bench [--smoke] [--only B1,B7] [--out DIR] [--repeats N] [--state-dir DIR]``.

The full run writes ``docs/benchmarks.md`` and ``docs/benchmarks.json``; ``--smoke`` runs
tiny sizes (seconds) and writes only where ``--out`` says. Exit code 1 when a benchmark
could not run (an error), 0 otherwise: a missed target is a figure, not a failure."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import BENCHMARKS
from .common import ROOT, STATE_ENV, Config, Row, log, machine, remove_states
from .report import write


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    wanted = {w.strip().lower() for w in only.split(",") if w.strip()}
    chosen = [m for m in BENCHMARKS if m.split("_", 1)[0] in wanted]
    unknown = wanted - {m.split("_", 1)[0] for m in chosen}
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s): {', '.join(sorted(unknown))}")
    return chosen


def run_suite(cfg: Config, modules: Sequence[str], out: Path | None) -> tuple[list[Row], list[str]]:
    """Run the benchmarks in order; returns their rows and the errors (one per module that
    raised). Writes the table and JSON to ``out`` when given."""
    t0 = time.perf_counter()
    log(f"bench: {'smoke' if cfg.smoke else 'full'} run of {', '.join(modules)}")
    cfg.machine = machine(cfg)
    m = cfg.machine
    log(
        f"machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"two-process capacity {m['parallel_capacity']:.2f}x"
    )
    rows: list[Row] = []
    errors: list[str] = []
    try:
        _run_each(cfg, modules, rows, errors)
    finally:
        remove_states()
    seconds = time.perf_counter() - t0
    if out is not None:
        md, js = write(out, rows, cfg.machine, seconds=seconds, smoke=cfg.smoke)
        log(f"wrote {md} and {js}")
    log(f"bench: done in {seconds / 60:.1f} minutes")
    return rows, errors


def _run_each(cfg: Config, modules: Sequence[str], rows: list[Row], errors: list[str]) -> None:
    for name in modules:
        bid = name.split("_", 1)[0].upper()
        log(f"{bid}: starting")
        try:
            module = importlib.import_module(f"bench.{name}")
            got = module.run(cfg)
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{bid}: {type(exc).__name__}: {exc}")
            rows.append(
                Row(
                    id=bid,
                    title=name,
                    figure="-",
                    baseline="-",
                    target="-",
                    verdict_text=f"error: {type(exc).__name__}",
                    note=str(exc),
                )
            )
            continue
        for r in got:
            log(
                f"{r.id}: {r.figure} vs {r.baseline}"
                + (f" = {r.ratio:.2f}x" if r.ratio is not None else "")
                + f" (target {r.target}): {r.verdict.strip('*')}"
            )
        rows.extend(got)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the phalanx benchmarks; the full run writes docs/benchmarks.md.",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; checks the code paths")
    ap.add_argument("--only", help="comma-separated ids, e.g. B1,B7")
    ap.add_argument("--out", type=Path, help="folder for benchmarks.md and benchmarks.json")
    ap.add_argument("--repeats", type=int, help="measurements per figure (default 3; smoke 1)")
    ap.add_argument("--no-profile", action="store_true", help="skip profiles of missed targets")
    ap.add_argument(
        "--state-dir",
        help="where runs keep journals and outputs (default: the system temp folder, on disk)",
    )
    args = ap.parse_args(argv)
    if args.state_dir:
        os.environ[STATE_ENV] = str(Path(args.state_dir).resolve())
    repeats = args.repeats or (1 if args.smoke else 3)
    cfg = Config(smoke=args.smoke, repeats=repeats, profile=not args.no_profile)
    out = args.out
    if out is None and not args.smoke and not args.only:
        out = ROOT / "docs"
    _, errors = run_suite(cfg, _selected(args.only), out)
    for e in errors:
        print(f"bench: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

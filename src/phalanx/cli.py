"""The ``phalanx`` command.

Exit codes: 0 all tasks succeeded · 1 some task failed or was skipped · 2 usage or plan error
· 130 interrupted (the run stays resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .api import RunResult, resume, run, state_dir
from .console import LineLog
from .exceptions import PhalanxError, UsageError, one_line
from .journal import Journal
from .plan import POLICIES
from .status import StatusTracker, render_text

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        message = one_line(message, 200)
        self.exit(EXIT_USAGE, f"phalanx: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="phalanx", description="Run many specialised LLM agents in parallel.")
    p.add_argument("--version", action="version", version=f"phalanx {__version__}")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the journal and outputs live (default: $PHALANX_STATE_DIR or ./.phalanx)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a plan file")
    r.add_argument("plan", metavar="PLAN", help="the plan file (YAML)")
    r.add_argument(
        "--agents",
        type=_positive_int,
        metavar="N",
        help="run on N agents in total (spread over the plan's agent specs)",
    )
    r.add_argument("--policy", choices=POLICIES, help="assignment policy")
    r.add_argument(
        "--provider", metavar="P", help="provider:model for every agent (e.g. sim, local:smollm2)"
    )
    r.add_argument(
        "--seed",
        type=_int,
        default=0,
        metavar="S",
        help="seed for simulation and retry jitter (default 0)",
    )
    r.add_argument("--run-id", metavar="ID", help="use this run id instead of a generated one")
    r.add_argument("--quiet", "-q", action="store_true", help="no per-task lines")
    r.add_argument("--no-tui", action="store_true", help="plain lines even on a terminal")
    r.add_argument("--web", action="store_true", help="also serve the live web dashboard")
    r.add_argument(
        "--sequential",
        action="store_true",
        help="the baseline: the same tasks on one agent, in dependency order",
    )

    rs = sub.add_parser("resume", help="continue an interrupted or crashed run")
    rs.add_argument("run_id", metavar="RUN_ID")
    rs.add_argument("--quiet", "-q", action="store_true", help="no per-task lines")
    rs.add_argument("--no-tui", action="store_true", help="plain lines even on a terminal")

    db = sub.add_parser("dashboard", help="the live web dashboard (127.0.0.1, token in URL)")
    db.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="a run (default: follow the latest)"
    )
    db.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    db.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    db.add_argument("--token", help="access token (required with a non-loopback --host)")

    rp = sub.add_parser("report", help="a run's report: metrics, plots, tasks (html, md, json)")
    rp.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)"
    )
    rp.add_argument("--format", choices=("html", "md", "json"), default="html")
    rp.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (default: .phalanx/runs/RUN_ID/report.<format>; '-' for stdout)",
    )
    rp.add_argument(
        "--baseline",
        metavar="RUN_ID",
        help="a --sequential run of the same plan: the speedup is measured against it",
    )

    pl = sub.add_parser("plan", help="turn a goal into a plan file (a planner model decomposes it)")
    pl.add_argument("goal", metavar="GOAL")
    pl.add_argument("--provider", metavar="P", help="the planner model (default local:smollm2)")
    pl.add_argument(
        "-o", "--output", metavar="FILE", help="write the plan here (default: print it)"
    )
    pl.add_argument("--seed", type=_int, default=0, metavar="S")

    mg = sub.add_parser("merge", help="merge the agent branches of an isolation: worktree run")
    mg.add_argument("run_id", metavar="RUN_ID")

    ls = sub.add_parser("runs", help="list runs in the journal")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    st = sub.add_parser("status", help="the three status levels of a run, from the journal")
    st.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--watch", action="store_true", help="follow the run until it ends")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    _add_template_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USAGE
    try:
        handler = {
            "plan": _cmd_plan,
            "report": _cmd_report,
            "dashboard": _cmd_dashboard,
            "merge": _cmd_merge,
            "run": _cmd_run,
            "resume": _cmd_resume,
            "runs": _cmd_runs,
            "status": _cmd_status,
            "init": _cmd_init,
            "roles": _cmd_roles,
        }[args.command]
        return handler(args)
    except UsageError as exc:
        print(f"phalanx: error: {one_line(str(exc), 300)}", file=sys.stderr)
        return EXIT_USAGE
    except PhalanxError as exc:
        print(f"phalanx: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _drive(coro: Coroutine[Any, Any, RunResult]) -> RunResult | None:
    """Run a run to its end. SIGINT/SIGTERM cancel it cleanly: the journal is flushed and the
    run stays resumable."""

    async def main() -> RunResult:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return None


def _finish(result: RunResult | None, run_id: str | None) -> int:
    if result is None:
        print(f"\ninterrupted: resume with 'phalanx resume {run_id or 'RUN_ID'}'", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    return result.exit_code


class _RunIdSpy:
    """Remembers the run id from the first event (for the interrupted message)."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def emit(self, event: Any) -> None:
        if self.run_id is None:
            self.run_id = getattr(event, "run_id", None)


def _progress_sinks(args: argparse.Namespace) -> list[Any]:
    """Live three-level view on a terminal, one line per task change otherwise."""
    if args.quiet:
        return []
    if not args.no_tui and sys.stdout.isatty():
        from .tui import LiveStatus

        return [LiveStatus()]
    return [LineLog()]


def _cmd_plan(args: argparse.Namespace) -> int:
    from .planner import DEFAULT_PLANNER, plan_text, write_plan

    provider = args.provider or DEFAULT_PLANNER
    if args.output:
        print(f"wrote {write_plan(args.goal, args.output, provider=provider, seed=args.seed)}")
    else:
        print(plan_text(args.goal, provider=provider, seed=args.seed), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import render_report

    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    rec = journal.get_run(args.run_id) if args.run_id else journal.latest_run()
    text = render_report(journal, rec.run_id, args.format, baseline=args.baseline)
    if args.output == "-":
        print(text)
        return 0
    ext = {"html": "html", "md": "md", "json": "json"}[args.format]
    path = (
        Path(args.output)
        if args.output
        else (state_dir(args.state_dir) / "runs" / rec.run_id / f"report.{ext}")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"report: {path}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .web import serve

    def ready(url: str) -> None:
        print(f"dashboard: {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                state_dir(args.state_dir),
                host=args.host,
                port=args.port,
                token=args.token,
                run_id=args.run_id,
                ready=ready,
            )
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if args.web:
        from .web import DashboardThread

        with DashboardThread(state_dir(args.state_dir), run_id=args.run_id) as url:
            print(f"dashboard: {url}", flush=True)
            return _run_plan(args)
    return _run_plan(args)


def _run_plan(args: argparse.Namespace) -> int:
    spy = _RunIdSpy()
    sinks: list[Any] = [spy, *_progress_sinks(args)]
    result = _drive(
        run(
            _sequential_plan(args) if args.sequential else args.plan,
            agents=args.agents,
            policy=args.policy,
            provider=args.provider,
            seed=args.seed,
            state=args.state_dir,
            run_id=args.run_id,
            sinks=sinks,
        )
    )
    code = _finish(result, spy.run_id)
    if args.sequential and result is not None:
        print(
            f"  sequential baseline: compare a parallel run of the plan with "
            f"'phalanx report RUN_ID --baseline {result.run_id}'"
        )
    return code


def _cmd_resume(args: argparse.Namespace) -> int:
    sinks = _progress_sinks(args)
    result = _drive(resume(args.run_id, state=args.state_dir, sinks=sinks))
    return _finish(result, args.run_id)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .api import merge_run

    report = merge_run(args.run_id, state=args.state_dir)
    print(report.render())
    return 0 if report.ok else 1


def _cmd_runs(args: argparse.Namespace) -> int:
    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    rows = journal.list_runs()
    if args.json:
        print(json.dumps(journal.run_summaries(), indent=2))
        return 0
    if not rows:
        print(f"no runs yet in {journal.path}")
        return 0
    print(
        f"{'RUN':<22} {'PLAN':<20} {'STATUS':<12} {'TASKS':>6} {'DONE':>6} {'FAILED':>6}  STARTED"
    )
    for r, counts in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        sim = " (sim)" if r.simulated else ""
        print(
            f"{r.run_id:<22} {r.plan_name[:20]:<20} {r.status:<12} {r.task_count:>6} "
            f"{counts.get('succeeded', 0):>6} {counts.get('failed', 0):>6}  {started}{sim}"
        )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    rec = journal.get_run(args.run_id) if args.run_id else journal.latest_run()
    tracker, seq = StatusTracker(), 0
    while True:
        for n, ev in journal.read_events(rec.run_id, after=seq):
            tracker.emit(ev)
            seq = n
        snap = tracker.snapshot(now=time.time())
        if args.json:
            print(json.dumps(_snapshot_json(snap), indent=2))
        else:
            if args.watch:
                print("\x1b[2J\x1b[H", end="")
            print(render_text(snap))
        if not args.watch or snap.finished is not None:
            return 0
        try:
            time.sleep(max(0.1, args.interval))
        except KeyboardInterrupt:
            return 0


def _snapshot_json(s: Any) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "plan": s.plan,
        "status": s.status,
        "simulated": s.simulated,
        "counts": s.counts,
        "total": s.total,
        "progress": s.progress,
        "eta_seconds": s.eta_seconds,
        "elapsed": s.elapsed,
        "usage": s.usage.to_dict(),
        "attempts": s.attempts,
        "failed_attempts": s.failed_attempts,
        "agents": [
            {
                "name": a.name,
                "role": a.role,
                "state": a.state,
                "task": a.task_id,
                "done": a.done,
                "assigned": a.assigned,
                "failures": a.failures,
            }
            for a in s.agents
        ],
        "alerts": s.alerts,
    }


# -- templates, roles and the sequential baseline ------------------------------------------
def _add_template_commands(sub: Any) -> None:
    from .templates import TEMPLATES

    names = "; ".join(f"{k}: {v}" for k, v in TEMPLATES.items())
    it = sub.add_parser("init", help="write an editable plan from a template")
    it.add_argument("--template", required=True, metavar="NAME", help=f"one of: {names}")
    it.add_argument("dir", metavar="DIR", nargs="?", default=".", help="where (default: .)")
    it.add_argument("--target", metavar="DIR", help="migration: the code (default: DIR)")
    it.add_argument(
        "--inputs", metavar="FILE_OR_DIR", help="swarm, research: lines of a file or files"
    )
    it.add_argument(
        "--agents",
        type=_positive_int,
        default=4,
        metavar="N",
        help="migrators and testers, researchers or swarm workers (default 4)",
    )
    it.add_argument(
        "--provider", default="local:smollm2", metavar="P", help="the plan's default model"
    )
    sub.add_parser("roles", help="the role registry: names usable in plans, with descriptions")


def _cmd_init(args: argparse.Namespace) -> int:
    from .plan import load_plan
    from .templates import init_template

    path = init_template(
        args.template,
        Path(args.dir),
        target=Path(args.target) if args.target else None,
        inputs=Path(args.inputs) if args.inputs else None,
        agents=args.agents,
        provider=args.provider,
    )
    plan = load_plan(str(path))
    print(
        f"wrote {path}: template {args.template} · {len(plan.tasks)} tasks · "
        f"{len(plan.agents)} agents · provider {plan.provider}"
    )
    print(f"  run it: phalanx run {path}   (simulated: add --provider sim)")
    return 0


def _cmd_roles(args: argparse.Namespace) -> int:
    from .agents import ROLES

    width = max(len(r) for r in ROLES) + 2
    print(f"{'ROLE':<{width}}{'CATEGORIES':<16}DESCRIPTION")
    for role in ROLES.values():
        cats = ",".join(sorted(role.categories)) or "any"
        print(f"{role.name:<{width}}{cats:<16}{role.description}")
    return 0


def _sequential_plan(args: argparse.Namespace) -> Any:
    """``run --sequential``: the plan on one agent, in dependency order."""
    from .plan import load_plan

    if args.agents is not None:
        raise UsageError("--sequential runs on one agent: drop --agents")
    return load_plan(args.plan).sequential()


if __name__ == "__main__":
    sys.exit(main())

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

from .. import __version__
from ..api import RunResult, resume, run, state_dir
from ..exceptions import PhalanxError, UsageError, one_line
from ..journal import Journal
from ..plan.model import POLICIES
from ..status.console import LineLog
from ..status.fold import StatusTracker, render_text

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
    _engine_args(r)

    rs = sub.add_parser("resume", help="continue an interrupted or crashed run")
    rs.add_argument("run_id", metavar="RUN_ID")
    rs.add_argument("--quiet", "-q", action="store_true", help="no per-task lines")
    rs.add_argument("--no-tui", action="store_true", help="plain lines even on a terminal")
    _engine_args(rs)

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
    _add_eval_commands(sub)
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
            "eval": _cmd_eval,
            "agents": _cmd_agents,
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
        from ..status.tui import LiveStatus

        return [LiveStatus()]
    return [LineLog()]


def _cmd_plan(args: argparse.Namespace) -> int:
    from ..plan.planner import DEFAULT_PLANNER, plan_text, write_plan

    provider = args.provider or DEFAULT_PLANNER
    if args.output:
        print(f"wrote {write_plan(args.goal, args.output, provider=provider, seed=args.seed)}")
    else:
        print(plan_text(args.goal, provider=provider, seed=args.seed), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..status.report import render_report

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
    from ..status.web import serve

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


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        help="where agents run: this process (local) or a Ray cluster (default: the plan's)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="the Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start Ray here)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    if args.web:
        from ..status.web import DashboardThread

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
            engine=args.engine,
            address=args.address,
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
    result = _drive(
        resume(
            args.run_id,
            state=args.state_dir,
            sinks=sinks,
            engine=args.engine,
            address=args.address,
        )
    )
    return _finish(result, args.run_id)


def _cmd_merge(args: argparse.Namespace) -> int:
    from ..api import merge_run

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
def _copy_example(name: str, dest: Path) -> int:
    """``phalanx init --example NAME DIR``: the examples ship inside the package."""
    import shutil
    from importlib.resources import as_file, files

    root = files("phalanx") / "examples"
    names = sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name[0] != "_")
    if name == "list" or name not in names:
        if name != "list":
            raise UsageError(f"no example named {name!r}: one of {', '.join(names)}")
        print("\n".join(names))
        return 0
    entry = root / name if (root / name).is_dir() else root / f"{name}.yaml"
    target = dest / entry.name
    if target.exists():
        raise UsageError(f"{target} exists: choose another DIR or remove it")
    dest.mkdir(parents=True, exist_ok=True)
    with as_file(entry) as src:
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, target)
    print(f"wrote {target}")
    return 0


def _add_template_commands(sub: Any) -> None:
    from ..plan.templates import TEMPLATES

    names = "; ".join(f"{k}: {v}" for k, v in TEMPLATES.items())
    it = sub.add_parser("init", help="write an editable plan from a template or an example")
    which = it.add_mutually_exclusive_group(required=True)
    which.add_argument("--template", metavar="NAME", help=f"one of: {names}")
    which.add_argument(
        "--example",
        metavar="NAME",
        help="copy an example shipped with phalanx into DIR (--example list names them)",
    )
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
    from ..plan.file import load_plan
    from ..plan.templates import init_template

    if args.example:
        return _copy_example(args.example, Path(args.dir))
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
    from ..agents.spec import ROLES

    width = max(len(r) for r in ROLES) + 2
    print(f"{'ROLE':<{width}}{'CATEGORIES':<16}DESCRIPTION")
    for role in ROLES.values():
        cats = ",".join(sorted(role.categories)) or "any"
        print(f"{role.name:<{width}}{cats:<16}{role.description}")
    return 0


def _sequential_plan(args: argparse.Namespace) -> Any:
    """``run --sequential``: the plan on one agent, in dependency order."""
    from ..plan.file import load_plan

    if args.agents is not None:
        raise UsageError("--sequential runs on one agent: drop --agents")
    return load_plan(args.plan).sequential()


# -- evals and the agent library -----------------------------------------------------------
def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _add_eval_commands(sub: Any) -> None:
    ev = sub.add_parser("eval", help="measure agent specs on a case file: pass rate, cost, latency")
    ev.add_argument("spec", metavar="SPEC", help="a saved agent (NAME[@VERSION]) or PLAN:ROLE")
    ev.add_argument("cases", metavar="CASES", help="the case file (YAML, see docs/eval.md)")
    ev.add_argument(
        "--vs",
        nargs="+",
        action="extend",
        default=[],
        metavar="SPEC",
        help="more specs to compare side by side (the winner on quality per dollar is named)",
    )
    ev.add_argument(
        "--repeat", type=_positive_int, default=1, metavar="N", help="run every case N times"
    )
    ev.add_argument("--provider", metavar="P", help="provider:model for every agent (not recorded)")
    ev.add_argument("--seed", type=_int, default=0, metavar="S", help="seed (default 0)")
    ev.add_argument("--run-id", metavar="ID", help="use this run id instead of a generated one")
    ev.add_argument(
        "--fail-under",
        type=_rate,
        metavar="RATE",
        help="exit 1 when a spec's pass rate is below RATE (0 to 1), e.g. in CI",
    )
    ev.add_argument(
        "--no-record", action="store_true", help="do not add the result to the library's history"
    )
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--quiet", "-q", action="store_true", help="no per-task lines")
    ev.add_argument("--no-tui", action="store_true", help="plain lines even on a terminal")

    ag = sub.add_parser("agents", help="the agent library: saved specs, versions, eval scores")
    act = ag.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    sv = act.add_parser("save", help="save an agent of a plan as the next version of NAME")
    sv.add_argument("name", metavar="NAME")
    sv.add_argument(
        "--from", dest="source", required=True, metavar="PLAN:ROLE", help="plan file and role"
    )
    sv.add_argument("--user", action="store_true", help="in the user folder, not the project's")
    ls = act.add_parser("list", help="saved agents, latest versions, last eval")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    sh = act.add_parser("show", help="a saved agent's spec and its eval scores")
    sh.add_argument("ref", metavar="NAME[@VERSION]")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.add_argument("--user", action="store_true", help="look in the user folder only")
    rm = act.add_parser("rm", help="remove a version (its number is never reused)")
    rm.add_argument("ref", metavar="NAME@VERSION")
    rm.add_argument("--all", action="store_true", help="remove every version of NAME")
    rm.add_argument("--user", action="store_true", help="in the user folder only")


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evals.runner import EvalReport, evaluate

    sinks = [] if args.json else _progress_sinks(args)
    coro = evaluate(
        [args.spec, *args.vs],
        args.cases,
        repeat=args.repeat,
        provider=args.provider,
        seed=args.seed,
        state=args.state_dir,
        run_id=args.run_id,
        sinks=sinks,
        record=not args.no_record,
    )

    async def main() -> EvalReport:
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        return await coro

    try:
        report = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: the eval was not scored; run it again", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render_text())
        print(f"report: {report.markdown_path} · json: {report.json_path}")
        print(f"  the run: phalanx report {report.run_id} · phalanx dashboard {report.run_id}")
        if report.recorded:
            print(f"  recorded in the library: {', '.join(report.recorded)}")
    floor = args.fail_under
    low = [v.label for v in report.variants if floor is not None and v.pass_rate < floor]
    if low:
        print(f"phalanx: below --fail-under {floor:g}: {', '.join(low)}", file=sys.stderr)
    return 1 if low or not report.complete else 0


def _cmd_agents(args: argparse.Namespace) -> int:
    from ..plan.library import Library

    lib = Library()
    scope: Any = "user" if getattr(args, "user", False) else None
    if args.action == "save":
        from ..plan.file import from_plan

        spec, styles, providers, prices = from_plan(args.source)
        saved, new = lib.save(
            args.name,
            spec,
            styles=styles,
            providers=providers,
            prices=prices,
            source=args.source,
            scope="user" if args.user else "project",
        )
        if new:
            print(f"saved {saved.ref} in {saved.path} (from {args.source})")
        else:
            print(f"unchanged: {args.source} is the same spec as {saved.ref} ({saved.path})")
        return 0
    if args.action == "list":
        return _agents_list(lib, args.json)
    if args.action == "show":
        return _agents_show(lib.get(args.ref, scope=scope), lib, args.json)
    found = lib.get(args.ref, scope=scope)
    removed = lib.remove(args.ref, every=args.all, scope=found.scope)
    shown = ", ".join(f"{found.name}@{v}" for v in removed)
    print(f"removed {shown} and its eval history ({found.scope}); the numbers are not reused")
    return 0


def _last_eval(rec: Any) -> str:
    if rec is None:
        return "no eval"
    when = time.strftime("%Y-%m-%d", time.localtime(rec.at))
    return (
        f"{100 * rec.pass_rate:.1f}% [{100 * rec.ci_low:.1f}–{100 * rec.ci_high:.1f}] "
        f"n={rec.n} {rec.cases} {when}"
    )


def _agents_list(lib: Any, as_json: bool) -> int:
    agents = lib.list_agents()
    if as_json:
        data = []
        for a in agents:
            last = a.last_eval()
            data.append(
                {
                    "name": a.name,
                    "latest": a.version,
                    "versions": lib.versions(a.name, a.scope),
                    "scope": a.scope,
                    "path": str(a.path),
                    "spec": a.document()["spec"],
                    "last_eval": None if last is None else last.to_dict(),
                }
            )
        print(json.dumps(data, indent=2))
        return 0
    if not agents:
        print(f"no saved agents in {lib.project} or {lib.user}")
        print("  save one: phalanx agents save NAME --from PLAN.yaml:ROLE")
        return 0
    head = ("NAME", "LATEST", "VERSIONS", "SCOPE", "ROLE", "STYLE", "PROVIDER", "LAST EVAL")
    rows = [head]
    for a in agents:
        versions = lib.versions(a.name, a.scope)
        rows.append(
            (
                a.name,
                f"@{a.version}",
                ",".join(map(str, versions)),
                a.scope,
                a.spec.role,
                a.spec.style,
                a.spec.provider or "(run's default)",
                _last_eval(a.last_eval()),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _agents_show(a: Any, lib: Any, as_json: bool) -> int:
    import yaml

    history = a.history()
    if as_json:
        doc = {**a.document(), "scope": a.scope, "path": str(a.path)}
        doc["evals"] = [h.to_dict() for h in history]
        print(json.dumps(doc, indent=2))
        return 0
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.saved_at))
    versions = ", ".join(map(str, lib.versions(a.name, a.scope)))
    origin = f" from {a.source}" if a.source else ""
    print(f"{a.ref} · {a.scope}: {a.path} · saved {when}{origin}")
    print(f"versions: {versions} (a saved version never changes)")
    doc = a.document()
    shown = {k: doc[k] for k in ("spec", "styles", "providers", "prices") if doc[k]}
    print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip())
    if not history:
        print(f"evals: none yet (run: phalanx eval {a.ref} CASES.yaml)")
        return 0
    print("evals:")
    head = ("DATE", "CASES", "PASS", "95% CI", "N", "STYLE OK", "COST", "P50", "P95", "RUN")
    rows = [head]
    for h in history:
        rows.append(
            (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(h.at)),
                h.cases,
                f"{100 * h.pass_rate:.1f}%",
                f"{100 * h.ci_low:.1f}–{100 * h.ci_high:.1f}%",
                str(h.n),
                "-" if h.style_validity is None else f"{100 * h.style_validity:.1f}%",
                "n/a" if h.cost_usd is None else f"${h.cost_usd:.4f}",
                "-" if h.p50_seconds is None else f"{h.p50_seconds:.2f}s",
                "-" if h.p95_seconds is None else f"{h.p95_seconds:.2f}s",
                h.run_id + (" (sim)" if h.simulated else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each ``phalanx`` command does (``main`` dispatches to these)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._util import packed
from ..api import RunResult, resume, run, state_dir
from ..exceptions import NothingToResume, UsageError
from ..journal import Journal
from ..status.console import LineLog
from ..status.liveness import live_snapshot, owner_alive, run_summaries
from ..status.snapshot import StatusTracker
from ..status.text import render_text

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
T = TypeVar("T")


def _drive(coro: Coroutine[Any, Any, T]) -> T | int:
    """Run ``coro`` to its end, or the exit code of the signal that stopped it: SIGINT (130)
    and SIGTERM (143) cancel it cleanly, so a run's journal is flushed and it stays resumable.
    """
    caught: list[int] = []

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def stop(sig: int) -> None:
            caught.append(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        return await coro

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_TERMINATED if signal.SIGTERM in caught else EXIT_INTERRUPTED


def _finish(result: RunResult | int, run_id: str | None, *, as_json: bool = False) -> int:
    """The summary on stderr, beside the progress (stdout is for results: ``--json``)."""
    if isinstance(result, int):
        lines = packed(["interrupted: resume with", f" 'phalanx resume {run_id or 'RUN_ID'}'"])
        print("\n" + "\n".join(lines), file=sys.stderr)
        return result
    with contextlib.suppress(OSError):  # a closed stderr never hides the result
        print(result.summary(), file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    return result.exit_code


class _RunIdSpy:
    """Remembers the run id from the first event (for the interrupted message)."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def emit(self, event: Any) -> None:
        if self.run_id is None:
            self.run_id = getattr(event, "run_id", None)


def _progress_sinks(args: argparse.Namespace) -> list[Any]:
    """Progress goes to stderr (stdout is for results): the live three-level view when stderr
    is a terminal, one line per task change otherwise."""
    if args.quiet:
        return []
    if getattr(args, "verbose", 0) and (getattr(args, "no_tui", True) or not sys.stderr.isatty()):
        return []  # -v: the phalanx logger prints these lines already (once, not twice)
    if not getattr(args, "no_tui", True) and sys.stderr.isatty():
        from rich.console import Console

        from ..status.tui import LiveStatus

        return [LiveStatus(console=Console(stderr=True))]
    return [LineLog(sys.stderr)]


def _cmd_plan(args: argparse.Namespace) -> int:
    from ..plan.planner import DEFAULT_PLANNER, plan_text, write_plan

    provider = args.provider or DEFAULT_PLANNER
    kind = provider.partition(":")[0]
    options = {kind: {"base_url": args.base_url}} if args.base_url else None
    if args.output:
        path = write_plan(
            args.goal, args.output, provider=provider, seed=args.seed, providers=options
        )
        print(f"wrote {path}")
    else:
        print(plan_text(args.goal, provider=provider, seed=args.seed, providers=options), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Markdown and JSON print to stdout unless ``-o FILE``; HTML is written to a file
    (``.phalanx/runs/RUN_ID/report.html`` unless ``-o``), since nobody reads it in a terminal.
    ``-o -`` prints any format."""
    from ..status.report import render_report

    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    rec = journal.get_run(args.run_id) if args.run_id else journal.latest_run()
    text = render_report(journal, rec.run_id, args.format, baseline=args.baseline)
    if args.output == "-" or (args.output is None and args.format != "html"):
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    path = (
        Path(args.output)
        if args.output
        else (state_dir(args.state_dir) / "runs" / rec.run_id / "report.html")
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


def _cmd_run(args: argparse.Namespace) -> int:
    if args.web:
        from ..status.web import DashboardThread

        with DashboardThread(state_dir(args.state_dir), run_id=args.run_id) as url:
            print(f"dashboard: {url}", file=sys.stderr, flush=True)
            return _run_plan(args)
    return _run_plan(args)


def _tracing(args: argparse.Namespace) -> Any:
    """The run's OpenTelemetry spans: ``--otel`` or the ``OTEL_*`` variables (one line on
    stderr says where they go, or what to install)."""
    from ..status.otel import otel_from_env

    setup = otel_from_env(getattr(args, "otel", False))
    if setup.note:
        print(f"otel: {setup.note}", file=sys.stderr)
    return setup


def _run_plan(args: argparse.Namespace) -> int:
    spy = _RunIdSpy()
    tracing = _tracing(args)
    sinks: list[Any] = [spy, *_progress_sinks(args), *([tracing.sink] if tracing.sink else [])]
    try:
        result = _run_with(args, sinks)
    finally:
        tracing.close()
    code = _finish(result, spy.run_id, as_json=args.json)
    if args.sequential and not isinstance(result, int):
        compare = f" phalanx report RUN_ID --baseline {result.run_id}"
        lines = packed(["  sequential baseline: compare a parallel run of the plan with:", compare])
        print("\n".join(lines), file=sys.stderr)
    return code


def _run_with(args: argparse.Namespace, sinks: list[Any]) -> RunResult | int:
    return _drive(
        run(
            _sequential_plan(args) if args.sequential else args.plan,
            agents=args.agents,
            policy=args.policy,
            provider=args.provider,
            base_url=args.base_url,
            seed=args.seed,
            state=args.state_dir,
            run_id=args.run_id,
            sinks=sinks,
            engine=args.engine,
            address=args.address,
        )
    )


def _cmd_resume(args: argparse.Namespace) -> int:
    tracing = _tracing(args)
    sinks: list[Any] = [*_progress_sinks(args), *([tracing.sink] if tracing.sink else [])]
    try:
        result = _drive(
            resume(
                args.run_id,
                state=args.state_dir,
                sinks=sinks,
                engine=args.engine,
                address=args.address,
            )
        )
    except NothingToResume as done:  # not an error: the run is as the user wants it
        print(str(done), file=sys.stderr)
        return 0
    finally:
        tracing.close()
    return _finish(result, args.run_id, as_json=args.json)


def _cmd_merge(args: argparse.Namespace) -> int:
    from ..api import merge_run

    report = merge_run(args.run_id, state=args.state_dir)
    print(report.render())
    return 0 if report.ok else 1


def _cmd_approve(args: argparse.Namespace) -> int:
    from ..runtime.approvals import record_decision

    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    try:
        rec, d = record_decision(
            journal, args.run_id, args.task_id, approve=not args.reject, reason=args.reason,
            by="cli",
        )  # fmt: skip
        _, owner = journal.run_state(rec.run_id)
    finally:
        journal.close()
    word = "approved" if d.decision == "approved" else "rejected"
    if owner is not None and owner_alive(owner):
        then = "the run picks it up within a second"
    else:
        then = f"no process drives the run: 'phalanx resume {rec.run_id}' acts on it"
    print(f"{args.task_id} {word} in run {rec.run_id}; {then}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    runs = run_summaries(journal)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no runs yet in {journal.path}")
        return 0
    # succeeded, failed and skipped apart: "done" would count failures as progress
    table = [("RUN", "PLAN", "STATUS", "TASKS", "SUCCEEDED", "FAILED", "SKIPPED", "STARTED")]
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        table.append(
            (
                r["run_id"],
                " ".join(r["plan"].split()),  # whole (one line): the column fits it
                r["status_text"],  # a stopped run's says how to resume it
                str(r["tasks"]),
                str(r["states"].get("succeeded", 0)),
                str(r["states"].get("failed", 0)),
                str(r["states"].get("skipped", 0)),
                started + (" (sim)" if r["simulated"] else ""),
            )
        )
    _print_columns(table, right={3, 4, 5, 6})
    return 0


def _print_columns(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> None:
    """Rows as aligned columns, each as wide as its widest cell (no cell is cut);
    columns in ``right`` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def _terminal_size(*, watch: bool) -> dict[str, int]:
    """The status view's bounds on a terminal: its width (no line wraps); with ``--watch``
    its height too (the redrawn view never scrolls: the swarm level stays). None when
    stdout is not a terminal: a pipe gets every line whole."""
    if not sys.stdout.isatty():
        return {}
    size = shutil.get_terminal_size()
    return {"width": size.columns, "height": size.lines} if watch else {"width": size.columns}


def _cmd_status(args: argparse.Namespace) -> int:
    journal = Journal(state_dir(args.state_dir) / "journal.sqlite")
    rec = journal.get_run(args.run_id) if args.run_id else journal.latest_run()
    tracker, seq = StatusTracker(), 0
    while True:
        for n, ev in journal.read_events(rec.run_id, after=seq):
            tracker.emit(ev)
            seq = n
        tracker.seed(rec)  # a run with no event yet: what its row says
        snap = live_snapshot(journal, tracker.snapshot(now=time.time()))
        if args.json:
            print(json.dumps(snap.to_dict(), indent=2))
        else:
            if args.watch:
                print("\x1b[2J\x1b[H", end="")
            print(render_text(snap, **_terminal_size(watch=args.watch)))
        if not args.watch or snap.finished is not None:
            return 0
        try:
            time.sleep(max(0.1, args.interval))
        except KeyboardInterrupt:
            return 0


# -- templates, roles and the sequential baseline ------------------------------------------
def _examples() -> dict[str, Any]:
    """The shipped examples by name: a folder, a ``NAME.yaml`` plan or a ``NAME.py`` script
    (the README beside them is their index)."""
    from importlib.resources import files

    root = files("phalanx") / "examples"
    found = {}
    for entry in root.iterdir():
        if entry.name[0] in "_." or entry.name == "README.md":
            continue
        if entry.is_dir() or entry.name.endswith((".yaml", ".py")):
            found[entry.name.removesuffix(".yaml").removesuffix(".py")] = entry
    return dict(sorted(found.items()))


def _example_summaries() -> dict[str, str]:
    """What each example shows: the index table of the examples' README.md."""
    from importlib.resources import files

    readme = files("phalanx") / "examples" / "README.md"
    found = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            found[cells[0].strip("`")] = cells[1]
    return found


def _copy_example(name: str, dest: Path) -> int:
    """``phalanx init --example NAME DIR``: the examples ship inside the package."""
    from importlib.resources import as_file

    examples = _examples()
    if name == "list":
        width, what = max(map(len, examples)), _example_summaries()
        for key in examples:
            print(f"{key:<{width}}  {what.get(key, '')}".rstrip())
        return 0
    if name not in examples:
        raise UsageError(f"no example named {name!r}: one of {', '.join(examples)}")
    entry = examples[name]
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
    grows = sum(t.foreach is not None for t in plan.tasks)
    more = f" ({grows} grow at run time)" if grows else ""
    print(
        f"wrote {path}: template {args.template} · {len(plan.tasks)} tasks{more} · "
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evals.runner import evaluate

    sinks = [] if args.json else _progress_sinks(args)
    coro = evaluate(
        [args.spec, *args.vs],
        args.cases,
        repeat=args.repeat,
        provider=args.provider,
        base_url=args.base_url,
        seed=args.seed,
        state=args.state_dir,
        run_id=args.run_id,
        sinks=sinks,
        record=not args.no_record,
    )

    report = _drive(coro)
    if isinstance(report, int):
        print("\ninterrupted: the eval was not scored; run it again", file=sys.stderr)
        return report
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


def _cmd_completion(args: argparse.Namespace) -> int:
    from .completion import completion_script
    from .parser import build_parser

    print(completion_script(build_parser(), args.shell), end="")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "completion": _cmd_completion,
    "plan": _cmd_plan,
    "report": _cmd_report,
    "dashboard": _cmd_dashboard,
    "merge": _cmd_merge,
    "approve": _cmd_approve,
    "run": _cmd_run,
    "resume": _cmd_resume,
    "runs": _cmd_runs,
    "status": _cmd_status,
    "init": _cmd_init,
    "roles": _cmd_roles,
    "eval": _cmd_eval,
    "agents": _cmd_agents,
}

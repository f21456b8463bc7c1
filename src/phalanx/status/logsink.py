"""The run's events as records of the ``phalanx`` logger: one line per task state change at
INFO (the same lines as ``LineLog``), every other event at DEBUG. Attached to a run only when
the logger is enabled for INFO, so an application that configured no logging pays nothing."""

from __future__ import annotations

import logging
from typing import ClassVar

from ..events import Event
from .console import LineLog

__all__ = ["LOGGER", "LogSink", "log_sinks"]

LOGGER = logging.getLogger("phalanx")


class LogSink(LineLog):
    """An EventSink that logs what ``LineLog`` prints, and the rest at DEBUG."""

    logger: ClassVar[logging.Logger] = LOGGER.getChild("run")

    def __init__(self) -> None:
        super().__init__()
        self._printed = False

    def emit(self, e: Event) -> None:
        self._printed = False
        super().emit(e)
        if not self._printed and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s %s", type(e).__name__, getattr(e, "task_id", "") or "")

    def _print(self, line: str) -> None:
        self._printed = True
        self.logger.info("%s", line)


def log_sinks() -> list[LogSink]:
    """``[LogSink()]`` when the ``phalanx`` logger would show INFO records, else ``[]``."""
    return [LogSink()] if LogSink.logger.isEnabledFor(logging.INFO) else []

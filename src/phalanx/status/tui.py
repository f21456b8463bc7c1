"""The live terminal view: the three status levels, redrawn at most 4 times a second.

A sink like any other: it folds events into its own :class:`StatusTracker` and a rich
``Live`` display redraws from the snapshot, laid out (:func:`~phalanx.status.text.layout`)
for the terminal's size: at 80x24 the swarm panel (progress, ETA, failures, alerts) still
shows whole; the agents' rows and idle agents' lines give way first. Used by ``phalanx
run`` when stdout is a TTY.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from ..events import Event, RunFinished
from .progress import GLYPHS
from .snapshot import STOPPED, Snapshot, StatusTracker
from .text import layout

__all__ = ["LiveStatus", "render_rich", "styled_bar"]

# an agent line's state word (level 1) to its colour
_STATE_STYLE = {
    "running": "green", "waiting": "yellow", "idle": "dim", "paused": "red", "failed": "red",
    "attempt": "yellow", "retired": "dim",
}  # fmt: skip
# a bar's glyphs: succeeded green, failed red, skipped grey, running cyan, waiting/pending dim
_GLYPH_STYLE = {
    GLYPHS["succeeded"]: "green", GLYPHS["failed"]: "bold red", GLYPHS["skipped"]: "dim",
    GLYPHS["running"]: "cyan", GLYPHS["pending"]: "dim",
}  # fmt: skip
_BAR = re.compile("\\[([" + re.escape("".join(set(GLYPHS.values()))) + "]+)\\]")
_HEADLINES = ("Tasks:", "Total progress:")
CHROME = 6  # the three panels' borders


def styled_bar(text: str) -> Text:
    """A bar's text (see :meth:`Progress.bar`) with each state in its colour."""
    out = Text("[")
    for ch in text:
        out.append(ch, style=_GLYPH_STYLE.get(ch, ""))
    out.append("]")
    return out


def _with_bars(line: str, style: str = "") -> Text:
    """A line whose bars (``[█✗-░]``) show each state in its colour."""
    out = Text(line, style=style)
    for m in _BAR.finditer(line):
        for i in range(m.start(1), m.end(1)):
            out.stylize(_GLYPH_STYLE.get(line[i], ""), i, i + 1)
    return out


def _lines(lines: list[Text]) -> Text:
    out = Text("\n").join(lines)
    out.no_wrap, out.overflow = True, "ellipsis"
    return out


def _agent_style(line: str) -> str:
    cells = line.split(" | ")
    word = cells[3].split()[0] if len(cells) > 3 and cells[3] else ""
    return _STATE_STYLE.get(word, "")


def _team_style(line: str) -> str:
    if line.startswith(" "):
        return "red" if " failed" in line else ""
    return "bold red" if " failed" in line else "bold"


def _swarm_texts(s: Snapshot, lines: list[str]) -> list[Text]:
    """Level 3's lines: the alerts yellow, the task and progress lines red over a failure
    (a line's continuation, indented, as its first line)."""
    out, style = [], ""
    for line in lines:
        if not line.startswith(" "):
            failing = s.tasks.failed and line.startswith(_HEADLINES)
            style = "yellow" if line.startswith("Alerts") else "red" if failing else ""
        out.append(_with_bars(line, style))
    return out


def render_rich(
    s: Snapshot, *, max_agents: int = 24, width: int | None = None, height: int | None = None
) -> Group:
    """The three levels as rich renderables, within ``width`` x ``height`` when given."""
    lay = layout(
        s,
        width=None if width is None else width - 4,  # a panel's borders and padding
        title_width=width,
        height=height,
        chrome=CHROME,
        max_agents=max_agents,
    )
    bad = s.tasks.failed or s.status in ("failed", STOPPED)
    title = _lines([Text(line, style="bold red" if bad else "bold") for line in lay.title])
    level1 = _lines([Text(line, style=_agent_style(line)) for line in lay.agents])
    teams = _lines([_with_bars(line, _team_style(line)) for line in lay.teams])
    swarm = _lines(_swarm_texts(s, lay.swarm))
    rows = len(lay.title) + sum(max(1, len(x)) for x in (lay.agents, lay.teams, lay.swarm))
    if height is not None and rows + CHROME > height:  # too small for all: the swarm alone
        return Group(title, Panel(swarm, title="Level 3 · swarm", title_align="left"))
    return Group(
        title,
        Panel(level1, title="Level 1 · agents", title_align="left"),
        Panel(teams, title="Level 2 · teams", title_align="left"),
        Panel(swarm, title="Level 3 · swarm", title_align="left"),
    )


class LiveStatus:
    """An EventSink that keeps a live rich view of the run on the terminal."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4.0) -> None:
        self.console = console or Console()
        self.tracker = StatusTracker()
        self.interval = 1.0 / refresh_per_second
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        self.tracker.emit(event)
        if self._live is None:
            self._start()
        if isinstance(event, RunFinished):
            self.stop()

    def _start(self) -> None:
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.start()
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while self._live is not None:
            self._draw()
            await asyncio.sleep(self.interval)

    def _draw(self) -> None:
        if self._live is not None:
            size = self.console.size  # read each time: the terminal may have been resized
            snap = self.tracker.snapshot(now=time.time())
            view = render_rich(snap, width=size.width, height=size.height)
            self._live.update(view, refresh=True)

    def stop(self) -> None:
        if self._live is None:
            return
        self._draw()
        self._live.stop()
        self._live = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def __del__(self) -> None:  # never leave the terminal in live mode
        with contextlib.suppress(Exception):
            self.stop()

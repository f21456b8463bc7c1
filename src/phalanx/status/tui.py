"""The live terminal view: the three status levels, redrawn at most 4 times a second.

A sink like any other: it folds events into its own :class:`StatusTracker` and a rich
``Live`` display redraws from the snapshot. Used by ``phalanx run`` when stdout is a TTY.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..events import Event, RunFinished
from .progress import GLYPHS, Progress
from .snapshot import Snapshot, StatusTracker
from .text import (
    agent_bar,
    agent_line,
    agent_progress,
    progress_counts,
    swarm_lines,
    team_progress,
    title_line,
)

__all__ = ["LiveStatus", "render_rich"]

_STATE_STYLE = {
    "running": "green", "waiting": "yellow", "idle": "dim", "paused": "red", "failed": "red",
    "retired": "dim",
}  # fmt: skip
# a bar's glyphs: succeeded green, failed red, skipped grey, running cyan, waiting/pending dim
_GLYPH_STYLE = {
    GLYPHS["succeeded"]: "green", GLYPHS["failed"]: "bold red", GLYPHS["skipped"]: "dim",
    GLYPHS["running"]: "cyan", GLYPHS["pending"]: "dim",
}  # fmt: skip


_HEADLINES = ("Tasks:", "Total progress:")


def styled_bar(text: str) -> Text:
    """A bar's text (see :meth:`Progress.bar`) with each state in its colour."""
    out = Text("[")
    for ch in text:
        out.append(ch, style=_GLYPH_STYLE.get(ch, ""))
    out.append("]")
    return out


def render_rich(s: Snapshot, *, max_agents: int = 24) -> Group:
    """The three levels as rich renderables."""
    title = "phalanx · " + title_line(s)
    level1 = Text()
    for a in s.agents[:max_agents]:
        level1.append(agent_line(a, s.now) + "\n", style=_STATE_STYLE.get(a.state, ""))
    if len(s.agents) > max_agents:
        level1.append(f"… and {len(s.agents) - max_agents} more agents\n", style="dim")
    teams = Table.grid(padding=(0, 1))
    shown = 0
    for role, agents in s.agents_by_role().items():
        p = team_progress(agents) + s.unheld.get(role, Progress())
        head = Text(f"{role.capitalize()} team", style="bold red" if p.failed else "bold")
        if p.troubled:  # its failures and skips first, its bar in the bar column
            teams.add_row(head, styled_bar(p.bar()), Text(p.headline(), style="red"))
        else:
            teams.add_row(head, "", "")
        for a in agents:
            if shown >= max_agents:
                break
            shown += 1
            counts = progress_counts(a.tasks, agent_progress(a))
            teams.add_row(
                f"  {a.name}: {a.task_title or a.state}",
                styled_bar(agent_bar(a)),
                Text(counts, style="red" if a.tasks.failed else ""),
            )
    swarm = Text("\n").join(
        Text(line, style="red" if s.tasks.failed and line.startswith(_HEADLINES) else "")
        for line in swarm_lines(s)
    )
    return Group(
        Panel(level1 or Text("no agents"), title=title, title_align="left"),
        Panel(teams, title="Teams", title_align="left"),
        Panel(swarm, title="Swarm", title_align="left"),
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
            self._live.update(render_rich(self.tracker.snapshot(now=time.time())), refresh=True)

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

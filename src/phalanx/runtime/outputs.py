"""A run's output files: ``<state>/runs/RUN_ID/outputs/TASK_ID.<ext>``, one per succeeded task.

The journal holds every answer (its ``results`` table); the files are a copy for people and
tools. Creating a file costs a filesystem far more than the run spends on a task (100-250
µs of system time per file measured on an ext4 disk, against ~100 µs for all of a
zero-latency task's own work), so they are not written on the event loop: the run's
:class:`OutputWriter` takes each success as it is emitted and a thread of its own writes
the files while the run goes on (system calls release the GIL: on a machine with a second
core the files cost the run's wall time almost nothing). When the run ends the writer is
drained and joined, and :func:`write_outputs` writes whatever it did not (answers of
earlier sessions of a resumed run, a file whose write failed, ``tts`` audio), so every
documented path exists when ``phalanx.run`` returns, as before.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from ..agents.spec import AgentSpec
from ..agents.speech import TTS_UNAVAILABLE_NOTE, render_tts
from ..agents.styles import Styles, extension
from ..events import Event, TaskSucceeded
from ..exceptions import PhalanxError
from ..plan.model import Plan, Task, style_of
from .records import TaskRecord

__all__ = ["OutputWriter", "answer_style", "output_name", "write_outputs"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def answer_style(task: Task, agent: AgentSpec | None) -> str:
    """The style ``task`` was answered in (a foreach template, answered by no agent: its own)."""
    return style_of(task, agent) if agent is not None else task.style or "text"


def output_name(task: Task, style: str, styles: Styles) -> str:
    """``TASK_ID.<ext>``: the extension of the style the task was answered in."""
    return f"{task.id}{extension(style, styles)}"


class OutputWriter:
    """An event sink writing each succeeded task's file from a thread of its own (see the
    module's text). A success's file waits until the journal batch its event went into
    (``batch()`` when it is emitted: the journal numbers its batches 1, 2, ..) is committed,
    which :meth:`committed` says: a file never shows a success a crash could still take
    back. ``task_of`` and ``agents`` are looked up when a success comes, so tasks a run
    grows and agents it scales are known. ``close`` drains and joins the thread;
    :attr:`written` then holds the names it wrote."""

    def __init__(
        self,
        folder: Path,
        batch: Callable[[], int],
        task_of: Callable[[str], Task | None],
        agents: Callable[[], Mapping[str, AgentSpec]],
        styles: Styles,
    ) -> None:
        self.folder, self._batch, self._task_of = folder, batch, task_of
        self._agents, self._styles = agents, styles
        self._known: Mapping[str, AgentSpec] = {}
        self._pending: deque[tuple[int, str, str]] = deque()  # (batch, name, text), in order
        self._queue: queue.SimpleQueue[list[tuple[str, str]] | None] = queue.SimpleQueue()
        self.written: set[str] = set()
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._write_all, name="phalanx-outputs", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        if type(event) is not TaskSucceeded:
            return
        task = self._task_of(event.task_id)
        if task is None:
            return
        agent = self._known.get(event.agent)
        if agent is None and event.agent:
            self._known = self._agents()  # an agent the run added since
            agent = self._known.get(event.agent)
        style = answer_style(task, agent)
        if style != "tts":  # audio is made at the end (a slow external program)
            name = output_name(task, style, self._styles)
            self._pending.append((self._batch(), name, event.output))

    def committed(self, batches: int) -> None:
        """The journal has committed its batches up to number ``batches``: the files of the
        successes in them may be written."""
        pending = self._pending
        if not pending or pending[0][0] > batches:
            return
        ready = []
        while pending and pending[0][0] <= batches:
            _, name, text = pending.popleft()
            ready.append((name, text))
        self._queue.put(ready)

    def close(self, batches: int) -> None:
        """Write the files of the successes in the committed batches (up to ``batches``),
        then stop the thread (idempotent). Call it after the journal's last commit."""
        self.committed(batches)
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _write_all(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            self.error = exc
            return  # the end of the run writes them all, and reports the error
        try:
            while (batch := self._queue.get()) is not None:
                for name, text in batch:
                    self._write(folder, name, text)
        finally:
            os.close(folder)

    def _write(self, folder: int, name: str, text: str) -> None:
        try:
            fd = os.open(name, _FLAGS, 0o644, dir_fd=folder)
            try:
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as exc:  # left for the end of the run, which reports it
            self.error = self.error or exc
            return
        self.written.add(name)


def write_outputs(
    outputs: Path,
    plan: Plan,
    records: Mapping[str, TaskRecord],
    written: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Each succeeded task's answer as ``TASK_ID.<ext>`` (but the ``written`` ones, already
    there); ``tts`` answers also as ``TASK_ID.wav`` when espeak-ng is installed. Returns
    notes for the summary."""
    agents = {a.name or "": a for a in plan.agents}
    known = Styles(plan.own_styles())
    outputs.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    for t in plan.tasks:
        rec = records[t.id]
        if rec.state != "succeeded":
            continue
        style = answer_style(t, agents.get(rec.agent or ""))
        name = output_name(t, style, known)
        if name in written:
            continue
        if style == "tts" and not (outputs / f"{t.id}.wav").exists():
            notes += _speak(rec.output, outputs / f"{t.id}.wav", notes)
        (outputs / name).write_text(rec.output, encoding="utf-8")
    return notes


def _speak(text: str, wav: Path, notes: list[str]) -> list[str]:
    try:
        if render_tts(text, wav) is None and TTS_UNAVAILABLE_NOTE not in notes:
            return [TTS_UNAVAILABLE_NOTE]
    except PhalanxError as exc:
        return [f"tts audio for {wav.stem}: {exc}"]
    return []

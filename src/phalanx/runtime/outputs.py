"""A run's output files: ``<state>/runs/RUN_ID/outputs/TASK_ID.<ext>``, one per succeeded task.

The journal holds every answer (its ``results`` table); the files are a copy for people and
tools, written in one batch when the run ends, after the journal's last commit (a file
never shows a success the journal could still lose), and before ``phalanx.run`` returns.
Each file is three system calls (open relative to the folder, write, close): creating files
is what costs (about 25 µs each on an ext4 disk, 200-600 µs on one that has just deleted
thousands; docs/benchmarks.md), so nothing else is done per file. Writing them from a
thread while the run goes on was measured and dropped: with the event loop busy, the thread
and the loop hand the GIL back and forth, and the run got slower, not faster.

A run killed after its end was committed and before its files were all written gets them
from ``phalanx resume`` (which writes a finished run's files again from the journal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..agents.spec import AgentSpec
from ..agents.speech import TTS_UNAVAILABLE_NOTE, render_tts
from ..agents.styles import Styles, extension
from ..exceptions import PhalanxError
from ..plan.model import Plan, Task, style_of
from .records import TaskRecord

__all__ = ["answer_style", "write_outputs"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def answer_style(task: Task, agent: AgentSpec | None) -> str:
    """The style ``task`` was answered in (a foreach template, answered by no agent: its own)."""
    return style_of(task, agent) if agent is not None else task.style or "text"


def write_outputs(outputs: Path, plan: Plan, records: Mapping[str, TaskRecord]) -> list[str]:
    """Each succeeded task's answer as ``TASK_ID.<ext>`` (the extension of its style);
    ``tts`` answers also as ``TASK_ID.wav`` when espeak-ng is installed. Returns notes for
    the summary; an ``OSError`` (a full disk) is raised."""
    agents = {a.name or "": a for a in plan.agents}
    known = Styles(plan.own_styles())
    outputs.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    folder = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for t in plan.tasks:
            rec = records[t.id]
            if rec.state != "succeeded":
                continue
            style = answer_style(t, agents.get(rec.agent or ""))
            if style == "tts" and not (outputs / f"{t.id}.wav").exists():
                notes += _speak(rec.output, outputs / f"{t.id}.wav", notes)
            _write(folder, f"{t.id}{extension(style, known)}", rec.output)
    finally:
        os.close(folder)
    return notes


def _write(folder: int, name: str, text: str) -> None:
    fd = os.open(name, _FLAGS, 0o644, dir_fd=folder)
    try:
        data = text.encode("utf-8")
        while data:  # a regular file takes it in one write; a short one goes on
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def _speak(text: str, wav: Path, notes: list[str]) -> list[str]:
    try:
        if render_tts(text, wav) is None and TTS_UNAVAILABLE_NOTE not in notes:
            return [TTS_UNAVAILABLE_NOTE]
    except PhalanxError as exc:
        return [f"tts audio for {wav.stem}: {exc}"]
    return []

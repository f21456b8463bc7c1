"""A run's output files: ``<state>/runs/RUN_ID/outputs/TASK_ID.<ext>``, one per succeeded task.

The journal holds every answer (its ``results`` table); the files are a copy for people and
tools. A file is written only after the commit that holds its task's success (a file never
shows a success the journal could still lose), and every file is written before
``phalanx.run`` returns. Each file is three system calls (open relative to the folder,
write, close): creating files is what costs (10 µs each on a tmpfs, 20-180 µs on this
machine's ext4 disk; docs/benchmarks.md), so nothing else is done per file.

A small run writes its files in one batch when it ends. A large one (:data:`STREAM_AT`
files or more) hands them, as their successes are committed, to a helper process
(:class:`OutputStream`): the files are created on another core while the run goes on, and
the run waits for the last of them at its end. A thread was measured and dropped for this:
with the event loop busy, the thread and the loop hand the GIL back and forth, and the run
got slower, not faster; a process shares no GIL.

A run killed after its end was committed and before its files were all written gets them
from ``phalanx resume`` (which writes a finished run's files again from the journal).
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..agents.spec import AgentSpec
from ..agents.speech import TTS_UNAVAILABLE_NOTE, render_tts
from ..agents.styles import Styles, extension
from ..exceptions import PhalanxError
from ..plan.model import Plan, Task, style_of
from .records import TaskRecord

__all__ = ["OutputStream", "answer_style", "output_name", "write_outputs"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def answer_style(task: Task, agent: AgentSpec | None) -> str:
    """The style ``task`` was answered in (a foreach template, answered by no agent: its own)."""
    return style_of(task, agent) if agent is not None else task.style or "text"


def output_name(task: Task, agent: AgentSpec | None, styles: Mapping[str, Any]) -> str:
    """A task's output file name: ``TASK_ID.<ext>``, the extension of the style it was
    answered in."""
    return f"{task.id}{extension(answer_style(task, agent), styles)}"


def write_outputs(
    outputs: Path,
    plan: Plan,
    records: Mapping[str, TaskRecord],
    written: Collection[str] = (),
    agents: Mapping[str, AgentSpec] | None = None,
) -> list[str]:
    """Each succeeded task's answer as ``TASK_ID.<ext>`` (the extension of its style);
    ``tts`` answers also as ``TASK_ID.wav`` when espeak-ng is installed; the tasks in
    ``written`` (their files written already, by an :class:`OutputStream`) are left as they
    are. ``agents``: the run's agents by name, besides the plan's (those the autoscaler
    cloned answer in their own style too). Returns notes for the summary; an ``OSError``
    (a full disk) is raised."""
    agents = {**{a.name or "": a for a in plan.agents}, **(agents or {})}
    known = Styles(plan.own_styles())
    outputs.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    folder = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for t in plan.tasks:
            rec = records[t.id]
            if rec.state != "succeeded" or t.id in written:
                continue
            agent = agents.get(rec.agent or "")
            if answer_style(t, agent) == "tts" and not (outputs / f"{t.id}.wav").exists():
                notes += _speak(rec.output, outputs / f"{t.id}.wav", notes)
            _write(folder, output_name(t, agent, known), rec.output)
    finally:
        os.close(folder)
    return notes


def _write(folder: int, name: str, text: str | bytes) -> None:
    fd = os.open(name, _FLAGS, 0o644, dir_fd=folder)
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
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


STREAM_AT = 1000  # files: a run with fewer writes them at its end, in its own process

# The helper process: reads frames (a 4-byte length, then a marshalled list of (name,
# text)) from stdin, writes each file relative to the folder, and at the end of its input
# answers (files written, [(name, errno, message)] of those that failed) on stdout. It
# imports nothing beyond the interpreter's core (started with -I -S: no site, no
# environment), so it starts in a few milliseconds. It ignores SIGINT and SIGTERM (a
# terminal's Ctrl-C reaches the whole process group): it ends when its input does.
_HELPER = r"""
import marshal, os, signal, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the group: the run ends it
signal.signal(signal.SIGTERM, signal.SIG_IGN)
folder = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
read = sys.stdin.buffer.read
written, errors = 0, []
while True:
    head = read(4)
    if len(head) < 4:
        break
    for name, data in marshal.loads(read(struct.unpack("<I", head)[0])):
        try:
            fd = os.open(name, flags, 0o644, dir_fd=folder)
            try:
                view = memoryview(data.encode("utf-8"))
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            written += 1
        except OSError as exc:
            errors.append((name, exc.errno or 0, exc.strerror or str(exc)))
sys.stdout.buffer.write(marshal.dumps((written, errors)))
"""


class OutputStream:
    """A large run's output files, written as the run goes by a helper process.

    The journal calls :meth:`committed` with the results of each batch it has just
    committed; their files are handed to the helper (through a pipe the run never waits on:
    what the pipe does not take now waits in memory for the next call). A run of fewer than
    :data:`STREAM_AT` tasks keeps its files in memory until then (a small run never starts
    one);
    :meth:`finish`, at the run's end, writes what is left, waits for the helper, and
    returns the tasks whose files are written. If the helper cannot be started or dies,
    every file it was given is written again in this process; a file that cannot be written
    (a full disk) is raised as ``OSError``, as :func:`write_outputs` does."""

    def __init__(
        self,
        run_id: str,
        folder: Path,
        name_of: Callable[[str, str], str | None],
        tasks: Callable[[], int] = lambda: 0,
    ) -> None:
        """``name_of(task_id, agent)``: the task's file name, or ``None`` to leave it to
        :func:`write_outputs` (a tts answer, whose audio is made at the end). ``tasks()``:
        how many tasks the run has now (its plan as it grew): with :data:`STREAM_AT` or
        more, the helper starts at the first results, to work beside the whole run."""
        self.run_id, self.folder, self.name_of, self.tasks = run_id, folder, name_of, tasks
        self._files: list[tuple[str, str, str]] = []  # (task, name, text) handed or held
        self._sent = 0  # how many of _files went to the helper (the rest wait for it)
        self._backlog = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed = False  # the helper could not start or died: write here at the end
        self._lock = threading.Lock()  # the journal's writer thread may call committed

    def committed(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """A batch's result rows (run, task, attempt, agent, output, ...), just committed."""
        new = []
        for row in rows:
            name = self.name_of(row[1], row[3]) if row[0] == self.run_id else None
            if name is not None:  # the answer itself (the run's record holds it too)
                new.append((row[1], name, row[4]))
        if not new:
            return
        with self._lock:
            self._files += new
            if self._failed or (
                self._proc is None and len(self._files) < STREAM_AT and self.tasks() < STREAM_AT
            ):
                return
            if self._proc is None:
                self._start()
            self._send(self._files[self._sent :])

    def finish(self) -> set[str]:
        """Every file given so far written (here, or by the helper, waited for); the tasks
        whose files are written."""
        with self._lock:
            if self._proc is not None:
                if not self._failed:
                    self._failed = not self._close()
                self._reap()
            done = self._files[0 if self._failed else self._sent :]
            if done:
                self.folder.mkdir(parents=True, exist_ok=True)
                folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    for _, name, data in done:
                        _write(folder, name, data)
                finally:
                    os.close(folder)
            written = {task for task, _, _ in self._files}
            self._files, self._sent = [], 0
            return written

    def _start(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER, str(self.folder.resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            self._failed = True
            return
        assert self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        with contextlib.suppress(OSError, AttributeError):  # a larger pipe: fewer wake-ups
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(fd, False)

    def _send(self, files: Sequence[tuple[str, str, str]]) -> None:
        if self._failed or self._proc is None or self._proc.stdin is None:
            return
        self._sent += len(files)
        frame = marshal.dumps([(name, data) for _, name, data in files])
        self._backlog += struct.pack("<I", len(frame))
        self._backlog += frame
        fd = self._proc.stdin.fileno()
        try:
            while self._backlog:
                n = os.write(fd, self._backlog)
                del self._backlog[:n]
        except BlockingIOError:
            pass  # the pipe is full: the rest goes with the next batch or at the end
        except OSError:  # the helper is gone
            self._failed = True

    def _reap(self) -> None:
        """The helper's pipes closed and its end waited for (killed if it is still there:
        only a helper that failed is)."""
        proc = self._proc
        assert proc is not None
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if proc.returncode is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()

    def _close(self) -> bool:
        """Hand over the backlog, end the helper's input, wait for its answer: whether it
        wrote every file. A file it could not write is raised."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            os.set_blocking(proc.stdin.fileno(), True)
            if self._backlog:
                proc.stdin.write(self._backlog)
            self._backlog = bytearray()
            out, _ = proc.communicate()
            written, errors = marshal.loads(out)
        except (OSError, ValueError, EOFError, TypeError):
            with contextlib.suppress(OSError):
                proc.kill()
                proc.wait()
            return False
        if errors:
            name, errno, message = errors[0]
            raise OSError(errno, f"{message} (and {len(errors) - 1} more)" if len(errors) > 1
                          else message, str(self.folder / name))  # fmt: skip
        return bool(proc.returncode == 0 and written == self._sent)

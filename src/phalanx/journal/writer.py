"""The journal's writer process (see ``phalanx.journal._ProcessWriter``): it commits the
batches of statements its parent hands it, in order, on a connection of its own, on
another core.

Run as ``python -I -S writer.py JOURNAL PARENT_PID COMMITS KILL_AFTER``: it imports
nothing beyond the interpreter's core (no phalanx, no site), so it starts in milliseconds.

Frames both ways are a 4-byte little-endian length and a ``marshal`` payload.
In (stdin): ``("B", [(sql, rows), ...])`` a batch (one event group or more, whole);
``("S", token)`` answer ``("A", token)`` once every batch before it is committed;
``("C",)`` the parent is done: commit what is left and exit.
Out (stdout): ``("R",)`` first, once its connection is open; then, in the order the batches
came: ``("K", n)`` the next n batches are committed;
``("E", class, message)`` the next batch failed (rolled back whole; the batches committed
with it are then committed each on its own); ``("A", token)``.

It ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group: the run stops
cleanly through it), dies with its parent (``PR_SET_PDEATHSIG``), and its input ending
without ``("C",)`` (the parent killed) makes it exit before its next transaction: nothing
is committed on behalf of a dead process once another could take the run over.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import queue
import signal
import sqlite3
import struct
import sys
import threading
from typing import Any

MAX_QUEUED = 8  # messages read and not yet taken: beyond, the parent's writes wait
CHECKPOINT_ROWS = 4096  # as the journal's writer thread (journal._Writer)
FORCE_CHECKPOINT_ROWS = 65536


def _die_with(parent: int) -> None:
    # A terminal's Ctrl-C (or a SIGTERM to the process group) reaches this process too: the
    # run stops cleanly, flushing through this process, which ends when the run ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the end of the input still says it
        pass
    if os.getppid() != parent:  # the parent died before that took hold
        os._exit(0)


def _reader(q: queue.Queue[Any]) -> None:
    read = sys.stdin.buffer.read
    while True:
        head = read(4)
        if len(head) < 4:
            q.put(None)  # the input ended: the parent is gone unless it said ("C",)
            return
        q.put(marshal.loads(read(struct.unpack("<I", head)[0])))


def _answer(msg: tuple[Any, ...]) -> None:
    data = marshal.dumps(msg)
    sys.stdout.buffer.write(struct.pack("<I", len(data)) + data)
    sys.stdout.buffer.flush()


class _Committer:
    def __init__(self, path: str, parent: int, commits: int, kill_after: int) -> None:
        self.parent, self.commits, self.kill_after = parent, commits, kill_after
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        # (the journal is in WAL mode already: its parent made it so)
        for pragma in ("synchronous=NORMAL", "busy_timeout=30000", "wal_autocheckpoint=0"):
            self.db.execute(f"PRAGMA {pragma}")
        self.unchecked = 0  # event rows committed since the last checkpoint

    def commit(self, batches: list[list[tuple[str, list[Any]]]]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statements in batches:
                for sql, rows in statements:
                    db.executemany(sql, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits += 1
        if self.commits == self.kill_after:  # the crash tests' fault injection
            os.kill(self.parent, signal.SIGKILL)
            os._exit(0)
        self.unchecked += sum(len(b[0][1]) for b in batches if b)  # the events' rows

    def write(self, batches: list[list[tuple[str, list[Any]]]]) -> None:
        """Commit ``batches`` in one transaction; if that fails, each on its own. Each
        batch is answered, in order: ``("K", n)`` n committed, ``("E", ...)`` one failed."""
        try:
            self.commit(batches)
            _answer(("K", len(batches)))
            return
        except Exception as exc:  # any error fails its batch, never the process
            if len(batches) == 1:  # (a value SQLite cannot bind: an unpaired surrogate...)
                _answer(("E", type(exc).__name__, str(exc)))
                return
        for batch in batches:
            self.write([batch])

    def checkpoint(self, idle: bool) -> None:
        if self.unchecked >= (CHECKPOINT_ROWS if idle else FORCE_CHECKPOINT_ROWS):
            self.unchecked = 0
            with contextlib.suppress(sqlite3.Error):  # a busy file: the next one catches up
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")


_NONE = object()  # no message set aside (None is the end of the input)


def main() -> None:
    path, parent, commits, kill_after = sys.argv[1], *map(int, sys.argv[2:5])
    _die_with(parent)
    committer = _Committer(path, parent, commits, kill_after)
    q: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
    threading.Thread(target=_reader, args=(q,), daemon=True).start()
    _answer(("R",))  # ready: until now the parent commits in its own thread
    pending: Any = _NONE
    while True:
        msg = pending if pending is not _NONE else q.get()
        pending = _NONE
        if msg is None:  # the input ended without a goodbye (the parent died): stop here
            os._exit(0)
        if msg[0] == "B":
            batches = [msg[1]]
            while True:  # batches waiting are committed together
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or nxt[0] != "B":
                    pending = nxt  # the end of the input too: seen after this commit
                    break
                batches.append(nxt[1])
            committer.write(batches)
            committer.checkpoint(idle=pending is _NONE and q.empty())
        elif msg[0] == "S":
            _answer(("A", msg[1]))
        elif msg[0] == "C":
            if committer.unchecked:  # the last checkpoint, whatever the count
                committer.unchecked = CHECKPOINT_ROWS
            committer.checkpoint(idle=True)
            committer.db.close()
            return


if __name__ == "__main__":
    main()

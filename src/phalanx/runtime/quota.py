"""One key's rate window shared by every run on this machine: a small SQLite table.

``<state>/quota.sqlite`` holds, per quota (a hash of provider kind, address and API key,
never the key itself, plus the ``provider:model`` key), the times and token counts of the
requests granted in the last window (their count and tokens kept beside them by
triggers, so a permit never counts rows), the limits learned from the provider's headers, a
pause (a 429's Retry-After) and what the server last said remained. Two runs on one key
read and write the same rows, so together they stay under the key's limit.

Cost: one short ``BEGIN IMMEDIATE`` transaction per permit of a limited key. Settling a
permit's tokens, giving one back and what a response's headers taught are queued in memory
and written by the next permit's transaction (and at :meth:`QuotaStore.close`), so a
request costs one transaction, not three. A key that nothing limits (no limit of the plan,
none learned by any run, no pause, nothing the server said remained: a local server that
sends no rate-limit headers) takes its permit with one read of its row, no write: its
grants are queued too (:meth:`QuotaStore.defer`) and written together, at most
:data:`DEFER_SECONDS` (or :data:`DEFER_MAX` grants) after the first of them, by a timer, the
next transaction or :meth:`QuotaStore.close`; a run with a limit on the same quota counts
them from then on. WAL, ``synchronous=NORMAL``: a crash may lose the last permits, which
only makes the next run's window look emptier for at most one window.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..exceptions import QuotaStoreError

__all__ = ["DEFER_MAX", "DEFER_SECONDS", "Grant", "QuotaStore", "QuotaStoreError"]

log = logging.getLogger(__name__)

DEFER_SECONDS = 0.2  # an unlimited key's grants reach the file at most this late
DEFER_MAX = 128  # or once this many wait
_INSERT = "INSERT INTO grants (key, t, tokens) VALUES (?, ?, ?)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (key TEXT NOT NULL, t REAL NOT NULL, tokens REAL NOT NULL);
CREATE INDEX IF NOT EXISTS grants_key_t ON grants (key, t);
CREATE TABLE IF NOT EXISTS windows (
    key TEXT PRIMARY KEY,
    rpm INTEGER, tpm INTEGER,            -- learned from the provider's headers
    paused_until REAL NOT NULL DEFAULT 0,
    seen REAL NOT NULL DEFAULT 0,        -- when the last headers were read (wall clock)
    req_left INTEGER, req_until REAL NOT NULL DEFAULT 0,
    tok_left INTEGER, tok_until REAL NOT NULL DEFAULT 0,
    n INTEGER NOT NULL DEFAULT 0,        -- the key's grants and their tokens (triggers)
    token_sum REAL NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS grants_insert AFTER INSERT ON grants BEGIN
    UPDATE windows SET n = n + 1, token_sum = token_sum + NEW.tokens WHERE key = NEW.key;
END;
CREATE TRIGGER IF NOT EXISTS grants_delete AFTER DELETE ON grants BEGIN
    UPDATE windows SET n = n - 1, token_sum = token_sum - OLD.tokens WHERE key = OLD.key;
END;
CREATE TRIGGER IF NOT EXISTS grants_settle AFTER UPDATE OF tokens ON grants BEGIN
    UPDATE windows SET token_sum = token_sum - OLD.tokens + NEW.tokens WHERE key = NEW.key;
END;
"""


class Grant:
    """A permit whose row is not written yet (:meth:`QuotaStore.defer`): its tokens are
    settled in place until it is; ``rowid`` once it is."""

    __slots__ = ("gone", "key", "rowid", "t", "tokens")

    def __init__(self, key: str, t: float, tokens: float) -> None:
        self.key, self.t, self.tokens = key, t, tokens
        self.rowid: int | None = None
        self.gone = False  # given back before it was written: never written


class QuotaStore:
    """The quota file of one state directory, opened by one process."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._deferred: list[Grant] = []
        self._urgent = False  # a queued write that the next permit must see (a pause)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)  # idempotent, each statement atomic
        except (OSError, sqlite3.Error) as exc:
            raise QuotaStoreError(f"{path}: {exc}") from exc
        self.db: sqlite3.Connection | None = db
        self.transactions = 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, the queued writes first."""
        db = self.db
        if db is None:
            raise QuotaStoreError(f"{self.path}: closed")
        written: list[Grant] = []
        try:
            with _immediate(db):
                written = self._flush(db)
                yield db
        except BaseException as exc:
            for grant in written:  # rolled back: lost, as a crash would lose them
                grant.rowid, grant.gone = None, True
            if isinstance(exc, sqlite3.Error):
                raise QuotaStoreError(f"{self.path}: {exc}") from exc
            raise
        self.transactions += 1

    def later(self, sql: str, *args: Any, urgent: bool = False) -> None:
        """A write for the next transaction (settles, releases, what headers taught).
        ``urgent``: the next permit must see it (a pause, a limit), so that permit is taken
        in a transaction, never deferred."""
        self._pending.append((sql, args))
        self._urgent = self._urgent or urgent

    def read(self, sql: str, *args: Any) -> Any:
        """One row read outside any write transaction (WAL: it waits for no writer)."""
        db = self.db
        if db is None:
            raise QuotaStoreError(f"{self.path}: closed")
        try:
            return db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise QuotaStoreError(f"{self.path}: {exc}") from exc

    def can_defer(self, now: float) -> bool:
        """Whether a permit may be granted now without a transaction: nothing urgent is
        queued, and the grants already deferred are few and recent."""
        deferred = self._deferred
        return not self._urgent and (
            not deferred or (len(deferred) < DEFER_MAX and now - deferred[0].t < DEFER_SECONDS)
        )

    def defer(self, key: str, t: float, tokens: float) -> Grant:
        """A grant of an unlimited key, written with the next transaction."""
        grant = Grant(key, t, float(tokens))
        self._deferred.append(grant)
        return grant

    @property
    def deferred(self) -> int:
        """How many grants wait to be written."""
        return len(self._deferred)

    def flush(self) -> None:
        """Write what is queued now (a timer's call: a failure is logged, not raised)."""
        if self.db is None or not (self._pending or self._deferred):
            return
        try:
            with self.transaction():
                pass
        except QuotaStoreError as exc:
            log.warning("quota file %s: %s", self.path, exc)

    def _flush(self, db: sqlite3.Connection) -> list[Grant]:
        """The queued writes, deferred grants first; returns the grants written."""
        deferred, self._deferred = self._deferred, []
        written = [g for g in deferred if not g.gone]
        for grant in written:
            grant.rowid = db.execute(_INSERT, (grant.key, grant.t, grant.tokens)).lastrowid
        pending, self._pending = self._pending, []
        self._urgent = False
        for sql, args in pending:
            db.execute(sql, args)
        return written

    def ensure(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO windows (key) VALUES (?)", (key,))

    def close(self) -> None:
        db, self.db = self.db, None
        if db is None:
            return
        try:
            if self._pending or self._deferred:
                with _immediate(db):
                    self._flush(db)
        except sqlite3.Error as exc:
            log.warning("quota file %s: %s", self.path, exc)
        finally:
            db.close()


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")

"""One key's rate window shared by every run on this machine: a small SQLite table.

``<state>/quota.sqlite`` holds, per quota (a hash of provider kind, address and API key,
never the key itself, plus the ``provider:model`` key), the times and token counts of the
requests granted in the last window (their count and tokens kept beside them by
triggers, so a permit never counts rows), the limits learned from the provider's headers, a
pause (a 429's Retry-After) and what the server last said remained. Two runs on one key
read and write the same rows, so together they stay under the key's limit.

Cost: one short ``BEGIN IMMEDIATE`` transaction per permit. Settling a permit's tokens,
giving one back and what a response's headers taught are queued in memory and written by
the next permit's transaction (and at :meth:`QuotaStore.close`), so a request costs one
transaction, not three. WAL, ``synchronous=NORMAL``: a crash may lose the last permits,
which only makes the next run's window look emptier for at most one window.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..exceptions import QuotaStoreError

__all__ = ["QuotaStore", "QuotaStoreError"]

log = logging.getLogger(__name__)

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


class QuotaStore:
    """The quota file of one state directory, opened by one process."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
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
        try:
            with _immediate(db):
                self._flush(db)
                yield db
        except sqlite3.Error as exc:
            raise QuotaStoreError(f"{self.path}: {exc}") from exc
        self.transactions += 1

    def later(self, sql: str, *args: Any) -> None:
        """A write for the next transaction (settles, releases, what headers taught)."""
        self._pending.append((sql, args))

    def _flush(self, db: sqlite3.Connection) -> None:
        pending, self._pending = self._pending, []
        for sql, args in pending:
            db.execute(sql, args)

    def ensure(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO windows (key) VALUES (?)", (key,))

    def close(self) -> None:
        db, self.db = self.db, None
        if db is None:
            return
        try:
            if self._pending:
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

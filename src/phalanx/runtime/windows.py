"""Rate windows: the requests and tokens one key was granted in its last window.

A window grants a permit when one more request fits: at most ``rpm`` requests and ``tpm``
tokens in any ``window`` seconds (plus ``margin``), no pause (a 429's Retry-After) running,
and not more than the server said remained when its headers were last read. It also keeps
what the headers taught (the key's limits), which replace the documented defaults.

:class:`MemoryWindow` lives in this process, on the event loop's clock (so a virtual-time
loop drives it in tests). :class:`SharedWindow` lives in the state directory's quota file
(:mod:`.quota`), on the wall clock (as the event loop keeps it), so runs on one key share
it; a key that nothing limits takes its permits there with a read, its grants written in
batches (:meth:`.QuotaStore.defer`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..plan.config import RateLimit
from ..providers.ratelimits import RateInfo
from .quota import DEFER_SECONDS, Grant, QuotaStore

__all__ = ["MemoryWindow", "Server", "SharedWindow", "Window", "effective"]

RETAIN = 300.0  # seconds the quota file keeps grants (longer than any usual window)


def effective(
    explicit: RateLimit | None, default: RateLimit | None, rpm: int | None, tpm: int | None
) -> RateLimit | None:
    """A key's limit: the plan's own (a cap the headers never raise), else the learned one
    (``rpm``/``tpm`` from the headers), else the documented default; None when none."""
    if rpm is None and tpm is None:
        return explicit or default
    base = explicit or default or RateLimit()

    def pick(mine: int | None, learned: int | None) -> int | None:
        if learned is None:  # not reported: the configured value stands
            return mine
        if explicit is not None and mine is not None:  # the plan's own is a cap
            return min(mine, learned)
        return learned

    return replace(base, rpm=pick(base.rpm, rpm), tpm=pick(base.tpm, tpm))


@dataclass(slots=True)
class Server:
    """What the server said remained when its headers were last read (on the window's clock)."""

    seen: float = 0.0
    req_left: int | None = None
    req_until: float = 0.0
    tok_left: int | None = None
    tok_until: float = 0.0

    def wait(self, now: float, since: int, since_tokens: float, tokens: float) -> float:
        """Seconds until the server has room, given what was granted since ``seen``."""
        wait = 0.0
        if self.req_left is not None and now < self.req_until and since >= self.req_left:
            wait = self.req_until - now
        if (
            self.tok_left is not None
            and now < self.tok_until
            and since_tokens + tokens > self.tok_left
        ):
            wait = max(wait, self.tok_until - now)
        return wait

    @classmethod
    def of(cls, rate: RateInfo, seen: float) -> Server:
        r, t = rate.requests, rate.tokens
        return cls(
            seen,
            r.remaining if r.reset is not None else None,
            seen + (r.reset or 0.0),
            t.remaining if t.reset is not None else None,
            seen + (t.reset or 0.0),
        )


def _token_wait(
    entries: Iterable[tuple[float, float]], need: float, span: float, now: float
) -> float:
    """Seconds until the oldest grants free ``need`` tokens."""
    freed = 0.0
    for t, n in entries:
        freed += n
        if freed >= need:
            return t + span - now
    return 0.0


class Window:
    """One key's window (see the module's docstring)."""

    learned_rpm: int | None = None
    learned_tpm: int | None = None

    def now(self) -> float:
        raise NotImplementedError

    def take(
        self, now: float, tokens: float, explicit: RateLimit | None, default: RateLimit | None
    ) -> tuple[float, Any]:
        """``(0, entry)``: granted; ``(seconds, None)``: not before that many seconds."""
        raise NotImplementedError

    def settle(self, entry: Any, tokens: float) -> None:
        raise NotImplementedError

    def release(self, entry: Any) -> None:
        """A permit whose request never reached the server: it counts no more."""
        raise NotImplementedError

    def learn(self, rate: RateInfo) -> None:
        raise NotImplementedError

    def pause(self, seconds: float) -> None:
        raise NotImplementedError

    def _learned(self, rate: RateInfo) -> None:
        if rate.requests.limit:
            self.learned_rpm = rate.requests.limit
        if rate.tokens.limit:
            self.learned_tpm = rate.tokens.limit


class MemoryWindow(Window):
    """A window in this process, on the event loop's clock."""

    def __init__(self) -> None:
        self.entries: deque[list[Any]] = deque()  # [time, tokens, live]
        self.token_sum = 0.0
        self.paused_until = 0.0
        self.server = Server()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def take(
        self, now: float, tokens: float, explicit: RateLimit | None, default: RateLimit | None
    ) -> tuple[float, Any]:
        limit = effective(explicit, default, self.learned_rpm, self.learned_tpm) or RateLimit()
        span = limit.window + limit.margin
        self._expire(now - span)
        wait = max(0.0, self.paused_until - now)
        entries = self.entries
        if limit.rpm is not None and len(entries) >= limit.rpm:
            wait = max(wait, entries[-limit.rpm][0] + span - now)
        if limit.tpm is not None and entries and self.token_sum + tokens > limit.tpm:
            need = self.token_sum + tokens - limit.tpm
            wait = max(wait, _token_wait(((e[0], e[1]) for e in entries), need, span, now))
        if self.server.req_left is not None or self.server.tok_left is not None:
            since, since_tokens = self._since(self.server.seen)
            wait = max(wait, self.server.wait(now, since, since_tokens, tokens))
        if wait > 0:
            return wait, None
        entry = [now, float(tokens), True]
        entries.append(entry)
        self.token_sum += tokens
        return 0.0, entry

    def _expire(self, start: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= start:
            gone = entries.popleft()
            gone[2] = False
            self.token_sum -= gone[1]

    def _since(self, seen: float) -> tuple[int, float]:
        n, tokens = 0, 0.0
        for t, k, _ in reversed(self.entries):
            if t <= seen:
                break
            n, tokens = n + 1, tokens + k
        return n, tokens

    def settle(self, entry: Any, tokens: float) -> None:
        if entry[2]:
            self.token_sum += tokens - entry[1]
            entry[1] = float(tokens)

    def release(self, entry: Any) -> None:
        if entry[2]:
            entry[2] = False
            self.entries.remove(entry)
            self.token_sum -= entry[1]

    def learn(self, rate: RateInfo) -> None:
        self._learned(rate)
        now = self.now()
        seen = now - max(0.0, time.time() - rate.at)
        if seen >= self.server.seen:
            self.server = Server.of(rate, seen)
        if rate.exhausted_for:
            self.paused_until = max(self.paused_until, seen + rate.exhausted_for)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.now() + seconds)


_ROW = (
    "SELECT rpm, tpm, paused_until, seen, req_left, req_until, tok_left, tok_until, n,"
    " token_sum FROM windows WHERE key = ?"
)
_SINCE = "SELECT count(*), total(tokens) FROM grants WHERE key = ? AND t > ?"
# what decides whether a key is limited at all: learned limits, a pause, what remained
_LIMITS = (
    "SELECT rpm, tpm, paused_until, req_left, req_until, tok_left, tok_until"
    " FROM windows WHERE key = ?"
)


def _unlimited(row: Any, now: float) -> bool:
    """Whether a window's row (``_LIMITS``) holds nothing back: no limit learned, no pause
    running, nothing the server said remained that still counts."""
    rpm, tpm, paused_until, req_left, req_until, tok_left, tok_until = row
    return (
        rpm is None
        and tpm is None
        and paused_until <= now
        and (req_left is None or now >= req_until)
        and (tok_left is None or now >= tok_until)
    )


class SharedWindow(Window):
    """A window in the state directory's quota file, on the wall clock: every run on this
    machine with the same quota (``key``: provider, address and API key hashed, and the
    model) counts into it. One transaction per :meth:`take`; the other writes wait for it."""

    def __init__(self, store: QuotaStore, key: str) -> None:
        self.store = store
        self.key = key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offset = 0.0
        store.ensure(key)

    def now(self) -> float:
        """The wall clock, kept by the event loop's (so a virtual-time loop drives it too):
        ``time.time()`` at the loop's start plus the loop's time since."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return time.time()
        if loop is not self._loop:
            self._loop, self._offset = loop, time.time() - loop.time()
        return self._offset + loop.time()

    def take(
        self, now: float, tokens: float, explicit: RateLimit | None, default: RateLimit | None
    ) -> tuple[float, Any]:
        if explicit is None and default is None:
            grant = self._take_unlimited(now, tokens)
            if grant is not None:
                return 0.0, grant
        key = self.key
        with self.store.transaction() as db:
            limit = effective(explicit, default, self.learned_rpm, self.learned_tpm)
            span = (limit or RateLimit()).window + (limit or RateLimit()).margin
            db.execute("DELETE FROM grants WHERE key = ? AND t <= ?", (key, now - span))
            row = db.execute(_ROW, (key,)).fetchone()
            if row is None:  # the file was emptied under us: start the window again
                db.execute("INSERT OR IGNORE INTO windows (key) VALUES (?)", (key,))
                row = (None, None, 0.0, 0.0, None, 0.0, None, 0.0, 0, 0.0)
            self.learned_rpm, self.learned_tpm = row[0], row[1]
            limit = effective(explicit, default, row[0], row[1]) or RateLimit()
            wait = self._wait(db, now, tokens, limit, row)
            if wait > 0:
                return wait, None
            cur = db.execute(
                "INSERT INTO grants (key, t, tokens) VALUES (?, ?, ?)", (key, now, tokens)
            )
            return 0.0, cur.lastrowid

    def _take_unlimited(self, now: float, tokens: float) -> Grant | None:
        """A permit of a key that nothing limits, read from its row with no write: the
        grant is written with the next transaction, at most ``DEFER_SECONDS`` later (a
        timer's); None when the key is limited (or a deferred write must go first)."""
        store = self.store
        if self.learned_rpm is not None or self.learned_tpm is not None:
            return None
        if not store.can_defer(now):
            return None
        row = store.read(_LIMITS, self.key)
        if row is None or not _unlimited(row, now):
            return None
        if not store.deferred:
            self._flush_soon()
        return store.defer(self.key, now, tokens)

    def _flush_soon(self) -> None:
        """Write the deferred grants ``DEFER_SECONDS`` from now, if a loop runs."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next transaction or close writes them
        loop.call_later(DEFER_SECONDS, self.store.flush)

    def _wait(self, db: Any, now: float, tokens: float, limit: RateLimit, row: Any) -> float:
        key, span = self.key, limit.window + limit.margin
        n, token_sum = row[8], row[9]
        wait: float = max(0.0, float(row[2]) - now)
        if limit.rpm is not None and n >= limit.rpm:
            (t,) = db.execute(
                "SELECT t FROM grants WHERE key = ? ORDER BY t DESC LIMIT 1 OFFSET ?",
                (key, limit.rpm - 1),
            ).fetchone()
            wait = max(wait, float(t) + span - now)
        if limit.tpm is not None and n and token_sum + tokens > limit.tpm:
            rows = db.execute("SELECT t, tokens FROM grants WHERE key = ? ORDER BY t", (key,))
            wait = max(wait, _token_wait(rows, token_sum + tokens - limit.tpm, span, now))
        server = Server(*row[3:8])
        if (server.req_left is not None and now < server.req_until) or (
            server.tok_left is not None and now < server.tok_until
        ):
            since, since_tokens = db.execute(_SINCE, (key, server.seen)).fetchone()
            wait = max(wait, server.wait(now, since, since_tokens, tokens))
        return wait

    def settle(self, entry: Any, tokens: float) -> None:
        if isinstance(entry, Grant):
            if entry.rowid is None:  # not written yet: it will be with these tokens
                entry.tokens = float(tokens)
                return
            entry = entry.rowid
        self.store.later("UPDATE grants SET tokens = ? WHERE rowid = ?", float(tokens), entry)

    def release(self, entry: Any) -> None:
        if isinstance(entry, Grant):
            if entry.rowid is None:  # not written yet: it never will be
                entry.gone = True
                return
            entry = entry.rowid
        self.store.later("DELETE FROM grants WHERE rowid = ?", entry)

    def learn(self, rate: RateInfo) -> None:
        self._learned(rate)
        seen = self.now() - max(0.0, time.time() - rate.at)
        key, s = self.key, Server.of(rate, seen)
        self.store.later(
            "UPDATE windows SET rpm = coalesce(?, rpm), tpm = coalesce(?, tpm),"
            " paused_until = max(paused_until, ?) WHERE key = ?",
            rate.requests.limit or None, rate.tokens.limit or None,
            seen + rate.exhausted_for, key, urgent=True,
        )  # fmt: skip
        self.store.later(
            "UPDATE windows SET seen = ?, req_left = ?, req_until = ?, tok_left = ?,"
            " tok_until = ? WHERE key = ? AND seen <= ?",
            s.seen, s.req_left, s.req_until, s.tok_left, s.tok_until, key, s.seen,
            urgent=True,
        )  # fmt: skip

    def pause(self, seconds: float) -> None:
        self.store.later(
            "UPDATE windows SET paused_until = max(paused_until, ?) WHERE key = ?",
            self.now() + seconds,
            self.key,
            urgent=True,
        )

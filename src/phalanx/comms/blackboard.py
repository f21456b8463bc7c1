"""Shared context (a blackboard): keyed entries that agents write and read, with provenance.

Each :class:`Entry` holds a JSON value, the agent that wrote it (``source``), the task it
wrote it in, when, its ``version`` (1 for the first write of a key, +1 for each write after)
and tags. :meth:`SharedContext.put` may carry an optimistic version check: a writer that read
version 3 passes ``expected_version=3`` and gets a ``version_conflict`` :class:`CommsError`
(naming the current version and its author) if someone wrote in between, so no write is
lost silently; it reads again, merges and retries. :meth:`SharedContext.update` is the
strategy's unconditional write.

Every write emits :class:`~phalanx.events.ContextWritten` (``tokens``: the value's size as
JSON) and every read, whether through a tool (:meth:`~SharedContext.get`,
:meth:`~SharedContext.query`) or injected into a prompt by a subscription
(:meth:`~SharedContext.subscribed`), emits :class:`~phalanx.events.ContextRead`
(``tokens``: the size of :meth:`SharedContext.render` of what was read). Reads that only
inspect the board (:meth:`~SharedContext.snapshot`, :meth:`~SharedContext.history`) are for
the orchestrator and tests, and emit nothing.

The board lives on the run's event loop: its methods never await, so one call is atomic
with respect to other asyncio tasks; it is not meant to be shared between threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..agents.context import estimate_tokens
from ..events import ContextRead, ContextWritten, Event
from .bus import CommsError

__all__ = ["Entry", "SharedContext"]

MAX_KEY_CHARS = 200
DEFAULT_MAX_VALUE_CHARS = 20_000


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One version of a shared-context key, with its provenance."""

    key: str
    value: Any  # JSON-able (a private copy: later changes to the written object do not leak)
    source: str  # the agent that wrote it
    task_id: str
    ts: float
    version: int
    tags: tuple[str, ...] = ()

    def author(self) -> str:
        """``"by Nova in task t7"`` (without the task when there is none)."""
        task = f" in task {self.task_id}" if self.task_id else ""
        return f"by {self.source}{task}"

    def provenance(self) -> str:
        """``"v3, by Nova in task t7"``."""
        return f"v{self.version}, {self.author()}"


def _no_event(event: Event) -> None:
    """The default ``emit``: drop the event."""


class SharedContext:
    """The run's blackboard. ``max_value_chars`` caps a value's size as JSON."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        emit: Callable[[Event], None] = _no_event,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
    ) -> None:
        self._entries: dict[str, Entry] = {}
        self._history: dict[str, list[Entry]] = {}
        self._clock = clock
        self._emit = emit
        self.max_value_chars = max_value_chars

    # -- writing -----------------------------------------------------------------------
    def put(
        self,
        key: str,
        value: Any,
        *,
        agent: str,
        task_id: str = "",
        expected_version: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> Entry:
        """Write ``key``; the new entry. ``expected_version``: ``None`` writes whatever is
        there; an int must equal the current version (0: the key must not exist yet), else
        ``CommsError("version_conflict")``. ``tags``: ``None`` keeps the current ones."""
        _check_key(key)
        text = self._encode(value)
        current = self._entries.get(key)
        _check_version(key, current, expected_version)
        entry = Entry(
            key=key,
            value=json.loads(text),
            source=agent,
            task_id=task_id,
            ts=self._clock(),
            version=current.version + 1 if current else 1,
            tags=_tags(tags) if tags is not None else (current.tags if current else ()),
        )
        self._entries[key] = entry
        self._history.setdefault(key, []).append(entry)
        self._emit(
            ContextWritten(
                ts=entry.ts,
                key=key,
                version=entry.version,
                agent=agent,
                task_id=task_id,
                tokens=estimate_tokens(text),
            )
        )
        return entry

    def update(self, key: str, value: Any, agent: str, task_id: str = "") -> Entry:
        """The strategy's ``SharedContext.update``: an unconditional :meth:`put`."""
        return self.put(key, value, agent=agent, task_id=task_id)

    def _encode(self, value: Any) -> str:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CommsError("bad_arguments", f"the value is not JSON: {exc}") from None
        if len(text) > self.max_value_chars:
            raise CommsError(
                "too_long",
                f"the value has {len(text)} characters as JSON; at most "
                f"{self.max_value_chars} are allowed: store a summary or a file path",
            )
        return text

    # -- reading (journaled) -----------------------------------------------------------
    def get(self, key: str, *, agent: str, task_id: str = "") -> Entry | None:
        """The current entry of ``key`` (``None`` if it was never written)."""
        entry = self._entries.get(key)
        self._read([entry] if entry else [], agent, task_id, "get")
        return entry

    def query(
        self, prefix: str = "", tag: str | None = None, *, agent: str, task_id: str = ""
    ) -> list[Entry]:
        """The current entries whose key starts with ``prefix`` and, if given, that carry
        ``tag``, sorted by key."""
        entries = [
            e for e in self._sorted() if e.key.startswith(prefix) and (tag is None or tag in e.tags)
        ]
        self._read(entries, agent, task_id, "query")
        return entries

    def subscribed(
        self, subscriptions: Iterable[str], *, agent: str, task_id: str = ""
    ) -> list[Entry]:
        """The current entries an agent subscribed to, sorted by key, to inject into its
        prompt. A subscription is a key prefix (``"api/"``; ``""`` is everything) or
        ``"#tag"`` (entries with that tag). Journaled only when something matched."""
        subs = list(subscriptions)
        entries = [e for e in self._sorted() if any(_matches(e, s) for s in subs)]
        if entries:
            self._read(entries, agent, task_id, "subscription")
        return entries

    def _read(
        self,
        entries: Sequence[Entry],
        agent: str,
        task_id: str,
        via: Literal["get", "query", "subscription"],
    ) -> None:
        self._emit(
            ContextRead(
                ts=self._clock(),
                keys=tuple(e.key for e in entries),
                agent=agent,
                task_id=task_id,
                tokens=estimate_tokens(self.render(entries)),
                via=via,
            )
        )

    def _sorted(self) -> list[Entry]:
        return [self._entries[k] for k in sorted(self._entries)]

    # -- inspecting (not journaled) ----------------------------------------------------
    def snapshot(self) -> dict[str, Entry]:
        """Every current entry by key (for the orchestrator and tests; not journaled)."""
        return dict(self._entries)

    def history(self, key: str) -> list[Entry]:
        """Every version of ``key``, oldest first (not journaled)."""
        return list(self._history.get(key, ()))

    # -- rendering ---------------------------------------------------------------------
    @staticmethod
    def render(entries: Sequence[Entry]) -> str:
        """Prompt text with provenance, one line an entry ("" for none)::

        api/schema (v3, by Nova in task t7) [tags: api]: {"fields": ["id"]}
        """
        return "\n".join(_render_entry(e) for e in entries)


def _render_entry(e: Entry) -> str:
    tags = f" [tags: {', '.join(e.tags)}]" if e.tags else ""
    value = json.dumps(e.value, ensure_ascii=False, sort_keys=True)
    return f"{e.key} ({e.provenance()}){tags}: {value}"


def _matches(entry: Entry, subscription: str) -> bool:
    if subscription.startswith("#"):
        return subscription[1:] in entry.tags
    return entry.key.startswith(subscription)


def _check_key(key: str) -> None:
    if not key or key != key.strip() or any(c in key for c in "\n\r\t"):
        raise CommsError(
            "bad_arguments", f"bad key {key!r}: use a non-empty name without spaces at its ends"
        )
    if len(key) > MAX_KEY_CHARS:
        raise CommsError("too_long", f"a key may have at most {MAX_KEY_CHARS} characters")


def _check_version(key: str, current: Entry | None, expected: int | None) -> None:
    if expected is None:
        return
    if expected < 0:
        raise CommsError("bad_arguments", "expected_version must be 0 (new key) or more")
    have = current.version if current else 0
    if expected == have:
        return
    if current is None:
        raise CommsError(
            "version_conflict",
            f"key {key!r} does not exist (you expected version {expected}): "
            "pass expected_version=0 to create it",
        )
    raise CommsError(
        "version_conflict",
        f"key {key!r} is at version {have} (written {current.author()}), not {expected}: "
        f"read it again, merge your change and retry with expected_version={have}",
    )


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))

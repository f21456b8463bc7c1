"""The one exception tree of phalanx.

::

    PhalanxError
    ├── UsageError            a user can fix it: bad flag, unknown run id, missing key (exit 2)
    │   ├── PlanError         a plan file or Plan object is invalid (names file, field, line)
    │   ├── PlannerError      the planner's model gave no valid plan, or failed
    │   ├── NotComparable     ``report --baseline``: no task succeeded in both runs
    │   └── NothingToResume   ``resume`` of a run that already succeeded (the CLI: exit 0)
    ├── ProviderError         a model call failed; ``error_class`` says how (see ErrorClass)
    ├── ToolError             a tool refused or failed; the model is told ``code: message``
    │   └── CommsError        a message or shared-context operation was refused
    ├── StyleError            an answer does not fit its output style (also a ValueError)
    ├── TTSRenderError        espeak-ng is installed but failed to render the audio
    ├── VetoTask              raised by a Python ``before_task`` hook: do not run this task
    ├── BudgetExhausted       a run limit was reached (``RunResult.raise_for_status()``)
    └── JournalError          the SQLite journal cannot be opened or is inconsistent
        └── QuotaStoreError   the shared quota file cannot be used (the rate window falls
                              back to this process's; never raised to a caller)

Every error a user can cause is a ``UsageError`` whose ``str()`` is one line, printed by the
CLI without a traceback.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._util import one_line as _one_line

if TYPE_CHECKING:
    from .cost import Usage

__all__ = [
    "BudgetExhausted",
    "CommsError",
    "ErrorClass",
    "JournalError",
    "NotComparable",
    "NothingToResume",
    "PhalanxError",
    "PlanError",
    "PlannerError",
    "ProviderError",
    "QuotaStoreError",
    "StyleError",
    "TTSRenderError",
    "ToolError",
    "UsageError",
    "VetoTask",
]


class ErrorClass(StrEnum):
    """How an attempt failed. The retry policy decides on this alone."""

    RATE_LIMITED = "rate_limited"  # 429 with or without Retry-After: backpressure
    OVERLOADED = "overloaded"  # 529 / 503 overloaded
    SERVER_ERROR = "server_error"  # other 5xx
    TIMEOUT = "timeout"  # connect/read timeout or the attempt's own deadline
    CONNECTION = "connection"  # refused, reset, DNS
    STREAM_CUT = "stream_cut"  # the stream ended before its final event
    AUTH = "auth"  # 401/403, missing or wrong key
    BAD_REQUEST = "bad_request"  # 400/404/422
    CONTEXT_LENGTH = "context_length"  # prompt too long for the model
    QUOTA_EXHAUSTED = "quota_exhausted"  # spend cap / insufficient quota (a 429 that won't pass)
    TRUNCATED = "truncated"  # stopped at max_tokens
    OUTPUT_INVALID = "output_invalid"  # the answer does not parse in the agent's style
    MAX_TURNS = "max_turns"  # the agent loop used its turns without a final answer
    BUDGET = "budget"  # the run's budget was spent while this attempt was going on
    CANCELLED = "cancelled"  # the run stopped the attempt (not a failure of the task)
    LOST = "lost"  # the process or node hosting the attempt died: re-queued, not counted
    VETOED = "vetoed"  # a hook refused the task
    IN_DOUBT = "in_doubt"  # a resumed tool call's outcome is unknown (retry.on_in_doubt: fail)
    INTERNAL = "internal"  # a bug in phalanx, a hook or a tool: reported, not retried


RETRYABLE: frozenset[ErrorClass] = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.OVERLOADED,
        ErrorClass.SERVER_ERROR,
        ErrorClass.TIMEOUT,
        ErrorClass.CONNECTION,
        ErrorClass.STREAM_CUT,
    }
)


class PhalanxError(Exception):
    """Root of every error phalanx raises on purpose."""


class UsageError(PhalanxError):
    """Something the user can fix. ``str(err)`` is one line, shown without a traceback."""


class NotComparable(UsageError):
    """No task succeeded in both runs (``report --baseline``): a comparison would measure
    nothing."""


class NothingToResume(UsageError):
    """:func:`phalanx.resume` of a run that already succeeded: there is nothing to do, and
    nothing is changed (no session, no event). ``phalanx resume`` says so in one line and
    exits 0."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} already {status}; nothing to resume")
        self.run_id, self.status = run_id, status


# a key path, flag or variable a message tells the user to set: never cut
_KEY_PATH = re.compile(
    r"[(\['\"`]*"
    r"(--[a-z][\w-]*|[A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Za-z_][\w-]*(\[\d+\])?(\.[A-Za-z_][\w-]*(\[\d+\])?)+)"
    r"[)\]'\"`,.:;]*"
)
_KEY_MAX = 80  # longer "paths" are values, cut like any other
_WORD_MIN = 9  # a word is never cut shorter than this
_VALUE_MIN = 25  # only longer words are values to shorten (a URL, a path, a model name)
_NAME = re.compile(r"[(\['\"`]*[A-Za-z_]\w*[)\]'\"`,.:;]*")  # on_run_start, after_task,


def one_line(text: str, limit: int) -> str:
    """``text`` printable on one line (line breaks and control characters escaped) and at
    most ``limit`` characters. A longer text has its longest other words cut in the middle
    first, so key paths, flags and variable names (``providers.openai-compatible.base_url``,
    ``--base-url``, ``OPENAI_BASE_URL``) stay whole; only when that is not enough is the
    text cut in its middle, so both ends stay readable."""
    text = _one_line(text, None, escape=True)
    if len(text) > limit:
        text = _drop_middle_words(_shorten_values(text, limit), limit)
    return _one_line(text, limit, keep="ends")


def _drop_middle_words(text: str, limit: int) -> str:
    """``text`` with whole words taken out of its middle (``…`` in their place) until it
    fits; both ends stay, and no word is cut in two (the caller cuts what still does not
    fit: a single word longer than ``limit``)."""
    words = text.split(" ")
    head, tail = words[: len(words) // 2], words[len(words) // 2 :]
    while len(text) > limit and (head or tail):
        if len(head) >= len(tail):
            head.pop()
        else:
            tail.pop(0)
        text = " ".join([*head, "…", *tail])
    return text


def _shorten_values(text: str, limit: int) -> str:
    words = text.split(" ")
    cuttable = sorted(
        (i for i, w in enumerate(words) if len(w) >= _VALUE_MIN and not _is_key(w)),
        key=lambda i: -len(words[i]),
    )
    excess = len(text) - limit
    for i in cuttable:
        if excess <= 0:
            break
        word = words[i]
        keep = max(_WORD_MIN - 1, len(word) - excess - 1)  # and the mark
        head = keep // 2
        words[i] = word[:head] + "…" + word[len(word) - (keep - head) :]
        excess -= len(word) - len(words[i])
    return " ".join(words)


def _is_key(word: str) -> bool:
    """A key path, flag, variable or plain name (``on_run_start``): never shortened."""
    if len(word) > _KEY_MAX:
        return False
    return _KEY_PATH.fullmatch(word) is not None or _NAME.fullmatch(word) is not None


class PlanError(UsageError):
    """A plan is invalid. The message names the file, the field and, when known, the line.
    It is one line of at most about 300 characters, whatever values the plan holds."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        file = one_line(file, 100) if file else file
        field = one_line(field, 80) if field else field
        message = one_line(message, 120)
        self.file = file
        self.field = field
        self.line = line
        self.detail = message
        where = file or "plan"
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class ProviderError(PhalanxError):
    """A model call failed. ``error_class`` drives the retry decision. ``usage``: what the
    failed call used, when the provider reported it (a stream cut after its usage arrived);
    the executor charges it once, like a call that answered. ``rate``: the rate limits the
    error response's headers reported (a ``providers.ratelimits.RateInfo``), if any;
    ``reached``: False when the request never reached the server (a refused connection),
    so it spent no rate permit."""

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        status: int | None = None,
        retry_after: float | None = None,
        usage: Usage | None = None,
        rate: Any = None,
        reached: bool = True,
    ) -> None:
        from .redaction import redact

        super().__init__(redact(message))
        self.error_class = error_class
        self.status = status
        self.retry_after = retry_after
        self.usage = usage
        self.rate = rate
        self.reached = reached

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE


class BudgetExhausted(PhalanxError):
    """A run limit was reached; new work stopped, finished results were kept. A run ends
    ``budget_exhausted`` without raising; :meth:`phalanx.RunResult.raise_for_status` raises
    this for callers that want an exception."""


class JournalError(PhalanxError):
    """The journal cannot be used (unreadable file, unknown run, schema mismatch)."""


class QuotaStoreError(JournalError):
    """The quota file (``<state>/quota.sqlite``) cannot be used: the governor falls back to
    this process's window."""


class PlannerError(UsageError):
    """The planner gave no valid plan, or its model failed. ``str()`` is one line."""


class ToolError(PhalanxError):
    """A tool refused or failed, in a way the model should be told about.

    ``code`` is a stable word (``path_outside_workspace``, ``not_found``, ``not_a_file``,
    ``not_a_directory``, ``not_text``, ``too_large``, ``edit_no_match``, ``edit_ambiguous``,
    ``command_not_allowed``, ``shell_metacharacters``, ``timeout``, ``bad_arguments``,
    ``permission_denied``, ``io_error``); ``message`` is one line. ``detail`` is optional
    extra text for the model (e.g. a timed-out command's partial output).
    ``str(err)`` is ``"{code}: {message}"``.
    """

    def __init__(self, code: str, message: str, *, detail: str = "") -> None:
        self.code = code
        line = " ".join(message.split())
        self.message = line if len(line) <= 400 else line[:397] + "..."
        self.detail = detail
        super().__init__(f"{code}: {self.message}")


class CommsError(ToolError):
    """A send or a shared-context operation was refused. ``code`` is one of
    ``messaging_disabled``, ``not_allowed``, ``unknown_agent``, ``too_many_recipients``,
    ``too_long``, ``version_conflict``, ``bad_arguments``.

    It is a :class:`ToolError`: through
    :func:`~phalanx.agents.tools.call_tool` it reaches the model as ``"error: code: message"``.
    """


class StyleError(PhalanxError, ValueError):
    """An answer does not fit its style. ``str()`` is one line: ``"{path}: {message}"``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = " ".join(message.split())
        super().__init__(f"{path}: {self.message}")


class TTSRenderError(PhalanxError):
    """``espeak-ng`` is installed but failed to render the audio."""


class VetoTask(PhalanxError):
    """Raised by a Python ``before_task`` hook: do not run this task."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

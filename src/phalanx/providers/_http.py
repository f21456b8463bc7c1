"""What every HTTP provider shares: Retry-After parsing and status -> ErrorClass rules.

Each provider module keeps its own ``classify`` (the one place its SDK's errors are mapped);
these helpers hold the rules they have in common.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from .._util import one_line as _one_line
from ..exceptions import ErrorClass, UsageError
from ..redaction import redact as _redact
from ..redaction import register

__all__ = [
    "body_broke_off",
    "classify_status",
    "looks_like_context_length",
    "looks_like_quota",
    "one_line",
    "positive_int",
    "positive_seconds",
    "redact",
    "retry_after",
]

_CONTEXT_HINTS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceeds the available context size",
    "exceed_context_size",
    "context window",
    "too many tokens",
)
_QUOTA_HINTS = (
    "insufficient_quota",
    "quota",
    "billing",
    "spend limit",
    "spending limit",
    "credit balance is too low",
)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def looks_like_context_length(text: str) -> bool:
    t = text.lower()
    return any(h in t for h in _CONTEXT_HINTS)


def looks_like_quota(text: str) -> bool:
    t = text.lower()
    return any(h in t for h in _QUOTA_HINTS)


def classify_status(status: int, body: str = "") -> ErrorClass:
    """The common mapping; providers refine it (e.g. Anthropic's 529)."""
    if status == 429:
        return ErrorClass.QUOTA_EXHAUSTED if looks_like_quota(body) else ErrorClass.RATE_LIMITED
    if status in (401, 403):
        return ErrorClass.AUTH
    if status in (400, 413, 422) and looks_like_context_length(body):
        return ErrorClass.CONTEXT_LENGTH
    if status == 402:
        return ErrorClass.QUOTA_EXHAUSTED
    if status in (529, 503):
        return ErrorClass.OVERLOADED
    if status == 408:
        return ErrorClass.TIMEOUT
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    return ErrorClass.BAD_REQUEST


def redact(text: str, secret: str | None = None) -> str:
    """Known secrets (``secret`` included) and key-shaped strings removed from ``text``."""
    register(secret)
    return _redact(text)


def describe_cause(exc: BaseException, secret: str | None = None) -> str:
    """An exception as text for an error message: its message, else its type's name."""
    return redact(str(exc), secret) or type(exc).__name__


def body_broke_off(exc: BaseException) -> bool:
    """True when ``exc`` means a response body ended before its end: a cut stream.

    Decided from the transport error in the exception chain, never from the SDK's own
    wrapper type (SDK releases move a mid-body cut between ``APIConnectionError`` and a raw
    transport error). Timeouts and failed connects are never cuts.
    """
    import httpx2  # the HTTP providers' transport; imported here so _http stays light

    seen: set[int] = set()
    err: BaseException | None = exc
    cut = False
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, httpx2.TimeoutException | httpx2.ConnectError):
            return False
        if isinstance(err, httpx2.RemoteProtocolError):
            # h11's words for a body that stopped short ("... complete message body",
            # "incomplete chunked read"); "without sending a response" is a failed request
            text = str(err).lower()
            cut = cut or "without sending a response" not in text
        elif isinstance(err, httpx2.ReadError | httpx2.StreamError | json.JSONDecodeError):
            cut = True
        err = err.__cause__ or err.__context__
    return cut


def one_line(text: str, limit: int = 300) -> str:
    """An error text on one line, at most ``limit`` characters (``...`` where cut)."""
    return _one_line(text, limit, mark="...")


def positive_int(value: Any, option: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"providers.{option}: expected a positive integer")
    return value


def positive_seconds(value: Any, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"providers.{option}: expected a positive number of seconds")
    return float(value)

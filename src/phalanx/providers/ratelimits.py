"""What a provider's responses say about its rate limits, read from their headers.

Every HTTP response (a 200 stream, a whole answer, a 429 or any other error) may carry the
key's limits. :func:`parse` reads them into a :class:`RateInfo`; the providers put it on
the :class:`~phalanx.providers.base.Completion` (``rate``) or the
:class:`~phalanx.exceptions.ProviderError` (``rate``), and the run's rate governor adopts
it. Headers read::

    anthropic-ratelimit-requests-limit / -remaining / -reset      (reset: RFC 3339 time)
    anthropic-ratelimit-input-tokens-limit / -remaining / -reset  (the token window)
    anthropic-ratelimit-tokens-limit / -remaining / -reset        (when input-tokens is absent)
    anthropic-ratelimit-output-tokens-remaining / -reset          (0 remaining: wait for reset)
    x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests
    x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens
                                                                  (reset: 6m0s, 1s, 20ms)

A value in an unknown format is ignored, never an error. Limits are read as counts per the
governor's window (60 s unless the plan says otherwise), the providers' documented unit.

:func:`quota_id` names one key's quota (provider kind, address, API key) without the key
itself, so that runs on one machine share it; :func:`annotate` also says whether a failed
request ever reached the server (a refused connection, a DNS failure, a request cut before
it was sent did not, and cost no permit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from ..exceptions import ProviderError

__all__ = [
    "Quota",
    "RateInfo",
    "annotate",
    "headers_of",
    "never_sent",
    "parse",
    "quota_id",
    "read",
    "stamp",
]

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """One dimension of a key's limits, as the server reported it."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # seconds, from when the response was read, until it refills

    def __bool__(self) -> bool:
        return self.limit is not None or self.remaining is not None


@dataclasses.dataclass(frozen=True, slots=True)
class RateInfo:
    """A response's rate-limit headers: requests and tokens per window, and how long any
    dimension the server reported as used up (0 remaining) still needs to refill."""

    requests: Quota = Quota()
    tokens: Quota = Quota()
    exhausted_for: float = 0.0
    at: float = 0.0  # when the headers were read (wall clock, time.time())


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MAX_SECONDS = 7 * 86400.0  # anything longer is not a rate window: ignored


def _count(value: str | None) -> int | None:
    """A non-negative count ("50", "50.0"), or None."""
    if value is None:
        return None
    try:
        n = float(value.strip())
    except ValueError:
        return None
    return int(n) if math.isfinite(n) and n >= 0 else None


def _seconds(value: str | None, now: float) -> float | None:
    """A reset as seconds from ``now``: a Go duration (``6m0s``, ``1s``, ``20ms``), a plain
    number of seconds, or an RFC 3339 time (``2025-01-01T00:00:30Z``); None when unknown."""
    if not value:
        return None
    text = value.strip()
    secs = _duration(text)
    if secs is None:
        secs = _timestamp(text, now)
    if secs is None or not math.isfinite(secs) or secs > _MAX_SECONDS:
        return None
    return max(0.0, secs)


def _duration(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _timestamp(text: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:  # a time without a zone is not comparable: ignored
        return None
    return when.timestamp() - now


def _quota(h: Mapping[str, str], limit: str, remaining: str, reset: str, now: float) -> Quota:
    return Quota(_count(h.get(limit)), _count(h.get(remaining)), _seconds(h.get(reset), now))


def _anthropic(h: Mapping[str, str], now: float) -> tuple[Quota, Quota, list[Quota]]:
    def dim(name: str) -> Quota:
        p = f"anthropic-ratelimit-{name}-"
        return _quota(h, p + "limit", p + "remaining", p + "reset", now)

    requests, inputs, tokens, outputs = (
        dim(n) for n in ("requests", "input-tokens", "tokens", "output-tokens")
    )
    return requests, inputs or tokens, [requests, inputs, tokens, outputs]


def _openai(h: Mapping[str, str], now: float) -> tuple[Quota, Quota, list[Quota]]:
    def dim(name: str) -> Quota:
        return _quota(
            h, f"x-ratelimit-limit-{name}", f"x-ratelimit-remaining-{name}",
            f"x-ratelimit-reset-{name}", now,
        )  # fmt: skip

    requests, tokens = dim("requests"), dim("tokens")
    return requests, tokens, [requests, tokens]


def parse(headers: Mapping[str, str] | None, now: float | None = None) -> RateInfo | None:
    """The rate-limit headers of one response, or None when it has none (or none readable).
    ``now``: the wall-clock time the response was read (for RFC 3339 resets)."""
    if not headers:
        return None
    try:
        h = {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:  # a headers object that cannot be read: no limits learned
        return None
    now = time.time() if now is None else now
    if any(k.startswith("anthropic-ratelimit-") for k in h):
        requests, tokens, dims = _anthropic(h, now)
    elif any(k.startswith("x-ratelimit-") for k in h):
        requests, tokens, dims = _openai(h, now)
    else:
        return None
    if not requests and not tokens:
        return None
    spent = [d.reset or 0.0 for d in dims if d.remaining == 0]
    return RateInfo(requests, tokens, max(spent, default=0.0), now)


def headers_of(source: Any) -> Mapping[str, str] | None:
    """The response headers of an SDK stream, a raw response, an httpx response or an SDK
    status error; None when it has none."""
    for obj in (source, getattr(source, "response", None)):
        headers = getattr(obj, "headers", None)
        if isinstance(headers, Mapping) or hasattr(headers, "items"):
            return headers
    return None


def read(source: Any) -> RateInfo | None:
    """The rate limits of a response (an SDK stream or raw response), read now: call it
    when the headers arrive (a stream's arrive long before its end)."""
    return parse(headers_of(source))


def stamp(completion: _T, rate: RateInfo | None) -> _T:
    """``completion`` with the rate limits of the response it came from."""
    if rate is None:
        return completion
    return dataclasses.replace(completion, rate=rate)  # type: ignore[type-var]


# transport errors that mean the request never reached the server: no permit is spent
_UNSENT = ("ConnectError", "ConnectTimeout", "PoolTimeout", "WriteError", "WriteTimeout")


def never_sent(exc: BaseException) -> bool:
    """True when ``exc`` (or an error in its chain) says the request was never sent:
    a refused connection, a DNS failure, no free connection, a request cut while writing."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ in _UNSENT:
            return True
        if getattr(err, "response", None) is not None and hasattr(err, "status_code"):
            return False  # the server answered
        err = err.__cause__ or err.__context__
    return False


def annotate(error: ProviderError, exc: BaseException) -> ProviderError:
    """``error`` (the ProviderError made from ``exc``) with the rate limits of the error
    response, if there was one, and whether the request reached the server."""
    status = getattr(exc, "status_code", None)
    rate = parse(headers_of(exc)) if status is not None else None
    if rate is not None:
        error.rate = rate
    if never_sent(exc):
        error.reached = False
    return error


def quota_id(kind: str, base_url: Any, api_key: str | None) -> str:
    """One key's quota on one server, as a short hash: never the key itself."""
    text = f"{kind}\0{str(base_url or '').rstrip('/')}\0{api_key or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]

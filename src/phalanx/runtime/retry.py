"""Retry decisions: pure functions of the error class, attempt count and Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..exceptions import RETRYABLE, ErrorClass

__all__ = ["RetryDecision", "backoff_delay", "decide_retry", "is_retryable"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


def is_retryable(error_class: ErrorClass | str) -> bool:
    return ErrorClass(error_class) in RETRYABLE


def backoff_delay(
    attempt_no: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2**(n-1))."""
    d = min(cap, base * 2.0 ** max(0, attempt_no - 1))
    r = rng.random() if rng is not None else random.random()
    return d / 2 + r * d / 2


def decide_retry(
    error_class: ErrorClass | str,
    *,
    attempt_no: int,
    max_attempts: int,
    retry_after: float | None = None,
    base: float = 0.5,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Retry a retryable failure while attempts remain; never sooner than Retry-After."""
    cls = ErrorClass(error_class)
    if cls is ErrorClass.LOST:  # the orchestrator re-queues lost attempts up to its limit
        return RetryDecision(
            retry=False, reason="not retryable again: its host died under it every time"
        )
    if cls not in RETRYABLE:
        return RetryDecision(retry=False, reason=f"{cls.value} is not retryable")
    if attempt_no >= max_attempts:
        return RetryDecision(retry=False, reason=f"gave up after {attempt_no} attempts")
    delay = backoff_delay(attempt_no, base=base, cap=cap, rng=rng)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return RetryDecision(retry=True, delay=delay, reason=cls.value)

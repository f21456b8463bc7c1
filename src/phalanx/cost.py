"""Token usage and its cost. Unknown cost is ``None``, never a silent zero."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PRICES", "Price", "Usage", "price_for"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None  # None: unknown (a model without a price), not free

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost_usd is not None or other.cost_usd is not None:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=cost,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Usage:
        return cls(**d) if d else ZERO


ZERO = Usage()


@dataclass(frozen=True, kw_only=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float | None = None  # default: the input price
    cache_write: float | None = None

    def cost(self, u: Usage) -> float:
        cr = self.input if self.cache_read is None else self.cache_read
        cw = self.input if self.cache_write is None else self.cache_write
        return (
            u.input_tokens * self.input
            + u.output_tokens * self.output
            + u.cache_read_tokens * cr
            + u.cache_write_tokens * cw
        ) / 1_000_000

    def apply(self, u: Usage) -> Usage:
        return Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=self.cost(u),
        )


def _p(i: float, o: float, cr: float | None = None, cw: float | None = None) -> Price:
    return Price(input=i, output=o, cache_read=cr, cache_write=cw)


# List prices (USD per million tokens) as published by the vendors; a plan's `prices:`
# overrides or extends them. Keys are matched exactly, then by the longest prefix.
PRICES: dict[str, Price] = {
    "anthropic:claude-opus-4": _p(15.0, 75.0, 1.5, 18.75),
    "anthropic:claude-sonnet-4": _p(3.0, 15.0, 0.3, 3.75),
    "anthropic:claude-3-7-sonnet": _p(3.0, 15.0, 0.3, 3.75),
    "anthropic:claude-3-5-haiku": _p(0.8, 4.0, 0.08, 1.0),
    "anthropic:claude-haiku-4": _p(1.0, 5.0, 0.1, 1.25),
    "openai:gpt-4o-mini": _p(0.15, 0.6, 0.075),
    "openai:gpt-4o": _p(2.5, 10.0, 1.25),
    "openai:gpt-4.1-mini": _p(0.4, 1.6, 0.1),
    "openai:gpt-4.1-nano": _p(0.1, 0.4, 0.025),
    "openai:gpt-4.1": _p(2.0, 8.0, 0.5),
    "openai:o3-mini": _p(1.1, 4.4, 0.55),
    "local:": _p(0.0, 0.0),  # runs on this machine
}


def price_for(provider: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``provider:model``, or None when unknown (cost then stays unknown)."""
    table = {**PRICES, **(overrides or {})}
    if provider in table:
        return table[provider]
    best = max((k for k in table if provider.startswith(k)), key=len, default=None)
    return table[best] if best is not None else None

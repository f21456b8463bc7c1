"""Token usage and its cost. Unknown cost is ``None``, never a silent zero.

List prices of the hosted APIs (``anthropic:``, ``openai:``) come from the maintained
``genai-prices`` package (its bundled snapshot, never fetched at run time), with tiered
long-context prices applied per call; a plan's ``prices:`` override them, and a model
neither knows has an unknown cost. Without ``genai-prices`` installed, the small table
:data:`PRICES` below is used.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PRICES", "ListPrice", "Price", "Usage", "list_price", "price_for"]


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
        if other is ZERO:  # the common sums of a run's bookkeeping: nothing to add
            return self
        if self is ZERO:
            return other
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
    """The price of ``provider:model``: the plan's ``prices:`` (exact, then the longest
    prefix), else the maintained list price, else the built-in table; None when unknown
    (cost then stays unknown)."""
    given = dict(overrides or {})
    found = _lookup(provider, given)
    if found is not None:
        return found
    return list_price(provider) or _lookup(provider, PRICES)


def _lookup(provider: str, table: Mapping[str, Price]) -> Price | None:
    if provider in table:
        return table[provider]
    best = max((k for k in table if provider.startswith(k)), key=len, default=None)
    return table[best] if best is not None else None


_LISTED = ("anthropic", "openai")  # the providers genai-prices knows by these ids


@functools.lru_cache(maxsize=256)
def list_price(provider: str) -> ListPrice | None:
    """The maintained list price of ``anthropic:MODEL`` or ``openai:MODEL`` (None when the
    package is not installed or does not know the model)."""
    kind, _, model = provider.partition(":")
    if kind not in _LISTED or not model:
        return None
    try:
        rates = _model_price(kind, model)
    except (ImportError, LookupError):  # the package is not installed, or not this model
        return None
    return ListPrice(
        input=_rate(getattr(rates, "input_mtok", None)) or 0.0,
        output=_rate(getattr(rates, "output_mtok", None)) or 0.0,
        cache_read=_rate(getattr(rates, "cache_read_mtok", None)),
        cache_write=_rate(getattr(rates, "cache_write_mtok", None)),
        provider_id=kind,
        model=model,
    )


def _rate(value: Any) -> float | None:
    """A per-million rate as a float (a tiered price's base rate)."""
    if value is None:
        return None
    return float(getattr(value, "base", value))


@dataclass(frozen=True, kw_only=True, slots=True)
class ListPrice(Price):
    """A list price from ``genai-prices``: the base rates for display, and :meth:`cost`
    computed by the package per call, so a long-context tier is applied when a call
    reaches it. Our ``input_tokens`` exclude cache tokens; the package counts them in."""

    provider_id: str
    model: str

    def cost(self, u: Usage) -> float:
        from genai_prices import Usage as ListedUsage

        rates = _model_price(self.provider_id, self.model)
        listed = ListedUsage(
            input_tokens=u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            output_tokens=u.output_tokens,
        )
        return float(rates.calc_price(listed)["total_price"])


@functools.lru_cache(maxsize=256)
def _model_price(provider_id: str, model: str) -> Any:
    from genai_prices import Usage as ListedUsage
    from genai_prices import calc_price

    return calc_price(
        ListedUsage(input_tokens=1, output_tokens=1), model, provider_id=provider_id
    ).model_price

"""Maintained prices: list prices come from genai-prices (its bundled snapshot), with cache
tokens mapped to its convention; the plan's prices win; an unknown model stays unknown."""

from __future__ import annotations

import pytest

from phalanx.cost import ListPrice, Price, Usage, price_for


@pytest.mark.parametrize(
    ("model", "input", "output"),
    [
        ("anthropic:claude-opus-4-5", 5.0, 25.0),  # longest prefix gave Opus 4's $15/$75
        ("openai:gpt-4o-2024-05-13", 5.0, 15.0),  # longest prefix gave gpt-4o's $2.5/$10
    ],
)
def test_the_two_mispriced_models(model: str, input: float, output: float) -> None:
    price = price_for(model)
    assert isinstance(price, ListPrice)
    assert (price.input, price.output) == (input, output)
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert price.cost(million) == pytest.approx(input + output)


def test_cache_tokens_are_priced_at_their_own_rates() -> None:
    price = price_for("anthropic:claude-opus-4-5")
    assert price is not None
    # ours: input excludes cache reads and writes (as Anthropic reports them)
    u = Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert price.cost(u) == pytest.approx(5.0 + 0.5 + 6.25)


def test_a_long_context_tier_applies_per_call() -> None:
    price = price_for("anthropic:claude-sonnet-4-5")
    assert price is not None
    short = price.cost(Usage(input_tokens=100_000))
    long = price.cost(Usage(input_tokens=300_000))
    assert short == pytest.approx(0.3)
    assert long > 3 * short  # the tier above 200k tokens costs more per token


def test_plan_prices_win_and_unknown_stays_unknown() -> None:
    mine = {"anthropic:claude-opus-4-5": Price(input=1.0, output=2.0)}
    assert price_for("anthropic:claude-opus-4-5", mine) == Price(input=1.0, output=2.0)
    assert price_for("openai:no-such-model-anywhere") is None
    assert price_for("openai-compatible:qwen") is None
    assert price_for("local:smollm2") == Price(input=0.0, output=0.0)

"""Model providers behind one seam, addressed as ``provider:model``.

``sim`` is the simulated provider (tests, benchmarks, what-if runs). The real providers
(``anthropic:``, ``openai:``, ``openai-compatible``, ``local:smollm2``, ``claude-code``) plug
into :func:`resolve_provider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import UsageError
from .base import Completion, CompletionRequest, Message, Provider
from .sim import SimProvider

__all__ = [
    "Completion",
    "CompletionRequest",
    "Message",
    "Provider",
    "ProviderRecipe",
    "SimProvider",
    "is_simulated",
    "resolve_provider",
    "split_provider",
]

AVAILABLE = (
    "sim",
    "local:smollm2",
    "anthropic:MODEL",
    "openai:MODEL",
    "openai-compatible:MODEL",
    "claude-code",
)
_EXTRA = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openai-compatible": "openai",
    "local": "local",
}


def split_provider(name: str) -> tuple[str, str]:
    kind, _, model = name.partition(":")
    return kind.strip(), model.strip()


def is_simulated(name: str) -> bool:
    return split_provider(name)[0] == "sim"


def resolve_provider(
    name: str, options: Mapping[str, Mapping[str, Any]] | None = None, *, seed: int | None = None
) -> Provider:
    """Build the provider for ``name``; ``options`` is the plan's ``providers:`` mapping."""
    kind, model = split_provider(name)
    opts = dict((options or {}).get(name) or (options or {}).get(kind) or {})
    if kind == "sim":
        return SimProvider(model or "sim", opts, seed=seed)
    try:
        return _real_provider(kind, model, opts, name)
    except ModuleNotFoundError as exc:
        extra = _EXTRA.get(kind, kind)
        raise UsageError(
            f"provider {name!r} needs the {exc.name!r} package: pip install 'phalanx[{extra}]'"
        ) from None


@dataclass(frozen=True, kw_only=True)
class ProviderRecipe:
    """How to build a provider somewhere else (a remote agent host): its name, the plan's
    ``providers:`` options (never a key: providers read keys from the environment where
    they run) and the run's seed."""

    name: str
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int | None = None

    def build(self) -> Provider:
        return resolve_provider(self.name, self.options, seed=self.seed)


def _real_provider(kind: str, model: str, opts: dict[str, Any], name: str) -> Provider:
    if kind == "anthropic":
        from .anthropic_api import AnthropicProvider

        return AnthropicProvider(model, opts)
    if kind in ("openai", "openai-compatible"):
        from .openai_api import OpenAIProvider

        return OpenAIProvider(model, opts, compatible=kind == "openai-compatible")
    if kind == "local":
        from .local import LocalModelProvider

        return LocalModelProvider(model or "smollm2", opts)
    if kind == "claude-code":
        from .claude_code import ClaudeCodeProvider

        return ClaudeCodeProvider(model, opts)
    raise UsageError(f"unknown provider {name!r} (known: {', '.join(AVAILABLE)})")

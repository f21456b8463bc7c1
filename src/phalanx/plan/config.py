"""The plan's settings for the runtime's parts: breakers, rate limits, autoscaling, messages.

They are plain values a plan file or the Python API sets; the runtime and comms modules that
act on them import them from here, so a plan never imports the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import UsageError

__all__ = ["AutoscaleConfig", "BreakerConfig", "MessagePolicy", "RateLimit"]


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerConfig:
    window: int = 20  # attempts remembered
    threshold: float = 0.5  # error rate that opens the breaker
    min_volume: int = 5  # attempts needed in the window before it may open
    cooldown: float = 30.0  # seconds open before a half-open probe
    enabled: bool = True
    # A provider's breaker is for outages (a revoked key, a dead endpoint), not for one bad
    # agent: it looks at more attempts and needs a higher error rate.
    provider_window: int = 50
    provider_threshold: float = 0.9

    def for_provider(self) -> BreakerConfig:
        return BreakerConfig(
            window=self.provider_window,
            threshold=self.provider_threshold,
            min_volume=max(self.min_volume, 10),
            cooldown=self.cooldown,
            enabled=self.enabled,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (estimated before a call, settled after)
    # seconds added to the 60 s window: requests released exactly 60 s apart can arrive
    # less than 60 s apart (network jitter) and meet in one of the server's windows
    margin: float = 0.0
    # seconds of the window rpm and tpm are counted over: 60 (a minute) unless a server
    # counts over another length (a gateway's per-second limit: window 1)
    window: float = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AutoscaleConfig:
    start_agents: int = 1  # per role, at the start
    interval: float = 5.0  # seconds between decisions
    min_gain: float = 0.5  # an added agent must bring this share of an agent's throughput
    retire_after: float = 30.0  # idle seconds before an agent is retired
    max_step: int | None = None  # at most this many agents added at once (None: double)


@dataclass(frozen=True, kw_only=True)
class MessagePolicy:
    """What agents may send.

    ``enabled``: messaging at all. ``broadcast_roles``: the roles that may broadcast (``None``:
    every role; an empty set: nobody). ``allow_direct``: whether direct (mesh) messages are
    allowed. ``max_recipients``: the most recipients one message may reach (a broadcast to
    more agents is refused, not cut). ``max_chars``: the longest message text.
    """

    enabled: bool = True
    broadcast_roles: frozenset[str] | None = None
    max_recipients: int | None = None
    max_chars: int = 4000
    allow_direct: bool = True

    def __post_init__(self) -> None:
        if self.max_recipients is not None and self.max_recipients < 1:
            raise UsageError("message policy: max_recipients must be at least 1")
        if self.max_chars < 1:
            raise UsageError("message policy: max_chars must be at least 1")

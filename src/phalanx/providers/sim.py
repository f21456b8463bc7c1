"""The simulated provider ``sim``: seeded latency, token counts and injected faults.

For tests, benchmarks and what-if runs. Every output it writes starts with ``[simulated]``
and every run that uses it is marked simulated; it is never a silent default for real work.

Options (plan ``providers: {sim: {...}}``)::

    latency:  {distribution: fixed, ms: 50}            # or
              {distribution: lognormal, median_ms: 300, sigma: 0.5}
    output_tokens: 120          # mean output length
    faults:   {rate_limited: 0.1, server_error: 0.05, auth: 0.01, ...}   # rate per call
    retry_after: 1.0            # seconds, sent with injected rate_limited faults
    seed: 0
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from typing import Any

from ..cost import Usage
from ..exceptions import ErrorClass, ProviderError, UsageError
from .base import Completion, CompletionRequest

__all__ = ["SimProvider"]

_STATUS = {
    ErrorClass.RATE_LIMITED: 429,
    ErrorClass.QUOTA_EXHAUSTED: 429,
    ErrorClass.OVERLOADED: 529,
    ErrorClass.SERVER_ERROR: 500,
    ErrorClass.AUTH: 401,
    ErrorClass.BAD_REQUEST: 400,
    ErrorClass.CONTEXT_LENGTH: 400,
}
_VOCAB = (
    "analysis design interface module test result plan step data model agent task review "
    "change check output value system record field"
)
_WORDS = _VOCAB.split(" ")
# A long pseudo-text to slice answers from: cheap, deterministic, no per-word RNG calls.
_TEXT = " ".join(_WORDS[(i * 7 + i // 20) % len(_WORDS)] for i in range(4000))


class SimProvider:
    """Deterministic per (seed, task, attempt): the same run gives the same answers."""

    simulated = True

    def __init__(
        self, model: str = "sim", options: Mapping[str, Any] | None = None, seed: int | None = None
    ) -> None:
        opts = dict(options or {})
        self.name = f"sim:{model}" if model and model != "sim" else "sim"
        self.seed = int(opts.pop("seed", seed if seed is not None else 0))
        self._latency = _latency(opts.pop("latency", {"distribution": "fixed", "ms": 0}))
        self.output_tokens = int(opts.pop("output_tokens", 60))
        self.retry_after = float(opts.pop("retry_after", 0.0))
        self.faults = _faults(opts.pop("faults", {}) or {})
        if opts:
            raise UsageError(f"providers.sim: unknown option(s) {', '.join(sorted(opts))}")

    def _rng(self, req: CompletionRequest) -> random.Random:
        return random.Random(f"{self.seed}\x00{req.task_id}\x00{req.attempt_no}\x00{req.agent}")

    async def complete(self, request: CompletionRequest) -> Completion:
        rng = self._rng(request)
        delay = self._latency(rng)
        fault = self._draw_fault(rng)
        if fault is not None:
            if delay > 0:
                await asyncio.sleep(delay * 0.5)
            raise ProviderError(
                f"simulated {fault.value}",
                error_class=fault,
                status=_STATUS.get(fault),
                retry_after=self.retry_after if fault is ErrorClass.RATE_LIMITED else None,
            )
        if delay > 0:
            await asyncio.sleep(delay)
        n_out = max(1, int(rng.expovariate(1 / self.output_tokens))) if self.output_tokens else 1
        return Completion(
            text=_answer(request, n_out, rng),
            usage=Usage(input_tokens=max(1, request.prompt_chars // 4), output_tokens=n_out),
            model=self.name,
            simulated=True,
        )

    def _draw_fault(self, rng: random.Random) -> ErrorClass | None:
        if not self.faults:
            return None
        u = rng.random()
        for cls, rate in self.faults:
            if u < rate:
                return cls
            u -= rate
        return None


def _answer(req: CompletionRequest, n_words: int, rng: random.Random) -> str:
    start = _TEXT.index(" ", rng.randrange(0, len(_TEXT) // 2)) + 1
    body = _TEXT[start : start + 8 * min(n_words, 400)].strip()
    head = (
        f"[simulated] {req.agent or 'agent'} ({req.role or 'agent'}) on {req.title or req.task_id}"
    )
    if req.style == "json":
        import json

        return json.dumps(
            {"simulated": True, "task": req.task_id, "agent": req.agent, "summary": body}
        )
    if req.style == "yaml":
        return f"simulated: true\ntask: {req.task_id!r}\nagent: {req.agent!r}\nsummary: {body}\n"
    if req.style == "table":
        return f"| simulated | task | summary |\n|---|---|---|\n| yes | {req.task_id} | {body} |\n"
    if req.style == "html":
        return f"<section><h1>{head}</h1><p>{body}</p></section>"
    return f"{head}: {body}"


def _latency(spec: Any) -> Any:
    if isinstance(spec, int | float):
        spec = {"distribution": "fixed", "ms": spec}
    if not isinstance(spec, Mapping):
        raise UsageError("providers.sim.latency: expected a mapping or a number of ms")
    dist = spec.get("distribution", "fixed")
    if dist == "fixed":
        seconds = float(spec.get("ms", 0)) / 1000
        return lambda rng: seconds
    if dist == "lognormal":
        mu = math.log(float(spec.get("median_ms", 100)) / 1000)
        sigma = float(spec.get("sigma", 0.5))
        return lambda rng: rng.lognormvariate(mu, sigma)
    raise UsageError(f"providers.sim.latency.distribution: unknown {dist!r} (fixed, lognormal)")


def _faults(spec: Mapping[str, Any]) -> list[tuple[ErrorClass, float]]:
    out = []
    for key, rate in spec.items():
        try:
            cls = ErrorClass(key)
        except ValueError:
            names = ", ".join(c.value for c in ErrorClass)
            raise UsageError(f"providers.sim.faults: unknown class {key!r} ({names})") from None
        out.append((cls, float(rate)))
    if sum(r for _, r in out) > 1:
        raise UsageError("providers.sim.faults: rates add up to more than 1")
    return out

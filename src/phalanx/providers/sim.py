"""The simulated provider ``sim``: seeded latency, token counts and injected faults.

For tests, benchmarks and what-if runs. Every output it writes starts with ``[simulated]``
and every run that uses it is marked simulated; it is never a silent default for real work.

Options (plan ``providers: {sim: {...}}``)::

    latency:  {distribution: fixed, ms: 50}            # or a plain number of ms, or
              {distribution: lognormal, median_ms: 300, sigma: 0.5}
    output_tokens: 60           # mean output length (exponentially distributed)
    faults:   {rate_limited: 0.1, server_error: 0.05, auth: 0.01, ...}   # rate per call
    retry_after: 1.0            # seconds, sent with injected rate_limited faults
    concurrency: 2              # calls served at once (like a local model's pool); the others
                                # queue, and their wait is reported apart from service time
    seed: 0

Without latency settings (the default: 0 ms) its calls take only the process's time: such a
run is marked untimed (``timed``: false) and claims no speedup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..cost import Usage
from ..exceptions import ErrorClass, PlanError, ProviderError
from .base import Completion, CompletionRequest

__all__ = ["SimOptions", "SimProvider"]

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


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    distribution: Literal["fixed", "lognormal"] = "fixed"
    ms: float = Field(default=0.0, ge=0)
    median_ms: float = Field(default=100.0, gt=0)
    sigma: float = Field(default=0.5, ge=0)


class SimOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency: Latency | float = Latency()
    output_tokens: int = Field(default=60, ge=0)
    retry_after: float = Field(default=0.0, ge=0)
    faults: dict[ErrorClass, float] = {}
    seed: int | None = None
    concurrency: int | None = Field(default=None, ge=1)

    @field_validator("faults")
    @classmethod
    def _rates(cls, v: dict[ErrorClass, float]) -> dict[ErrorClass, float]:
        if any(r < 0 or r > 1 for r in v.values()):
            raise ValueError("each fault rate must be between 0 and 1")
        if sum(v.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        return v


def _as_latency(spec: Latency | float) -> Latency:
    return spec if isinstance(spec, Latency) else Latency(ms=spec)


def _latency(spec: Latency | float) -> Callable[[random.Random], float]:
    spec = _as_latency(spec)
    if spec.distribution == "fixed":
        seconds = spec.ms / 1000
        return lambda rng: seconds
    mu, sigma = math.log(spec.median_ms / 1000), spec.sigma
    return lambda rng: rng.lognormvariate(mu, sigma)


class SimProvider:
    """Deterministic per (seed, task, attempt, agent): the same run gives the same answers."""

    simulated = True

    def __init__(
        self,
        model: str = "sim",
        options: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        try:
            opts = SimOptions.model_validate(dict(options or {}))
        except ValidationError as exc:
            from .._util import describe_error

            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"] if not str(p)[:1].isupper())
            raise PlanError(
                describe_error(err), field=f"providers.sim.{where}".rstrip(".")
            ) from None
        self.name = f"sim:{model}" if model and model != "sim" else "sim"
        self.seed = opts.seed if opts.seed is not None else (seed or 0)
        self._latency = _latency(opts.latency)
        latency = _as_latency(opts.latency)
        # zero latency: its calls take only the process's time, and no speedup is claimed
        self.timed = latency.distribution == "lognormal" or latency.ms > 0
        self.output_tokens = opts.output_tokens
        self.retry_after = opts.retry_after
        self.faults = list(opts.faults.items())
        self.concurrency = opts.concurrency
        self._slots: asyncio.Semaphore | None = None

    def _rng(self, req: CompletionRequest) -> random.Random:
        return random.Random(f"{self.seed}\x00{req.task_id}\x00{req.attempt_no}\x00{req.agent}")

    async def complete(self, request: CompletionRequest) -> Completion:
        """The answer; with ``concurrency``, after a free slot (the wait is ``queued``)."""
        if self.concurrency is None:
            return await self._complete(request)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with self._slots:
            queued = loop.time() - t0
            completion = await self._complete(request)
        return dataclasses.replace(completion, queued=queued)

    async def _complete(self, request: CompletionRequest) -> Completion:
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

    async def aclose(self) -> None:
        return None

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
    """A simulated answer that is valid in the request's style (so styles can be exercised)."""
    start = _TEXT.index(" ", rng.randrange(0, len(_TEXT) // 2)) + 1
    limit = 30 if req.style == "ultra_concise" else 140 if req.style == "concise" else 400
    body = _TEXT[start : start + 8 * min(n_words, limit)].rsplit(" ", 1)[0].strip() or "done"
    body = " ".join(body.split()[: limit - 6])
    who = f"{req.agent or 'agent'} ({req.role or 'agent'})"
    schema = req.json_schema
    if req.answer_format == "json" and schema and _has_shape(schema):
        return json.dumps(_instance(schema, schema, body, 0))  # a typed output: its shape
    if req.style == "json":
        return json.dumps(
            {"simulated": True, "task": req.task_id, "agent": req.agent, "summary": body}
        )
    if req.style == "yaml":
        return f"simulated: true\ntask: {req.task_id!r}\nagent: {req.agent!r}\nsummary: {body}\n"
    if req.style == "table":
        return f"| simulated | task | summary |\n|---|---|---|\n| yes | {req.task_id} | {body} |\n"
    if req.style == "html":
        return f"<section><h1>[simulated] {who}</h1><p>{body}</p></section>"
    if req.style == "markdown":
        return f"# [simulated] {who} on {req.title or req.task_id}\n\n{body}\n"
    if req.style == "tts":
        return f"Simulated answer. {body.capitalize()}."
    return f"[simulated] {who} on {req.title or req.task_id}: {body}"


# -- typed outputs: an answer in the shape of the request's JSON Schema ------------------------
_MAX_DEPTH = 6


def _has_shape(schema: Mapping[str, Any]) -> bool:
    """More than "any JSON object": properties, items, a type other than object, a $ref."""
    return any(k in schema for k in ("properties", "items", "$ref", "anyOf", "oneOf", "enum")) or (
        schema.get("type", "object") != "object"
    )


def _instance(schema: Any, root: Mapping[str, Any], text: str, depth: int) -> Any:
    """A value valid against the common part of JSON Schema (types, required properties,
    enums, consts, bounds, ``$ref`` into ``$defs``, ``anyOf``/``oneOf``/``allOf``: the
    first branch), deterministic: the sim's stand-in for a model answering in a type."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _instance(target, root, text, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    make = _BY_TYPE.get(kind)
    return make(schema, root, text, depth) if make is not None else None


def _object(schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> Any:
    props = schema.get("properties") or {}
    if not props:
        return {"simulated": True, "summary": text}
    return {k: _instance(v, root, text, depth + 1) for k, v in props.items()}


def _array(schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> Any:
    n = max(1, int(schema.get("minItems", 1)))
    if "maxItems" in schema:
        n = min(n, int(schema["maxItems"]))
    return [_instance(schema.get("items", {}), root, text, depth + 1) for _ in range(n)]


def _string(schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> Any:
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 80))
    words = " ".join(text.split()[:8]) or "simulated"
    return (words + " x" * low)[: max(low, min(high, len(words)))]


def _number(schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> Any:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    value = max(1, low + (1 if "exclusiveMinimum" in schema else 0))
    high = schema.get("maximum")
    value = min(value, high) if high is not None else value
    return int(value) if schema.get("type") == "integer" else float(value)


_BY_TYPE: dict[str, Callable[..., Any]] = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _number,
    "number": _number,
    "boolean": lambda *_: True,
}

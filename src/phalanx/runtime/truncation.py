"""Answers cut at ``max_tokens``: continued, retried with more room, or failed.

The plan's ``retry.truncation`` decides (:class:`phalanx.plan.RetryConfig`):

- ``continue`` (default): the partial answer goes back as the assistant's turn with
  :data:`CONTINUE_PROMPT`, and the continuation is appended to it, up to
  ``retry.max_continuations`` calls. A continuation is asked as plain text, without tools
  and without a structured format (a JSON schema would restart the answer, not continue
  it); the joined answer of a structured style is rendered into the style afterwards.
- ``retry``: the call is sent once more with twice the room (``max_tokens_factor``).
- ``fail``: the cut answer stands and the attempt fails as ``truncated``.

A partial answer already over its style's word limit is not continued: it goes to the
style's parser, which rejects it, and the model is re-asked with the limit.

An answer cut inside a tool call is never continued as text (its call's arguments are
incomplete and are never run): it is retried with twice the room in both modes.

Every call made here goes through the executor's own call path, so it is size-checked,
rate-limited, retried on a provider failure and charged once; each is noted first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from ..providers.base import Completion, CompletionRequest, Message
from ..providers.structured import render_text, structured_for

__all__ = ["CONTINUE_PROMPT", "recover"]

CONTINUE_PROMPT = (
    "Your answer was cut off at the length limit. Continue it exactly where it stopped: "
    "write only the rest, starting with the next character. Do not repeat anything, do "
    "not start over, add no preamble."
)

Call = Callable[[CompletionRequest], Awaitable[Completion]]
Note = Callable[..., None]  # (mode=, n=, chars=, factor=) -> the AnswerContinued event


async def recover(
    cut: Completion,
    request: CompletionRequest,
    *,
    mode: str,
    cap: int,
    call: Call,
    note: Note,
    hopeless: Callable[[str], bool] = lambda text: False,
) -> Completion:
    """The answer to use instead of ``cut`` (which stopped at ``max_tokens``): whole, or
    still cut (``stop_reason`` ``max_tokens``) when the mode or the cap gives up.

    ``hopeless``: the partial answer already breaks its style in a way more text cannot
    mend (over a word limit); it is handed back as finished, so that the style's parser
    rejects it and the model is re-asked with the limit, instead of being continued."""
    if mode == "fail" or cut.stop_reason != "max_tokens":
        return cut
    if not cut.tool_calls and hopeless(cut.text):
        return dataclasses.replace(cut, stop_reason="end")
    if mode == "retry" or cut.tool_calls:
        factor = request.max_tokens_factor * 2
        note(mode="retry", n=1, chars=len(cut.text), factor=factor)
        return await call(dataclasses.replace(request, max_tokens_factor=factor))
    return await _continue(cut, request, cap, call, note)


async def _continue(
    cut: Completion, request: CompletionRequest, cap: int, call: Call, note: Note
) -> Completion:
    parts = [cut.text]
    last = cut
    for n in range(1, cap + 1):
        partial = "".join(parts)
        note(mode="continue", n=n, chars=len(partial))
        last = await call(_continuation(request, partial))
        parts.append(last.text)
        if last.stop_reason != "max_tokens":
            break
    text = "".join(parts)
    s = structured_for(request)
    if s is not None and last.stop_reason == "end":
        text = render_text(s, text)
    return dataclasses.replace(last, text=text, tool_calls=())


def _continuation(request: CompletionRequest, partial: str) -> CompletionRequest:
    extra: dict[str, Any] = {"style": "text", "json_schema": None, "answer_format": ""}
    return dataclasses.replace(
        request,
        messages=(
            *request.messages,
            Message(role="assistant", content=partial),
            Message(role="user", content=CONTINUE_PROMPT),
        ),
        tools=(),
        **extra,
    )

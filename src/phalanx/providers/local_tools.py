"""Tool calls on the embedded model: one grammar per turn, a tool call or the final answer.

A model this small has no function calling of its own, so an agent's turn on ``local:`` is
held by a llama.cpp grammar (GBNF) to exactly one JSON object, either

- a tool call: ``{"tool": NAME, "arguments": {...}}``, the arguments following that tool's
  JSON schema (one alternative per tool), or
- the final answer: ``{"answer": VALUE}``, VALUE held to the agent's style: a bounded
  string for the prose styles (only speakable characters for ``tts``, closed elements for
  ``html``), the style's JSON schema for ``json``/``yaml``, a small table as columns and
  rows for ``table``.

So constrained decoding stays on for every style when an agent has tools. The answer is
rendered back into the style's own text (YAML, a Markdown table, JSON), and a call becomes a
:class:`~phalanx.providers.base.ToolCall` that the executor runs and journals as it does for
every provider. The system prompt gets a short list of the tools and the two shapes.

After ``max_tool_rounds`` tool turns, or when the model repeats a call it already made with
the same arguments, the turn is decoded again with the answer alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Message, ToolCall, ToolDef
from .structured import Structured, markdown_table, render, table_schema

__all__ = [
    "LOCAL_TABLE_SCHEMA",
    "Turn",
    "answer_kind",
    "render_messages",
    "tools_prompt",
    "turn_grammar",
]

# A table a tiny model finishes: three columns, one to four rows, short cells.
LOCAL_TABLE_SCHEMA = table_schema((3, 3), max_rows=4, cell_chars=32)
# the final answer of a prose style: a JSON string of at most this many characters
PROSE_CHARS = {"ultra_concise": 200, "concise": 700, "tts": 1000}
PROSE_DEFAULT_CHARS = 1500
_TTS_CHARS = r"[a-zA-Z ,.'!?;:-]"
# HTML as a JSON string: a few closed elements of plain text, no attributes, no quotes
_HTML_RULES = (
    'html-text ::= [^<>"\\\\\\x00-\\x1f]{1,240}',
    'html-li ::= "<li>" html-text "</li>"',
    'html-block ::= "<h2>" html-text "</h2>" | "<p>" html-text "</p>" '
    '| "<ul>" html-li{1,6} "</ul>"',
)


@dataclass(frozen=True, slots=True)
class Turn:
    """What a turn's grammar allows: the tools (none: the answer only) and the answer's
    kind (a style family: ``prose``, ``tts``, ``html``, ``json``, ``yaml``, ``table``),
    with the JSON schema of a ``json``/``yaml`` answer and the length of a prose one."""

    tools: tuple[ToolDef, ...]
    kind: str
    schema: Mapping[str, Any] | None = None
    chars: int = PROSE_DEFAULT_CHARS
    must_call: bool = False  # a tool call is the only choice (the first turn)

    def key(self) -> str:
        """A cache key for the grammar."""
        return json.dumps(
            [[t.name, t.parameters] for t in self.tools] + [self.kind, self.schema, self.chars],
            sort_keys=True,
            default=str,
        )


def answer_kind(style: str, answer_format: str) -> str:
    """The kind of final answer a style gets (see :class:`Turn`)."""
    if answer_format in ("json", "yaml", "table"):
        return answer_format
    if style in ("tts", "html"):
        return style
    return "prose"


# -- the grammar --------------------------------------------------------------------------


def _converter() -> Any:
    """llama.cpp's JSON-schema converter, writing a string's length bounds as a repetition
    (``char{0,700}``) rather than hundreds of nested optional rules."""
    from llama_cpp import llama_grammar

    grammar: Any = llama_grammar  # llama-cpp-python's converter is untyped

    class Converter(grammar.SchemaConverter):  # type: ignore[misc]
        def visit(self, schema: Any, name: str) -> Any:
            bounded = (
                isinstance(schema, dict)
                and schema.get("type") == "string"
                and ("minLength" in schema or "maxLength" in schema)
                and not ({"pattern", "format", "enum", "const"} & set(schema))
            )
            if not bounded:
                return super().visit(schema, name)
            char = self._add_primitive("char", grammar.PRIMITIVE_RULES["char"])
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            rule = name + "-" if name in grammar.RESERVED_NAMES else name or "root"
            times = f"{{{low},{'' if high is None else high}}}"
            return self._add_rule(rule, f'"\\"" {char}{times} "\\"" space')

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _value_rule(conv: Any, turn: Turn) -> str:
    """The rule of the answer's value."""
    if turn.kind in ("json", "yaml"):
        return str(conv.visit(dict(turn.schema or {"type": "object"}), "value"))
    if turn.kind == "table":
        return str(conv.visit(LOCAL_TABLE_SCHEMA, "value"))
    if turn.kind == "tts":
        return str(conv._add_rule("value", f'"\\"" {_TTS_CHARS}{{1,{turn.chars}}} "\\"" space'))
    if turn.kind == "html":
        for line in _HTML_RULES:
            name, _, body = line.partition(" ::= ")
            conv._add_rule(name, body)
        return str(conv._add_rule("value", '"\\"" html-block{1,6} "\\"" space'))
    return str(conv.visit({"type": "string", "minLength": 1, "maxLength": turn.chars}, "value"))


def turn_grammar(turn: Turn) -> str:
    """The GBNF of one turn: a call of one of ``turn.tools`` or the final answer."""
    conv = _converter()
    alternatives = []
    for i, tool in enumerate(turn.tools):
        call = {
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": _arguments(tool)},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        alternatives.append(conv.visit(call, f"call{i}"))
    if not (turn.must_call and alternatives):
        value = _value_rule(conv, turn)
        conv._add_rule("answer", f'"{{" space "\\"answer\\"" space ":" space {value} "}}" space')
        alternatives.append("answer")
    conv._add_rule("root", " | ".join(alternatives))
    return str(conv.format_grammar())


def _arguments(tool: ToolDef) -> dict[str, Any]:
    """A tool's argument schema as the grammar holds it: an object (an empty one when the
    tool takes none), descriptions and defaults left out."""
    schema = dict(tool.parameters) or {"type": "object", "properties": {}}
    if schema.get("type") == "object" and not schema.get("properties"):
        return {"type": "object", "properties": {}, "additionalProperties": False}
    return schema


# -- the prompt ---------------------------------------------------------------------------


def _signature(tool: ToolDef) -> str:
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    args = [p if p in required else f"{p}?" for p in props]
    return f"{tool.name}({', '.join(args)})"


def _example(tool: ToolDef) -> str:
    props = tool.parameters.get("properties") or {}
    required = list(tool.parameters.get("required") or ())
    args = {p: "..." for p in required if p in props}
    return json.dumps({"tool": tool.name, "arguments": args})


def tools_prompt(tools: Sequence[ToolDef]) -> str:
    """What the model is told about its tools and the two shapes of a turn."""
    lines = ["Tools you can call (one per reply):"]
    for t in tools:
        about = " ".join(t.description.split())
        lines.append(f"- {_signature(t)}: {about}")
    lines.append(
        "Reply with one JSON object only. To call a tool: "
        f"{_example(tools[0])}. When you know enough, give your final answer: "
        '{"answer": ...}.'
    )
    return "\n".join(lines)


FINAL_NOTE = 'Now give your final answer: {"answer": ...}.'
FIRST_NOTE = "First call a tool if you need one."


def render_messages(
    messages: Sequence[Message], turn: Turn, *, result_chars: int
) -> list[dict[str, str]]:
    """The conversation as the model's chat template takes it: the tools' prompt put first
    in the system turn, each tool call as the JSON the model wrote, each result as a user
    turn (cut to ``result_chars``); the last user turn ends with a nudge to call a tool (the
    first turn) or to answer (no tool left). A tiny model follows what it read last."""
    out: list[dict[str, str]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            call = m.tool_calls[0]
            text = json.dumps({"tool": call.name, "arguments": call.arguments})
            out.append({"role": "assistant", "content": text})
        elif m.role == "tool":
            content = m.content
            if len(content) > result_chars:
                more = len(content) - result_chars
                content = content[:result_chars] + f"\n[... {more} more characters not shown]"
            out.append({"role": "user", "content": f"Result of {m.name}:\n{content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    if turn.tools:
        system = tools_prompt(turn.tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": system + "\n" + out[0]["content"]}
        else:
            out.insert(0, {"role": "system", "content": system})
    note = FINAL_NOTE if not turn.tools else FIRST_NOTE if turn.must_call else ""
    if note and out and out[-1]["role"] == "user":
        out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + note}
    return out


# -- reading a turn back ------------------------------------------------------------------


def read_turn(text: str, turn: Turn, call_id: str) -> tuple[str, ToolCall | None]:
    """A turn's text as (the answer in the style's own text, None) or ("", the call). Text
    that is not the JSON the grammar holds (a cut answer) is returned as it is."""
    try:
        value = json.loads(text, strict=False)
    except (json.JSONDecodeError, ValueError):
        return text, None
    if not isinstance(value, dict):
        return text, None
    if "tool" in value:
        name = str(value["tool"])
        return "", ToolCall(id=call_id, name=name, arguments=value.get("arguments") or {})
    if "answer" not in value:
        return text, None
    return _answer_text(value["answer"], turn.kind), None


_CUT_CALL = re.compile(r'\s*\{\s*"tool"\s*:\s*"(?P<name>[^"]*)"')
_CUT_ANSWER = re.compile(r'\s*\{\s*"answer"\s*:\s*"(?P<rest>.*)', re.DOTALL)


def read_cut_turn(text: str, call_id: str) -> tuple[str, ToolCall | None]:
    """A turn cut at ``max_tokens``: a call (its arguments incomplete: it is never run, and
    the executor retries the turn with more room), or the prose of a cut answer without its
    JSON wrapping, so that a continuation continues the prose; anything else as it is."""
    call = _CUT_CALL.match(text)
    if call:
        return "", ToolCall(id=call_id, name=call["name"], arguments={})
    answer = _CUT_ANSWER.match(text)
    if answer is None:
        return text, None
    rest = answer["rest"].removesuffix("\\")
    try:
        return str(json.loads(f'"{rest}"', strict=False)), None
    except (json.JSONDecodeError, ValueError):
        return rest, None


def _answer_text(answer: Any, kind: str) -> str:
    if kind in ("prose", "tts", "html"):
        return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    if kind == "table":
        return markdown_table(answer) or json.dumps(answer, ensure_ascii=False)
    return render(Structured(form=kind, schema=None), answer)


def same_call(call: ToolCall, messages: Sequence[Message]) -> bool:
    """True when ``call`` was already made in this conversation with the same arguments."""
    key = json.dumps(call.arguments, sort_keys=True, default=str)
    return any(
        c.name == call.name and json.dumps(c.arguments, sort_keys=True, default=str) == key
        for m in messages
        for c in m.tool_calls
    )

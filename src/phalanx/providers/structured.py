"""Structured answers on the HTTP providers: the JSON a model is held to, and back.

A request whose style is structured (:attr:`CompletionRequest.answer_format`: ``json``,
``yaml`` or ``table``) is sent with a JSON schema the provider enforces (OpenAI's
``response_format``, a llama.cpp server's grammar, Anthropic's forced tool or native
structured output). The JSON that comes back is rendered into the style's own text here,
so the agent's parser reads what it always reads:

- ``json``: the style's schema (none: any JSON object); the answer stays JSON.
- ``yaml``: the style's schema (none: any JSON object), rendered as a YAML document.
- ``table``: :data:`TABLE_SCHEMA` (columns and rows of strings), rendered as a Markdown
  table.

The prose styles (text, concise, markdown, html, tts) have no schema and are prompted only.
A schema whose root is not an object (OpenAI and Anthropic want one) is wrapped as
``{"value": SCHEMA}`` and unwrapped on the way back. An answer that is not JSON (a server
that ignored the format) is left as it is, for the style's parser to judge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .base import CompletionRequest

__all__ = [
    "ANSWER_FORMATS",
    "TABLE_SCHEMA",
    "Structured",
    "markdown_table",
    "render",
    "render_text",
    "strict_ok",
    "structured_for",
]

ANSWER_FORMATS = frozenset({"json", "yaml", "table"})
WRAP_KEY = "value"


def table_schema(columns: tuple[int, int], max_rows: int, cell_chars: int) -> dict[str, Any]:
    """A ``{columns, rows}`` table's JSON schema: ``columns`` (least, most) columns, one to
    ``max_rows`` rows, cells of one to ``cell_chars`` characters."""
    cell = {"type": "string", "minLength": 1, "maxLength": cell_chars}
    width = {"minItems": columns[0], "maxItems": columns[1]}
    return {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": cell, **width},
            "rows": {
                "type": "array",
                "items": {"type": "array", "items": cell, **width},
                "minItems": 1,
                "maxItems": max_rows,
            },
        },
        "required": ["columns", "rows"],
        "additionalProperties": False,
    }


# bounded, so that even a tiny model neither answers an empty table nor loops to max_tokens
TABLE_SCHEMA = table_schema((2, 6), max_rows=30, cell_chars=120)


@dataclass(frozen=True, kw_only=True, slots=True)
class Structured:
    """What a request asks of a provider with structured output.

    ``schema``: an object-rooted JSON schema, or None for any JSON object (JSON mode);
    ``wrapped``: the style's own schema sits under ``"value"``; ``form``: the style family
    the JSON is rendered into."""

    form: str
    schema: dict[str, Any] | None
    wrapped: bool = False


def structured_for(request: CompletionRequest) -> Structured | None:
    """The structured output ``request`` asks for, or None (a prose style).

    Requests built without ``answer_format`` (the router's, the planner's) are read from
    their built-in style name and their schema."""
    form = request.answer_format or (request.style if request.style in ANSWER_FORMATS else "")
    if not form and request.json_schema is not None:
        form = "json"
    if form not in ANSWER_FORMATS:
        return None
    if form == "table":
        return Structured(form=form, schema=TABLE_SCHEMA)
    schema = dict(request.json_schema) if request.json_schema is not None else None
    if schema is not None and schema.get("type") != "object":
        wrapped = {
            "type": "object",
            "properties": {WRAP_KEY: schema},
            "required": [WRAP_KEY],
            "additionalProperties": False,
        }
        return Structured(form=form, schema=wrapped, wrapped=True)
    return Structured(form=form, schema=schema)


# keywords OpenAI's strict mode does not take (it takes pattern, format, the number bounds,
# minItems and maxItems): a schema that uses one is sent with strict false
_NOT_STRICT = frozenset(
    {
        "minLength",
        "maxLength",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "contains",
        "not",
        "if",
        "then",
        "else",
    }
)


def strict_ok(schema: Any) -> bool:
    """True when OpenAI's ``strict`` mode accepts ``schema``: every object closes its
    properties (``additionalProperties: false``) and requires all of them, and no keyword
    outside strict mode's set is used."""
    if isinstance(schema, list):
        return all(strict_ok(s) for s in schema)
    if not isinstance(schema, Mapping):
        return True
    if _NOT_STRICT & set(schema):
        return False
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(props):
            return False
    return all(strict_ok(v) for k, v in schema.items() if k not in ("enum", "const", "default"))


def render(s: Structured, value: Any) -> str:
    """A JSON value the model gave, as the text of the style ``s.form``."""
    if s.wrapped and isinstance(value, Mapping) and WRAP_KEY in value:
        value = value[WRAP_KEY]
    if s.form == "yaml" and isinstance(value, dict | list):
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
    if s.form == "table":
        table = markdown_table(value)
        if table is not None:
            return table
    return json.dumps(value, ensure_ascii=False, indent=2)


def render_text(s: Structured, text: str) -> str:
    """A provider's answer text rendered into the style: left as it is when it is not JSON,
    or when it is JSON already in its final form (the ``json`` style, not wrapped). A
    grammar-held answer may have raw line breaks inside its strings (not JSON to a strict
    reader): it is read leniently and written out as valid JSON."""
    try:
        value = json.loads(text, strict=False)
    except (json.JSONDecodeError, ValueError):
        return text
    if s.form == "json" and not s.wrapped:
        return text if _strict_json(text) else json.dumps(value, ensure_ascii=False, indent=2)
    return render(s, value)


def _strict_json(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False
    return True


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.replace("|", "\\|").split()) or "-"


def markdown_table(value: Any) -> str | None:
    """``{"columns": [...], "rows": [[...], ...]}`` as a Markdown table (every row as wide
    as the header), or None when ``value`` has no columns."""
    if not isinstance(value, Mapping):
        return None
    columns: list[str] = []
    for c in value.get("columns") or ():
        name, n = _cell(c), 1
        while name in columns:  # a Markdown table's column names are unique
            n += 1
            name = f"{_cell(c)} ({n})"
        columns.append(name)
    if not columns:
        return None
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in value.get("rows") or ():
        if isinstance(row, Mapping):
            cells = [row.get(c, "") if isinstance(c, str) else "" for c in value["columns"]]
        elif isinstance(row, list):
            cells = list(row)
        else:
            cells = [row]
        cells = (cells + [""] * len(columns))[: len(columns)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"

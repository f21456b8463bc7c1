"""Output styles: how an agent is told to answer, and how its answer is checked.

A :class:`Style` is an instruction fragment for the prompt, the file extension its outputs
are saved with, and a parser that turns the raw answer into a value or raises
:class:`StyleError` naming where the first problem is (``$``, ``$.items[2].name``,
``line 3``, ``row 2``). An invalid answer is re-asked with :func:`repair_prompt`; after
``N`` re-asks the task fails as ``output_invalid`` with the error's path.

Built-in styles: ``yaml``, ``json`` (optionally with a JSON Schema), ``ultra_concise``,
``concise``, ``markdown``, ``table`` (a Markdown table), ``html``, ``text`` and ``tts``
(speech-ready text; :func:`render_tts` turns it into a WAV file when ``espeak-ng`` is
installed). Users add their own with :func:`register_style`, or from plan data with
:func:`style_from_config`.

Parsers tolerate surrounding whitespace and one surrounding Markdown code fence. YAML is
read with ``yaml.safe_load`` only: a ``!!python/...`` tag is an error and executes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from ..exceptions import StyleError, TTSRenderError, UsageError
from .speech import (
    MARKUP_CHARS,
    NUMBER,
    SYMBOL_WORDS,
    TTS_UNAVAILABLE_NOTE,
    URL,
    render_tts,
    speakable,
)

__all__ = [
    "BUILTIN_STYLES",
    "CONCISE_MAX_WORDS",
    "DEFAULT_MAX_REASKS",
    "STYLES",
    "TTS_UNAVAILABLE_NOTE",
    "ULTRA_CONCISE_MAX_WORDS",
    "Style",
    "StyleError",
    "Styles",
    "TTSRenderError",
    "extension",
    "get_style",
    "instruction",
    "parse_output",
    "register_style",
    "render_tts",
    "repair_prompt",
    "speakable",
    "style_from_config",
    "style_names",
    "typed_style",
    "typed_style_name",
    "typed_value",
]

CONCISE_MAX_WORDS = 150
ULTRA_CONCISE_MAX_WORDS = 40
DEFAULT_MAX_REASKS = 2  # re-asks after the first invalid answer, before ``output_invalid``


@dataclass(frozen=True, kw_only=True)
class Style:
    """One output style. ``parse`` returns the parsed value or raises :class:`StyleError`.

    ``structured`` styles (yaml, json) are the ones a local model should answer with
    constrained decoding; ``json_schema``, when set, is checked after parsing.
    ``answer_format`` (``json``, ``yaml``, ``table``; "" for prose) is how a provider with
    structured output holds the answer to a JSON schema and renders it back into this style
    (``phalanx.providers.structured``).
    """

    name: str
    instruction: str
    extension: str
    parse: Callable[[str], Any]
    structured: bool = False
    json_schema: Mapping[str, Any] | None = None
    answer_format: str = ""
    max_words: int | None = None  # the parser's word limit, if it has one

    def over_words(self, text: str) -> bool:
        """True when ``text`` (even unfinished) already has more words than the limit: no
        continuation can make it valid."""
        return self.max_words is not None and _word_count(text) > self.max_words

    def validate(self, text: str) -> Any:
        """Parse ``text`` and check it against ``json_schema`` when there is one."""
        value = self.parse(text)
        if self.json_schema is not None:
            _check_schema(value, self.json_schema)
        return value

    def with_schema(self, schema: Mapping[str, Any]) -> Style:
        """This style with ``schema`` checked after parsing and quoted in the instruction."""
        _ensure_valid_schema(schema, where=f"style {self.name!r}")
        text = f"{self.instruction} {_schema_sentence(schema)}"
        return dataclasses.replace(self, instruction=text, json_schema=schema)


# --- helpers shared by the parsers -------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+-]*)[ \t]*\n(?P<body>.*?)\n?[ \t]*```", re.DOTALL)


def _unfence(text: str, langs: frozenset[str] | None) -> tuple[str, int]:
    """The answer without surrounding whitespace and one surrounding code fence whose
    language is in ``langs`` (``""`` = no language; ``None`` = any), and how many lines
    were cut above it."""
    start = len(text) - len(text.lstrip())
    body = text.strip()
    m = _FENCE.fullmatch(body)
    if m and (langs is None or m.group("lang").lower() in langs):
        start += m.start("body")
        body = m.group("body").strip("\n")
    return body, text.count("\n", 0, start)


def _require_text(body: str) -> None:
    if not body.strip():
        raise StyleError("$", "the answer is empty")


def _word_count(text: str) -> int:
    return len(text.split())


def _check_words(text: str, limit: int) -> None:
    n = _word_count(text)
    if n > limit:
        raise StyleError("$", f"the answer has {n} words; the limit is {limit}")


_PLAIN = frozenset({"", "text", "txt", "plain", "plaintext"})


# --- yaml ---------------------------------------------------------------------------------


def _yaml_error(err: yaml.YAMLError, offset: int) -> StyleError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    path = f"line {mark.line + 1 + offset}" if mark is not None else "$"
    problem = str(getattr(err, "problem", None) or err)
    context = getattr(err, "context", None)
    if context and "single document" in str(context):
        return StyleError(path, "found a second YAML document; answer with exactly one")
    if isinstance(err, ConstructorError) and "tag" in problem:
        problem = f"tags such as !!python are not allowed ({problem})"
    return StyleError(path, f"{problem} ({context})" if context else problem)


def parse_yaml(text: str) -> Any:
    """One YAML document (a mapping or a list), read with ``yaml.safe_load`` only."""
    body, offset = _unfence(text, frozenset({"", "yaml", "yml"}))
    try:
        value = yaml.safe_load(body)
    except yaml.YAMLError as err:
        raise _yaml_error(err, offset) from None
    if value is None or value == {} or value == []:  # an empty mapping answers nothing
        raise StyleError("$", "the YAML document is empty")
    if not isinstance(value, dict | list):
        kind = type(value).__name__
        raise StyleError("$", f"expected a YAML mapping or list, got a single {kind} value")
    return value


# --- json ---------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """One JSON value (``NaN`` and ``Infinity`` are not JSON)."""
    body, offset = _unfence(text, frozenset({"", "json"}))
    _require_text(body)
    try:
        return json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise StyleError(f"line {err.lineno + offset}", f"{err.msg} (column {err.colno})") from None
    except ValueError as err:
        raise StyleError("$", str(err)) from None


def _ensure_valid_schema(schema: Mapping[str, Any], *, where: str) -> None:
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(dict(schema))
    except exceptions.SchemaError as err:
        raise UsageError(f"{where}: the JSON Schema is invalid: {err.message}") from None


def _check_schema(value: Any, schema: Mapping[str, Any]) -> None:
    """Raise a :class:`StyleError` at the JSON path of the most relevant schema error."""
    from jsonschema import exceptions, validators

    _ensure_valid_schema(schema, where="output schema")
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    error = exceptions.best_match(cls(schema).iter_errors(value))
    if error is not None:
        raise StyleError(error.json_path, error.message)


def _schema_sentence(schema: Mapping[str, Any]) -> str:
    return f"The answer must validate against this JSON Schema: {json.dumps(schema)}"


# --- table --------------------------------------------------------------------------------

_SEPARATOR_CELL = re.compile(r":?-+:?")


def _cells(line: str) -> list[str]:
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _table_rows(body: str, offset: int) -> list[list[str]]:
    rows = []
    for i, line in enumerate(body.split("\n"), start=1 + offset):
        if "|" not in line:
            what = "a blank line" if not line.strip() else "a line that is not a table row"
            raise StyleError(f"line {i}", f"{what} inside the table; answer with the table only")
        rows.append(_cells(line))
    return rows


def _check_header(header: list[str], separator: list[str] | None, offset: int) -> None:
    if any(not h for h in header):
        raise StyleError(f"line {1 + offset}", "every header cell needs a column name")
    if len(set(header)) != len(header):
        raise StyleError(f"line {1 + offset}", "column names must be unique")
    if separator is None or not all(_SEPARATOR_CELL.fullmatch(c) for c in separator):
        raise StyleError(f"line {2 + offset}", "the second line must be a separator like |---|")
    if len(separator) != len(header):
        n, m = len(separator), len(header)
        raise StyleError(f"line {2 + offset}", f"the separator has {n} cells; the header has {m}")


def parse_table(text: str) -> list[dict[str, str]]:
    """A Markdown table -> one dict per data row (column name -> cell). Data rows are
    numbered from 1 in errors (``row 2`` is the second row under the separator)."""
    body, offset = _unfence(text, frozenset({"", "markdown", "md"}))
    _require_text(body)
    rows = _table_rows(body, offset)
    header = rows[0]
    _check_header(header, rows[1] if len(rows) > 1 else None, offset)
    if len(rows) < 3:
        raise StyleError("row 1", "the table has no data rows")
    for n, row in enumerate(rows[2:], start=1):
        if len(row) != len(header):
            raise StyleError(f"row {n}", f"has {len(row)} cells; the header has {len(header)}")
    return [dict(zip(header, row, strict=True)) for row in rows[2:]]


# --- html ---------------------------------------------------------------------------------

# fmt: off
VOID_ELEMENTS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr",
})
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
    "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})
# fmt: on
_HIDDEN = frozenset({"script", "style", "template"})


class _HTMLChecker(HTMLParser):
    """Tracks open tags with their lines; records the first nesting error."""

    def __init__(self, offset: int) -> None:
        super().__init__(convert_charrefs=True)
        self.line_offset = offset
        self.stack: list[tuple[str, int]] = []
        self.elements = 0
        self.error: StyleError | None = None
        self.parts: list[str] = []

    def _line(self) -> int:
        return self.getpos()[0] + self.line_offset

    def _fail(self, line: int, message: str) -> None:
        if self.error is None:
            self.error = StyleError(f"line {line}", message)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag not in VOID_ELEMENTS:
            self.stack.append((tag, self._line()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements += 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS:
            return
        if tag in _BLOCK:
            self.parts.append("\n")
        if not self.stack:
            self._fail(self._line(), f"</{tag}> closes a tag that was never opened")
        elif self.stack[-1][0] != tag:
            want, opened = self.stack[-1]
            self._fail(self._line(), f"found </{tag}>, expected </{want}> (opened line {opened})")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not any(tag in _HIDDEN for tag, _ in self.stack):
            self.parts.append(data)

    def visible_text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def parse_html(text: str) -> str:
    """An HTML fragment with at least one element, every non-void tag closed in order;
    the parsed value is its visible text."""
    body, offset = _unfence(text, frozenset({"", "html"}))
    _require_text(body)
    checker = _HTMLChecker(offset)
    checker.feed(body)
    checker.close()
    if checker.error is None and checker.stack:
        tag, line = checker.stack[-1]
        checker.error = StyleError(f"line {line}", f"<{tag}> is never closed")
    if checker.error is not None:
        raise checker.error
    if checker.elements == 0:
        raise StyleError("$", "no HTML element found; answer with HTML markup")
    return checker.visible_text()


# --- prose styles -------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_CODE_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _headings(text: str) -> list[str]:
    found, in_code = [], False
    for line in text.splitlines():
        if _CODE_FENCE.match(line):
            in_code = not in_code
        elif not in_code and (m := _ATX_HEADING.match(line)):
            found.append(m.group(1).strip())
    return found


def parse_markdown(text: str) -> dict[str, Any]:
    """Non-empty Markdown -> ``{"headings": [...], "text": ...}``."""
    body, _ = _unfence(text, frozenset({"markdown", "md"}))
    _require_text(body)
    return {"headings": _headings(body), "text": body}


def parse_text(text: str) -> str:
    body, _ = _unfence(text, _PLAIN)
    _require_text(body)
    return body


def parse_concise(text: str) -> str:
    body = parse_text(text)
    _check_words(body, CONCISE_MAX_WORDS)
    return body


_PREAMBLE = re.compile(
    r"(sure|certainly|of course|absolutely|great question|here is|here's|here are"
    r"|i'd be happy|i would be happy|as an ai)\b",
    re.IGNORECASE,
)


def parse_ultra_concise(text: str) -> str:
    body = parse_text(text)
    m = _PREAMBLE.match(body)
    if m:
        raise StyleError("$", f'starts with the preamble "{m.group(0)}"; give the answer only')
    _check_words(body, ULTRA_CONCISE_MAX_WORDS)
    return body


# --- tts ----------------------------------------------------------------------------------

_TTS_PROBLEMS: tuple[tuple[re.Pattern[str], Callable[[str], str]], ...] = (
    (URL, lambda s: f'URL "{s}" cannot be read aloud; describe the link in words'),
    (
        re.compile("[" + re.escape(MARKUP_CHARS) + "]"),
        lambda s: f'markup character "{s}" cannot be read aloud; use plain sentences',
    ),
    (NUMBER, lambda s: f'number "{s}" must be spelled out ("{speakable(s)}")'),
    (
        re.compile("[" + re.escape("".join(SYMBOL_WORDS)) + "]"),
        lambda s: f'symbol "{s}" must be written as a word ("{SYMBOL_WORDS[s] or "omit it"}")',
    ),
)


def _tts_problems(body: str) -> Iterator[tuple[int, str]]:
    for pattern, describe in _TTS_PROBLEMS:
        m = pattern.search(body)
        if m:
            yield m.start(), describe(m.group(0))


def parse_tts(text: str) -> str:
    """Speech-ready text: no markup, no URLs, no digits, no symbols."""
    body, offset = _unfence(text, _PLAIN)
    _require_text(body)
    first = min(_tts_problems(body), default=None)
    if first is not None:
        pos, message = first
        raise StyleError(f"line {body.count(chr(10), 0, pos) + 1 + offset}", message)
    return body


# fmt: off
# --- the registry -------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _builtin(name: str, text: str, ext: str, parse: Callable[[str], Any], **kw: Any) -> Style:
    return Style(name=name, instruction=text, extension=ext, parse=parse, **kw)


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        _builtin("text", "Answer in plain prose.", ".txt", parse_text),
        _builtin(
            "concise",
            f"Answer concisely in at most {CONCISE_MAX_WORDS} words: "
            "only what is needed, no preamble.",
            ".md",
            parse_concise,
            max_words=CONCISE_MAX_WORDS,
        ),
        _builtin(
            "ultra_concise",
            f"Answer in as few words as possible (at most {ULTRA_CONCISE_MAX_WORDS}): "
            'no preamble such as "Sure" or "Here is", no filler.',
            ".md",
            parse_ultra_concise,
            max_words=ULTRA_CONCISE_MAX_WORDS,
        ),
        _builtin("markdown", "Answer in Markdown.", ".md", parse_markdown),
        _builtin(
            "yaml",
            "Answer with exactly one YAML document (a mapping or a list) and nothing else: "
            "no prose around it, no tags such as !!python.",
            ".yaml",
            parse_yaml,
            structured=True,
            answer_format="yaml",
        ),
        _builtin(
            "json",
            "Answer with exactly one JSON value and nothing else: no prose, no comments.",
            ".json",
            parse_json,
            structured=True,
            answer_format="json",
        ),
        _builtin(
            "table",
            "Answer with one Markdown table and nothing else: a header row, a separator row "
            "(| --- | --- |), then the data rows; every row has as many cells as the header.",
            ".md",
            parse_table,
            answer_format="table",
        ),
        _builtin(
            "html",
            "Answer with an HTML fragment and nothing else; close every tag you open "
            "(void elements such as <br> excepted).",
            ".html",
            parse_html,
        ),
        _builtin(
            "tts",
            "Answer as text to be read aloud: plain sentences only, no markup (no *, #, "
            "backticks, tables, links or HTML), no URLs; spell out every number and symbol "
            '("forty-two percent", not "42%").',
            ".txt",
            parse_tts,
        ),
    )
}
BUILTIN_STYLES: frozenset[str] = frozenset(STYLES)
_BUILTINS: dict[str, Style] = dict(STYLES)  # as shipped, whatever is registered later


def register_style(style: Style, *, replace: bool = False) -> Style:
    """Add a user style (or, with ``replace=True``, override one); returns it."""
    if not _NAME.fullmatch(style.name):
        raise UsageError(f"style name {style.name!r} must be letters, digits, '_' or '-'")
    if style.name in STYLES and not replace:
        raise UsageError(
            f"style {style.name!r} is already registered; pass replace=True to override it"
        )
    STYLES[style.name] = style
    return style


def style_names() -> list[str]:
    return sorted(STYLES)


def get_style(name: str, styles: Mapping[str, Style] | None = None) -> Style:
    """The style ``name`` of ``styles`` (a run's :class:`Styles`; default: this process's
    registry). An unknown name is a ``UsageError`` listing the known ones."""
    known = STYLES if styles is None else styles
    try:
        return known[name]
    except KeyError:
        listed = ", ".join(sorted(known))
        raise UsageError(f"unknown output style {name!r}; known styles: {listed}") from None


def instruction(style: str, styles: Mapping[str, Style] | None = None) -> str:
    """The prompt fragment for ``style`` ("" for an unknown style)."""
    found = (STYLES if styles is None else styles).get(style)
    return found.instruction if found else ""


def extension(style: str, styles: Mapping[str, Style] | None = None) -> str:
    """The file extension for ``style``'s outputs (".txt" for an unknown style)."""
    found = (STYLES if styles is None else styles).get(style)
    return found.extension if found else ".txt"


def parse_output(
    name: str,
    text: str,
    *,
    schema: Mapping[str, Any] | None = None,
    styles: Mapping[str, Style] | None = None,
) -> Any:
    """Parse ``text`` in style ``name``; check it against ``schema`` (or the style's own
    schema). Raises :class:`StyleError` at the first problem, ``UsageError`` for an unknown
    style or an invalid schema."""
    style = get_style(name, styles)
    if schema is not None:
        style = dataclasses.replace(style, json_schema=schema)
    return style.validate(text)


def repair_prompt(
    name: str,
    error: StyleError,
    *,
    schema: Mapping[str, Any] | None = None,
    styles: Mapping[str, Style] | None = None,
) -> str:
    """The re-ask message after an invalid answer: what was wrong, where, and how to answer
    (quoting ``schema`` when the answer was checked against one given per task)."""
    style = get_style(name, styles)
    text = (
        f"Your previous answer is not valid {name} output. "
        f"The first problem is at {error.path}: {error.message}. "
        f"Answer again with the whole answer, fixed. {style.instruction}"
    )
    return f"{text} {_schema_sentence(schema)}" if schema is not None else text


class Styles(Mapping[str, Style]):
    """One run's styles: the built-ins, those registered in this process, and the plan's
    own (which win over both). A run reads its styles here, so running a plan changes
    nothing process-wide and two runs with different styles of one name do not meet."""

    def __init__(self, own: Iterable[Style] = ()) -> None:
        self._styles = {**STYLES, **{s.name: s for s in own}}

    def __getitem__(self, name: str) -> Style:
        return self._styles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._styles)

    def __len__(self) -> int:
        return len(self._styles)

    def custom(self) -> dict[str, Style]:
        """The styles that are not the shipped built-ins (what a remote host is sent)."""
        return {n: s for n, s in self._styles.items() if _BUILTINS.get(n) is not s}


# --- styles from plan data ----------------------------------------------------------------

_CONFIG_KEYS = frozenset({"instruction", "extension", "base", "schema", "max_words", "regex"})


_KINDS: dict[type, str] = {str: "a string", int: "a whole number", Mapping: "a mapping"}


def _config_value(config: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = config.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise UsageError(f"{where}: {key} must be {_KINDS[kind]}, got {value!r}")
    return value


def _config_checks(config: Mapping[str, Any], where: str) -> tuple[int | None, str | None]:
    max_words = _config_value(config, "max_words", int, where)
    if max_words is not None and max_words < 1:
        raise UsageError(f"{where}: max_words must be at least 1, got {max_words}")
    regex = _config_value(config, "regex", str, where)
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as err:
            raise UsageError(f"{where}: regex does not compile: {err}") from None
    return max_words, regex


def _extra_checks(
    base: Callable[[str], Any], max_words: int | None, regex: str | None
) -> Callable[[str], Any]:
    if max_words is None and regex is None:
        return base
    pattern = re.compile(regex, re.DOTALL) if regex is not None else None

    def parse(text: str) -> Any:
        value = base(text)
        body, _ = _unfence(text, None)
        if max_words is not None:
            _check_words(body, max_words)
        if pattern is not None and not pattern.fullmatch(body):
            raise StyleError("$", f"the answer does not match the pattern {pattern.pattern}")
        return value

    return parse


def style_from_config(name: str, config: Mapping[str, Any]) -> Style:
    """Build a style from plan data: ``instruction``, ``extension``, ``base`` (a registered
    style whose parser is reused; default ``text``), ``schema`` (a JSON Schema checked after
    parsing), ``max_words`` and ``regex`` (checked on the answer without surrounding
    whitespace and code fence; the regex must match all of it). Does not register it.
    Bad config raises ``UsageError`` naming the style and the key."""
    where = f"style {name!r}"
    if not _NAME.fullmatch(name):
        raise UsageError(f"{where}: a style name is letters, digits, '_' or '-'")
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_CONFIG_KEYS))
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}")
    base_name = _config_value(config, "base", str, where) or "text"
    if base_name not in STYLES:
        raise UsageError(
            f"{where}: unknown base {base_name!r}; known styles: " + ", ".join(style_names())
        )
    base = STYLES[base_name]
    ext = _config_value(config, "extension", str, where) or base.extension
    if not re.fullmatch(r"\.[A-Za-z0-9]+", ext):
        raise UsageError(f"{where}: extension must look like '.txt', got {ext!r}")
    text = _config_value(config, "instruction", str, where) or base.instruction
    max_words, regex = _config_checks(config, where)
    style = Style(
        name=name,
        instruction=text,
        extension=ext,
        parse=_extra_checks(base.parse, max_words, regex),
        structured=base.structured,
        json_schema=base.json_schema,
        answer_format=base.answer_format,
        max_words=max_words if max_words is not None else base.max_words,
    )
    schema = _config_value(config, "schema", Mapping, where)
    return style.with_schema(schema) if schema is not None else style


# --- typed outputs: a pydantic model or a JSON Schema as the answer's type ----------------


def _is_model(output_type: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(output_type, type) and issubclass(output_type, BaseModel)


def typed_style_name(output_type: Any) -> str:
    """The style name of a typed output: ``json:Model`` for a pydantic model class,
    ``json:TITLE-HASH`` (``json:schema-HASH`` untitled) for a JSON Schema."""
    if _is_model(output_type):
        return f"json:{output_type.__qualname__}"
    if isinstance(output_type, Mapping):
        import hashlib

        text = json.dumps(output_type, sort_keys=True, default=str)
        title = re.sub(r"[^A-Za-z0-9_-]", "", str(output_type.get("title") or "schema"))
        return f"json:{title or 'schema'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    raise UsageError(
        f"output_type must be a pydantic model class or a JSON Schema dict, got {output_type!r}"
    )


@dataclass(frozen=True, kw_only=True)
class TypedStyle(Style):
    """JSON that a pydantic model validates: its schema in the instruction (and for the
    providers' constrained decoding), the answer checked by the model itself; the parsed
    value is the validated data as JSON (defaults filled in), what the journal keeps."""

    model: Any = None

    def validate(self, text: str) -> Any:
        from pydantic import ValidationError

        value = parse_json(text)
        try:
            return self.model.model_validate(value).model_dump(mode="json")
        except ValidationError as err:
            first = err.errors()[0]
            raise StyleError(_json_path(first["loc"]), first["msg"]) from None


def _json_path(loc: Iterable[Any]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def typed_style(output_type: Any) -> Style:
    """The style of a typed output (see :func:`typed_style_name`): a :class:`TypedStyle`
    for a pydantic model class, the ``json`` style with the schema for a JSON Schema."""
    name = typed_style_name(output_type)
    base = _BUILTINS["json"]
    if isinstance(output_type, Mapping):
        return dataclasses.replace(base.with_schema(output_type), name=name)
    schema = output_type.model_json_schema()
    return TypedStyle(
        name=name,
        instruction=f"{base.instruction} {_schema_sentence(schema)}",
        extension=base.extension,
        parse=base.parse,
        structured=True,
        answer_format=base.answer_format,  # "json": providers constrain decoding to it
        json_schema=schema,
        model=output_type,
    )


def typed_value(output_type: Any, parsed: Any) -> Any:
    """A typed answer as the caller wants it: an instance of a pydantic model class (built
    from the parsed JSON), the parsed JSON itself for a JSON Schema."""
    return output_type.model_validate(parsed) if _is_model(output_type) else parsed

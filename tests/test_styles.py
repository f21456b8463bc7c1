"""Output styles: every built-in style parses a valid answer, names the first problem of an
invalid one (so it can be re-asked), and never executes what it reads."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.agents import speech, styles
from phalanx.agents.styles import (
    CONCISE_MAX_WORDS,
    STYLES,
    TTS_UNAVAILABLE_NOTE,
    ULTRA_CONCISE_MAX_WORDS,
    Style,
    StyleError,
    TTSRenderError,
    extension,
    get_style,
    instruction,
    parse_output,
    register_style,
    render_tts,
    repair_prompt,
    speakable,
    style_from_config,
    style_names,
)
from phalanx.exceptions import UsageError

BUILTIN = ["concise", "html", "json", "markdown", "table", "text", "tts", "ultra_concise", "yaml"]


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved = dict(STYLES)
    yield
    STYLES.clear()
    STYLES.update(saved)


def error_of(style: str, text: str, **kw: Any) -> StyleError:
    with pytest.raises(StyleError) as info:
        parse_output(style, text, **kw)
    return info.value


# --- the registry and the old table's functions -------------------------------------------


def test_every_builtin_style_is_registered() -> None:
    assert style_names() == BUILTIN
    for name in BUILTIN:
        style = get_style(name)
        assert isinstance(style, Style) and style.name == name
        assert instruction(name) == style.instruction != ""
        assert extension(name) == style.extension
    assert {n for n in BUILTIN if get_style(n).structured} == {"json", "yaml"}


def test_extensions_and_unknown_styles_keep_the_old_defaults() -> None:
    assert [extension(n) for n in ("yaml", "json", "html", "table", "text", "tts")] == [
        ".yaml",
        ".json",
        ".html",
        ".md",
        ".txt",
        ".txt",
    ]
    assert extension("no-such-style") == ".txt"
    assert instruction("no-such-style") == ""


def test_unknown_style_is_a_one_line_usage_error_listing_known_styles() -> None:
    with pytest.raises(UsageError) as info:
        get_style("xml")
    message = str(info.value)
    assert "\n" not in message
    assert "'xml'" in message and "json" in message and "tts" in message
    with pytest.raises(UsageError):
        parse_output("xml", "<a/>")


def test_word_limits_are_in_the_instructions() -> None:
    assert str(CONCISE_MAX_WORDS) in instruction("concise")
    assert str(ULTRA_CONCISE_MAX_WORDS) in instruction("ultra_concise")


def test_style_error_is_one_line_path_then_message() -> None:
    err = StyleError("$.items[2].name", "expected a string,\n got 3")
    assert str(err) == "$.items[2].name: expected a string, got 3"
    assert err.path == "$.items[2].name"
    assert isinstance(err, ValueError)


# --- valid answers ------------------------------------------------------------------------

VALID: list[tuple[str, str, Any]] = [
    ("yaml", "name: phalanx\nagents: 3\n", {"name": "phalanx", "agents": 3}),
    ("yaml", "- a\n- b\n", ["a", "b"]),
    ("yaml", '{"a": [1, 2]}', {"a": [1, 2]}),  # JSON is YAML (local models answer so)
    ("json", '{"a": [1, 2, {"b": null}]}', {"a": [1, 2, {"b": None}]}),
    ("json", "[1, 2]", [1, 2]),
    ("json", '"just a string"', "just a string"),
    (
        "table",
        "| name | role |\n| --- | :---: |\n| ada | lead |\n| bob | dev |",
        [{"name": "ada", "role": "lead"}, {"name": "bob", "role": "dev"}],
    ),
    ("table", "name | note\n---|---\nx | a \\| b", [{"name": "x", "note": "a | b"}]),
    ("table", "| a | b |\n|---|---|\n|  | 2 |", [{"a": "", "b": "2"}]),
    ("html", "<p>Hello <b>world</b></p>", "Hello world"),
    (
        "html",
        '<section>\n<h1>Title</h1>\n<p>One<br>two</p>\n<img src="x.png">\n'
        "<script>var x = 1;</script>\n</section>",
        "Title\nOne\ntwo",
    ),
    ("html", "<p>a &amp; b</p><hr/><input type=text>", "a & b"),
    ("markdown", "# Plan\n\nSome text.\n\n## Steps ##\n- one", None),
    ("text", "  Plain prose answer.  ", "Plain prose answer."),
    ("concise", "The build is green.", "The build is green."),
    ("ultra_concise", "Green.", "Green."),
    ("ultra_concise", "Surely not.", "Surely not."),  # "Sure" only as a whole word
    (
        "tts",
        "The build took forty-two seconds, and ninety percent of tests passed.",
        "The build took forty-two seconds, and ninety percent of tests passed.",
    ),
]


@pytest.mark.parametrize(("style", "text", "expected"), VALID)
def test_a_valid_answer_parses(style: str, text: str, expected: Any) -> None:
    value = parse_output(style, text)
    if expected is not None:
        assert value == expected


def test_every_builtin_style_has_a_valid_example() -> None:
    assert {style for style, _, _ in VALID} == set(BUILTIN)


def test_markdown_value_has_headings_and_text() -> None:
    text = "# Plan\n\n```python\n# not a heading\n```\n\n## Steps ##\n- one"
    assert parse_output("markdown", text) == {"headings": ["Plan", "Steps"], "text": text}


def test_concise_and_ultra_concise_limits_are_inclusive() -> None:
    assert parse_output("concise", "word " * CONCISE_MAX_WORDS)
    assert parse_output("ultra_concise", "word " * ULTRA_CONCISE_MAX_WORDS)


# --- fences and whitespace ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "text", "expected"),
    [
        ("yaml", "```yaml\na: 1\n```", {"a": 1}),
        ("yaml", "\n\n```yml\na: 1\n```\n  ", {"a": 1}),
        ("yaml", "```\na: 1\n```", {"a": 1}),
        ("json", '```json\n{"a": 1}\n```', {"a": 1}),
        ("json", "  ```\n[1]\n```  ", [1]),
        ("html", "```html\n<p>hi</p>\n```", "hi"),
        ("table", "```markdown\n| a |\n|---|\n| 1 |\n```", [{"a": "1"}]),
        ("text", "```\nplain\n```", "plain"),
        ("tts", "```text\nHello there.\n```", "Hello there."),
        ("markdown", "```markdown\n# Title\n```", {"headings": ["Title"], "text": "# Title"}),
    ],
)
def test_one_surrounding_fence_is_tolerated(style: str, text: str, expected: Any) -> None:
    assert parse_output(style, text) == expected


def test_a_code_answer_in_markdown_keeps_its_fence() -> None:
    text = "```python\nprint(1)\n```"
    assert parse_output("markdown", text)["text"] == text


def test_a_fence_of_another_language_is_not_stripped() -> None:
    assert error_of("json", '```python\n{"a": 1}\n```').path == "line 1"


def test_line_numbers_count_the_lines_of_the_raw_answer() -> None:
    # the fence line is line 1, so the bad YAML line is line 3
    assert error_of("yaml", "```yaml\na: 1\nb: [\n```").path == "line 3"
    assert error_of("html", "```html\n<div>\n<p>x</span>\n</div>\n```").path == "line 3"
    assert error_of("json", '\n\n{"a": }').path == "line 3"


# --- invalid answers: the first problem, with its path ------------------------------------

INVALID: list[tuple[str, str, str, str]] = [
    # style, answer, expected path, a fragment of the message
    ("yaml", "", "$", "empty"),
    ("yaml", "{}", "$", "empty"),  # an empty mapping answers nothing
    ("yaml", "[]\n", "$", "empty"),
    ("yaml", "just a sentence", "$", "mapping or list"),
    ("yaml", "42", "$", "mapping or list"),
    ("yaml", "a: 1\nb: [1, 2\nc: 3\n", "line 3", ""),
    ("yaml", "a: 1\n  b: 2\n", "line 2", ""),
    ("yaml", "a: 1\n---\nb: 2\n", "line 2", "second YAML document"),
    ("json", "", "$", "empty"),
    ("json", '{"a": 1,}', "line 1", "column"),
    ("json", '{"a": 1}\n{"b": 2}', "line 2", "Extra data"),
    ("json", "{'a': 1}", "line 1", "double quotes"),
    ("json", '{"a": NaN}', "$", "NaN"),
    ("json", "Here is the JSON: {}", "line 1", ""),
    ("table", "", "$", "empty"),
    ("table", "| a | b |", "line 2", "separator"),
    ("table", "| a | b |\n| x | y |\n| 1 | 2 |", "line 2", "separator"),
    ("table", "| a | b |\n|---|\n| 1 | 2 |", "line 2", "separator has 1 cells"),
    ("table", "| a | b |\n|---|---|", "row 1", "no data rows"),
    ("table", "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 |", "row 2", "has 1 cells; the header has 2"),
    ("table", "| a | b |\n|---|---|\n| 1 | 2 | 3 |", "row 1", "has 3 cells"),
    ("table", "| a | a |\n|---|---|\n| 1 | 2 |", "line 1", "unique"),
    ("table", "| a |  |\n|---|---|\n| 1 | 2 |", "line 1", "column name"),
    ("table", "| a |\n|---|\n| 1 |\n\n| 2 |", "line 4", "blank line"),
    ("table", "Here it is:\n| a |\n|---|\n| 1 |", "line 1", "not a table row"),
    ("html", "", "$", "empty"),
    ("html", "just words", "$", "no HTML element"),
    ("html", "<div>\n<p>text</div>", "line 2", "expected </p>"),
    ("html", "<ul>\n<li>a</li>\n<li>b\n</ul>", "line 4", "expected </li> (opened line 3)"),
    ("html", "<p>a</p>\n<section>\n<p>b</p>", "line 2", "<section> is never closed"),
    ("html", "<p>a</p>\n</div>", "line 2", "never opened"),
    ("markdown", "   \n ", "$", "empty"),
    ("text", "", "$", "empty"),
    ("concise", "", "$", "empty"),
    ("concise", "word " * (CONCISE_MAX_WORDS + 1), "$", f"limit is {CONCISE_MAX_WORDS}"),
    ("ultra_concise", "", "$", "empty"),
    ("ultra_concise", "Sure, the build is green.", "$", '"Sure"'),
    ("ultra_concise", "Certainly! Green.", "$", "preamble"),
    ("ultra_concise", "Here is the answer: green.", "$", "preamble"),
    ("ultra_concise", "Of course: green.", "$", "preamble"),
    ("ultra_concise", "word " * (ULTRA_CONCISE_MAX_WORDS + 1), "$", "limit is 40"),
    ("tts", "", "$", "empty"),
    ("tts", "This is **important**.", "line 1", 'markup character "*"'),
    ("tts", "Fine.\n# Heading", "line 2", '"#"'),
    ("tts", "Run `make test` now.", "line 1", '"`"'),
    ("tts", "It is <b>bold</b>.", "line 1", '"<"'),
    ("tts", "One | two", "line 1", '"|"'),
    ("tts", "See [the docs].", "line 1", '"["'),
    ("tts", "This is _emphasis_.", "line 1", '"_"'),
    ("tts", "Visit https://example.com today.", "line 1", "URL"),
    ("tts", "Visit www.example.com today.", "line 1", "URL"),
    ("tts", "We have 42 agents.", "line 1", 'number "42" must be spelled out ("forty-two")'),
    ("tts", "Fine.\nFine.\nIt is 3.5 now.", "line 3", '"three point five"'),
    ("tts", "Ninety % done.", "line 1", 'symbol "%"'),
    ("tts", "It costs $ five.", "line 1", '"dollars"'),
    ("tts", "Salt & pepper.", "line 1", '"and"'),
    ("tts", "Mail me @ home.", "line 1", '"at"'),
    ("tts", "One + one = two.", "line 1", '"plus"'),
    ("tts", "Read and/or write.", "line 1", 'symbol "/"'),
]


@pytest.mark.parametrize(("style", "text", "path", "fragment"), INVALID)
def test_an_invalid_answer_names_its_first_problem(
    style: str, text: str, path: str, fragment: str
) -> None:
    err = error_of(style, text)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)
    assert "\n" not in str(err)


def test_every_builtin_style_has_invalid_examples() -> None:
    assert {style for style, *_ in INVALID} == set(BUILTIN)


def test_tts_reports_the_earliest_problem_in_the_text() -> None:
    # the digit comes before the markup, so it is the one reported
    assert "number" in error_of("tts", "Step 1 is **bold**.").message
    assert "markup" in error_of("tts", "**Step** 1.").message


# --- re-asking ----------------------------------------------------------------------------


def ask_until_valid(style: str, answers: list[str], max_reasks: int) -> tuple[Any, list[str]]:
    """What the executor does: parse; on StyleError re-ask with repair_prompt, N times."""
    prompts: list[str] = []
    replies = iter(answers)
    first: StyleError | None = None
    for _ in range(max_reasks + 1):
        try:
            return parse_output(style, next(replies)), prompts
        except StyleError as err:
            first = first or err
            prompts.append(repair_prompt(style, err))
    assert first is not None
    raise first


REASK = {
    "yaml": ("a: [1", "a: [1]"),
    "json": ('{"a": }', '{"a": 1}'),
    "table": ("| a |\n|---|\n| 1 | 2 |", "| a |\n|---|\n| 1 |"),
    "html": ("<p>hi", "<p>hi</p>"),
    "markdown": ("", "# Hi"),
    "text": (" ", "Hi."),
    "concise": ("word " * 200, "Short."),
    "ultra_concise": ("Sure, green.", "Green."),
    "tts": ("It is 42%.", "It is forty-two percent."),
}


@pytest.mark.parametrize("style", BUILTIN)
def test_an_invalid_answer_is_re_asked_with_its_error(style: str) -> None:
    bad, good = REASK[style]
    value, prompts = ask_until_valid(style, [bad, good], max_reasks=styles.DEFAULT_MAX_REASKS)
    assert value == parse_output(style, good)
    err = error_of(style, bad)
    assert len(prompts) == 1
    assert err.path in prompts[0] and err.message in prompts[0]
    assert instruction(style) in prompts[0]


def test_after_n_re_asks_the_first_error_is_the_failure() -> None:
    with pytest.raises(StyleError) as info:
        ask_until_valid("json", ["{", "[1,", "nope"], max_reasks=2)
    assert str(info.value) == str(error_of("json", "{"))


def test_repair_prompt_says_what_was_wrong_and_how_to_answer() -> None:
    err = error_of("table", "| a | b |\n|---|---|\n| 1 |")
    prompt = repair_prompt("table", err)
    assert "not valid table output" in prompt
    assert "row 1: has 1 cells; the header has 2" in prompt
    assert "Markdown table" in prompt
    schema = {"type": "object", "required": ["a"]}
    with_schema = repair_prompt("json", error_of("json", "[]", schema=schema), schema=schema)
    assert '"required": ["a"]' in with_schema and "$: " in with_schema


# --- YAML never executes anything ---------------------------------------------------------

PAYLOADS = [
    "!!python/object/apply:os.system ['touch {sentinel}']",
    "a: !!python/object/apply:os.system ['touch {sentinel}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{sentinel}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{sentinel}']]",
    "- !!python/object/apply:builtins.open ['{sentinel}', 'w']",
    "!!python/object:builtins.object {{}}",
    "!!python/name:os.system",
    "!!python/module:os",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_python_yaml_payload_executes_nothing(
    payload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = tmp_path / "pwned"
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", calls.append)
    text = payload.format(sentinel=sentinel)
    for answer in (text, f"```yaml\n{text}\n```"):
        err = error_of("yaml", answer)
        assert err.path.startswith("line "), str(err)
        assert "!!python" in err.message
    assert not sentinel.exists()
    assert calls == []


def test_the_yaml_parser_only_uses_safe_load() -> None:
    source = Path(styles.__file__).read_text()
    assert "yaml.safe_load(" in source
    for unsafe in ("yaml.load(", "unsafe_load", "full_load", "UnsafeLoader", "FullLoader"):
        assert unsafe not in source


# --- JSON Schema --------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["name"],
            },
        }
    },
    "required": ["items"],
}


def test_a_json_answer_that_fits_the_schema_parses() -> None:
    text = '{"items": [{"name": "a"}, {"name": "b", "n": 2}]}'
    assert parse_output("json", text, schema=SCHEMA)["items"][1]["n"] == 2


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ('{"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]}', "$.items[2].name", "string"),
        ('{"items": [{"name": "a", "n": "two"}]}', "$.items[0].n", "integer"),
        ('{"items": [{}]}', "$.items[0]", "'name' is a required property"),
        ('{"things": []}', "$", "'items' is a required property"),
        ("[]", "$", "object"),
    ],
)
def test_schema_errors_give_the_json_path(text: str, path: str, fragment: str) -> None:
    err = error_of("json", text, schema=SCHEMA)
    assert err.path == path
    assert fragment in err.message


def test_a_schema_applies_to_yaml_too() -> None:
    err = error_of("yaml", "items:\n  - name: 3\n", schema=SCHEMA)
    assert err.path == "$.items[0].name"


def test_draft_7_schemas_work() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array"}
    assert parse_output("json", "[1]", schema=schema) == [1]
    assert error_of("json", "{}", schema=schema).path == "$"


def test_an_invalid_schema_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="JSON Schema is invalid"):
        parse_output("json", "{}", schema={"type": "no-such-type"})


def test_with_schema_quotes_the_schema_and_checks_it() -> None:
    style = get_style("json").with_schema(SCHEMA)
    assert style.json_schema == SCHEMA
    assert '"required": ["items"]' in style.instruction
    assert style.instruction.startswith(get_style("json").instruction)
    with pytest.raises(StyleError) as info:
        style.validate('{"items": [{"name": 1}]}')
    assert info.value.path == "$.items[0].name"


# --- tts and speakable --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("42% of $5", "forty-two percent of five dollars"),
        ("It costs $1.", "It costs one dollar."),
        ("1,200 items on the 21st", "one thousand two hundred items on the twenty-first"),
        ("pi is 3.14", "pi is three point one four"),
        ("agent 007", "agent zero zero seven"),
        ("salt & pepper + tea = 3", "salt and pepper plus tea equals three"),
        ("mail a@b", "mail a at b"),
        ("**Bold** and `code`", "Bold and code"),
        ("# Title", "Title"),
        ("see [the docs](https://x.io/a_b)", "see the docs"),
        ("go to https://example.com/x?a=1 now", "go to a link now"),
        ("100 of 1000000", "one hundred of one million"),
    ],
)
def test_speakable_spells_out_numbers_and_symbols(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


@pytest.mark.parametrize(
    "text",
    [
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "<p>It's 30°C & 80% humid</p>",
        "v1.2.3 costs £3 or €4 ~ 5^2 {x} a\\b snake_case",
        "1st, 2nd, 3rd, 4th, 11th, 12th, 20th, 101st",
        "## Heading\n- item 1\n- item 2\n> quote",
        "value < 3 > 2",
    ],
)
def test_speakable_output_passes_the_tts_style(text: str) -> None:
    assert parse_output("tts", speakable(text)) == speakable(text)


def test_number_words() -> None:
    cases = {0: "zero", 13: "thirteen", 40: "forty", 99: "ninety-nine", 105: "one hundred five"}
    cases[2_000_021] = "two million twenty-one"
    for n, words in cases.items():
        assert speech.number_words(n) == words


# --- rendering tts audio ------------------------------------------------------------------

FAKE_ESPEAK = """#!{python}
import sys, wave
args = sys.argv[1:]
assert args[0] == "-w" and args[2] == "--stdin" and len(args) == 3, args
text = sys.stdin.read()
if "FAIL" in text:
    sys.stderr.write("espeak-ng: cannot synthesise\\n")
    sys.exit(3)
open(args[1] + ".text", "w").write(text)
with wave.open(args[1], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(22050)
    w.writeframes(b"\\x00\\x00" * 2205)
"""


@pytest.fixture
def fake_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "espeak-ng"
    exe.write_text(FAKE_ESPEAK.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_render_tts_without_espeak_returns_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert render_tts("Hello there.", tmp_path / "out.wav") is None
    assert not (tmp_path / "out.wav").exists()
    assert "espeak-ng is not installed" in TTS_UNAVAILABLE_NOTE
    assert "apt-get install espeak-ng" in TTS_UNAVAILABLE_NOTE


@pytest.mark.usefixtures("fake_espeak")
def test_render_tts_writes_a_wav_and_passes_text_on_stdin(tmp_path: Path) -> None:
    text = "--help; rm -rf / ; $(touch pwned)"  # never an option, never a shell
    out = render_tts(text, tmp_path / "audio" / "answer.wav")
    assert out == tmp_path / "audio" / "answer.wav"
    with wave.open(str(out), "rb") as w:
        assert w.getnframes() == 2205 and w.getframerate() == 22050
    assert Path(f"{out}.text").read_text() == text


@pytest.mark.usefixtures("fake_espeak")
def test_render_tts_failure_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TTSRenderError, match=r"exit 3\): espeak-ng: cannot synthesise"):
        render_tts("FAIL", tmp_path / "x.wav")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_render_tts_with_the_real_espeak(tmp_path: Path) -> None:
    out = render_tts("The build is green.", tmp_path / "green.wav")
    assert out is not None
    with wave.open(str(out), "rb") as w:
        assert w.getnframes() > 0


# --- user styles --------------------------------------------------------------------------


def _shout(text: str) -> str:
    body = text.strip()
    if not body or body != body.upper():
        raise StyleError("$", "answer in capitals")
    return body


def test_a_user_style_registered_in_python_is_used_everywhere() -> None:
    style = Style(name="shout", instruction="ANSWER IN CAPITALS.", extension=".txt", parse=_shout)
    assert register_style(style) is style
    assert "shout" in style_names()
    assert instruction("shout") == "ANSWER IN CAPITALS."
    assert parse_output("shout", " YES ") == "YES"
    assert error_of("shout", "no").path == "$"
    assert "answer in capitals" in repair_prompt("shout", error_of("shout", "no"))


def test_registering_a_taken_name_needs_replace() -> None:
    style = Style(name="json", instruction="x", extension=".json", parse=_shout)
    with pytest.raises(UsageError, match="already registered; pass replace=True"):
        register_style(style)
    register_style(style, replace=True)
    assert get_style("json") is style


def test_a_style_name_must_be_a_plain_word() -> None:
    style = Style(name="a b", instruction="x", extension=".txt", parse=_shout)
    with pytest.raises(UsageError, match="style name"):
        register_style(style)


def test_style_from_config_reuses_a_base_parser_with_a_schema() -> None:
    config = {"base": "json", "schema": SCHEMA, "extension": ".json", "instruction": "List it."}
    style = style_from_config("inventory", config)
    assert style.name == "inventory" and style.structured and style.extension == ".json"
    assert style.instruction.startswith("List it.") and '"items"' in style.instruction
    register_style(style)
    assert parse_output("inventory", '{"items": []}') == {"items": []}
    assert error_of("inventory", '{"items": [{"name": 1}]}').path == "$.items[0].name"


def test_style_from_config_defaults_to_text() -> None:
    style = style_from_config("plain", {})
    assert style.extension == ".txt" and not style.structured
    assert style.instruction == instruction("text")
    assert style.parse("  hi ") == "hi"


def test_style_from_config_max_words_and_regex() -> None:
    style = style_from_config("verdict", {"max_words": 3, "regex": r"(PASS|FAIL)(: .*)?"})
    assert style.parse("PASS: all good") == "PASS: all good"
    assert style.parse("```\nFAIL\n```") == "FAIL"
    with pytest.raises(StyleError, match="does not match the pattern"):
        style.parse("maybe")
    with pytest.raises(StyleError, match="4 words; the limit is 3"):
        style.parse("PASS: all is good")


def test_style_from_config_table_base() -> None:
    style = style_from_config("scores", {"base": "table", "schema": {"minItems": 2}})
    assert style.parse("| a |\n|---|\n| 1 |") == [{"a": "1"}]
    with pytest.raises(StyleError, match=r"should be non-empty|is too short"):
        style.validate("| a |\n|---|\n| 1 |")


@pytest.mark.parametrize(
    ("name", "config", "fragment"),
    [
        ("x", {"bogus": 1}, "unknown key 'bogus'; allowed keys: base, extension"),
        ("x", {"base": "xml"}, "unknown base 'xml'; known styles: concise"),
        ("x", {"base": 3}, "base must be a string, got 3"),
        ("x", {"extension": "txt"}, "extension must look like '.txt'"),
        ("x", {"instruction": ["a"]}, "instruction must be a string"),
        ("x", {"max_words": 0}, "max_words must be at least 1"),
        ("x", {"max_words": "ten"}, "max_words must be a whole number"),
        ("x", {"max_words": True}, "max_words must be a whole number"),
        ("x", {"regex": "("}, "regex does not compile"),
        ("x", {"schema": "object"}, "schema must be a mapping"),
        ("x", {"schema": {"type": 5}}, "JSON Schema is invalid"),
        ("bad name", {}, "a style name is letters"),
    ],
)
def test_bad_style_config_is_a_one_line_usage_error(
    name: str, config: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(UsageError) as info:
        style_from_config(name, config)
    message = str(info.value)
    assert fragment in message, message
    assert message.startswith(f"style {name!r}: ")
    assert "\n" not in message


# --- parsers are plain functions ----------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_parsers_only_raise_style_errors(name: str) -> None:
    parse: Callable[[str], Any] = get_style(name).parse
    for junk in ["\x00", "```", "``````", "|", "<", "---", "{{{", "\u202e", "- - -", ":"]:
        with contextlib.suppress(StyleError):
            parse(junk)

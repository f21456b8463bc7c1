"""Speech: text made fit for reading aloud (numbers and symbols spelled out, markup
dropped) and rendered to a WAV file with ``espeak-ng`` (the ``tts`` style's audio)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..exceptions import TTSRenderError

__all__ = [
    "MARKUP_CHARS",
    "NUMBER",
    "SYMBOL_WORDS",
    "TTS_TIMEOUT_S",
    "TTS_UNAVAILABLE_NOTE",
    "URL",
    "number_words",
    "render_tts",
    "speakable",
]

TTS_TIMEOUT_S = 120.0
TTS_UNAVAILABLE_NOTE = (
    "espeak-ng is not installed: no audio rendered; install it with apt-get install espeak-ng"
)

SYMBOL_WORDS = {
    "%": "percent",
    "$": "dollars",
    "€": "euros",
    "£": "pounds",
    "&": "and",
    "@": "at",
    "+": "plus",
    "=": "equals",
    "/": "slash",
    "\\": "backslash",
    "^": "caret",
    "~": "about",
    "°": "degrees",
    "{": "",
    "}": "",
}
MARKUP_CHARS = "*#`<>|[]_"
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
# fmt: on
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth"}
_ORDINAL_ENDINGS |= {"eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """``42`` -> ``"forty-two"``; ``1200`` -> ``"one thousand two hundred"``."""
    if n < 0:
        return f"minus {number_words(-n)}"
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    scale, word = next((s, w) for s, w in _SCALES if n >= s)
    head, rest = divmod(n, scale)
    return f"{number_words(head)} {word}" + (f" {number_words(rest)}" if rest else "")


def _ordinal_words(n: int) -> str:
    """``21`` -> ``"twenty-first"``."""
    words = number_words(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:cut], words[cut:]
    if last in _ORDINAL_ENDINGS:
        return head + _ORDINAL_ENDINGS[last]
    return head + (last[:-1] + "ieth" if last.endswith("y") else last + "th")


def _digits_words(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def _integer_words(digits: str) -> str:
    """Whole numbers as words; leading zeros and very long numbers digit by digit."""
    if (len(digits) > 1 and digits.startswith("0")) or len(digits) > 15:
        return _digits_words(digits)
    return number_words(int(digits))


def _number_token(token: str) -> str:
    """``"1,200"``, ``"3.14"``, ``"007"``, ``"1.2.3"`` -> words."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")
    if "," in token:
        return ", ".join(_number_token(part) for part in token.split(","))
    whole, *fracs = token.split(".")
    if len(fracs) == 1:
        return f"{_integer_words(whole)} point {_digits_words(fracs[0])}"
    return " point ".join(_integer_words(part) for part in (whole, *fracs))


def _money(m: re.Match[str]) -> str:
    unit = {"$": "dollar", "€": "euro", "£": "pound"}[m.group(1)]
    amount = m.group(2)
    return f"{_number_token(amount)} {unit}" + ("" if amount == "1" else "s")


def _percent(m: re.Match[str]) -> str:
    return f"{_number_token(m.group(1))} percent"


def _strip_markup(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [label](url) -> label
    text = URL.sub("a link", text)
    text = re.sub(r"<[^<>]+>", " ", text)  # HTML tags
    text = re.sub(r"^[ \t]*(?:#+|>+|[-*+])[ \t]+", "", text, flags=re.MULTILINE)
    text = re.sub(r"^[ \t|:-]+$", "", text, flags=re.MULTILINE)  # table separators
    text = re.sub(r"^[ \t]*\|[ \t]*|[ \t]*\|[ \t]*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"[ \t]*\|[ \t]*", ", ", text)  # table cells
    text = text.replace("<", " less than ").replace(">", " greater than ")
    return re.sub(r"[*#`\[\]]", "", text).replace("_", " ")


def speakable(text: str) -> str:
    """Text made fit for reading aloud: markup dropped, numbers and common symbols spelled
    out (``"42% of $5"`` -> ``"forty-two percent of five dollars"``). Its result passes the
    ``tts`` style."""
    text = _strip_markup(text)
    text = re.sub(r"([$€£])(\d+(?:[.,]\d+)*)", _money, text)
    text = re.sub(r"(\d+(?:[.,]\d+)*)\s?%", _percent, text)
    text = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: _ordinal_words(int(m.group(1))), text)
    text = NUMBER.sub(lambda m: f" {_number_token(m.group(0))} ", text)
    for symbol, word in SYMBOL_WORDS.items():
        text = text.replace(symbol, f" {word} " if word else " ")
    text = "\n".join(" ".join(line.split()) for line in text.splitlines())
    return re.sub(r" +([.,;:!?])", r"\1", text).strip()


def render_tts(text: str, path: str | Path, *, timeout: float = TTS_TIMEOUT_S) -> Path | None:
    """Render ``text`` to a WAV file at ``path`` with ``espeak-ng``; ``None`` (see
    :data:`TTS_UNAVAILABLE_NOTE`) when it is not installed. The text goes through stdin, so
    nothing in it can be read as an option."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "-w", str(out), "--stdin"]
    try:
        proc = subprocess.run(argv, input=text, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TTSRenderError(f"espeak-ng took more than {timeout:g}s; no audio rendered") from None
    if proc.returncode != 0 or not out.is_file():
        detail = (proc.stderr.strip().splitlines() or ["no output file"])[-1]
        raise TTSRenderError(f"espeak-ng failed (exit {proc.returncode}): {detail}")
    return out

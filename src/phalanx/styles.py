"""Output styles: the instruction each style adds to an agent's prompt, and the file
extension its outputs are saved with. (Validators and re-asks build on this table.)"""

from __future__ import annotations

__all__ = ["STYLES", "extension", "instruction"]

STYLES: dict[str, tuple[str, str]] = {
    "text": ("Answer in plain prose.", ".txt"),
    "concise": ("Answer concisely: only what is needed, no preamble.", ".md"),
    "ultra_concise": ("Answer in as few words as possible: no preamble, no filler.", ".md"),
    "markdown": ("Answer in Markdown.", ".md"),
    "yaml": ("Answer with one YAML document and nothing else.", ".yaml"),
    "json": ("Answer with one JSON value and nothing else.", ".json"),
    "table": ("Answer with a Markdown table (header row, separator row, data rows).", ".md"),
    "html": ("Answer with an HTML fragment and nothing else.", ".html"),
    "tts": (
        "Answer as text to be read aloud: no markup, no symbols, numbers spelled out.",
        ".txt",
    ),
}


def instruction(style: str) -> str:
    return STYLES.get(style, ("", ".txt"))[0]


def extension(style: str) -> str:
    return STYLES.get(style, ("", ".txt"))[1]

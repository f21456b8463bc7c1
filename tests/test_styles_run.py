"""Styles inside runs: every built-in style re-asks on an invalid answer, plan-defined
styles, and tts audio."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

import phalanx
from phalanx import AgentSpec, Plan, PlanError, Task
from phalanx.agents.styles import BUILTIN_STYLES, STYLES, TTS_UNAVAILABLE_NOTE
from phalanx.testing import ScriptedProvider

SAMPLES = {  # style: (invalid, valid)
    "text": ("", "A plain answer."),
    "concise": ("word " * 200, "A short answer."),
    "ultra_concise": ("Sure, here it is: done.", "Done."),
    "markdown": ("", "# Title\n\nSome text."),
    "yaml": ("a: [unclosed", "a: 1\nb: [x, y]\n"),
    "json": ("{bad json", '{"a": 1}'),
    "table": ("no table here", "| a | b |\n|---|---|\n| 1 | 2 |\n"),
    "html": ("<p>unclosed <b>tag</p>", "<p>ok <b>bold</b></p>"),
    "tts": ("Use **bold** and 42 things", "Hello there, forty two things."),
}


def test_samples_cover_every_builtin_style() -> None:
    assert set(SAMPLES) == set(BUILTIN_STYLES)


@pytest.mark.parametrize("style", sorted(SAMPLES))
def test_invalid_answer_is_reasked_in_the_journal(state: Path, style: str) -> None:
    invalid, valid = SAMPLES[style]
    script = ScriptedProvider([invalid, valid])
    plan = Plan.build(
        agents=[AgentSpec(provider="scripted", style=style)], tasks=[Task(id="t", prompt="go")]
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": script})
    assert result.status == "succeeded", result.tasks["t"].error
    assert result.tasks["t"].output == valid
    db = sqlite3.connect(state / "journal.sqlite")
    rejected = [
        json.loads(d)
        for (d,) in db.execute(
            "SELECT data FROM events WHERE run_id = ? AND type = 'output_rejected'",
            (result.run_id,),
        )
    ]
    assert [(r["style"], r["reask"]) for r in rejected] == [(style, 1)]
    (parsed,) = db.execute(
        "SELECT parsed_json FROM results WHERE run_id = ?", (result.run_id,)
    ).fetchone()
    assert parsed is not None


def test_a_plan_defines_its_own_style(state: Path) -> None:
    data = {
        "provider": "scripted",
        "styles": {"haiku": {"instruction": "Answer in three short lines.", "max_words": 12}},
        "agents": [{"role": "poet", "style": "haiku"}],
        "tasks": [{"id": "t", "prompt": "autumn"}],
    }
    long = "one two three four five six seven eight nine ten eleven twelve thirteen"
    script = ScriptedProvider([long, "leaves fall\nquiet pond\nfrog"])
    result = phalanx.run_sync(Plan.from_dict(data), custom_providers={"scripted": script})
    assert result.status == "succeeded"
    assert "three short lines" in script.requests[0].messages[0].content
    assert result.snapshot.counts == {"succeeded": 1}


def test_two_runs_keep_their_own_style_of_one_name(state: Path) -> None:
    """A plan's styles belong to its run: the process-wide registry is untouched, and two
    runs defining ``brief`` differently each prompt and parse with their own."""
    before = dict(STYLES)
    limits = {"short": 3, "long": 30}
    results = {}
    for kind, words in limits.items():
        data = {
            "provider": "scripted",
            "styles": {"brief": {"instruction": f"At most {words} words.", "max_words": words}},
            "agents": [{"role": "writer", "style": "brief"}],
            "tasks": [{"id": "t", "prompt": "say it"}],
        }
        script = ScriptedProvider(["one two three four five six", "one two"])
        results[kind] = phalanx.run_sync(
            Plan.from_dict(data), custom_providers={"scripted": script}
        )
        assert f"At most {words} words." in script.requests[0].messages[0].content
        assert dict(STYLES) == before  # nothing registered, nothing replaced
    assert results["long"].tasks["t"].attempts == 1  # six words fit 30: no re-ask
    assert results["long"].tasks["t"].output == "one two three four five six"
    assert results["short"].tasks["t"].output == "one two"  # re-asked: six words > 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agents": [{"style": "sonnet"}]}, "agents[0].style"),
        ({"styles": {"json": {"instruction": "x"}}}, "styles.json"),
        ({"styles": {"odd": {"max_words": "many"}}}, "styles.odd"),
    ],
)
def test_style_mistakes_are_plan_errors(change: dict[str, object], field: str) -> None:
    data: dict[str, object] = {
        "provider": "sim",
        "agents": [{"role": "a"}],
        "tasks": [{"id": "t", "prompt": "x"}],
        **change,
    }
    with pytest.raises(PlanError) as err:
        Plan.from_dict(data)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_tts_renders_audio_when_espeak_is_installed(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, wave\n"
        "path = sys.argv[sys.argv.index('-w') + 1]\n"
        "text = sys.stdin.read()\n"
        "with wave.open(path, 'wb') as w:\n"
        "    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)\n"
        "    w.writeframes(b'\\x00\\x01' * (100 * len(text)))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = Plan.build(
        agents=[AgentSpec(provider="sim", style="tts")], tasks=[Task(id="news", prompt="read")]
    )
    result = phalanx.run_sync(plan)
    wav = result.outputs_dir / "news.wav"
    assert wav.exists() and wav.stat().st_size > 1000
    assert TTS_UNAVAILABLE_NOTE not in result.summary()


def test_tts_without_espeak_says_so(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    plan = Plan.build(
        agents=[AgentSpec(provider="sim", style="tts")], tasks=[Task(id="news", prompt="read")]
    )
    result = phalanx.run_sync(plan)
    assert result.status == "succeeded"
    assert not (result.outputs_dir / "news.wav").exists()
    assert f"note: {TTS_UNAVAILABLE_NOTE}" in result.summary()

"""Tools on ``local:``: the grammar of a turn (a tool call or the final answer), reading a
turn back, the conversation the model sees, the refusal of tools where a provider cannot
call them, and the warnings at the start. The real model runs in the last tests of this
file (the migration template on a 5-file target is the acceptance of issue 19)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import phalanx
from conftest import events, rows
from phalanx import Plan
from phalanx.agents.styles import get_style, parse_output
from phalanx.agents.tools import BUILTIN_TOOLS
from phalanx.events import Alert, Event
from phalanx.exceptions import PlanError
from phalanx.providers.base import (
    Completion,
    CompletionRequest,
    Message,
    ToolCall,
    ToolDef,
)
from phalanx.providers.local import GRAMMARS, LocalModelProvider
from phalanx.providers.local_tools import (
    FINAL_NOTE,
    FIRST_NOTE,
    Turn,
    answer_kind,
    read_turn,
    render_messages,
    same_call,
    tools_prompt,
    turn_grammar,
)

READ = BUILTIN_TOOLS["read_file"].to_def()
TOOLS = tuple(BUILTIN_TOOLS[n].to_def() for n in ("list_files", "read_file", "search"))
KINDS = ("prose", "tts", "html", "json", "yaml", "table")


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def compiles(gbnf: str) -> bool:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False) is not None


# --------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize("kind", KINDS)
def test_every_answer_kind_with_tools_compiles_to_a_grammar(kind: str) -> None:
    gbnf = turn_grammar(Turn(tools=TOOLS, kind=kind))
    assert compiles(gbnf)
    root = next(line for line in gbnf.splitlines() if line.startswith("root ::="))
    assert root == "root ::= call0 | call1 | call2 | answer"
    assert '"\\"read_file\\""' in gbnf  # each tool's name is a constant of its alternative


def test_a_call_alone_on_the_first_turn() -> None:
    gbnf = turn_grammar(Turn(tools=(READ,), kind="prose", must_call=True))
    assert compiles(gbnf)
    assert "root ::= call0" in gbnf.splitlines()
    assert "answer" not in gbnf


def test_the_answer_alone_when_no_tool_is_left() -> None:
    gbnf = turn_grammar(Turn(tools=(), kind="prose", chars=700))
    assert compiles(gbnf)
    assert "root ::= answer" in gbnf.splitlines()
    assert "read_file" not in gbnf
    assert "char{1,700}" in gbnf  # a bounded string is a repetition, not 700 nested rules


def test_html_without_tools_is_held_by_a_grammar_too() -> None:
    assert compiles(GRAMMARS["html"])


def test_answer_kinds_follow_the_style_family() -> None:
    assert answer_kind("concise", "") == "prose"
    assert answer_kind("markdown", "") == "prose"
    assert answer_kind("tts", "") == "tts"
    assert answer_kind("html", "") == "html"
    assert answer_kind("table", "table") == "table"
    assert answer_kind("yaml", "yaml") == "yaml"
    assert answer_kind("mine", "json") == "json"


# --------------------------------------------------------------------------- reading turns


def test_a_tool_call_is_read_as_a_tool_call() -> None:
    text = '{ "tool": "read_file", "arguments": {"path": "a.py"}}'
    answer, call = read_turn(text, Turn(tools=(READ,), kind="prose"), "local-1")
    assert answer == ""
    assert call == ToolCall(id="local-1", name="read_file", arguments={"path": "a.py"})


@pytest.mark.parametrize(
    ("kind", "style", "value"),
    [
        ("prose", "concise", "Use print() as a function."),
        ("tts", "tts", "Version two is out."),
        ("html", "html", "<h2>Report</h2><p>All checks pass.</p>"),
        ("json", "json", {"summary": "ok", "points": ["a"]}),
        ("yaml", "yaml", {"summary": "ok", "points": ["a", "b"]}),
        ("table", "table", {"columns": ["check", "input", "result"], "rows": [["a", "b", "c"]]}),
    ],
)
def test_a_final_answer_is_rendered_into_the_style(kind: str, style: str, value: Any) -> None:
    text = json.dumps({"answer": value})
    answer, call = read_turn(text, Turn(tools=(READ,), kind=kind), "local-1")
    assert call is None
    parsed = parse_output(style, answer)  # the agent's parser reads what it always reads
    if kind == "json":
        assert parsed == value
    if kind == "yaml":
        assert yaml.safe_load(answer) == value
    if kind == "table":
        assert parsed == [{"check": "a", "input": "b", "result": "c"}]


def test_text_that_is_not_the_grammars_json_is_left_as_it_is() -> None:
    assert read_turn('{"answer": "cut', Turn(tools=(), kind="prose"), "x") == (
        '{"answer": "cut',
        None,
    )


def test_a_cut_turn_is_a_call_never_run_or_the_prose_of_the_answer() -> None:
    from phalanx.providers.local_tools import read_cut_turn

    text, call = read_cut_turn('{"tool": "write_file", "arguments": {"path": "a.py", "con', "c")
    assert text == "" and call == ToolCall(id="c", name="write_file", arguments={})
    assert read_cut_turn('{ "answer" : "Use \\"print()\\" as a\\nfunc', "c") == (
        'Use "print()" as a\nfunc',
        None,
    )
    assert read_cut_turn('{"answer": "ends on an escape \\', "c") == ("ends on an escape ", None)


def test_the_same_call_twice_is_recognised() -> None:
    earlier = Message(
        role="assistant",
        content="",
        tool_calls=(ToolCall(id="1", name="read_file", arguments={"path": "a.py"}),),
    )
    same = ToolCall(id="2", name="read_file", arguments={"path": "a.py"})
    other = ToolCall(id="2", name="read_file", arguments={"path": "b.py"})
    assert same_call(same, [earlier])
    assert not same_call(other, [earlier])


# --------------------------------------------------------------------------- the prompt


def test_the_model_is_told_its_tools_and_sees_calls_and_results() -> None:
    prompt = tools_prompt(TOOLS)
    assert "- read_file(path): Read a UTF-8 text file in the workspace." in prompt
    assert "- list_files(path?, pattern?, recursive?)" in prompt
    assert '{"answer": ...}' in prompt
    call = ToolCall(id="local-1", name="read_file", arguments={"path": "a.py"})
    messages = [
        Message(role="system", content="You are Atlas."),
        Message(role="user", content="Migrate a.py."),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="x" * 50, tool_call_id="local-1", name="read_file"),
    ]
    out = render_messages(messages, Turn(tools=TOOLS, kind="prose"), result_chars=20)
    assert out[0]["role"] == "system"
    assert out[0]["content"].startswith("Tools you can call")
    assert out[0]["content"].endswith("\nYou are Atlas.")
    assert json.loads(out[2]["content"]) == {"tool": "read_file", "arguments": {"path": "a.py"}}
    assert out[3] == {
        "role": "user",
        "content": "Result of read_file:\n" + "x" * 20 + "\n[... 30 more characters not shown]",
    }
    assert out[-1]["content"].endswith("characters not shown]")  # free to call or answer
    last = render_messages(messages, Turn(tools=(), kind="prose"), result_chars=100)
    assert last[-1]["content"].endswith(FINAL_NOTE)
    assert "Tools you can call" not in last[0]["content"]
    first = render_messages(
        messages[:2], Turn(tools=TOOLS, kind="prose", must_call=True), result_chars=100
    )
    assert first[-1]["content"] == "Migrate a.py.\n\n" + FIRST_NOTE


# --------------------------------------------------------------------------- the provider


class _Scripted:
    """A stand-in for a llama.cpp instance: answers given texts in order, records kwargs;
    ``finish``: the finish reason of every answer."""

    def __init__(self, *texts: str, finish: str = "stop") -> None:
        self.texts = list(texts)
        self.finish = finish
        self.calls: list[dict[str, Any]] = []

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        text = self.texts.pop(0)
        return {
            "choices": [{"message": {"content": text}, "finish_reason": self.finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }


def complete_with(provider: LocalModelProvider, fake: _Scripted, req: CompletionRequest) -> Any:
    async def borrow() -> Any:
        return fake

    provider._borrow = borrow  # type: ignore[method-assign]
    provider._give_back = lambda llm: None  # type: ignore[method-assign]
    return asyncio.run(provider.complete(req))


def request(
    *messages: Message, style: str = "concise", tools: tuple[ToolDef, ...] = (READ,)
) -> Any:
    st = get_style(style)
    return CompletionRequest(
        model="smollm2",
        messages=(Message(role="user", content="Migrate a.py."), *messages),
        style=style,
        answer_format=st.answer_format,
        json_schema=st.json_schema,
        tools=tools,
    )


def test_a_call_becomes_a_completions_tool_call_under_a_grammar() -> None:
    provider = LocalModelProvider("smollm2", {"pool_size": 1})
    fake = _Scripted('{"tool": "read_file", "arguments": {"path": "a.py"}}')
    c: Completion = complete_with(provider, fake, request(style="table"))
    assert c.stop_reason == "tool_use"
    assert c.text == ""
    assert c.tool_calls == (ToolCall(id="local-1", name="read_file", arguments={"path": "a.py"}),)
    assert "grammar" in fake.calls[0]  # constrained decoding stays on with tools
    assert "response_format" not in fake.calls[0]


def test_a_call_cut_at_max_tokens_is_a_cut_call_for_the_executor_to_retry() -> None:
    provider = LocalModelProvider("smollm2", {"pool_size": 1})
    fake = _Scripted('{"tool": "read_file", "arguments": {"path": "a', finish="length")
    c = complete_with(provider, fake, request())
    assert c.stop_reason == "max_tokens"  # never run; runtime/truncation.py retries it
    assert c.tool_calls == (ToolCall(id="local-1", name="read_file", arguments={}),)


def test_a_repeated_call_is_decoded_again_as_the_answer() -> None:
    provider = LocalModelProvider("smollm2", {"pool_size": 1})
    call = ToolCall(id="local-1", name="read_file", arguments={"path": "a.py"})
    history = (
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="print 1", tool_call_id="local-1", name="read_file"),
    )
    fake = _Scripted(
        '{"tool": "read_file", "arguments": {"path": "a.py"}}', '{"answer": "Use print(1)."}'
    )
    c = complete_with(provider, fake, request(*history))
    assert (c.stop_reason, c.text, c.tool_calls) == ("end", "Use print(1).", ())
    assert c.usage.input_tokens == 20 and c.usage.output_tokens == 10  # both decodes
    assert fake.calls[1]["messages"][-1]["content"].endswith(FINAL_NOTE)


def test_after_max_tool_rounds_only_the_answer_is_offered() -> None:
    provider = LocalModelProvider("smollm2", {"pool_size": 1, "max_tool_rounds": 1})
    call = ToolCall(id="local-1", name="read_file", arguments={"path": "a.py"})
    history = (
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="print 1", tool_call_id="local-1", name="read_file"),
    )
    turn = provider._turn(request(*history))
    assert turn is not None and turn.tools == ()
    assert provider._turn(request()) == Turn(tools=(READ,), kind="prose", chars=700, must_call=True)
    free = LocalModelProvider("smollm2", {"pool_size": 1, "tool_first": False})
    assert free._turn(request()) == Turn(tools=(READ,), kind="prose", chars=700)
    assert provider._turn(request(tools=())) is None  # no tools: the style's own grammar


# --------------------------------------------------------------------------- plans


def test_tools_on_claude_code_are_refused_at_load_naming_the_agent(
    state: Path, tmp_path: Path
) -> None:
    plan = Plan.from_dict(
        {
            "provider": "claude-code",
            "providers": {"claude-code": {"executable": "/bin/true"}},
            "agents": [{"role": "reader", "tools": ["read_file"]}, {"role": "writer"}],
            "tasks": [{"id": "t", "prompt": "Read a.py."}],
        }
    )
    with pytest.raises(PlanError) as caught:
        phalanx.run_sync(plan)
    message = str(caught.value)
    assert "\n" not in message
    assert "agents.tools: agent " in message
    assert "(reader) has tools but claude-code cannot call them: remove its tools" in message


def test_a_plan_beyond_a_tiny_model_is_warned_about_at_the_start(state: Path) -> None:
    plan = Plan.from_dict(
        {
            "provider": "local:smollm2",
            "providers": {"local": {"max_tokens": 64}},
            "agents": [
                {"role": "reader", "style": "concise", "tools": ["list_files", "read_file",
                 "search", "write_file"]},
                {"role": "writer", "count": 2, "style": "markdown"},
            ],
            "tasks": [{"id": "hi", "prompt": "Say hi.", "style": "ultra_concise"}],
        }
    )  # fmt: skip
    recorder = Recorder()
    phalanx.run_sync(plan, sinks=[recorder])
    alerts = [e.message for e in recorder.events if isinstance(e, Alert) and e.kind == "model"]
    assert any(
        m.startswith("agent ") and "4 tools; a model this small picks well among at most 3" in m
        for m in alerts
    ), alerts
    writers = [m for m in alerts if "style 'markdown'" in m]
    assert len(writers) == 1, alerts  # the clones share one line that names both
    assert writers[0].startswith("agents ") and "max_tokens is 64" in writers[0], writers


# --------------------------------------------------------------------------- the real model

SAMPLE_FILES = {
    "util.py": "def read_config(path):\n    f = open(path)\n    data = f.read()\n    f.close()\n"
    '    return dict(line.split("=", 1) for line in data.splitlines() if line)\n',
    "greet.py": 'def greet(name):\n    print "Hello, %s" % name\n',
    "math_ops.py": "def average(xs):\n    return sum(xs) / len(xs)\n",
    "store.py": "class Store(object):\n    def has(self, key):\n"
    "        return self.items.has_key(key)\n",
    "main.py": "from util import read_config\nfrom greet import greet\n\n"
    "greet(read_config('a.cfg'))\n",
}


def template_run(name: str, tmp_path: Path, **opts: Any) -> tuple[Any, Path]:
    """``phalanx init --template NAME`` then its default run, on local:smollm2 as written."""
    from phalanx.plan.templates import init_template

    directory = tmp_path / name
    path = init_template(name, directory, **opts)
    state = tmp_path / f"state-{name}"
    result = phalanx.run_sync(str(path), state=state)
    return result, state


def success_rate(result: Any) -> float:
    """Of the tasks that are work: a template that grew tasks (``ID`` of ``ID[0]``..) only
    joins them, it is not counted."""
    work = [
        t for t in result.tasks.values() if not any(i.startswith(f"{t.id}[") for i in result.tasks)
    ]
    return sum(t.ok for t in work) / len(work)


def describe(result: Any) -> str:
    return "\n".join(
        f"{t.id}: {t.state} [{t.error_class}: {t.error}] {t.output[:80]!r}"
        for t in result.tasks.values()
    )


@pytest.mark.slow
def test_migration_template_on_five_files_calls_tools_and_succeeds(tmp_path: Path) -> None:
    """Issue 19's acceptance, on the plan that grows (issue 20): the migration template on
    a 5-file target, on local:smollm2: the analyzer picks the files at run time and the
    run grows one migrate and one test task per file it named; tool calls in the journal;
    at least 90% of the tasks that ran succeed."""
    target = tmp_path / "target"
    target.mkdir()
    for file, text in SAMPLE_FILES.items():
        (target / file).write_text(text, encoding="utf-8")
    result, state = template_run("migration", tmp_path, target=target)
    named = json.loads(result.tasks["analyze"].output)["files"]
    print(f"\nthe analyzer named {len(named)} files: {named}")
    assert named and set(named) <= set(SAMPLE_FILES)  # its schema holds it to the files
    n = len(named)
    assert sorted(t for t in result.tasks if t.startswith("migrate[")) == sorted(
        f"migrate[{i}]" for i in range(n)
    )
    assert sorted(t for t in result.tasks if t.startswith("test[")) == sorted(
        f"test[{i}]" for i in range(n)
    )
    assert len(result.tasks) == 5 + 2 * n  # analyze, plan, document and the two templates
    ran = [t for t in result.tasks.values() if t.attempts > 0]
    assert len(ran) == 3 + 2 * n
    rate = sum(t.ok for t in ran) / len(ran)
    print(f"migration on 5 files, local:smollm2: {rate:.0%} of the {len(ran)} tasks that ran")
    assert rate >= 0.9, describe(result)

    called = events(state, result.run_id, "tool_called")
    assert called, "no tool call in the journal"
    print(f"tool calls: {len(called)} ({sum(c['ok'] for c in called)} ok)")
    # the migrators read the files they migrate (the first turn of an agent with tools is
    # a call; the template spells the path out, and a tiny model copies it) and the
    # files' text went back to the model
    own = {f"migrate[{i}]": f for i, f in enumerate(named)}
    sql = "SELECT task_id, turn, calls_json FROM agent_turns WHERE run_id=?"
    read_own = {
        (r["task_id"], r["turn"])
        for r in rows(state, sql, result.run_id)
        for c in json.loads(r["calls_json"])
        if c["name"] == "read_file" and own.get(r["task_id"]) == c["arguments"].get("path")
    }
    sql = "SELECT task_id, turn, ok, result FROM tool_calls WHERE run_id=? AND tool='read_file'"
    seen = {
        r["task_id"]
        for r in rows(state, sql, result.run_id)
        if (r["task_id"], r["turn"]) in read_own
        and r["ok"]
        and SAMPLE_FILES[own[r["task_id"]]].splitlines()[0] in r["result"]
    }
    print(f"migrate tasks that read their own file: {len(seen)} of {n}")
    assert len(seen) >= 0.8 * n, sorted(read_own)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "opts"),
    [("feature", {}), ("research", {"agents": 2}), ("swarm", {"agents": 2}), ("pipeline", {})],
)
def test_each_template_succeeds_on_the_default_model(
    name: str, opts: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 19, item 7: each template's default run on local:smollm2 (a small size)
    succeeds on at least 90% of its tasks."""
    result, _ = template_run(name, tmp_path, **opts)
    rate = success_rate(result)
    print(f"\n{name} on local:smollm2: {rate:.0%} of the tasks ({len(result.tasks)} in all)")
    assert rate >= 0.9, describe(result)
    if name == "research":  # the planner named at least one sub-question (its schema's minItems)
        grown = [t for t in result.tasks if t.startswith("research[")]
        print(f"the planner named {len(grown)} sub-questions")
        assert grown and all(result.tasks[t].attempts > 0 for t in grown)

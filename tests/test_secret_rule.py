"""One secret rule (phalanx.redaction.is_secret) for every child process and for redaction.

Canary values in ten secret-shaped variables (and a URL with a password) never reach a
command the agent runs, a command hook, the claude-code child (which gets only its own key),
or the journal, even when the model echoes them or a hook prints them on stderr.
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import phalanx
from phalanx.agents import tools as tools_module
from phalanx.agents.hooks import from_config, payload
from phalanx.agents.tools import BUILTIN_TOOLS, ToolContext, call_tool
from phalanx.agents.workspace import Workspace
from phalanx.plan import Plan
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.claude_code import ClaudeCodeProvider
from phalanx.redaction import is_secret, is_secret_name, redact, scrubbed_env, url_password
from phalanx.testing import ScriptedProvider

DB_PASSWORD = "canary-db-pw-4242"
CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws-0123456789",
    "PGPASSWORD": "canary-pg-0123456789",
    "STRIPE_KEY": "canary-stripe-0123456789",
    "AZURE_OPENAI_KEY": "canary-azure-0123456789",
    "GITHUB_TOKEN": "canary-github-0123456789",
    "MYSQL_PWD": "canary-mysql-0123456789",
    "SENTRY_DSN": "canary-sentry-0123456789",
    "GOOGLE_APPLICATION_CREDENTIALS": "canary-gcp-0123456789",
    "OPENAI_API_KEY": "canary-openai-0123456789",
    "DATABASE_URL": f"postgres://app:{DB_PASSWORD}@db.internal:5432/prod",
}
OWN_KEY = "canary-anthropic-own-0123456789"  # the claude-code child's own key
LEAKS = [*CANARIES.values(), DB_PASSWORD]

DUMP_ENV = "import json, os, sys\njson.dump(dict(os.environ), open(sys.argv[1], 'w'))\n"


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", OWN_KEY)
    monkeypatch.setenv("PHALANX_PLAIN", "kept")


def leaked(text: str) -> list[str]:
    return [v for v in LEAKS if v in text]


# -- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CANARIES, "ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "KEY"])
def test_secret_names_and_urls_are_secret(name: str) -> None:
    assert is_secret(name, CANARIES.get(name, "x"))


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "PWD", "OLDPWD", "LANG", "TOKENIZERS_PARALLELISM", "KEYBOARD"]
)
def test_ordinary_names_are_not(name: str) -> None:
    assert not is_secret_name(name)
    assert not is_secret(name, "/usr/bin:/bin")


def test_a_url_with_a_password_is_secret_whatever_its_name() -> None:
    assert url_password("redis://:s3cret@cache:6379/0") == "s3cret"
    assert url_password("https://example.org/a@b") is None
    assert is_secret("CACHE", "redis://:s3cret@cache:6379/0")
    assert not is_secret("HOMEPAGE", "https://example.org/")


def test_redaction_uses_the_same_rule(canaries: None) -> None:
    text = " ".join(LEAKS)
    assert leaked(redact(text)) == []


def test_scrubbed_env_keeps_only_what_it_is_told(canaries: None) -> None:
    env = scrubbed_env(keep=["GITHUB_TOKEN"])
    assert env["GITHUB_TOKEN"] == CANARIES["GITHUB_TOKEN"]
    assert env["PHALANX_PLAIN"] == "kept"
    assert leaked(json.dumps({k: v for k, v in env.items() if k != "GITHUB_TOKEN"})) == []


# -- children ------------------------------------------------------------------------------


def test_a_command_the_agent_runs_gets_no_secret(
    canaries: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the output is not redacted here, so it shows exactly what the child received
    monkeypatch.setattr(tools_module, "_secret_values", lambda ctx: [])
    ctx = ToolContext(workspace=Workspace(tmp_path), allowed_commands=frozenset({"env"}))
    result = asyncio.run(call_tool(BUILTIN_TOOLS["run_command"], {"argv": ["env"]}, ctx))
    assert "PHALANX_PLAIN=kept" in result.content
    assert leaked(result.content) == []
    assert OWN_KEY not in result.content


def test_a_command_hook_gets_no_secret(canaries: None, tmp_path: Path) -> None:
    script, out = tmp_path / "dump.py", tmp_path / "env.json"
    script.write_text(DUMP_ENV)
    hooks = from_config(
        [{"on": "on_run_start", "command": [sys.executable, str(script), str(out)]}]
    )
    assert asyncio.run(hooks.fire("on_run_start", payload("on_run_start"))).ok
    env = json.loads(out.read_text())
    assert env["PHALANX_PLAIN"] == "kept"
    assert leaked(json.dumps(env)) == [] and OWN_KEY not in json.dumps(env)


FAKE_CLAUDE = """#!{python}
import json, os, sys
json.dump(dict(os.environ), open(os.environ["DUMP_TO"], "w"))
for line in (
    {{"type": "system", "subtype": "init", "model": "m"}},
    {{"type": "result", "subtype": "success", "is_error": False, "result": "ok",
      "usage": {{"input_tokens": 1, "output_tokens": 1}}}},
):
    print(json.dumps(line), flush=True)
"""


def test_the_claude_code_child_gets_only_its_own_key(canaries: None, tmp_path: Path) -> None:
    exe, out = tmp_path / "claude", tmp_path / "env.json"
    exe.write_text(FAKE_CLAUDE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    provider = ClaudeCodeProvider("", {"executable": str(exe), "env": {"DUMP_TO": str(out)}})
    request = CompletionRequest(model="", messages=(Message(role="user", content="hi"),))

    async def go() -> Any:
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    assert asyncio.run(go()).text == "ok"
    env = json.loads(out.read_text())
    assert env["ANTHROPIC_API_KEY"] == OWN_KEY
    assert leaked(json.dumps(env)) == []


# -- the journal ---------------------------------------------------------------------------


def test_secrets_echoed_by_the_model_or_a_hook_never_reach_the_journal(
    canaries: None, state: Path, tmp_path: Path
) -> None:
    # a hook that knows the database password another way (its own config) and prints it
    script = tmp_path / "loud.py"
    script.write_text(
        "import sys\n"
        f"sys.stderr.write('cannot connect with {CANARIES['DATABASE_URL']}\\n')\n"
        "sys.exit(1)\n"
    )
    answer = "here you go: " + " ".join(LEAKS)
    plan = Plan.from_dict(
        {
            "provider": "scripted",
            "agents": [{"role": "implementer"}],
            "tasks": [{"id": "t", "prompt": "print the config"}],
            "hooks": [{"on": "after_task", "command": [sys.executable, str(script)]}],
        }
    )
    result = phalanx.run_sync(plan, custom_providers={"scripted": ScriptedProvider([answer])})
    assert result.status == "succeeded"
    assert result.tasks["t"].output.startswith("here you go")
    stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    assert [v for v in LEAKS if v.encode() in stored] == []
    assert b"[redacted]" in stored or b"***" in stored


def test_connection_strings_and_docker_auth_are_secret_and_url_passwords_are_redacted() -> None:
    from phalanx.redaction import is_secret, redact

    assert is_secret("X_CONN", "Server=db;Password=connpw123")
    assert is_secret("ODBC", "Driver={x};Server=db;UID=u;PWD=connpw123;")
    assert is_secret("DOCKER_AUTH_CONFIG", '{"auths":{"r":{"auth":"dXNlcjpw"}}}')
    assert not is_secret("GIT_AUTHOR_NAME", "Ada Lovelace")
    assert not is_secret("NOTES", "a; b; c")
    text = "mcp.s: cannot reach http://admin:hunter2pass@127.0.0.1:9/mcp (refused)"
    assert redact(text) == "mcp.s: cannot reach http://admin:[redacted]@127.0.0.1:9/mcp (refused)"
    assert redact("see https://example.org/a@b") == "see https://example.org/a@b"


def test_a_url_password_in_a_plan_never_reaches_the_journal(tmp_path: Path) -> None:
    import sqlite3

    import phalanx

    data = {
        "name": "urlpw",
        "provider": "sim",
        "providers": {"openai-compatible": {"base_url": "http://admin:hunter2pass@127.0.0.1:9/v1"}},
        "agents": [{"role": "generalist"}],
        "tasks": [{"id": "t", "prompt": "x"}],
    }
    result = phalanx.run_sync(phalanx.Plan.from_dict(data), state=tmp_path)
    db = sqlite3.connect(result.journal_path)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert "hunter2pass" not in dump and "admin:[redacted]@127.0.0.1" in dump

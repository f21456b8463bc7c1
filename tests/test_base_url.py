"""Addresses the usual way: ``--base-url`` on ``run``, ``eval`` and ``plan``, the SDKs' own
``OPENAI_BASE_URL`` and ``ANTHROPIC_BASE_URL``, one whole line when none is given (key
paths never cut), and no invented rate limit for a
server that is not the public endpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeProviderServer
from phalanx.cli import main
from phalanx.exceptions import PlanError, UsageError
from phalanx.plan import Plan
from phalanx.providers.openai_api import OpenAIProvider
from phalanx.runtime.governor import DEFAULT_LIMITS, RateGovernor, public_defaults


def plan_file(tmp_path: Path, **extra: Any) -> Path:
    data = {
        "name": "addresses",
        "provider": "sim",
        "agents": [{"role": "implementer"}],
        "tasks": [{"id": f"t{i}", "prompt": f"task {i}"} for i in range(3)],
        **extra,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_url_flag_runs_a_plan_unedited_against_a_server(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "dummy-key-for-a-local-server")
    with FakeProviderServer() as srv:
        code = main(
            ["run", str(plan_file(tmp_path)), "-q", "--provider", "openai:gpt-test",
             "--base-url", srv.url + "/v1"]
        )  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert len(srv.served) == 3 and {s.path for s in srv.served} == {"/v1/chat/completions"}


def test_openai_base_url_is_honoured_for_a_compatible_server(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = plan_file(tmp_path, providers={"openai-compatible": {"stream": True}})
    with FakeProviderServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url + "/v1")
        code = main(["run", str(path), "-q", "--provider", "openai-compatible:smollm2"])
    assert code == 0, capsys.readouterr()
    assert len(srv.served) == 3


def test_a_missing_address_names_every_way_to_give_it_whole(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code = main(["run", str(plan_file(tmp_path)), "--provider", "openai-compatible:smollm2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "…" not in err
    for way in ("--base-url", "OPENAI_BASE_URL", "providers.openai-compatible.base_url"):
        assert way in err


def test_the_provider_reads_the_env_variable_only_when_compatible() -> None:
    p = OpenAIProvider("m", {}, compatible=True, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert str(p._client.base_url).startswith("http://127.0.0.1:9/v1")
    with pytest.raises(UsageError, match="needs its server"):
        OpenAIProvider("m", {}, compatible=True, env={})


def test_base_url_override_sets_the_overriding_providers_server(tmp_path: Path) -> None:
    plan = Plan.from_dict(yaml.safe_load(plan_file(tmp_path).read_text()))
    over = plan.with_overrides(provider="openai-compatible:m", base_url="http://127.0.0.1:1/v1")
    assert over.providers["openai-compatible"]["base_url"] == "http://127.0.0.1:1/v1"
    assert plan.providers.get("openai-compatible") is None  # the plan itself is unchanged


def test_no_invented_limit_for_a_custom_server() -> None:
    assert public_defaults({}, {}) == DEFAULT_LIMITS
    assert "anthropic" not in public_defaults({"anthropic": {"base_url": "http://x"}}, {})
    assert "openai" not in public_defaults({}, {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"})
    governor = RateGovernor(defaults=public_defaults({"anthropic": {"base_url": "http://x"}}, {}))
    assert governor.limit_for("anthropic:claude-x") is None
    assert governor.limit_for("openai:gpt-x") == DEFAULT_LIMITS["openai"]


def test_eval_takes_base_url_too(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "dummy-key-for-a-local-server")
    monkeypatch.chdir(tmp_path)
    agents = {"agents": [{"role": "reviewer", "provider": "openai:gpt-test"}]}
    (tmp_path / "plan.yaml").write_text(
        yaml.safe_dump({**agents, "tasks": [{"id": "x", "prompt": "x"}]})
    )
    (tmp_path / "cases.yaml").write_text(
        "cases:\n  - id: a\n    prompt: say anything\n  - id: b\n    prompt: say more\n"
    )
    with FakeProviderServer() as srv:
        # no --provider: the server is the one provider kind the spec uses
        code = main(
            ["eval", "plan.yaml:reviewer", "cases.yaml", "--base-url", srv.url + "/v1",
             "--no-record", "-q", "--json"]
        )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out
    assert len(srv.served) == 2 and {s.path for s in srv.served} == {"/v1/chat/completions"}


def test_anthropic_base_url_is_honoured(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "dummy-key-for-a-local-server")
    with FakeProviderServer() as srv:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
        code = main(["run", str(plan_file(tmp_path)), "-q", "--provider", "anthropic:claude-x"])
    assert code == 0, capsys.readouterr()
    assert len(srv.served) == 3 and {s.path for s in srv.served} == {"/v1/messages"}
    assert "anthropic" not in public_defaults({}, {"ANTHROPIC_BASE_URL": srv.url})


def test_base_url_with_agents_of_two_kinds_asks_for_the_provider(tmp_path: Path) -> None:
    data = yaml.safe_load(plan_file(tmp_path).read_text())
    data["provider"] = None
    data["agents"] = [
        {"role": "a", "provider": "openai:x"},
        {"role": "b", "provider": "anthropic:y"},
    ]
    plan = Plan.from_dict(data)
    with pytest.raises(PlanError, match="one provider; the agents use 2 kinds: give --provider"):
        plan.with_overrides(base_url="http://127.0.0.1:1/v1")
    one = plan.with_overrides(provider="openai:x", base_url="http://127.0.0.1:1/v1")
    assert one.providers["openai"]["base_url"] == "http://127.0.0.1:1/v1"


LONG_MODEL = "openai-compatible:Qwen/Qwen2.5-Coder-32B-Instruct-GGUF-" + "q" * 60


@pytest.mark.parametrize("model", ["openai-compatible:smollm2", LONG_MODEL])
def test_the_missing_address_error_never_cuts_a_key_path(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, model: str
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code = main(["run", str(plan_file(tmp_path)), "--provider", model])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    for way in ("--base-url URL", "OPENAI_BASE_URL", "providers.openai-compatible.base_url"):
        assert way in err, err
    assert len(err) < 320, err  # still one bounded line: the long model name was cut instead


def test_plan_error_lines_cut_values_not_key_paths() -> None:
    old = (  # the message that used to print as "set p…s.openai-compatible.base_url"
        "openai-compatible:smollm2 needs the server's address: set "
        "providers.openai-compatible.base_url (e.g. http://127.0.0.1:8080/v1)"
    )
    err = str(PlanError(old, file="plan.yaml", field="--provider"))
    assert "providers.openai-compatible.base_url" in err and "…" in err
    huge = PlanError("x" * 1000 + " set limits.max_prompt_tokens", field="limits")
    assert "limits.max_prompt_tokens" in str(huge) and len(str(huge)) < 200
    assert len(str(PlanError("y" * 5000))) < 200  # nothing but a value: cut in the middle

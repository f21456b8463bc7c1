"""Addresses the usual way: ``--base-url`` on ``run`` and ``plan``, the SDKs' own
``OPENAI_BASE_URL``, one whole line when none is given, and no invented rate limit for a
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
from phalanx.exceptions import UsageError
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

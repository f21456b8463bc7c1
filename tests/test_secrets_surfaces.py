"""The canary key never shows on the surfaces people read: reports (html, md, json) and every
dashboard response — even when answers and errors carried it."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

import phalanx
from phalanx import AgentSpec, Plan, Task
from phalanx.cost import Usage
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.journal import Journal
from phalanx.providers.base import Completion, CompletionRequest
from phalanx.status.report import render_report
from phalanx.status.web import create_app

CANARY = "sk-ant-CANARY-5e1f0c9a7b3d2e4f"


class Leaky:
    """Echoes the key in answers and in error messages."""

    name, simulated = "leaky", True

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.task_id.startswith("bad") and request.attempt_no == 1:
            raise ProviderError(
                f"401 invalid key {CANARY}", error_class=ErrorClass.AUTH, status=401
            )
        return Completion(
            text=f"answer using {CANARY} and more", usage=Usage(input_tokens=5, output_tokens=5)
        )

    async def aclose(self) -> None:
        return None


def test_reports_and_dashboard_never_show_the_key(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    plan = Plan.build(
        agents=AgentSpec(provider="leaky").clone(2),
        tasks=[Task(id=f"t{i}", prompt=f"use {CANARY}") for i in range(4)]  # type: ignore[arg-type]
        + [Task(id="bad1", prompt="x")],  # type: ignore[arg-type]
    )
    result = phalanx.run_sync(plan, custom_providers={"leaky": Leaky()}, run_id="leak")
    assert result.tasks["bad1"].state == "failed"  # the error really happened
    journal = Journal(state / "journal.sqlite")
    for fmt in ("html", "md", "json"):
        text = render_report(journal, "leak", fmt)
        assert "answer using" in text or fmt == "json" or "[redacted]" in text
        assert CANARY not in text and "CANARY-5e1f" not in text, fmt
    journal.close()
    app = create_app(state, token="t" * 32)
    base = "http://127.0.0.1:8123"
    with TestClient(app, base_url=base, follow_redirects=False) as client:
        headers = {"Authorization": "Bearer " + "t" * 32}
        paths = ["/", "/api/runs", "/api/snapshot?run=leak", "/metrics?run=leak"]
        paths += [f"/api/agents/{a.name}?run=leak" for a in result.snapshot.agents]
        for path in paths:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, path
            assert CANARY not in response.text and "CANARY-5e1f" not in response.text, path
    raw = (state / "journal.sqlite").read_bytes()
    assert CANARY.encode() not in raw

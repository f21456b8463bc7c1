"""The Python API: three agents, a small DAG, typed results.

A researcher lists the risks of a change, two reviewers each estimate a part of the work,
and every answer comes back as a pydantic object (``output_type=``), not as text to parse.

    python python_api.py                                   # on the simulated provider
    python python_api.py anthropic:claude-sonnet-4-5       # a real model (ANTHROPIC_API_KEY)
    PHALANX_PROVIDER=openai:gpt-4.1-mini python python_api.py

Add ``--base-url URL`` after the provider for a proxy or an OpenAI-compatible server
(``openai-compatible:MODEL --base-url http://127.0.0.1:8080/v1``). On ``sim`` every answer
is simulated (a value of the right type, labelled SIMULATED), but the run is real: journal,
scheduler, retries, budgets, ``phalanx status RUN_ID`` afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import BaseModel, Field

import phalanx
from phalanx import AgentSpec, Plan, Task


class Risk(BaseModel):
    title: str
    severity: int = Field(ge=1, le=5, description="1 (cosmetic) to 5 (data loss)")


class Risks(BaseModel):
    risks: list[Risk] = Field(min_length=1)


class Estimate(BaseModel):
    part: str
    days: int = Field(ge=1, description="whole working days")
    confident: bool


def build(provider: str) -> Plan:
    """Agents (a role, a model) and tasks (a prompt, dependencies, the type of the answer)."""
    return Plan.build(
        name="python-api-example",
        agents=[
            AgentSpec(role="researcher", provider=provider, skills=("security",)),
            *AgentSpec(role="reviewer", provider=provider).clone(2),
        ],
        tasks=[
            Task(
                id="risks",
                category="research",
                prompt="List the risks of moving password reset tokens from the DB to Redis.",
                output_type=Risks,
            ),
            Task(
                id="estimate-api",
                role="reviewer",
                needs=("risks",),  # gets the risks above in its prompt
                prompt="Estimate the API part of the move, in whole days.",
                output_type=Estimate,
            ),
            Task(
                id="estimate-migration",
                role="reviewer",
                needs=("risks",),
                prompt="Estimate the data migration part of the move, in whole days.",
                output_type=Estimate,
            ),
        ],
    )


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="Three agents, typed results.")
    cli.add_argument("provider", nargs="?", default=os.environ.get("PHALANX_PROVIDER", "sim"))
    cli.add_argument("--base-url", help="a proxy, or an OpenAI-compatible server's /v1 URL")
    args = cli.parse_args(argv)
    plan = build(args.provider)
    result = phalanx.run_sync(plan, base_url=args.base_url)  # or: await phalanx.run(...)
    print(result.summary(), file=sys.stderr)  # progress and summary: stderr; results: stdout
    if result.status != "succeeded":
        return 1
    risks = result.tasks["risks"].parsed  # a Risks instance
    assert isinstance(risks, Risks)
    for risk in risks.risks:
        print(f"risk (severity {risk.severity}): {risk.title}")
    estimates = [result.tasks[t].parsed for t in ("estimate-api", "estimate-migration")]
    for e in estimates:
        assert isinstance(e, Estimate)
        print(f"estimate: {e.part}: {e.days} day(s){'' if e.confident else ' (unsure)'}")
    print(f"total: {sum(e.days for e in estimates)} day(s); run {result.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

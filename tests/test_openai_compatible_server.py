"""``openai-compatible`` against a real OpenAI-compatible server on 127.0.0.1.

The server is llama-cpp-python's (``python -m llama_cpp.server``, from the ``local`` extra)
serving the bundled SmolLM2-135M model: one process for the module, started on a free
loopback port and always stopped (terminate, then kill) when the module is done.

It runs with ``--interrupt_requests False``: by default that server cuts a running stream
short (``data: [DONE]`` with no ``finish_reason``) whenever another request arrives, so
agents that call it concurrently would see every overlapping answer as a cut stream.
Requests are serialised inside the server either way; the model is small enough for that.

Prompts ask for short answers (an answer that reaches ``max_tokens`` is continued, which
costs calls). The README's feature example runs here unedited, through the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import phalanx
from conftest import alive
from phalanx import Plan
from phalanx.agents.styles import parse_output
from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.journal import Journal
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.local import smollm2_path
from phalanx.providers.openai_api import OpenAIProvider

N_CTX = 2048
START_SECONDS = 60
MAX_TOKENS = 256  # the answers asked for here are a few dozen tokens
FEATURE_SECONDS = 900  # six tasks of a 135M model on one server thread, on a shared machine


@dataclass(frozen=True)
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1
# looked up here, in the parent: the child between fork and exec only calls it
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if pytest itself dies, so no server outlives it."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        smollm2_path(),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--n_threads",
        "1",
        "--n_threads_batch",  # default: every core, which fights the test process for 2 cores
        "1",
        "--seed",
        "0",
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
    srv = Server(proc=proc, port=port, log=log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(f"{srv.base_url}/models"):
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{srv.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {START_SECONDS}s:\n{srv.log_tail()}")
            time.sleep(0.1)
        yield srv
    finally:
        _stop(proc)
        assert proc.returncode is not None
        assert not alive(proc.pid), f"server pid {proc.pid} is still alive"


def six_task_plan(base_url: str) -> Plan:
    return Plan.from_dict(
        {
            "name": "openai-compatible-six",
            "provider": "openai-compatible:smollm2",
            "providers": {
                "openai-compatible": {"base_url": base_url, "max_tokens": MAX_TOKENS, "timeout": 60}
            },
            "retry": {"base_seconds": 0.05, "cap_seconds": 0.2},
            "agents": [
                {"role": "researcher", "style": "concise"},
                {"role": "generalist", "count": 2, "style": "concise"},
            ],
            "tasks": [
                {"id": "color", "prompt": "Name one primary color. Answer in one short sentence."},
                {"id": "fruit", "prompt": "Name one fruit. Answer in one short sentence."},
                {"id": "animal", "prompt": "Name one animal. Answer in one short sentence."},
                {"id": "greet", "prompt": "Say hello in one short sentence."},
                {
                    "id": "mix",
                    "needs": ["color", "fruit"],
                    "prompt": "In one short sentence, name the color and the fruit given below.",
                },
                {
                    "id": "reply",
                    "needs": ["animal", "greet"],
                    "prompt": "In one short sentence, greet the animal named below.",
                },
            ],
        }
    )


def describe(result: phalanx.RunResult) -> str:
    return "\n".join(
        f"{t.id}: {t.state} by {t.agent} after {t.attempts} attempt(s) "
        f"[{t.error_class}: {t.error}] {t.output[:120]!r}"
        for t in result.tasks.values()
    )


@pytest.fixture(scope="module")
def six_task_run(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Plan, phalanx.RunResult]:
    plan = six_task_plan(server.base_url)
    result = phalanx.run_sync(plan, state=tmp_path_factory.mktemp("state"))
    return plan, result


def test_six_task_plan_runs_on_the_server(six_task_run: tuple[Plan, phalanx.RunResult]) -> None:
    plan, result = six_task_run
    assert result.status == "succeeded", describe(result)
    assert result.simulated is False
    assert set(result.tasks) == {t.id for t in plan.tasks}
    for task in result.tasks.values():
        assert task.ok, describe(result)
        assert task.output.strip(), describe(result)
        assert (result.outputs_dir / f"{task.id}.md").read_text(encoding="utf-8") == task.output
    # more than one agent took work: four tasks are ready at the start
    assert len({t.agent for t in result.tasks.values()}) >= 2, describe(result)

    journal = Journal(result.journal_path)
    try:
        results = journal.results(result.run_id)
    finally:
        journal.close()
    assert len(results) == 6
    assert {k: r.output for k, r in results.items()} == {
        k: t.output for k, t in result.tasks.items()
    }


def test_six_task_plan_records_usage(six_task_run: tuple[Plan, phalanx.RunResult]) -> None:
    _, result = six_task_run
    assert result.status == "succeeded", describe(result)
    for task in result.tasks.values():
        assert task.usage.input_tokens > 0, f"{task.id}: {task.usage}"
        assert task.usage.output_tokens > 0, f"{task.id}: {task.usage}"
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0


def _complete(base_url: str, request: CompletionRequest) -> Any:
    async def main() -> Any:
        provider = OpenAIProvider("smollm2", {"base_url": base_url}, compatible=True, env={})
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def test_prompt_longer_than_the_context_is_context_length(server: Server) -> None:
    too_long = CompletionRequest(
        model="smollm2",
        messages=(Message(role="user", content="word " * (10 * N_CTX)),),  # ~20k tokens
        max_tokens=16,
    )
    with pytest.raises(ProviderError) as caught:
        _complete(server.base_url, too_long)
    error = caught.value
    assert error.error_class is ErrorClass.CONTEXT_LENGTH, (
        f"classified {error.error_class}: {error} (status {error.status}); what the server "
        f"answers to the same prompt: {_raw_answers(server.base_url, too_long)}"
    )
    assert not error.retryable


def _raw_answers(base_url: str, request: CompletionRequest) -> str:
    """The server's raw status and body for ``request``, streamed and not (for a report)."""
    out = []
    for stream in (True, False):
        body = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        post = urllib.request.Request(
            f"{base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(post, timeout=30) as response:
                status, text = response.status, response.read()[:500]
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()[:500]
            exc.close()
        out.append(f"stream={stream}: {status} {text!r}")
    return "; ".join(out)


def test_server_still_answers_after_a_rejected_prompt(server: Server) -> None:
    with contextlib.suppress(ProviderError):
        _complete(
            server.base_url,
            CompletionRequest(
                model="smollm2",
                messages=(Message(role="user", content="word " * (10 * N_CTX)),),
                max_tokens=16,
            ),
        )
    completion = _complete(
        server.base_url,
        CompletionRequest(
            model="smollm2",
            messages=(Message(role="user", content="Say hello in one short sentence."),),
            max_tokens=MAX_TOKENS,
        ),
    )
    assert completion.stop_reason == "end", completion
    assert completion.text.strip(), completion
    assert completion.model == "openai-compatible:smollm2"


# --------------------------------------------------------------------------- acceptance

FEATURE_EXAMPLE = Path(phalanx.__file__).parent / "examples" / "feature-team.yaml"


@pytest.fixture(scope="module")
def feature_run(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README's feature example, unedited, through the command line against the
    server: ``phalanx run feature-team.yaml --provider openai-compatible:smollm2
    --base-url URL``."""
    state = tmp_path_factory.mktemp("feature-state")
    command = [
        sys.executable, "-m", "phalanx", "--state-dir", str(state), "run", str(FEATURE_EXAMPLE),
        "-q", "--no-tui", "--provider", "openai-compatible:smollm2", "--base-url", server.base_url,
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=FEATURE_SECONDS)
    seconds = time.monotonic() - t0
    db = sqlite3.connect(state / "journal.sqlite")
    try:
        tasks = db.execute("SELECT task_id, state, error_class, error FROM tasks").fetchall()
        kinds = dict(db.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        outputs = dict(db.execute("SELECT task_id, output FROM results").fetchall())
    finally:
        db.close()
    return {
        "proc": proc,
        "seconds": seconds,
        "tasks": tasks,
        "events": kinds,
        "outputs": outputs,
    }


@pytest.mark.timeout(FEATURE_SECONDS + 60)  # the run's own bound, not the suite's 300 s
def test_the_feature_example_succeeds_unedited_on_the_server(feature_run: dict[str, Any]) -> None:
    proc, tasks = feature_run["proc"], feature_run["tasks"]
    report = (
        f"exit {proc.returncode} after {feature_run['seconds']:.0f}s\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-2000:]}\ntasks: {tasks}\nevents: {feature_run['events']}"
    )
    ok = sum(1 for _, state, _, _ in tasks if state == "succeeded")
    seconds, kinds = feature_run["seconds"], feature_run["events"]
    print(f"feature example on the server: {ok}/{len(tasks)} in {seconds:.0f}s; events {kinds}")
    plan = phalanx.load_plan(FEATURE_EXAMPLE)
    assert proc.returncode == 0, report
    assert sorted(t[0] for t in tasks) == sorted(t.id for t in plan.tasks), report
    assert all(state == "succeeded" for _, state, _, _ in tasks), report
    assert set(feature_run["outputs"]) == {t.id for t in plan.tasks}, report
    # each answer is in its agent's style: the designer's YAML, the validator's table
    assert yaml.safe_load(feature_run["outputs"]["design-api"]), report
    parse_output("table", feature_run["outputs"]["test-flow"])

"""B10: the real-provider path. CPU time per request of a phalanx run on ``openai-compatible``
and on ``anthropic`` against a local instant server (``bench.instant_server``, its own
process), against the bare SDK (``openai.AsyncOpenAI`` / ``anthropic.AsyncAnthropic`` with an
``asyncio.Semaphore``) sending the same requests at the same concurrency. Each side runs in a
fresh process of its own, measured with ``time.process_time`` (every thread of it) plus the
CPU of the processes it started and waited for (the helpers that write a large run's output
files and commit its journal), after a warm-up, so the figure is what phalanx adds to a call.
Target: phalanx <= 1.15x the bare SDK's CPU per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from .common import (
    ROOT,
    BenchError,
    Config,
    Row,
    file_cost,
    log,
    median,
    spread,
    state_dir,
    summarise,
)

TARGET = 1.15
_SYSTEM = "You are Cipher, the generalist of a team of agents. Do whatever the task asks."
_KEY = "sk-bench-0000000000000000"
_MODELS = {"openai": "openai-compatible:m", "anthropic": "anthropic:claude-bench"}


@contextlib.contextmanager
def instant_server() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.instant_server", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise BenchError(f"the instant server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(10)


# -- the two sides, each in a process of its own -------------------------------------------
async def _bare(kind: str, port: int, n: int, k: int, light: bool = False) -> None:
    """The bare SDK; ``light``: its connection pool with phalanx's cheaper idle check
    (``providers/_pool.py: lighten``), to tell what that saves from what the run adds."""
    from phalanx.providers._pool import lighten

    sem = asyncio.Semaphore(k)
    if kind == "openai":
        import openai

        oc = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=_KEY)
        if light and not lighten(oc):
            raise BenchError("the openai client's pool is not the one lighten knows")

        async def one(i: int) -> None:
            async with sem:
                r = await oc.chat.completions.create(
                    model="m",
                    messages=[
                        {"role": "system", "content": _SYSTEM},
                        {"role": "user", "content": f"do part {i}"},
                    ],
                    max_tokens=1024,
                )
                assert r.choices[0].message.content

        async with oc:
            await asyncio.gather(*(one(i) for i in range(n)))
    else:
        import anthropic

        ac = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key=_KEY)
        if light and not lighten(ac):
            raise BenchError("the anthropic client's pool is not the one lighten knows")

        async def one(i: int) -> None:
            async with sem:
                stream = await ac.messages.create(
                    model="claude-bench",
                    system=_SYSTEM,
                    messages=[{"role": "user", "content": f"do part {i}"}],
                    max_tokens=1024,
                    stream=True,
                )
                text = []
                async with stream:
                    async for event in stream:
                        if event.type == "content_block_delta":
                            text.append(event.delta.text)  # type: ignore[union-attr]
                assert text

        async with ac:
            await asyncio.gather(*(one(i) for i in range(n)))


def _plan(kind: str, port: int, n: int, k: int) -> Any:
    from phalanx import Plan

    provider = _MODELS[kind]
    base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    return Plan.from_dict(
        {
            "name": f"b10-{kind}",
            "provider": provider,
            "providers": {provider.partition(":")[0]: {"base_url": base}},
            "agents": [{"role": "generalist", "count": k}],
            "tasks": [{"id": f"t{i}", "prompt": f"do part {i}"} for i in range(n)],
        }
    )


async def _phalanx(kind: str, port: int, n: int, k: int, state: str) -> None:
    import phalanx

    result = await phalanx.run(_plan(kind, port, n, k), state=state)
    if result.status != "succeeded":
        raise BenchError(f"b10 {kind}: the run ended {result.status}: {result.snapshot.reason}")


def client(side: str, kind: str, port: int, n: int, k: int, state: str) -> dict[str, float]:
    """One measurement in this process: a warm-up of ``k`` requests, then ``n``. Side
    ``profile``: the phalanx run under cProfile, its stats dumped to ``state/profile``."""
    os.environ.update({"OPENAI_COMPATIBLE_API_KEY": _KEY, "ANTHROPIC_API_KEY": _KEY})

    def once(count: int, where: str) -> None:
        if side in ("bare", "light"):
            asyncio.run(_bare(kind, port, count, k, light=side == "light"))
        else:
            asyncio.run(_phalanx(kind, port, count, k, where))

    once(k, os.path.join(state, "warm"))
    if side == "profile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        once(n, os.path.join(state, "run"))
        prof.disable()
        prof.dump_stats(os.path.join(state, "profile"))
        return {}
    cpu, t0 = _cpu(), time.perf_counter()
    once(n, os.path.join(state, "run"))
    return {"cpu": _cpu() - cpu, "wall": time.perf_counter() - t0}


def _cpu() -> float:
    """This process's CPU time and that of its children that ended (and were waited for)."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _measure(side: str, kind: str, port: int, n: int, k: int) -> dict[str, float]:
    with state_dir(tempfile.gettempdir()) as d:  # on disk, as users keep it
        out = _client(side, kind, port, n, k, d)
    return dict(json.loads(out.strip().splitlines()[-1]))


def _client(side: str, kind: str, port: int, n: int, k: int, state: str) -> str:
    """:func:`client` in a fresh process; its standard output."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.b10_provider", side, kind, str(port), str(n), str(k), state],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"b10 {side} {kind}: {out.stderr.strip()[-2000:]}")
    return out.stdout


def _profile(kind: str, port: int, n: int, k: int) -> str:
    import pstats

    with state_dir(tempfile.gettempdir()) as d:
        _client("profile", kind, port, n, k, d)
        stats = pstats.Stats(os.path.join(d, "profile"))
    what = f"one phalanx run on {_MODELS[kind].partition(':')[0]} (N={n}, K={k})"
    return summarise(stats, what, top=8)


def run(cfg: Config) -> list[Row]:
    n, k = cfg.size((500, 20), (40, 4))
    rows = []
    with instant_server() as port:
        for kind in ("openai", "anthropic"):
            bare, light, ours, files = [], [], [], []
            for i in range(cfg.repeats):
                bare.append(_measure("bare", kind, port, n, k)["cpu"] / n)
                light.append(_measure("light", kind, port, n, k)["cpu"] / n)
                ours.append(_measure("phalanx", kind, port, n, k)["cpu"] / n)
                files.append(file_cost(n))
                log(
                    f"B10 {kind} run {i + 1}/{cfg.repeats}: bare {bare[-1] * 1e3:.2f} ms, "
                    f"bare with phalanx's pool check {light[-1] * 1e3:.2f} ms, "
                    f"phalanx {ours[-1] * 1e3:.2f} ms CPU per request"
                )
            b, lt, p = median(bare), median(light), median(ours)
            ratio = p / b
            row = Row(
                id=f"B10{'a' if kind == 'openai' else 'b'}",
                title=f"CPU per request, {_MODELS[kind].partition(':')[0]} "
                f"(N={n}, K={k}, instant local server)",
                figure=f"{p * 1e3:.2f} ms",
                baseline=f"{b * 1e3:.2f} ms (bare {kind} SDK + semaphore)",
                target=f"<= {TARGET}x",
                ratio=ratio,
                passed=ratio <= TARGET,
                note=f"phalanx {spread([x * 1e3 for x in ours], 'ms')}, bare SDK "
                f"{spread([x * 1e3 for x in bare], 'ms')}; each side a fresh process, "
                "CPU of every thread and of its helper processes, journal on disk, after a "
                f"warm-up of K requests. The phalanx figure includes its {n} output files: "
                f"creating {n} files there right after each run cost "
                f"{spread([f * 1e6 for f in files], 'µs', '{:.0f}')} each, that is "
                f"{median(files) * 1e3:.2f} ms of its CPU per request (the same for every "
                "request: the bare SDK writes none). The bare SDK with phalanx's cheaper "
                "idle-connection check in its pool (`providers/_pool.py`) takes "
                f"{lt * 1e3:.2f} ms ({spread([x * 1e3 for x in light], 'ms')}): the SDK's "
                f"own share of a phalanx request; phalanx's run (journal, events, "
                f"scheduling, governor, the output file) adds {(p - lt) * 1e3:.2f} ms to it.",
                data={
                    "phalanx_ms": [x * 1e3 for x in ours],
                    "bare_ms": [x * 1e3 for x in bare],
                    "bare_with_pool_check_ms": [x * 1e3 for x in light],
                    "file_us": [f * 1e6 for f in files],
                },
            )
            if not row.passed:
                room = TARGET * b - lt
                row.note += (
                    f" Why it misses: the target allows {TARGET * b * 1e3:.2f} ms a request; "
                    f"the SDK's own share is {lt * 1e3:.2f} ms, which leaves "
                    f"{room * 1e3:.2f} ms for everything the run does per request, and it "
                    f"does {(p - lt) * 1e3:.2f} ms: the per-task work that B1 measures on "
                    "the sim provider (dispatch, outcomes, events, the journal's rows, the "
                    "status fold, the output file)."
                )
                if cfg.profile:
                    row.profile = _profile(kind, port, n, k)
            rows.append(row)
    return rows


if __name__ == "__main__":
    side, kind, port, n, k, state = sys.argv[1:7]
    print(json.dumps(client(side, kind, int(port), int(n), int(k), state)))

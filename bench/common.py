"""What every benchmark shares: the result row, the run configuration, timing, the asyncio
baseline, sim plans, profile summaries and the record of the machine."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import datetime
import gc
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phalanx
from phalanx import Plan
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.sim import SimProvider

ROOT = Path(__file__).resolve().parent.parent
_T0 = time.perf_counter()


class BenchError(RuntimeError):
    """A benchmark could not measure what it should (a run did not succeed, ...)."""


@dataclass
class Config:
    smoke: bool = False
    repeats: int = 3  # each figure is the median of this many measurements
    profile: bool = True  # profile a benchmark whose target is missed
    machine: dict[str, Any] = field(default_factory=dict)  # filled in by the suite

    def size(self, full: Any, smoke: Any) -> Any:
        return smoke if self.smoke else full


@dataclass
class Row:
    """One line of the table."""

    id: str
    title: str
    figure: str
    baseline: str
    target: str
    ratio: float | None = None
    passed: bool | None = None  # None: not run
    verdict_text: str = ""  # overrides pass/MISS (e.g. "not run: ...")
    note: str = ""
    profile: str = ""  # where the time goes, for a missed target
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.verdict_text:
            return self.verdict_text
        return "pass" if self.passed else "**MISS**"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "figure": self.figure,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "passed": self.passed,
            "verdict": self.verdict.strip("*"),
            "note": self.note,
            "profile": self.profile,
            "data": self.data,
        }


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], unit: str, fmt: str = "{:.3g}") -> str:
    """The samples a median came from, for the notes: ``min-max unit (n runs)``."""
    n = len(values)
    sep = "" if unit == "x" else " "
    return (
        f"{fmt.format(min(values))}-{fmt.format(max(values))}{sep}{unit} "
        f"({n} run{'s' if n != 1 else ''})"
    )


def paired(ours: Sequence[float], base: Sequence[float]) -> float:
    """The ratio of a benchmark to its baseline: the median of the per-run ratios, each run
    pairing a measurement with its baseline taken right next to it (robust to a machine
    whose speed drifts between runs)."""
    return median([o / b for o, b in zip(ours, base, strict=True)])


STATE_ENV = "PHALANX_BENCH_STATE_BASE"


def state_base() -> str | None:
    """Where runs keep their state (journal, outputs): ``$PHALANX_BENCH_STATE_BASE``, else
    the system's temp folder (on the disk, as a user's ``.phalanx`` is)."""
    return os.environ.get(STATE_ENV) or None


def tmpfs() -> str | None:
    """A tmpfs to measure beside the disk (its figures labelled as such), if there is one
    and the state is not already on it."""
    if (state_base() or "").startswith("/dev/shm"):
        return None
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def describe_state_base() -> str:
    base = state_base() or tempfile.gettempdir()
    kind = "tmpfs" if base.startswith("/dev/shm") else "disk"
    return f"{base} ({kind})"


_KEPT: list[str] = []  # the suite's state dirs, removed when it ends (:func:`remove_states`)


@contextlib.contextmanager
def state_dir(base: str | None = None) -> Iterator[str]:
    """A fresh phalanx state dir (journal and outputs), under ``base`` or
    :func:`state_base`. It is kept until the suite ends: on an ext4 disk mounted with
    ``discard`` (this project's VMs), creating files right after deleting thousands costs
    ~10-20x more for a while (25 µs a file measured fresh, 200-600 µs after deleting 10,000),
    so deleting each run's 10,000 output files would charge that to the next measurement,
    which a user (whose runs accumulate in ``.phalanx/runs``) never pays."""
    d = tempfile.mkdtemp(prefix="phalanx-bench-", dir=base or state_base())
    _KEPT.append(d)
    yield d


def remove_states() -> None:
    """Remove the state dirs the suite made (at its end, after every measurement)."""
    while _KEPT:
        shutil.rmtree(_KEPT.pop(), ignore_errors=True)


def settle() -> None:
    """Between measurements: no garbage of the previous one left to collect."""
    gc.collect()


# -- workloads ----------------------------------------------------------------------------
def sim_plan(
    n_tasks: int, agents: int, latency_ms: float = 0.0, *, name: str = "bench"
) -> dict[str, Any]:
    """``n_tasks`` independent tasks on ``agents`` generalists, on the sim provider."""
    return {
        "name": name,
        "provider": "sim",
        "providers": {"sim": {"latency": {"distribution": "fixed", "ms": latency_ms}}},
        "agents": [{"role": "generalist", "count": agents}],
        "tasks": [{"id": f"t{i}", "prompt": f"do part {i}"} for i in range(n_tasks)],
    }


_SYSTEM = "You are Cipher, the generalist of a team of agents. Your job: Do whatever the task asks."


async def asyncio_baseline(n_tasks: int, concurrency: int, latency_ms: float) -> float:
    """The baseline of B1, B2 and B9: ``asyncio.Semaphore(K)`` + ``gather`` over the same
    fake call phalanx makes (``SimProvider.complete``, same latency); returns seconds."""
    provider = SimProvider(options={"latency": {"distribution": "fixed", "ms": latency_ms}})
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await provider.complete(
                CompletionRequest(
                    model="sim",
                    messages=(
                        Message(role="system", content=_SYSTEM),
                        Message(role="user", content=f"do part {i}"),
                    ),
                    task_id=f"t{i}",
                    agent=f"a{i % concurrency}",
                    role="generalist",
                )
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n_tasks)))
    return time.perf_counter() - t0


async def phalanx_wall(plan: Plan, state: str, sinks: Sequence[Any] = ()) -> float:
    """Seconds for ``phalanx.run(plan)`` with its journal in ``state``; it must succeed."""
    t0 = time.perf_counter()
    result = await phalanx.run(plan, state=state, sinks=sinks)
    wall = time.perf_counter() - t0
    if result.status != "succeeded":
        raise BenchError(f"run of plan {plan.name} ended {result.status}: {result.snapshot.reason}")
    return wall


CPU_SPENT: list[tuple[float, float]] = []  # (this process, its helpers) per measure_phalanx


def measure_phalanx(
    plan: Plan, sinks: Callable[[], Sequence[Any]] = list, *, base: str | None = None
) -> float:
    """One run's wall time; its CPU time (this process's, its helper processes') is kept
    in :data:`CPU_SPENT`."""
    settle()
    with state_dir(base) as d:
        cpu0, kids0 = time.process_time(), _children_cpu()
        wall = asyncio.run(phalanx_wall(plan, d, sinks()))
        CPU_SPENT.append((time.process_time() - cpu0, _children_cpu() - kids0))
        return wall


def baseline_cpu(n_tasks: int, concurrency: int, latency_ms: float) -> float:
    """The CPU time of one asyncio baseline run (``time.process_time``)."""
    settle()
    t0 = time.process_time()
    asyncio.run(asyncio_baseline(n_tasks, concurrency, latency_ms))
    return time.process_time() - t0


def measure_baseline(n_tasks: int, concurrency: int, latency_ms: float) -> float:
    settle()
    return asyncio.run(asyncio_baseline(n_tasks, concurrency, latency_ms))


# -- profiles -----------------------------------------------------------------------------
def profile(fn: Callable[[], object], what: str, *, top: int = 5) -> str:
    """cProfile ``fn()`` (this thread) and summarise: the top functions by own time and the
    share of own time per area (phalanx module, asyncio, sqlite3, waiting in select, ...)."""
    prof = cProfile.Profile()
    settle()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    return summarise(pstats.Stats(prof), what, top=top)


def summarise(stats: pstats.Stats, what: str, *, top: int = 5) -> str:
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1e-9
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    lines = [
        f"cProfile of {what}: {total:.2f} s of own time profiled; top {top} functions by own time:",
        "",
        "| own time | share | calls | function |",
        "| ---: | ---: | ---: | --- |",
    ]
    for key, (_, calls, tt, _, _) in rows:
        lines.append(f"| {tt:.3f} s | {tt / total:.0%} | {calls:,} | `{_where(key)}` |")
    areas: dict[str, float] = {}
    for key, v in entries.items():
        areas[_area(key)] = areas.get(_area(key), 0.0) + v[2]
    ranked = sorted(areas.items(), key=lambda kv: kv[1], reverse=True)[:7]
    lines += ["", "Own time by area: " + " · ".join(f"{a} {t / total:.0%}" for a, t in ranked)]
    return "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return os.path.basename(path)


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    return f"{_short(file)}:{line}({func})"


def _area(key: tuple[str, int, str]) -> str:
    """Where a function belongs: its phalanx module, else its top-level package or stdlib
    module; C functions by kind (sqlite3, waiting in select, other builtins by name)."""
    file, _, func = key
    if file == "~":
        if "sqlite3" in func:
            return "sqlite3"
        if "epoll" in func or "select" in func:
            return "waiting (select)"
        name = func.strip("<>").removeprefix("built-in method ").removeprefix("method ")
        return "builtin " + name.split(" of ")[0].strip("'").removeprefix("builtins.")
    short = _short(file)
    if short.startswith("phalanx/"):
        return short
    return short.split("/", 1)[0].removesuffix(".py")


# -- where a run's time goes, in real time ------------------------------------------------
class _TimedConnection:
    """A SQLite connection whose ``execute``/``executemany`` add their time to ``spent``."""

    def __init__(self, db: Any, spent: dict[str, float]) -> None:
        self._db, self._spent = db, spent

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._spent["sqlite"] = self._spent.get("sqlite", 0.0) + time.perf_counter() - t0

    def execute(self, *args: Any) -> Any:
        return self._timed(self._db.execute, *args)

    def executemany(self, *args: Any) -> Any:
        return self._timed(self._db.executemany, *args)

    def close(self) -> None:
        self._db.close()


def breakdown(plan: Plan, what: str, baseline_cpu: float | None = None) -> str:
    """One run of ``plan`` with timers around its main parts (real time: cProfile inflates
    code that makes many small calls): the run's CPU time and each part's share of it; the
    rest is the attempts themselves (executor, provider call, asyncio) and the run's
    setup. ``baseline_cpu``: the baseline's CPU time for the same work, to compare."""
    import phalanx.api as api_module
    import phalanx.runtime.executor as executor_module
    from phalanx.journal import Journal
    from phalanx.runtime.orchestrator import Orchestrator
    from phalanx.runtime.outputs import OutputStream
    from phalanx.status.snapshot import StatusTracker

    spent: dict[str, float] = {}

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    parts: list[tuple[Any, str, str]] = [  # disjoint: none calls another
        (Journal, "flush", "journal flushes (one transaction per batch)"),
        (Journal, "create_run", "the run's journal row (plan JSON, redacted)"),
        (api_module, "write_outputs", "output files written at the end of the run"),
        (OutputStream, "finish", "waiting"),
        (executor_module, "redact", "redacting answers"),
        (Orchestrator, "_dispatch", "dispatch (decisions, attempt starts, their events)"),
        (Orchestrator, "_on_outcome", "outcomes (events, bookkeeping)"),
    ]
    inner = [  # inside dispatch and outcomes (their events)
        (StatusTracker, "emit", "status fold"),
        (Journal, "append", "journal append"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in (*parts, *inner)]
    for owner, name, label in (*parts, *inner):
        setattr(owner, name, timed(label, getattr(owner, name)))
    opened = saved_init = Journal.__init__

    def init(self: Journal, *args: Any, **kwargs: Any) -> None:  # time SQLite's own calls
        opened(self, *args, **kwargs)
        self._db = _TimedConnection(self._db, spent)  # type: ignore[assignment]

    Journal.__init__ = init  # type: ignore[method-assign]
    saved.append((Journal, "__init__", saved_init))
    try:
        with state_dir() as d:
            settle()
            cpu0, kids0 = time.process_time(), _children_cpu()
            wall = asyncio.run(phalanx_wall(plan, d))
            cpu, kids = time.process_time() - cpu0, _children_cpu() - kids0
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    waited = spent.pop("waiting", 0.0)  # for the output files' helper: not this CPU's
    status = spent.pop("status fold", 0.0)
    append = spent.pop("journal append", 0.0)
    sqlite = spent.pop("sqlite", 0.0)
    ranked = sorted(spent.items(), key=lambda kv: kv[1], reverse=True)
    rest = max(0.0, cpu - sum(spent.values()))
    text = " · ".join(f"{label} {t:.2f} s ({t / cpu:.0%})" for label, t in ranked)
    versus = f" (the baseline's: {baseline_cpu:.2f} s)" if baseline_cpu is not None else ""
    return (
        f"Where one phalanx run's time goes ({what}; timers around its parts, real time): "
        f"wall {wall:.2f} s, CPU {cpu:.2f} s{versus}. Of the CPU time: {text}. Inside "
        f"those: SQLite's own calls {sqlite:.2f} s ({sqlite / cpu:.0%}); encoding each "
        f"event for the journal and folding its table writes as it comes {append:.2f} s "
        f"({append / cpu:.0%}); the status fold {status:.2f} s ({status / cpu:.0%}). The "
        f"rest, {rest:.2f} s ({rest / cpu:.0%}), is the attempts "
        "themselves (executor, sim call, asyncio tasks) and the run's setup. Its helper "
        f"processes (the journal's writer, for a run of 4,096 event rows or more; the output "
        f"files' writer, for one of 1,000 tasks or more) spent {kids:.2f} s of CPU besides, "
        f"on the other core; at its end the run waited {waited:.2f} s for the output files' "
        "writer to finish."
    )


def file_cost(count: int = 2000, base: str | None = None) -> float:
    """Seconds of CPU one file of ~1.5 KB costs to create where the suite keeps its state
    (``count`` files in a fresh folder, three system calls each, as the output files are):
    on some disks that is most of a task's overhead."""
    import os

    with state_dir(base) as d:
        folder = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        data = b"x" * 1500
        try:
            t0 = time.process_time()
            for i in range(count):
                fd = os.open(f"f{i}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644,
                             dir_fd=folder)  # fmt: skip
                os.write(fd, data)
                os.close(fd)
            return (time.process_time() - t0) / count
        finally:
            os.close(folder)


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- the machine --------------------------------------------------------------------------
_SPIN = (
    "import time\nt = time.perf_counter()\nx = 0\n"
    "for i in range({n}): x += i\nprint(time.perf_counter() - t)"
)


def _spin(n: int, copies: int) -> float:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SPIN.format(n=n)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(copies)
    ]
    times = [float(p.communicate(timeout=120)[0]) for p in procs]
    return sum(times) / len(times)


def capacity_once(cfg: Config) -> float:
    """How much CPU work two processes get done at once, relative to one alone (2.0 on two
    free cores): what any two-way parallelism on this machine can reach right now."""
    n = cfg.size(8_000_000, 300_000)
    one = _spin(n, 1)
    two = _spin(n, 2)
    return 2 * one / two


def parallel_capacity(cfg: Config) -> float:
    return median([capacity_once(cfg) for _ in range(cfg.repeats)])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return None


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def machine(cfg: Config) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    memory = _memory_gib()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": _cpu_model(),
        "memory_gib": round(memory, 1) if memory else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "phalanx": phalanx.__version__,
        "commit": _git(),
        "parallel_capacity": round(parallel_capacity(cfg), 2),
        "repeats": cfg.repeats,
        "state_dir": describe_state_base(),
    }

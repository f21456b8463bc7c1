"""The Python API: ``run(plan)`` (async), ``run_sync`` and ``resume``; results per task.

result = phalanx.run_sync("plan.yaml", agents=8, provider="sim")
print(result.status, result.tasks["design"].output)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypedDict, TypeVar

from ._util import blocking, one_line, packed
from .agents.hooks import from_config
from .agents.mcp import McpHub
from .agents.spec import AgentSpec
from .agents.styles import (
    Styles,
    parse_output,
    typed_value,
)
from .agents.tools import BUILTIN_TOOLS, ToolSpec
from .comms import COMMS_TOOLS, Comms
from .cost import Usage, price_for
from .events import (
    AgentInfo,
    Event,
    EventSink,
    MessageSent,
    RunFinished,
    RunStarted,
    RunStatus,
    TaskInfo,
    TaskState,
)
from .exceptions import (
    BudgetExhausted,
    JournalError,
    NothingToResume,
    PhalanxError,
    PlanError,
    UsageError,
)
from .ids import TaskId
from .journal import Decision, Journal, driven_by
from .plan.file import load_plan, plan_json
from .plan.model import DEFAULT_PROVIDER, Plan, Task, style_of
from .providers import Provider, is_simulated, resolve_provider
from .redaction import redact
from .runtime.approvals import PriorWaits, record_decision
from .runtime.assembly import (
    RunnerFactory,
    agent_workspaces,
    finish_isolation,
    run_workspace,
    state_dir_of,
    worktrees_dir,
)
from .runtime.engine import Engine, LocalEngine
from .runtime.governor import RateGovernor, public_defaults
from .runtime.growth import SPAWN_TOOL, SPAWN_TOOL_SPEC, grow_plan
from .runtime.orchestrator import Orchestrator, Prior, RunGate, TaskRecord
from .runtime.outputs import OutputStream, answer_style, output_name, write_outputs
from .runtime.quota import QuotaStore, QuotaStoreError
from .runtime.records import load_records
from .runtime.router import LLMPolicy
from .status.liveness import HEARTBEAT_EVERY, owner_alive, this_process
from .status.logsink import log_sinks
from .status.snapshot import Snapshot, StatusTracker, fmt_duration
from .status.text import fmt_cost

__all__ = ["RunResult", "TaskResult", "resume", "run", "run_sync", "state_dir"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskResult:
    id: str
    state: TaskState  # pending: a run that stopped before the task ran
    output: str
    agent: str | None
    attempts: int
    usage: Usage
    error_class: str | None = None
    error: str | None = None
    # the answer parsed in its style: an instance of the output_type model of the task (or
    # of its agent), the JSON of a schema:, a json/yaml style's data, the text of a prose one
    parsed: Any = None

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True, kw_only=True)
class RunResult:
    run_id: str
    status: RunStatus
    tasks: Mapping[str, TaskResult]
    snapshot: Snapshot
    simulated: bool
    journal_path: Path
    outputs_dir: Path
    changes: Mapping[str, list[str]] | None = None  # per agent, with isolation: worktree
    notes: tuple[str, ...] = ()  # things the user should know (e.g. no tts audio)

    @property
    def usage(self) -> Usage:
        return self.snapshot.usage

    @property
    def wall_seconds(self) -> float:
        """Active time: the sessions' spans, the downtime between them left out."""
        return self.snapshot.elapsed

    @property
    def calendar_seconds(self) -> float:
        """Calendar time: the first session's start to the end, downtime included."""
        return self.snapshot.calendar

    @property
    def unfinished(self) -> int:
        return sum(
            1 for t in self.tasks.values() if t.state not in ("succeeded", "failed", "skipped")
        )

    @property
    def exit_code(self) -> int:
        """0 all succeeded, 1 some task failed or was skipped, 130 interrupted."""
        return {"succeeded": 0, "interrupted": 130}.get(self.status, 1)

    def raise_for_status(self) -> RunResult:
        """This result when the run succeeded; else :class:`BudgetExhausted` (a limit
        stopped it) or :class:`PhalanxError` naming the status and reason. Results kept."""
        if self.status == "succeeded":
            return self
        reason = self.snapshot.reason or f"{self.unfinished} task(s) not finished"
        if self.status == "budget_exhausted":
            raise BudgetExhausted(f"run {self.run_id}: {reason}")
        raise PhalanxError(f"run {self.run_id} {self.status}: {reason}")

    def summary(self) -> str:
        return _render_summary(self)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (``phalanx run --json``): status, exit code, times,
        usage, paths and each task's state, agent, attempts, usage, error and output file."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "simulated": self.simulated,
            "active_seconds": round(self.wall_seconds, 3),
            "calendar_seconds": round(self.calendar_seconds, 3),
            "usage": self.usage.to_dict(),
            "journal": str(self.journal_path),
            "outputs_dir": str(self.outputs_dir),
            "tasks": {tid: _task_dict(t, self.outputs_dir) for tid, t in self.tasks.items()},
        }


def _task_dict(t: TaskResult, outputs: Path) -> dict[str, Any]:
    files = sorted(outputs.glob(f"{t.id}.*")) if t.ok else []
    return {
        "state": t.state,
        "agent": t.agent,
        "attempts": t.attempts,
        "usage": t.usage.to_dict(),
        "error_class": t.error_class,
        "error": t.error,
        "output_path": str(files[0]) if files else None,
    }


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where journals and outputs live: the argument, $PHALANX_STATE_DIR, or ./.phalanx."""
    return Path(path or os.environ.get("PHALANX_STATE_DIR") or ".phalanx")


def _hidden_state(path: str | os.PathLike[str] | None) -> Path:
    """The state dir of a run this process drives; no sandboxed command or hook may see it
    (the journal, the quota file, other runs' workspaces), wherever its ``cwd`` is."""
    from .agents import sandbox

    root = state_dir(path)
    sandbox.hide(root)
    return root


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class _JournalSink:
    __slots__ = ("journal", "run_id", "session")

    def __init__(self, journal: Journal, run_id: str, session: int) -> None:
        self.journal, self.run_id, self.session = journal, run_id, session

    def emit(self, event: Event) -> None:
        self.journal.append(self.run_id, self.session, event)


class _SafeSink:
    """A user sink that raises is reported once and then ignored: it never stops a run."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.broken = False

    def emit(self, event: Event) -> None:
        if self.broken:
            return
        try:
            self.sink.emit(event)
        except Exception as exc:
            self.broken = True
            sys.stderr.write(
                f"phalanx: event sink {self.sink!r} failed and was detached: {exc!r}\n"
            )


def _coerce_plan(plan: Plan | str | os.PathLike[str]) -> Plan:
    return plan if isinstance(plan, Plan) else load_plan(str(plan))


def _providers(
    plan: Plan,
    seed: int,
    flag: str | None = None,
    given: Mapping[str, Provider] | None = None,
) -> dict[str, Provider]:
    """One provider instance per ``provider:model`` (``given`` ones first); errors name the
    file and field."""
    names = {a.provider or plan.provider or DEFAULT_PROVIDER for a in plan.agents}
    if plan.policy == "llm":
        names.add(_router_name(plan))
    out = {}
    for name in sorted(names):
        if given and name in given:
            out[name] = given[name]
            continue
        try:
            out[name] = resolve_provider(name, plan.providers, seed=seed)
        except PlanError as exc:  # a bad option: it names its own field
            raise PlanError(exc.detail, file=plan.source, field=exc.field) from None
        except UsageError as exc:
            hint = (
                " (set 'provider: sim' in the plan or pass --provider sim)"
                if name == DEFAULT_PROVIDER
                else ""
            )
            field = "--provider" if flag == name else _provider_field(plan, name)
            raise PlanError(f"{exc}{hint}", file=plan.source, field=field) from None
    return out


def _router_name(plan: Plan) -> str:
    return plan.router.provider or plan.provider or DEFAULT_PROVIDER


def _provider_field(plan: Plan, name: str) -> str:
    """Where a provider name came from in the plan file: an agent's, or the default."""
    raw_agents = (plan.raw or {}).get("agents") or []
    for i, a in enumerate(raw_agents):
        if isinstance(a, dict) and a.get("provider") == name:
            return f"agents[{i}].provider"
    return "provider"


def merge_run(run_id: str, *, state: str | os.PathLike[str] | None = None) -> Any:
    """Merge every agent branch of a ``isolation: worktree`` run into the workspace repo;
    returns an :class:`phalanx.agents.isolation.MergeReport` (conflicts listed, none left open)."""
    from .agents import isolation

    journal = Journal(state_dir(state) / "journal.sqlite")
    rec = journal.get_run(run_id)
    journal.close()
    root = worktrees_dir(journal, rec.run_id)
    if not (root / isolation.BASE_FILE).exists():
        raise UsageError(f"run {rec.run_id} did not use isolation: worktree")
    return isolation.merge(root)


def approve(
    run_id: str,
    task_id: str,
    *,
    reject: bool = False,
    reason: str = "",
    state: str | os.PathLike[str] | None = None,
    by: str = "api",
) -> Decision:
    """Decide a task awaiting approval (``approval: required``, or a ``before_task`` hook
    asked): approve it (it runs) or, with ``reject``, refuse it (it is skipped with
    ``reason``, and only the tasks that need it with it). The decision goes into the run's
    journal: the process driving the run picks it up within a second, and a run no process
    drives acts on it when resumed. Raises :class:`UsageError` for an unknown run or task,
    a task not awaiting approval, or one already decided (the first decision stands)."""
    journal = Journal(state_dir(state) / "journal.sqlite")
    try:
        _, d = record_decision(journal, run_id, task_id, approve=not reject, reason=reason, by=by)
    finally:
        journal.close()
    return d


def _check_budgets(plan: Plan, providers: Mapping[str, Provider]) -> None:
    """A USD budget needs a price for every model (and a cost that is known)."""
    if plan.limits.max_usd is None:
        return
    for name in providers:
        if price_for(name, plan.prices) is None and not name.startswith("claude-code"):
            raise PlanError(
                f"limits.max_usd is set but {name!r} has no known price; add it under "
                f"prices: {{{name!r}: {{input: ..., output: ...}}}} (USD per million tokens)",
                file=plan.source,
                field="limits.max_usd",
            )


def _check_tools(plan: Plan, providers: Mapping[str, Provider]) -> None:
    """An agent with tools on a provider that cannot call them is refused, never dropped."""
    for a in plan.agents:
        name = a.provider or plan.provider or DEFAULT_PROVIDER
        if a.tools and not getattr(providers.get(name), "calls_tools", True):
            raise PlanError(
                f"agent {a.name} ({a.role}) has tools but {name} cannot call them: remove "
                "its tools or use another provider",
                file=plan.source,
                field="agents.tools",
            )


def _in_frozen_heap(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """``fn`` (a run, a resume) inside :func:`_frozen_heap`, its setup included."""

    @functools.wraps(fn)
    async def inside(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _frozen_heap():
            return await fn(*args, **kwargs)

    return inside


@_in_frozen_heap
async def run(
    plan: Plan | str | os.PathLike[str],
    *,
    agents: int | None = None,
    policy: str | None = None,
    provider: str | None = None,
    seed: int = 0,
    state: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    sinks: Sequence[EventSink] = (),
    hooks: Sequence[Any] = (),
    tools: Sequence[ToolSpec] = (),
    workspace: str | os.PathLike[str] | None = None,
    custom_providers: Mapping[str, Provider] | None = None,
    engine: Engine | str | None = None,
    address: str | None = None,
    flush_interval: float = 0.05,
    base_url: str | None = None,
) -> RunResult:
    """Run a plan (a :class:`Plan` or a plan file) to the end; returns its :class:`RunResult`.

    Overrides: ``agents`` (fleet size), ``policy``, ``provider`` (for every agent),
    ``engine`` (``"local"``, ``"ray"`` or an :class:`Engine`) and ``address`` (the Ray
    cluster: ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``).
    ``hooks``: Python hooks for the run; ``tools``: Python tools agents may name;
    ``workspace``: the agents' sandbox; ``custom_providers``: ``{name: Provider}`` used for
    agents whose provider is ``name`` (your own models, scripted models in tests).
    """
    p = _coerce_plan(plan).with_overrides(
        policy=policy,
        provider=provider,
        agents=agents,
        engine=engine if isinstance(engine, str) else None,
        address=address,
        base_url=base_url,
    )
    providers = _providers(p, seed, flag=provider, given=custom_providers)
    _check_budgets(p, providers)
    _check_tools(p, providers)
    journal = Journal(_hidden_state(state) / "journal.sqlite")
    rid = run_id or new_run_id()
    ws = _create_run(journal, p, rid, providers, seed, workspace)
    return await _execute(
        p,
        rid,
        journal,
        providers,
        Prior(session=journal.begin_session(rid, this_process())),
        seed=seed,
        sinks=sinks,
        hooks=hooks,
        tools=tools,
        workspace=ws,
        engine=None if isinstance(engine, str) else engine,
        custom=frozenset(custom_providers or {}),
        flush_interval=flush_interval,
    )


def _create_run(
    journal: Journal,
    plan: Plan,
    run_id: str,
    providers: Mapping[str, Provider],
    seed: int,
    workspace: str | os.PathLike[str] | None,
) -> Path:
    """The new run's row in the journal; returns the agents' workspace."""
    ws = run_workspace(plan, state_dir_of(journal) / "runs" / run_id, workspace)
    journal.create_run(
        run_id=run_id,
        plan_name=plan.name,
        plan_source=plan.source,
        plan=plan_json(plan),  # its text: the same as json of plan_to_dict, made faster
        options={"seed": seed, "workspace": str(ws)},
        simulated=any(is_simulated(n) for n in providers),
        task_count=len(plan.tasks),
    )
    return ws


@_in_frozen_heap
async def resume(
    run_id: str,
    *,
    state: str | os.PathLike[str] | None = None,
    sinks: Sequence[EventSink] = (),
    hooks: Sequence[Any] = (),
    tools: Sequence[ToolSpec] = (),
    custom_providers: Mapping[str, Provider] | None = None,
    engine: Engine | str | None = None,
    address: str | None = None,
    flush_interval: float = 0.05,
) -> RunResult:
    """Continue an interrupted or crashed run: succeeded tasks are kept, the rest re-run
    (on the run's engine, or on ``engine``: a cluster that is gone need not come back).
    A run that already succeeded is left as it is: :class:`NothingToResume` (no new
    session, nothing journaled)."""
    journal = Journal(_hidden_state(state) / "journal.sqlite")
    rec = journal.get_run(run_id)
    if rec.status == "succeeded":
        try:
            _restore_outputs(journal, rec.run_id, Plan.from_dict(rec.plan, source=rec.plan_source))
        finally:
            journal.close()
        raise NothingToResume(rec.run_id, rec.status)
    if rec.owner is not None and owner_alive(rec.owner):  # before any provider is built
        journal.close()
        raise UsageError(driven_by(rec.run_id, rec.owner))
    plan = Plan.from_dict(rec.plan, source=rec.plan_source).with_overrides(
        engine=engine if isinstance(engine, str) else None, address=address
    )
    seed = int(rec.options.get("seed", 0))
    providers = _providers(plan, seed, given=custom_providers)
    _check_budgets(plan, providers)
    _check_tools(plan, providers)
    session = await _take_over(journal, rec.run_id, providers)
    results = journal.results(rec.run_id)
    terminal = {
        tid: (row["state"], row["error_class"], row["error"])
        for tid, row in journal.task_rows(rec.run_id).items()
        if row["state"] in ("failed", "skipped")
    }
    prior = Prior(
        session=session,
        max_attempt_id=journal.max_attempt_id(rec.run_id),
        outputs={k: (r.output, r.agent, r.attempt_id) for k, r in results.items()},
        terminal=terminal,
        failed_attempts=journal.finished_attempts(rec.run_id),
        loops=journal.interrupted_loops(rec.run_id),
        parsed={k: r.parsed for k, r in results.items()},
        growth=journal.growth(rec.run_id),  # the plan as it had grown
    )
    return await _execute(
        plan,
        rec.run_id,
        journal,
        providers,
        prior,
        seed=seed,
        sinks=sinks,
        hooks=hooks,
        tools=tools,
        workspace=Path(
            rec.options.get("workspace")
            or run_workspace(plan, state_dir_of(journal) / "runs" / rec.run_id, None)
        ),
        engine=None if isinstance(engine, str) else engine,
        custom=frozenset(custom_providers or {}),
        flush_interval=flush_interval,
    )


def _restore_outputs(journal: Journal, run_id: str, plan: Plan) -> None:
    """A finished run's output files, written again from the journal: a run killed after
    its end was committed and before its files were all written has them then (nothing
    journaled changes)."""
    results = journal.results(run_id)
    prior = Prior(outputs={k: (r.output, r.agent, r.attempt_id) for k, r in results.items()})
    plan = grow_plan(plan, journal.growth(run_id))
    write_outputs(state_dir_of(journal) / "runs" / run_id / "outputs", plan,
                  load_records(plan, prior))  # fmt: skip


async def _take_over(journal: Journal, run_id: str, providers: Mapping[str, Provider]) -> int:
    """Begin the run's next session as its owner; refused (one line naming the pid and host)
    while the recorded owner lives. The check and the claim are one transaction, so of two
    resumes racing for a dead run exactly one wins."""
    try:
        return journal.begin_session(run_id, this_process(), alive=owner_alive)
    except UsageError:
        journal.close()
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        raise


async def _execute(
    plan: Plan,
    run_id: str,
    journal: Journal,
    providers: Mapping[str, Provider],
    prior: Prior,
    *,
    seed: int,
    sinks: Sequence[EventSink],
    hooks: Sequence[Any] = (),
    tools: Sequence[ToolSpec] = (),
    workspace: Path,
    engine: Engine | None,
    custom: frozenset[str] = frozenset(),
    flush_interval: float,
) -> RunResult:
    """Drive the run, this process its owner since ``prior.session`` began: build its
    orchestrator and run it to the end. A failure before it starts gives the run up. The
    plan's MCP servers are connected first and stopped at the end, whatever happens."""
    hub: McpHub | None = None
    try:
        tracker, prior = _status_so_far(journal, run_id, prior)
        hub = await _start_mcp(plan, journal, run_id, workspace, engine)
        orch = _orchestrator(
            plan, run_id, journal, providers, prior,
            [tracker, *log_sinks(), *map(_SafeSink, sinks)],
            seed=seed, hooks=hooks, tools=[*tools, *hub.tools.values()], workspace=workspace,
            engine=engine, custom=custom,
        )  # fmt: skip
    except BaseException as exc:
        if hub is not None:
            await hub.aclose()
        with contextlib.suppress(Exception):
            if isinstance(exc, Exception):  # not an interrupt: that leaves it resumable
                _fail_unstarted(journal, plan, run_id, prior.session, providers, exc)
            journal.release(run_id, prior.session)
            journal.close()
        raise
    outputs = state_dir_of(journal) / "runs" / run_id / "outputs"
    try:
        changes, notes = await _drive_to_end(
            orch, plan, prior.session, journal, providers, outputs, flush_interval
        )
    finally:
        await hub.aclose()
    tasks = _task_results(orch.plan, orch.records)  # the plan as it grew
    return RunResult(run_id=run_id, status=orch.status, tasks=tasks, snapshot=tracker.snapshot(),
                     simulated=orch.simulated, journal_path=journal.path, outputs_dir=outputs,
                     changes=changes, notes=tuple(notes))  # fmt: skip


def _fail_unstarted(
    journal: Journal,
    plan: Plan,
    run_id: str,
    session: int,
    providers: Mapping[str, Provider],
    exc: Exception,
) -> None:
    """A run that failed before its orchestrator started (an MCP server that did not start,
    a hook that cannot be built) ends ``failed`` in the journal with the reason, so no view
    shows it running (or stopped, waiting to be resumed) and its status can be read."""
    default = plan.provider or DEFAULT_PROVIDER
    now = time.time()
    journal.append(
        run_id,
        session,
        RunStarted(
            ts=now,
            run_id=run_id,
            plan=plan.name,
            session=session,
            policy=plan.policy,
            simulated=any(p.simulated for p in providers.values()),
            agents=tuple(
                AgentInfo(name=a.name or "", role=a.role, provider=a.provider or default)
                for a in plan.agents
            ),
            tasks=tuple(
                TaskInfo(id=t.id, title=t.label, category=t.category, needs=t.needs, role=t.role)
                for t in plan.tasks
            ),
        ),
    )
    reason = redact(one_line(f"did not start: {exc}", 300))
    journal.append(run_id, session, RunFinished(ts=now, status="failed", reason=reason))
    journal.flush()


async def _start_mcp(
    plan: Plan, journal: Journal, run_id: str, workspace: Path, engine: Engine | None
) -> McpHub:
    """The run's MCP servers, connected (stdio ones started, in the command sandbox), their
    tools listed; none: an empty hub. A stdio server's stderr goes to the run's folder."""
    if not plan.mcp:
        return McpHub()
    if plan.engine.kind != "local" or not isinstance(engine, LocalEngine | None):  # ray
        raise PlanError(
            "MCP servers need the local engine (their connections live in this process)",
            file=plan.source,
            field="mcp",
        )
    try:
        return await McpHub.start(
            plan.mcp,
            workspace=workspace,
            base_dir=_plan_dir(plan),
            sandbox=plan.commands.sandbox,
            network=plan.commands.network,
            env_pass=plan.env_pass,
            log_dir=state_dir_of(journal) / "runs" / run_id,
        )
    except UsageError as exc:
        raise PlanError(str(exc), file=plan.source, field="mcp") from None


def _plan_dir(plan: Plan) -> Path:
    """The plan file's folder (what its relative paths start from), else the current one."""
    if plan.source and Path(plan.source).is_file():
        return Path(plan.source).resolve().parent
    return Path.cwd()


def _orchestrator(
    plan: Plan,
    run_id: str,
    journal: Journal,
    providers: Mapping[str, Provider],
    prior: Prior,
    sinks: list[EventSink],
    *,
    seed: int,
    hooks: Sequence[Any],
    tools: Sequence[ToolSpec],
    workspace: Path,
    engine: Engine | None,
    custom: frozenset[str],
) -> Orchestrator:
    """The run's orchestrator: its agents' runners, messages, router, hooks and sinks (the
    journal's first)."""
    gate = RunGate(_governor(plan, providers, state_dir_of(journal)))
    late = _LateOrchestrator()
    comms = Comms(
        {a.name or "": a.role for a in plan.agents}, plan.messaging, clock=late.now, emit=late.emit
    )
    factory = RunnerFactory(
        plan,
        providers,
        gate,
        agent_workspaces(plan, run_id, workspace, journal),
        {**BUILTIN_TOOLS, **COMMS_TOOLS, SPAWN_TOOL: SPAWN_TOOL_SPEC, **{t.name: t for t in tools}},
        comms,
        seed=seed,
        custom=custom,
        styles=Styles(plan.own_styles()),  # this run's: nothing process-wide changes
    )
    orch = late.orch = Orchestrator(
        plan,
        run_id=run_id,
        engine=engine or _engine_for(plan),
        runners={a.name or "": factory(a) for a in plan.agents},
        runner_factory=factory,
        comms=comms,
        router=_router(plan, providers, gate),
        sinks=[_JournalSink(journal, run_id, prior.session), *sinks],
        simulated=any(p.simulated for p in providers.values()),
        timed=any(getattr(p, "timed", True) for p in providers.values()),
        prior=prior,
        seed=seed,
        gate=gate,
        checkpoint=journal.flush_if_full,
        commit=journal.flush,
        hooks=from_config(
            [*plan.hooks, *hooks], where="hooks", file=plan.source, env_pass=plan.env_pass
        ),
        decisions=journal,
    )
    return orch


def _governor(plan: Plan, providers: Mapping[str, Provider], state: Path) -> RateGovernor:
    """The run's rate governor. Keys whose provider names its quota (an API key on a
    server) keep their window in ``<state>/quota.sqlite``, shared by every run on this
    machine; if that file cannot be used, in this process only."""
    shared = {name: q for name, p in providers.items() if (q := getattr(p, "quota_id", None))}
    store = None
    if shared:
        try:
            store = QuotaStore(state / "quota.sqlite")
        except QuotaStoreError as exc:
            logging.getLogger(__name__).warning("rate windows kept in this process: %s", exc)
    return RateGovernor(
        plan.limits.rate_limits,
        defaults=public_defaults(plan.providers),
        store=store,
        shared=shared,
    )


def _status_so_far(journal: Journal, run_id: str, prior: Prior) -> tuple[StatusTracker, Prior]:
    """The status fold to continue: a resumed run's folds its whole history (and its spend
    so far counts against the budgets)."""
    tracker = StatusTracker()
    if prior.session > 1:
        waits = PriorWaits()
        for _, ev in journal.read_events(run_id):
            tracker.emit(ev)
            waits.emit(ev)
        prior = dataclasses.replace(prior, spent=tracker.usage, approvals=waits.waits)
    return tracker, prior


class _LateOrchestrator:
    """The run's messages and blackboard are built before the orchestrator they report to:
    until it exists their events go nowhere and their clock is the wall clock."""

    orch: Orchestrator | None = None

    def now(self) -> float:
        return self.orch.now() if self.orch is not None else time.time()

    def emit(self, event: Event) -> None:
        if self.orch is None:
            return
        if isinstance(event, MessageSent):
            self.orch.message_sent(event)
        else:
            self.orch.emit(event)


def _router(plan: Plan, providers: Mapping[str, Provider], gate: RunGate) -> LLMPolicy | None:
    if plan.policy != "llm":
        return None
    name = _router_name(plan)
    return LLMPolicy(providers[name], plan.router, gate, key=name)


async def _drive_to_end(
    orch: Orchestrator,
    plan: Plan,
    session: int,
    journal: Journal,
    providers: Mapping[str, Provider],
    outputs: Path,
    flush_interval: float,
) -> tuple[dict[str, list[str]] | None, list[str]]:
    """Run the orchestrator, with the journal flushed every ``flush_interval`` and the run's
    heartbeat beside it; whatever happens, flush the journal, write the outputs, give up the
    run's ownership, close the providers. Returns the isolation's changed files and the
    notes for the summary."""
    run_id = orch.run_id
    stream = OutputStream(run_id, outputs, _namer(orch), lambda: len(orch.tasks))
    journal.on_commit = stream.committed
    journal.expect(3 * len(orch.tasks))  # an attempt's start and end, its task's success
    loop = asyncio.get_running_loop()
    background = [
        loop.create_task(_flush_every(journal, flush_interval)),
        loop.create_task(_heartbeat_every(journal, run_id, session, HEARTBEAT_EVERY)),
    ]
    try:
        await orch.run()
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            changes = finish_isolation(plan, run_id, journal, orch)
            journal.flush()
            journal.on_commit = None
            written = stream.finish()
            notes = write_outputs(outputs, orch.plan, orch.records, written, _specs(orch))
            journal.release(run_id, session)
        finally:  # whatever failed above: the journal's writer process is not left behind
            journal.close()
            if orch.governor is not None:
                orch.governor.close()
            for provider in providers.values():
                with contextlib.suppress(Exception):
                    await provider.aclose()
    return changes, notes


_frozen_runs = 0  # runs of this process inside _frozen_heap
_froze = False  # whether they froze the heap (not when the program had frozen it already)
_thresholds: tuple[int, int, int] | None = None  # the collector's before the runs raised it
_frozen_lock = threading.Lock()
RUN_GC_THRESHOLD = 20_000  # allocations between young collections while runs go on


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """While runs go on, the objects that existed when the first began (modules, SDKs, the
    plan and its records) are left out of the garbage collector's passes (``gc.freeze``):
    a full pass then walks only what the runs made, instead of every object of the process
    (measured: one full pass of ~60 ms per 500 requests on the openai SDK,
    docs/benchmarks.md). They are handed back when the last run ends; nothing is kept
    alive by it, a cycle among them that died meanwhile is collected then. A program that
    froze objects itself (a pre-forking server) is left to manage its own.

    The young generation's threshold is raised to :data:`RUN_GC_THRESHOLD` allocations
    meanwhile (700 by default): a run keeps thousands of coroutines, futures and records
    alive, which every young pass walks again, so the default spent 10-19% of a
    10,000-task run's CPU in the collector (measured, docs/benchmarks.md, B2); objects
    freed by their count (most of a run's) never wait for it. The program's thresholds are
    put back when the last run ends, unless it set others meanwhile."""
    global _frozen_runs, _froze, _thresholds
    with _frozen_lock:  # runs in several threads count on one counter
        if _frozen_runs == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            young, *older = gc.get_threshold()
            if 0 < young < RUN_GC_THRESHOLD:  # 0: the program turned collection off
                _thresholds = (young, *older)  # type: ignore[assignment]
                gc.set_threshold(RUN_GC_THRESHOLD, *older)
        _frozen_runs += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_runs -= 1
            if _frozen_runs == 0:
                if _froze:
                    gc.unfreeze()
                if _thresholds is not None:
                    young, *older = gc.get_threshold()
                    if young == RUN_GC_THRESHOLD:  # not changed meanwhile (the older may be)
                        gc.set_threshold(_thresholds[0], *older)
                    _thresholds = None


def _specs(orch: Orchestrator) -> dict[str, AgentSpec]:
    """The run's agents by name as they run: the plan's and those the autoscaler cloned
    (which the plan does not list)."""
    out: dict[str, AgentSpec] = {}
    for name, runner in orch.runners.items():
        spec = getattr(runner, "spec", None)
        if isinstance(spec, AgentSpec):
            out[name] = spec
    return out


def _namer(orch: Orchestrator) -> Callable[[str, str], str | None]:
    """A succeeded task's output file name, from its id and agent (the plan as it grows);
    ``None`` for a tts answer (its audio is made with the rest at the end)."""
    agents = {a.name or "": a for a in orch.plan.agents}
    known = Styles(orch.plan.own_styles())

    def name_of(task_id: str, agent: str) -> str | None:
        task = orch.tasks.get(TaskId(task_id))
        spec = agents.get(agent)
        if spec is None:  # an agent the autoscaler cloned: its runner has its spec
            found = getattr(orch.runners.get(agent), "spec", None)
            spec = found if isinstance(found, AgentSpec) else None
        if task is None or answer_style(task, spec) == "tts":
            return None
        return output_name(task, spec, known)

    return name_of


def _engine_for(plan: Plan) -> Engine:
    if plan.engine.kind == "ray":
        from .runtime.ray_engine import RayEngine

        return RayEngine(plan.engine)
    return LocalEngine()


async def _flush_every(journal: Journal, interval: float) -> None:
    """Commit the buffered events every ``interval`` (with the journal's writer thread,
    ``PHALANX_JOURNAL_THREAD=1``, hand them to it without waiting)."""
    while True:
        await asyncio.sleep(interval)
        journal.flush(wait=False)


async def _heartbeat_every(journal: Journal, run_id: str, session: int, interval: float) -> None:
    """The run's heartbeat: its owner is still driving it (one small update, off the
    per-task path; a busy journal skips a beat rather than stopping the run)."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(JournalError):
            journal.heartbeat(run_id, session)


def _parsed(t: Task, rec: TaskRecord, agent: AgentSpec | None, styles: Styles) -> Any:
    """A succeeded task's answer parsed in its style (typed: into its output type)."""
    if rec.state != "succeeded" or agent is None:
        return None
    output_type = t.output_type if t.output_type is not None or t.style else agent.output_type
    try:
        value = (  # as the attempt parsed it, unless it ran in an earlier session
            rec.parsed
            if rec.parsed_here
            else parse_output(style_of(t, agent), rec.output, styles=styles)
        )
        return value if output_type is None else typed_value(output_type, value)
    except (PhalanxError, ValueError):  # an answer kept from before a change of style
        return None


def _task_results(plan: Plan, records: Mapping[str, TaskRecord]) -> dict[str, TaskResult]:
    styles = Styles(plan.own_styles())
    agents = {a.name or "": a for a in plan.agents}
    return {t.id: _task_result(t, records[t.id], agents, styles) for t in plan.tasks}


def _task_result(
    t: Task, r: TaskRecord, agents: Mapping[str, AgentSpec], styles: Styles
) -> TaskResult:
    return TaskResult(
        id=t.id,
        state=r.state if r.state in ("succeeded", "failed", "skipped") else "pending",
        output=r.output,
        agent=r.agent,
        # a foreach template succeeds without an attempt (its attempt id is 0)
        attempts=r.attempts + (1 if r.state == "succeeded" and r.attempt_id else 0),
        usage=r.usage,
        error_class=r.error_class,
        error=r.error,
        parsed=_parsed(t, r, agents.get(r.agent or ""), styles),
    )


run_sync = blocking(run, "run_sync", ":func:`run` for code without an event loop.")


class RunOptions(TypedDict, total=False):
    """The keywords of :func:`run` after the plan, for code that passes them on (the
    patterns' ``run``/``run_sync``); a test keeps the two lists equal."""

    agents: int | None
    policy: str | None
    provider: str | None
    seed: int
    state: str | os.PathLike[str] | None
    run_id: str | None
    sinks: Sequence[EventSink]
    hooks: Sequence[Any]
    tools: Sequence[ToolSpec]
    workspace: str | os.PathLike[str] | None
    custom_providers: Mapping[str, Provider] | None
    engine: Engine | str | None
    address: str | None
    flush_interval: float
    base_url: str | None


WIDTH = 80  # the summary's lines that hold the run id fit a terminal this wide, id uncut


def _render_summary(r: RunResult) -> str:
    """The end-of-run summary the CLI prints (and ``RunResult.summary()`` returns); a line
    holding the run id fits :data:`WIDTH` columns, the id never cut (on a line of its own
    if need be)."""
    s = r.snapshot
    p = s.tasks
    sim = " · SIMULATED (sim provider)" if r.simulated else ""
    u = s.usage
    took = f"{fmt_duration(s.elapsed)} ({s.elapsed:.2f}s)"
    if s.resumed:  # e.g. "30s active (2m 00s calendar, 2 sessions)"
        took = s.elapsed_text()
    lines = [
        *packed([f"run {r.run_id} {r.status}", f" in {took}", *([sim] if sim else [])], WIDTH),
        (
            f"  tasks: {p.failed} failed, {p.skipped} skipped, {p.succeeded} succeeded"
            if p.troubled
            else f"  tasks: {p.succeeded} succeeded, 0 failed, 0 skipped"
        )
        + (f", {r.unfinished} not finished" if r.unfinished else "")
        + f" (of {s.total})",
        f"  attempts: {s.attempts} ({s.failed_attempts} failed) · tokens: "
        f"{u.input_tokens:,} in / {u.output_tokens:,} out · cost: {fmt_cost(u, r.simulated)}",
    ]
    if r.status in ("budget_exhausted", "error"):
        lines.append(f"  why: {s.reason}")
    elif r.status == "interrupted" and not s.reason.startswith("interrupted"):
        lines.append(f"  why: {s.reason.split(': resume with')[0]}")  # e.g. the cluster is gone
    speedup = s.speedup_claim  # none claimed without timing (a zero-latency sim run)
    if speedup.value is not None:
        lines.append(
            f"  speedup: {speedup.text()} over the sum of task times "
            f"({s.busy_seconds:.2f}s of work in {s.elapsed:.2f}s"
            + (" active)" if s.resumed else ")")
        )
    elif s.attempts:
        lines.append(f"  speedup: {speedup.text()}")
    if r.changes is not None:
        lines.append("  changed files (each agent on its own branch):")
        lines += [
            f"    {agent}: {', '.join(files) or 'nothing'}" for agent, files in r.changes.items()
        ]
        lines += _labelled("merge them with", f"phalanx merge {r.run_id}")
    lines += [f"  note: {n}" for n in r.notes]
    lines += _labelled("outputs", f"{r.outputs_dir}/")
    lines += _labelled("journal", str(r.journal_path))
    lines += _labelled("details", f"phalanx status {r.run_id}")
    if r.status == "interrupted":
        lines += _labelled("resume with", f"phalanx resume {r.run_id}")
    return "\n".join(lines)


def _labelled(label: str, value: str) -> list[str]:
    """``  label: value`` on one line when it fits :data:`WIDTH` columns, else the value (a
    command or path holding the run id) whole on a line of its own."""
    return packed([f"  {label}:", f" {value}"], WIDTH)

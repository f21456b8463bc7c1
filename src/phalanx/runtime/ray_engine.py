"""The Ray engine: agents hosted by Ray async actors, many agents per actor.

A Ray actor is a whole process, so one actor per agent cannot reach a large fleet. Each
*agent host* (an async actor) runs many agents concurrently; hosts are spread over the
cluster's nodes (by default one per CPU). The scheduler, the rate governor, budgets and
the journal stay on the driver, the single source of truth: hosts get blueprints (no
secrets) and attempts, and send back outcomes and a stream of small messages (usage,
events, rate permits, driver-side tool calls; see :mod:`phalanx.runtime.remote`).

Faults: an attempt whose host dies comes back as ``lost`` (re-queued by the orchestrator
with a new attempt id, not counted against ``max_attempts``); Ray restarts the host up to
``max_restarts`` times, after which its agents move to the surviving hosts. Losing the
cluster itself ends the run as interrupted (``phalanx resume`` continues it).

Ray is imported only when this engine starts: ``import phalanx`` never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agents.tools import call_tool
from ..comms.tools import COMMS_TOOLS
from ..events import AgentPlaced
from ..exceptions import ErrorClass, UsageError
from ..plan.model import EngineConfig
from .engine import EngineLost, OnOutcome
from .executor import AgentRunner, Attempt, Outcome, failed
from .governor import Gate
from .remote import AgentBlueprint, HostCore, Message, blueprint_of, custom_styles

__all__ = ["RayEngine"]

POLL_SECONDS = 1.0  # how long a host's message poll waits when there is nothing to say
RECOVER_SECONDS = 60.0  # how long to wait for Ray to restart a dead host
GCS_LOST_AFTER = 20.0  # the head silent this long: end the run (before Ray ends the process)
GCS_PROBE_SECONDS = 2.0
ROOM_GRACE_SECONDS = 5.0  # how long to wait for resources that hosts being stopped hold
DRIVER_TOOLS = frozenset(COMMS_TOOLS)  # messages and shared context live on the driver


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise UsageError("engine 'ray' needs Ray: pip install 'phalanx[ray]'") from None
    return ray


@dataclass(eq=False)
class _Host:
    """The driver's view of one agent host."""

    id: str
    actor: Any
    profile: tuple[tuple[str, float], ...]
    agents: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)  # agents the host has built
    node: str = ""
    pid: int = 0
    restarts: int = 0
    dead: bool = False
    recovering: bool = False
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    poller: asyncio.Task[None] | None = None


class RayEngine:
    """Runs a plan's agents on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, config: EngineConfig | None = None, **ray_init: Any) -> None:
        self.config = config or EngineConfig(kind="ray")
        self.ray_init = ray_init  # extra ray.init arguments (a Ray that phalanx starts)
        self.hosts: list[_Host] = []
        self.host_of: dict[str, _Host] = {}
        self.runners: dict[str, AgentRunner] = {}
        self.blueprints: dict[str, AgentBlueprint] = {}
        self.agents_per_host: int | None = self.config.agents_per_host
        self._on_outcome: OnOutcome | None = None
        self._gate: Gate = Gate()
        self._governed: set[str] = set()
        self._stopped: str | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._refs: dict[int, Any] = {}  # attempt id -> the Ray call running it
        self._cancelled: set[int] = set()
        self._tickets: dict[int, object] = {}
        self._ticket_ids = itertools.count(1)
        self._host_ids = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._owns_ray = False
        self._closing = False
        self._gcs_ok = 0.0
        self.lost: str | None = None
        self._ray: Any = None

    # -- start -----------------------------------------------------------------------------
    async def start(self, runners: Mapping[str, AgentRunner], on_outcome: OnOutcome) -> None:
        ray = self._ray = _ray()
        self._on_outcome = on_outcome
        self.runners = dict(runners)
        if self.runners:
            self._gate = next(iter(self.runners.values())).gate
        if not ray.is_initialized():
            await asyncio.to_thread(self._init_ray)
        self.blueprints = {n: blueprint_of(r, DRIVER_TOOLS) for n, r in self.runners.items()}
        self._governed = {bp.key for bp in self.blueprints.values() if self._gate.governs(bp.key)}
        self._stopped = self._gate.stopped()
        groups: dict[tuple[tuple[str, float], ...], list[str]] = {}
        for name, r in self.runners.items():
            groups.setdefault(self._profile(r.spec.role), []).append(name)
        plan = self._layout(groups)
        await self._check_room(plan)
        for profile, names_per_host in plan:
            for names in names_per_host:
                self._new_host(profile, names)
        try:
            await asyncio.gather(*(self._placed(h, "started") for h in self.hosts))
        except ray.exceptions.RayError as exc:
            await self.stop()
            raise UsageError(f"engine ray: an agent host could not start: {_cause(exc)}") from None
        for h in self.hosts:
            h.poller = self._spawn(self._poll(h))
        self._gcs_ok = time.monotonic()
        threading.Thread(target=self._probe_head, name="phalanx-ray-head", daemon=True).start()
        self._spawn(self._watch_head())

    def _probe_head(self) -> None:
        """In a thread (a call to a dead head may block): note when the head last answered."""
        while not self._closing:
            with contextlib.suppress(Exception):
                self._ray.available_resources()
                self._gcs_ok = time.monotonic()
            time.sleep(GCS_PROBE_SECONDS)

    async def _watch_head(self) -> None:
        """Without its head (GCS) a Ray cluster can neither restart nor place hosts, and Ray
        ends a driver that cannot reach it for long: end the run first, cleanly."""
        while not self._closing:
            await asyncio.sleep(1.0)
            silent = time.monotonic() - self._gcs_ok
            if silent > GCS_LOST_AFTER:
                self._lose(f"the Ray head has not answered for {silent:.0f} s")
                return

    def _init_ray(self) -> None:
        ray = self._ray
        kwargs: dict[str, Any] = {
            "address": self.config.address,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "error",
            **self.ray_init,
        }
        if self.config.address is None and self.config.num_cpus is not None:
            kwargs["num_cpus"] = self.config.num_cpus
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise UsageError(
                f"engine ray: cannot reach the cluster at {self.config.address}: {exc}"
            ) from None
        self._owns_ray = True

    def _profile(self, role: str) -> tuple[tuple[str, float], ...]:
        """The resources a host of this role requests (``engine.roles``, else host_cpus)."""
        wanted = dict(self.config.roles.get(role) or {"num_cpus": self.config.host_cpus})
        wanted.setdefault("num_cpus", self.config.host_cpus)
        return tuple(sorted((k, float(v)) for k, v in wanted.items()))

    def _cluster_cpus(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def _layout(
        self, groups: Mapping[tuple[tuple[str, float], ...], list[str]]
    ) -> list[tuple[tuple[tuple[str, float], ...], list[list[str]]]]:
        """Agents per host, per resource profile: ``hosts`` (default one per cluster CPU)
        spread evenly, or ``agents_per_host`` agents each."""
        total = sum(len(v) for v in groups.values())
        hosts = self.config.hosts or self._cluster_cpus()
        if self.agents_per_host is None:
            per = max(1, math.ceil(total / max(1, hosts)))
        else:
            per = self.agents_per_host
        out = []
        for profile, names in groups.items():
            n_hosts = max(1, math.ceil(len(names) / per))
            out.append((profile, [names[i::n_hosts] for i in range(n_hosts)]))
        return out

    async def _check_room(
        self, plan: list[tuple[tuple[tuple[str, float], ...], list[list[str]]]]
    ) -> None:
        """Fail with what is missing rather than wait for resources that never come
        (a few seconds of grace: hosts of a run that just ended free theirs late)."""
        need: dict[str, float] = {}
        for profile, per_host in plan:
            for key, amount in profile:
                need[key] = need.get(key, 0.0) + amount * len(per_host)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOM_GRACE_SECONDS
        # the cluster's free resources are Ray's state, not ours: nothing to wait on but a poll
        while self._shortfall(need) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if self._shortfall(need):
            raise UsageError(
                f"engine ray: {sum(len(h) for _, h in plan)} agent hosts need {_fmt(need)} but "
                f"the cluster has {_fmt(self._free(), need)} free; raise "
                "engine.agents_per_host or lower engine.host_cpus"
            )

    def _free(self) -> dict[str, float]:
        free = self._ray.available_resources()
        return {
            _RESOURCE_KEYS.get(k, k): float(v) for k, v in free.items() if not k.startswith("node:")
        }

    def _shortfall(self, need: Mapping[str, float]) -> dict[str, float]:
        free = self._free()
        return {k: v - free.get(k, 0.0) for k, v in need.items() if v > free.get(k, 0.0) + 1e-9}

    def _new_host(self, profile: tuple[tuple[str, float], ...], names: list[str]) -> _Host:
        ray = self._ray
        res = dict(profile)
        options: dict[str, Any] = {
            "num_cpus": res.pop("num_cpus", self.config.host_cpus),
            "num_gpus": res.pop("num_gpus", 0),
            "max_restarts": self.config.max_restarts,
            "max_task_retries": 0,
            "max_concurrency": 10_000,
            "scheduling_strategy": "SPREAD",
        }
        if "memory" in res:
            options["memory"] = res.pop("memory")
        if res:
            options["resources"] = res
        host_id = f"host-{next(self._host_ids)}"
        actor = (
            _actor_class(ray)
            .options(**options)
            .remote(
                host_id,
                {n: self.blueprints[n] for n in names},
                frozenset(self._governed),
                custom_styles(self.runners.values()),
                self._stopped,
            )
        )
        h = _Host(id=host_id, actor=actor, profile=profile, agents=set(names), confirmed=set(names))
        self.hosts.append(h)
        for n in names:
            self.host_of[n] = h
        return h

    async def _placed(self, h: _Host, reason: str) -> None:
        node, pid, agents = await h.actor.where.remote()
        h.node, h.pid, h.confirmed = node, pid, set(agents)
        for name in sorted(h.agents):
            self._gate.note(AgentPlaced, agent=name, host=h.id, node=node, pid=pid, reason=reason)

    # -- attempts --------------------------------------------------------------------------
    def submit(self, attempt: Attempt) -> None:
        runner = self.runners[attempt.agent]
        inbox = runner.inbox(attempt) if runner.comms is not None else ""
        self._push_stopped()
        task = asyncio.get_running_loop().create_task(self._attempt(attempt, inbox))
        self._inflight[attempt.attempt_id] = task

    async def _attempt(self, attempt: Attempt, inbox: str) -> None:
        """Send the attempt to its agent's host (once the host is back, if it is being
        replaced) and deliver its outcome."""
        ray = self._ray
        h = self.host_of[attempt.agent]
        try:
            while h.recovering:
                await h.recovered.wait()
                h = self.host_of[attempt.agent]
            blueprint = None if attempt.agent in h.confirmed else self.blueprints[attempt.agent]
            ref = h.actor.run.remote(attempt, inbox, blueprint)
            self._refs[attempt.attempt_id] = ref
            messages, outcome = await ref
            h.confirmed.add(attempt.agent)
        except (ray.exceptions.TaskCancelledError, asyncio.CancelledError):
            return
        except ray.exceptions.RayActorError as exc:
            outcome = failed(
                attempt,
                ErrorClass.LOST,
                f"its agent host {h.id} (node {h.node[:12]}, pid {h.pid}) died: "
                + _first_line(exc),
            )
            self._recover_soon(h)
        except ray.exceptions.RayError as exc:
            if not self._closing:
                self._lose(f"the Ray cluster stopped answering: {_first_line(exc)}")
            return
        else:
            self._handle(h, messages)
        finally:
            self._inflight.pop(attempt.attempt_id, None)
            self._refs.pop(attempt.attempt_id, None)
        if attempt.attempt_id in self._cancelled:
            self._cancelled.discard(attempt.attempt_id)
            return
        assert self._on_outcome is not None
        self._on_outcome(outcome)

    def cancel(self, attempt_id: int) -> bool:
        task = self._inflight.pop(attempt_id, None)
        if task is None:
            return False
        ref = self._refs.pop(attempt_id, None)
        if ref is not None:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
        task.cancel()
        return True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- messages from hosts ---------------------------------------------------------------
    async def _poll(self, h: _Host) -> None:
        ray = self._ray
        while not self._closing and not h.dead:
            try:
                messages = await h.actor.messages.remote(POLL_SECONDS)
            except ray.exceptions.RayActorError:
                self._recover_soon(h)
                await h.recovered.wait()
                continue
            except ray.exceptions.RayError as exc:
                if not self._closing:
                    self._lose(f"the Ray cluster stopped answering: {_first_line(exc)}")
                return
            self._handle(h, messages)

    def _handle(self, h: _Host, messages: list[Message]) -> None:
        gate = self._gate
        for m in messages:
            kind = m[0]
            if kind == "spend":
                gate.spend(m[1])
            elif kind == "note":
                gate.note(m[1], **m[2])
            elif kind == "settle":
                gate.settle(self._tickets.pop(m[1], None), m[2])
            elif kind == "pause" or kind == "learn":
                getattr(gate, kind)(m[1], m[2])
                self._govern(m[1])
            elif kind == "release":
                gate.release(self._tickets.pop(m[1], None))
            elif kind == "acquire":
                self._spawn(self._grant(h, *m[1:]))
            elif kind == "tool":
                self._spawn(self._driver_tool(h, *m[1:]))
            elif kind == "commit":  # the notes before it are emitted: commit, then answer
                self._spawn(self._commit(h, m[1]))
            elif kind == "spawn":  # spawn_tasks: the run grows on the driver
                self._spawn(self._grow(h, *m[1:]))
        self._push_stopped()

    async def _commit(self, h: _Host, rid: int) -> None:
        await self._gate.commit()
        h.actor.reply.remote(rid, None)

    async def _grow(self, h: _Host, rid: int, *call: Any) -> None:
        h.actor.reply.remote(rid, await self._gate.spawn(*call))

    async def _grant(self, h: _Host, rid: int, key: str, tokens: int, agent: str, tid: str) -> None:
        ticket = await self._gate.acquire(key, tokens, agent=agent, task_id=tid)
        ticket_id = next(self._ticket_ids)
        self._tickets[ticket_id] = ticket
        h.actor.reply.remote(rid, ticket_id)

    async def _driver_tool(self, h: _Host, rid: int, agent: str, name: str, args: Any) -> None:
        runner = self.runners[agent]
        assert runner.tool_context is not None
        result = await call_tool(runner.tools[name], args, runner.tool_context)
        h.actor.reply.remote(rid, result)

    def _govern(self, key: str) -> None:
        if key not in self._governed:
            self._governed.add(key)
            for h in self._live():
                h.actor.govern.remote(key)

    def _push_stopped(self) -> None:
        reason = self._gate.stopped()
        if reason != self._stopped:
            self._stopped = reason
            for h in self._live():
                h.actor.set_stopped.remote(reason)

    # -- faults ----------------------------------------------------------------------------
    def _recover_soon(self, h: _Host) -> None:
        """After an actor error: new attempts for the host's agents wait until it is back
        (or its agents have moved); one recovery runs per host."""
        if h.recovering or h.dead or self._closing:
            return
        h.recovering = True
        h.recovered.clear()
        self._spawn(self._recover(h))

    async def _recover(self, h: _Host) -> None:
        """Wait for Ray to restart the host (its agents come back with it), or, once it is
        dead for good (or does not come back in time), move its agents to other hosts."""
        ray = self._ray
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RECOVER_SECONDS
            while loop.time() < deadline and not self._closing:
                try:
                    node, pid, _ = await asyncio.wait_for(h.actor.where.remote(), 5)
                except ray.exceptions.ActorDiedError:
                    break
                except (ray.exceptions.RayActorError, TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                if (node, pid) != (h.node, h.pid):
                    h.restarts += 1
                    await self._placed(
                        h, f"host restarted ({h.restarts} of {self.config.max_restarts})"
                    )
                return
            h.dead = True
            with contextlib.suppress(Exception):
                ray.kill(h.actor, no_restart=True)
            self._move_agents(h)
        finally:
            h.recovering = False
            h.recovered.set()

    def _move_agents(self, h: _Host) -> None:
        live = [x for x in self._live() if x.profile == h.profile] or self._live()
        if not live:
            self._lose(f"every agent host died (the last: {h.id} on node {h.node[:12]})")
            return
        for name in sorted(h.agents):
            target = min(live, key=lambda x: len(x.agents))
            target.agents.add(name)
            self.host_of[name] = target
            self._gate.note(
                AgentPlaced,
                agent=name,
                host=target.id,
                node=target.node,
                pid=target.pid,
                reason=f"moved: {h.id} died",
            )
        h.agents.clear()

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        assert self._on_outcome is not None
        self._on_outcome(EngineLost(reason))

    def _live(self) -> list[_Host]:
        return [h for h in self.hosts if not h.dead]

    # -- more agents -----------------------------------------------------------------------
    def add_agent(self, name: str, runner: AgentRunner) -> str | None:
        """Place a new agent on a host of its profile with room, or start a host for it;
        when the cluster has no room for another host, say what is missing."""
        self.runners[name] = runner
        self.blueprints[name] = blueprint_of(runner, DRIVER_TOOLS)
        profile = self._profile(runner.spec.role)
        cap = self.agents_per_host
        room = [
            h for h in self._live() if h.profile == profile and (cap is None or len(h.agents) < cap)
        ]
        if room:
            h = min(room, key=lambda x: len(x.agents))
            h.agents.add(name)
            self.host_of[name] = h
            self._gate.note(
                AgentPlaced, agent=name, host=h.id, node=h.node, pid=h.pid, reason="added"
            )
            return None
        need = dict(profile)
        short = self._shortfall(need)
        if short:
            del self.runners[name], self.blueprints[name]
            return (
                f"the cluster has no room for another agent host: it needs {_fmt(need)}, "
                f"{_fmt(self._free(), need)} free"
            )
        h = self._new_host(profile, [name])
        h.confirmed = set()
        self._spawn(self._start_host(h))
        return None

    async def _start_host(self, h: _Host) -> None:
        await self._placed(h, "added")
        h.poller = self._spawn(self._poll(h))

    # -- stop ------------------------------------------------------------------------------
    async def stop(self) -> None:
        self._closing = True
        ray = self._ray
        if ray is None:
            return
        for aid in list(self._inflight):
            self.cancel(aid)
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.lost is not None:
            return  # nothing to ask a cluster that is gone (a call could block)
        for h in self.hosts:
            with contextlib.suppress(Exception):
                ray.kill(h.actor, no_restart=True)
        self.hosts.clear()
        if self._owns_ray:
            await asyncio.to_thread(ray.shutdown)
            self._owns_ray = False

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


_RESOURCE_KEYS = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


def _fmt(resources: Mapping[str, float], keys: Mapping[str, float] | None = None) -> str:
    """``1 CPU, 1 GPU``; with ``keys``, only those resources (0 when absent)."""
    shown = {k: resources.get(k, 0.0) for k in keys} if keys is not None else dict(resources)
    names = {"num_cpus": "CPU", "num_gpus": "GPU"}
    return ", ".join(f"{v:g} {names.get(k, k)}" for k, v in sorted(shown.items())) or "nothing"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _cause(exc: BaseException) -> str:
    """The last meaningful line of a Ray error (the remote exception's own message)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "^^^" not in ln]
    return (lines[-1] if lines else type(exc).__name__)[:300]


_ACTOR: Any = None


def _actor_class(ray: Any) -> Any:
    """The agent host actor (defined on first use, so that ray is imported only here)."""
    global _ACTOR
    if _ACTOR is None:

        class AgentHost:
            def __init__(
                self,
                host_id: str,
                blueprints: Mapping[str, AgentBlueprint],
                governed: frozenset[str],
                styles: Mapping[str, Any],
                stopped: str | None,
            ) -> None:
                self.core = HostCore(
                    host_id, blueprints, governed=governed, styles=styles, stopped=stopped
                )

            async def where(self) -> tuple[str, int, list[str]]:
                node = ray.get_runtime_context().get_node_id()
                return node, os.getpid(), sorted(self.core.runners)

            async def run(
                self, attempt: Attempt, inbox: str, blueprint: AgentBlueprint | None
            ) -> tuple[list[Message], Outcome]:
                return await self.core.run(attempt, inbox, blueprint)

            async def messages(self, wait: float) -> list[Message]:
                return await self.core.messages(wait)

            async def reply(self, request_id: int, value: Any) -> None:
                self.core.reply(request_id, value)

            async def set_stopped(self, reason: str | None) -> None:
                self.core.set_stopped(reason)

            async def govern(self, key: str) -> None:
                self.core.govern(key)

            async def cancel(self, attempt_id: int) -> bool:
                return self.core.cancel(attempt_id)

        _ACTOR = ray.remote(AgentHost)
    return _ACTOR

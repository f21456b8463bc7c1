"""Plans that grow while they run.

A **foreach template** (``Task.foreach: UPSTREAM.FIELD``) is expanded when it becomes ready
(its upstream succeeded): one task per item of the list at FIELD in the upstream's parsed
answer, ids ``ID[0]``.. (or ``ID[KEY]`` by ``foreach_key``), ``{item}`` / ``{item.f}`` in the
prompt and title, everything else inherited. The template itself never runs: it now needs
every task it expanded into and succeeds (without an attempt) when they all have, so a
``needs: [ID]`` downstream waits for all of them and receives each one's result. An empty
list succeeds it at once; more than ``max_items`` items (or more tasks than
``limits.max_tasks`` in all) fail it, with the reason, and its dependants are skipped.

An agent given the **spawn_tasks** tool adds subtasks (``ID.1``, ``ID.2``, .. or
``ID.NAME``) to the running DAG, with needs among the subtasks of the same call. With
``wait: true`` (the default) the call returns when they have all ended, with their results,
and the agent goes on (its agent is free for other work meanwhile); with ``wait: false`` it
returns at once; a ``collector`` task (pending) also receives their results. Bounds:
``limits.max_depth`` (nesting), ``limits.max_width`` (subtasks per call),
``limits.max_tasks`` (tasks in the run): a call over one is refused with a tool error and
an alert. Spawned tasks go through the run's one dispatcher, agents, governor and budgets.

Every growth is one :class:`TasksAdded` event with its provenance (one event: never half
a growth). A template's is emitted in the event group (journal transaction) of the
upstream's success; a spawn's right after the call's start, which is committed before the
call runs, and with ``wait: false`` in the group of the call's answer (a waiting call
answers later). A resume rebuilds the grown plan from these events (:func:`grow_plan`); a
spawn call made again at the same place (``TURN.INDEX``) of the same task's loop (a resumed
loop replaying a call left in doubt, a retried attempt) gets its recorded answer back and
spawns nothing; a spawn lost with the unflushed tail of a crash left no trace, and its call,
in doubt, is simply made again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..agents.spec import CATEGORIES
from ..agents.toolspec import ToolContext, ToolResult, ToolSpec
from ..agents.workspace import ToolError
from ..events import Alert, Event, TasksAdded
from ..exceptions import ErrorClass
from ..ids import TaskId
from ..plan.file import task_from_dict, task_to_dict
from ..plan.model import Plan, Task
from .executor import SPAWN_TOOL, UPSTREAM_CHARS, Outcome
from .records import TaskRecord
from .scheduler import TERMINAL, DagState, ReadyQueue

__all__ = ["SPAWN_TOOL", "SPAWN_TOOL_SPEC", "Growth", "grow_plan", "growing", "grows"]

_GROWN_KEYS = ("depth", "grows")  # what a grown task's journaled data adds to plan data
_ITEM = re.compile(r"\{item((?:\.[A-Za-z0-9_-]+)*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _outside_a_run(ctx: ToolContext, **arguments: Any) -> str:
    raise ToolError("spawn_unavailable", "spawn_tasks adds tasks to a running phalanx run only")


SPAWN_TOOL_SPEC = ToolSpec(
    name=SPAWN_TOOL,
    description=(
        "Add subtasks to this run: they run in parallel on the run's agents. With wait "
        "(default true) this call returns when they have all ended, with their results; "
        "needs lists ids of other subtasks of the same call that one must wait for."
    ),
    parameters={
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "a short name (optional)"},
                        "prompt": {"type": "string"},
                        "title": {"type": "string"},
                        "role": {"type": "string", "description": "the role that does it"},
                        "category": {"type": "string", "enum": list(CATEGORIES)},
                        "needs": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["prompt"],
                    "additionalProperties": False,
                },
            },
            "wait": {"type": "boolean", "default": True},
            "collector": {
                "type": "string",
                "description": "a task of the run, not started yet, that also gets the results",
            },
        },
        "required": ["tasks"],
        "additionalProperties": False,
    },
    func=_outside_a_run,
    needs_context=True,
)


def grows(plan: Plan, task: Task, depth: int = 0) -> bool:
    """Whether ``task`` may add tasks while it runs: a foreach template, or a task some
    agent with the spawn tool can take (below ``limits.max_depth``)."""
    return task.id in growing(plan, [task], {task.id: depth})


def growing(plan: Plan, tasks: Iterable[Task], depth: Mapping[str, int]) -> set[str]:
    """The ids of ``tasks`` that may add tasks while they run (see :func:`grows`); one pass
    over the agents, not one per task."""
    spawners = {a.role for a in plan.agents if SPAWN_TOOL in a.tools}
    deepest = plan.limits.max_depth
    return {
        t.id
        for t in tasks
        if t.foreach
        or (spawners and depth.get(t.id, 0) < deepest and (t.role is None or t.role in spawners))
    }


def grown_task(data: Mapping[str, Any]) -> Task:
    return task_from_dict({k: v for k, v in data.items() if k not in _GROWN_KEYS})


def grow_plan(plan: Plan, growth: Iterable[TasksAdded]) -> Plan:
    """The plan as it had grown: each added task appended, each join needing its tasks."""
    added: list[Task] = []
    joins: dict[str, list[TaskId]] = {}
    for e in growth:
        added += [grown_task(d) for d in e.tasks]
        for j in e.joins:
            joins.setdefault(j, []).extend(TaskId(i) for i in e.ids)
    if not added:
        return plan
    tasks = [
        dataclasses.replace(t, needs=(*t.needs, *joins[t.id])) if t.id in joins else t
        for t in (*plan.tasks, *added)
    ]
    return dataclasses.replace(plan, tasks=tuple(tasks))


def lookup(value: Any, path: str) -> Any:
    """``value`` at a dotted ``path`` (dict keys, list indexes); KeyError naming the part."""
    for part in path.split(".") if path else ():
        if hasattr(value, "model_dump"):  # a typed answer (a pydantic model)
            value = value.model_dump()
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, item: Any) -> str:
    """``{item}`` and ``{item.field}`` replaced by the item (JSON when not a string)."""

    def one(m: re.Match[str]) -> str:
        return _text(lookup(item, m.group(1)[1:]))

    return _ITEM.sub(one, template)


class GrowthHost(Protocol):
    """What growth needs of the run (the orchestrator)."""

    plan: Plan
    tasks: dict[TaskId, Task]
    records: dict[str, TaskRecord]
    dag: DagState
    ready: ReadyQueue

    def now(self) -> float: ...

    def emit(self, event: Event) -> None: ...


class _Refused(Exception):
    pass


class Growth:
    """The run's growth: templates expanded, subtasks spawned, and waits on them."""

    def __init__(
        self,
        run: GrowthHost,
        growth: Sequence[TasksAdded],
        parsed: Mapping[str, Any],
        *,
        succeed: Callable[[Outcome], list[TaskId]],
        fail: Callable[[TaskId, Outcome], None],
    ) -> None:
        self.run, self.limits = run, run.plan.limits
        self.succeed, self.fail = succeed, fail  # a task's end without an attempt
        self.parsed: dict[str, Any] = dict(parsed)  # parsed answers (foreach sources)
        self.expanded: dict[str, tuple[str, ...]] = {}  # template -> its tasks
        self.depth: dict[str, int] = {}
        self.spawned: dict[str, int] = {}  # spawning task -> its subtasks so far
        self.calls: dict[tuple[str, str], TasksAdded] = {}  # (task, call) -> its spawn
        self._waits: list[tuple[tuple[str, ...], asyncio.Future[None]]] = []
        for e in growth:
            self._note(e)

    def _note(self, e: TasksAdded) -> None:
        for d in e.tasks:
            self.depth[str(d["id"])] = int(d.get("depth", 0))
        if e.kind == "foreach":
            self.expanded[e.group] = e.ids
        else:
            self.spawned[e.group] = self.spawned.get(e.group, 0) + len(e.tasks)
            self.calls[(e.by_task, e.call)] = e

    # -- tasks joining the DAG -------------------------------------------------------------
    def _add(self, e: TasksAdded, tasks: list[Task]) -> list[TaskId]:
        """Journal ``e`` and put its tasks in the DAG; returns those ready now."""
        run = self.run
        run.emit(e)
        self._note(e)
        for t in tasks:
            run.tasks[t.id] = t
            run.records[t.id] = TaskRecord()
            run.dag.add(t)
            run.ready.add(t)
        ids = [t.id for t in tasks]
        for j in e.joins:
            joined = run.tasks[TaskId(j)]
            run.tasks[joined.id] = dataclasses.replace(joined, needs=(*joined.needs, *ids))
            run.dag.join(joined.id, ids)
        run.plan = dataclasses.replace(run.plan, tasks=tuple(run.tasks.values()))
        return [t for t in ids if run.dag.is_ready(t)]

    def _alert(self, message: str) -> None:
        self.run.emit(Alert(ts=self.run.now(), kind="growth", message=message))

    def _ended(self, tid: str, ok: bool, output: str = "", error: str = "") -> Outcome:
        return Outcome(
            attempt_id=0,
            task_id=tid,
            agent="",
            ok=ok,
            duration=0.0,
            output=output,
            error_class=None if ok else ErrorClass.OUTPUT_INVALID,
            error=error or None,
        )

    # -- foreach ---------------------------------------------------------------------------
    def route(self, ready: Iterable[TaskId]) -> list[TaskId]:
        """Ready tasks as the dispatcher should see them: a template that became ready is
        expanded (or, once its tasks are done, succeeds), and what that readies follows."""
        out: list[TaskId] = []
        todo = list(ready)
        while todo:
            tid = todo.pop(0)
            if self.run.tasks[tid].foreach is None:
                out.append(tid)
            elif tid in self.expanded:
                todo += self.succeed(self._ended(tid, True, self._joined(tid)))
            else:
                todo += self._expand(self.run.tasks[tid])
        return out

    def _joined(self, tid: str) -> str:
        return "\n".join(f"{c}: {self.run.records[c].state}" for c in self.expanded[tid])

    def _expand(self, t: Task) -> list[TaskId]:
        try:
            tasks, items = self._items(t)
        except _Refused as why:
            self._alert(f"task {t.id} was not expanded: {why}")
            rec = self.run.records[t.id]
            rec.error_class, rec.error = ErrorClass.OUTPUT_INVALID.value, str(why)
            self.fail(t.id, self._ended(t.id, False, error=str(why)))
            return []
        source = t.foreach_source
        assert source is not None
        e = TasksAdded(
            ts=self.run.now(),
            kind="foreach",
            group=t.id,
            by_task=source[0],
            by_attempt=self.run.records[source[0]].attempt_id or 0,
            tasks=tuple(self._data(x, self.depth.get(t.id, 0)) for x in tasks),
            joins=(t.id,),
            items=items,
        )
        ready = self._add(e, tasks)
        if not tasks:  # an empty list: the template is done, its dependants go on
            return self.succeed(self._ended(t.id, True))
        return ready

    def _items(self, t: Task) -> tuple[list[Task], int]:
        source, path = t.foreach_source or ("", "")
        try:
            items = lookup(self.parsed.get(source), path)
        except KeyError as missing:
            raise _Refused(f"{source}'s answer has no {path!r} ({missing} is missing)") from None
        if not isinstance(items, list):
            raise _Refused(f"{t.foreach} is a {type(items).__name__}, not a list")
        if len(items) > t.max_items:
            raise _Refused(f"{t.foreach} has {len(items)} items, over max_items {t.max_items}")
        if len(self.run.tasks) + len(items) > self.limits.max_tasks:
            raise _Refused(
                f"{len(items)} more tasks would pass limits.max_tasks ({self.limits.max_tasks})"
            )
        own = set(self.expanded.get(t.id, ()))
        needs = tuple(n for n in t.needs if n not in own)
        used: set[str] = set()
        try:
            return [self._item(t, i, item, needs, used) for i, item in enumerate(items)], len(items)
        except KeyError as missing:
            raise _Refused(f"an item of {t.foreach} has no field {missing}") from None

    def _item(self, t: Task, i: int, item: Any, needs: tuple[TaskId, ...], used: set[str]) -> Task:
        key = str(i)
        if t.foreach_key:
            key = _UNSAFE.sub("_", _text(lookup(item, t.foreach_key)))[:64] or str(i)
            key = key if key not in used else f"{key}-{i}"
        used.add(key)
        return dataclasses.replace(
            t,
            id=TaskId(f"{t.id}[{key}]"),
            prompt=render(t.prompt, item),
            title=render(t.title, item) if t.title else f"{t.id} {_text(item)[:60]}",
            needs=needs,
            foreach=None,
            foreach_key=None,
        )

    def _data(self, t: Task, depth: int) -> dict[str, Any]:
        return {**task_to_dict(t), "depth": depth, "grows": grows(self.run.plan, t, depth)}

    # -- spawn -----------------------------------------------------------------------------
    def spawn(
        self, task_id: str, attempt_id: int, call: str, args: Mapping[str, Any]
    ) -> tuple[TasksAdded | None, list[TaskId], str]:
        """A spawn call of ``task_id``'s attempt: (its growth, the tasks ready now, "") or
        (None, [], why it was refused). A call made before at the same place of the task's
        loop returns that call's growth again and adds nothing."""
        done = self.calls.get((task_id, call))
        if done is not None:
            return done, [], ""
        try:
            tasks, collector, depth = self._subtasks(task_id, args)
        except _Refused as why:
            self._alert(f"spawn by task {task_id} refused: {why}")
            return None, [], str(why)
        ids = ", ".join(f"{t.id} ({t.label})" if t.title else t.id for t in tasks)
        wait = bool(args.get("wait", True))
        e = TasksAdded(
            ts=self.run.now(),
            kind="spawn",
            group=task_id,
            by_task=task_id,
            by_attempt=attempt_id,
            tasks=tuple(self._data(t, depth) for t in tasks),
            joins=(collector,) if collector else (),
            call=call,
            wait=wait,
            result=f"spawned {len(tasks)} subtask(s): {ids}"
            + (f"; their results go to {collector}" if collector else ""),
        )
        return e, self._add(e, tasks), ""

    def _subtasks(
        self, task_id: str, args: Mapping[str, Any]
    ) -> tuple[list[Task], str | None, int]:
        run, limits = self.run, self.limits
        specs = list(args.get("tasks") or ())
        depth = self.depth.get(task_id, 0) + 1
        if depth > limits.max_depth:
            raise _Refused(f"subtasks would be at depth {depth}, over limits.max_depth")
        if len(specs) > limits.max_width:
            raise _Refused(f"{len(specs)} subtasks in one call, over limits.max_width")
        if len(run.tasks) + len(specs) > limits.max_tasks:
            raise _Refused(f"the run would pass limits.max_tasks ({limits.max_tasks} tasks)")
        collector = args.get("collector") or None
        if collector is not None and (
            collector not in run.tasks
            or collector == task_id
            or run.records[collector].state != "pending"
            or run.tasks[TaskId(collector)].foreach
        ):
            raise _Refused(f"collector {collector!r} is not a task of the run that has not started")
        parent = run.tasks[TaskId(task_id)]
        n = self.spawned.get(task_id, 0)
        short = [str(s.get("id") or n + i + 1) for i, s in enumerate(specs)]
        full = {s: f"{task_id}.{_UNSAFE.sub('_', s)}" for s in short}
        if len(set(full.values())) < len(short) or any(f in run.tasks for f in full.values()):
            raise _Refused("subtask ids must be new and distinct")
        return (
            [
                self._subtask(parent, full[s], spec, full)
                for s, spec in zip(short, specs, strict=True)
            ],
            collector,
            depth,
        )

    def _subtask(
        self, parent: Task, tid: str, spec: Mapping[str, Any], full: Mapping[str, str]
    ) -> Task:
        roles = {a.role for a in self.run.plan.agents}
        role = spec.get("role") or parent.role  # by default, the spawner's own role
        if role is not None and role not in roles:
            raise _Refused(f"no agent has role {role!r} (roles: {', '.join(sorted(roles))})")
        unknown = [n for n in spec.get("needs") or () if n not in full]
        if unknown:
            raise _Refused(f"{tid} needs {unknown[0]!r}, not a subtask of this call")
        return Task(
            id=TaskId(tid),
            prompt=str(spec["prompt"]),
            title=str(spec.get("title") or ""),
            category=spec.get("category") or parent.category,
            role=role,
            needs=tuple(TaskId(full[n]) for n in spec.get("needs") or ()),
            max_attempts=parent.max_attempts,
        )

    # -- waiting for spawned tasks ---------------------------------------------------------
    async def wait_for(self, ids: Sequence[str]) -> None:
        """Until every one of ``ids`` has ended (or the run stops waiting)."""
        if self._ended_all(ids):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waits.append((tuple(ids), fut))
        await fut

    def _ended_all(self, ids: Iterable[str]) -> bool:
        return all(self.run.records[i].state in TERMINAL for i in ids)

    def check(self) -> None:
        """Release the waits whose tasks have all ended."""
        if not self._waits:
            return
        left = []
        for ids, fut in self._waits:
            if self._ended_all(ids) and not fut.done():
                fut.set_result(None)
            elif not fut.done():
                left.append((ids, fut))
        self._waits = left

    def release_all(self) -> None:
        """The run stops waiting (a budget is spent, the run ends)."""
        for _, fut in self._waits:
            if not fut.done():
                fut.set_result(None)
        self._waits = []

    def results(self, ids: Sequence[str]) -> str:
        """The subtasks' results, as a spawn call that waited answers them."""
        out = []
        for i in ids:
            rec = self.run.records[i]
            text = rec.output if rec.state == "succeeded" else f"({rec.state}: {rec.error or ''})"
            if len(text) > UPSTREAM_CHARS:
                text = text[:UPSTREAM_CHARS] + f"\n[... {len(text) - UPSTREAM_CHARS} more]"
            out.append(f"### {i} ({rec.state})\n{text}")
        return "\n\n".join(out)


def refused(why: str) -> ToolResult:
    return ToolResult(ok=False, content=f"error: spawn_refused: {why}", error_code="spawn_refused")

"""Hooks: code that runs at fixed points of a run, in Python or as a command.

Eight points, in the order a run meets them: ``on_run_start``, then per task
``before_task`` and ``after_task`` (``on_error`` when an attempt fails), ``on_message``,
``on_scale``, ``on_breaker`` as they happen, and ``on_run_end``. Every hook gets one
JSON-ready dict, the *payload* (``{"point": ..., "run_id": ..., "task": {...}, ...}``,
see :func:`payload`).

Python hooks are objects with methods named like the points (sync or async, one
``payload`` argument), a :class:`Hooks` subclass, or a mapping ``point -> callable``::

    class Guard(Hooks):
        async def before_task(self, payload):
            if "prod" in payload["task"]["title"]:
                return Veto("no production changes today")   # or False, or raise VetoTask

    runner = HookRunner([Guard(), {"on_run_end": print}])

A ``before_task`` hook may also *ask*: the task then waits for a person's decision
(state ``awaiting_approval``, ``phalanx approve RUN TASK [--reject]``) while the rest of the
run goes on; a Python hook returns ``Ask("why")`` (or ``{"decision": "ask", "reason":
...}``). Once the task is approved its payload carries ``"approval": {"decision":
"approved", ...}`` and a hook that asks again is taken as allowing it (the decision stands).

Command hooks are declared in the plan; the payload arrives as JSON on stdin, and exit
code 2 from a ``before_task`` hook vetoes the task with its stderr as the reason, exit 3
asks for an approval (stderr the reason); exit 0 with a JSON object on stdout,
``{"decision": "allow" | "veto" | "ask", "reason": "..."}``, says the same in JSON::

    agents:
      - role: coder
        hooks:
          - on: before_task
            command: [python3, check.py]   # an argv list: no shell is ever used
            timeout: 10                    # seconds; the process group is killed after
            cwd: tools                     # optional

A failing hook (an exception, a non-zero exit, a timeout, a missing executable) is
reported as a :class:`HookFailure` in the :class:`HookOutcome` that :meth:`HookRunner.fire`
returns; it never raises out of ``fire`` and never vetoes (hooks fail open). Sync Python
hooks run on the event loop, so they should be quick; async ones can be bounded with
``HookRunner(timeout=...)``. Commands run without the variables that hold secrets
(``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``), and messages never carry
environment values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import inspect
import json
import os
import re
import shlex
import shutil
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, get_args

from .._util import kill_group, one_line
from ..events import Alert, Event, event_to_dict
from ..exceptions import PlanError, ToolError, VetoTask
from ..redaction import scrubbed_env, secret_values
from . import sandbox

__all__ = [
    "HOOK_POINTS",
    "Ask",
    "CommandHook",
    "HookFailure",
    "HookOutcome",
    "HookRunner",
    "Hooks",
    "Veto",
    "VetoTask",
    "from_config",
    "payload",
]

HOOK_POINTS: tuple[str, ...] = (
    "on_run_start",
    "before_task",
    "after_task",
    "on_error",
    "on_message",
    "on_scale",
    "on_breaker",
    "on_run_end",
)
VETO_POINT = "before_task"  # the only point whose hooks may refuse something
VETO_EXIT = 2  # a command hook's exit code that vetoes (at ``before_task``)
ASK_EXIT = 3  # a command hook's exit code that asks for a person's approval (``before_task``)
_DECISIONS = ("allow", "veto", "ask")  # a JSON answer's "decision"
DEFAULT_COMMAND_TIMEOUT = 30.0  # seconds

_REASON_CHARS = 500
_MESSAGE_CHARS = 300
_STDERR_KEEP = 64 * 1024
_READ_CHUNK = 64 * 1024
_EXIT_POLL = 0.05  # seconds between looks at a command's exit status
_COMMAND_KEYS = ("command", "cwd", "name", "network", "on", "sandbox", "timeout")


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Veto:
    """Returned by a Python ``before_task`` hook: do not run this task."""

    reason: str = ""


@dataclass(frozen=True)
class Ask:
    """Returned by a Python ``before_task`` hook: run this task only once a person
    approves it (it waits in ``awaiting_approval``; only what needs it waits too)."""

    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class HookFailure:
    """A hook that failed: where, which one, and one line saying how (no secrets)."""

    point: str
    hook: str
    message: str

    def __str__(self) -> str:
        return f"hook {self.hook} at {self.point}: {self.message}"

    def alert(self, ts: float, agent: str | None = None) -> Alert:
        """The operator-facing event for this failure."""
        return Alert(ts=ts, kind="hook", message=str(self), agent=agent)


@dataclass(frozen=True, kw_only=True)
class HookOutcome:
    """What firing one point came to: a veto or an ask for approval (``before_task`` only,
    ``hook`` names who), and any failures."""

    veto: bool = False
    reason: str = ""
    failures: tuple[HookFailure, ...] = ()
    ask: bool = False
    hook: str = ""

    @property
    def ok(self) -> bool:
        return not self.veto and not self.ask and not self.failures

    @property
    def stops(self) -> bool:
        """A veto or an ask: the hooks after this one are not run."""
        return self.veto or self.ask


_OK = HookOutcome()


def _failed(point: str, hook: str, message: str) -> HookOutcome:
    return HookOutcome(failures=(HookFailure(point=point, hook=hook, message=message),))


# -- payloads --------------------------------------------------------------------------------

_EVENT_TYPES: tuple[type[Any], ...] = get_args(Event)


def payload(point: str, **fields: Any) -> dict[str, Any]:
    """The dict a hook receives: ``{"point": point, **fields}``, made JSON-ready.

    Events become their journal dicts, other dataclasses dicts, tuples and sets lists,
    paths and enums their values, anything else ``str(value)``.
    """
    _require_point(point)
    return {"point": point, **{k: _jsonable(v) for k, v in fields.items()}}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, _EVENT_TYPES):
        return _jsonable(event_to_dict(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _require_point(point: str) -> None:
    if point not in HOOK_POINTS:
        raise ValueError(f"unknown hook point {point!r} (known: {', '.join(HOOK_POINTS)})")


# -- one-line, secret-free text --------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_KEY_RE = re.compile(r"\b(sk-ant-|sk-)[A-Za-z0-9_-]{8,}")


def _safe_line(text: str, limit: int, *, keep: Literal["head", "tail"] = "head") -> str:
    """One line, no escape codes, no environment secrets, at most ``limit`` characters."""
    text = _ANSI_RE.sub("", text)
    for value in secret_values():
        text = text.replace(value, "***")
    return one_line(_KEY_RE.sub(r"\1***", text), limit, keep=keep)


def _scrubbed_env(keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment a command hook gets: without secrets (the one rule), except the
    names the plan passes through (``env.pass``)."""
    return scrubbed_env(keep=keep)


# -- Python hooks ----------------------------------------------------------------------------


class Hooks:
    """Subclass and override the points you need (sync or async); the rest stay unset.

    Only overridden methods are registered, so :meth:`HookRunner.points` stays exact.
    ``before_task`` may return ``False`` or a :class:`Veto`, or raise :class:`VetoTask`.
    """

    name: str | None = None  # shown in failure reports; the class name when unset

    def on_run_start(self, payload: dict[str, Any]) -> Any:
        return None

    def before_task(self, payload: dict[str, Any]) -> Any:
        return None

    def after_task(self, payload: dict[str, Any]) -> Any:
        return None

    def on_error(self, payload: dict[str, Any]) -> Any:
        return None

    def on_message(self, payload: dict[str, Any]) -> Any:
        return None

    def on_scale(self, payload: dict[str, Any]) -> Any:
        return None

    def on_breaker(self, payload: dict[str, Any]) -> Any:
        return None

    def on_run_end(self, payload: dict[str, Any]) -> Any:
        return None


HookFn = Callable[[dict[str, Any]], Any]


class _HookTimeout(Exception):
    """An async Python hook ran past the runner's ``timeout``."""


@dataclass(frozen=True, kw_only=True)
class _PythonHook:
    on: str
    name: str
    fn: HookFn

    async def run(self, data: str, timeout: float | None) -> HookOutcome:
        try:
            result = await self._call(data, timeout)
        except VetoTask as exc:
            return self._veto(exc.reason)
        except _HookTimeout:
            return _failed(self.on, self.name, f"timed out after {timeout:g}s")
        except Exception as exc:  # any bug in a hook is reported, never raised
            return _failed(self.on, self.name, _describe(exc))
        return self._verdict(result)

    async def _call(self, data: str, timeout: float | None) -> Any:
        """Call the hook on a fresh copy of the payload; await what it returns, if anything."""
        result = self.fn(json.loads(data))
        if not inspect.isawaitable(result):
            return result
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await result
        except TimeoutError:
            if deadline.expired():
                raise _HookTimeout from None
            raise  # the hook's own TimeoutError: a failure like any other exception

    def _verdict(self, result: Any) -> HookOutcome:
        if isinstance(result, Veto):
            return self._veto(result.reason)
        if isinstance(result, Ask):
            return _answer(self.on, self.name, "ask", result.reason)
        if isinstance(result, Mapping) and "decision" in result:
            return _answer(self.on, self.name, result.get("decision"), result.get("reason"))
        if result is False and self.on == VETO_POINT:
            return self._veto("")
        return _OK

    def _veto(self, reason: str) -> HookOutcome:
        return _answer(self.on, self.name, "veto", reason)


def _answer(point: str, hook: str, decision: Any, reason: Any) -> HookOutcome:
    """A hook's decision (``allow``, ``veto`` or ``ask``) as an outcome; any other, or one
    at a point other than ``before_task``, is a failure."""
    if decision not in _DECISIONS:
        return _failed(point, hook, f"unknown decision {decision!r} (allow, veto or ask)")
    if decision == "allow":
        return _OK
    if point != VETO_POINT:
        return _failed(point, hook, f"cannot {decision} at {point} (only {VETO_POINT})")
    text = _safe_line(str(reason or ""), _REASON_CHARS)
    if decision == "ask":
        return HookOutcome(ask=True, reason=text or f"hook {hook} asks for approval", hook=hook)
    return HookOutcome(veto=True, reason=text or f"vetoed by hook {hook}", hook=hook)


def _describe(exc: BaseException) -> str:
    """``ValueError: boom (check.py:12)``: one line, the innermost frame's place."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _safe_line(text, _MESSAGE_CHARS - len(where)) + where


def _owner_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    if inspect.ismodule(obj):
        return obj.__name__
    return type(obj).__name__


def _fn_name(fn: Any) -> str:
    """``check`` or ``Guard.check``: the qualified name without the ``<locals>`` path."""
    name = str(getattr(fn, "__qualname__", None) or type(fn).__name__)
    return name.rsplit("<locals>.", 1)[-1]


def _from_object(obj: Any, where: str, file: str | None) -> list[_PythonHook]:
    name = _owner_name(obj)
    found = [
        _PythonHook(on=point, name=name, fn=fn)
        for point in HOOK_POINTS
        if (fn := _method(obj, point)) is not None
    ]
    if not found:
        raise PlanError(
            f"{name} has no hook methods (define one of: {', '.join(HOOK_POINTS)})",
            field=where,
            file=file,
        )
    return found


def _method(obj: Any, point: str) -> HookFn | None:
    fn = getattr(obj, point, None)
    if not callable(fn):
        return None
    if _inherited_noop(obj, point):
        return None
    hook: HookFn = fn
    return hook


def _inherited_noop(obj: Any, point: str) -> bool:
    """A :class:`Hooks` method its subclass did not override (so it is not registered)."""
    if not isinstance(obj, Hooks) or point in getattr(obj, "__dict__", {}):
        return False
    return bool(getattr(type(obj), point) is getattr(Hooks, point))


def _from_mapping(data: Mapping[Any, Any], where: str, file: str | None) -> list[_PythonHook]:
    hooks = []
    for point, fn in data.items():
        if point not in HOOK_POINTS:
            raise PlanError(_unknown_point(point), field=f"{where}.{point}", file=file)
        if not callable(fn):
            raise PlanError("expected a callable", field=f"{where}.{point}", file=file)
        hooks.append(_PythonHook(on=point, name=_fn_name(fn), fn=fn))
    return hooks


def _unknown_point(value: Any) -> str:
    return f"unknown hook point {value!r} (known: {', '.join(HOOK_POINTS)})"


# -- command hooks ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommandHook:
    """A command run at one point: payload JSON on stdin, bounded by ``timeout`` seconds.

    Exit 0 is fine (at ``before_task``, unless stdout is a JSON answer ``{"decision":
    "allow" | "veto" | "ask", "reason": ...}``); exit 2 at ``before_task`` vetoes and exit 3
    asks for a person's approval, stderr the reason; any other non-zero exit (or 2 or 3
    elsewhere), a timeout or a missing executable is a failure.
    """

    on: str
    command: tuple[str, ...]
    timeout: float = DEFAULT_COMMAND_TIMEOUT
    cwd: str | None = None
    name: str = ""
    env_pass: tuple[str, ...] = ()  # the plan's env.pass: secrets it gets on purpose
    # opt in to run_command's bubblewrap sandbox: only ``cwd`` (default: the current
    # directory) is writable, home, other worktrees and the state dir are hidden, a private
    # /tmp, no network unless ``network``; refused in one line where bwrap is missing
    sandbox: bool = False
    network: bool = False

    def __post_init__(self) -> None:
        _check_point(self.on, "CommandHook.on", None)
        object.__setattr__(self, "command", _check_argv(self.command, "CommandHook.command", None))
        object.__setattr__(
            self, "timeout", _check_timeout(self.timeout, "CommandHook.timeout", None)
        )
        _check_optional_str(self.cwd, "CommandHook.cwd", None)
        _check_optional_str(self.name, "CommandHook.name", None)
        if not self.name:
            object.__setattr__(self, "name", _command_name(self.command))

    @classmethod
    def from_config(
        cls, data: Any, *, where: str = "hooks[0]", file: str | None = None
    ) -> CommandHook:
        """Validate plan data; a bad field is a one-line :class:`PlanError` naming it."""
        if not isinstance(data, Mapping):
            raise PlanError(
                f"expected a mapping with 'on' and 'command', got {type(data).__name__}",
                field=where,
                file=file,
            )
        _check_keys(data, where, file)
        return cls(
            on=_check_point(data.get("on"), f"{where}.on", file),
            command=_check_argv(data.get("command"), f"{where}.command", file),
            timeout=_check_timeout(
                data.get("timeout", DEFAULT_COMMAND_TIMEOUT), f"{where}.timeout", file
            ),
            cwd=_check_optional_str(data.get("cwd"), f"{where}.cwd", file),
            name=_check_optional_str(data.get("name"), f"{where}.name", file) or "",
            sandbox=_check_bool(data.get("sandbox", False), f"{where}.sandbox", file),
            network=_check_bool(data.get("network", False), f"{where}.network", file),
        )

    async def run(self, data: str, timeout: float | None = None) -> HookOutcome:
        """Run once with ``data`` (the payload's JSON) on stdin. Never raises ``Exception``."""
        del timeout  # a command has its own
        try:
            proc = await self._spawn()
        except OSError as exc:
            return _failed(self.on, self.name, self._cannot_start(exc))
        except ToolError as exc:  # sandbox: true where bwrap is missing
            return _failed(self.on, self.name, _safe_line(exc.message, _MESSAGE_CHARS))
        rc, stderr, stdout = await self._communicate(proc, data.encode())
        if rc is None:
            return _failed(self.on, self.name, self._timed_out(stderr))
        return self._verdict(rc, stderr.decode("utf-8", "replace"), stdout)

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = _scrubbed_env(self.env_pass)
        cwd = _expand(self.cwd)
        return await asyncio.create_subprocess_exec(
            *self._argv(env, cwd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    def _argv(self, env: Mapping[str, str], cwd: str | None) -> list[str]:
        """The command, inside bubblewrap when the hook opted in (its ``cwd`` the only
        writable folder); a missing program is the OSError a plain start would raise."""
        if not self.sandbox:
            return list(self.command)
        found = shutil.which(self.command[0], path=env.get("PATH") or os.defpath)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "not found on PATH", self.command[0])
        place = Path(cwd or os.getcwd())
        return sandbox.wrap(
            list(self.command), found, place, network=self.network, home=env.get("HOME")
        )

    async def _communicate(
        self, proc: asyncio.subprocess.Process, data: bytes
    ) -> tuple[int | None, bytes, bytes]:
        """The exit code (``None`` on timeout), the head of stderr and, at ``before_task``,
        of stdout (a JSON answer); the group is killed."""
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr, stdout = bytearray(), bytearray()
        pumps = asyncio.gather(
            _feed(proc.stdin, data),
            _drain(proc.stdout, stdout if self.on == VETO_POINT else None),
            _drain(proc.stderr, stderr),
            return_exceptions=True,
        )
        try:
            async with asyncio.timeout(self.timeout):
                rc: int | None = await _exit_code(proc)
        except TimeoutError:
            rc = None
        except BaseException:  # cancelled or interrupted: leave nothing running
            await _reap(proc, pumps)
            raise
        await _reap(proc, pumps)
        return rc, bytes(stderr), bytes(stdout)

    def _verdict(self, rc: int, stderr: str, stdout: bytes = b"") -> HookOutcome:
        if rc == 0:
            return self._json_answer(stdout)
        if rc in (VETO_EXIT, ASK_EXIT) and self.on == VETO_POINT:
            decision = "veto" if rc == VETO_EXIT else "ask"
            return _answer(self.on, self.name, decision, stderr.strip())
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
        if rc in (VETO_EXIT, ASK_EXIT):
            how += f" (only {VETO_POINT} can {'veto' if rc == VETO_EXIT else 'ask'})"
        tail = _safe_line(stderr, _MESSAGE_CHARS - len(how) - 2, keep="tail")
        return _failed(self.on, self.name, f"{how}: {tail}" if tail else how)

    def _json_answer(self, stdout: bytes) -> HookOutcome:
        """Exit 0: allowed, unless stdout is a JSON object with a ``decision``."""
        text = stdout.decode("utf-8", "replace").strip()
        if not text.startswith("{"):
            return _OK
        try:
            answer = json.loads(text)
        except ValueError:
            return _OK  # not an answer: whatever the command printed
        if not isinstance(answer, dict) or "decision" not in answer:
            return _OK
        return _answer(self.on, self.name, answer["decision"], answer.get("reason"))

    def _timed_out(self, stderr: bytes) -> str:
        how = f"timed out after {self.timeout:g}s; process group killed"
        tail = _safe_line(stderr.decode("utf-8", "replace"), 200, keep="tail")
        return f"{how}: {tail}" if tail else how

    def _cannot_start(self, exc: OSError) -> str:
        where = f" in {self.cwd}" if self.cwd else ""
        why = exc.strerror or type(exc).__name__
        return _safe_line(f"cannot start {self.command[0]}{where}: {why}", _MESSAGE_CHARS)


def _command_name(argv: Sequence[str]) -> str:
    """``python3 check.py --strict``: the argv with absolute paths shortened to their names."""
    short = [os.path.basename(a) if a.startswith("/") and len(a) > 1 else a for a in argv]
    return _safe_line(shlex.join(short), 120)


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the hook did not read its stdin: its business
    finally:
        stream.close()


async def _drain(stream: asyncio.StreamReader, keep: bytearray | None) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        if keep is not None and len(keep) < _STDERR_KEEP:
            keep += chunk[: _STDERR_KEEP - len(keep)]


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """The exit code as soon as the process exits, even while something it left behind
    holds its pipes open (``Process.wait()`` on Python 3.11 also waits for the pipes)."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while True:
            if waiter.done():
                return waiter.result()
            if proc.returncode is not None:
                return proc.returncode
            await asyncio.wait((waiter,), timeout=_EXIT_POLL)
    finally:
        waiter.cancel()


async def _reap(proc: asyncio.subprocess.Process, pumps: asyncio.Future[Any]) -> None:
    """Kill what is left of the group, wait for the process, let the pipe readers finish."""
    kill_group(proc.pid)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5.0)
    await asyncio.wait((pumps,), timeout=1.0)  # EOF comes at once: every writer is dead
    if not pumps.done():  # a descendant escaped the group and holds a pipe open
        pumps.cancel()
    transport = getattr(proc, "_transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()


# -- config checks ---------------------------------------------------------------------------


def _check_keys(data: Mapping[Any, Any], where: str, file: str | None) -> None:
    unknown = sorted(str(k) for k in data if k not in _COMMAND_KEYS)
    if unknown:
        raise PlanError(
            f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_COMMAND_KEYS)})",
            field=where,
            file=file,
        )


def _check_point(value: Any, where: str, file: str | None) -> str:
    if value is None:
        raise PlanError(f"missing: one of {', '.join(HOOK_POINTS)}", field=where, file=file)
    if not isinstance(value, str) or value not in HOOK_POINTS:
        raise PlanError(_unknown_point(value), field=where, file=file)
    return value


def _check_argv(value: Any, where: str, file: str | None) -> tuple[str, ...]:
    if value is None:
        raise PlanError("missing: an argv list such as [python3, check.py]", field=where, file=file)
    if isinstance(value, str):
        raise PlanError(
            "expected a list of strings (argv), not a string: no shell is used",
            field=where,
            file=file,
        )
    if not isinstance(value, list | tuple) or not value:
        raise PlanError("expected a non-empty list of strings (argv)", field=where, file=file)
    for i, arg in enumerate(value):
        if not isinstance(arg, str) or not arg or "\x00" in arg:
            raise PlanError("expected a non-empty string", field=f"{where}[{i}]", file=file)
    return tuple(value)


def _check_timeout(value: Any, where: str, file: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise PlanError("expected a positive number of seconds", field=where, file=file)
    return float(value)


def _check_bool(value: Any, where: str, file: str | None) -> bool:
    if not isinstance(value, bool):
        raise PlanError(f"expected true or false, got {value!r}", field=where, file=file)
    return value


def _check_optional_str(value: Any, where: str, file: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise PlanError(f"expected a string, got {type(value).__name__}", field=where, file=file)
    return value


# -- the runner ------------------------------------------------------------------------------

_Hook = _PythonHook | CommandHook


def _normalise(item: Any, where: str, file: str | None) -> list[_Hook]:
    if isinstance(item, CommandHook | _PythonHook):
        return [item]
    if isinstance(item, Mapping):
        if "command" in item or "on" in item:
            return [CommandHook.from_config(item, where=where, file=file)]
        return list(_from_mapping(item, where, file))
    if isinstance(item, str | bytes | int | float | list | tuple) or item is None:
        raise PlanError(
            f"expected a mapping with 'on' and 'command' (or a hooks object), "
            f"got {type(item).__name__}",
            field=where,
            file=file,
        )
    return list(_from_object(item, where, file))


class HookRunner:
    """Every hook of a run (or an agent), by point, in the order they were given."""

    def __init__(
        self,
        hooks: Iterable[Any] = (),
        *,
        timeout: float | None = None,
        where: str = "hooks",
        file: str | None = None,
        env_pass: Iterable[str] = (),
    ) -> None:
        """``hooks``: Python hook objects, mappings ``point -> callable``, command-hook
        dicts or :class:`CommandHook` values. ``timeout`` bounds each async Python hook;
        ``env_pass`` names the variables command hooks get past the secret rule."""
        self.timeout = timeout
        self._points: frozenset[str] = frozenset()
        self._points_of: list[_Hook] | None = None
        self._hooks: list[_Hook] = []
        for i, item in enumerate(hooks):
            self._hooks += _normalise(item, f"{where}[{i}]", file)
        keep = tuple(env_pass)
        if keep:
            self._hooks = [
                dataclasses.replace(h, env_pass=keep) if isinstance(h, CommandHook) else h
                for h in self._hooks
            ]

    def __len__(self) -> int:
        return len(self._hooks)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def points(self) -> frozenset[str]:
        """The points at least one hook listens to (firing any other is free); asked for
        every attempt, so kept until the hooks change."""
        hooks = self._hooks
        if self._points_of is not hooks:
            self._points, self._points_of = frozenset(h.on for h in hooks), hooks
        return self._points

    def combined(self, other: HookRunner) -> HookRunner:
        """This runner's hooks, then ``other``'s (e.g. the run's, then an agent's)."""
        out = HookRunner(timeout=self.timeout)
        out._hooks = [*self._hooks, *other._hooks]
        return out

    async def fire(self, point: str, payload: Mapping[str, Any]) -> HookOutcome:
        """Run the hooks of ``point`` in order; at ``before_task`` the first veto stops.

        Every ``Exception`` a hook raises is reported in the outcome, never raised here;
        ``BaseException`` (cancellation, KeyboardInterrupt) propagates.
        """
        _require_point(point)
        hooks = [h for h in self._hooks if h.on == point]
        if not hooks:
            return _OK
        try:
            data = json.dumps({**payload, "point": point}, default=str)
        except (TypeError, ValueError, RecursionError) as exc:
            return _failed(point, "phalanx", f"payload is not JSON-serialisable: {exc}")
        return await self._run_all(hooks, data)

    async def _run_all(self, hooks: Sequence[_Hook], data: str) -> HookOutcome:
        failures: list[HookFailure] = []
        for hook in hooks:
            outcome = await _run_one(hook, data, self.timeout)
            failures += outcome.failures
            if outcome.stops:
                return dataclasses.replace(outcome, failures=tuple(failures))
        return HookOutcome(failures=tuple(failures)) if failures else _OK


async def _run_one(hook: _Hook, data: str, timeout: float | None) -> HookOutcome:
    try:
        return await hook.run(data, timeout)
    except Exception as exc:  # a bug here must not end the run either
        return _failed(hook.on, hook.name, _describe(exc))


def from_config(
    items: Sequence[Any],
    *,
    timeout: float | None = None,
    where: str = "hooks",
    file: str | None = None,
    env_pass: Iterable[str] = (),
) -> HookRunner:
    """A runner from plan data (command-hook dicts) mixed with Python hook objects
    (``env_pass``: the plan's ``env.pass``, for its command hooks).

    ``where`` prefixes the field named in errors (``agents[0].hooks`` → ``agents[0].hooks[1].on``).
    """
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise PlanError("expected a list of hooks", field=where, file=file)
    return HookRunner(items, timeout=timeout, where=where, file=file, env_pass=env_pass)


def _expand(cwd: str | None) -> str | None:
    """A hook's working directory with ``~`` expanded (no file system access)."""
    return os.path.expanduser(cwd) if cwd else None

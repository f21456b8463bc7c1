"""``claude-code``: Claude Code as a command-line agent, one ``claude -p`` process per call.

Each :meth:`ClaudeCodeProvider.complete` runs (an argv list, never a shell, in a new session
so that the whole process group can be killed)::

    claude -p PROMPT --output-format stream-json --verbose [--model M]
           [--append-system-prompt SYSTEM] [ARGS...]

and reads stdout as one JSON event per line. The final ``{"type": "result"}`` event gives the
answer, the token usage and ``total_cost_usd``; a process that ends without one is a
``STREAM_CUT`` (partial text is never returned). Error results, non-zero exits and stderr
are mapped to an :class:`~phalanx.exceptions.ErrorClass` by :func:`classify`.

Options (plan ``providers: {claude-code: {...}}``)::

    executable: claude        # name on PATH or a path; resolved when the provider is built
    args: [--max-turns, "8"]  # extra argv, appended as is
    cwd: /path/to/workdir     # working directory (default: the current one)
    timeout: 1800             # seconds per call; the process group is killed after it
    env: {VAR: value}         # set for the child (null removes a variable)

The child gets this process's environment without its secrets (the one rule,
:func:`phalanx.redaction.scrubbed_env`), except Claude Code's own credentials
(:data:`OWN_KEYS`: ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``,
``CLAUDE_CODE_OAUTH_TOKEN``) and what ``env`` sets explicitly.

A prompt too large for one argv entry (or one starting with ``-``) goes to ``claude -p`` on
stdin instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._util import kill_group
from ..cost import Usage
from ..exceptions import ErrorClass, ProviderError, UsageError
from ..redaction import scrubbed_env, secret_values
from .base import Completion, CompletionRequest

__all__ = ["ClaudeCodeProvider", "classify", "parse_retry_after"]

_OPTIONS = frozenset({"executable", "args", "cwd", "timeout", "env"})
_ARG_LIMIT = 100_000  # bytes; Linux refuses a single argv entry over 128 KiB
_LINE_LIMIT = 64 * 1024 * 1024  # a stdout line longer than this is dropped, not buffered
_STDERR_KEEP = 8192  # bytes of stderr kept (the tail)
_TAIL_CHARS = 500  # characters of sanitised stderr put into error messages
_READ_CHUNK = 65536


# -- error classification --------------------------------------------------------------------


def _code(*codes: int) -> str:
    """An HTTP status as a word of its own: not ``file.js:401:12`` nor ``req_4011``."""
    alts = "|".join(str(c) for c in codes)
    return rf"(?<![\w.:/#-])(?:{alts})(?![\w.])"


_RULES: tuple[tuple[ErrorClass, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(pattern, re.IGNORECASE))
    for cls, pattern in (
        (ErrorClass.TRUNCATED, r"error_max_turns|maximum number of turns|max turns"),
        (ErrorClass.OUTPUT_INVALID, r"error_max_structured_output_retries"),
        (
            ErrorClass.QUOTA_EXHAUSTED,
            r"error_max_budget|credit balance|billing|quota|spend(?:ing)? limit|"
            rf"payment required|{_code(402)}",
        ),
        (
            ErrorClass.AUTH,
            r"invalid api key|invalid x-api-key|authenticat|unauthori[sz]ed|permission_error|"
            r"please run /login|not logged in|oauth token (?:has )?expired|forbidden|"
            rf"{_code(401, 403)}",
        ),
        (
            ErrorClass.RATE_LIMITED,
            rf"rate[ _-]?limit|usage limit|too many requests|{_code(429)}",
        ),
        (ErrorClass.OVERLOADED, rf"overloaded|{_code(529, 503)}"),
        (
            ErrorClass.CONTEXT_LENGTH,
            r"prompt is too long|context[ _-](?:length|window|size)|maximum context|"
            r"too many tokens|exceeds? the (?:model's )?context",
        ),
        (
            ErrorClass.BAD_REQUEST,
            r"unknown option|unknown argument|invalid_request_error|not_found_error|"
            rf"issue with the selected model|{_code(400, 404, 422)}",
        ),
        (
            ErrorClass.CONNECTION,
            r"econnrefused|econnreset|enotfound|eai_again|connection (?:error|refused|reset)|"
            r"network error|fetch failed|socket hang up|unable to connect",
        ),
        (ErrorClass.TIMEOUT, rf"timed? ?out|etimedout|{_code(408, 504)}"),
    )
)

_STATUS_CLASSES: Mapping[int, ErrorClass] = {
    400: ErrorClass.BAD_REQUEST,
    401: ErrorClass.AUTH,
    402: ErrorClass.QUOTA_EXHAUSTED,
    403: ErrorClass.AUTH,
    404: ErrorClass.BAD_REQUEST,
    408: ErrorClass.TIMEOUT,
    413: ErrorClass.CONTEXT_LENGTH,
    422: ErrorClass.BAD_REQUEST,
    429: ErrorClass.RATE_LIMITED,
    503: ErrorClass.OVERLOADED,
    504: ErrorClass.TIMEOUT,
    529: ErrorClass.OVERLOADED,
}


def classify(text: str, exit_code: int | None, status: int | None = None) -> ErrorClass:
    """How a failed ``claude`` run failed: the one place its errors are mapped.

    ``text`` is what it said (the result's subtype and text, error events, stderr);
    ``exit_code`` the process's (negative: killed by that signal); ``status`` the API status
    the result reported (``api_error_status``), if any. The wording wins over the status;
    with neither, a process killed by a signal is a cut stream, anything else a server error.
    """
    for cls, pattern in _RULES:
        if pattern.search(text):
            return cls
    if status is not None:
        if status in _STATUS_CLASSES:
            return _STATUS_CLASSES[status]
        if status >= 500:
            return ErrorClass.SERVER_ERROR
        if 400 <= status < 500:
            return ErrorClass.BAD_REQUEST
    if exit_code is not None and exit_code < 0:
        return ErrorClass.STREAM_CUT
    return ErrorClass.SERVER_ERROR


_EPOCH_RE = re.compile(r"usage limit reached\W{0,3}(\d{10,13})\b", re.IGNORECASE)
_AFTER_RE = re.compile(
    r"(?:retry[- ]after|try again in|retry in|wait)\D{0,3}(\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?\b",
    re.IGNORECASE,
)
_RESET_RE = re.compile(
    r"resets? at\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)?(?:\s*\(([\w/+-]+)\))?", re.IGNORECASE
)


def _unit_seconds(unit: str | None) -> float:
    u = (unit or "s").lower()
    if u == "ms" or u.startswith("milli"):
        return 0.001
    if u.startswith("h"):
        return 3600.0
    if u == "m" or u.startswith("min"):
        return 60.0
    return 1.0


def parse_retry_after(text: str, now: float | None = None) -> float | None:
    """Seconds until a rate limit lifts, when ``text`` says: ``usage limit reached|EPOCH``,
    ``retry after 30s`` / ``try again in 5 minutes``, or ``resets at 9pm (Area/City)``."""
    now = time.time() if now is None else now
    if m := _EPOCH_RE.search(text):
        epoch = float(m.group(1))
        if epoch > 1e12:
            epoch /= 1000
        return max(0.0, epoch - now)
    if m := _AFTER_RE.search(text):
        return max(0.0, float(m.group(1)) * _unit_seconds(m.group(2)))
    if m := _RESET_RE.search(text):
        return _until_clock(m.group(1), m.group(2), m.group(3), m.group(4), now)
    return None


def _until_clock(
    hour_s: str, minute_s: str | None, ampm: str | None, zone: str | None, now: float
) -> float | None:
    hour, minute = int(hour_s), int(minute_s or 0)
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    tz: dt.tzinfo | None = None
    if zone:
        try:
            from zoneinfo import ZoneInfo

            tz = ZoneInfo(zone)
        except Exception:  # unknown zone or no tz database: local time
            tz = None
    current = dt.datetime.fromtimestamp(now, tz) if tz else dt.datetime.fromtimestamp(now)
    target = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= current:
        target += dt.timedelta(days=1)
    return max(0.0, target.timestamp() - now)


# -- output sanitising -----------------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_KEY_RE = re.compile(r"\b(sk-ant-|sk-)[A-Za-z0-9_-]{8,}")
OWN_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def _sanitise(text: str, secrets: Iterable[str], limit: int = _TAIL_CHARS) -> str:
    """One line, no escape codes, no secrets, at most ``limit`` characters (the end)."""
    text = _ANSI_RE.sub("", text)
    text = _CTRL_RE.sub(" ", text)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "***")
    text = _KEY_RE.sub(r"\1***", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = "…" + text[-(limit - 1) :]
    return text


# -- one run's output ------------------------------------------------------------------------


class _Events:
    """What one run printed on stdout, folded as it arrives."""

    __slots__ = ("errors", "last_text", "model", "result", "result_seen")

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.result_seen = asyncio.Event()
        self.last_text = ""  # the text of the latest assistant message
        self.model = ""
        self.errors: list[str] = []

    def feed(self, line: bytes) -> None:
        event = _json_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "result":
            self.result = event
            self.result_seen.set()
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "system" and event.get("subtype") == "init":
            if isinstance(event.get("model"), str):
                self.model = event["model"]
        elif kind == "error" or (kind == "system" and event.get("subtype") == "error"):
            self.errors.append(json.dumps(event.get("error") or event.get("message") or event))

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            return
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        text = _text_of(message.get("content"))
        if text:
            self.last_text = text
        if isinstance(event.get("error"), str):
            self.errors.append(event["error"])


def _json_object(line: bytes) -> dict[str, Any] | None:
    """One stream-json line as an object; anything else (blank, not JSON) is None."""
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


async def _pump_stdout(stream: asyncio.StreamReader, events: _Events) -> None:
    buf = bytearray()
    dropping = False
    while chunk := await stream.read(_READ_CHUNK):
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if not dropping:
                buf += chunk[start:nl]
                events.feed(bytes(buf))
            buf.clear()
            dropping = False
            start = nl + 1
        if not dropping:
            buf += chunk[start:]
            if len(buf) > _LINE_LIMIT:
                buf.clear()
                dropping = True
    if buf and not dropping:
        events.feed(bytes(buf))


async def _pump_stderr(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        tail += chunk
        if len(tail) > _STDERR_KEEP:
            del tail[: len(tail) - _STDERR_KEEP]


async def _feed_stdin(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stream.close()


async def _settle(tasks: list[asyncio.Task[None]], proc: asyncio.subprocess.Process) -> None:
    """Let the pipe readers reach EOF (briefly), then stop them and close the transport."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait(pending, timeout=1.0)
    for t in tasks:
        if not t.done():
            t.cancel()
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: a reader's OSError must not be logged as unhandled
    transport = getattr(proc, "_transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()


# -- the provider ----------------------------------------------------------------------------


class ClaudeCodeProvider:
    """``claude-code[:model]``: one ``claude -p`` process per completion."""

    simulated = False
    calls_tools = False  # Claude Code runs its own tools; phalanx tools cannot be given to it
    exit_grace = 5.0  # seconds a process may linger after its result event before it is killed

    def __init__(self, model: str = "", options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise UsageError(
                f"providers.claude-code: unknown option(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_OPTIONS))})"
            )
        self.model = model
        self.name = f"claude-code:{model}" if model else "claude-code"
        exe = str(opts.get("executable") or "claude")
        found = shutil.which(os.path.expanduser(exe))
        if found is None:
            raise UsageError(
                f"claude-code: executable {exe!r} not found on PATH "
                "(set providers.claude-code.executable)"
            )
        self.executable = found
        args = opts.get("args") or []
        if not isinstance(args, list | tuple) or not all(isinstance(a, str) for a in args):
            raise UsageError("providers.claude-code.args: expected a list of strings")
        self.args: tuple[str, ...] = tuple(args)
        cwd = opts.get("cwd")
        self.cwd: str | None = os.path.expanduser(str(cwd)) if cwd else None
        self.timeout = _timeout(opts.get("timeout", 1800))
        env = opts.get("env") or {}
        if not isinstance(env, Mapping):
            raise UsageError("providers.claude-code.env: expected a mapping of NAME: value")
        self.env: dict[str, str | None] = {
            str(k): (None if v is None else str(v)) for k, v in env.items()
        }
        self._running: set[asyncio.subprocess.Process] = set()

    # -- the call ---------------------------------------------------------------------------
    async def complete(self, request: CompletionRequest) -> Completion:
        argv, stdin_data = self._command(request)
        proc = await self._spawn(argv, stdin_data, self._cwd_for(request))
        self._running.add(proc)
        events = _Events()
        stderr_tail = bytearray()
        assert proc.stdout is not None and proc.stderr is not None
        tasks = [
            asyncio.create_task(_pump_stdout(proc.stdout, events)),
            asyncio.create_task(_pump_stderr(proc.stderr, stderr_tail)),
        ]
        if stdin_data is not None:
            assert proc.stdin is not None
            tasks.append(asyncio.create_task(_feed_stdin(proc.stdin, stdin_data)))
        try:
            rc = await self._wait(proc, events)
        except TimeoutError:
            await self._kill(proc, tasks)
            raise ProviderError(
                self._message(
                    f"no result within {self.timeout or 0:g}s; process group killed",
                    None,
                    stderr_tail,
                ),
                error_class=ErrorClass.TIMEOUT,
            ) from None
        except BaseException:  # cancelled (a task deadline, a stopped run) or interrupted
            await self._kill(proc, tasks)
            raise
        finally:
            self._running.discard(proc)
        kill_group(proc.pid)  # whatever it left running in its group (background tool processes)
        await _settle(tasks, proc)
        return self._completion(events, rc, stderr_tail)

    async def aclose(self) -> None:
        """Kill every process group still running and reap the processes."""
        procs = list(self._running)
        for proc in procs:
            kill_group(proc.pid)
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)

    # -- pieces -----------------------------------------------------------------------------
    def _command(self, request: CompletionRequest) -> tuple[list[str], bytes | None]:
        system = request.system.replace("\x00", "")
        prompt = "\n\n".join(
            m.content if m.role == "user" else f"[{m.role}]\n{m.content}"
            for m in request.messages
            if m.role != "system"
        ).replace("\x00", "")
        if len(system.encode()) > _ARG_LIMIT:  # too big for argv: it leads the prompt instead
            prompt = f"<system>\n{system}\n</system>\n\n{prompt}"
            system = ""
        via_stdin = len(prompt.encode()) > _ARG_LIMIT or prompt.startswith("-")
        argv = [self.executable, "-p"]
        if not via_stdin:
            argv.append(prompt)
        argv += ["--output-format", "stream-json", "--verbose"]
        if self.model:
            argv += ["--model", self.model]
        if system:
            argv += ["--append-system-prompt", system]
        argv += self.args
        return argv, (prompt.encode() if via_stdin else None)

    def _cwd_for(self, request: CompletionRequest) -> str | None:
        workspace = getattr(request, "workspace", None)  # an agent's own directory, when set
        return str(workspace) if workspace else self.cwd

    def _environ(self) -> dict[str, str]:
        """The child's environment: no secrets but Claude Code's own key and ``env``."""
        env = scrubbed_env(keep=OWN_KEYS)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _secrets(self) -> list[str]:
        values = [v for v in self.env.values() if v and len(v) >= 4]
        return values + secret_values()

    async def _spawn(
        self, argv: list[str], stdin_data: bytes | None, cwd: str | None
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE
                if stdin_data is not None
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=self._environ(),
                start_new_session=True,
            )
        except OSError as exc:
            where = f" in {cwd}" if cwd else ""
            raise ProviderError(
                f"{self.name}: cannot start {self.executable}{where}: "
                f"{exc.strerror or type(exc).__name__}",
                error_class=ErrorClass.INTERNAL,
            ) from None

    async def _wait(self, proc: asyncio.subprocess.Process, events: _Events) -> int:
        """The exit code. Once the result event is in, the process gets ``exit_grace``
        seconds to exit by itself before its group is killed (the result stands)."""
        waiter = asyncio.ensure_future(proc.wait())
        seen = asyncio.ensure_future(events.result_seen.wait())
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wait((waiter, seen), return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    await asyncio.wait((waiter,), timeout=self.exit_grace)
                    if not waiter.done():
                        kill_group(proc.pid)
                return await waiter
        finally:
            seen.cancel()
            waiter.cancel()

    async def _kill(
        self, proc: asyncio.subprocess.Process, tasks: list[asyncio.Task[None]]
    ) -> None:
        kill_group(proc.pid)
        # SIGKILL cannot be ignored; the wait is bounded all the same, and a second
        # cancellation while reaping must not hide the first.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(proc.wait(), 5.0)
        with contextlib.suppress(asyncio.CancelledError):
            await _settle(tasks, proc)

    def _message(self, what: str, exit_code: int | None, stderr_tail: bytes | bytearray) -> str:
        msg = f"{self.name}: {what}"
        if exit_code is not None:
            msg += f" (exit {exit_code})"
        tail = _sanitise(stderr_tail.decode("utf-8", "replace"), self._secrets())
        if tail:
            msg += f"; stderr: {tail}"
        return msg

    def _completion(self, events: _Events, rc: int, stderr_tail: bytes | bytearray) -> Completion:
        result = events.result
        stderr = stderr_tail.decode("utf-8", "replace")
        if result is None:
            what = "exited without a result event"
            if rc == 0:
                cls = ErrorClass.STREAM_CUT
            else:
                cls = classify(" ".join([*events.errors, stderr]), rc)
                if rc < 0:
                    what = f"killed by signal {-rc} before its result event"
            raise ProviderError(
                self._message(what, rc, stderr_tail),
                error_class=cls,
                retry_after=self._retry_after(cls, " ".join([*events.errors, stderr])),
            )
        subtype = str(result.get("subtype") or "")
        text = result.get("result")
        is_error = bool(result.get("is_error")) or subtype.startswith("error")
        if is_error:
            status = result.get("api_error_status")
            status = status if isinstance(status, int) and not isinstance(status, bool) else None
            said = " ".join(
                s
                for s in (
                    subtype,
                    text if isinstance(text, str) else "",
                    *(str(e) for e in _as_list(result.get("errors"))),
                    *events.errors,
                )
                if s
            )
            cls = classify(f"{said} {stderr}", rc, status)
            detail = _sanitise(said, self._secrets(), 300) or "error"
            raise ProviderError(
                self._message(detail, rc or None, stderr_tail),
                error_class=cls,
                status=status,
                retry_after=self._retry_after(cls, f"{said} {stderr}"),
            )
        if not isinstance(text, str):
            text = events.last_text
        return Completion(
            text=text,
            usage=_usage(result),
            stop_reason="end",
            model=events.model or self.model or self.name,
            simulated=False,
            raw=result,
        )

    @staticmethod
    def _retry_after(cls: ErrorClass, text: str) -> float | None:
        if cls not in (ErrorClass.RATE_LIMITED, ErrorClass.OVERLOADED):
            return None
        return parse_retry_after(text)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage(result: Mapping[str, Any]) -> Usage:
    u = result.get("usage")
    u = u if isinstance(u, Mapping) else {}
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    return Usage(
        input_tokens=_int(u.get("input_tokens")),
        output_tokens=_int(u.get("output_tokens")),
        cache_read_tokens=_int(u.get("cache_read_input_tokens")),
        cache_write_tokens=_int(u.get("cache_creation_input_tokens")),
        cost_usd=float(cost)
        if isinstance(cost, int | float) and not isinstance(cost, bool)
        else None,
    )


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds != seconds:
        raise UsageError("providers.claude-code.timeout: expected a positive number of seconds")
    return seconds

"""Tools an agent can call: typed Python functions with a JSON schema, and the built-ins.

A tool is a :class:`ToolSpec`: a name, a description, a JSON schema for its arguments and
the function that runs it. :func:`tool` builds one from a typed function (the schema comes
from the signature, the descriptions from the docstring)::

    @tool
    def word_count(ctx: ToolContext, path: str, unique: bool = False) -> int:
        '''Count the words of a file.

        Args:
            path: file relative to the workspace
            unique: count distinct words only
        '''
        words = ctx.workspace.read_text(path).split()
        return len(set(words)) if unique else len(words)

A first parameter annotated :class:`ToolContext` receives the run's context (workspace,
allowed commands, ...) and is not part of the schema. Supported parameter types: ``str``,
``int``, ``float``, ``bool``, ``list[...]`` of those, ``Literal[...]`` of strings or ints,
and ``X | None`` (not required). A parameter with a default is not required.

:func:`call_tool` is the one way a tool runs: it validates the model's arguments against
the schema, runs the function (sync ones in a thread), and always returns a
:class:`ToolResult`, never raises: a :class:`~phalanx.agents.workspace.ToolError` becomes
``"error: code: message"`` and any other exception ``tool_crashed``, so a tool can never
crash a run. Every result is cut to ``max_output`` characters, and the values of secret
environment variables (see :func:`scrub_env`) are replaced by ``[redacted]``.

The built-ins (:data:`BUILTIN_TOOLS`): ``read_file``, ``write_file``, ``edit_file``,
``list_files``, ``search`` (all inside the :class:`~phalanx.agents.workspace.Workspace` sandbox) and
``run_command``. ``run_command`` runs no shell: ``argv[0]`` must be exactly one of the plan's
allowed commands (a bare name is looked up on ``PATH``, never inside the workspace; a path
such as ``/usr/bin/rm`` or ``./x`` only if allowed as written), and an argument holding any
of :data:`SHELL_METACHARACTERS` is refused (they would mean nothing without a shell, so they
are a sign the model is writing shell syntax). The command runs in the workspace root in a
new session with stdin closed and a scrubbed environment; when it ends, or when its timeout
passes, its whole process group is killed with SIGKILL, so no child outlives the call. (A
child that starts a session of its own escapes the group; containing that needs cgroups.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._util import kill_group
from ..redaction import is_secret_name, scrubbed_env, secret_values
from . import sandbox
from .toolspec import (
    NAMED_PARAMETERS,
    ToolContext,
    ToolResult,
    ToolSpec,
    tool,
    validate_arguments,
)
from .workspace import ToolError

__all__ = [
    "BUILTIN_TOOLS",
    "SHELL_METACHARACTERS",
    "ToolContext",
    "ToolResult",
    "ToolSpec",
    "call_tool",
    "is_secret_name",
    "scrub_env",
    "tool",
    "validate_arguments",
]

SHELL_METACHARACTERS = frozenset(";|&$`<>(){}\n\r\x00")
"""Characters refused in any ``run_command`` argument: ``; | & $ ` < > ( ) { }``, newline,
carriage return and NUL."""


# ------------------------------------------------------------------------ values


# ------------------------------------------------------------------------ secrets


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without its secrets (:func:`phalanx.redaction.is_secret`)."""
    return scrubbed_env(env)


def _secret_values(ctx: ToolContext) -> list[str]:
    values = set(secret_values())
    if ctx.env is not None:
        values.update(secret_values(ctx.env))
    return sorted(values, key=len, reverse=True)


def _redact(text: str, ctx: ToolContext) -> str:
    for value in _secret_values(ctx):
        text = text.replace(value, "[redacted]")
    return text


# ------------------------------------------------------------------------ tool()


# ------------------------------------------------------------------------ validation


# ------------------------------------------------------------------------ calling


async def call_tool(spec: ToolSpec, arguments: object, ctx: ToolContext) -> ToolResult:
    """Validate ``arguments``, run the tool, and report. Never raises for a tool's failure:
    ``ToolError`` -> its code; any other exception -> ``tool_crashed``. (Cancellation still
    propagates; a sync tool that hangs blocks its caller: bound it with a timeout there.)"""
    try:
        kwargs = validate_arguments(spec.parameters, arguments)
        value = await _invoke(spec, kwargs, ctx)
    except ToolError as exc:
        return _failure(exc.code, exc.message, exc.detail, ctx)
    except Exception as exc:
        return _failure("tool_crashed", f"{type(exc).__name__}: {exc}", "", ctx)
    return ToolResult(ok=True, content=_finish(_render(value), ctx))


async def _invoke(spec: ToolSpec, kwargs: dict[str, Any], ctx: ToolContext) -> Any:
    args: tuple[Any, ...] = (ctx,) if spec.needs_context else ()
    _fill_missing(spec.func, kwargs, skip=len(args))
    if inspect.iscoroutinefunction(spec.func):
        return await spec.func(*args, **kwargs)
    result = await asyncio.to_thread(spec.func, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _fill_missing(func: Callable[..., Any], kwargs: dict[str, Any], *, skip: int) -> None:
    """``None`` for optional parameters (``X | None``) that have no default."""
    params = list(inspect.signature(func).parameters.values())[skip:]
    for p in params:
        if p.name not in kwargs and p.default is p.empty and p.kind in NAMED_PARAMETERS:
            kwargs[p.name] = None


def _failure(code: str, message: str, detail: str, ctx: ToolContext) -> ToolResult:
    line = " ".join(message.split())[:500]
    text = f"error: {code}: {line}" + (f"\n{detail}" if detail else "")
    return ToolResult(ok=False, content=_finish(text, ctx), error_code=code)


def _render(value: object) -> str:
    if value is None:
        return "ok"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _finish(text: str, ctx: ToolContext) -> str:
    text = _redact(text, ctx)
    limit = max(ctx.max_output, 100)
    if len(text) <= limit:
        return text
    note = f"\n... [cut: {len(text) - limit} more characters]"
    return text[: limit - len(note)] + note


# ------------------------------------------------------------------------ file built-ins


def _read_file(ctx: ToolContext, path: str) -> str:
    """Read a UTF-8 text file in the workspace.

    Args:
        path: the file, relative to the workspace root
    """
    return ctx.workspace.read_text(path)


def _write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Create or overwrite a text file in the workspace (parent directories are created).

    Args:
        path: the file, relative to the workspace root
        content: the whole new content of the file
    """
    size = ctx.workspace.write_text(path, content)
    return f"wrote {size} bytes to {ctx.workspace.display(path)}"


def _edit_file(ctx: ToolContext, path: str, old: str, new: str) -> str:
    """Replace one exact piece of text in a file. 'old' must occur exactly once: include
    enough surrounding lines to make it unique.

    Args:
        path: the file, relative to the workspace root
        old: the exact text to replace (whitespace included)
        new: the text to put in its place
    """
    ctx.workspace.edit(path, old, new)
    return f"edited {ctx.workspace.display(path)}"


def _list_files(
    ctx: ToolContext, path: str = ".", pattern: str = "*", recursive: bool = False
) -> str:
    """List a directory of the workspace. Directories end with '/', symlinks with '@'.

    Args:
        path: the directory, relative to the workspace root
        pattern: a glob on names, such as '*.py'
        recursive: also list subdirectories
    """
    listing = ctx.workspace.list(path, pattern, recursive=recursive)
    lines = list(listing.entries) or ["(no entries)"]
    if listing.truncated:
        lines.append(f"... (stopped after {len(listing.entries)} entries)")
    return "\n".join(lines)


def _search(ctx: ToolContext, pattern: str, path: str = ".") -> str:
    """Search text files for lines matching a regular expression (Python syntax).

    Args:
        pattern: the regular expression
        path: a file or directory to search, relative to the workspace root
    """
    result = ctx.workspace.search(pattern, path)
    lines = [f"{h.path}:{h.line}: {h.text}" for h in result.hits] or ["no matches"]
    if result.truncated:
        lines.append("... (stopped early: too many matches or files)")
    return "\n".join(lines)


# ------------------------------------------------------------------------ run_command


async def _run_command(ctx: ToolContext, argv: list[str], timeout: float | None = None) -> str:
    """Run a program in the workspace directory, without a shell, and return its output
    (stdout and stderr together) and exit code. Only allowed programs run; shell syntax
    (pipes, redirection, $variables, ;, &&, subshells) is refused: pass each argument as its
    own list item.

    Args:
        argv: the program and its arguments, e.g. ["pytest", "-q", "tests"]
        timeout: seconds before the program and its children are killed
    """
    _check_argv(argv, ctx.allowed_commands)
    env = scrubbed_env(os.environ if ctx.env is None else ctx.env, keep=ctx.env_pass)
    executable = _resolve_executable(argv[0], env, ctx.workspace.root)
    limit = _timeout(timeout, ctx.command_timeout)
    capture = _Capture(ctx.max_output - 200)  # room for the exit code or error line
    program = _sandboxed(ctx, argv, executable, env.get("HOME"))
    preexec = _limits(ctx, limit)
    code = await _run_process(program, env, ctx.workspace.root, limit, capture, preexec)
    if code is None:
        raise ToolError(
            "timeout",
            f"{argv[0]} did not finish within {limit:g}s; it and its children were killed",
            detail=capture.text(),
        )
    output = capture.text()
    separator = "\n" if output and not output.endswith("\n") else ""
    return f"{output}{separator}[exit code {code}]"


def _sandboxed(
    ctx: ToolContext, argv: list[str], executable: str, home: str | None
) -> tuple[list[str], str]:
    """What to start, and the file to execute: ``argv`` inside bubblewrap, or as it is
    with ``sandbox: none``."""
    if ctx.sandbox == "none":
        return argv, executable
    if ctx.sandbox != "bwrap":
        raise ToolError("sandbox_unavailable", f"unknown sandbox {ctx.sandbox!r}")
    wrapped = sandbox.wrap(argv, executable, ctx.workspace.root, network=ctx.network, home=home)
    return wrapped, wrapped[0]


def _limits(ctx: ToolContext, timeout: float) -> Callable[[], None]:
    cpu = ctx.cpu_seconds if ctx.cpu_seconds is not None else timeout
    return sandbox.limits(cpu, ctx.memory_mb)


def _check_argv(argv: list[str], allowed: frozenset[str]) -> None:
    if not argv:
        raise ToolError("bad_arguments", "argv must be a non-empty list of strings")
    if argv[0] not in allowed:
        names = ", ".join(sorted(allowed)[:30]) or "none"
        raise ToolError(
            "command_not_allowed", f"{argv[0]!r} is not an allowed command (allowed: {names})"
        )
    for arg in argv:
        bad = sorted(set(arg) & SHELL_METACHARACTERS)
        if bad:
            raise ToolError(
                "shell_metacharacters",
                f"argument {ascii(arg)[:80]} contains {''.join(bad)!r}: commands run without "
                "a shell, so pass each argument as its own list item",
            )


def _resolve_executable(program: str, env: Mapping[str, str], root: Path) -> str:
    """The file to execute: an allowed path as written (relative to the workspace), or a
    bare name looked up on ``PATH``, skipping relative entries and any inside the workspace."""
    if "/" in program:
        path = os.path.join(root, program)  # an absolute program stays absolute
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise ToolError("not_found", f"{program}: no such executable")
    dirs = [
        d
        for d in env.get("PATH", os.defpath).split(os.pathsep)
        if os.path.isabs(d) and not _within(d, root)
    ]
    found = shutil.which(program, path=os.pathsep.join(dirs))
    if found is None:
        raise ToolError("not_found", f"{program}: not found on PATH")
    return found


def _within(directory: str, root: Path) -> bool:
    real = os.path.realpath(directory)
    return real == str(root) or real.startswith(str(root) + os.sep)


def _timeout(requested: float | None, ceiling: float) -> float:
    if requested is None:
        return ceiling
    if not requested > 0:
        raise ToolError("bad_arguments", "timeout must be a positive number of seconds")
    return min(requested, ceiling)


class _Capture:
    """Keeps the first and last ``limit / 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(limit, 100) // 2
        self.tail_limit = max(limit, 100) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            del self.tail[:excess]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        middle = f"\n... [{cut} bytes of output cut] ...\n" if cut else ""
        head = bytes(self.head).decode("utf-8", "replace")
        return head + middle + bytes(self.tail).decode("utf-8", "replace")


async def _run_process(
    program: tuple[list[str], str],
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    capture: _Capture,
    preexec: Callable[[], None],
) -> int | None:
    """Run ``argv``; the exit code, or ``None`` if it timed out. The output goes through a
    pipe asyncio does not own, so waiting ends when the program exits even if a child it
    left behind still holds the pipe; the group is killed either way."""
    (argv, executable), (read_fd, write_fd) = program, os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            argv[0],
            *argv[1:],
            executable=executable,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            preexec_fn=preexec,
        )
    except OSError as exc:
        os.close(read_fd)
        raise ToolError("not_found", f"{argv[0]}: cannot run ({exc.strerror or exc})") from None
    finally:
        os.close(write_fd)
    stream, transport = await _open_stream(read_fd, proc.pid)
    collector = asyncio.create_task(_collect(stream, capture))
    try:
        code = await _wait(proc, timeout)
        kill_group(proc.pid)  # nothing the command started outlives it
        await asyncio.wait({collector}, timeout=2.0)
        return code
    finally:
        kill_group(proc.pid)
        collector.cancel()
        transport.close()
        if proc.returncode is None:  # cancelled: reap what was just killed
            await proc.wait()


async def _open_stream(fd: int, pid: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), pipe
        )
    except BaseException:
        pipe.close()
        kill_group(pid)
        raise
    return stream, transport


async def _collect(stream: asyncio.StreamReader, capture: _Capture) -> None:
    while chunk := await stream.read(1 << 16):
        capture.add(chunk)


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        return None


# ------------------------------------------------------------------------ registry

BUILTIN_TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        tool(name="read_file", read_only=True)(_read_file),
        tool(name="write_file")(_write_file),
        tool(name="edit_file")(_edit_file),
        tool(name="list_files", read_only=True)(_list_files),
        tool(name="search", read_only=True)(_search),
        tool(name="run_command")(_run_command),
    )
}
"""The built-in tools by name. Each needs a :class:`ToolContext`. ``read_file``,
``list_files`` and ``search`` are read-only; ``write_file``, ``edit_file`` and
``run_command`` write (a call of theirs left in doubt by a crash follows
``retry.on_in_doubt``)."""

"""MCP tool servers as agent tools, through the official ``mcp`` SDK (``pip install
'phalanx[mcp]'``).

A plan names its servers under ``mcp:`` (:class:`McpServer`): a **stdio** server is a
command, started when the run starts and stopped when it ends (its whole process tree),
inside the command sandbox (bubblewrap, as ``run_command``: the workspace writable, the
server's folder and its installation read-only, no network unless the plan allows it,
``commands: {sandbox: none}`` to opt out), with the scrubbed environment (the secret rule)
plus its own ``env: {pass: [...]}``; a **streamable HTTP** server is a URL, with headers
whose values come from named environment variables (``{env: NAME, prefix: "Bearer "}``):
never a secret written in the plan.

:class:`McpHub` connects to them all, lists their tools and turns each into a
:class:`~phalanx.agents.toolspec.ToolSpec` named ``mcp__SERVER__TOOL`` (what the model
sees) whose ``origin`` is ``mcp:SERVER/TOOL`` (what a plan's tool patterns match) and whose
schema is the server's ``inputSchema``. Such a tool runs like a built-in: its arguments
are validated against that schema before anything is sent, its call is journaled, its
result (the text content) cut to size and redacted. It counts as writing unless the server
marks it ``readOnlyHint``. A tool error (``isError``) reaches the model as
``error: mcp_tool_error: ...``; a server that fails or times out as ``mcp_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .._util import one_line
from ..exceptions import ToolError, UsageError
from ..redaction import redact, register, scrubbed_env
from . import sandbox
from .toolspec import ToolSpec

__all__ = [
    "MCP_PREFIX",
    "SERVER_NAME",
    "McpHub",
    "McpServer",
    "header_values",
    "model_tool_name",
    "tool_origin",
]

MCP_PREFIX = "mcp:"  # a plan's tool pattern for MCP tools: mcp:SERVER/TOOL (TOOL may glob)
SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
DEFAULT_CALL_TIMEOUT = 60.0
DEFAULT_START_TIMEOUT = 30.0
LOG_SETTLE = 2.0  # seconds to wait for a server's last stderr lines to reach its log
LOG_LINE = 65536  # bytes of one stderr line redacted at once (a longer one: in pieces)
INSTALL_HINT = "MCP servers need the mcp extra: pip install 'phalanx[mcp]'"


@dataclass(frozen=True, kw_only=True)
class McpServer:
    """One MCP server of a plan: ``command`` (stdio) or ``url`` (streamable HTTP).

    stdio: ``command`` is the argv (no shell), run in ``cwd`` (default: the plan file's
    folder), with the scrubbed environment plus the variables named in ``env_pass``;
    ``sandbox``/``network`` default to the plan's ``commands``. HTTP: ``headers`` maps a
    header to ``{"env": NAME}`` (optionally with ``"prefix"``) or to a plain text that is
    not a credential. ``timeout``: seconds one tool call may take; ``start_timeout``:
    seconds to connect and list the tools."""

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    env_pass: tuple[str, ...] = ()
    cwd: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_CALL_TIMEOUT
    start_timeout: float = DEFAULT_START_TIMEOUT
    sandbox: str | None = None
    network: bool | None = None

    @property
    def kind(self) -> str:
        return "stdio" if self.command else "http"


def model_tool_name(server: str, tool: str) -> str:
    """The name a model calls an MCP tool by: ``mcp__SERVER__TOOL`` (characters outside
    ``[A-Za-z0-9_-]`` become ``_``; at most 64 characters, as the providers require)."""
    return f"mcp__{server}__{_UNSAFE.sub('_', tool)}"[:64]


def tool_origin(server: str, tool: str) -> str:
    return f"{MCP_PREFIX}{server}/{tool}"


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def header_values(server: McpServer, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The HTTP headers of ``server``, each ``{env: NAME}`` read from the environment (and
    registered as a secret, so it is redacted wherever it would appear)."""
    source = os.environ if env is None else env
    out: dict[str, str] = {}
    for header, spec in server.headers.items():
        if isinstance(spec, str):
            if header.lower() in _SECRET_HEADERS:
                raise UsageError(
                    f"mcp.{server.name}.headers.{header}: a credential is never written in "
                    f"the plan; use {{env: NAME}} to read it from an environment variable"
                )
            out[header] = spec
            continue
        name = str(spec["env"])
        value = source.get(name)
        if not value:
            raise UsageError(
                f"mcp.{server.name}.headers.{header}: environment variable {name} is not set"
            )
        register(value)
        out[header] = str(spec.get("prefix", "")) + value
    return out


def _sdk() -> Any:
    try:
        import mcp
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return mcp


class McpHub:
    """The run's connections to its MCP servers and their tools (``tools``: by model name).
    Start with :meth:`start`; :meth:`aclose` (from the same task) stops every stdio server
    and closes every connection."""

    def __init__(self) -> None:
        self.tools: dict[str, ToolSpec] = {}
        self.servers: dict[str, Any] = {}  # name -> mcp.Client
        self._logs: dict[str, str] = {}  # name -> a stdio server's stderr file
        self._pipes: dict[str, _RedactedLog] = {}  # name -> what copies it there
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    async def start(
        cls,
        servers: Sequence[McpServer],
        *,
        workspace: Path,
        base_dir: Path,
        sandbox: str = "bwrap",
        network: bool = False,
        env_pass: Sequence[str] = (),
        log_dir: Path | None = None,
    ) -> McpHub:
        """Connect to every server and list its tools; a server that cannot be reached
        stops the run before it starts (a ``UsageError`` naming it), after the ones
        already started are stopped."""
        hub = cls()
        try:
            for server in servers:
                where = _Where(workspace, base_dir, sandbox, network, tuple(env_pass), log_dir)
                await hub._connect(server, where)
        except BaseException:
            await hub.aclose()
            raise
        return hub

    async def _connect(self, server: McpServer, where: _Where) -> None:
        mcp = _sdk()
        transport = await self._stdio(server, where) if server.command else await self._http(server)
        client = mcp.Client(transport, read_timeout_seconds=server.timeout, mode="legacy")
        try:
            async with asyncio.timeout(server.start_timeout):
                await self._stack.enter_async_context(client)
                self._spawned(server.name)
                listed = await _list_tools(client)
        except Exception as exc:
            what = f"{server.kind} server {' '.join(server.command) or server.url}"
            self._spawned(server.name, settle=True)
            said = _last_line(self._logs.get(server.name))
            raise UsageError(
                f"mcp.{server.name}: the {what} did not start: {_why(exc)}"
                + (f" (its stderr: {said})" if said else "")
            ) from None
        self.servers[server.name] = client
        for tool in listed:
            spec = _tool_spec(server, client, tool)
            if spec.name in self.tools:
                raise UsageError(
                    f"mcp.{server.name}: two tools are both called {spec.name!r} once made "
                    "safe for the model; rename one on the server"
                )
            self.tools[spec.name] = spec

    async def _stdio(self, server: McpServer, where: _Where) -> Any:
        mcp = _sdk()
        from mcp.client.stdio import stdio_client

        env = scrubbed_env(os.environ, keep=(*where.env_pass, *server.env_pass))
        cwd = (where.base_dir / server.cwd) if server.cwd else where.base_dir
        argv = _server_argv(server, where, env, cwd.resolve())
        params = mcp.StdioServerParameters(
            command=argv[0], args=argv[1:], env=env, cwd=str(cwd.resolve())
        )
        return stdio_client(params, errlog=self._errlog(server, where))

    def _errlog(self, server: McpServer, where: _Where) -> TextIO:
        """Where a stdio server's stderr goes: ``mcp-NAME.log`` in the run's folder (its
        logging never mixes with the run's progress), redacted line by line as everything
        recorded is; else nowhere."""
        if where.log_dir is None:
            return self._stack.enter_context(open(os.devnull, "w", encoding="utf-8"))
        where.log_dir.mkdir(parents=True, exist_ok=True)
        path = where.log_dir / f"mcp-{server.name}.log"
        self._logs[server.name] = str(path)
        log = _RedactedLog(path)
        self._pipes[server.name] = log
        self._stack.callback(log.close)  # after the server is stopped (the stack unwinds)
        return log.writer

    def _spawned(self, name: str, *, settle: bool = False) -> None:
        """The server's process holds its own end of its stderr pipe: close this process's
        (the copy then ends with the server); ``settle``: wait until what it wrote is in its
        log (a server that did not start: its last line says why)."""
        log = self._pipes.get(name)
        if log is not None:
            log.spawned()
            if settle:
                log.settle(LOG_SETTLE)

    async def _http(self, server: McpServer) -> Any:
        _sdk()
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = header_values(server)
        client = httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30.0, read=max(server.timeout, 30.0))
        )
        await self._stack.enter_async_context(client)
        return streamable_http_client(str(server.url), http_client=client)

    async def aclose(self) -> None:
        """Stop every stdio server (its process tree) and close every connection."""
        self.servers.clear()
        with contextlib.suppress(Exception):
            await self._stack.aclose()


class _RedactedLog:
    """A stdio server's stderr, redacted into its log file: the server writes into a pipe
    (:attr:`writer` is what its process gets as stderr) and a thread copies it to the file
    line by line with the secret rule applied (:func:`~phalanx.redaction.redact`); a line
    longer than :data:`LOG_LINE` is written (and redacted) in pieces."""

    def __init__(self, path: Path) -> None:
        read, write = os.pipe()
        self._read = read
        self.writer: TextIO = os.fdopen(write, "w", encoding="utf-8")
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by the thread)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._copy, name=f"mcp-log-{path.stem}", daemon=True)
        self._thread.start()

    def spawned(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every writer is gone and all is copied."""
        self.spawned()
        self._thread.join(timeout)

    def close(self) -> None:
        """Copy what is left and stop, even if something still holds the pipe open."""
        self.spawned()
        self._stop.set()
        self._thread.join(LOG_SETTLE)

    def _copy(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self._next_chunk()
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > LOG_LINE:
                    lines, pending = [*lines, pending], b""
                for line in lines:
                    self._write(line)
            if pending:
                self._write(pending)
        finally:
            os.close(self._read)
            self._file.close()

    def _next_chunk(self) -> bytes:
        """What the server wrote next; empty at the end (every writer gone, or stopped and
        nothing more to read)."""
        while True:
            ready, _, _ = select.select([self._read], [], [], 0.1)
            if ready:
                return os.read(self._read, 65536)
            if self._stop.is_set():
                return b""

    def _write(self, line: bytes) -> None:
        self._file.write(redact(line.decode("utf-8", errors="replace")) + "\n")
        self._file.flush()


@dataclass(frozen=True, slots=True)
class _Where:
    workspace: Path
    base_dir: Path
    sandbox: str
    network: bool
    env_pass: tuple[str, ...]
    log_dir: Path | None


def _server_argv(server: McpServer, where: _Where, env: Mapping[str, str], cwd: Path) -> list[str]:
    """The server's command, inside bubblewrap unless its sandbox (or the plan's) is none:
    the workspace read-write, its folder read-only and the working directory."""
    argv = list(server.command)
    executable = _executable(argv[0], env, cwd, server.name)
    kind = server.sandbox or where.sandbox
    if kind == "none":
        return [executable, *argv[1:]]
    where.workspace.mkdir(parents=True, exist_ok=True)  # bound into the sandbox
    network = where.network if server.network is None else server.network
    try:
        wrapped = sandbox.wrap(
            [executable, *argv[1:]],
            executable,
            where.workspace,
            network=network,
            home=env.get("HOME"),
            read_only=(str(cwd),),
            chdir=str(cwd),
        )
    except ToolError as exc:
        raise UsageError(f"mcp.{server.name}: {exc.message}") from None
    return wrapped


def _executable(program: str, env: Mapping[str, str], cwd: Path, name: str) -> str:
    if "/" in program:
        path = cwd / program
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is not None:
            return found
    raise UsageError(f"mcp.{name}: command {program!r} not found")


async def _list_tools(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(100):  # a paginator that never ends cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _last_line(path: str | None) -> str:
    """The last line a server wrote to its stderr log (why it did not start), redacted."""
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.readlines()[-20:] if line.strip()]
    except OSError:
        return ""
    return redact(one_line(lines[-1], 300)) if lines else ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time (start_timeout)"
    inner = getattr(exc, "exceptions", None)  # an exception group from the SDK's tasks
    if inner:
        return _why(inner[0])
    text = str(exc) or type(exc).__name__
    return redact(one_line(f"{type(exc).__name__}: {text}" if str(exc) else text, 300))


def _tool_spec(server: McpServer, client: Any, tool: Any) -> ToolSpec:
    """A :class:`ToolSpec` that calls ``tool`` on ``server`` through ``client``."""
    annotations = getattr(tool, "annotations", None)
    read_only = bool(annotations is not None and annotations.read_only_hint)

    async def call(**arguments: Any) -> str:
        try:
            result = await client.call_tool(
                tool.name, arguments, read_timeout_seconds=server.timeout
            )
        except Exception as exc:
            raise ToolError(
                "mcp_failed", f"MCP server {server.name}: {tool.name} failed: {_why(exc)}"
            ) from None
        text = redact(_result_text(result))
        if result.is_error:
            first, _, rest = text.partition("\n")
            raise ToolError("mcp_tool_error", first or "the tool reported an error", detail=rest)
        return text

    schema = dict(tool.input_schema or {"type": "object"})
    schema.setdefault("type", "object")
    return ToolSpec(
        name=model_tool_name(server.name, tool.name),
        description=tool.description or getattr(tool, "title", None) or tool.name,
        parameters=schema,
        func=call,
        read_only=read_only,
        origin=tool_origin(server.name, tool.name),
    )


def _result_text(result: Any) -> str:
    """A tool result as text: its text blocks; other blocks named; the structured content
    when there is no text."""
    parts: list[str] = []
    for block in result.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} content: {getattr(block, 'mime_type', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            inner = getattr(block, "resource", None)
            parts.append(getattr(inner, "text", None) or f"[resource: {getattr(inner, 'uri', '')}]")
    if not parts and result.structured_content is not None:
        import json

        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)

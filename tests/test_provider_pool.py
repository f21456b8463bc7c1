"""The HTTP providers' pools keep each connection's socket for the idle check
(``providers/_pool.py``): the check is a ``poll`` alone, and it still finds a connection the
server closed, so the next request goes out on a new one."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from phalanx.providers._pool import _Backend, _Stream, lighten
from phalanx.providers.anthropic_api import AnthropicProvider
from phalanx.providers.base import CompletionRequest, Message
from phalanx.providers.openai_api import OpenAIProvider

_ANSWER = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


class _Inner:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None


def test_readable_is_true_for_data_an_end_or_a_closed_socket() -> None:
    a, b = socket.socketpair()
    stream = _Stream(_Inner(a))

    def readable(_: socket.socket) -> bool:
        return bool(stream.get_extra_info("is_readable"))

    try:
        assert not readable(a)  # idle
        b.send(b"x")
        assert readable(a)
        a.recv(1)
        assert not readable(a)
        b.close()
        assert readable(a)  # the peer's end is there to read
    finally:
        a.close()
    assert readable(a)  # closed: the pool's own check says readable too
    c, d = socket.socketpair()  # may take the closed socket's number: still readable
    try:
        assert readable(a)
    finally:
        c.close()
        d.close()


async def _serve_once_then_close(seen: list[float]) -> tuple[asyncio.Server, int]:
    """An OpenAI-compatible server that answers one request per connection, kept alive by
    its headers, then closes the connection a moment later (as servers do when idle)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(time.monotonic())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(_ANSWER)}\r\n\r\n".encode()
            + _ANSWER
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _request() -> CompletionRequest:
    return CompletionRequest(model="m", messages=(Message(role="user", content="hi"),))


def test_a_connection_the_server_closed_is_not_used_again() -> None:
    async def go() -> tuple[list[str], int, Any]:
        seen: list[float] = []
        server, port = await _serve_once_then_close(seen)
        provider = OpenAIProvider(
            "m",
            {"base_url": f"http://127.0.0.1:{port}/v1"},
            compatible=True,
            env={"OPENAI_COMPATIBLE_API_KEY": "sk-test-pool-000000"},
        )
        texts = []
        for _ in range(3):
            texts.append((await provider.complete(_request())).text)
            await asyncio.sleep(0.2)  # the server has closed it by now
        backend = provider._client._client._transport._pool._network_backend
        await provider.aclose()
        server.close()
        await server.wait_closed()
        return texts, len(seen), backend

    texts, connections, backend = asyncio.run(asyncio.wait_for(go(), 20))
    assert isinstance(backend, _Backend)  # the cheaper check was in place
    assert texts == ["ok", "ok", "ok"]
    assert connections == 3  # each closed connection was found closed, none reused


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_both_providers_pools_get_the_cheaper_check(kind: str) -> None:
    async def go() -> bool:
        if kind == "openai":
            p: Any = OpenAIProvider("gpt", {}, env={"OPENAI_API_KEY": "sk-test-pool-000000"})
        else:
            p = AnthropicProvider("claude", {}, env={"ANTHROPIC_API_KEY": "sk-test-pool-0000"})
        wrapped = isinstance(p._client._client._transport._pool._network_backend, _Backend)
        again = lighten(p._client)  # once is enough: not wrapped twice
        await p.aclose()
        return wrapped and again

    assert asyncio.run(go())


def test_a_client_of_another_shape_is_left_as_it_is() -> None:
    class Other:
        _client = None

    assert lighten(Other()) is False
    assert lighten(object()) is False


def test_the_stream_passes_everything_else_through() -> None:
    class Inner:
        def get_extra_info(self, info: str) -> Any:
            return {"socket": None, "server_addr": ("127.0.0.1", 1)}.get(info)

    stream = _Stream(Inner())
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", 1)
    assert stream.get_extra_info("is_readable") is None  # no socket: the inner stream's say

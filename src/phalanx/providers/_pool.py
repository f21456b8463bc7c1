"""Cheaper idle-connection checks for the HTTP providers' connection pools.

Before it hands out a kept-alive connection, and whenever a request ends, the SDKs' pool
(``httpcore2``) asks every idle connection whether the server closed it: a ``poll`` of its
socket. The socket is found afresh each time through ``anyio``'s typed attributes, which
build a mapping of every attribute of the socket and ask the kernel for its peer's address:
about 5 µs of the 6.5 µs a check costs, and a fleet with 20 agents makes about 20 checks a
request. :func:`lighten` wraps the pool's network backend so that each connection keeps its
socket and the check is the ``poll`` alone; what the pool decides is unchanged (the same
readability test on the same socket). A pool that is not the expected one (a proxy, a
custom ``http_client``, another release of the transport, or no ``httpcore2`` at all) is
left as it is.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Iterable
from typing import Any, cast

__all__ = ["lighten"]


def lighten(client: Any) -> bool:
    """Give an SDK client's connection pool the cheaper check; False when its transport is
    not the plain pool this knows (nothing is changed then)."""
    try:
        import httpcore2  # httpx2's transport (not there where httpx2 uses the browser's)
    except ImportError:
        return False
    transport = getattr(getattr(client, "_client", None), "_transport", None)
    pool = getattr(transport, "_pool", None)
    if type(pool) is not httpcore2.AsyncConnectionPool:
        return False
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, _Backend):  # already
        return True
    if not isinstance(backend, httpcore2.AsyncNetworkBackend):
        return False
    pool._network_backend = cast(Any, _Backend(backend))  # duck-typed: the same methods
    return True


class _Stream:
    """A connection's stream that keeps its socket for the pool's readability check."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        sock = inner.get_extra_info("socket")  # a socket, or asyncio's TransportSocket
        self._sock: Any = sock if callable(getattr(sock, "fileno", None)) else None
        self._poll: Any = None  # the socket's poll object, made once (at the first check)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        """``is_readable``: whether reading the socket would return at once (data, or the
        end a closed peer leaves); a closed socket counts as readable, as the pool's own
        check has it. One ``poll`` of a poll object kept for the socket."""
        if info == "is_readable" and self._sock is not None:
            if self._poll is None:
                fd = self._sock.fileno()
                if fd < 0:
                    return True
                self._poll = select.poll()
                self._poll.register(fd, select.POLLIN)
            elif self._sock.fileno() < 0:  # closed (its number may be another's now)
                return True
            return bool(self._poll.poll(0))
        return self._inner.get_extra_info(info)


class _Backend:
    """The pool's own backend, its streams wrapped in :class:`_Stream`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip
        return _Stream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

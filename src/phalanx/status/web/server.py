"""Serving the dashboard with uvicorn: in the caller's event loop or in a background thread.

The socket is bound in the caller's thread, so a bad host or a taken port raises
:class:`~phalanx.exceptions.UsageError` there; a non-loopback host needs an explicit token.
uvicorn's access log is off (it would carry the token) and its loggers get a
:class:`~phalanx.redaction.RedactingFilter`. :func:`serve` is ``phalanx dashboard``;
:class:`DashboardThread` is ``phalanx run --web`` and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import uvicorn

from ...exceptions import UsageError
from ...redaction import RedactingFilter
from .app import Settings, create_app
from .auth import check_bind, dashboard_url, default_allowed_hosts, new_token

__all__ = ["DashboardThread", "serve"]

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _install_log_filter() -> None:
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Dashboard:
    """A bound socket, the app and its uvicorn server: built in the caller's thread (so bind
    errors surface there), run in any loop."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str,
        port: int,
        token: str | None,
        run_id: str | None,
        allowed_hosts: Sequence[str] | None,
    ) -> None:
        check_bind(host, token)
        self.token = token or new_token()
        self.sock = _listen(host, port)
        self.port = int(self.sock.getsockname()[1])
        self.url = dashboard_url(host, self.port, self.token)
        hosts = allowed_hosts if allowed_hosts is not None else default_allowed_hosts(host)
        self.app = create_app(state_dir, token=self.token, run_id=run_id, allowed_hosts=hosts)
        self.settings = cast(Settings, self.app.state.phalanx)
        _install_log_filter()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,  # access logs would carry the token
            log_config=None,  # leave the host program's logging alone
            lifespan="off",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)

    async def run(self, ready: Callable[[str], None] | None = None) -> None:
        task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        watcher = asyncio.create_task(self._watch(ready))
        try:
            await task
        finally:
            self.settings.closing.set()
            watcher.cancel()
            self.sock.close()

    async def _watch(self, ready: Callable[[str], None] | None) -> None:
        # uvicorn exposes started/should_exit as plain flags, no event to await: poll them
        while not self.server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if ready is not None:
            ready(self.url)
        while not self.server.should_exit:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        self.settings.closing.set()  # let the event streams end before the server waits

    def stop(self) -> None:
        self.settings.closing.set()
        self.server.should_exit = True


async def serve(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    run_id: str | None = None,
    ready: Callable[[str], None] | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> None:
    """Serve the dashboard until cancelled or interrupted; ``ready(url)`` once listening
    (the URL carries the token: print it once, never log it). A non-loopback ``host``
    needs an explicit ``token`` (:class:`UsageError` otherwise)."""
    dashboard = _Dashboard(
        state_dir,
        host=host,
        port=port,
        token=token,
        run_id=run_id,
        allowed_hosts=allowed_hosts,
    )
    try:
        await dashboard.run(ready)
    except asyncio.CancelledError:
        dashboard.stop()
        raise


class DashboardThread:
    """The dashboard in a background thread with its own event loop (``phalanx run --web``,
    tests). ``start()`` returns the URL once it listens; ``stop()`` ends it."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        run_id: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self._args = (Path(state_dir), host, port, token, run_id, allowed_hosts)
        self._dashboard: _Dashboard | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def token(self) -> str:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.token

    @property
    def url(self) -> str:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.url

    @property
    def port(self) -> int:
        assert self._dashboard is not None, "start() first"
        return self._dashboard.port

    def start(self, timeout: float = 10.0) -> str:
        state, host, port, token, run_id, hosts = self._args
        self._dashboard = _Dashboard(
            state, host=host, port=port, token=token, run_id=run_id, allowed_hosts=hosts
        )
        self._thread = threading.Thread(target=self._main, name="phalanx-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise UsageError(f"the dashboard did not start: {self._error or 'timed out'}")
        return self._dashboard.url

    def _main(self) -> None:
        assert self._dashboard is not None
        try:
            asyncio.run(self._dashboard.run(lambda _url: self._ready.set()))
        except BaseException as exc:  # reported by start(); a thread must not die loudly
            self._error = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._dashboard is not None:
            self._dashboard.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

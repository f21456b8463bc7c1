"""Who may talk to the dashboard: the access token, its cookie, the Host/Origin guard.

Every request, whatever its path or method, passes :class:`Guard` first: a foreign ``Host``
(DNS rebinding) or a cross-origin ``Origin`` is 403, no token (``?token=``, ``Authorization:
Bearer`` or the cookie the first page load sets) is 401, a wrong one 403, and anything but
GET is 405, except a POST to one of :data:`POST_PATHS` (an approval decision), which must
also come from the page itself (an ``Origin`` of this very host, and no ``Sec-Fetch-Site``
other than ``same-origin``) or carry the token as ``Authorization: Bearer`` (a script).
Allowed responses get the security headers. Also here: the token itself, the one URL to
print, and the loopback checks that refuse a non-loopback bind without an explicit token.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request, cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...exceptions import UsageError

__all__ = [
    "COOKIE",
    "LOOPBACK_HOSTS",
    "POST_PATHS",
    "Guard",
    "check_bind",
    "dashboard_url",
    "default_allowed_hosts",
    "is_loopback",
    "new_token",
    "split_host",
    "to_cookie",
    "token_ok",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
POST_PATHS = frozenset({"/api/approve"})  # the only routes that change anything
COOKIE = "phalanx_token"
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


# -- tokens, URLs, binding ------------------------------------------------------------------
def new_token() -> str:
    """A fresh random access token (URL-safe)."""
    return secrets.token_urlsafe(24)


def _url_host(host: str) -> str:
    if host in _WILDCARD_BINDS:
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def dashboard_url(host: str, port: int, token: str) -> str:
    """The one URL to print: it carries the token (the page then moves it into a cookie)."""
    return f"http://{_url_host(host)}:{port}/?{urlencode({'token': token})}"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback unless the caller chose the token."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"the dashboard listens on {host!r}, beyond this machine: give an explicit --token"
        )


def default_allowed_hosts(host: str) -> tuple[str, ...]:
    """Host headers accepted when listening on ``host``: loopback names, and for a
    non-loopback bind its address and this machine's name."""
    hosts = [*LOOPBACK_HOSTS, "::1"]
    if not is_loopback(host):
        if host not in _WILDCARD_BINDS:
            hosts.append(host)
        hosts.append(socket.gethostname())
    return tuple(dict.fromkeys(h.lower() for h in hosts))


# -- the guard: every request, before routing -----------------------------------------------
def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` (IPv6 in brackets) as (host, port); port '' when absent."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, port
    return value, ""


def _presented_tokens(scope: Scope) -> list[str]:
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    found = list(query.get("token", []))
    auth = _header(scope, b"authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip())
    cookies = cookie_parser(_header(scope, b"cookie") or "")
    found += [v for k, v in cookies.items() if k == COOKIE or k.startswith(COOKIE + "_")]
    return found


def token_ok(given: str, token: str) -> bool:
    """``given`` is the access token (compared in constant time)."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


class Guard:
    """Pure ASGI middleware: Host, Origin and token on every request; then GET only."""

    def __init__(self, app: ASGIApp, *, token: str, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.token = token
        self.any_host = "*" in allowed_hosts
        self.hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        denied = self.verdict(scope)
        if denied is None and scope["method"] != "GET":
            denied = self._post_verdict(scope)
        if denied is not None:
            await _deny(*denied)(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send))

    def verdict(self, scope: Scope) -> tuple[int, str] | None:
        """Why a request is refused (status, text), or None when it may pass."""
        host = _header(scope, b"host")
        if host is None or not self._host_ok(host):
            return 403, "forbidden: unknown Host"
        origin = _header(scope, b"origin")
        if origin is not None and not _same_origin(origin, host):
            return 403, "forbidden: cross-origin request"
        given = _presented_tokens(scope)
        if not given:
            return 401, "unauthorized: the access token is required"
        if not any(token_ok(g, self.token) for g in given):
            return 403, "forbidden: wrong access token"
        return None

    def _post_verdict(self, scope: Scope) -> tuple[int, str] | None:
        """A request that may pass the token check but is not a GET: only a POST to a
        :data:`POST_PATHS` route, sent by the page itself or by a script with a bearer
        token (a browser always sends ``Origin`` with a POST; a forged form cannot set
        ``Authorization``)."""
        if scope["method"] != "POST" or scope.get("path") not in POST_PATHS:
            return 405, "method not allowed"
        site = (_header(scope, b"sec-fetch-site") or "same-origin").lower()
        if site not in ("same-origin", "none"):
            return 403, "forbidden: cross-site request"
        if _header(scope, b"origin") is not None:
            return None  # same-origin (verdict checked it)
        auth = _header(scope, b"authorization") or ""
        bearer = auth.partition(" ")
        if bearer[0].lower() == "bearer" and token_ok(bearer[2].strip(), self.token):
            return None
        return 403, "forbidden: a POST needs the page's Origin or an Authorization header"

    def _host_ok(self, value: str) -> bool:
        host, _ = split_host(value)
        return self.any_host or host in self.hosts


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin.strip())
    return parts.scheme == "http" and parts.netloc.lower() == host.strip().lower()


def _deny(status: int, text: str) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="phalanx"'
    if status == 405:
        headers["Allow"] = "GET"  # and POST on POST_PATHS
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += _SECURITY_HEADERS
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


# -- the cookie: the first page load moves the token out of the URL ---------------------------
def to_cookie(request: Request, given: str, token: str) -> Response:
    """Redirect to the same page without ``?token=``; when ``given`` is right, set the
    cookie (named per port, so two dashboards on one host keep their own)."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = "/" + ("?" + urlencode(rest) if rest else "")
    response = RedirectResponse(target, status_code=303)
    if token_ok(given, token):
        _, port = split_host(request.headers.get("host", ""))
        response.set_cookie(
            f"{COOKIE}_{port}" if port else COOKIE,
            token,
            httponly=True,
            samesite="strict",
            path="/",
        )
    return response

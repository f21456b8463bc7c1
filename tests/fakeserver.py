"""A fault-injecting fake model provider on 127.0.0.1, for tests.

It speaks the two wire formats the real SDK-based providers use, streamed:

* ``POST /v1/messages``: the Anthropic Messages API (SSE events ``message_start`` ...
  ``message_stop``);
* ``POST /v1/chat/completions``: OpenAI Chat Completions (``data:`` chunks, a final usage
  chunk, ``[DONE]``).

Point a plan at it with ``providers: {anthropic: {base_url: srv.url}}`` or
``providers: {openai: {base_url: srv.url + "/v1"}}`` (any dummy API key).

Each request gets one *behaviour*:

``ok``            a streamed answer: ``{"answer": "..."}`` (valid text, JSON and YAML);
                  OpenAI with ``stream: false``: the same answer whole
``rate_limited``  429 with ``Retry-After: <retry_after>`` (a passing rate limit)
``quota``         429 that says the spend cap / quota is exhausted (final)
``overloaded``    529 (Anthropic) / 503 (OpenAI)
``server_error``  500
``auth``          401
``context``       400 "prompt is too long" / ``context_length_exceeded``
``reset``         the connection is closed without an answer (connect-level failure)
``hang``          the request is read and never answered, until the client hangs up
``slow``          200 and the first events, then silence (a read timeout)
``cut``           the stream breaks off before its final event
``sse_error``     an ``error`` event inside the 200 stream (overloaded)
``truncated``     the answer stops at ``max_tokens`` (``finish_reason: length``)
``truncated_tool``  the same, with a half-written ``write_file`` tool call in it
``tool_call``     a complete ``write_file`` tool call (``tool_args``)
``malformed``     an answer that is neither valid JSON nor valid YAML

A *quota* (``quota=R, quota_window=W``) makes the server enforce at most R accepted
requests in any W seconds (sliding, by arrival time): a request beyond it gets a 429
(behaviour ``rate_limited``, Retry-After: until the oldest leaves the window) whatever else
was chosen. ``rate_headers=True`` sends the provider's own rate-limit headers on every
answer (Anthropic's ``anthropic-ratelimit-*``, RFC 3339 resets; OpenAI's
``x-ratelimit-*``, duration resets): the limit R (``quota_tokens`` for tokens), what
remains and when the oldest request leaves the window.

How it is chosen, per request, deterministically whatever the threads' interleaving:
the request's *key* is its first user message, and ``n`` counts the requests seen for that
key so far. A ``FAULTS=a,b,c`` marker in the key scripts the behaviours of requests
``n = 0, 1, 2, ...`` (the last one repeats). Otherwise ``random.Random(f"{seed}:{key}:{n}")``
draws from ``faults`` (behaviour -> probability; the rest is ``ok``).

Every request is recorded (:class:`Served`: key, n, behaviour, path, start/end times) and
counted per behaviour. Stopping the server (leaving the ``with``) releases hanging requests,
closes every open connection and joins every handler thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import select
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BEHAVIOURS", "RETRYABLE_FAULTS", "FakeProviderServer", "Served"]

BEHAVIOURS = frozenset(
    {
        "ok",
        "rate_limited",
        "quota",
        "overloaded",
        "server_error",
        "auth",
        "context",
        "reset",
        "hang",
        "slow",
        "cut",
        "sse_error",
        "truncated",
        "truncated_tool",
        "tool_call",
        "malformed",
    }
)
RETRYABLE_FAULTS = ("rate_limited", "overloaded", "server_error", "cut", "sse_error")
HANG_LIMIT = 30.0  # seconds: even a hang ends, so a broken client cannot wedge a test run
_MARKER = re.compile(r"FAULTS=([a-z_,]+)")


@dataclass
class Served:
    """One request as the server saw it."""

    path: str
    key: str  # the request's first user message (its task prompt)
    n: int  # requests seen for this key before this one
    behaviour: str
    started: float  # time.time() when the request was read
    ended: float | None = None  # when the server finished with it
    headers: dict[str, str] = field(default_factory=dict)  # extra headers of its answer
    retry_after: float | None = None  # a quota's 429: seconds until there is room


@dataclass
class _Request:
    path: str
    body: dict[str, Any]
    anthropic: bool
    key: str


def _first_user_text(body: Mapping[str, Any]) -> str:
    for m in body.get("messages") or ():
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


# =========================================================================== wire formats


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _a_error(etype: str, message: str, **details: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"type": etype, "message": message}
    if details:
        err["details"] = details
    return {"type": "error", "error": err, "request_id": "req_fake"}


def _o_error(etype: str, code: str | None, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _a_events(
    texts: list[str], stop: str = "end_turn", tool: tuple[str, str] | None = None
) -> list[bytes]:
    """An Anthropic stream: text deltas, an optional tool_use block (name, raw JSON)."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 20, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in texts
        ),
        {"type": "content_block_stop", "index": 0},
    ]
    if tool is not None:
        name, raw = tool
        events += [
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_fake",
                    "name": name,
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": raw},
            },
            {"type": "content_block_stop", "index": 1},
        ]
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return [_sse(e) for e in events]


def _o_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-fake",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def _o_events(
    texts: list[str], finish: str = "stop", tool: tuple[str, str] | None = None
) -> list[bytes]:
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
    pieces = [_o_chunk({"role": "assistant", "content": ""})]
    pieces += [_o_chunk({"content": t}) for t in texts]
    if tool is not None:
        name, raw = tool
        call = {
            "index": 0,
            "id": "call_fake",
            "type": "function",
            "function": {"name": name, "arguments": raw},
        }
        pieces.append(_o_chunk({"tool_calls": [call]}))
    pieces += [_o_chunk({}, finish), _o_chunk(None, usage=usage), b"data: [DONE]\n\n"]
    return pieces


def _o_whole(text: str) -> dict[str, Any]:
    """An unstreamed chat completion (``stream: false``)."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }


# =========================================================================== the handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    _served: Served | None = None  # the request being answered

    def _extra(self) -> dict[str, str]:
        return self._served.headers if self._served is not None else {}

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        anthropic = self.path.endswith("/v1/messages")
        if not anthropic and not self.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        req = _Request(self.path, body, anthropic, _first_user_text(body))
        served = self._served = fake._choose(req)
        try:
            getattr(self, f"_b_{served.behaviour}")(req)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            served.ended = time.time()

    # -- behaviours ------------------------------------------------------------------------
    def _b_ok(self, req: _Request) -> None:
        text = json.dumps({"answer": f"done: {req.key[:40]}"})
        if not req.anthropic and req.body.get("stream") is False:  # a whole answer
            self._json(200, _o_whole(text))
            return
        pieces = [text[: len(text) // 2], text[len(text) // 2 :]]
        self._stream(_a_events(pieces) if req.anthropic else _o_events(pieces))

    def _b_malformed(self, req: _Request) -> None:
        pieces = ['{"answer": [unclosed', " and: {no: end"]
        self._stream(_a_events(pieces) if req.anthropic else _o_events(pieces))

    def _b_rate_limited(self, req: _Request) -> None:
        wait = self._served.retry_after if self._served is not None else None
        ra = {"retry-after": f"{self.server.fake.retry_after if wait is None else wait:g}"}
        if req.anthropic:
            self._json(429, _a_error("rate_limit_error", "rate limited, slow down"), ra)
        else:
            self._json(429, _o_error("requests", "rate_limit_exceeded", "slow down"), ra)

    def _b_quota(self, req: _Request) -> None:
        if req.anthropic:
            body = _a_error(
                "rate_limit_error",
                "You have reached your specified workspace API usage limits (spend limit).",
                error_code="enforced_spend_limit_reached",
            )
            self._json(429, body)
        else:
            msg = "You exceeded your current quota, please check your plan and billing details."
            self._json(429, _o_error("insufficient_quota", "insufficient_quota", msg))

    def _b_overloaded(self, req: _Request) -> None:
        if req.anthropic:
            self._json(529, _a_error("overloaded_error", "Overloaded"))
        else:
            self._json(503, _o_error("server_error", None, "The engine is currently overloaded"))

    def _b_server_error(self, req: _Request) -> None:
        if req.anthropic:
            self._json(500, _a_error("api_error", "Internal server error"))
        else:
            self._json(500, _o_error("server_error", None, "The server had an error"))

    def _b_auth(self, req: _Request) -> None:
        if req.anthropic:
            self._json(401, _a_error("authentication_error", "invalid x-api-key"))
        else:
            self._json(401, _o_error("invalid_request_error", "invalid_api_key", "Incorrect key"))

    def _b_context(self, req: _Request) -> None:
        if req.anthropic:
            msg = "prompt is too long: 250000 tokens > 200000 maximum"
            self._json(400, _a_error("invalid_request_error", msg))
        else:
            msg = "This model's maximum context length is 128000 tokens."
            self._json(400, _o_error("invalid_request_error", "context_length_exceeded", msg))

    def _b_reset(self, req: _Request) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # RST rather than FIN: the connection fails
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )

    def _b_hang(self, req: _Request) -> None:
        self._wait_for_hangup()
        self.close_connection = True

    def _b_slow(self, req: _Request) -> None:
        pieces = _a_events(["slow "]) if req.anthropic else _o_events(["slow "])
        self._stream(pieces[:3], end=False)
        self._wait_for_hangup()
        self.close_connection = True

    def _b_cut(self, req: _Request) -> None:
        if req.anthropic:
            pieces = _a_events(["partial ", "answer"])[:4]
        else:
            pieces = _o_events(["partial ", "answer"])[:3]
        self._stream([*pieces, pieces[-1][: len(pieces[-1]) // 2]], end=False)
        self.close_connection = True  # no terminating chunk: the body breaks off

    def _b_sse_error(self, req: _Request) -> None:
        if req.anthropic:
            pieces = [*_a_events(["half"])[:3], _sse(_a_error("overloaded_error", "Overloaded"))]
        else:
            err = _o_error("server_error", "server_error", "failed mid-stream")
            pieces = [*_o_events(["half"])[:2], f"data: {json.dumps(err)}\n\n".encode()]
        self._stream(pieces)

    def _b_truncated(self, req: _Request) -> None:
        pieces = ['{"answer": "this answer is cut', " off at max_t"]
        if req.anthropic:
            self._stream(_a_events(pieces, stop="max_tokens"))
        else:
            self._stream(_o_events(pieces, finish="length"))

    def _b_truncated_tool(self, req: _Request) -> None:
        name, args = self.server.fake.tool_call
        raw = json.dumps(args)  # a whole call, on an answer that stopped at max_tokens
        if req.anthropic:
            self._stream(_a_events(["Writing it."], stop="max_tokens", tool=(name, raw)))
        else:
            self._stream(_o_events(["Writing it."], finish="length", tool=(name, raw)))

    def _b_tool_call(self, req: _Request) -> None:
        name, args = self.server.fake.tool_call
        raw = json.dumps(args)
        if req.anthropic:
            self._stream(_a_events([], stop="tool_use", tool=(name, raw)))
        else:
            self._stream(_o_events([], finish="tool_calls", tool=(name, raw)))

    # -- wire helpers ----------------------------------------------------------------------
    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in {**self._extra(), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, pieces: list[bytes], *, end: bool = True) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for k, v in self._extra().items():
            self.send_header(k, v)
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        if end:
            self.wfile.write(b"0\r\n\r\n")

    def _wait_for_hangup(self) -> None:
        """Block until the client closes the connection, the server stops, or HANG_LIMIT."""
        fake = self.server.fake
        deadline = time.monotonic() + HANG_LIMIT
        while not fake._stopping.is_set() and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # EOF: the client gave up
            except (OSError, ValueError):
                return


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    request_queue_size = 256  # the default 5 drops a burst of 20 connects (1 s SYN retry)
    fake: FakeProviderServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up are part of the tests


# =========================================================================== the server


@dataclass
class FakeProviderServer:
    """``with FakeProviderServer(seed=1, faults={"rate_limited": 0.1}) as srv: srv.url``."""

    seed: int = 0
    faults: Mapping[str, float] = field(default_factory=dict)
    retry_after: float = 0.05
    tool_call: tuple[str, dict[str, Any]] = ("write_file", {"path": "x.txt", "content": "x"})
    quota: int | None = None  # at most this many accepted requests per quota_window
    quota_window: float = 60.0
    quota_tokens: int | None = None  # the token limit the headers advertise
    rate_headers: bool = False  # send anthropic-ratelimit-* / x-ratelimit-* headers
    served: list[Served] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - BEHAVIOURS
        if unknown:
            raise ValueError(f"unknown behaviour(s): {sorted(unknown)}")
        if sum(self.faults.values()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        self._lock = threading.Lock()
        self._per_key: Counter[str] = Counter()
        self._accepted: deque[float] = deque()  # arrival times inside the quota's window
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self.open_handlers = 0  # handler threads alive now
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeProviderServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakeprovider-accept",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # hanging requests return
        try:
            httpd.shutdown()
        finally:
            with self._lock:
                conns = list(self._conns)
            for c in conns:  # idle keep-alive connections: their readers see EOF
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
            httpd.server_close()  # joins the handler threads
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self.open_handlers += 1

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
            self.open_handlers -= 1

    # -- choosing --------------------------------------------------------------------------
    def behaviour_for(self, key: str, n: int) -> str:
        """The behaviour of request ``n`` (0-based) for ``key``: pure, for the tests."""
        found = _MARKER.search(key)
        if found:
            script = [b for b in found.group(1).split(",") if b]
            return script[min(n, len(script) - 1)] if script else "ok"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        r = random.Random(f"{self.seed}:{digest}:{n}").random()
        acc = 0.0
        for name in sorted(self.faults):
            acc += self.faults[name]
            if r < acc:
                return name
        return "ok"

    def _choose(self, req: _Request) -> Served:
        with self._lock:
            n = self._per_key[req.key]
            self._per_key[req.key] += 1
            behaviour = self.behaviour_for(req.key, n)
            if behaviour not in BEHAVIOURS:
                behaviour = "server_error"
            now = time.time()
            wait = self._over_quota(now)
            if wait is not None:
                behaviour = "rate_limited"
            s = Served(req.path, req.key, n, behaviour, now, retry_after=wait)
            if self.rate_headers:
                s.headers = self._limit_headers(req.anthropic, now)
            self.served.append(s)
            self.counts[behaviour] += 1
        return s

    def _over_quota(self, now: float) -> float | None:
        """None: the request fits the quota (and is counted); else seconds until room."""
        if self.quota is None:
            return None
        window = self._accepted
        while window and window[0] <= now - self.quota_window:
            window.popleft()
        if len(window) >= self.quota:
            return max(0.001, window[0] + self.quota_window - now)
        window.append(now)
        return None

    def _limit_headers(self, anthropic: bool, now: float) -> dict[str, str]:
        limit = self.quota if self.quota is not None else 1_000_000
        left = max(0, limit - len(self._accepted))
        reset = (self._accepted[0] + self.quota_window - now) if self._accepted else 0.0
        tokens = self.quota_tokens
        if anthropic:
            at = datetime.fromtimestamp(now + reset, UTC).isoformat()
            out = {
                "anthropic-ratelimit-requests-limit": str(limit),
                "anthropic-ratelimit-requests-remaining": str(left),
                "anthropic-ratelimit-requests-reset": at.replace("+00:00", "Z"),
            }
            if tokens is not None:
                out["anthropic-ratelimit-input-tokens-limit"] = str(tokens)
            return out
        out = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(left),
            "x-ratelimit-reset-requests": f"{reset * 1000:.0f}ms",
        }
        if tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(tokens)
        return out

    # -- queries ---------------------------------------------------------------------------
    def requests_for(self, needle: str) -> list[Served]:
        """The requests whose key contains ``needle``, in arrival order."""
        with self._lock:
            return [s for s in self.served if needle in s.key]

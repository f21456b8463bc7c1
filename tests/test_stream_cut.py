"""A body that ends before its last event is ``stream_cut`` on every provider, whatever
exception type the installed SDK release wraps the transport error in.

Two layers: end to end through the real SDK over an httpx2 mock transport (whatever the
locked or lowest SDK raises), and :func:`classify` fed each wrapping an SDK release has
used for the same break (a raw transport error, ``APIConnectionError`` caused by one), so
the rule does not depend on the release installed. ``make test-lowest`` runs this file on
the lowest SDK versions ``pyproject.toml`` allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from phalanx.exceptions import ErrorClass, ProviderError
from phalanx.providers import anthropic_api, openai_api
from phalanx.providers.base import Completion
from test_providers_http import (
    REQUEST,
    Server,
    a_complete,
    a_events,
    check_class,
    error_response,
    failure,
    o_chunks,
    openai_provider,
    run,
    streamed,
)

CUT = "peer closed connection without sending complete message body (incomplete chunked read)"


def o_run(server: Server, *, compatible: bool, stream: bool) -> Completion:
    async def go() -> Completion:
        provider = openai_provider(server, compatible=compatible, stream=stream)
        try:
            return await provider.complete(REQUEST)
        finally:
            await provider.aclose()

    result: Completion = run(go())
    return result


def whole_body_cut() -> httpx2.Response:
    """A 200 JSON answer whose body stops half way (an unstreamed answer cut short)."""
    body = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()

    async def content() -> Any:
        yield body[: len(body) // 2]
        raise httpx2.RemoteProtocolError(CUT)

    return httpx2.Response(200, headers={"content-type": "application/json"}, content=content())


Call = Callable[[Server], Any]
CALLS: dict[str, tuple[Call, list[bytes]]] = {
    "anthropic": (a_complete, a_events()[:4]),
    "openai": (lambda s: o_run(s, compatible=False, stream=True), o_chunks()[:3]),
    "openai-compatible-stream": (lambda s: o_run(s, compatible=True, stream=True), o_chunks()[:3]),
}


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_connection_dropped_mid_stream_is_stream_cut(provider: str) -> None:
    call, events = CALLS[provider]
    server = Server(lambda r: streamed(*events, fail=httpx2.RemoteProtocolError(CUT)))
    check_class(failure(lambda: call(server), server), ErrorClass.STREAM_CUT, retryable=True)


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_read_error_mid_stream_is_stream_cut(provider: str) -> None:
    call, events = CALLS[provider]
    server = Server(lambda r: streamed(*events, fail=httpx2.ReadError("connection reset")))
    check_class(failure(lambda: call(server), server), ErrorClass.STREAM_CUT, retryable=True)


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_stream_that_just_stops_is_stream_cut(provider: str) -> None:
    call, events = CALLS[provider]
    server = Server(lambda r: streamed(*events))
    check_class(failure(lambda: call(server), server), ErrorClass.STREAM_CUT, retryable=True)


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_hang_mid_stream_is_a_timeout(provider: str) -> None:
    call, events = CALLS[provider]
    server = Server(lambda r: streamed(*events, fail=httpx2.ReadTimeout("timed out")))
    check_class(failure(lambda: call(server), server), ErrorClass.TIMEOUT, retryable=True)


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_5xx_is_a_server_error(provider: str) -> None:
    call, _ = CALLS[provider]
    body = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    server = Server(lambda r: error_response(500, body))
    check_class(failure(lambda: call(server), server), ErrorClass.SERVER_ERROR, retryable=True)


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_refused_connection_is_a_connection_error(provider: str) -> None:
    call, _ = CALLS[provider]

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    server = Server(refuse)
    check_class(failure(lambda: call(server), server), ErrorClass.CONNECTION, retryable=True)


def test_unstreamed_body_cut_is_stream_cut() -> None:
    server = Server(lambda r: whole_body_cut())
    err = failure(lambda: o_run(server, compatible=True, stream=False), server)
    check_class(err, ErrorClass.STREAM_CUT, retryable=True)


# --------------------------------------------------------------------------- every wrapping

REQ = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")


def wrapped(sdk: Any, cause: Exception) -> list[BaseException]:
    """The same transport error as SDK releases have surfaced it."""
    conn = sdk.APIConnectionError(request=REQ)
    conn.__cause__ = cause
    bare = sdk.APIConnectionError(request=REQ)  # a release that sets only __context__
    bare.__context__ = cause
    return [cause, conn, bare]


CLASSIFY: dict[str, tuple[Any, Callable[..., ProviderError]]] = {
    "anthropic": (anthropic, anthropic_api.classify),
    "openai": (openai, openai_api.classify),
}


@pytest.mark.parametrize("provider", sorted(CLASSIFY))
@pytest.mark.parametrize("mid_stream", [True, False])
def test_every_wrapping_of_a_cut_is_stream_cut(provider: str, mid_stream: bool) -> None:
    sdk, classify = CLASSIFY[provider]
    for cause in (httpx2.RemoteProtocolError(CUT), httpx2.ReadError("reset by peer")):
        for exc in wrapped(sdk, cause):
            err = classify(exc, mid_stream=mid_stream)
            assert err.error_class is ErrorClass.STREAM_CUT, (provider, repr(exc), str(err))


@pytest.mark.parametrize("provider", sorted(CLASSIFY))
def test_every_wrapping_after_the_status_line_is_stream_cut(provider: str) -> None:
    """Once the 200 arrived, any transport break but a timeout cut the stream."""
    sdk, classify = CLASSIFY[provider]
    for exc in wrapped(sdk, httpx2.RemoteProtocolError("Server disconnected")):
        err = classify(exc, mid_stream=True)
        assert err.error_class is ErrorClass.STREAM_CUT, (provider, repr(exc))


@pytest.mark.parametrize("provider", sorted(CLASSIFY))
def test_failed_connect_and_no_response_stay_connection(provider: str) -> None:
    sdk, classify = CLASSIFY[provider]
    causes = (
        httpx2.ConnectError("connection refused"),
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
    )
    for cause in causes:
        for exc in wrapped(sdk, cause)[1:]:
            err = classify(exc, mid_stream=False)
            assert err.error_class is ErrorClass.CONNECTION, (provider, repr(exc))


@pytest.mark.parametrize("provider", sorted(CLASSIFY))
@pytest.mark.parametrize("mid_stream", [True, False])
def test_timeouts_are_never_cuts(provider: str, mid_stream: bool) -> None:
    sdk, classify = CLASSIFY[provider]
    for exc in [httpx2.ReadTimeout("timed out"), sdk.APITimeoutError(request=REQ)]:
        assert classify(exc, mid_stream=mid_stream).error_class is ErrorClass.TIMEOUT

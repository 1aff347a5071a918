"""SignalMiddleware over raw ASGI when the client disconnects or the request
is cancelled: which lifecycle signals still go out, in which order, and the
contexts reset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from asgi_apps import (
    APP_TEARDOWN,
    FAILED_BEFORE_RESPONSE,
    FAILED_MID_STREAM,
    FORMS,
    GOT,
    NO_RESPONSE,
    NORMAL,
    POPPED,
    PUSHED,
    REQUEST_TEARDOWN,
    Recorder,
    assert_contexts_reset,
    build,
    hello,
    is_cancellation,
)
from helpers import per_signal
from raw_asgi import HTTP_REQUEST, Canceller, Client, call, http_scope
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import asignals
from asignals import NamedSignal, ResponseHead, SignalMiddleware

pytestmark = pytest.mark.anyio


async def stream_forever(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await anyio.sleep_forever()

    return StreamingResponse(chunks())


async def stream_two(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        yield b"second"

    return StreamingResponse(chunks())


# 1. Client disconnect.


@pytest.mark.parametrize("form", FORMS)
async def test_disconnect_under_asgi_2_3_stops_the_stream_and_tears_down_once(
    signals: Recorder, form: str
) -> None:
    app, sender = build(form, [Route("/", stream_forever)])
    client = Client(HTTP_REQUEST, disconnect_after_body=True)

    await call(app, http_scope(spec_version="2.3"), client)

    assert signals.names == NORMAL
    assert signals.senders == {id(sender)}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": None}
    assert signals.kwargs(APP_TEARDOWN) == {"exc": None}
    assert client.types == ["http.response.start", "http.response.body"]
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_disconnect_under_asgi_2_4_raises_client_disconnect_after_teardown(
    signals: Recorder, form: str
) -> None:
    app, sender = build(form, [Route("/", stream_two)])
    client = Client(HTTP_REQUEST, fail_on="http.response.body")

    with pytest.raises(ClientDisconnect) as raised:
        await call(app, http_scope(spec_version="2.4"), client)

    assert signals.names == FAILED_MID_STREAM
    assert signals.senders == {id(sender)}
    assert signals.kwargs(GOT)["exception"] is raised.value
    assert signals.kwargs(REQUEST_TEARDOWN)["exc"] is raised.value
    assert signals.kwargs(APP_TEARDOWN)["exc"] is raised.value
    assert client.types == ["http.response.start"]
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_disconnect_before_the_body_is_read_is_an_unhandled_client_disconnect(
    signals: Recorder, form: str
) -> None:
    async def endpoint(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("unreachable")

    app, sender = build(form, [Route("/", endpoint)])
    client = Client({"type": "http.disconnect"})

    with pytest.raises(ClientDisconnect) as raised:
        await call(app, http_scope(spec_version="2.3"), client)

    assert signals.names == FAILED_BEFORE_RESPONSE[form]
    assert signals.senders == {id(sender)}
    assert signals.kwargs(GOT) == {"exception": raised.value}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": raised.value}
    assert_contexts_reset()


async def test_oserror_from_send_in_a_raw_app_is_its_unhandled_exception(
    signals: Recorder,
) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    client = Client(HTTP_REQUEST, fail_on="http.response.body")

    with pytest.raises(OSError, match="went away") as raised:
        await call(SignalMiddleware(raw), http_scope(), client)

    assert signals.names == FAILED_MID_STREAM
    assert signals.kwargs(GOT)["exception"] is raised.value
    assert signals.kwargs(REQUEST_TEARDOWN)["exc"] is raised.value
    assert_contexts_reset()


# 2. Cancellation.


@pytest.mark.parametrize("form", FORMS)
async def test_cancelled_in_the_endpoint_tears_down_once_then_propagates(
    signals: Recorder, form: str
) -> None:
    canceller = Canceller()

    async def endpoint(request: Request) -> Response:
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    app, sender = build(form, [Route("/", endpoint)])
    client = Client(HTTP_REQUEST)

    await canceller.call(app, http_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == NO_RESPONSE
    assert signals.senders == {id(sender)}
    assert is_cancellation(signals.kwargs(REQUEST_TEARDOWN)["exc"])
    assert is_cancellation(signals.kwargs(APP_TEARDOWN)["exc"])
    assert client.sent == []
    assert_contexts_reset()


async def test_cancelled_raw_app_tears_down_once_then_propagates(signals: Recorder) -> None:
    canceller = Canceller()

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        canceller.trigger.set()
        await anyio.sleep_forever()

    client = Client(HTTP_REQUEST)

    await canceller.call(SignalMiddleware(raw), http_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == NO_RESPONSE
    assert is_cancellation(signals.kwargs(REQUEST_TEARDOWN)["exc"])
    assert_contexts_reset()


# Cancelled before the endpoint: in appcontext_pushed no request context was
# set up, so neither request_started nor the request's teardown is sent.
@pytest.mark.parametrize(
    ("signal", "expected"),
    per_signal(
        (asignals.appcontext_pushed, [PUSHED, APP_TEARDOWN, POPPED]),
        (asignals.request_started, NO_RESPONSE),
    ),
)
async def test_cancelled_in_a_receiver_before_the_endpoint_tears_down_once(
    signals: Recorder, signal: NamedSignal, expected: list[str]
) -> None:
    canceller = Canceller()
    endpoint_ran = False

    async def endpoint(request: Request) -> Response:
        nonlocal endpoint_ran
        endpoint_ran = True
        return PlainTextResponse("unreachable")

    async def stall(sender: Any) -> None:
        canceller.trigger.set()
        await anyio.sleep_forever()

    app, _ = build("install", [Route("/", endpoint)])
    client = Client(HTTP_REQUEST)

    with signal.connected_to(stall):
        await canceller.call(app, http_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert not endpoint_ran
    assert signals.names == expected
    for teardown in (REQUEST_TEARDOWN, APP_TEARDOWN):
        if teardown in expected:
            assert is_cancellation(signals.kwargs(teardown)["exc"])
    assert client.sent == []
    assert_contexts_reset()


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_cancelled_while_streaming_sends_nothing_more(
    signals: Recorder, spec_version: str
) -> None:
    canceller = Canceller()

    async def endpoint(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            canceller.trigger.set()
            await anyio.sleep_forever()

        return StreamingResponse(chunks())

    app, _ = build("install", [Route("/", endpoint)])
    client = Client(HTTP_REQUEST)

    await canceller.call(app, http_scope(spec_version=spec_version), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == NORMAL
    assert is_cancellation(signals.kwargs(REQUEST_TEARDOWN)["exc"])
    assert client.types == ["http.response.start", "http.response.body"]
    assert client.body == b"first"
    assert_contexts_reset()


async def test_cancelled_in_a_request_finished_receiver_sends_no_response(
    signals: Recorder,
) -> None:
    canceller = Canceller()

    async def stall(sender: Any, response: ResponseHead) -> None:
        canceller.trigger.set()
        await anyio.sleep_forever()

    app, _ = build("install", [Route("/", hello)])
    client = Client(HTTP_REQUEST)

    with asignals.request_finished.connected_to(stall):
        await canceller.call(app, http_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == NORMAL
    assert is_cancellation(signals.kwargs(REQUEST_TEARDOWN)["exc"])
    assert client.sent == []
    assert_contexts_reset()


async def test_cancelled_in_a_teardown_receiver_lets_teardown_finish(
    signals: Recorder,
) -> None:
    canceller = Canceller()
    finished: list[str] = []

    async def waits_for_the_cancel(sender: Any, exc: BaseException | None) -> None:
        canceller.trigger.set()
        await canceller.cancelled.wait()
        await anyio.lowlevel.checkpoint()
        finished.append(REQUEST_TEARDOWN)

    async def awaits(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(APP_TEARDOWN)

    app, _ = build("install", [Route("/", hello)])
    client = Client(HTTP_REQUEST)

    with (
        asignals.request_tearing_down.connected_to(waits_for_the_cancel),
        asignals.appcontext_tearing_down.connected_to(awaits),
    ):
        await canceller.call(app, http_scope(), client)

    # The cancel came while teardown was shielded: it stays pending, and the
    # caller's next checkpoint raises it.
    assert canceller.scope.cancelled_caught
    assert finished == [REQUEST_TEARDOWN, APP_TEARDOWN]
    assert signals.names == NORMAL
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": None}
    assert client.types == ["http.response.start", "http.response.body"]
    assert_contexts_reset()


async def test_async_teardown_receivers_finish_despite_cancellation(
    signals: Recorder,
) -> None:
    canceller = Canceller()
    finished: list[str] = []

    async def endpoint(request: Request) -> Response:
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def request_teardown(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(REQUEST_TEARDOWN)

    async def app_teardown(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(APP_TEARDOWN)

    async def popped(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(POPPED)

    app, _ = build("install", [Route("/", endpoint)])
    client = Client(HTTP_REQUEST)

    with (
        asignals.request_tearing_down.connected_to(request_teardown),
        asignals.appcontext_tearing_down.connected_to(app_teardown),
        asignals.appcontext_popped.connected_to(popped),
    ):
        await canceller.call(app, http_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert finished == [REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
    assert signals.names == NO_RESPONSE
    assert_contexts_reset()


async def test_cancelled_request_without_teardown_receivers_resets_contexts() -> None:
    canceller = Canceller()

    async def endpoint(request: Request) -> Response:
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    app, _ = build("install", [Route("/", endpoint)])

    await canceller.call(app, http_scope(), Client(HTTP_REQUEST))

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert_contexts_reset()

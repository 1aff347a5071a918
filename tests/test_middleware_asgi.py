"""SignalMiddleware called as raw ASGI: the paths a TestClient cannot take.

Exceptions before and after the response started in every install form, raw ASGI apps,
concurrent requests, the lifespan and websockets. Each test builds the scope
and plays the server's ``receive`` and ``send`` itself. Client disconnects
(ASGI 2.3 and 2.4) and cancellation at each step are in
test_middleware_asgi_cancellation.py.
"""

from __future__ import annotations

import contextvars
import gc
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from asgi_apps import (
    APP_TEARDOWN,
    FAILED_BEFORE_RESPONSE,
    FAILED_MID_STREAM,
    FINISHED,
    FORMS,
    GOT,
    NO_RESPONSE,
    NORMAL,
    POPPED,
    PUSHED,
    REQUEST_TEARDOWN,
    STARTED,
    WS_FINISHED,
    WS_GOT,
    WS_STARTED,
    WS_TEARDOWN,
    Recorder,
    assert_contexts_reset,
    build,
    hello,
    is_cancellation,
)
from helpers import Boom
from raw_asgi import (
    HTTP_REQUEST,
    SHUTDOWN,
    STARTUP,
    WS_CONNECT,
    WS_DISCONNECT,
    Canceller,
    Client,
    call,
    http_scope,
    lifespan_scope,
    websocket_scope,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

import asignals
from asignals import ResponseHead, SignalMiddleware, current_app, g

pytestmark = pytest.mark.anyio
WS_NORMAL = [PUSHED, WS_STARTED, WS_FINISHED, WS_TEARDOWN, APP_TEARDOWN, POPPED]
WS_FAILED = [PUSHED, WS_STARTED, WS_GOT, WS_FINISHED, WS_TEARDOWN, APP_TEARDOWN, POPPED]


async def fail(request: Request) -> Response:
    raise Boom("endpoint")


async def fail_mid_stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise Boom("mid-stream")

    return StreamingResponse(chunks())


@pytest.mark.parametrize("form", FORMS)
async def test_exception_before_the_response_gives_the_forms_order(
    signals: Recorder, form: str
) -> None:
    app, sender = build(form, [Route("/", fail)])
    client = Client(HTTP_REQUEST)

    with pytest.raises(Boom) as raised:
        await call(app, http_scope(), client)

    assert signals.names == FAILED_BEFORE_RESPONSE[form]
    assert signals.senders == {id(sender)}
    assert signals.kwargs(GOT) == {"exception": raised.value}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": raised.value}
    assert signals.kwargs(APP_TEARDOWN) == {"exc": raised.value}
    if form != "add_middleware":
        assert signals.kwargs(FINISHED)["response"].status_code == 500
    assert client.start["status"] == 500
    assert_contexts_reset()


async def test_exception_before_the_response_of_a_raw_app(signals: Recorder) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        raise Boom("raw")

    client = Client(HTTP_REQUEST)

    with pytest.raises(Boom) as raised:
        await call(SignalMiddleware(raw), http_scope(), client)

    assert signals.names == [PUSHED, STARTED, GOT, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
    assert signals.senders == {id(raw)}
    assert signals.kwargs(GOT) == {"exception": raised.value}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": raised.value}
    assert client.sent == []
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_exception_mid_stream_sends_no_second_response(signals: Recorder, form: str) -> None:
    app, sender = build(form, [Route("/", fail_mid_stream)])
    client = Client(HTTP_REQUEST)

    with pytest.raises(Boom) as raised:
        await call(app, http_scope(), client)

    assert signals.names == FAILED_MID_STREAM
    assert signals.senders == {id(sender)}
    assert signals.kwargs(FINISHED)["response"].status_code == 200
    assert signals.kwargs(GOT) == {"exception": raised.value}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": raised.value}
    assert signals.kwargs(APP_TEARDOWN) == {"exc": raised.value}
    assert client.types == ["http.response.start", "http.response.body"]
    assert client.start["status"] == 200
    assert_contexts_reset()


async def test_exception_mid_stream_of_a_raw_app(signals: Recorder) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise Boom("raw mid-stream")

    client = Client(HTTP_REQUEST)

    with pytest.raises(Boom) as raised:
        await call(SignalMiddleware(raw), http_scope(), client)

    assert signals.names == FAILED_MID_STREAM
    assert signals.kwargs(GOT) == {"exception": raised.value}
    assert signals.kwargs(REQUEST_TEARDOWN) == {"exc": raised.value}
    assert client.types == ["http.response.start", "http.response.body"]
    assert_contexts_reset()


# 4. A raw ASGI app wrapped by SignalMiddleware.


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"raw")]})
    await send({"type": "http.response.body", "body": b"raw"})


async def test_raw_app_is_the_sender_when_the_scope_has_no_app(signals: Recorder) -> None:
    await call(SignalMiddleware(plain), http_scope(), Client(HTTP_REQUEST))

    assert signals.names == NORMAL
    assert signals.senders == {id(plain)}


async def test_raw_app_sender_is_the_scopes_app_when_set(signals: Recorder) -> None:
    outer = object()
    scope = http_scope()
    scope["app"] = outer

    await call(SignalMiddleware(plain), scope, Client(HTTP_REQUEST))

    assert signals.names == NORMAL
    assert signals.senders == {id(outer)}


async def test_request_finished_changes_reach_the_start_message() -> None:
    def change(sender: Any, response: ResponseHead) -> None:
        response.headers["x-signal"] = "set"
        del response.headers["x-app"]
        response.status_code = 202

    client = Client(HTTP_REQUEST)

    with asignals.request_finished.connected_to(change):
        await call(SignalMiddleware(plain), http_scope(), client)

    assert client.start["status"] == 202
    assert client.start["headers"] == [(b"x-signal", b"set")]
    assert client.body == b"raw"


# 5. Sync and async receivers on each HTTP lifecycle signal.

HTTP_SIGNAL_KWARGS = {
    PUSHED: set(),
    STARTED: set(),
    FINISHED: {"response"},
    GOT: {"exception"},
    REQUEST_TEARDOWN: {"exc"},
    APP_TEARDOWN: {"exc"},
    POPPED: set(),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", HTTP_SIGNAL_KWARGS)
async def test_receiver_of_each_kind_runs_once_on_each_http_signal(name: str, kind: str) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def sync_receiver(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs))

    async def async_receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append((sender, kwargs))

    receiver = sync_receiver if kind == "sync" else async_receiver
    app, sender = build("install", [Route("/", hello), Route("/fail", fail)])
    client = Client(HTTP_REQUEST)

    with getattr(asignals, name).connected_to(receiver):
        if name == GOT:
            with pytest.raises(Boom):
                await call(app, http_scope("/fail"), client)
        else:
            await call(app, http_scope(), client)

    assert len(calls) == 1
    assert calls[0][0] is sender
    assert set(calls[0][1]) == HTTP_SIGNAL_KWARGS[name]
    assert_contexts_reset()


async def test_async_request_finished_receiver_awaits_before_the_response_goes_out() -> None:
    sent_when_done: list[int] = []
    client = Client(HTTP_REQUEST)

    async def late(sender: Any, response: ResponseHead) -> None:
        await anyio.lowlevel.checkpoint()
        response.headers["x-late"] = "yes"
        sent_when_done.append(len(client.sent))

    app, _ = build("install", [Route("/", hello)])

    with asignals.request_finished.connected_to(late):
        await call(app, http_scope(), client)

    assert sent_when_done == [0]
    assert (b"x-late", b"yes") in client.start["headers"]
    assert client.body == b"hello"


# 6. Contexts are per request.


async def test_concurrent_requests_each_see_their_own_g_and_request() -> None:
    arrived = {"/a": anyio.Event(), "/b": anyio.Event()}
    release = anyio.Event()

    async def endpoint(request: Request) -> Response:
        g.value = request.query_params["value"]
        arrived[request.url.path].set()
        await release.wait()
        return JSONResponse({"g": g.value, "path": asignals.request.url.path})

    app, _ = build("install", [Route("/a", endpoint), Route("/b", endpoint)])
    clients = {"/a": Client(HTTP_REQUEST), "/b": Client(HTTP_REQUEST)}

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call, app, http_scope("/a", query=b"value=first"), clients["/a"])
        tasks.start_soon(call, app, http_scope("/b", query=b"value=second"), clients["/b"])
        await arrived["/a"].wait()
        await arrived["/b"].wait()
        release.set()

    assert json.loads(clients["/a"].body) == {"g": "first", "path": "/a"}
    assert json.loads(clients["/b"].body) == {"g": "second", "path": "/b"}
    assert_contexts_reset()


async def test_sync_endpoint_sees_the_requests_contexts_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()

    def set_g(sender: Any) -> None:
        g.user = "ada"

    def endpoint(request: Request) -> Response:
        return JSONResponse(
            {
                "worker_thread": threading.get_ident() != loop_thread,
                "app_is_sender": current_app._get_current_object() is starlette_app,
                "g": g.user,
                "path": asignals.request.url.path,
                "query": asignals.request.query_params["q"],
            }
        )

    app, starlette_app = build("install", [Route("/sync", endpoint)])
    client = Client(HTTP_REQUEST)

    with asignals.request_started.connected_to(set_g):
        await call(app, http_scope("/sync", query=b"q=1"), client)

    assert json.loads(client.body) == {
        "worker_thread": True,
        "app_is_sender": True,
        "g": "ada",
        "path": "/sync",
        "query": "1",
    }


# 7. The lifespan over raw ASGI.


class LifespanApp:
    """A raw ASGI lifespan that notes ``current_app`` and ``g`` at each step."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        g.started = True
        self.seen.append((message["type"], current_app._get_current_object(), g.get("started")))
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        self.seen.append((message["type"], current_app._get_current_object(), g.get("started")))
        await send({"type": "lifespan.shutdown.complete"})


async def test_lifespan_messages_pass_through_unchanged() -> None:
    startup, shutdown = dict(STARTUP), dict(SHUTDOWN)
    client = Client(startup, shutdown)

    await call(SignalMiddleware(LifespanApp()), lifespan_scope(), client)

    assert client.received[0] is startup
    assert client.received[1] is shutdown
    assert client.received == [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    assert client.sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


async def test_current_app_and_g_work_during_a_raw_lifespan(signals: Recorder) -> None:
    lifespan = LifespanApp()

    await call(SignalMiddleware(lifespan), lifespan_scope(), Client(STARTUP, SHUTDOWN))

    assert lifespan.seen == [
        ("lifespan.startup", lifespan, True),
        ("lifespan.shutdown", lifespan, True),
    ]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert signals.senders == {id(lifespan)}
    assert signals.kwargs(APP_TEARDOWN) == {"exc": None}
    assert_contexts_reset()


async def test_current_app_works_in_an_installed_apps_lifespan(signals: Recorder) -> None:
    seen: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.append(current_app._get_current_object())
        yield
        seen.append(current_app._get_current_object())

    app, starlette_app = build("install", [], lifespan=lifespan)
    client = Client(STARTUP, SHUTDOWN)

    await call(app, lifespan_scope(), client)

    assert seen == [starlette_app, starlette_app]
    assert client.sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert signals.senders == {id(starlette_app)}


async def test_lifespan_failure_is_the_app_contexts_exc(signals: Recorder) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise Boom("startup")
        yield

    app, _ = build("install", [], lifespan=lifespan)
    client = Client(STARTUP, SHUTDOWN)

    with pytest.raises(Boom) as raised:
        await call(app, lifespan_scope(), client)

    assert client.types == ["lifespan.startup.failed"]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert signals.kwargs(APP_TEARDOWN) == {"exc": raised.value}
    assert_contexts_reset()


async def test_cancelled_lifespan_finishes_its_app_context_teardown(signals: Recorder) -> None:
    canceller = Canceller()
    finished: list[str] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        canceller.trigger.set()
        await receive()

    async def app_teardown(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(APP_TEARDOWN)

    async def popped(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(POPPED)

    with (
        asignals.appcontext_tearing_down.connected_to(app_teardown),
        asignals.appcontext_popped.connected_to(popped),
    ):
        await canceller.call(SignalMiddleware(lifespan), lifespan_scope(), Client(STARTUP))

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert finished == [APP_TEARDOWN, POPPED]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert is_cancellation(signals.kwargs(APP_TEARDOWN)["exc"])
    assert_contexts_reset()


async def test_lifespan_through_two_middlewares_is_signalled_once(signals: Recorder) -> None:
    lifespan = LifespanApp()
    client = Client(STARTUP, SHUTDOWN)

    await call(SignalMiddleware(SignalMiddleware(lifespan)), lifespan_scope(), client)

    assert client.sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]


async def test_request_through_two_middlewares_is_signalled_once(signals: Recorder) -> None:
    client = Client(HTTP_REQUEST)

    await call(SignalMiddleware(SignalMiddleware(plain)), http_scope(), client)

    assert signals.names == NORMAL
    assert client.types == ["http.response.start", "http.response.body"]


# 8. Teardown receivers that raise while a cancellation propagates.


async def test_teardown_receiver_errors_under_cancellation_are_logged(
    signals: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    canceller = Canceller()

    async def endpoint(request: Request) -> Response:
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def broken_request_teardown(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("request teardown")

    def broken_app_teardown(sender: Any, exc: BaseException | None) -> None:
        raise KeyError("app teardown")

    app, _ = build("install", [Route("/", endpoint)])
    caplog.set_level(logging.ERROR, logger="asignals")

    with (
        asignals.request_tearing_down.connected_to(broken_request_teardown),
        asignals.appcontext_tearing_down.connected_to(broken_app_teardown),
    ):
        await canceller.call(app, http_scope(), Client(HTTP_REQUEST))

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == NO_RESPONSE
    records = [r for r in caplog.records if r.name == "asignals"]
    assert len(records) == 2
    assert "broken_request_teardown" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)
    assert "broken_app_teardown" in records[1].getMessage()
    assert records[1].exc_info is not None
    assert isinstance(records[1].exc_info[1], KeyError)
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_cancelled_in_a_got_request_exception_receiver_is_not_replaced_by_receiver_errors(
    signals: Recorder, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    canceller = Canceller()

    async def stall(sender: Any, exception: Exception) -> None:
        canceller.trigger.set()
        await anyio.sleep_forever()

    def broken_teardown(sender: Any, exc: BaseException | None) -> None:
        raise ValueError("request teardown")

    app, _ = build(form, [Route("/", fail)])
    caplog.set_level(logging.ERROR, logger="asignals")

    with (
        asignals.got_request_exception.connected_to(stall),
        asignals.request_tearing_down.connected_to(broken_teardown),
    ):
        await canceller.call(app, http_scope(), Client(HTTP_REQUEST))

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names.count(REQUEST_TEARDOWN) == 1
    assert signals.names[-3:] == [REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
    records = [r for r in caplog.records if r.name == "asignals"]
    assert len(records) == 1
    assert "broken_teardown" in records[0].getMessage()
    assert_contexts_reset()


# 9. Websockets over raw ASGI.


async def test_websocket_client_disconnect_handled_by_the_handler_tears_down_once(
    signals: Recorder,
) -> None:
    disconnects: list[int] = []

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            disconnects.append(exc.code)

    app, sender = build("install", [WebSocketRoute("/ws", handler)])
    client = Client(WS_CONNECT, WS_DISCONNECT)

    await call(app, websocket_scope(), client)

    assert disconnects == [1001]
    assert signals.names == WS_NORMAL
    assert signals.senders == {id(sender)}
    assert signals.kwargs(WS_FINISHED) == {"response": None}
    assert signals.kwargs(WS_TEARDOWN) == {"exc": None}
    assert client.types == ["websocket.accept"]
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_websocket_client_disconnect_escaping_the_handler_tears_down_once(
    signals: Recorder, form: str
) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()

    app, sender = build(form, [WebSocketRoute("/ws", handler)])
    client = Client(WS_CONNECT, WS_DISCONNECT)

    with pytest.raises(WebSocketDisconnect) as raised:
        await call(app, websocket_scope(), client)

    assert signals.names == WS_FAILED
    assert signals.senders == {id(sender)}
    assert signals.kwargs(WS_GOT) == {"exception": raised.value}
    assert signals.kwargs(WS_TEARDOWN) == {"exc": raised.value}
    assert signals.kwargs(APP_TEARDOWN) == {"exc": raised.value}
    assert_contexts_reset()


async def test_websocket_denial_response_is_websocket_finisheds_response(
    signals: Recorder,
) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("denied", status_code=401))

    app, _ = build("install", [WebSocketRoute("/ws", handler)])
    client = Client(WS_CONNECT)
    scope = websocket_scope(extensions={"websocket.http.response": {}})

    await call(app, scope, client)

    assert signals.names == WS_NORMAL
    response = signals.kwargs(WS_FINISHED)["response"]
    assert isinstance(response, ResponseHead)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    assert client.types == ["websocket.http.response.start", "websocket.http.response.body"]
    assert client.sent[0]["status"] == 401
    assert signals.kwargs(WS_TEARDOWN) == {"exc": None}
    assert_contexts_reset()


async def test_websocket_closed_before_accept_is_a_403_response(signals: Recorder) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.close()

    app, _ = build("install", [WebSocketRoute("/ws", handler)])

    await call(app, websocket_scope(), Client(WS_CONNECT))

    assert signals.names == WS_NORMAL
    assert signals.kwargs(WS_FINISHED)["response"].status_code == 403


async def test_cancelled_websocket_tears_down_once(signals: Recorder) -> None:
    canceller = Canceller()

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        canceller.trigger.set()
        await websocket.receive_text()

    app, _ = build("install", [WebSocketRoute("/ws", handler)])
    client = Client(WS_CONNECT)

    await canceller.call(app, websocket_scope(), client)

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    assert signals.names == [PUSHED, WS_STARTED, WS_TEARDOWN, APP_TEARDOWN, POPPED]
    assert is_cancellation(signals.kwargs(WS_TEARDOWN)["exc"])
    assert client.types == ["websocket.accept"]
    assert_contexts_reset()


@pytest.mark.parametrize("form", FORMS)
async def test_a_request_leaves_no_reference_cycle(form: str, signals: Recorder) -> None:
    """Each request's context is freed as soon as it ends, not left for the
    garbage collector (under load that cost a server a tenth of its speed)."""

    async def endpoint(request: Request) -> Response:
        g.seen = request.url.path
        return PlainTextResponse("ok")

    app, _ = build(form, [Route("/", endpoint)])
    scopes = [http_scope() for _ in range(20)]
    await call(app, scopes[0], Client(HTTP_REQUEST))  # builds the middleware stack
    gc.collect()
    gc.disable()
    try:
        for scope in scopes[1:]:
            await call(app, scope, Client(HTTP_REQUEST))
        left = gc.collect()
    finally:
        gc.enable()

    assert left == 0
    assert all("asignals.state" not in scope for scope in scopes)


async def test_a_receiver_may_set_headers_on_a_start_message_without_any(
    signals: Recorder,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})  # "headers" is optional
        await send({"type": "http.response.body", "body": b"ok"})

    def tag(sender: Any, response: ResponseHead) -> None:
        response.headers["x-tag"] = "tagged"

    client = Client(HTTP_REQUEST)
    with asignals.request_finished.connected_to(tag):
        await call(SignalMiddleware(app), http_scope(), client)

    assert client.sent[0]["headers"] == [(b"x-tag", b"tagged")]


async def test_an_async_receiver_connected_during_a_sync_teardown_is_awaited(
    signals: Recorder,
) -> None:
    """Whether a teardown signal is sent with plain calls is decided from the
    receivers it sends to, so one connected while the teardown runs (here by
    a request_tearing_down receiver, as another thread could) is awaited."""
    popped: list[Any] = []

    async def on_popped(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        popped.append(sender)

    def connect_on_teardown(sender: Any, exc: BaseException | None) -> None:
        asignals.appcontext_popped.connect(on_popped)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    app, sender = build("install", [Route("/", endpoint)])
    try:
        with asignals.request_tearing_down.connected_to(connect_on_teardown):
            await call(app, http_scope(), Client(HTTP_REQUEST))
    finally:
        asignals.appcontext_popped.disconnect(on_popped)

    assert popped == [sender]


async def test_appcontext_pushed_receiver_error_fails_the_lifespan_startup(
    signals: Recorder,
) -> None:
    """Not a lifespan that merely raised, which a server (uvicorn) takes for no
    lifespan support, serving the app without its startup."""
    error = Boom("appcontext_pushed receiver failed")

    def fail(sender: Any) -> None:
        raise error

    started: list[bool] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        started.append(True)

    client = Client(STARTUP)
    with asignals.appcontext_pushed.connected_to(fail), pytest.raises(Boom):
        await call(SignalMiddleware(lifespan), lifespan_scope(), client)

    assert started == []
    assert client.types == ["lifespan.startup.failed"]
    assert "appcontext_pushed" in client.sent[0]["message"]
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]


@pytest.mark.parametrize("form", FORMS)
async def test_a_context_copied_during_a_request_does_not_keep_the_request(
    form: str,
) -> None:
    """A server's keep-alive timer, or a task the request started, holds a
    copy of the request's context after the request: it must not hold the
    request's scope too (under uvicorn that made reference cycles, and the
    garbage collector ran hundreds of times more often)."""

    class Marker:
        pass

    copies: list[contextvars.Context] = []

    async def endpoint(request: Request) -> Response:
        copies.append(contextvars.copy_context())
        return PlainTextResponse("ok")

    app, sender = build(form, [Route("/", endpoint)])
    scope = http_scope()
    marker = Marker()
    scope["marker"] = marker
    gone = weakref.ref(marker)
    gc.disable()
    try:
        await call(app, scope, Client(HTTP_REQUEST))
        del scope, marker
        assert gone() is None
    finally:
        gc.enable()
    assert copies[0].run(current_app._get_current_object) is sender

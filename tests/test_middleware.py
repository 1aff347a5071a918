"""SignalMiddleware and install(): Flask's lifecycle signals around Starlette
and FastAPI apps, in Flask's order, with the app as sender. The ways to
install the middleware are in test_middleware_install.py, receivers that raise
in test_middleware_errors.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import Boom, client, per_signal, receiver_of
from middleware_apps import (
    NORMAL,
    TEARDOWN,
    UNHANDLED,
    Events,
    failing_app,
    hello_app,
    record_lifecycle,
    recording,
)
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

import asignals
from asignals import (
    NamedSignal,
    ResponseHead,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    current_app,
    g,
    got_request_exception,
    install,
    lifecycle,
    request_finished,
    request_started,
    request_tearing_down,
    websocket_started,
)
from asignals.testing import record_signals


@pytest.fixture
def sync_events() -> Iterator[Events]:
    """Sync recording receivers only: for the few tests where the test client
    cancels the app right after its last message, and an async receiver
    would race with that cancellation."""
    yield from record_lifecycle("sync")


# Flask's tests/test_signals.py, ported to Starlette


class NoteMiddleware:
    """A user middleware: Flask's before_request / after_request handlers."""

    def __init__(self, app: Any, events: Events) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.events.note("before-handler")

        async def send_after(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.events.note("after-handler")
                MutableHeaders(scope=message)["x-after"] = "stuff"
            await send(message)

        await self.app(scope, receive, send_after)


def test_flask_request_signals(anyio_backend: str, receiver_kind: str) -> None:
    calls = Events()
    app = install(hello_app(calls, middleware=[Middleware(NoteMiddleware, events=calls)]))

    def before_request_signal(sender: Any) -> None:
        calls.note("before-signal")

    def after_request_signal(sender: Any, response: ResponseHead) -> None:
        assert response.headers["x-after"] == "stuff"
        calls.note("after-signal")

    with (
        request_started.connected_to(receiver_of(receiver_kind, before_request_signal), app),
        request_finished.connected_to(receiver_of(receiver_kind, after_request_signal), app),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "hello"
    assert response.headers["x-after"] == "stuff"
    assert calls.names == [
        "before-signal",
        "before-handler",
        "endpoint",
        "after-handler",
        "after-signal",
    ]


# Flask's test_request_exception_signal, test_appcontext_tearing_down_signal
# and the request teardown's: each gets the endpoint's unhandled exception.
@pytest.mark.parametrize(
    ("signal", "argument"),
    per_signal(
        (got_request_exception, "exception"),
        (appcontext_tearing_down, "exc"),
        (request_tearing_down, "exc"),
    ),
)
def test_flask_signal_gets_the_unhandled_exception(
    anyio_backend: str, receiver_kind: str, signal: NamedSignal, argument: str
) -> None:
    app = install(failing_app(ZeroDivisionError()))
    recorded: list[BaseException | None] = []

    def record(sender: Any, **kwargs: Any) -> None:
        assert list(kwargs) == [argument]
        recorded.append(kwargs[argument])

    with signal.connected_to(receiver_of(receiver_kind, record), app):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert len(recorded) == 1
    assert isinstance(recorded[0], ZeroDivisionError)


def test_flask_appcontext_signals(anyio_backend: str, receiver_kind: str) -> None:
    app = install(hello_app())
    recorded: list[str] = []

    def record_push(sender: Any, **kwargs: Any) -> None:
        recorded.append("push")

    def record_pop(sender: Any, **kwargs: Any) -> None:
        recorded.append("pop")

    with (
        appcontext_pushed.connected_to(receiver_of(receiver_kind, record_push), app),
        appcontext_popped.connected_to(receiver_of(receiver_kind, record_pop), app),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "hello"
    assert recorded == ["push", "pop"]


def test_flask_request_tearing_down_signal(anyio_backend: str, receiver_kind: str) -> None:
    app = install(hello_app())
    recorded: list[BaseException | None] = []

    def record_teardown(sender: Any, exc: BaseException | None) -> None:
        recorded.append(exc)

    with request_tearing_down.connected_to(receiver_of(receiver_kind, record_teardown), app):
        client(app, anyio_backend).get("/")

    assert recorded == [None]


# The order of the signals on one request


def test_normal_request_order(anyio_backend: str, events: Events) -> None:
    app = install(hello_app(events))

    response = client(app, anyio_backend).get("/")

    assert response.text == "hello"
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.one("request-finished")["response"].status_code == 200
    assert events.one("request-tearing-down") == {"exc": None}
    assert events.one("appcontext-tearing-down") == {"exc": None}


def test_every_signal_has_the_app_as_sender(anyio_backend: str, events: Events) -> None:
    app = install(hello_app())

    client(app, anyio_backend).get("/")

    assert events.senders == [app] * len(NORMAL)


def test_http_exception_is_a_handled_exception(anyio_backend: str, events: Events) -> None:
    app = install(failing_app(HTTPException(status_code=418)))

    response = client(app, anyio_backend).get("/")

    assert response.status_code == 418
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == 418
    assert events.one("request-tearing-down") == {"exc": None}
    assert events.one("appcontext-tearing-down") == {"exc": None}


def test_route_miss_is_a_handled_exception(anyio_backend: str, events: Events) -> None:
    app = install(hello_app())

    response = client(app, anyio_backend).get("/missing")

    assert response.status_code == 404
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == 404
    assert events.one("request-tearing-down") == {"exc": None}


def test_custom_exception_handler_makes_a_handled_exception(
    anyio_backend: str, events: Events
) -> None:
    class Teapot(Exception):
        pass

    async def handle(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("handled", status_code=418)

    app = install(failing_app(Teapot(), exception_handlers={Teapot: handle}))

    response = client(app, anyio_backend).get("/")

    assert response.text == "handled"
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == 418
    assert events.one("request-tearing-down") == {"exc": None}
    assert events.one("appcontext-tearing-down") == {"exc": None}


def test_unhandled_exception_order_with_install(anyio_backend: str, events: Events) -> None:
    error = Boom("endpoint failed")
    app = install(failing_app(error))

    response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == UNHANDLED
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-finished")["response"].status_code == 500
    assert events.one("request-tearing-down") == {"exc": error}
    assert events.one("appcontext-tearing-down") == {"exc": error}
    assert events.senders == [app] * len(UNHANDLED)


def test_unhandled_exception_propagates_after_teardown(anyio_backend: str, events: Events) -> None:
    error = Boom("endpoint failed")
    app = install(failing_app(error))

    with pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error
    assert events.names == UNHANDLED


@pytest.mark.parametrize("key", [500, Exception])
def test_server_error_handler_counts_as_unhandled(
    anyio_backend: str, events: Events, key: Any
) -> None:
    error = Boom("endpoint failed")

    async def handle(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("sorry", status_code=503)

    app = install(failing_app(error, exception_handlers={key: handle}))

    response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.text == "sorry"
    assert events.names == UNHANDLED
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-finished")["response"].status_code == 503
    assert events.one("request-tearing-down") == {"exc": error}


# request_finished's response


def test_request_finished_response_has_status_and_mutable_headers(
    anyio_backend: str, events: Events
) -> None:
    app = install(hello_app())

    client(app, anyio_backend).get("/")

    response = events.one("request-finished")["response"]
    assert isinstance(response, ResponseHead)
    assert response.status_code == 200
    assert isinstance(response.headers, MutableHeaders)
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-length"] == "5"


def test_request_finished_receiver_headers_reach_the_client(
    anyio_backend: str, receiver_kind: str
) -> None:
    app = install(hello_app())

    def change(sender: Any, response: ResponseHead) -> None:
        response.headers["x-added"] = "yes"
        response.headers["content-type"] = "text/x-changed"

    with request_finished.connected_to(receiver_of(receiver_kind, change)):
        response = client(app, anyio_backend).get("/")

    assert response.headers["x-added"] == "yes"
    assert response.headers["content-type"] == "text/x-changed"
    assert response.text == "hello"


def test_request_finished_receiver_status_reaches_the_client(
    anyio_backend: str, receiver_kind: str
) -> None:
    app = install(hello_app())

    def change(sender: Any, response: ResponseHead) -> None:
        response.status_code = 202

    with request_finished.connected_to(receiver_of(receiver_kind, change)):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 202
    assert response.text == "hello"


# Kinds of responses


def test_streaming_response_tears_down_after_the_stream(anyio_backend: str, events: Events) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in (1, 2):
            events.note(f"chunk-{n}")
            yield b"chunk"

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    app = install(Starlette(routes=[Route("/", stream)]))

    response = client(app, anyio_backend).get("/")

    assert response.text == "chunkchunk"
    assert events.names == [*NORMAL[:3], "chunk-1", "chunk-2", *TEARDOWN]


def test_background_task_runs_before_request_tearing_down(
    anyio_backend: str, events: Events
) -> None:
    async def later() -> None:
        events.note("background")

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = install(Starlette(routes=[Route("/", endpoint)]))

    client(app, anyio_backend).get("/")

    assert events.names == [*NORMAL[:3], "background", *TEARDOWN]


@pytest.mark.parametrize("task_kind", ["async", "sync"])
def test_background_task_sees_current_app_g_and_request(anyio_backend: str, task_kind: str) -> None:
    seen: dict[str, Any] = {}

    def look() -> None:
        seen["app"] = current_app._get_current_object()
        seen["user"] = g.user
        seen["path"] = asignals.request.url.path

    async def look_async() -> None:
        look()

    async def endpoint(request: Request) -> Response:
        g.user = "ada"
        task = BackgroundTask(look_async if task_kind == "async" else look)
        return PlainTextResponse("ok", background=task)

    app = install(Starlette(routes=[Route("/page", endpoint)]))

    client(app, anyio_backend).get("/page")

    assert seen == {"app": app, "user": "ada", "path": "/page"}


def test_file_response(anyio_backend: str, events: Events, tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_text("from a file")

    async def endpoint(request: Request) -> Response:
        return FileResponse(path)

    app = install(Starlette(routes=[Route("/", endpoint)]))

    response = client(app, anyio_backend).get("/")

    assert response.text == "from a file"
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].headers["content-length"] == "11"


def test_head_request(anyio_backend: str, events: Events) -> None:
    app = install(hello_app())

    response = client(app, anyio_backend).head("/")

    assert response.status_code == 200
    assert response.content == b""
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == 200


@pytest.mark.parametrize("status", [204, 304])
def test_response_without_body(anyio_backend: str, events: Events, status: int) -> None:
    async def endpoint(request: Request) -> Response:
        return Response(status_code=status)

    app = install(Starlette(routes=[Route("/", endpoint)]))

    response = client(app, anyio_backend).get("/")

    assert response.status_code == status
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == status


def test_redirect_response(anyio_backend: str, events: Events) -> None:
    async def endpoint(request: Request) -> Response:
        return RedirectResponse("/elsewhere")

    app = install(Starlette(routes=[Route("/", endpoint)]))

    response = client(app, anyio_backend, follow_redirects=False).get("/")

    assert response.status_code == 307
    assert events.names == NORMAL
    finished = events.one("request-finished")["response"]
    assert finished.status_code == 307
    assert finished.headers["location"] == "/elsewhere"


def test_followed_redirect_is_two_requests(anyio_backend: str, events: Events) -> None:
    async def endpoint(request: Request) -> Response:
        return RedirectResponse("/hello")

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    app = install(Starlette(routes=[Route("/", endpoint), Route("/hello", hello)]))

    response = client(app, anyio_backend).get("/")

    assert response.text == "hello"
    assert events.names == NORMAL + NORMAL


# Websockets

WEBSOCKET = [
    "appcontext-pushed",
    "websocket-started",
    "websocket-finished",
    "websocket-tearing-down",
    "appcontext-tearing-down",
    "appcontext-popped",
]


def websocket_app(handler: Callable[[WebSocket], Any]) -> Starlette:
    return install(Starlette(routes=[WebSocketRoute("/ws", handler)]))


def test_websocket_order(anyio_backend: str, events: Events) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        events.note("handler")
        await websocket.close()

    app = websocket_app(handler)

    with client(app, anyio_backend).websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hi"
        assert events.wait_popped()

    assert events.names == [*WEBSOCKET[:2], "handler", *WEBSOCKET[2:]]
    assert events.one("websocket-finished") == {"response": None}
    assert events.one("websocket-tearing-down") == {"exc": None}
    assert events.one("appcontext-tearing-down") == {"exc": None}
    assert events.senders == [app] * len(WEBSOCKET)


def test_websocket_closed_by_the_client(anyio_backend: str, events: Events) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            events.note("disconnected")

    app = websocket_app(handler)

    with client(app, anyio_backend).websocket_connect("/ws") as ws:
        ws.close()
        assert events.wait_popped()

    assert events.names == [*WEBSOCKET[:2], "disconnected", *WEBSOCKET[2:]]
    assert events.one("websocket-tearing-down") == {"exc": None}


def test_websocket_denied_by_closing_before_accept(anyio_backend: str, sync_events: Events) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.close()

    app = websocket_app(handler)

    with pytest.raises(WebSocketDisconnect):
        client(app, anyio_backend).websocket_connect("/ws").__enter__()

    assert sync_events.wait_popped()
    assert sync_events.names == WEBSOCKET
    response = sync_events.one("websocket-finished")["response"]
    assert isinstance(response, ResponseHead)
    assert response.status_code == 403


def test_websocket_denied_with_a_response(anyio_backend: str, sync_events: Events) -> None:
    async def handler(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no", status_code=401))

    app = websocket_app(handler)

    with pytest.raises(WebSocketDenialResponse) as raised:
        client(app, anyio_backend).websocket_connect("/ws").__enter__()

    assert raised.value.status_code == 401
    assert sync_events.wait_popped()
    assert sync_events.names == WEBSOCKET
    response = sync_events.one("websocket-finished")["response"]
    assert isinstance(response, ResponseHead)
    assert response.status_code == 401


def test_websocket_handler_raising(anyio_backend: str, events: Events) -> None:
    error = Boom("handler failed")

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise error

    app = websocket_app(handler)

    def talk() -> None:
        with client(app, anyio_backend).websocket_connect("/ws") as ws:
            ws.send_text("fail now")
            assert events.wait_popped()

    with pytest.raises(Boom) as raised:
        talk()

    assert raised.value is error
    assert events.names == [
        "appcontext-pushed",
        "websocket-started",
        "got-websocket-exception",
        "websocket-finished",
        "websocket-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]
    assert events.one("got-websocket-exception") == {"exception": error}
    assert events.one("websocket-finished") == {"response": None}
    assert events.one("websocket-tearing-down") == {"exc": error}
    assert events.one("appcontext-tearing-down") == {"exc": error}


def test_websocket_started_receiver_sees_current_app_and_request(
    anyio_backend: str, receiver_kind: str, sync_events: Events
) -> None:
    seen: dict[str, Any] = {}

    def look(sender: Any) -> None:
        seen["app"] = current_app._get_current_object()
        seen["is_connection"] = isinstance(asignals.request, HTTPConnection)
        seen["path"] = asignals.request.url.path

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    app = websocket_app(handler)

    with (
        websocket_started.connected_to(receiver_of(receiver_kind, look)),
        client(app, anyio_backend).websocket_connect("/ws") as ws,
    ):
        ws.receive()
        assert sync_events.wait_popped()

    assert seen["app"] is app
    assert seen["is_connection"] is True
    assert seen["path"] == "/ws"


# Lifespan


def lifespan_app(events: Events) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.note("startup")
        app.state.started_by = current_app._get_current_object()
        yield
        events.note("shutdown")

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(repr(request.app.state.started_by is request.app))

    return install(Starlette(routes=[Route("/", endpoint)], lifespan=lifespan))


def test_lifespan_runs_inside_an_app_context(anyio_backend: str, events: Events) -> None:
    app = lifespan_app(events)

    with client(app, anyio_backend):
        assert events.names == ["appcontext-pushed", "startup"]

    assert events.names == [
        "appcontext-pushed",
        "startup",
        "shutdown",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]
    assert events.one("appcontext-tearing-down") == {"exc": None}
    assert events.senders == [app] * 3


def test_current_app_works_in_the_lifespan(anyio_backend: str, events: Events) -> None:
    app = lifespan_app(events)

    with client(app, anyio_backend):
        pass

    assert app.state.started_by is app


def test_lifespan_state_is_visible_in_requests(anyio_backend: str, events: Events) -> None:
    app = lifespan_app(events)

    with client(app, anyio_backend) as test_client:
        response = test_client.get("/")

    assert response.text == "True"


def test_request_during_the_lifespan_gets_its_own_g(anyio_backend: str) -> None:
    seen: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        g.where = "lifespan"
        yield
        seen.append(g.where)

    async def endpoint(request: Request) -> Response:
        seen.append(g.get("where"))
        g.where = "request"
        return PlainTextResponse("ok")

    app = install(Starlette(routes=[Route("/", endpoint)], lifespan=lifespan))

    with client(app, anyio_backend) as test_client:
        test_client.get("/")

    assert seen == [None, "lifespan"]


def test_lifespan_state_reaches_requests(anyio_backend: str) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        yield {"greeting": "from the lifespan"}

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(request.state.greeting)

    app = install(Starlette(routes=[Route("/", endpoint)], lifespan=lifespan))

    with client(app, anyio_backend) as test_client:
        response = test_client.get("/")

    assert response.text == "from the lifespan"


def test_lifespan_startup_failure_tears_down_the_app_context(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("no start")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise error
        yield  # pragma: no cover

    app = install(Starlette(lifespan=lifespan))

    with pytest.raises(Boom), client(app, anyio_backend):
        pass  # pragma: no cover

    assert events.names == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert events.one("appcontext-tearing-down") == {"exc": error}


def test_lifespan_appcontext_pushed_receiver_failure_tears_down_the_app_context(
    anyio_backend: str, events: Events, receiver_kind: str
) -> None:
    # Under uvicorn: test_lifespan_uvicorn.py.
    error = Boom("appcontext_pushed receiver failed")
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)  # pragma: no cover
        yield  # pragma: no cover

    def fail(sender: Any) -> None:
        raise error

    app = install(Starlette(lifespan=lifespan))

    with (
        appcontext_pushed.connected_to(receiver_of(receiver_kind, fail)),
        pytest.raises(Boom),
        client(app, anyio_backend),
    ):
        pass  # pragma: no cover

    assert started == []
    assert events.names == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert events.one("appcontext-tearing-down") == {"exc": error}


# asignals.testing


def test_record_signals_records_the_lifecycle_signals_of_a_request(anyio_backend: str) -> None:
    app = install(hello_app())

    with record_signals(*lifecycle.values()) as sent:
        client(app, anyio_backend).get("/")

    assert [s.signal.name for s in sent] == NORMAL  # type: ignore[attr-defined]
    assert sent.senders == [app] * len(NORMAL)


# Paths taken when only some lifecycle signals have receivers


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unhandled_exception_without_request_finished_receivers(
    anyio_backend: str, kind: str
) -> None:
    """With nothing on request_finished, got_request_exception is still sent
    once, by the hooked error middleware."""
    events = Events()
    app = install(failing_app())
    names = ["got-request-exception", "request-tearing-down", "appcontext-popped"]
    with ExitStack() as stack:
        for name in names:
            receiver = recording(events, name, kind)
            stack.enter_context(lifecycle[name].connected_to(receiver))
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == names
    exception = events.one("got-request-exception")["exception"]
    assert isinstance(exception, Boom)
    assert events.one("request-tearing-down") == {"exc": exception}


def test_request_finished_receiver_connected_during_a_request_gets_the_next_responses(
    anyio_backend: str,
) -> None:
    """Whether a request's response is watched is decided as the request
    starts: a receiver the endpoint connects to request_finished gets the
    responses of the requests after it, as a receiver connected during a send
    is not called for that send."""
    statuses: list[int] = []

    def finished(sender: Any, response: ResponseHead) -> None:
        statuses.append(response.status_code)

    async def connect(request: Request) -> Response:
        request_finished.connect(finished)
        return PlainTextResponse("connected", status_code=201)

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    app = install(Starlette(routes=[Route("/connect", connect), Route("/", hello)]))
    try:
        with client(app, anyio_backend) as test_client:
            test_client.get("/connect")
            assert statuses == []
            test_client.get("/")
            assert statuses == [200]
    finally:
        request_finished.disconnect(finished)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_only_teardown_receivers_see_the_whole_teardown(anyio_backend: str, kind: str) -> None:
    events = Events()
    with ExitStack() as stack:
        for name in TEARDOWN:
            receiver = recording(events, name, kind)
            stack.enter_context(lifecycle[name].connected_to(receiver))
        client(install(hello_app()), anyio_backend).get("/")

    assert events.names == TEARDOWN
    assert events.one("request-tearing-down") == {"exc": None}


def test_teardown_receivers_of_both_kinds_run_in_order(anyio_backend: str) -> None:
    events = Events()
    with ExitStack() as stack:
        for name, kind in zip(TEARDOWN, ["async", "sync", "async"], strict=True):
            receiver = recording(events, name, kind)
            stack.enter_context(lifecycle[name].connected_to(receiver))
        client(install(hello_app()), anyio_backend).get("/")

    assert events.names == TEARDOWN


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_log_mode_logs_a_failing_receiver_of_a_signal_without_others(
    anyio_backend: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = Boom("appcontext_pushed receiver failed")

    def failed_on_push(sender: Any) -> None:
        raise error

    app = install(hello_app(), receiver_errors="log")
    caplog.set_level(logging.ERROR, logger="asignals")
    with appcontext_pushed.connected_to(receiver_of(kind, failed_on_push)):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "asignals"]
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    assert "appcontext-pushed" in record.getMessage()
    if kind == "sync":
        assert "failed_on_push" in record.getMessage()


def test_a_got_request_exception_receiver_that_reraises_is_not_a_second_error(
    anyio_backend: str,
) -> None:
    def reraise(sender: Any, exception: Exception) -> None:
        raise exception

    error = Boom("endpoint failed")
    app = install(failing_app(error))
    with got_request_exception.connected_to(reraise), pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error

"""Deferred sends from sync call sites when something fails while receivers
are pending: a pending receiver raises, the endpoint raises, the request is
cancelled or the client disconnects, and the cases review found (handled
exceptions, cancellation mid-flush, errors after a failed response start)."""

from __future__ import annotations

import contextvars
import gc
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from call_site_apps import (
    Log,
    app_with,
    deferred,
    failing,
    send_from_sync,
    templates,
    watching,
    watching_errors,
)
from helpers import Boom, client
from raw_asgi import HTTP_REQUEST, WS_CONNECT, Canceller, Client, http_scope, websocket_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

import asignals
from asignals import (
    Signal,
    SignalMiddleware,
    before_render_template,
    flash,
    got_request_exception,
    got_websocket_exception,
    install,
    message_flashed,
    request_finished,
    request_tearing_down,
    websocket_finished,
    websocket_tearing_down,
)

# 3. A pending receiver that raises.


def test_pending_receiver_error_is_the_requests_unhandled_error(
    anyio_backend: str, finished_watched: bool
) -> None:
    log = Log()
    error = Boom("pending receiver")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        return PlainTextResponse("ok")

    with (
        message_flashed.connected_to(failing(log, "message_flashed", error)),
        watching_errors(log, finished_watched),
    ):
        response = client(
            app_with(Route("/", endpoint)), anyio_backend, raise_server_exceptions=False
        ).get("/")

    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    finished = ["request-finished"] if finished_watched else []
    assert log == ["message_flashed", "got-request-exception", *finished, "request-tearing-down"]
    assert log.one("got-request-exception") == {"exception": error}
    assert log.one("request-tearing-down") == {"exc": error}
    if finished_watched:
        assert log.one("request-finished")["response"].status_code == 500


def test_pending_receiver_error_comes_out_of_the_app(anyio_backend: str) -> None:
    error = Boom("pending receiver")
    custom = Signal()

    async def broken(sender: Any) -> None:
        raise error

    async def endpoint(request: Request) -> Response:
        send_from_sync(custom)
        return PlainTextResponse("ok")

    custom.connect(broken, weak=False)

    with pytest.raises(Boom) as raised:
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert raised.value is error


def test_pending_receiver_error_in_log_mode_is_logged_and_the_response_goes_out(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()

    async def endpoint(request: Request) -> Response:
        flash("saved")
        return PlainTextResponse("ok")

    caplog.set_level(logging.ERROR, logger="asignals")
    app = app_with(Route("/", endpoint), receiver_errors="log")
    with (
        message_flashed.connected_to(failing(log, "broken_pending_receiver", Boom("pending"))),
        message_flashed.connected_to(deferred(log, "after")),
        watching(log, got_request_exception, request_finished, request_tearing_down),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert response.text == "ok"
    assert log == ["broken_pending_receiver", "after", "request-finished", "request-tearing-down"]
    assert log.one("request-tearing-down") == {"exc": None}
    (record,) = [r for r in caplog.records if r.name == "asignals"]
    assert "broken_pending_receiver" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


# 4. The endpoint raises while receivers are pending.


def test_pending_receivers_run_before_got_request_exception_when_the_endpoint_raises(
    anyio_backend: str, finished_watched: bool
) -> None:
    log = Log()
    error = Boom("endpoint")

    async def endpoint(request: Request) -> Response:
        flash("one")
        flash("two")
        raise error

    with (
        message_flashed.connected_to(deferred(log, "message_flashed")),
        watching_errors(log, finished_watched),
    ):
        response = client(
            app_with(Route("/", endpoint)), anyio_backend, raise_server_exceptions=False
        ).get("/")

    assert response.status_code == 500
    finished = ["request-finished"] if finished_watched else []
    assert log == [
        "message_flashed",
        "message_flashed",
        "got-request-exception",
        *finished,
        "request-tearing-down",
    ]
    assert log.one("got-request-exception") == {"exception": error}
    assert log.one("request-tearing-down") == {"exc": error}


def test_every_pending_receiver_runs_when_the_endpoint_raises_even_if_some_raise(
    anyio_backend: str, finished_watched: bool
) -> None:
    log = Log()
    error = Boom("endpoint")
    custom = Signal()

    async def endpoint(request: Request) -> Response:
        send_from_sync(custom)
        send_from_sync(custom)
        raise error

    custom.connect(failing(log, "broken", ValueError("pending")), weak=False)
    custom.connect(deferred(log, "fine"), weak=False)

    with watching_errors(log, finished_watched):
        response = client(
            app_with(Route("/", endpoint)), anyio_backend, raise_server_exceptions=False
        ).get("/")

    assert response.status_code == 500
    finished = ["request-finished"] if finished_watched else []
    assert log == [
        "broken",
        "fine",
        "broken",
        "fine",
        "got-request-exception",
        *finished,
        "request-tearing-down",
    ]
    assert log.one("got-request-exception") == {"exception": error}
    assert log.one("request-tearing-down") == {"exc": error}


@pytest.mark.parametrize("form", ["wrap", "add_middleware"])
def test_every_pending_receiver_runs_when_the_endpoint_raises_in_the_other_forms(
    anyio_backend: str, form: str
) -> None:
    """SignalMiddleware(app) and add_middleware(SignalMiddleware): the same,
    whether Starlette's 500 response goes out through the middleware (wrap)
    or outside it (add_middleware)."""
    log = Log()
    error = Boom("endpoint")
    custom = Signal()

    async def endpoint(request: Request) -> Response:
        send_from_sync(custom)
        raise error

    custom.connect(failing(log, "broken", ValueError("pending")), weak=False)
    custom.connect(deferred(log, "fine"), weak=False)
    if form == "wrap":
        app: ASGIApp = SignalMiddleware(Starlette(routes=[Route("/", endpoint)]))
    else:
        app = Starlette(routes=[Route("/", endpoint)], middleware=[Middleware(SignalMiddleware)])

    with watching(log, got_request_exception, request_tearing_down):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert log == ["broken", "fine", "got-request-exception", "request-tearing-down"]
    assert log.one("got-request-exception") == {"exception": error}
    assert log.one("request-tearing-down") == {"exc": error}


def test_pending_receiver_errors_come_out_with_the_endpoints_exception_in_a_group(
    anyio_backend: str, finished_watched: bool
) -> None:
    log = Log()
    error = Boom("endpoint")
    first, second = ValueError("first pending"), KeyError("second pending")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        raise error

    with (
        message_flashed.connected_to(failing(log, "first", first)),
        message_flashed.connected_to(failing(log, "second", second)),
        watching_errors(log, finished_watched),
        pytest.raises(ExceptionGroup) as raised,
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert raised.value.exceptions == (error, first, second)


def test_endpoints_exception_comes_out_alone_when_the_pending_receivers_succeed(
    anyio_backend: str, finished_watched: bool
) -> None:
    log = Log()
    error = Boom("endpoint")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        raise error

    with (
        message_flashed.connected_to(deferred(log, "message_flashed")),
        watching_errors(log, finished_watched),
        pytest.raises(Boom) as raised,
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert raised.value is error
    assert log[0] == "message_flashed"


def test_pending_receiver_errors_are_logged_in_log_mode_when_the_endpoint_raises(
    anyio_backend: str, finished_watched: bool, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    error = Boom("endpoint")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        raise error

    caplog.set_level(logging.ERROR, logger="asignals")
    app = app_with(Route("/", endpoint), receiver_errors="log")
    with (
        message_flashed.connected_to(failing(log, "broken_pending_receiver", ValueError("x"))),
        message_flashed.connected_to(deferred(log, "after")),
        watching_errors(log, finished_watched),
        pytest.raises(Boom) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value is error
    assert log[:3] == ["broken_pending_receiver", "after", "got-request-exception"]
    assert log.one("got-request-exception") == {"exception": error}
    (record,) = [r for r in caplog.records if r.name == "asignals"]
    assert "broken_pending_receiver" in record.getMessage()


# 7. Cancelled or disconnected while receivers are pending (raw ASGI).


@pytest.mark.anyio
async def test_cancelled_request_runs_pending_receivers_at_teardown_shielded_once() -> None:
    log = Log()
    canceller = Canceller()
    custom = Signal()

    async def pending(sender: Any) -> None:
        log.append("pending started")
        # Raises at once if the teardown is not shielded from the cancel.
        await anyio.lowlevel.checkpoint()
        log.append(f"pending finished in {asignals.request.url.path}")

    async def endpoint(request: Request) -> Response:
        send_from_sync(custom)
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    custom.connect(pending, weak=False)
    app = install(Starlette(routes=[Route("/page", endpoint)]))
    with watching(log, request_finished, request_tearing_down):
        await canceller.call(app, http_scope("/page"), Client(HTTP_REQUEST))

    assert canceller.scope.cancelled_caught
    assert log == ["pending started", "pending finished in /page", "request-tearing-down"]
    exc = log.one("request-tearing-down")["exc"]
    assert isinstance(exc, anyio.get_cancelled_exc_class())


@pytest.mark.anyio
async def test_disconnected_stream_runs_pending_receivers_at_teardown_once() -> None:
    log = Log()
    custom = Signal()

    async def endpoint(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            send_from_sync(custom)
            log.append("sent mid-stream")
            await anyio.sleep_forever()

        return StreamingResponse(chunks())

    custom.connect(deferred(log, "pending"), weak=False)
    app = install(Starlette(routes=[Route("/", endpoint)]))
    client_ = Client(HTTP_REQUEST, disconnect_after_body=True)
    with watching(log, request_finished, request_tearing_down):
        await app(http_scope(spec_version="2.3"), client_.receive, client_.send)

    assert log == ["request-finished", "sent mid-stream", "pending", "request-tearing-down"]
    assert log.one("request-tearing-down") == {"exc": None}


# 10. Cases review found: handled exceptions, cancellation mid-flush, sends
#     from worker threads, failing sync receivers, errors after a failed
#     response start, and websockets.


def test_pending_receiver_error_fails_a_request_whose_http_exception_was_handled(
    anyio_backend: str, finished_watched: bool
) -> None:
    """Starlette turns the HTTPException into a 403; the deferred receiver
    runs as that response starts, and its error is the request's unhandled
    error, as for any other response."""
    log = Log()
    error = Boom("pending receiver")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        raise HTTPException(403)

    with (
        message_flashed.connected_to(failing(log, "message_flashed", error)),
        watching_errors(log, finished_watched),
    ):
        response = client(
            app_with(Route("/", endpoint)), anyio_backend, raise_server_exceptions=False
        ).get("/")

    assert response.status_code == 500
    finished = ["request-finished"] if finished_watched else []
    assert log == ["message_flashed", "got-request-exception", *finished, "request-tearing-down"]
    assert log.one("got-request-exception") == {"exception": error}
    assert log.one("request-tearing-down") == {"exc": error}


@pytest.mark.anyio
async def test_cancelled_mid_flush_the_receivers_not_yet_called_run_at_the_teardown() -> None:
    """Cancelled in the flush before request_finished, while the first of two
    deferred receivers awaits: the second runs at the teardown, and each is
    called once."""
    log = Log()
    canceller = Canceller()

    async def first(sender: Any, **kwargs: Any) -> None:
        log.append("first started")
        canceller.trigger.set()
        await anyio.sleep_forever()

    async def endpoint(request: Request) -> Response:
        flash("saved")
        return PlainTextResponse("ok")

    client_ = Client(HTTP_REQUEST)
    with (
        message_flashed.connected_to(first),
        message_flashed.connected_to(deferred(log, "second")),
        watching(log, request_finished, request_tearing_down),
    ):
        await canceller.call(app_with(Route("/", endpoint)), http_scope(), client_)

    assert canceller.scope.cancelled_caught
    assert client_.sent == []
    assert log == ["first started", "second", "request-tearing-down"]


def test_a_flash_in_a_worker_thread_runs_after_the_pending_receivers_of_earlier_flashes(
    anyio_backend: str,
) -> None:
    got: list[str] = []

    async def on_flashed(sender: Any, message: str, category: str) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(message)

    async def endpoint(request: Request) -> Response:
        flash("a")
        await run_in_threadpool(flash, "b")
        return PlainTextResponse("ok")

    with message_flashed.connected_to(on_flashed):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.status_code == 200
    assert got == ["a", "b"]


def test_async_receiver_connected_before_a_failing_sync_receiver_still_runs(
    anyio_backend: str,
) -> None:
    """As in a worker thread, where send() calls the async receiver before
    the sync one raises: the endpoint catches the error, and the receiver
    deferred before it runs before request_finished."""
    log = Log()

    def broken(sender: Any, **kwargs: Any) -> None:
        log.append("broken")
        raise Boom("sync receiver")

    async def endpoint(request: Request) -> Response:
        try:
            flash("saved")
        except Boom:
            log.append("endpoint caught")
        return PlainTextResponse("ok")

    with (
        message_flashed.connected_to(deferred(log, "async before")),
        message_flashed.connected_to(broken),
        watching(log, request_finished),
    ):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.status_code == 200
    assert log == ["broken", "endpoint caught", "async before", "request-finished"]


class FallbackOnBoom:
    """Pure ASGI middleware that answers Boom with a 503, whose background
    task raises ``later``."""

    def __init__(self, app: ASGIApp, later: Exception) -> None:
        self.app = app
        self.later = later

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Boom:

            async def task() -> None:
                raise self.later

            fallback = PlainTextResponse("fallback", 503, background=BackgroundTask(task))
            await fallback(scope, receive, send)


def test_a_later_exception_is_the_requests_error_not_the_failed_response_starts(
    anyio_backend: str, finished_watched: bool
) -> None:
    """A deferred receiver fails as the response starts; middleware in the
    app handles that with its own response, whose background task raises
    another exception: that one is the request's error."""
    log = Log()
    later = KeyError("background task")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        return PlainTextResponse("ok")

    app = install(
        Starlette(
            routes=[Route("/", endpoint)],
            middleware=[
                Middleware(SessionMiddleware, secret_key="test"),
                Middleware(FallbackOnBoom, later=later),
            ],
        )
    )
    with (
        message_flashed.connected_to(failing(log, "message_flashed", Boom("pending receiver"))),
        watching_errors(log, finished_watched),
        pytest.raises(KeyError) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value is later
    assert log.one("got-request-exception") == {"exception": later}
    assert log.one("request-tearing-down") == {"exc": later}


class Probe:
    """Something a request's scope holds, to see when the scope is freed."""


@pytest.mark.anyio
async def test_a_copied_context_does_not_keep_the_scope_of_a_request_whose_start_failed() -> None:
    """A copy of the request's context (a task it started, a server's timer)
    outlives it, holding the request context: that must not hold the scope,
    even through the error of the receiver that failed the response start."""
    copies: list[contextvars.Context] = []

    def broken(sender: Any, response: asignals.ResponseHead) -> None:
        # Not for the 500 that follows: its error would be logged, and the
        # log record would hold the scope.
        if response.status_code == 200:
            raise Boom("request_finished receiver")

    async def endpoint(request: Request) -> Response:
        copies.append(contextvars.copy_context())
        return PlainTextResponse("ok")

    app = install(Starlette(routes=[Route("/", endpoint)]))
    scope = http_scope()
    scope["probe"] = Probe()
    freed = weakref.ref(scope["probe"])
    client_ = Client(HTTP_REQUEST)
    with request_finished.connected_to(broken), suppress(Boom):
        await app(scope, client_.receive, client_.send)
    del scope
    gc.collect()

    assert [message.get("status") for message in client_.sent][:1] == [500]
    assert len(copies) == 1
    assert freed() is None


@pytest.mark.anyio
async def test_websocket_finished_is_sent_when_a_pending_receiver_fails_after_return() -> None:
    log = Log()
    error = Boom("pending receiver")
    page = templates()

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        response = page.TemplateResponse(websocket, "page.html", {"name": "ada"})  # type: ignore[arg-type]
        await websocket.send_text(bytes(response.body).decode())
        await websocket.close()
        log.append("handler returned")

    app = install(Starlette(routes=[WebSocketRoute("/ws", handler)]))
    client_ = Client(WS_CONNECT)
    with (
        before_render_template.connected_to(failing(log, "before_render_template", error)),
        watching(log, got_websocket_exception, websocket_finished, websocket_tearing_down),
        pytest.raises(Boom) as raised,
    ):
        await app(websocket_scope(), client_.receive, client_.send)

    assert raised.value is error
    assert log == [
        "handler returned",
        "before_render_template",
        "got-websocket-exception",
        "websocket-finished",
        "websocket-tearing-down",
    ]
    assert log.one("websocket-finished") == {"response": None}

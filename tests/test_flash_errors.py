"""flash() when things go wrong: receivers of message_flashed that raise,
flash() where it cannot work (outside a request, without a session, in a
websocket, after the response started), and the cases review found (a
cancelled request's teardown, server error handlers, mounted apps, malformed
messages)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.lowlevel
import pytest
from flash_apps import (
    Endpoint,
    attempt,
    endpoint,
    flash_app,
    flashing,
    recording_lifecycle,
    session_app,
)
from helpers import Boom, client, per_signal, receiver_of
from raw_asgi import http_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

import asignals
from asignals import (
    FlashError,
    NamedSignal,
    ResponseHead,
    SignalMiddleware,
    app_context,
    flash,
    get_flashed_messages,
    got_request_exception,
    install,
    message_flashed,
    request_finished,
    request_started,
    request_tearing_down,
)
from asignals.testing import record_signals

CALLS: dict[str, Callable[[], Any]] = {
    "flash": lambda: flash("hello"),
    "get_flashed_messages": get_flashed_messages,
}


@pytest.fixture(params=list(CALLS))
def call(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """flash() or get_flashed_messages(): both need a request and a session."""
    return CALLS[request.param]


# Receiver errors


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("sync", "sync"), ("sync", "async")],
)
def test_receiver_error_propagates_out_of_flash(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str
) -> None:
    error = Boom("receiver failed")
    errors: list[Exception] = []

    def fail(sender: Any, **kwargs: Any) -> None:
        raise error

    def flash_page(request: Request) -> Response:
        attempt(errors, lambda: flash("hello"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, flash_page)))

    with message_flashed.connected_to(receiver_of(receiver_kind, fail)):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert errors == [error]


def test_message_is_stored_before_a_receiver_raises(anyio_backend: str, endpoint_kind: str) -> None:
    def fail(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    def flash_page(request: Request) -> Response:
        attempt([], lambda: flash("hello"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, flash_page)))
    test_client = client(app, anyio_backend)

    with message_flashed.connected_to(fail):
        test_client.get("/")

    assert test_client.get("/read").json() == [["message", "hello"]]


def test_deferred_receiver_error_fails_the_request(anyio_backend: str) -> None:
    error = Boom("receiver failed")
    names: list[str] = []
    exceptions: list[BaseException] = []

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    def record(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    app = flash_app(Route("/", flashing("async", ("hello", "message"))))

    with (
        message_flashed.connected_to(fail),
        got_request_exception.connected_to(record, app),
        recording_lifecycle("sync", names),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert exceptions == [error]
    assert names == [
        "appcontext-pushed",
        "request-started",
        "message-flashed",
        "got-request-exception",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


def test_deferred_receiver_error_reaches_the_test_client(anyio_backend: str) -> None:
    error = Boom("receiver failed")

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    app = flash_app(Route("/", flashing("async", ("hello", "message"))))

    with message_flashed.connected_to(fail), pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("async", "async"), ("sync", "sync"), ("sync", "async")],
)
def test_log_mode_logs_a_receiver_error_and_the_request_goes_on(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_receiver(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    async def failing_async_receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise Boom("receiver failed")

    receiver = failing_receiver if receiver_kind == "sync" else failing_async_receiver
    app = flash_app(
        Route("/", flashing(endpoint_kind, ("hello", "message"))), receiver_errors="log"
    )
    test_client = client(app, anyio_backend)
    caplog.set_level(logging.ERROR, logger="asignals")

    with message_flashed.connected_to(receiver):
        response = test_client.get("/")

    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "asignals"]
    assert receiver.__name__ in record.getMessage()
    assert "message-flashed" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert test_client.get("/read").json() == [["message", "hello"]]


def test_log_mode_runs_the_receivers_after_a_failing_one(
    anyio_backend: str, endpoint_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[str] = []

    def fail(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    def record(sender: Any, message: str, category: str) -> None:
        received.append(message)

    app = flash_app(
        Route("/", flashing(endpoint_kind, ("hello", "message"))), receiver_errors="log"
    )
    caplog.set_level(logging.ERROR, logger="asignals")

    with message_flashed.connected_to(fail), message_flashed.connected_to(record):
        client(app, anyio_backend).get("/")

    assert received == ["hello"]


def failing_after_a_flash() -> Endpoint:
    """An endpoint that flashes, then raises Boom (unhandled)."""

    async def fail(request: Request) -> Response:
        flash("hello")
        raise Boom("endpoint failed")

    return fail


@pytest.fixture(params=["no request_finished receiver", "a request_finished receiver"])
def finished_receivers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whether request_finished has a receiver: install() then sends
    got_request_exception from inside Starlette's error middleware, else from
    outside it."""
    if request.param == "no request_finished receiver":
        yield
        return

    def finished(sender: Any, response: ResponseHead) -> None:
        pass

    with request_finished.connected_to(finished):
        yield


def test_deferred_receiver_runs_before_got_request_exception(
    anyio_backend: str, finished_receivers: None
) -> None:
    calls: list[Any] = []

    async def flashed(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("message flashed")

    def got(sender: Any, exception: BaseException) -> None:
        calls.append(exception)

    app = flash_app(Route("/", failing_after_a_flash()))

    with (
        message_flashed.connected_to(flashed),
        got_request_exception.connected_to(got, app),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert len(calls) == 2
    assert calls[0] == "message flashed"
    assert isinstance(calls[1], Boom)


def test_deferred_receiver_error_on_a_failed_request_comes_with_the_requests_exception(
    anyio_backend: str, finished_receivers: None
) -> None:
    """The endpoint's exception stays the request's exception (for
    got_request_exception and the teardown); the receiver's error is raised
    with it, in an ExceptionGroup."""
    receiver_error = KeyError("receiver failed")
    got: list[BaseException] = []
    teardown: list[BaseException | None] = []

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise receiver_error

    def record_got(sender: Any, exception: BaseException) -> None:
        got.append(exception)

    def record_teardown(sender: Any, exc: BaseException | None) -> None:
        teardown.append(exc)

    app = flash_app(Route("/", failing_after_a_flash()))

    with (
        message_flashed.connected_to(fail),
        got_request_exception.connected_to(record_got, app),
        request_tearing_down.connected_to(record_teardown, app),
        pytest.raises(BaseExceptionGroup) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert [type(error) for error in got] == [Boom]
    assert [type(error) for error in teardown] == [Boom]
    assert [type(error) for error in raised.value.exceptions] == [Boom, KeyError]
    assert raised.value.exceptions[1] is receiver_error


@pytest.mark.anyio
async def test_deferred_receiver_runs_at_the_teardown_of_a_cancelled_request() -> None:
    flashed = anyio.Event()
    names: list[str] = []

    async def flash_and_wait(request: Request) -> Response:
        flash("hello")
        flashed.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing should be sent, not {message}")

    app = flash_app(Route("/", flash_and_wait))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
        "state": {},
    }

    with recording_lifecycle("async", names):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.__call__, scope, receive, send)
            await flashed.wait()
            tasks.cancel_scope.cancel()

    assert names == [
        "appcontext-pushed",
        "request-started",
        "message-flashed",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


# Where flash() cannot work


def test_flash_outside_a_request_raises(call: Callable[[], Any]) -> None:
    with pytest.raises(RuntimeError, match="outside a request"):
        call()


def test_flash_in_an_app_context_raises(call: Callable[[], Any]) -> None:
    app = flash_app()

    with app_context(app), pytest.raises(RuntimeError, match="outside a request"):
        call()


@pytest.mark.anyio
async def test_flash_in_an_async_app_context_raises(call: Callable[[], Any]) -> None:
    app = flash_app()

    async with app_context(app):
        with pytest.raises(RuntimeError, match="outside a request"):
            call()


def test_flash_in_the_lifespan_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    errors: list[Exception] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        attempt(errors, call)
        yield

    app = flash_app(lifespan=lifespan)

    with client(app, anyio_backend):
        pass

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "outside a request" in str(error)


def test_flash_without_the_middleware_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    errors: list[Exception] = []

    async def endpoint(request: Request) -> Response:
        attempt(errors, call)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(SessionMiddleware, secret_key="test")],
    )

    client(app, anyio_backend).get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "outside a request" in str(error)


def test_flash_without_session_middleware_raises(
    anyio_backend: str, endpoint_kind: str, call: Callable[[], Any]
) -> None:
    errors: list[Exception] = []

    def body(request: Request) -> Response:
        attempt(errors, call)
        return PlainTextResponse("ok")

    app = install(Starlette(routes=[Route("/", endpoint(endpoint_kind, body))]))

    client(app, anyio_backend).get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "SessionMiddleware" in str(error)


def test_flash_in_a_websocket_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            call()
        except RuntimeError as exc:
            await websocket.send_text(f"RuntimeError: {exc}")
        else:
            await websocket.send_text("no error")
        await websocket.close()

    app = flash_app(WebSocketRoute("/ws", socket))

    with client(app, anyio_backend).websocket_connect("/ws") as websocket:
        text = websocket.receive_text()

    assert text.startswith("RuntimeError: ")
    assert "websocket" in text


@pytest.mark.parametrize("form", ["install", "SignalMiddleware"])
@pytest.mark.parametrize("handled", [Exception, 500])
def test_a_message_flashed_in_a_server_error_handler_is_not_silently_lost(
    anyio_backend: str, handled: Any, form: str
) -> None:
    """Starlette runs the handlers of Exception and 500 in its error
    middleware, outside SessionMiddleware, which does not save the session
    for their response: flash() there fails instead of losing the message."""
    errors: list[Exception] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        attempt(errors, lambda: flash("Something went wrong."))
        return PlainTextResponse("handled", status_code=500)

    routes = (Route("/", fail),)
    handlers = {handled: handler}
    app: Any = (
        flash_app(*routes, exception_handlers=handlers)
        if form == "install"
        else SignalMiddleware(session_app(*routes, exception_handlers=handlers))
    )
    test_client = client(app, anyio_backend, raise_server_exceptions=False)

    response = test_client.get("/")

    assert response.text == "handled"
    shown = test_client.get("/read").json()
    assert [type(error) for error in errors] == [FlashError]
    assert isinstance(errors[0], RuntimeError)
    assert "unhandled exception" in str(errors[0])
    assert shown == []


# After the response started: the session was saved, so flash() must fail
# rather than lose the message.


@pytest.mark.parametrize("task_kind", ["async", "sync"])
def test_flash_in_a_background_task_raises(anyio_backend: str, task_kind: str) -> None:
    errors: list[Exception] = []

    def later() -> None:
        attempt(errors, lambda: flash("too late"))

    async def later_async() -> None:
        later()

    async def respond(request: Request) -> Response:
        task = BackgroundTask(later_async if task_kind == "async" else later)
        return PlainTextResponse("ok", background=task)

    app = flash_app(Route("/", respond))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


@pytest.mark.parametrize("when", ["before the first chunk", "after the first chunk"])
def test_flash_in_a_streaming_body_raises(anyio_backend: str, when: str) -> None:
    errors: list[Exception] = []

    async def chunks() -> AsyncIterator[bytes]:
        if when == "before the first chunk":
            attempt(errors, lambda: flash("too late"))
        yield b"one "
        if when == "after the first chunk":
            attempt(errors, lambda: flash("too late"))
        yield b"two"

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    app = flash_app(Route("/", stream))
    test_client = client(app, anyio_backend)

    response = test_client.get("/")

    assert response.text == "one two"
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


@pytest.mark.parametrize("signal", per_signal(request_finished, request_tearing_down))
def test_flash_in_a_receiver_after_the_response_started_raises(
    anyio_backend: str, receiver_kind: str, signal: NamedSignal
) -> None:
    errors: list[Exception] = []

    def flash_late(sender: Any, **kwargs: Any) -> None:
        attempt(errors, lambda: flash("too late"))

    app = flash_app(Route("/", flashing("async")))
    test_client = client(app, anyio_backend)

    with signal.connected_to(receiver_of(receiver_kind, flash_late), app):
        test_client.get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


def test_a_late_flash_sends_no_message_flashed(anyio_backend: str) -> None:
    async def later() -> None:
        attempt([], lambda: flash("too late"))

    async def respond(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = flash_app(Route("/", respond))

    with record_signals(message_flashed) as sent:
        client(app, anyio_backend).get("/")

    assert sent == []


def late_reader(seen: list[Any], errors: list[Exception], *, read_first: bool) -> Endpoint:
    """An endpoint whose background task calls get_flashed_messages(), after
    the response started; with ``read_first``, the endpoint read them before."""

    async def later() -> None:
        attempt(errors, lambda: seen.append(get_flashed_messages()))

    async def respond(request: Request) -> Response:
        if read_first:
            seen.append(get_flashed_messages())
        return PlainTextResponse("ok", background=BackgroundTask(later))

    return respond


def test_get_flashed_messages_after_the_response_started_raises_while_messages_wait(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(
        Route("/flash", flashing("async", ("waiting", "message"))),
        Route("/", late_reader(seen, errors, read_first=False)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == []
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == [["message", "waiting"]]


def test_get_flashed_messages_after_the_response_started_returns_those_read_before(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(
        Route("/flash", flashing("async", ("waiting", "message"))),
        Route("/", late_reader(seen, errors, read_first=True)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert errors == []
    assert seen == [["waiting"], ["waiting"]]
    assert test_client.get("/read").json() == []


def test_get_flashed_messages_after_the_response_started_returns_no_messages(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(Route("/", late_reader(seen, errors, read_first=False)))

    client(app, anyio_backend).get("/")

    assert errors == []
    assert seen == [[]]


# Cases review found: a cancelled request's teardown, handlers of server
# errors, request_started, mounted apps, typing, and malformed messages


@pytest.mark.anyio
async def test_flash_at_the_teardown_of_a_request_cancelled_before_responding_raises() -> None:
    """No response started, but the request ended: its session will never
    be saved, so the message would be lost."""
    started = anyio.Event()
    errors: list[Exception] = []
    stored: list[bool] = []

    async def wait(request: Request) -> Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    def flash_late(sender: Any, **kwargs: Any) -> None:
        attempt(errors, lambda: flash("too late"))
        stored.append("_flashes" in asignals.request.session)

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing should be sent, not {message}")

    app = flash_app(Route("/", wait))

    with request_tearing_down.connected_to(flash_late, app):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.__call__, http_scope(), receive, send)
            await started.wait()
            tasks.cancel_scope.cancel()

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert stored == [False]


@pytest.mark.parametrize("handled", [Exception, 500])
def test_get_flashed_messages_in_a_server_error_handler_leaves_them_for_the_next_page(
    anyio_backend: str, handled: Any
) -> None:
    """The handler runs outside SessionMiddleware, so taking the messages out
    of the session would not be saved: they would show twice."""
    seen: list[Any] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        seen.append(get_flashed_messages())
        return PlainTextResponse("handled", status_code=500)

    app = flash_app(
        Route("/flash", flashing("async", ("hello", "message"))),
        Route("/", fail),
        exception_handlers={handled: handler},
    )
    test_client = client(app, anyio_backend, raise_server_exceptions=False)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "handled"
    assert seen == [[]]
    assert test_client.get("/read").json() == [["message", "hello"]]
    assert test_client.get("/read").json() == []


def test_flash_in_a_request_started_receiver_raises_naming_request_started(
    anyio_backend: str,
) -> None:
    """request_started is sent before SessionMiddleware runs: the error says
    so, rather than only to add the SessionMiddleware the app has."""
    errors: list[Exception] = []

    def flash_early(sender: Any) -> None:
        attempt(errors, lambda: flash("welcome"))

    app = flash_app()

    with request_started.connected_to(flash_early, app):
        client(app, anyio_backend).get("/read")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "request_started" in str(error)


def test_flash_in_a_server_error_handler_of_a_mounted_app_within_the_session_is_kept(
    anyio_backend: str, finished_receivers: None
) -> None:
    """The mounted app has no SessionMiddleware of its own: its handlers for
    Exception run inside the outer app's, which saves the session."""
    errors: list[Exception] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        attempt(errors, lambda: flash("Something went wrong."))
        return PlainTextResponse("handled", status_code=500)

    mounted = Starlette(routes=[Route("/fail", fail)], exception_handlers={Exception: handler})
    app = flash_app(Mount("/mounted", mounted))
    test_client = client(app, anyio_backend, raise_server_exceptions=False)

    response = test_client.get("/mounted/fail")

    assert response.text == "handled"
    assert errors == []
    assert test_client.get("/read").json() == [["message", "Something went wrong."]]


def read_as(with_categories: bool) -> list[Any]:
    """get_flashed_messages() with a bool that is not a literal (mypy --strict
    checks this file)."""
    return get_flashed_messages(with_categories=with_categories)


@pytest.mark.parametrize("with_categories", [False, True])
def test_with_categories_may_be_a_bool_variable(anyio_backend: str, with_categories: bool) -> None:
    seen: list[Any] = []

    async def read(request: Request) -> Response:
        seen.append(read_as(with_categories))
        return PlainTextResponse("read")

    app = flash_app(Route("/flash", flashing("async", ("hello", "info"))), Route("/", read))
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == [[("info", "hello")] if with_categories else ["hello"]]


@pytest.mark.parametrize(
    "flashes",
    [pytest.param(42, id="int"), pytest.param("just a string", id="str")],
)
def test_malformed_flashes_stay_in_the_session_after_the_value_error(
    anyio_backend: str, call: Callable[[], Any], flashes: Any
) -> None:
    errors: list[Exception] = []
    kept: list[Any] = []

    async def spoil(request: Request) -> Response:
        request.session["_flashes"] = flashes
        return PlainTextResponse("ok")

    async def use(request: Request) -> Response:
        attempt(errors, call)
        kept.append(request.session.get("_flashes"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/spoil", spoil), Route("/", use))
    test_client = client(app, anyio_backend)
    test_client.get("/spoil")

    test_client.get("/")

    [error] = errors
    assert isinstance(error, ValueError)
    assert "_flashes" in str(error)
    assert kept == [flashes]

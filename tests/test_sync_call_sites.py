"""Sync code on the event loop that sends lifecycle signals inside a request.

``flash()`` and ``TemplateResponse()`` are sync, but async endpoints call them
on the event loop, where nothing can be awaited. ``RequestContext.send_from_sync``
calls the sync receivers at once (``Signal._send_now``) and leaves the others
pending; the middleware awaits them (``Signal._send_later``) before
``request_finished``, before ``got_request_exception``, at teardown, or before
``websocket_finished``. These tests drive that with the real call sites and,
where a bare signal shows it best, with ``send_from_sync`` itself.
"""

from __future__ import annotations

import contextvars
import copy
import gc
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import anyio
import anyio.lowlevel
import jinja2
import pytest
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
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import asignals
from asignals import (
    NamedSignal,
    Signal,
    SignalMiddleware,
    before_render_template,
    current_app,
    flash,
    g,
    got_request_exception,
    got_websocket_exception,
    install,
    message_flashed,
    request_finished,
    request_tearing_down,
    template_rendered,
    websocket_finished,
    websocket_tearing_down,
)
from asignals._context import RequestContext, current_request_context
from asignals.templating import Jinja2Templates
from asignals.testing import record_signals

# What happened, in order.


class Log(list[str]):
    """Names of what happened, in order, and the keyword arguments each
    lifecycle signal was sent with."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def one(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``name``'s only send."""
        (kwargs,) = self.sent[name]
        return kwargs


def noting(log: Log, name: str) -> Callable[..., None]:
    """A sync receiver that notes ``name`` when it is called."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.append(name)

    return receiver


def deferred(log: Log, name: str) -> Callable[..., Any]:
    """An async receiver that awaits, then notes ``name``."""

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(name)

    return receiver


def failing(log: Log, name: str, error: Exception) -> Callable[..., Any]:
    """An async receiver that awaits, notes ``name`` and raises ``error``."""

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(name)
        raise error

    receiver.__qualname__ = name  # so that log records name it
    return receiver


@contextmanager
def watching(log: Log, *signals: NamedSignal) -> Iterator[None]:
    """Note each send of the lifecycle ``signals`` (with sync receivers, so
    they add nothing pending) under the signal's name."""

    def watcher(name: str) -> Callable[..., None]:
        def receiver(sender: Any, **kwargs: Any) -> None:
            log.append(name)
            log.sent.setdefault(name, []).append(kwargs)

        return receiver

    with ExitStack() as stack:
        for signal in signals:
            stack.enter_context(signal.connected_to(watcher(signal.name)))
        yield


@pytest.fixture(params=[True, False], ids=["request_finished-watched", "unwatched"])
def finished_watched(request: pytest.FixtureRequest) -> bool:
    """Whether request_finished has a receiver. With one, install()'s hook
    sends got_request_exception before Starlette's 500 response; without, the
    hook steps aside and the 500 response goes out first."""
    return bool(request.param)


@contextmanager
def watching_errors(log: Log, finished_watched: bool) -> Iterator[None]:
    """Note got_request_exception, request_tearing_down and, if
    ``finished_watched``, request_finished."""
    signals = [got_request_exception, request_tearing_down]
    if finished_watched:
        signals.append(request_finished)
    with watching(log, *signals):
        yield


# Apps.


def send_from_sync(signal: Signal, **kwargs: Any) -> None:
    """What a sync call site does: send through the current request context."""
    ctx = current_request_context()
    assert ctx is not None
    ctx.send_from_sync(signal, kwargs)


def app_with(*routes: BaseRoute, receiver_errors: Any = "raise") -> Starlette:
    """A Starlette app with sessions (for flash()) and asignals installed."""
    app = Starlette(
        routes=list(routes), middleware=[Middleware(SessionMiddleware, secret_key="test")]
    )
    return install(app, receiver_errors=receiver_errors)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"page.html": "Hello {{ name }}"}), autoescape=True
    )
    return Jinja2Templates(env=env)


# Raw ASGI, for what a TestClient cannot show.

# 1. Signal._send_now and Signal._send_later, the two halves of a deferred send.


@pytest.mark.anyio
async def test_send_now_calls_sync_receivers_in_order_and_returns_the_others() -> None:
    log = Log()
    signal = Signal()
    first, awaited = noting(log, "first"), deferred(log, "awaited")
    threaded, last = noting(log, "threaded"), noting(log, "last")
    signal.connect(first, weak=False)
    signal.connect(awaited, weak=False)
    signal.connect(threaded, weak=False, to_thread=True)
    signal.connect(last, weak=False)

    failures, later = signal._send_now("sender", {})

    assert log == ["first", "last"]
    assert failures == []
    assert [handle[0]() for handle, _ in later] == [awaited, threaded]


@pytest.mark.anyio
async def test_send_now_raising_stops_at_a_sync_receivers_error_and_returns_it() -> None:
    """The caller raises it, after deferring the receivers connected before
    the failing one; those after it are neither called nor returned."""
    log = Log()
    signal = Signal()
    error = Boom("sync receiver")

    async def before(sender: Any) -> None:
        log.append("before")

    def broken(sender: Any) -> None:
        raise error

    async def later_async(sender: Any) -> None:
        log.append("later async")

    after = noting(log, "after")
    signal.connect(before, weak=False)
    signal.connect(broken, weak=False)
    signal.connect(after, weak=False)
    signal.connect(later_async, weak=False)

    failures, later = signal._send_now("sender", {}, raising=True)

    assert failures == [(broken, error)]
    assert [handle[0]() for handle, _ in later] == [before]
    assert log == []


@pytest.mark.anyio
async def test_send_now_collecting_returns_sync_receivers_errors_and_calls_the_rest() -> None:
    log = Log()
    signal = Signal()
    error = Boom("sync receiver")

    def broken(sender: Any) -> None:
        raise error

    after = noting(log, "after")
    signal.connect(broken, weak=False)
    signal.connect(after, weak=False)

    failures, later = signal._send_now("sender", {})

    assert failures == [(broken, error)]
    assert log == ["after"]
    assert later == []


@pytest.mark.anyio
async def test_send_later_awaits_the_left_receivers_in_order_with_the_sends_arguments() -> None:
    calls: list[tuple[str, Any, dict[str, Any], int]] = []
    signal = Signal()

    async def first(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("first", sender, kwargs, threading.get_ident()))

    def threaded(sender: Any, **kwargs: Any) -> None:
        calls.append(("threaded", sender, kwargs, threading.get_ident()))

    async def last(sender: Any, **kwargs: Any) -> None:
        calls.append(("last", sender, kwargs, threading.get_ident()))

    signal.connect(first, weak=False)
    signal.connect(threaded, weak=False, to_thread=True)
    signal.connect(last, weak=False)
    _, later = signal._send_now("sender", {"n": 1})
    assert calls == []

    failures = await signal._send_later(later, "sender", {"n": 1})

    loop_thread = threading.get_ident()
    assert failures == []
    assert [(name, sender, kwargs) for name, sender, kwargs, _ in calls] == [
        ("first", "sender", {"n": 1}),
        ("threaded", "sender", {"n": 1}),
        ("last", "sender", {"n": 1}),
    ]
    assert [thread == loop_thread for *_, thread in calls] == [True, False, True]


@pytest.mark.anyio
async def test_send_later_skips_a_receiver_disconnected_meanwhile() -> None:
    log = Log()
    signal = Signal()
    gone, kept = deferred(log, "gone"), deferred(log, "kept")
    signal.connect(gone, weak=False)
    signal.connect(kept, weak=False)
    _, later = signal._send_now("sender", {})

    signal.disconnect(gone)
    await signal._send_later(later, "sender", {})

    assert log == ["kept"]


@pytest.mark.anyio
async def test_send_later_raising_propagates_the_first_error_and_stops() -> None:
    log = Log()
    signal = Signal()
    error = Boom("first")
    signal.connect(failing(log, "broken", error), weak=False)
    signal.connect(deferred(log, "after"), weak=False)
    _, later = signal._send_now("sender", {})

    with pytest.raises(Boom) as raised:
        await signal._send_later(later, "sender", {}, raising=True)

    assert raised.value is error
    assert log == ["broken"]


@pytest.mark.anyio
async def test_send_later_collecting_runs_every_receiver_and_returns_the_errors() -> None:
    log = Log()
    signal = Signal()
    first_error, second_error = Boom("first"), ValueError("second")
    first = failing(log, "first", first_error)
    second = failing(log, "second", second_error)
    signal.connect(first, weak=False)
    signal.connect(deferred(log, "between"), weak=False)
    signal.connect(second, weak=False)
    _, later = signal._send_now("sender", {})

    failures = await signal._send_later(later, "sender", {})

    assert log == ["first", "between", "second"]
    assert failures == [(first, first_error), (second, second_error)]


# 2. On the event loop inside a request: sync receivers at once, the others
#    before request_finished.


def test_sync_receivers_run_inside_flash_and_async_ones_after_the_endpoint(
    anyio_backend: str,
) -> None:
    log = Log()

    async def endpoint(request: Request) -> Response:
        flash("saved")
        log.append("flash returned")
        return PlainTextResponse("ok")

    with (
        message_flashed.connected_to(noting(log, "sync 1")),
        message_flashed.connected_to(deferred(log, "async")),
        message_flashed.connected_to(noting(log, "sync 2")),
    ):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.status_code == 200
    assert log == ["sync 1", "sync 2", "flash returned", "async"]


def test_pending_receivers_run_before_request_finished_in_send_order(anyio_backend: str) -> None:
    log = Log()
    page = templates()
    flashed: list[str] = []

    async def on_flashed(sender: Any, message: str, category: str) -> None:
        await anyio.lowlevel.checkpoint()
        flashed.append(message)
        log.append(f"message_flashed {message}")

    async def endpoint(request: Request) -> Response:
        flash("one")
        flash("two")
        response = page.TemplateResponse(request, "page.html", {"name": "ada"})
        log.append("endpoint returned")
        return response

    with (
        message_flashed.connected_to(on_flashed),
        before_render_template.connected_to(deferred(log, "before_render_template")),
        template_rendered.connected_to(deferred(log, "template_rendered")),
        watching(log, request_finished, request_tearing_down),
    ):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.text == "Hello ada"
    assert log == [
        "endpoint returned",
        "message_flashed one",
        "message_flashed two",
        "before_render_template",
        "template_rendered",
        "request-finished",
        "request-tearing-down",
    ]


@pytest.mark.anyio
async def test_pending_receivers_run_before_the_response_goes_out() -> None:
    """Even with no request_finished receiver to send before."""
    custom = Signal()
    client_ = Client(HTTP_REQUEST)
    sent_before: list[list[Message]] = []

    async def look(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        sent_before.append(list(client_.sent))

    async def endpoint(request: Request) -> Response:
        send_from_sync(custom)
        return PlainTextResponse("ok")

    custom.connect(look, weak=False)
    app = install(Starlette(routes=[Route("/", endpoint)]))

    await app(http_scope(), client_.receive, client_.send)

    assert sent_before == [[]]
    assert [message["type"] for message in client_.sent] == [
        "http.response.start",
        "http.response.body",
    ]


def test_to_thread_receiver_is_left_pending_and_runs_in_a_worker_thread(
    anyio_backend: str,
) -> None:
    log = Log()
    threads: dict[str, int] = {}

    def blocking(sender: Any, **kwargs: Any) -> None:
        threads["receiver"] = threading.get_ident()
        log.append(f"to_thread receiver sees {asignals.request.url.path}")

    async def endpoint(request: Request) -> Response:
        threads["endpoint"] = threading.get_ident()
        flash("saved")
        log.append("flash returned")
        return PlainTextResponse("ok")

    message_flashed.connect(blocking, weak=False, to_thread=True)
    try:
        client(app_with(Route("/page", endpoint)), anyio_backend).get("/page")
    finally:
        message_flashed.disconnect(blocking)

    assert log == ["flash returned", "to_thread receiver sees /page"]
    assert threads["receiver"] != threads["endpoint"]


def test_pending_receiver_disconnected_by_the_endpoint_is_not_called(anyio_backend: str) -> None:
    log = Log()
    gone = deferred(log, "gone")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        message_flashed.disconnect(gone)
        return PlainTextResponse("ok")

    with (
        message_flashed.connected_to(gone),
        message_flashed.connected_to(deferred(log, "kept")),
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert log == ["kept"]


def test_pending_receivers_see_the_requests_request_g_and_current_app(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}
    custom = Signal()

    async def look(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen["sender"] = sender
        seen["app"] = current_app._get_current_object()
        seen["user"] = g.user
        seen["path"] = asignals.request.url.path

    async def endpoint(request: Request) -> Response:
        g.user = "ada"
        send_from_sync(custom)
        return PlainTextResponse("ok")

    custom.connect(look, weak=False)
    app = app_with(Route("/page", endpoint))

    client(app, anyio_backend).get("/page")

    assert seen == {"sender": app, "app": app, "user": "ada", "path": "/page"}


def test_send_from_async_runs_the_pending_receivers_first(anyio_backend: str) -> None:
    log = Log()
    page = templates()

    async def endpoint(request: Request) -> Response:
        flash("saved")
        log.append("flash returned")
        return await page.render_response(request, "page.html", {"name": "ada"})

    with (
        message_flashed.connected_to(deferred(log, "message_flashed")),
        before_render_template.connected_to(deferred(log, "before_render_template")),
        watching(log, request_finished),
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert log == [
        "flash returned",
        "message_flashed",
        "before_render_template",
        "request-finished",
    ]


def test_flush_in_the_endpoint_runs_the_pending_receivers_once(anyio_backend: str) -> None:
    log = Log()

    async def endpoint(request: Request) -> Response:
        flash("saved")
        ctx = current_request_context()
        assert ctx is not None
        await ctx.flush()
        log.append("flushed")
        return PlainTextResponse("ok")

    with (
        message_flashed.connected_to(deferred(log, "message_flashed")),
        watching(log, request_finished),
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert log == ["message_flashed", "flushed", "request-finished"]


def test_sync_receiver_error_propagates_out_of_flash_on_the_event_loop(anyio_backend: str) -> None:
    caught: list[BaseException] = []
    error = Boom("message_flashed receiver")

    def broken(sender: Any, **kwargs: Any) -> None:
        raise error

    async def endpoint(request: Request) -> Response:
        try:
            flash("saved")
        except Boom as exc:
            caught.append(exc)
        return PlainTextResponse("ok")

    with message_flashed.connected_to(broken):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.status_code == 200
    assert caught == [error]


def test_sync_receiver_error_is_logged_in_log_mode_and_the_send_goes_on(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()

    def broken_sync_receiver(sender: Any, **kwargs: Any) -> None:
        raise Boom("message_flashed receiver")

    async def endpoint(request: Request) -> Response:
        flash("saved")
        log.append("flash returned")
        return PlainTextResponse("ok")

    caplog.set_level(logging.ERROR, logger="asignals")
    app = app_with(Route("/", endpoint), receiver_errors="log")
    with (
        message_flashed.connected_to(broken_sync_receiver),
        message_flashed.connected_to(noting(log, "sync after")),
        message_flashed.connected_to(deferred(log, "async after")),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert log == ["sync after", "flash returned", "async after"]
    (record,) = [r for r in caplog.records if r.name == "asignals"]
    assert "broken_sync_receiver" in record.getMessage()


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


# 5. Sends made after the response started run at teardown.


def test_send_in_a_background_task_runs_at_teardown_before_request_tearing_down(
    anyio_backend: str,
) -> None:
    log = Log()
    custom = Signal()

    async def task() -> None:
        send_from_sync(custom)
        log.append("background task returned")

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(task))

    custom.connect(deferred(log, "pending"), weak=False)
    with watching(log, request_finished, request_tearing_down):
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert response.text == "ok"
    assert log == [
        "request-finished",
        "background task returned",
        "pending",
        "request-tearing-down",
    ]


def test_template_response_in_a_background_task_runs_its_async_receivers_at_teardown(
    anyio_backend: str,
) -> None:
    log = Log()
    page = templates()

    async def endpoint(request: Request) -> Response:
        async def task() -> None:
            page.TemplateResponse(request, "page.html", {"name": "later"})
            log.append("background task returned")

        return PlainTextResponse("ok", background=BackgroundTask(task))

    with (
        template_rendered.connected_to(deferred(log, "template_rendered")),
        watching(log, request_tearing_down),
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert log == ["background task returned", "template_rendered", "request-tearing-down"]


def test_error_of_a_send_made_after_the_response_is_raised_after_the_teardown(
    anyio_backend: str,
) -> None:
    log = Log()
    error = Boom("pending receiver")
    custom = Signal()

    async def task() -> None:
        send_from_sync(custom)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(task))

    custom.connect(failing(log, "broken", error), weak=False)
    with (
        watching(log, got_request_exception, request_tearing_down),
        pytest.raises(Boom) as raised,
    ):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert raised.value is error
    assert log == ["broken", "request-tearing-down"]
    assert log.one("request-tearing-down") == {"exc": None}


# 6. In a worker thread, and outside the middleware's request.


def test_in_a_worker_thread_async_receivers_run_inside_flash_on_the_event_loop(
    anyio_backend: str,
) -> None:
    log = Log()
    threads: dict[str, int] = {}
    left: list[Any] = []

    async def on_flashed(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        threads["receiver"] = threading.get_ident()
        log.append("message_flashed")

    def endpoint(request: Request) -> Response:
        threads["endpoint"] = threading.get_ident()
        flash("saved")
        log.append("flash returned")
        ctx = current_request_context()
        assert ctx is not None
        left.append(ctx.pending)
        return PlainTextResponse("ok")

    with message_flashed.connected_to(on_flashed), watching(log, request_finished):
        client(app_with(Route("/", endpoint)), anyio_backend).get("/")

    assert log == ["message_flashed", "flash returned", "request-finished"]
    assert threads["receiver"] != threads["endpoint"]
    assert left == [None]


def test_outside_the_middleware_async_receivers_fail_template_response_as_send_does(
    anyio_backend: str,
) -> None:
    page = templates()
    log = Log()

    async def endpoint(request: Request) -> Response:
        return page.TemplateResponse(request, "page.html", {"name": "ada"})

    app = Starlette(routes=[Route("/", endpoint)])  # no install()
    with (
        before_render_template.connected_to(deferred(log, "before_render_template")),
        pytest.raises(RuntimeError, match="send_async"),
    ):
        client(app, anyio_backend).get("/")

    assert log == []


def test_a_request_context_off_the_event_loop_sends_as_send_does() -> None:
    """A RequestContext that sync code uses with no event loop running (a
    script, a sync test) has no later to run async receivers in: send()'s
    RuntimeError, not a send left pending forever."""
    custom = Signal()
    log = Log()
    custom.connect(noting(log, "sync"), weak=False)
    custom.connect(deferred(log, "async"), weak=False)
    ctx = RequestContext("app", {"type": "http"}, None, None)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="send_async"):
        ctx.send_from_sync(custom, {})

    assert ctx.pending is None


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


# 8. Websockets.


@pytest.mark.anyio
async def test_pending_receivers_run_before_websocket_finished() -> None:
    log = Log()
    custom = Signal()

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        send_from_sync(custom)
        log.append("handler returned")
        await websocket.close()

    custom.connect(deferred(log, "pending"), weak=False)
    app = install(Starlette(routes=[WebSocketRoute("/ws", handler)]))
    client_ = Client(WS_CONNECT)
    with watching(log, websocket_finished, websocket_tearing_down):
        await app(websocket_scope(), client_.receive, client_.send)

    assert log == ["handler returned", "pending", "websocket-finished", "websocket-tearing-down"]


@pytest.mark.anyio
async def test_failing_websocket_runs_pending_receivers_before_got_websocket_exception() -> None:
    log = Log()
    custom = Signal()
    error = Boom("handler")

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        send_from_sync(custom)
        raise error

    custom.connect(deferred(log, "pending"), weak=False)
    app = install(Starlette(routes=[WebSocketRoute("/ws", handler)]))
    client_ = Client(WS_CONNECT)
    with (
        watching(log, got_websocket_exception, websocket_finished, websocket_tearing_down),
        pytest.raises(Boom),
    ):
        await app(websocket_scope(), client_.receive, client_.send)

    assert log == [
        "pending",
        "got-websocket-exception",
        "websocket-finished",
        "websocket-tearing-down",
    ]
    assert log.one("got-websocket-exception") == {"exception": error}


# 9. record_signals, late request_finished receivers, and no cost when unused.


def test_record_signals_records_each_deferred_send_once_when_it_is_made(
    anyio_backend: str,
) -> None:
    log = Log()
    recorded_at_flash: list[int] = []

    async def endpoint(request: Request) -> Response:
        flash("one")
        recorded_at_flash.append(len(sent))
        flash("two", "error")
        return PlainTextResponse("ok")

    app = app_with(Route("/", endpoint))
    with (
        record_signals(message_flashed) as sent,
        message_flashed.connected_to(deferred(log, "message_flashed")),
    ):
        client(app, anyio_backend).get("/")

    assert recorded_at_flash == [1]
    assert [(s.sender, s.kwargs) for s in sent] == [
        (app, {"message": "one", "category": "message"}),
        (app, {"message": "two", "category": "error"}),
    ]
    assert log == ["message_flashed", "message_flashed"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_request_finished_receiver_connected_by_the_endpoint_gets_that_requests_response(
    anyio_backend: str, kind: str
) -> None:
    responses: list[tuple[int, str]] = []

    def on_finished(sender: Any, response: asignals.ResponseHead) -> None:
        responses.append((response.status_code, response.headers["x-page"]))
        response.headers["x-seen"] = "yes"

    async def on_finished_async(sender: Any, response: asignals.ResponseHead) -> None:
        await anyio.lowlevel.checkpoint()
        on_finished(sender, response)

    receiver = on_finished if kind == "sync" else on_finished_async

    async def endpoint(request: Request) -> Response:
        request_finished.connect(receiver, weak=False)
        return PlainTextResponse("made", status_code=201, headers={"x-page": "1"})

    try:
        response = client(app_with(Route("/", endpoint)), anyio_backend).get("/")
    finally:
        request_finished.disconnect(receiver)

    assert responses == [(201, "1")]
    assert response.headers["x-seen"] == "yes"


class RawResponse:
    """An ASGI app that sends ``messages`` as they are, after a sync send of
    a signal nobody receives."""

    def __init__(self, messages: list[Message], unobserved: Signal) -> None:
        self.messages = messages
        self.unobserved = unobserved
        self.pending: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = current_request_context()
        assert ctx is not None
        ctx.send_from_sync(self.unobserved, {"n": 1})
        self.pending.append(ctx.pending)
        for message in self.messages:
            await send(message)


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["install", "wrap"])
async def test_no_pending_sends_and_no_receivers_pass_the_response_through_unchanged(
    form: str,
) -> None:
    messages: list[Message] = [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-page", b"1")],
        },
        {"type": "http.response.body", "body": b"hel", "more_body": True},
        {"type": "http.response.body", "body": b"lo", "more_body": False},
    ]
    expected = copy.deepcopy(messages)
    endpoint = RawResponse(messages, Signal())
    if form == "install":
        app: ASGIApp = install(Starlette(routes=[Route("/", endpoint)]))
    else:
        app = SignalMiddleware(endpoint)
    client_ = Client(HTTP_REQUEST)

    await app(http_scope(), client_.receive, client_.send)

    assert endpoint.pending == [None]
    assert client_.sent == expected
    assert all(sent is message for sent, message in zip(client_.sent, messages, strict=True))
    assert "trailers" not in client_.sent[0]


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

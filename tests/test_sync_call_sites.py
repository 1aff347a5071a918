"""Sync code on the event loop that sends lifecycle signals inside a request.

``flash()`` and ``TemplateResponse()`` are sync, but async endpoints call them
on the event loop, where nothing can be awaited. ``RequestContext.send_from_sync``
calls the sync receivers at once (``call_split`` in asignals._delivery) and
leaves the others pending; the middleware awaits them (``call_later``) before
``request_finished``, before ``got_request_exception``, at teardown, or before
``websocket_finished``. These tests drive that with the real call sites and,
where a bare signal shows it best, with ``send_from_sync`` itself.
Failures while receivers are pending are in test_sync_call_sites_failures.py.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from call_site_apps import Log, app_with, deferred, failing, send_from_sync, templates, watching
from helpers import Boom, client
from raw_asgi import HTTP_REQUEST, WS_CONNECT, Client, http_scope, websocket_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import asignals
from asignals import (
    Signal,
    SignalMiddleware,
    _deferred,
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
from asignals._delivery import COLLECT_NOW, RAISE_NOW, call_later, call_split
from asignals.testing import record_signals


def noting(log: Log, name: str) -> Callable[..., None]:
    """A sync receiver that notes ``name`` when it is called."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.append(name)

    return receiver


# Raw ASGI, for what a TestClient cannot show.

# 1. call_split and call_later, the two halves of a deferred send.


@pytest.mark.anyio
async def test_split_send_calls_sync_receivers_in_order_and_returns_the_others() -> None:
    log = Log()
    signal = Signal()
    first, awaited = noting(log, "first"), deferred(log, "awaited")
    threaded, last = noting(log, "threaded"), noting(log, "last")
    signal.connect(first, weak=False)
    signal.connect(awaited, weak=False)
    signal.connect(threaded, weak=False, to_thread=True)
    signal.connect(last, weak=False)

    failures, later = call_split(signal, "sender", {}, COLLECT_NOW)

    assert log == ["first", "last"]
    assert failures == []
    assert [handle[0]() for handle, _ in later.entries] == [awaited, threaded]


@pytest.mark.anyio
async def test_split_send_raising_stops_at_a_sync_receivers_error_and_returns_it() -> None:
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

    failures, later = call_split(signal, "sender", {}, RAISE_NOW)

    assert failures == [(broken, error)]
    assert [handle[0]() for handle, _ in later.entries] == [before]
    assert log == []


@pytest.mark.anyio
async def test_split_send_collecting_returns_sync_receivers_errors_and_calls_the_rest() -> None:
    log = Log()
    signal = Signal()
    error = Boom("sync receiver")

    def broken(sender: Any) -> None:
        raise error

    after = noting(log, "after")
    signal.connect(broken, weak=False)
    signal.connect(after, weak=False)

    failures, later = call_split(signal, "sender", {}, COLLECT_NOW)

    assert failures == [(broken, error)]
    assert log == ["after"]
    assert later is None


@pytest.mark.anyio
async def test_call_later_awaits_the_left_receivers_in_order_with_the_sends_arguments() -> None:
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
    _, later = call_split(signal, "sender", {"n": 1}, COLLECT_NOW)
    assert calls == []

    failures = await call_later(later, COLLECT_NOW)

    loop_thread = threading.get_ident()
    assert failures == []
    assert [(name, sender, kwargs) for name, sender, kwargs, _ in calls] == [
        ("first", "sender", {"n": 1}),
        ("threaded", "sender", {"n": 1}),
        ("last", "sender", {"n": 1}),
    ]
    assert [thread == loop_thread for *_, thread in calls] == [True, False, True]


@pytest.mark.anyio
async def test_call_later_skips_a_receiver_disconnected_meanwhile() -> None:
    log = Log()
    signal = Signal()
    gone, kept = deferred(log, "gone"), deferred(log, "kept")
    signal.connect(gone, weak=False)
    signal.connect(kept, weak=False)
    _, later = call_split(signal, "sender", {}, COLLECT_NOW)

    signal.disconnect(gone)
    await call_later(later, COLLECT_NOW)

    assert log == ["kept"]


@pytest.mark.anyio
async def test_call_later_raising_propagates_the_first_error_and_stops() -> None:
    log = Log()
    signal = Signal()
    error = Boom("first")
    signal.connect(failing(log, "broken", error), weak=False)
    signal.connect(deferred(log, "after"), weak=False)
    _, later = call_split(signal, "sender", {}, COLLECT_NOW)

    with pytest.raises(Boom) as raised:
        await call_later(later, RAISE_NOW)

    assert raised.value is error
    assert log == ["broken"]


@pytest.mark.anyio
async def test_call_later_collecting_runs_every_receiver_and_returns_the_errors() -> None:
    log = Log()
    signal = Signal()
    first_error, second_error = Boom("first"), ValueError("second")
    first = failing(log, "first", first_error)
    second = failing(log, "second", second_error)
    signal.connect(first, weak=False)
    signal.connect(deferred(log, "between"), weak=False)
    signal.connect(second, weak=False)
    _, later = call_split(signal, "sender", {}, COLLECT_NOW)

    failures = await call_later(later, COLLECT_NOW)

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
    """Even with no request_finished receiver to send before: an async
    receiver of a signal that sync code sends (here template_rendered) has
    the response watched."""
    client_ = Client(HTTP_REQUEST)
    sent_before: list[list[Message]] = []

    async def look(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        sent_before.append(list(client_.sent))

    async def endpoint(request: Request) -> Response:
        send_from_sync(template_rendered, template=None, context={})
        return PlainTextResponse("ok")

    app = install(Starlette(routes=[Route("/", endpoint)]))
    with template_rendered.connected_to(look):
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
        await _deferred.flush(ctx)
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
        _deferred.send_from_sync(ctx, custom, {})

    assert ctx.pending is None


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
        _deferred.send_from_sync(ctx, self.unobserved, {"n": 1})
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

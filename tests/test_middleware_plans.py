"""What the middleware works out once per app (which receivers each
lifecycle signal calls for it, whether the response is watched), and the
hook in the app's error middleware: receivers for another app cost an app
nothing, a request that nothing watches gets the client's own ``send``, and a
change of connections is seen by the next request, or by the teardown of the
request that made it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from asgi_apps import FORMS, build
from helpers import Boom, client
from raw_asgi import HTTP_REQUEST, Canceller, Client, call, http_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route
from starlette.types import Message, Receive, Scope, Send

import asignals
from asignals import (
    _deferred,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    got_request_exception,
    install,
    request_finished,
    request_started,
    request_tearing_down,
    template_rendered,
)
from asignals._context import current_request_context

HTTP_SIGNALS = [
    appcontext_pushed,
    request_started,
    request_finished,
    request_tearing_down,
    appcontext_tearing_down,
    appcontext_popped,
]


def counting(calls: list[str], name: str) -> Callable[..., None]:
    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(name)

    return receiver


def seen_send() -> tuple[Callable[..., Any], list[Send]]:
    """An app that notes the ``send`` it is given, and answers "ok"."""
    given: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        given.append(send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app, given


@pytest.mark.anyio
async def test_receivers_for_another_app_are_never_called() -> None:
    ours, other = Starlette(routes=[Route("/", ok)]), Starlette(routes=[Route("/", ok)])
    app, _ = install(ours), install(other)
    calls: list[str] = []
    with ExitStack() as stack:
        for signal in HTTP_SIGNALS:
            stack.enter_context(
                signal.connected_to(counting(calls, signal.name or ""), sender=other)
            )
        client_ = Client(HTTP_REQUEST)
        await call(app, http_scope(), client_)
        assert client_.body == b"ok"
        assert calls == []
        await call(other, http_scope(), Client(HTTP_REQUEST))
    assert calls == [signal.name for signal in HTTP_SIGNALS]


@pytest.mark.anyio
async def test_a_request_that_nothing_watches_gets_the_clients_own_send() -> None:
    """No receiver for the app, no session middleware: the response start is
    not watched, so the app is given the server's ``send`` itself."""
    inner, given = seen_send()
    middleware = asignals.SignalMiddleware(inner)
    middleware._sender = Starlette()  # as install() sets it: the app it sends for
    client_ = Client(HTTP_REQUEST)
    with request_finished.connected_to(counting([], "finished"), sender=Starlette()):
        await call(middleware, http_scope(), client_)
    assert given == [client_.send]
    assert client_.body == b"ok"


@pytest.mark.anyio
async def test_around_an_app_whose_sessions_cannot_be_told_the_response_is_watched() -> None:
    """Around an ASGI app that is not Starlette's, session middleware may be
    inside: a late flash() must fail, so the response start is watched."""
    inner, given = seen_send()
    client_ = Client(HTTP_REQUEST)
    await call(asignals.SignalMiddleware(inner), http_scope(), client_)
    assert given != [client_.send]
    assert client_.body == b"ok"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "watcher",
    ["request_finished", "async template_rendered", "sessions"],
)
async def test_the_response_is_watched_when_something_needs_it(watcher: str) -> None:
    inner, given = seen_send()
    sender = Starlette(
        middleware=[Middleware(SessionMiddleware, secret_key="k")] if watcher == "sessions" else []
    )
    middleware = asignals.SignalMiddleware(inner)
    middleware._sender = sender  # as install() sets it: the app it sends for

    async def rendered(sender: Any, **kwargs: Any) -> None:
        pass

    client_ = Client(HTTP_REQUEST)
    with ExitStack() as stack:
        if watcher == "request_finished":
            stack.enter_context(request_finished.connected_to(counting([], "f"), sender=sender))
        elif watcher == "async template_rendered":
            stack.enter_context(template_rendered.connected_to(rendered))
        await call(middleware, http_scope(), client_)
    assert given != [client_.send]
    assert client_.body == b"ok"


@pytest.mark.anyio
async def test_connections_made_since_the_last_request_are_seen() -> None:
    app = install(Starlette(routes=[Route("/", ok)]))
    calls: list[str] = []
    await call(app, http_scope(), Client(HTTP_REQUEST))
    with request_started.connected_to(counting(calls, "started"), sender=app):
        await call(app, http_scope(), Client(HTTP_REQUEST))
        assert calls == ["started"]
    await call(app, http_scope(), Client(HTTP_REQUEST))
    assert calls == ["started"]


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_a_teardown_receiver_connected_by_the_endpoint_runs_for_its_request(
    form: str,
) -> None:
    """The request started with nothing to do for its app; the teardown
    still reaches what the endpoint connected."""
    calls: list[str] = []
    receivers = {
        signal: counting(calls, signal.name or "")
        for signal in (request_tearing_down, appcontext_tearing_down, appcontext_popped)
    }

    async def connect(request: Request) -> Response:
        for signal, receiver in receivers.items():
            signal.connect(receiver)
        return PlainTextResponse("ok")

    app, _ = build(form, [Route("/", connect)])
    try:
        await call(app, http_scope(), Client(HTTP_REQUEST))
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    assert calls == ["request-tearing-down", "appcontext-tearing-down", "appcontext-popped"]


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["install", "wrap"])
async def test_got_request_exception_comes_before_the_500_with_nothing_on_request_finished(
    form: str,
) -> None:
    """The hooked error middleware sends it before it makes its response,
    whether or not the response is watched."""
    client_ = Client(HTTP_REQUEST)
    sent_before: list[list[Message]] = []

    def got(sender: Any, exception: BaseException) -> None:
        sent_before.append(list(client_.sent))

    app, _ = build(form, [Route("/", fail)])
    with got_request_exception.connected_to(got), pytest.raises(Boom):
        await call(app, http_scope(), client_)
    assert sent_before == [[]]
    assert client_.start["status"] == 500


@pytest.mark.anyio
@pytest.mark.parametrize("handler_kind", ["debug", "sync handler", "async handler", "none"])
async def test_the_hooked_error_middleware_answers_as_it_would_have(handler_kind: str) -> None:
    """Debug mode's traceback page, the app's own 500 handler (sync or
    async), or Starlette's plain 500, each after got_request_exception."""
    events: list[str] = []

    def sync_handler(request: Request, exc: Exception) -> Response:
        events.append("handler")
        return PlainTextResponse("handled", status_code=500)

    async def async_handler(request: Request, exc: Exception) -> Response:
        events.append("handler")
        return PlainTextResponse("handled", status_code=500)

    handlers: dict[Any, Any] = {}
    if handler_kind == "sync handler":
        handlers[500] = sync_handler
    elif handler_kind == "async handler":
        handlers[Exception] = async_handler
    app = install(
        Starlette(
            routes=[Route("/", fail)],
            debug=handler_kind == "debug",
            exception_handlers=handlers,
        )
    )
    client_ = Client(HTTP_REQUEST)
    with (
        got_request_exception.connected_to(counting(events, "got")),
        request_finished.connected_to(counting(events, "finished")),
        pytest.raises(Boom),
    ):
        await call(app, http_scope(), client_)
    assert client_.start["status"] == 500
    if handler_kind == "debug":
        assert events == ["got", "finished"]
        assert b"Boom" in client_.body
    elif handler_kind == "none":
        assert events == ["got", "finished"]
        assert client_.body == b"Internal Server Error"
    else:
        assert events == ["got", "handler", "finished"]
        assert client_.body == b"handled"


def test_a_mounted_app_with_sessions_has_the_response_watched(anyio_backend: str) -> None:
    """Sessions anywhere in the app (here a mounted app's) make a late
    flash() fail loudly rather than be lost: the response start is watched."""
    flashed_late: list[BaseException] = []

    async def late(request: Request) -> Response:
        async def send_then_flash(scope: Scope, receive: Receive, send: Send) -> None:
            await PlainTextResponse("ok")(scope, receive, send)
            try:
                asignals.flash("too late")
            except RuntimeError as exc:
                flashed_late.append(exc)

        return _Raw(send_then_flash)

    inner = Starlette(
        routes=[Route("/", late)], middleware=[Middleware(SessionMiddleware, secret_key="k")]
    )
    app = install(Starlette(routes=[Mount("/sub", app=inner)]))
    assert client(app, anyio_backend).get("/sub/").text == "ok"
    assert len(flashed_late) == 1


class _Raw(Response):
    """A response that is any ASGI app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def fail(request: Request) -> Response:
    raise Boom("endpoint failed")


# Sessions where the app's own middleware list does not show them.


def late_flash_app(where: str) -> tuple[Any, list[str]]:
    """An app whose endpoint's background task flashes after the response,
    with session middleware ``where``: what flash() did each time."""
    outcomes: list[str] = []

    def late() -> None:
        try:
            asignals.flash("late")
        except asignals.FlashError:
            outcomes.append("FlashError")
        else:
            outcomes.append("accepted")

    async def page(request: Request) -> Response:
        request.session["x"] = 1
        return PlainTextResponse("ok", background=BackgroundTask(late))

    sessions = [Middleware(SessionMiddleware, secret_key="k")]
    app: Any
    if where == "mount middleware":
        app = install(
            Starlette(routes=[Mount("/sub", routes=[Route("/", page)], middleware=sessions)])
        )
    elif where == "route middleware":
        app = install(Starlette(routes=[Route("/sub/", page, middleware=sessions)]))
    elif where == "parent app":
        sub = install(Starlette(routes=[Route("/", page)]))
        app = Starlette(routes=[Mount("/sub", app=sub)], middleware=sessions)
    else:  # a plain ASGI wrapper
        app = SessionMiddleware(
            install(Starlette(routes=[Mount("/sub", routes=[Route("/", page)])])), secret_key="k"
        )
    return app, outcomes


@pytest.mark.parametrize("where", ["mount middleware", "route middleware", "parent app", "wrapper"])
def test_a_late_flash_fails_wherever_the_session_middleware_is(
    anyio_backend: str, where: str
) -> None:
    app, outcomes = late_flash_app(where)
    assert client(app, anyio_backend).get("/sub/").text == "ok"
    assert outcomes == ["FlashError"]


# Connections changed by the request's own receivers.


@pytest.mark.anyio
async def test_request_started_follows_what_appcontext_pushed_receivers_changed() -> None:
    app = install(Starlette(routes=[Route("/", ok)]))
    other = Starlette()
    calls: list[str] = []
    started_a = counting(calls, "started_a")
    started_b = counting(calls, "started_b")

    def change(sender: Any) -> None:
        request_started.connect(started_a, sender=app)
        request_started.disconnect(started_b, sender=app)

    request_started.connect(started_b, sender=app)
    request_started.connect(started_b, sender=other)
    try:
        with appcontext_pushed.connected_to(change, sender=app):
            await call(app, http_scope(), Client(HTTP_REQUEST))
    finally:
        request_started.disconnect(started_a)
        request_started.disconnect(started_b)
    assert calls == ["started_a"]


@pytest.mark.anyio
async def test_sends_left_by_a_teardown_receiver_run_in_a_cancelled_request() -> None:
    """A sync teardown receiver leaves a send to await (an async receiver of
    template_rendered): it runs, shielded, though the request was cancelled,
    and the request's cancellation goes on."""
    canceller = Canceller()
    ran: list[str] = []

    async def endpoint(request: Request) -> Response:
        canceller.trigger.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    def tearing_down(sender: Any, exc: BaseException | None) -> None:
        ctx = current_request_context()
        assert ctx is not None
        _deferred.send_from_sync(ctx, template_rendered, {"template": None, "context": {}})

    async def rendered(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append("rendered")

    app = install(Starlette(routes=[Route("/", endpoint)]))
    with (
        request_tearing_down.connected_to(tearing_down),
        template_rendered.connected_to(rendered),
        anyio.fail_after(10),
    ):
        await canceller.call(app, http_scope(), Client(HTTP_REQUEST))
    assert canceller.cancelled.is_set()
    assert not canceller.app_returned
    assert ran == ["rendered"]


def test_installing_again_with_other_settings_after_wrapping_is_an_error() -> None:
    app = Starlette()
    asignals.SignalMiddleware(app)
    install(app)
    with pytest.raises(ValueError, match="already installed"):
        install(app, receiver_errors="log")


@pytest.mark.anyio
@pytest.mark.parametrize("routing", ["mount middleware", "host", "wrapper"])
async def test_apps_routed_through_wrappers_and_hosts_are_hooked(routing: str) -> None:
    """A sub-app's own error middleware makes its 500 after
    got_request_exception, however it is routed to."""
    events: list[str] = []
    sub = Starlette(routes=[Route("/", fail)])
    route: Any
    if routing == "mount middleware":
        route = Mount("/sub", app=sub, middleware=[Middleware(PassThrough)])
    elif routing == "host":
        route = Host("testserver", app=Starlette(routes=[Mount("/sub", app=sub)]))
    else:
        route = Mount("/sub", app=PassThrough(sub))
    app = install(Starlette(routes=[route]))
    client_ = Client(HTTP_REQUEST)
    with (
        got_request_exception.connected_to(counting(events, "got")),
        request_finished.connected_to(counting(events, "finished")),
        pytest.raises(Boom),
    ):
        await call(app, http_scope("/sub/"), client_)
    assert events == ["got", "finished"]
    assert client_.start["status"] == 500


class PassThrough:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

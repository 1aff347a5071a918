"""Signal.send_background() while the app's lifespan runs.

The response goes out first and the receivers run after it, on the task group
the lifespan owns; sends work from every place the middleware serves, in every
install form; receivers see the caller's context variables and app, in an app
context of their own (a new ``g``, the appcontext signals around them, no
request); they are dispatched as ``send_async`` would, each failure logged and
sent to ``got_background_exception``; options are checked at the call.
Shutdown, the limit and misuse are tested in test_background_shutdown.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI
from helpers import Boom, client
from raw_asgi import HTTP_REQUEST, SHUTDOWN, STARTUP, Client, call, http_scope, lifespan_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Scope
from starlette.websockets import WebSocket

import asignals
from asignals import (
    NamedSignal,
    Signal,
    SignalMiddleware,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    current_app,
    g,
    got_background_exception,
    install,
    request_finished,
    request_started,
    request_tearing_down,
)
from asignals.testing import Sent, record_signals

VAR: ContextVar[str] = ContextVar("VAR", default="unset")

# The ways an app gets the middleware.
FORMS = ["install", "wrap", "add_middleware", "fastapi"]


class Log(list[Any]):
    """What receivers did, in order. ``add`` from the event loop's thread;
    a test (or an endpoint) waits for entries with ``wait_for``."""

    def __init__(self) -> None:
        super().__init__()
        self._changed: anyio.Event | None = None

    def add(self, item: Any) -> None:
        self.append(item)
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self) < count:
                if self._changed is None or self._changed.is_set():
                    self._changed = anyio.Event()
                await self._changed.wait()


def name_of(fn: Callable[..., Any]) -> str:
    """How asignals names a receiver in messages."""
    return f"{fn.__module__}.{fn.__qualname__}"


def the_app() -> Any:
    return current_app._get_current_object()


def the_g() -> Any:
    return g._get_current_object()


def request_is_unavailable() -> bool:
    try:
        _ = asignals.request.scope
    except RuntimeError:
        return True
    return False


async def gate(event: anyio.Event) -> None:
    """Wait for a test to set ``event``, for a bounded time: a receiver held
    there never hangs the test (even one whose caller waits in a thread)."""
    with anyio.move_on_after(5):
        await event.wait()


def build(
    form: str = "install",
    endpoint: Callable[..., Any] | None = None,
    *,
    websocket: Callable[..., Any] | None = None,
    lifespan: Callable[[Any], Any] | None = None,
) -> tuple[ASGIApp, Starlette]:
    """An app serving ``endpoint`` at ``/`` and ``websocket`` at ``/ws``,
    with the middleware the ``form`` way: the ASGI callable to serve, and the
    app (the sender of the lifecycle signals)."""
    if form == "fastapi":
        api = FastAPI(lifespan=lifespan)
        if endpoint is not None:
            api.add_api_route("/", endpoint)
        if websocket is not None:
            api.add_api_websocket_route("/ws", websocket)
        return install(api), api
    routes: list[Any] = []
    if endpoint is not None:
        routes.append(Route("/", endpoint))
    if websocket is not None:
        routes.append(WebSocketRoute("/ws", websocket))
    app = Starlette(routes=routes, lifespan=lifespan)
    if form == "install":
        return install(app), app
    if form == "wrap":
        return SignalMiddleware(app), app
    app.add_middleware(SignalMiddleware)
    return app, app


def sending(send: Callable[[], object]) -> tuple[ASGIApp, Starlette]:
    """An installed app whose async endpoint at ``/`` calls ``send()``."""

    async def endpoint(request: Request) -> Response:
        send()
        return PlainTextResponse("sent")

    return build("install", endpoint)


class Server:
    """The server's side of a lifespan run by :func:`serving`: it makes
    requests with a copy of the lifespan's state in their scope, as servers
    do (which is how a request finds its lifespan)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    def scope(self, query: bytes = b"", path: str = "/") -> Scope:
        scope = http_scope(path, query=query)
        scope["state"] = dict(self.state)
        return scope

    async def get(self, query: bytes = b"", path: str = "/") -> Client:
        client = Client(HTTP_REQUEST)
        with anyio.fail_after(5):
            await call(self.app, self.scope(query, path), client)
        return client


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[Server]:
    """Run ``app``'s lifespan by hand around the block: startup before it,
    shutdown (which waits for the background sends) after it."""
    sent: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
    to_app, from_server = anyio.create_memory_object_stream[Message](2)
    scope = lifespan_scope()

    async def send(message: Message) -> None:
        sent[message["type"]].set()

    async def run_lifespan() -> None:
        await app(scope, from_server.receive, send)

    with to_app, from_server:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_lifespan)
            try:
                await to_app.send(STARTUP)
                with anyio.fail_after(5):
                    await sent["lifespan.startup.complete"].wait()
                yield Server(app, scope["state"])
                await to_app.send(SHUTDOWN)
                with anyio.fail_after(5):
                    await sent["lifespan.shutdown.complete"].wait()
            except BaseException:
                tasks.cancel_scope.cancel()
                raise


def asignals_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asignals" and r.levelno >= logging.ERROR]


def record_of(caplog: pytest.LogCaptureFixture, error: BaseException) -> logging.LogRecord:
    """The only ERROR record of logger asignals whose exc_info is ``error``."""
    (record,) = [r for r in asignals_errors(caplog) if r.exc_info and r.exc_info[1] is error]
    return record


@contextmanager
def reporting(log: Log, app: Any, kind: str = "sync") -> Iterator[None]:
    """Record got_background_exception sends by ``app``: (sender, kwargs,
    current_app) each."""

    def report(sender: Any, **kwargs: Any) -> None:
        log.add((sender, kwargs, the_app()))

    async def report_async(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        report(sender, **kwargs)

    with got_background_exception.connected_to(report if kind == "sync" else report_async, app):
        yield


# The response goes out first; the receivers run to the end after it.


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_the_response_goes_out_before_the_receiver_finishes(form: str) -> None:
    work = NamedSignal("work")
    release = anyio.Event()
    log = Log()

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.add(("started", sender, kwargs, the_app()))
        await gate(release)
        log.add("finished")

    work.connect(slow)

    async def endpoint(request: Request) -> Response:
        work.send_background("job", n=1)
        return PlainTextResponse("sent")

    asgi, app = build(form, endpoint)
    async with serving(asgi) as server:
        client = await server.get()
        assert client.start["status"] == 200
        assert client.body == b"sent"
        await log.wait_for(1)
        assert log == [("started", "job", {"n": 1}, app)]
        release.set()
        await log.wait_for(2)
    assert log[1:] == ["finished"]


@pytest.mark.parametrize("form", FORMS)
def test_the_work_is_done_when_the_test_clients_with_exits(anyio_backend: str, form: str) -> None:
    work = NamedSignal("work")
    gates: list[anyio.Event] = []
    log: list[str] = []

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.append("started")
        await gate(gates[0])
        await anyio.lowlevel.checkpoint()
        log.append("finished")

    work.connect(slow)

    async def endpoint(request: Request) -> Response:
        work.send_background("job")
        return PlainTextResponse("sent")

    asgi, _ = build(form, endpoint)
    with client(asgi, anyio_backend) as test_client:
        portal = test_client.portal
        assert portal is not None
        gates.append(portal.call(anyio.Event))
        response = test_client.get("/")
        assert response.status_code == 200
        assert response.text == "sent"
        assert "finished" not in log
        portal.call(gates[0].set)
    assert log == ["started", "finished"]


# Where a send can be made from.


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_a_sync_endpoint_sends_from_its_worker_thread(form: str) -> None:
    work = NamedSignal("work")
    release = anyio.Event()
    log = Log()
    endpoint_threads: list[int] = []

    def sync_receiver(sender: Any, **kwargs: Any) -> None:
        log.add(("sync", threading.get_ident()))

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.add((sender, kwargs, the_app(), threading.get_ident()))
        await gate(release)
        log.add("finished")

    work.connect(sync_receiver)
    work.connect(slow)

    def endpoint(request: Request) -> Response:
        endpoint_threads.append(threading.get_ident())
        work.send_background("job", n=2)
        return PlainTextResponse("sent")

    asgi, app = build(form, endpoint)
    loop_thread = threading.get_ident()
    async with serving(asgi) as server:
        client = await server.get()
        assert client.body == b"sent"
        await log.wait_for(2)
        assert "finished" not in log
        release.set()
        await log.wait_for(3)
    assert endpoint_threads != [loop_thread]
    # Sync receivers run on the event loop too.
    assert log == [("sync", loop_thread), ("job", {"n": 2}, app, loop_thread), "finished"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "lifecycle_signal",
    [request_started, request_finished, request_tearing_down],
    ids=["started", "finished", "tearing_down"],
)
async def test_a_lifecycle_receiver_sends_in_the_background(
    lifecycle_signal: Signal, kind: str
) -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add((sender, kwargs, the_app())), weak=False)

    def send(sender: Any, **kwargs: Any) -> None:
        work.send_background(sender, via="lifecycle")

    async def send_async(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        send(sender)

    asgi, app = sending(lambda: None)
    with lifecycle_signal.connected_to(send if kind == "sync" else send_async, app):
        async with serving(asgi) as server:
            client = await server.get()
            assert client.body == b"sent"
            await log.wait_for(1)
    assert log == [(app, {"via": "lifecycle"}, app)]


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_the_lifespans_startup_code_sends_in_the_background(form: str) -> None:
    work = NamedSignal("work")
    log = Log()

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add((sender, kwargs, the_app(), g.get("phase"), VAR.get(), request_is_unavailable()))

    work.connect(receiver)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        g.phase = "startup"
        token = VAR.set("lifespan")
        work.send_background(app, at="startup")
        VAR.reset(token)
        yield

    asgi, app = build(form, lifespan=lifespan)
    async with serving(asgi):
        await log.wait_for(1)
    # The receivers have a g of their own, not the lifespan's.
    assert log == [(app, {"at": "startup"}, app, None, "lifespan", True)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_appcontext_pushed_receiver_of_the_lifespan_sends_in_the_background(
    kind: str,
) -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add((sender, the_app())), weak=False)
    pushes: list[object] = []

    def send(sender: Any, **kwargs: Any) -> None:
        # Once: the lifespan's push. (The send's own app context is pushed
        # with appcontext_pushed too.)
        pushes.append(sender)
        if len(pushes) == 1:
            work.send_background(sender)

    async def send_async(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        send(sender)

    asgi, app = build("install")
    with appcontext_pushed.connected_to(send if kind == "sync" else send_async, app):
        async with serving(asgi):
            await log.wait_for(1)
    assert log == [(app, app)]
    assert pushes == [app, app]


@pytest.mark.parametrize("form", FORMS)
def test_a_websocket_handler_sends_in_the_background(anyio_backend: str, form: str) -> None:
    work = NamedSignal("work")
    log: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.append((sender, kwargs, the_app(), request_is_unavailable()))

    work.connect(receiver)

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        work.send_background("ws", path=websocket.url.path)
        await websocket.send_text("sent")
        await websocket.close()

    asgi, app = build(form, websocket=handler)
    with (
        client(asgi, anyio_backend) as test_client,
        test_client.websocket_connect("/ws") as session,
    ):
        assert session.receive_text() == "sent"
    assert log == [("ws", {"path": "/ws"}, app, True)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async", "to_thread"])
async def test_a_background_receiver_sends_in_the_background(kind: str) -> None:
    first = NamedSignal("first")
    then = NamedSignal("then")
    log = Log()
    done: list[str] = []  # appended to from a worker thread too
    gs: list[Any] = []

    def start(sender: Any, **kwargs: Any) -> None:
        VAR.set("first receiver")
        gs.append(the_g())
        done.append("first")
        then.send_background(sender, step=2)

    async def start_async(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        start(sender)

    def follow(sender: Any, **kwargs: Any) -> None:
        gs.append(the_g())
        log.add((sender, kwargs, VAR.get(), the_app(), request_is_unavailable()))

    first.connect(start_async if kind == "async" else start, to_thread=kind == "to_thread")
    then.connect(follow)

    def send() -> None:
        gs.append(the_g())
        first.send_background("job", step=1)

    asgi, app = sending(send)
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(1)
    assert done == ["first"]
    assert log == [("job", {"step": 2}, "first receiver", app, True)]
    # The request, the first send and the second each have a g of their own.
    assert len({id(each) for each in gs}) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["streaming body", "background task"])
async def test_code_that_runs_after_the_response_started_sends_in_the_background(
    where: str,
) -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add((sender, the_app())), weak=False)

    def send() -> None:
        work.send_background(where)

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        send()
        yield b"b"

    async def endpoint(request: Request) -> Response:
        if where == "streaming body":
            return StreamingResponse(body())
        return PlainTextResponse("ab", background=BackgroundTask(send))

    asgi, app = build("install", endpoint)
    async with serving(asgi) as server:
        client = await server.get()
        assert client.body == b"ab"
        await log.wait_for(1)
    assert log == [(where, app)]


@pytest.mark.anyio
async def test_a_mounted_app_sends_with_the_outer_app_current() -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add(the_app()), weak=False)

    async def endpoint(request: Request) -> Response:
        work.send_background("job")
        return PlainTextResponse("sent")

    inner = Starlette(routes=[Route("/", endpoint)])
    app = install(Starlette(routes=[Mount("/inner", app=inner)]))
    async with serving(app) as server:
        client = await server.get(path="/inner/")
        assert client.body == b"sent"
        await log.wait_for(1)
    assert log == [app]


@pytest.mark.anyio
async def test_a_to_thread_receiver_runs_in_a_worker_thread_with_the_callers_context() -> None:
    work = NamedSignal("work")
    log = Log()
    seen: list[Any] = []

    def blocking(sender: Any, **kwargs: Any) -> None:
        seen.append((threading.get_ident(), VAR.get(), the_app()))

    work.connect(blocking, to_thread=True)
    work.connect(lambda sender, **kwargs: log.add("after"), weak=False)

    def send() -> None:
        VAR.set("endpoint")
        work.send_background("job")

    asgi, app = sending(send)
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(1)
    ((thread, var, current),) = seen
    assert thread != threading.get_ident()
    assert (var, current) == ("endpoint", app)


@pytest.mark.anyio
async def test_sends_run_independently_of_each_other() -> None:
    work = NamedSignal("work")
    release = anyio.Event()
    log = Log()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        log.add(("begins", sender))
        if sender == "slow":
            await gate(release)
        log.add(("ends", sender))

    work.connect(receiver)

    def send() -> None:
        work.send_background("slow")
        work.send_background()  # the sender defaults to None

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(3)
        # The second send ended while the first one waits.
        assert sorted(log, key=repr) == sorted(
            [("begins", "slow"), ("begins", None), ("ends", None)], key=repr
        )
        release.set()
        await log.wait_for(4)
    assert log[3] == ("ends", "slow")


@pytest.mark.anyio
async def test_a_got_background_exception_receiver_sends_in_the_background() -> None:
    work = NamedSignal("work")
    alert = NamedSignal("alert")
    boom = Boom()
    log = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    async def report(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        alert.send_background(sender, exception=exception)

    work.connect(fails)
    alert.connect(lambda sender, **kwargs: log.add((sender, kwargs, the_app())), weak=False)
    asgi, app = sending(lambda: work.send_background("job"))
    with got_background_exception.connected_to(report, app):
        async with serving(asgi) as server:
            await server.get()
            await log.wait_for(1)
    assert log == [(app, {"exception": boom}, app)]


# The caller's context.


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint_kind", ["async", "sync"])
async def test_receivers_see_the_context_of_the_call(endpoint_kind: str) -> None:
    work = NamedSignal("work")
    log = Log()
    request_g: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add((VAR.get(), the_app(), the_g(), dict(g.__dict__), request_is_unavailable()))

    work.connect(receiver)

    def set_user(sender: Any, **kwargs: Any) -> None:
        g.user = "ann"

    def send() -> None:
        VAR.set("at the call")
        request_g.append(the_g())
        work.send_background("job")
        VAR.set("after the call")

    async def async_endpoint(request: Request) -> Response:
        send()
        return PlainTextResponse("sent")

    def sync_endpoint(request: Request) -> Response:
        send()
        return PlainTextResponse("sent")

    asgi, app = build("install", async_endpoint if endpoint_kind == "async" else sync_endpoint)
    with request_started.connected_to(set_user, app):
        async with serving(asgi) as server:
            await server.get()
            await log.wait_for(1)
    ((var, current, receivers_g, contents, no_request),) = log
    assert (var, current, no_request) == ("at the call", app, True)
    # A g of their own, empty: not the request's, where "user" was put.
    assert receivers_g is not request_g[0]
    assert request_g[0].user == "ann"
    assert contents == {}


@pytest.mark.anyio
async def test_each_send_has_a_g_of_its_own_that_its_receivers_share() -> None:
    work = NamedSignal("work")
    log = Log()
    gs: list[Any] = []  # kept, so that no two can have the same id

    def first(sender: Any, **kwargs: Any) -> None:
        gs.append(the_g())
        g.n = kwargs["n"]

    async def second(sender: Any, **kwargs: Any) -> None:
        log.add((kwargs["n"], g.n, the_g() is gs[-1]))

    work.connect(first)
    work.connect(second)

    def send() -> None:
        g.n = 0
        gs.append(the_g())
        work.send_background("job", n=1)
        work.send_background("job", n=2)

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(2)
    assert sorted(log) == [(1, 1, True), (2, 2, True)]
    assert len({id(each) for each in gs}) == 3


@pytest.mark.anyio
async def test_the_appcontext_signals_are_sent_around_the_receivers() -> None:
    work = NamedSignal("work")
    log = Log()

    def recorder(name: str) -> Callable[..., None]:
        def record(sender: Any, **kwargs: Any) -> None:
            if VAR.get() == "sent":  # the send's app context, not the request's
                log.add((name, sender, kwargs, g.get("resource") if name != "popped" else None))

        return record

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add(("receiver", sender, kwargs, g.get("resource")))
        g.resource = "opened"

    work.connect(receiver)

    def send() -> None:
        token = VAR.set("sent")
        work.send_background("job")
        VAR.reset(token)

    asgi, app = sending(send)
    with (
        appcontext_pushed.connected_to(recorder("pushed"), app),
        appcontext_tearing_down.connected_to(recorder("tearing_down"), app),
        appcontext_popped.connected_to(recorder("popped"), app),
    ):
        async with serving(asgi) as server:
            await server.get()
            await log.wait_for(4)
    assert log == [
        ("pushed", app, {}, None),
        ("receiver", "job", {}, None),
        # What a receiver opened in g is there to be closed.
        ("tearing_down", app, {"exc": None}, "opened"),
        ("popped", app, {}, None),
    ]


@pytest.mark.anyio
async def test_the_request_raises_in_a_receiver_saying_why() -> None:
    work = NamedSignal("work")
    errors: list[BaseException] = []
    log = Log()

    def receiver(sender: Any, **kwargs: Any) -> None:
        try:
            _ = asignals.request.url
        except RuntimeError as exc:
            errors.append(exc)
        log.add("done")

    work.connect(receiver)
    asgi, _ = sending(lambda: work.send_background("job"))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(1)
    (error,) = errors
    assert "Working outside of a request" in str(error)
    assert "background send" in str(error)


@pytest.mark.anyio
async def test_a_receiver_does_not_change_the_requests_context_variables() -> None:
    work = NamedSignal("work")
    changed = anyio.Event()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        VAR.set("receiver")
        g.note = "from the receiver"  # in the send's own g
        changed.set()

    work.connect(receiver)

    async def endpoint(request: Request) -> Response:
        VAR.set("endpoint")
        work.send_background("job")
        with anyio.fail_after(5):
            await changed.wait()
        return PlainTextResponse(f"{VAR.get()} / {g.get('note')}")

    asgi, _ = build("install", endpoint)
    async with serving(asgi) as server:
        client = await server.get()
    assert client.body == b"endpoint / None"


@pytest.mark.anyio
async def test_sends_from_concurrent_requests_keep_their_own_context() -> None:
    work = NamedSignal("work")
    log = Log()
    sent = Log()

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add((kwargs["user"], VAR.get()))

    work.connect(receiver)

    async def endpoint(request: Request) -> Response:
        user = request.query_params["user"]
        VAR.set(user)
        work.send_background("job", user=user)
        sent.add(user)
        await sent.wait_for(2)  # both requests are in flight
        return PlainTextResponse(user)

    asgi, _ = build("install", endpoint)
    async with serving(asgi) as server:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.get, b"user=ann")
            tasks.start_soon(server.get, b"user=bob")
        await log.wait_for(2)
    assert sorted(log) == [("ann", "ann"), ("bob", "bob")]


# Dispatch: as send_async.


def concurrent_signal(how: str) -> tuple[NamedSignal, dict[str, Any]]:
    """A signal sent concurrently the ``how`` way: it and the send's options."""
    if how == "option":
        return NamedSignal("work"), {"_concurrent": True}
    return NamedSignal("work", concurrent=True), {}


@pytest.mark.anyio
async def test_receivers_run_one_after_another_in_connection_order() -> None:
    work = NamedSignal("work")
    log = Log()

    async def first(sender: Any, **kwargs: Any) -> None:
        log.add("first begins")
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        log.add("first ends")

    def second(sender: Any, **kwargs: Any) -> None:
        log.add("second")

    async def third(sender: Any, **kwargs: Any) -> None:
        log.add("third")

    for receiver in (first, second, third):
        work.connect(receiver)
    asgi, _ = sending(lambda: work.send_background("job"))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log == ["first begins", "first ends", "second", "third"]


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["option", "signal"])
async def test_a_concurrent_send_runs_async_receivers_together(how: str) -> None:
    work, options = concurrent_signal(how)
    first_waits, second_waits = anyio.Event(), anyio.Event()
    log = Log()

    # Each waits for the other to have begun: only concurrent dispatch ends.
    async def first(sender: Any, **kwargs: Any) -> None:
        first_waits.set()
        await second_waits.wait()
        log.add("first")

    async def second(sender: Any, **kwargs: Any) -> None:
        second_waits.set()
        await first_waits.wait()
        log.add("second")

    work.connect(first)
    work.connect(second)
    asgi, _ = sending(lambda: work.send_background("job", **options))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(2)
    assert sorted(log) == ["first", "second"]


def mixed_receivers(work: Signal, log: Log) -> list[Callable[..., Any]]:
    """Async and sync receivers, alternating, connected to ``work``."""

    async def async_1(sender: Any, **kwargs: Any) -> None:
        log.add("async 1")

    def sync_1(sender: Any, **kwargs: Any) -> None:
        log.add("sync 1")

    async def async_2(sender: Any, **kwargs: Any) -> None:
        log.add("async 2")

    def sync_2(sender: Any, **kwargs: Any) -> None:
        log.add("sync 2")

    receivers: list[Callable[..., Any]] = [async_1, sync_1, async_2, sync_2]
    for receiver in receivers:
        work.connect(receiver)
    return receivers


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["option", "signal"])
async def test_a_concurrent_send_runs_sync_receivers_before_async_ones_begin(how: str) -> None:
    work, options = concurrent_signal(how)
    log = Log()
    receivers = mixed_receivers(work, log)
    asgi, _ = sending(lambda: work.send_background("job", **options))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log[:2] == ["sync 1", "sync 2"]
    assert sorted(log[2:]) == ["async 1", "async 2"]
    assert receivers  # kept alive


@pytest.mark.anyio
async def test_concurrent_false_sends_a_concurrent_signal_in_order() -> None:
    work = NamedSignal("work", concurrent=True)
    log = Log()
    receivers = mixed_receivers(work, log)
    asgi, _ = sending(lambda: work.send_background("job", _concurrent=False))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log == ["async 1", "sync 1", "async 2", "sync 2"]
    assert receivers


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_timeout_cancels_the_send_and_reports_what_it_cut_short(
    concurrent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    def quick(sender: Any, **kwargs: Any) -> None:
        log.add("quick")

    async def stuck(sender: Any, **kwargs: Any) -> None:
        log.add("stuck begins")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.add("stuck cancelled")
            raise

    async def stuck_too(sender: Any, **kwargs: Any) -> None:
        log.add("stuck_too begins")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.add("stuck_too cancelled")
            raise

    for receiver in (quick, stuck, stuck_too):
        work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05, _concurrent=concurrent))
    with reporting(reports, app):
        async with serving(asgi) as server:
            client = await server.get()
            assert client.body == b"sent"
            await reports.wait_for(1)
    ((sender, kwargs, current),) = reports
    assert (sender, current) == (app, app)
    error = kwargs["exception"]
    assert isinstance(error, TimeoutError)
    message = str(error)
    assert "'work'" in message
    assert name_of(quick) not in message
    assert name_of(stuck) in message
    if concurrent:
        assert log[0] == "quick"
        assert sorted(log[1:]) == [
            "stuck begins",
            "stuck cancelled",
            "stuck_too begins",
            "stuck_too cancelled",
        ]
        assert name_of(stuck_too) in message
        assert "not called" not in message
    else:
        assert log == ["quick", "stuck begins", "stuck cancelled"]
        running, not_called = message.split("not called:")
        assert name_of(stuck) in running
        assert name_of(stuck_too) not in running
        assert name_of(stuck_too) in not_called
    record = record_of(caplog, error)
    assert "'work'" in record.getMessage()
    assert [r.exc_info[1] for r in asignals_errors(caplog) if r.exc_info] == [error]


@pytest.mark.anyio
async def test_a_failure_before_the_timeout_is_reported_and_the_timeout_names_only_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    work.connect(fails)
    work.connect(stuck)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(2)
    first, timeout = (kwargs["exception"] for _, kwargs, _ in reports)
    assert first is boom
    assert isinstance(timeout, TimeoutError)
    assert name_of(stuck) in str(timeout)
    assert name_of(fails) not in str(timeout)
    assert [r.exc_info[1] for r in asignals_errors(caplog) if r.exc_info] == [boom, timeout]


@pytest.mark.anyio
async def test_a_send_that_ends_within_its_timeout_reports_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.add(kwargs)

    work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", n=1, _timeout=5))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await log.wait_for(1)
    assert log == [{"n": 1}]
    assert reports == []
    assert asignals_errors(caplog) == []


# Failures.


@pytest.mark.anyio
@pytest.mark.parametrize("reporter_kind", ["sync", "async"])
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_each_failing_receiver_is_logged_and_reported_and_the_others_run(
    concurrent: bool, reporter_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    first, second = Boom("first"), Boom("second")
    ran = Log()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        ran.add("fails")
        raise first

    async def runs(sender: Any, **kwargs: Any) -> None:
        ran.add("runs")

    async def fails_too(sender: Any, **kwargs: Any) -> None:
        ran.add("fails_too")
        raise second

    def runs_too(sender: Any, **kwargs: Any) -> None:
        ran.add("runs_too")

    ran_at_report: list[int] = []

    def count_ran(sender: Any, **kwargs: Any) -> None:
        ran_at_report.append(len(ran))

    for receiver in (fails, runs, fails_too, runs_too):
        work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", _concurrent=concurrent))
    with (
        reporting(reports, app, reporter_kind),
        got_background_exception.connected_to(count_ran, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
            await ran.wait_for(4)
            await reports.wait_for(2)
            # The app goes on serving.
            assert (await server.get()).body == b"sent"
            await reports.wait_for(4)
    assert client.start["status"] == 200
    if concurrent:
        assert ran[:2] == ["fails", "runs_too"]  # the sync ones, inline
        assert sorted(ran[2:4]) == ["fails_too", "runs"]
    else:
        assert ran[:4] == ["fails", "runs", "fails_too", "runs_too"]
    # Reported once the send's receivers are done.
    assert ran_at_report == [4, 4, 8, 8]
    assert [sender for sender, _, _ in reports] == [app] * 4
    assert [current for _, _, current in reports] == [app] * 4
    assert [list(kwargs) for _, kwargs, _ in reports] == [["exception"]] * 4
    assert {id(kwargs["exception"]) for _, kwargs, _ in reports[:2]} == {id(first), id(second)}
    failing: list[tuple[Callable[..., Any], Exception]] = [(fails, first), (fails_too, second)]
    for receiver, error in failing:
        record = next(r for r in asignals_errors(caplog) if r.exc_info and r.exc_info[1] is error)
        message = record.getMessage()
        assert name_of(receiver) in message
        assert "'work'" in message
        assert "sent in the background, raised" in message
    assert len(asignals_errors(caplog)) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_a_failure_is_reported_with_the_app_as_sender(form: str) -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    work.connect(fails)

    async def endpoint(request: Request) -> Response:
        work.send_background("job")
        return PlainTextResponse("sent")

    asgi, app = build(form, endpoint)
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
    assert reports == [(app, {"exception": boom}, app)]


@pytest.mark.anyio
async def test_a_failure_without_a_got_background_exception_receiver_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    log = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    work.connect(fails)
    work.connect(lambda sender, **kwargs: log.add("next"), weak=False)
    asgi, _ = sending(lambda: work.send_background("job"))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(1)
    assert name_of(fails) in record_of(caplog, boom).getMessage()
    assert len(asignals_errors(caplog)) == 1


@pytest.mark.anyio
async def test_a_failing_got_background_exception_receiver_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom, broken = Boom("receiver"), Boom("reporter")
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    def failing_reporter(sender: Any, **kwargs: Any) -> None:
        raise broken

    def reporter(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reports.add(exception)

    work.connect(fails)
    asgi, app = sending(lambda: work.send_background("job"))
    with (
        got_background_exception.connected_to(failing_reporter, app),
        got_background_exception.connected_to(reporter, app),
    ):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
            assert (await server.get()).body == b"sent"
            await reports.wait_for(2)
    # Not reported again: only logged, once per report, naming it.
    assert reports == [boom, boom]
    records = asignals_errors(caplog)
    assert [r.exc_info[1] for r in records if r.exc_info] == [boom, broken, boom, broken]
    message = records[1].getMessage()
    assert name_of(failing_reporter) in message
    assert "'got-background-exception'" in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "appcontext_signal",
    [appcontext_pushed, appcontext_tearing_down, appcontext_popped],
    ids=["pushed", "tearing_down", "popped"],
)
async def test_a_failing_appcontext_receiver_of_a_send_is_logged_and_reported(
    appcontext_signal: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    log = Log()
    reports = Log()

    def fails_in_the_send(sender: Any, **kwargs: Any) -> None:
        if VAR.get() == "sent":  # the send's app context, not the request's
            raise boom

    work.connect(lambda sender, **kwargs: log.add("receiver"), weak=False)

    def send() -> None:
        token = VAR.set("sent")
        work.send_background("job")
        VAR.reset(token)

    asgi, app = sending(send)
    with (
        appcontext_signal.connected_to(fails_in_the_send, app),
        reporting(reports, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
            await reports.wait_for(1)
    assert client.body == b"sent"
    assert log == ["receiver"]
    assert reports == [(app, {"exception": boom}, app)]
    message = record_of(caplog, boom).getMessage()
    assert name_of(fails_in_the_send) in message
    assert repr(appcontext_signal.name) in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "appcontext_signal",
    [appcontext_pushed, appcontext_tearing_down, appcontext_popped],
    ids=["pushed", "tearing_down", "popped"],
)
async def test_the_report_of_a_failing_appcontext_receiver_does_not_run_in_the_request(
    appcontext_signal: NamedSignal,
) -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails_in_the_send(sender: Any, **kwargs: Any) -> None:
        if VAR.get() == "sent":
            raise boom

    def report(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reports.add((exception, request_is_unavailable(), g.get("mark")))

    work.connect(lambda sender, **kwargs: None, weak=False)

    async def endpoint(request: Request) -> Response:
        g.mark = "the request's g"
        token = VAR.set("sent")
        work.send_background("job")
        VAR.reset(token)
        await reports.wait_for(1)  # the request is still going on
        return PlainTextResponse("sent")

    asgi, app = build("install", endpoint)
    with (
        appcontext_signal.connected_to(fails_in_the_send, app),
        got_background_exception.connected_to(report, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
    assert client.body == b"sent"
    # Like the reports of the send's other failures: not in the request's
    # context, which the send's receivers never see.
    assert reports == [(boom, True, None)]


@pytest.mark.anyio
async def test_the_timeout_does_not_cut_the_reports_short() -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    async def slow_reporter(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        await anyio.sleep(0.2)  # longer than the send's timeout
        reports.add(exception)

    work.connect(fails)
    work.connect(stuck)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05))
    with got_background_exception.connected_to(slow_reporter, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(2)
    assert reports[0] is boom
    assert isinstance(reports[1], TimeoutError)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_asyncio_a_receivers_own_cancelled_error_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    async def cancelled_elsewhere(sender: Any, **kwargs: Any) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # as another task might
        await future

    work.connect(cancelled_elsewhere)
    work.connect(lambda sender, **kwargs: log.add("next"), weak=False)
    asgi, app = sending(lambda: work.send_background("job"))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
    assert log == ["next"]
    ((_, kwargs, _),) = reports
    error = kwargs["exception"]
    assert isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, asyncio.CancelledError)
    assert name_of(cancelled_elsewhere) in str(error)
    assert name_of(cancelled_elsewhere) in record_of(caplog, error).getMessage()


# The receivers are those connected at the call.


@pytest.mark.anyio
async def test_a_receiver_connected_after_the_call_is_not_called() -> None:
    work = NamedSignal("work")
    log = Log()

    def early(sender: Any, **kwargs: Any) -> None:
        log.add(("early", kwargs["n"]))

    def late(sender: Any, **kwargs: Any) -> None:
        log.add(("late", kwargs["n"]))

    work.connect(early)

    async def endpoint(request: Request) -> Response:
        work.send_background("job", n=int(request.query_params["n"]))
        work.connect(late)
        return PlainTextResponse("sent")

    asgi, _ = build("install", endpoint)
    async with serving(asgi) as server:
        await server.get(b"n=1")
        await log.wait_for(1)
        await server.get(b"n=2")  # late is connected now
        await log.wait_for(3)
    assert log == [("early", 1), ("early", 2), ("late", 2)]


def make_receiver(log: Log) -> Callable[..., None]:
    def later(sender: Any, **kwargs: Any) -> None:
        log.add("later")

    return later


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["disconnected", "garbage collected"])
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_receiver_gone_before_its_turn_is_not_called(concurrent: bool, way: str) -> None:
    work = NamedSignal("work")
    log = Log()
    held = [make_receiver(log)]

    def first(sender: Any, **kwargs: Any) -> None:
        if way == "disconnected":
            work.disconnect(held[0])
        else:
            held.clear()  # its only strong reference
        log.add("first")

    async def last(sender: Any, **kwargs: Any) -> None:
        log.add("last")

    work.connect(first)
    work.connect(held[0])  # weakly
    work.connect(last)
    asgi, _ = sending(lambda: work.send_background("job", _concurrent=concurrent))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(2)
    assert log == ["first", "last"]


@pytest.mark.anyio
@pytest.mark.parametrize("case", ["no receiver", "another sender", "muted"])
async def test_without_receivers_for_the_send_nothing_runs_and_nothing_is_checked(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add(sender)

    if case == "another sender":
        work.connect(receiver, sender="someone else")
    elif case == "muted":
        work.connect(receiver)

    def send() -> None:
        with work.muted() if case == "muted" else nullcontext():
            work.send_background("job", _bogus=1, _timeout=0, sender="x")
        # What is connected for the sender runs, proving the receiver works.
        work.send_background("someone else")

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        client = await server.get()
        if case != "no receiver":
            await log.wait_for(1)
    assert client.body == b"sent"
    assert log == ([] if case == "no receiver" else ["someone else"])
    assert asignals_errors(caplog) == []


# Options are checked at the call, in the caller.

BAD_OPTIONS = [
    pytest.param({"_bogus": 1}, TypeError, "unknown option '_bogus'", id="unknown"),
    pytest.param(
        {"_sync_wrapper": None},
        TypeError,
        r"_sync_wrapper is an option of send_async\(\), not of send_background\(\)",
        id="send_async-option",
    ),
    pytest.param({"_async_wrapper": None}, TypeError, "'_async_wrapper'", id="send-option"),
    pytest.param({"sender": "x"}, TypeError, r"not as sender=\.\.\.", id="sender"),
    pytest.param({"_timeout": 0}, ValueError, "_timeout must be a positive", id="timeout-0"),
    pytest.param({"_timeout": -1}, ValueError, "_timeout must be a positive", id="timeout-neg"),
    pytest.param({"_timeout": "x"}, ValueError, "_timeout must be a positive", id="timeout-str"),
    pytest.param({"_timeout": True}, ValueError, "_timeout must be a positive", id="timeout-bool"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("options", "error", "match"), BAD_OPTIONS)
async def test_a_bad_option_raises_at_the_call_and_nothing_runs(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    work = NamedSignal("work")
    log = Log()
    caught: list[Exception] = []
    work.connect(lambda sender, **kwargs: log.add(kwargs), weak=False)

    def send() -> None:
        try:
            work.send_background("job", n=1, **options)
        except Exception as exc:
            caught.append(exc)
        work.send_background("job", n=2)

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        client = await server.get()
        await log.wait_for(1)
    assert client.body == b"sent"
    (exc,) = caught
    assert type(exc) is error
    assert re.search(match, str(exc))
    assert log == [{"n": 2}]


@pytest.mark.anyio
async def test_a_misspelt_option_suggests_the_option_of_send_background() -> None:
    work = NamedSignal("work")
    work.connect(lambda sender, **kwargs: None, weak=False)
    caught: list[Exception] = []

    def send() -> None:
        try:
            work.send_background("job", _concurent=True)
        except TypeError as exc:
            caught.append(exc)

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        await server.get()
    (exc,) = caught
    assert "did you mean _concurrent?" in str(exc)
    # _concurrent is an option of send_background() itself.
    assert "option of send_async" not in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint_kind", ["async", "sync"])
async def test_a_bad_option_fails_the_request(endpoint_kind: str) -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add(kwargs), weak=False)

    async def async_endpoint(request: Request) -> Response:
        work.send_background("job", _bogus=1)
        return PlainTextResponse("sent")

    def sync_endpoint(request: Request) -> Response:
        work.send_background("job", _bogus=1)
        return PlainTextResponse("sent")

    asgi, _ = build("install", async_endpoint if endpoint_kind == "async" else sync_endpoint)
    async with serving(asgi) as server:
        client = Client(HTTP_REQUEST)
        with pytest.raises(TypeError, match="unknown option '_bogus'"), anyio.fail_after(5):
            await call(asgi, server.scope(), client)
        assert client.start["status"] == 500
    assert log == []


# asignals.testing.record_signals


@pytest.mark.anyio
async def test_record_signals_records_the_call_as_it_is_made() -> None:
    work = NamedSignal("work")
    release = anyio.Event()
    log = Log()
    at_call: list[list[Sent]] = []

    async def slow(sender: Any, **kwargs: Any) -> None:
        await gate(release)
        log.add(kwargs)

    work.connect(slow)

    with record_signals(work) as sent:

        def send() -> None:
            work.send_background("job", n=1, _concurrent=True, _timeout=5)
            at_call.append(list(sent))

        asgi, _ = sending(send)
        async with serving(asgi) as server:
            await server.get()
            assert at_call == [[Sent(work, "job", {"n": 1})]]
            assert log == []
            release.set()
            await log.wait_for(1)
    assert sent == [Sent(work, "job", {"n": 1})]
    assert log == [{"n": 1}]


@pytest.mark.anyio
async def test_record_signals_records_a_call_that_runs_no_receiver() -> None:
    work = NamedSignal("work")
    with record_signals(work) as sent:
        asgi, _ = sending(lambda: work.send_background("job", n=1))
        async with serving(asgi) as server:
            await server.get()
    assert sent == [Sent(work, "job", {"n": 1})]


@pytest.mark.anyio
async def test_record_signals_records_a_call_that_raises() -> None:
    work = NamedSignal("work")
    work.connect(lambda sender, **kwargs: None, weak=False)
    caught: list[Exception] = []

    def send() -> None:
        try:
            work.send_background("job", n=1, _bogus=True)
        except TypeError as exc:
            caught.append(exc)

    with record_signals(work) as sent:
        asgi, _ = sending(send)
        async with serving(asgi) as server:
            await server.get()
    assert len(caught) == 1
    assert sent == [Sent(work, "job", {"n": 1})]


@pytest.mark.anyio
async def test_appcontext_popped_receivers_of_a_send_never_see_the_callers_request() -> None:
    job = NamedSignal("job")
    popped = anyio.Event()
    seen: list[tuple[bool, Any]] = []

    def on_popped(sender: Any, **kwargs: Any) -> None:
        if sender is app and not popped.is_set():
            seen.append((request_is_unavailable(), the_app()))
            popped.set()

    async def endpoint(request: Request) -> Response:
        job.send_background(request.app)
        await gate(popped)  # the request is still running as the send ends
        return PlainTextResponse("sent")

    asgi, app = build("install", endpoint)
    job.connect(lambda sender, **kwargs: None, weak=False)
    with asignals.appcontext_popped.connected_to(on_popped):
        async with serving(asgi) as server:
            client = await server.get()

    assert client.start["status"] == 200
    assert seen == [(True, app)]

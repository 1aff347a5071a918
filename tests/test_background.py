"""Signal.send_background() while the app's lifespan runs.

The response goes out first and the receivers run after it, on the task group
the lifespan owns; sends work from every place the middleware serves, in every
install form; receivers see the caller's context variables and app, in an app
context of their own (a new ``g``, the appcontext signals around them, no
request). Dispatch, failures and options are tested in
test_background_dispatch.py; shutdown in test_background_shutdown.py, the limit
in test_background_limit.py, misuse in test_background_misuse.py.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from background_serving import (
    FORMS,
    VAR,
    Log,
    build,
    request_is_unavailable,
    sending,
    serving,
    the_app,
)
from helpers import Boom, client
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.websockets import WebSocket

import asignals
from asignals import (
    NamedSignal,
    Signal,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    g,
    got_background_exception,
    install,
    request_finished,
    request_started,
    request_tearing_down,
)
from asignals.testing import Sent, record_signals


def the_g() -> Any:
    return g._get_current_object()


async def gate(event: anyio.Event) -> None:
    """Wait for a test to set ``event``, for a bounded time: a receiver held
    there never hangs the test (even one whose caller waits in a thread)."""
    with anyio.move_on_after(5):
        await event.wait()


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
async def test_record_signals_does_not_record_a_call_refused_for_its_arguments() -> None:
    """A call whose options are refused sends nothing, so there is no send
    to record; the one after it is recorded as made."""
    work = NamedSignal("work")
    work.connect(lambda sender, **kwargs: None, weak=False)
    caught: list[Exception] = []

    def send() -> None:
        try:
            work.send_background("job", n=1, _timout=True)
        except TypeError as exc:
            caught.append(exc)
        work.send_background("job", n=2, _bogus=True)

    with record_signals(work) as sent:
        asgi, _ = sending(send)
        async with serving(asgi) as server:
            await server.get()
    assert len(caught) == 1
    assert sent == [Sent(work, "job", {"n": 2, "_bogus": True})]


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

"""What the signal monitor records of a send: its signal, sender, arguments,
receivers and their results, failures, and the request it was made in."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import jinja2
import pytest
from helpers import local_client
from monitor_pages import (
    WAIT,
    Shown,
    all_sends,
    app_with,
    done,
    done_async,
    fails,
    hello,
    name_of,
    new_signal,
    only_send,
    receive_raw,
    runs,
    send_by,
    sends_of,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asignals import flash, request_started
from asignals.monitor import SignalMonitor
from asignals.templating import Jinja2Templates

# 5. What a send records


@pytest.mark.anyio
async def test_records_signal_sender_and_arguments_but_not_options() -> None:
    signal = new_signal()
    signal.connect(done_async)
    with SignalMonitor() as monitor:
        await signal.send_async(
            Shown("Shop(1)"), n=1, text="hi", items=[1, 2], _concurrent=True, _timeout=WAIT
        )

    send = only_send(monitor, signal)
    # A sender that is not a plain value is shown by its type's name.
    assert (send.signal, send.sender, send.request) == (signal.name, "Shown", None)
    assert send.arguments == {"n": "1", "text": "'hi'", "items": "[1, 2]"}


def test_records_arguments_summarised_and_safely() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as monitor:
        results = signal.send(BadRepr(), text="x" * 10_000, items=list(range(1000)))

    assert results == [(done, "done")]
    send = only_send(monitor, signal)
    assert "BadRepr" in send.sender
    assert len(send.arguments["text"]) < 200
    assert len(send.arguments["items"]) < 200


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/orders/7"), ("POST", "/orders"), ("WS", "/ws")]
)
def test_records_the_request_that_made_the_send(
    anyio_backend: str, monitor: SignalMonitor, method: str, path: str
) -> None:
    signal = new_signal()
    signal.connect(done)

    async def endpoint(request: Request) -> Response:
        signal.send("shop")
        return PlainTextResponse("sent")

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        signal.send("shop")
        await websocket.send_text("sent")
        await websocket.close()

    routes = [
        Route("/orders/{id}", endpoint),
        Route("/orders", endpoint, methods=["POST"]),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    test_client = local_client(app_with(monitor, *routes), anyio_backend)
    if method == "WS":
        with test_client.websocket_connect(path) as websocket:
            assert receive_raw(websocket)["text"] == "sent"
    else:
        assert test_client.request(method, path).text == "sent"

    assert only_send(monitor, signal).request == f"{method} {path}"


@pytest.mark.anyio
async def test_records_receivers_in_calling_order_with_their_kind() -> None:
    signal = new_signal()

    def blocking(sender: Any, **kwargs: Any) -> None:
        pass

    signal.connect(done_async)
    signal.connect(blocking, to_thread=True)
    signal.connect(fails, "someone else")
    signal.connect(done)
    with SignalMonitor() as monitor:
        await signal.send_async("shop")

    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done_async), "async", "done"),
        (name_of(blocking), "thread", "done"),
        (name_of(done), "sync", "done"),
    ]
    assert all(run.duration is not None and run.error is None for run in send.receivers)


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["send", "send_async"])
async def test_records_the_failure_that_stopped_a_sequential_send(way: str) -> None:
    signal = new_signal()

    def later(sender: Any, **kwargs: Any) -> None:
        pass

    for receiver in (done, fails, later):
        signal.connect(receiver)
    with SignalMonitor() as monitor, pytest.raises(ValueError, match="boom"):
        await send_by(way, signal, "shop")

    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done), "sync", "done"),
        (name_of(fails), "sync", "failed"),
        (name_of(later), "sync", "not called"),
    ]
    assert [run.error for run in send.receivers] == [None, "ValueError: boom", None]
    assert [run.duration is not None for run in send.receivers] == [True, True, False]


@pytest.mark.anyio
async def test_records_receivers_cancelled_by_a_timeout() -> None:
    signal = new_signal()

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    signal.connect(stuck)
    signal.connect(done)
    with SignalMonitor() as monitor, pytest.raises(TimeoutError):
        # The receiver never ends: the timeout cuts it short whatever its length.
        await signal.send_async("shop", _timeout=0.01)

    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(stuck), "async", "cancelled"),
        (name_of(done), "sync", "not called"),
    ]
    assert send.receivers[0].duration is not None


@pytest.mark.anyio
async def test_records_every_receiver_of_a_concurrent_send() -> None:
    signal = new_signal()
    first_in, second_in = anyio.Event(), anyio.Event()

    # Each waits for the other: they end only if they run at once.
    async def first(sender: Any, **kwargs: Any) -> None:
        first_in.set()
        await second_in.wait()

    async def second(sender: Any, **kwargs: Any) -> None:
        second_in.set()
        await first_in.wait()

    for receiver in (first, second, fails):
        signal.connect(receiver)
    with (
        SignalMonitor() as monitor,
        anyio.fail_after(WAIT),
        pytest.raises(ExceptionGroup),
    ):
        await signal.send_async("shop", _concurrent=True)

    send = only_send(monitor, signal)
    assert [run.status for run in send.receivers] == ["done", "done", "failed"]
    assert send.receivers[2].error == "ValueError: boom"


@pytest.mark.anyio
async def test_records_sends_in_flight_at_once_apart() -> None:
    signal = new_signal()
    arrived = 0
    both_in = anyio.Event()

    async def meet(sender: Any, **kwargs: Any) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_in.set()
        await both_in.wait()

    signal.connect(meet)
    with SignalMonitor() as monitor, anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(signal.send_async, "first", n=1))
            tasks.start_soon(partial(signal.send_async, "second", n=2))

    sends = sorted(sends_of(monitor, signal), key=lambda send: send.sender)
    assert [(send.sender, send.arguments) for send in sends] == [
        ("'first'", {"n": "1"}),
        ("'second'", {"n": "2"}),
    ]
    assert [runs(send) for send in sends] == [[(name_of(meet), "async", "done")]] * 2


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["send", "send_async"])
async def test_records_a_send_without_receivers(way: str) -> None:
    signal = new_signal()
    with SignalMonitor() as monitor:
        assert await send_by(way, signal, "shop", n=1) == []

    send = only_send(monitor, signal)
    assert (send.sender, send.arguments, send.receivers) == ("'shop'", {"n": "1"}, [])


@pytest.mark.anyio
async def test_records_a_send_from_a_worker_thread_with_async_receivers() -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async)
    with SignalMonitor() as monitor:
        results = await anyio.to_thread.run_sync(partial(signal.send, "shop", n=1))

    assert results == [(done, "done"), (done_async, "done async")]
    assert runs(only_send(monitor, signal)) == [
        (name_of(done), "sync", "done"),
        (name_of(done_async), "async", "done"),
    ]


def test_records_a_background_send(anyio_backend: str, monitor: SignalMonitor) -> None:
    signal = new_signal()
    signal.connect(done_async)

    async def report(request: Request) -> Response:
        signal.send_background("shop", n=1, _timeout=WAIT)
        return PlainTextResponse("requested")

    app = app_with(monitor, Route("/report", report))
    # Leaving the block ends the lifespan, which waits for background sends.
    with local_client(app, anyio_backend) as test_client:
        assert test_client.get("/report").text == "requested"

    send = only_send(monitor, signal)
    assert (send.request, send.arguments) == ("GET /report", {"n": "1"})
    assert runs(send) == [(name_of(done_async), "async", "done")]


def test_records_a_background_send_without_receivers_without_its_options(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()

    async def report(request: Request) -> Response:
        signal.send_background("shop", n=1, _concurrent=True, _timeout=WAIT)
        return PlainTextResponse("requested")

    with local_client(app_with(monitor, Route("/report", report)), anyio_backend) as test_client:
        test_client.get("/report")

    assert only_send(monitor, signal).arguments == {"n": "1"}


def test_a_send_the_middleware_awaits_is_listed_once(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    # The middleware asks for a plan it can follow without awaiting, and
    # finding an async receiver, sends another way: the send is still one.
    app = app_with(monitor, Route("/hello", hello))
    request_started.connect(done_async, app)
    try:
        local_client(app, anyio_backend).get("/hello")
    finally:
        request_started.disconnect(done_async, app)

    started = [send for send in all_sends(monitor) if send.signal == "request-started"]
    assert [(send.request, runs(send)) for send in started] == [
        ("GET /hello", [(name_of(done_async), "async", "done")])
    ]


def test_records_a_flash_from_a_sync_endpoint(anyio_backend: str, monitor: SignalMonitor) -> None:
    def save(request: Request) -> Response:
        flash("Saved", "info")
        return PlainTextResponse("saved")

    test_client = local_client(app_with(monitor, Route("/save", save)), anyio_backend)
    test_client.get("/save")

    flashed = [send for send in all_sends(monitor) if send.signal == "message-flashed"]
    assert [(send.request, send.arguments) for send in flashed] == [
        ("GET /save", {"message": "'Saved'", "category": "'info'"})
    ]


def test_records_a_template_rendering(anyio_backend: str, monitor: SignalMonitor) -> None:
    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.DictLoader({"page.html": "<p>{{ n }}</p>"}))
    )

    def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", {"n": 1})

    test_client = local_client(app_with(monitor, Route("/page", page)), anyio_backend)
    assert test_client.get("/page").text == "<p>1</p>"

    rendered = [send for send in all_sends(monitor) if send.signal == "template-rendered"]
    assert [send.request for send in rendered] == ["GET /page"]
    assert "page.html" in rendered[0].arguments["template"]

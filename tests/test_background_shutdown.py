"""Background sends at the end of the app's lifespan, their bound, and misuse.

The drain at shutdown (before the app's own shutdown code, sends made during
it included), the grace period and its cancellations, a lifespan cancelled,
ended early or failed, ``send_background`` once the lifespan is over, the
``background_limit`` bound, calls where no lifespan runs, the settings'
validation, and one run under a real uvicorn server. Most tests play the
server by hand (raw ASGI), so that they can see and order every lifespan
message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import Boom, client
from raw_asgi import HTTP_REQUEST, SHUTDOWN, STARTUP, Client, call, http_scope, lifespan_scope
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import asignals
from asignals import BackgroundLimitError, NamedSignal, SignalMiddleware, install

OVER = "after the app's lifespan was over"


@pytest.fixture
def report_ready() -> NamedSignal:
    """A fresh signal for each test, named as the log messages name it."""
    return asignals.Namespace().signal("report-ready")


def name(receiver: Callable[..., Any]) -> str:
    """How the log messages name a receiver."""
    return f"{receiver.__module__}.{receiver.__qualname__}"


def recorder(signal: NamedSignal) -> list[Any]:
    """The senders of ``signal``'s sends that reached a receiver."""
    ran: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        ran.append(sender)

    signal.connect(record, weak=False)
    return ran


def background_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "asignals" and record.levelno == logging.ERROR
    ]


class Server(Client):
    """The server's side of a lifespan driven by hand. ``log`` gets the type of
    every lifespan message, both ways, in order, among what the test's
    receivers and lifespan code write there."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.scope = lifespan_scope()
        self.returned = False
        self._changed = anyio.Event()

    def _change(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def receive(self) -> Message:
        message = await super().receive()
        self.log.append(message["type"])
        self._change()
        return message

    async def send(self, message: Message) -> None:
        await super().send(message)
        self.log.append(message["type"])
        self._change()

    async def run(self, app: ASGIApp) -> None:
        await call(app, self.scope, self)
        self.returned = True
        self._change()

    async def wait_for(self, entry: str) -> None:
        """Wait until ``entry`` is in the log."""
        while entry not in self.log:
            await self._changed.wait()

    async def get(self, app: ASGIApp, query: bytes = b"", *, copy_state: bool = True) -> Client:
        """A request served under this lifespan: as servers do, with a copy
        of the lifespan's state in its scope (unless ``copy_state`` is false,
        as for servers without lifespan state)."""
        return await get(app, query=query, state=self.scope["state"] if copy_state else None)

    async def shutdown(self) -> None:
        self.push(SHUTDOWN)
        await self.wait_for("lifespan.shutdown.complete")


@asynccontextmanager
async def serving(app: ASGIApp, log: list[str]) -> AsyncIterator[Server]:
    """Run ``app``'s lifespan, started, until the test shut it down and it
    returned."""
    server = Server(log)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.run, app)
        server.push(STARTUP)
        await server.wait_for("lifespan.startup.complete")
        yield server


async def get(app: ASGIApp, query: bytes = b"", state: dict[str, Any] | None = None) -> Client:
    """A request to "/"; with a copy of ``state`` in its scope if given."""
    scope = http_scope("/", query=query)
    if state is not None:
        scope["state"] = dict(state)
    client = Client(HTTP_REQUEST)
    await call(app, scope, client)
    return client


def logging_lifespan(log: list[str]) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.append("app startup")
        yield
        log.append("app shutdown")

    return lifespan


def make_app(*routes: BaseRoute, lifespan: Any = None, **settings: Any) -> Starlette:
    return install(Starlette(routes=list(routes), lifespan=lifespan), **settings)


def sending(signal: NamedSignal, errors: list[Exception] | None = None) -> Route:
    """A route "/" whose endpoint sends ``signal`` in the background, with the
    query string as sender, keeping what the send raised in ``errors``."""

    async def endpoint(request: Request) -> Response:
        try:
            signal.send_background(request.url.query)
        except RuntimeError as exc:
            if errors is None:
                raise
            errors.append(exc)
            return PlainTextResponse(type(exc).__name__)
        return PlainTextResponse("sent")

    return Route("/", endpoint)


async def assert_over(app: ASGIApp, server: Server, ran: list[Any]) -> None:
    """``app``'s lifespan is over: its "/" endpoint's send_background raises,
    whether the request has the lifespan's state or not, and no receiver
    (recording into ``ran``) runs."""
    before = list(ran)
    for copy_state in (True, False):
        with pytest.raises(RuntimeError, match=OVER):
            await server.get(app, query=b"over", copy_state=copy_state)
    await anyio.wait_all_tasks_blocked()
    assert ran == before


# -- the drain at shutdown ---------------------------------------------------------------


@pytest.mark.anyio
# Servers copy the lifespan's state into each request's scope, where the
# middleware finds the lifespan; without it (older servers) it finds its last.
@pytest.mark.parametrize("copy_state", [True, False], ids=["state", "no-state"])
async def test_shutdown_waits_for_running_sends_before_the_apps_shutdown_code(
    copy_state: bool, report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    release = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.append(f"{sender} started")
        await release.wait()
        await anyio.lowlevel.checkpoint()
        log.append(f"{sender} done")

    report_ready.connect(slow)
    app = make_app(sending(report_ready), lifespan=logging_lifespan(log))

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            for query in (b"a", b"b"):
                client = await server.get(app, query=query, copy_state=copy_state)
                assert client.body == b"sent"
            await anyio.wait_all_tasks_blocked()
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            await anyio.wait_all_tasks_blocked()
            assert "app shutdown" not in log
            assert "lifespan.shutdown.complete" not in log
            release.set()
            await server.wait_for("lifespan.shutdown.complete")

    assert log[:3] == ["lifespan.startup", "app startup", "lifespan.startup.complete"]
    assert sorted(log[3:5]) == ["a started", "b started"]
    assert log[5] == "lifespan.shutdown"
    assert sorted(log[6:8]) == ["a done", "b done"]
    assert log[8:] == ["app shutdown", "lifespan.shutdown.complete"]
    assert server.returned
    assert background_errors(caplog) == []


@pytest.mark.anyio
async def test_the_drain_takes_sends_that_running_receivers_make_meanwhile(
    report_ready: NamedSignal,
) -> None:
    followed_up = asignals.Namespace().signal("followed-up")
    log: list[str] = []
    release_first = anyio.Event()
    second_started = anyio.Event()
    release_second = anyio.Event()

    async def first(sender: Any, **kwargs: Any) -> None:
        await release_first.wait()
        followed_up.send_background("from the drain")
        log.append("first done")

    async def second(sender: Any, **kwargs: Any) -> None:
        log.append(f"second started, {sender}")
        second_started.set()
        await release_second.wait()
        log.append("second done")

    report_ready.connect(first)
    followed_up.connect(second)
    app = make_app(sending(report_ready), lifespan=logging_lifespan(log))

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            await server.get(app)
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            release_first.set()
            await second_started.wait()
            await anyio.wait_all_tasks_blocked()
            assert "app shutdown" not in log
            release_second.set()
            await server.wait_for("lifespan.shutdown.complete")

    assert log[3:] == [
        "lifespan.shutdown",
        "first done",
        "second started, from the drain",
        "second done",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_fastapi_on_shutdown_runs_after_running_sends(report_ready: NamedSignal) -> None:
    log: list[str] = []
    release = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        await release.wait()
        log.append("receiver done")

    async def on_shutdown() -> None:
        log.append("on_shutdown")

    report_ready.connect(slow)
    app = install(FastAPI(on_shutdown=[on_shutdown]))

    @app.get("/")
    async def endpoint() -> str:
        report_ready.send_background("fastapi")
        return "sent"

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            assert (await server.get(app)).body == b'"sent"'
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            await anyio.wait_all_tasks_blocked()
            assert "on_shutdown" not in log
            release.set()
            await server.wait_for("lifespan.shutdown.complete")

    assert log[-4:] == [
        "lifespan.shutdown",
        "receiver done",
        "on_shutdown",
        "lifespan.shutdown.complete",
    ]


class Watched:
    """An ASGI app around ``app`` that logs the type of each lifespan message,
    both ways, and sets ``shutdown_sent`` as the server sends
    ``lifespan.shutdown`` (before asignals' middleware sees it). It bounds the
    lifespan: a TestClient would wait for it forever."""

    def __init__(self, app: ASGIApp, log: list[str]) -> None:
        self.app = app
        self.log = log
        self.shutdown_sent: anyio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        shutdown_sent = self.shutdown_sent = anyio.Event()

        async def watched_receive() -> Message:
            message = await receive()
            self.log.append(message["type"])
            if message["type"] == "lifespan.shutdown":
                shutdown_sent.set()
            return message

        async def watched_send(message: Message) -> None:
            self.log.append(message["type"])
            await send(message)

        with anyio.fail_after(5):
            await self.app(scope, watched_receive, watched_send)


def test_testclient_exit_waits_for_running_sends(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    log: list[str] = []
    started: list[anyio.Event] = []

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.append("receiver started")
        started[0].set()
        assert watched.shutdown_sent is not None
        await watched.shutdown_sent.wait()
        await anyio.lowlevel.checkpoint()
        log.append("receiver done")

    async def endpoint(request: Request) -> Response:
        started.append(anyio.Event())
        report_ready.send_background("testclient")
        await started[0].wait()  # running as the response goes out
        return PlainTextResponse("sent")

    report_ready.connect(slow)
    app = make_app(Route("/", endpoint), lifespan=logging_lifespan(log))
    watched = Watched(app, log)

    with client(watched, anyio_backend) as test_client:
        assert test_client.get("/").text == "sent"

    assert log == [
        "lifespan.startup",
        "app startup",
        "lifespan.startup.complete",
        "receiver started",
        "lifespan.shutdown",
        "receiver done",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("grace", [0, 10.0, math.inf])
async def test_a_shutdown_with_nothing_running_completes_at_once(
    grace: float, report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    ran = recorder(report_ready)
    log: list[str] = []
    app = make_app(sending(report_ready), lifespan=logging_lifespan(log), background_grace=grace)

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            await server.get(app, query=b"finished")
            await anyio.wait_all_tasks_blocked()
            await server.shutdown()

    assert ran == ["finished"]
    assert log[-3:] == ["lifespan.shutdown", "app shutdown", "lifespan.shutdown.complete"]
    assert background_errors(caplog) == []


def test_a_new_lifespan_of_the_same_app_runs_background_sends_again(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    ran = recorder(report_ready)
    test_client = client(make_app(sending(report_ready)), anyio_backend)

    with test_client:
        assert test_client.get("/?first").text == "sent"
    with test_client:
        assert test_client.get("/?second").text == "sent"

    assert ran == ["first", "second"]


# -- the grace period ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("grace", [0, 0.05])
async def test_the_grace_period_cancels_a_receiver_that_never_finishes(
    grace: float, report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        log.append("stuck started")
        try:
            await anyio.sleep_forever()
        finally:
            log.append("stuck finally")

    def never(sender: Any, **kwargs: Any) -> None:
        log.append("never called")

    report_ready.connect(stuck)
    report_ready.connect(never)
    app = make_app(sending(report_ready), lifespan=logging_lifespan(log), background_grace=grace)

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            await server.get(app, query=b"report-7")
            await anyio.wait_all_tasks_blocked()
            await server.shutdown()

    assert log[3:] == [
        "stuck started",
        "lifespan.shutdown",
        "stuck finally",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]
    assert server.returned
    (message,) = background_errors(caplog)
    assert "signal 'report-ready'" in message
    assert "'report-7'" in message
    assert "cancelled" in message
    assert f"grace period (background_grace={grace})" in message
    running, not_called = message.split("not called")
    assert name(stuck) in running
    assert name(never) not in running
    assert name(never) in not_called


@pytest.mark.anyio
async def test_each_send_cancelled_at_shutdown_is_logged_once(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    other = asignals.Namespace().signal("index-rebuilt")
    finished: list[str] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finished.append(f"stuck {sender}")

    async def also_stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finished.append(f"also_stuck {sender}")

    async def quick(sender: Any, **kwargs: Any) -> None:
        finished.append(f"quick {sender}")

    async def endpoint(request: Request) -> Response:
        report_ready.send_background("one")
        report_ready.send_background("two")
        other.send_background("three", _concurrent=True)
        return PlainTextResponse("sent")

    report_ready.connect(stuck)
    other.connect(stuck)
    other.connect(also_stuck)
    other.connect(quick)
    app = make_app(Route("/", endpoint), background_grace=0)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.get(app)
            await anyio.wait_all_tasks_blocked()
            assert sorted(finished) == ["quick three"]
            await server.shutdown()

    assert sorted(finished) == [
        "also_stuck three",
        "quick three",
        "stuck one",
        "stuck three",
        "stuck two",
    ]
    messages = background_errors(caplog)
    assert len(messages) == 3
    by_sender = {
        sender: [m for m in messages if f"(sender '{sender}')" in m]
        for sender in ("one", "two", "three")
    }
    assert all(len(found) == 1 for found in by_sender.values())
    assert "signal 'report-ready'" in by_sender["one"][0]
    assert "signal 'index-rebuilt'" in by_sender["three"][0]
    running, not_called = by_sender["three"][0].split("not called")
    assert name(stuck) in running
    assert name(also_stuck) in running
    assert name(quick) not in running + not_called


@pytest.mark.anyio
async def test_the_grace_period_covers_sends_made_during_the_drain(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    followed_up = asignals.Namespace().signal("followed-up")
    log: list[str] = []
    release = anyio.Event()

    async def first(sender: Any, **kwargs: Any) -> None:
        await release.wait()
        followed_up.send_background("from the drain")
        log.append("first done")

    async def stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            log.append(f"stuck finally, {sender}")

    report_ready.connect(first)
    followed_up.connect(stuck)
    app = make_app(sending(report_ready), background_grace=0.05)

    with anyio.fail_after(5):
        async with serving(app, log) as server:
            await server.get(app)
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            release.set()
            await server.wait_for("lifespan.shutdown.complete")

    assert log[2:] == [
        "lifespan.shutdown",
        "first done",
        "stuck finally, from the drain",
        "lifespan.shutdown.complete",
    ]
    (message,) = background_errors(caplog)
    assert "signal 'followed-up'" in message
    assert "background_grace=0.05" in message


def test_a_testclient_exit_cancels_a_stuck_receiver_past_the_grace_period(
    anyio_backend: str, report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    started: list[anyio.Event] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        log.append("stuck started")
        started[0].set()
        try:
            await anyio.sleep_forever()
        finally:
            log.append("stuck finally")

    async def endpoint(request: Request) -> Response:
        started.append(anyio.Event())
        report_ready.send_background("testclient")
        await started[0].wait()
        return PlainTextResponse("sent")

    report_ready.connect(stuck)
    app = make_app(Route("/", endpoint), lifespan=logging_lifespan(log), background_grace=0)

    with client(Watched(app, log), anyio_backend) as test_client:
        assert test_client.get("/").text == "sent"

    assert log[3:] == [
        "stuck started",
        "lifespan.shutdown",
        "stuck finally",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]
    (message,) = background_errors(caplog)
    assert "(sender 'testclient')" in message
    assert "background_grace=0" in message


@pytest.mark.anyio
async def test_an_infinite_grace_period_waits_for_the_receiver(report_ready: NamedSignal) -> None:
    log: list[str] = []
    release = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        await release.wait()
        log.append("receiver done")

    async def release_once_all_wait() -> None:
        await anyio.wait_all_tasks_blocked()
        log.append("released")
        release.set()

    report_ready.connect(slow)
    app = make_app(sending(report_ready), lifespan=logging_lifespan(log), background_grace=math.inf)

    with anyio.fail_after(5):
        async with serving(app, log) as server, anyio.create_task_group() as tasks:
            await server.get(app)
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            tasks.start_soon(release_once_all_wait)
            await server.wait_for("lifespan.shutdown.complete")

    assert log[3:] == [
        "lifespan.shutdown",
        "released",
        "receiver done",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]


# -- a lifespan cancelled, ended early, or failed ------------------------------------------


@pytest.mark.anyio
async def test_cancelling_the_lifespan_cancels_running_sends_each_logged(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[str] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finished.append(sender)

    ran = recorder(report_ready)
    report_ready.connect(stuck)
    # The default grace period (10 s) is not waited for: fail_after would end the test.
    app = make_app(sending(report_ready))
    log: list[str] = []
    server = Server(log)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, app)
            server.push(STARTUP)
            await server.wait_for("lifespan.startup.complete")
            await server.get(app, query=b"a")
            await server.get(app, query=b"b")
            await anyio.wait_all_tasks_blocked()
            tasks.cancel_scope.cancel()

    assert sorted(finished) == ["a", "b"]
    assert not server.returned
    assert log == ["lifespan.startup", "lifespan.startup.complete"]
    messages = background_errors(caplog)
    assert len(messages) == 2
    for sender, message in zip("ab", sorted(messages, key=lambda m: "'b'" in m), strict=True):
        assert f"(sender '{sender}')" in message
        assert "signal 'report-ready'" in message
        assert "cancelled" in message
        assert "lifespan was cancelled" in message
        assert name(stuck) in message.split("not called")[0]
    with anyio.fail_after(5):
        await assert_over(app, server, ran)


@pytest.mark.anyio
async def test_cancelling_the_lifespan_during_the_drain_cancels_the_sends(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[str] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finished.append(sender)

    ran = recorder(report_ready)
    report_ready.connect(stuck)
    app = make_app(sending(report_ready), background_grace=math.inf)
    log: list[str] = []
    server = Server(log)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, app)
            server.push(STARTUP)
            await server.wait_for("lifespan.startup.complete")
            await server.get(app, query=b"draining")
            server.push(SHUTDOWN)
            await server.wait_for("lifespan.shutdown")
            await anyio.wait_all_tasks_blocked()
            tasks.cancel_scope.cancel()

    assert finished == ["draining"]
    assert log == ["lifespan.startup", "lifespan.startup.complete", "lifespan.shutdown"]
    (message,) = background_errors(caplog)
    assert "(sender 'draining')" in message
    assert "lifespan was cancelled" in message
    with anyio.fail_after(5):
        await assert_over(app, server, ran)


# A plain asyncio Task.cancel() is asyncio's own (delivered once, unlike an anyio
# cancel scope's): this test runs on asyncio alone.
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_lifespan_task_cancelled_once_by_asyncio_cancels_its_sends_at_once(
    anyio_backend: str, report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[str] = []

    async def stuck(sender: Any, **kwargs: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            finished.append(sender)

    ran = recorder(report_ready)
    report_ready.connect(stuck)
    # The default grace period (10 s) is not waited for: fail_after would end the test.
    app = make_app(sending(report_ready))
    server = Server([])

    with anyio.fail_after(5):
        task = asyncio.create_task(server.run(app))
        server.push(STARTUP)
        await server.wait_for("lifespan.startup.complete")
        await server.get(app, query=b"a")
        await anyio.wait_all_tasks_blocked()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert finished == ["a"]
    assert ran == ["a"]
    (message,) = background_errors(caplog)
    assert "(sender 'a')" in message
    assert "lifespan was cancelled" in message
    with anyio.fail_after(5):
        await assert_over(app, server, ran)


def plain_app(signal: NamedSignal, log: list[str], started: anyio.Event | None = None) -> ASGIApp:
    """A plain ASGI app whose lifespan sends ``signal`` in the background right
    after its startup, then returns (once ``started`` is set) without waiting
    for the shutdown; its requests send ``signal`` in the background too."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            signal.send_background("request")
            await PlainTextResponse("sent")(scope, receive, send)
            return
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        signal.send_background("lifespan")
        if started is not None:
            await started.wait()
        log.append("app returned")

    return app


@pytest.mark.anyio
async def test_a_lifespan_that_ends_without_shutdown_waits_for_running_sends(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    release = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.append(f"receiver started, {sender}")
        await release.wait()
        log.append("receiver done")

    ran = recorder(report_ready)
    report_ready.connect(slow)
    app = SignalMiddleware(plain_app(report_ready, log))
    server = Server(log)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, app)
            server.push(STARTUP)
            await anyio.wait_all_tasks_blocked()
            assert not server.returned
            release.set()

    assert log == [
        "lifespan.startup",
        "lifespan.startup.complete",
        "app returned",
        "receiver started, lifespan",
        "receiver done",
    ]
    assert server.returned
    assert background_errors(caplog) == []
    with anyio.fail_after(5):
        await assert_over(app, server, ran)
    assert ran == ["lifespan"]


@pytest.mark.anyio
async def test_a_lifespan_that_ends_without_shutdown_cancels_sends_past_the_grace_period(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    started = anyio.Event()

    async def stuck(sender: Any, **kwargs: Any) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            log.append("stuck finally")

    ran = recorder(report_ready)
    report_ready.connect(stuck)
    app = SignalMiddleware(plain_app(report_ready, log, started), background_grace=0)
    server = Server(log)

    with anyio.fail_after(5):
        server.push(STARTUP)
        await server.run(app)

    assert log == ["lifespan.startup", "lifespan.startup.complete", "app returned", "stuck finally"]
    (message,) = background_errors(caplog)
    assert "signal 'report-ready'" in message
    assert "(sender 'lifespan')" in message
    assert "background_grace=0" in message
    assert name(stuck) in message.split("not called")[0]
    assert ran == ["lifespan"]
    with anyio.fail_after(5):
        await assert_over(app, server, ran)


@pytest.mark.anyio
async def test_a_failing_startup_cancels_running_sends(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    started = anyio.Event()

    async def stuck(sender: Any, **kwargs: Any) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            log.append("stuck finally")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        report_ready.send_background("startup")
        await started.wait()
        raise Boom("no database")
        yield  # pragma: no cover

    ran = recorder(report_ready)
    report_ready.connect(stuck)
    app = make_app(sending(report_ready), lifespan=lifespan, background_grace=0)
    server = Server(log)

    server.push(STARTUP)
    with anyio.fail_after(5), pytest.raises(Boom):
        await server.run(app)

    assert log == ["lifespan.startup", "lifespan.startup.failed", "stuck finally"]
    (message,) = background_errors(caplog)
    assert "(sender 'startup')" in message
    assert "background_grace=0" in message
    with anyio.fail_after(5):
        await assert_over(app, server, ran)


# -- after shutdown ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_background_after_shutdown_raises_and_runs_nothing(
    report_ready: NamedSignal,
) -> None:
    ran = recorder(report_ready)
    errors: list[Exception] = []
    app = make_app(sending(report_ready, errors))

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.shutdown()
        client = await server.get(app, query=b"late")
        await anyio.wait_all_tasks_blocked()

    assert client.body == b"RuntimeError"
    (error,) = errors
    assert type(error) is RuntimeError
    message = str(error)
    assert "signal 'report-ready'" in message
    assert OVER in message
    assert "nothing was sent" in message
    assert "with TestClient(app) as client:" in message
    assert "send_async" in message
    assert ran == []


@pytest.mark.anyio
async def test_the_apps_shutdown_code_cannot_send_in_the_background(
    report_ready: NamedSignal,
) -> None:
    nobody_listens = asignals.Namespace().signal("nobody-listens")
    ran = recorder(report_ready)
    errors: list[Exception] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        report_ready.send_background("startup")
        yield
        for signal in (report_ready, nobody_listens):
            try:
                signal.send_background("shutdown")
            except RuntimeError as exc:
                errors.append(exc)

    app = make_app(lifespan=lifespan)
    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.shutdown()

    assert ran == ["startup"]
    assert len(errors) == 2
    for error, signal_name in zip(errors, ["report-ready", "nobody-listens"], strict=True):
        assert type(error) is RuntimeError
        message = str(error)
        assert f"signal {signal_name!r}" in message
        assert "shuts down" in message
        assert "send_async" in message


def test_a_testclient_request_after_the_with_block_raises(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    ran = recorder(report_ready)
    app = make_app(sending(report_ready))

    with client(app, anyio_backend) as test_client:
        assert test_client.get("/?inside").text == "sent"
    with pytest.raises(RuntimeError, match=OVER):
        test_client.get("/?after")

    assert ran == ["inside"]


# -- the bound -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_past_the_limit_send_background_raises_and_sends_nothing(
    report_ready: NamedSignal,
) -> None:
    releases: dict[str, anyio.Event] = {}
    log: list[str] = []
    errors: list[Exception] = []

    async def blocked(sender: Any, **kwargs: Any) -> None:
        log.append(f"{sender} started")
        await releases.setdefault(sender, anyio.Event()).wait()
        log.append(f"{sender} done")

    def second(sender: Any, **kwargs: Any) -> None:
        log.append(f"{sender} second receiver")

    report_ready.connect(blocked)
    report_ready.connect(second)
    app = make_app(sending(report_ready, errors), background_limit=2)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            assert (await server.get(app, query=b"1")).body == b"sent"
            assert (await server.get(app, query=b"2")).body == b"sent"
            assert (await server.get(app, query=b"3")).body == b"BackgroundLimitError"
            await anyio.wait_all_tasks_blocked()
            assert sorted(log) == ["1 started", "2 started"]

            releases["1"].set()
            await anyio.wait_all_tasks_blocked()
            assert (await server.get(app, query=b"4")).body == b"sent"
            assert (await server.get(app, query=b"5")).body == b"BackgroundLimitError"

            releases["2"].set()
            releases.setdefault("4", anyio.Event()).set()
            await server.shutdown()

    assert not any(entry.startswith(("3 ", "5 ")) for entry in log)
    assert sorted(log) == sorted(
        f"{n} {what}" for n in "124" for what in ("started", "done", "second receiver")
    )
    first_error, second_error = errors
    assert isinstance(first_error, BackgroundLimitError)
    assert isinstance(first_error, RuntimeError)
    message = str(first_error)
    assert "signal 'report-ready'" in message
    assert "background_limit=2" in message
    assert "Nothing was sent" in message
    assert "send_async" in message
    assert "raise the limit" in message
    assert isinstance(second_error, BackgroundLimitError)


@pytest.mark.anyio
async def test_sequential_sends_from_one_endpoint_stop_at_the_limit(
    report_ready: NamedSignal,
) -> None:
    release = anyio.Event()
    ran: list[int] = []
    outcomes: list[str] = []

    async def blocked(sender: int, **kwargs: Any) -> None:
        await release.wait()
        ran.append(sender)

    async def endpoint(request: Request) -> Response:
        for n in range(5):
            try:
                report_ready.send_background(n)
            except BackgroundLimitError:
                outcomes.append(f"{n} refused")
            else:
                outcomes.append(f"{n} sent")
            await anyio.lowlevel.checkpoint()  # the accepted ones start running
        return PlainTextResponse("done")

    report_ready.connect(blocked)
    app = SignalMiddleware(Starlette(routes=[Route("/", endpoint)]), background_limit=3)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.get(app)
            release.set()
            await server.shutdown()

    assert outcomes == ["0 sent", "1 sent", "2 sent", "3 refused", "4 refused"]
    assert sorted(ran) == [0, 1, 2]


@pytest.mark.anyio
async def test_a_sync_endpoint_past_the_limit_gets_the_error(report_ready: NamedSignal) -> None:
    release = anyio.Event()
    ran: list[str] = []
    outcomes: list[str] = []

    async def blocked(sender: str, **kwargs: Any) -> None:
        await release.wait()
        ran.append(sender)

    def endpoint(request: Request) -> Response:  # run in a worker thread
        for sender in ("first", "second"):
            try:
                report_ready.send_background(sender)
            except BackgroundLimitError as exc:
                outcomes.append(f"{sender} refused: {exc}")
            else:
                outcomes.append(f"{sender} sent")
        return PlainTextResponse("done")

    report_ready.connect(blocked)
    app = make_app(Route("/", endpoint), background_limit=1)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            assert (await server.get(app)).body == b"done"
            release.set()
            await server.shutdown()

    first, second = outcomes
    assert first == "first sent"
    assert second.startswith("second refused: ")
    assert "background_limit=1" in second
    assert ran == ["first"]


@pytest.mark.anyio
async def test_failed_and_timed_out_sends_free_their_slot(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    timed_out = anyio.Event()
    outcomes: list[str] = []

    async def receiver(sender: str, **kwargs: Any) -> None:
        if sender == "fail":
            raise Boom("failed")
        if sender == "slow":
            try:
                await anyio.sleep_forever()
            finally:
                timed_out.set()

    async def endpoint(request: Request) -> Response:
        sender = request.url.query
        try:
            report_ready.send_background(sender, _timeout=0.01 if sender == "slow" else None)
        except BackgroundLimitError:
            outcomes.append(f"{sender} refused")
        else:
            outcomes.append(f"{sender} sent")
        return PlainTextResponse("done")

    report_ready.connect(receiver)
    app = make_app(Route("/", endpoint), background_limit=1)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.get(app, query=b"fail")
            await anyio.wait_all_tasks_blocked()
            await server.get(app, query=b"slow")
            await server.get(app, query=b"refused")
            await timed_out.wait()
            await anyio.wait_all_tasks_blocked()
            await server.get(app, query=b"ok")
            await server.shutdown()

    assert outcomes == ["fail sent", "slow sent", "refused refused", "ok sent"]
    failed, timeout = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]
    assert isinstance(failed, Boom)
    assert isinstance(timeout, TimeoutError)


@pytest.mark.anyio
async def test_a_background_receiver_past_the_limit_has_its_error_reported(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    followed_up = asignals.Namespace().signal("followed-up")
    followed = recorder(followed_up)
    reported: list[BaseException] = []

    def chain(sender: Any, **kwargs: Any) -> None:
        followed_up.send_background("chained")

    def on_exception(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reported.append(exception)

    report_ready.connect(chain)
    app = make_app(sending(report_ready), background_limit=1)

    with (
        anyio.fail_after(5),
        asignals.got_background_exception.connected_to(on_exception),
    ):
        async with serving(app, []) as server:
            await server.get(app)
            await anyio.wait_all_tasks_blocked()
            await server.shutdown()

    assert followed == []
    (error,) = reported
    assert isinstance(error, BackgroundLimitError)
    assert "signal 'followed-up'" in str(error)
    (record,) = [r for r in caplog.records if r.name == "asignals"]
    assert name(chain) in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is error


# -- misuse: no lifespan runs here ---------------------------------------------------------


@pytest.mark.anyio
async def test_outside_any_app_context_send_background_raises(report_ready: NamedSignal) -> None:
    with pytest.raises(RuntimeError, match="outside of an application context") as caught:
        report_ready.send_background("no receiver")
    ran = recorder(report_ready)
    with pytest.raises(RuntimeError, match="outside of an application context"):
        report_ready.send_background("with a receiver")
    await anyio.wait_all_tasks_blocked()

    assert ran == []
    message = str(caught.value)
    assert "lifespan" in message
    assert "send_async" in message


@pytest.mark.anyio
async def test_in_an_app_context_pushed_by_hand_send_background_raises(
    report_ready: NamedSignal,
) -> None:
    ran = recorder(report_ready)
    app = make_app(sending(report_ready))

    async with asignals.app_context(app):
        with pytest.raises(RuntimeError, match="pushed by hand") as caught:
            report_ready.send_background("script")
    # Not even while the app's lifespan runs: the context is not the app's.
    with anyio.fail_after(5):
        async with serving(app, []) as server:
            async with asignals.app_context(app):
                with pytest.raises(RuntimeError, match="pushed by hand"):
                    report_ready.send_background("script")
            await anyio.wait_all_tasks_blocked()
            await server.shutdown()

    assert ran == []
    assert "send_async" in str(caught.value)


def test_a_testclient_without_with_raises_saying_to_use_with(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    ran = recorder(report_ready)
    errors: list[Exception] = []
    test_client = client(make_app(sending(report_ready, errors)), anyio_backend)

    assert test_client.get("/").text == "RuntimeError"

    (error,) = errors
    assert type(error) is RuntimeError
    message = str(error)
    assert "lifespan has not started" in message
    assert "`with TestClient(app) as client:`" in message
    assert "send_async" in message
    assert ran == []


def test_a_mounted_sub_app_with_only_its_own_middleware_gets_no_lifespan(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    ran = recorder(report_ready)
    errors: list[Exception] = []
    sub_app = Starlette(routes=[sending(report_ready, errors)])
    sub_app.add_middleware(SignalMiddleware)
    parent = Starlette(routes=[Mount("/sub", app=sub_app)])

    with client(parent, anyio_backend) as test_client:
        assert test_client.get("/sub/").text == "RuntimeError"

    (error,) = errors
    message = str(error)
    assert "lifespan has not started" in message
    assert "a mounted app gets none" in message
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["install", "SignalMiddleware"])
async def test_a_server_without_lifespan_gets_runtime_error(
    form: str, report_ready: NamedSignal
) -> None:
    ran = recorder(report_ready)
    errors: list[Exception] = []
    starlette = Starlette(routes=[sending(report_ready, errors)])
    app: ASGIApp = install(starlette) if form == "install" else SignalMiddleware(starlette)

    with anyio.fail_after(5):
        client = await get(app)
        await anyio.wait_all_tasks_blocked()

    assert client.body == b"RuntimeError"
    (error,) = errors
    message = str(error)
    assert "lifespan has not started" in message
    assert "server with lifespan support" in message
    assert ran == []


# -- settings --------------------------------------------------------------------------------

BAD_SETTINGS = [
    pytest.param({"background_limit": 0}, "background_limit", id="limit-0"),
    pytest.param({"background_limit": -1}, "background_limit", id="limit-negative"),
    pytest.param({"background_limit": 1.5}, "background_limit", id="limit-float"),
    pytest.param({"background_limit": True}, "background_limit", id="limit-bool"),
    pytest.param({"background_limit": "3"}, "background_limit", id="limit-str"),
    pytest.param({"background_grace": -1}, "background_grace", id="grace-negative"),
    pytest.param({"background_grace": math.nan}, "background_grace", id="grace-nan"),
    pytest.param({"background_grace": True}, "background_grace", id="grace-bool"),
    pytest.param({"background_grace": "1"}, "background_grace", id="grace-str"),
]


@pytest.mark.parametrize(("settings", "named"), BAD_SETTINGS)
def test_the_middleware_rejects_bad_background_settings(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        SignalMiddleware(Starlette(), **settings)


@pytest.mark.parametrize(("settings", "named"), BAD_SETTINGS)
def test_install_rejects_bad_background_settings_and_leaves_the_app_alone(
    settings: dict[str, Any], named: str
) -> None:
    app = Starlette()
    build = app.build_middleware_stack
    with pytest.raises(ValueError, match=named):
        install(app, **settings)

    assert app.build_middleware_stack == build
    assert install(app) is app  # installs with the defaults


def test_background_settings_are_accepted_and_read_back() -> None:
    default = SignalMiddleware(Starlette())
    assert (default.background_limit, default.background_grace) == (1000, 10.0)

    endless = SignalMiddleware(Starlette(), background_limit=1, background_grace=math.inf)
    assert (endless.background_limit, endless.background_grace) == (1, math.inf)

    none = SignalMiddleware(Starlette(), background_limit=50, background_grace=0)
    assert (none.background_limit, none.background_grace) == (50, 0)

    app = install(Starlette(), background_limit=7, background_grace=0.5)
    stack = app.build_middleware_stack()
    assert isinstance(stack, SignalMiddleware)
    assert (stack.background_limit, stack.background_grace) == (7, 0.5)


def test_install_twice_with_the_same_background_settings_does_nothing() -> None:
    app = install(Starlette(), background_limit=7, background_grace=math.inf)
    build = app.build_middleware_stack

    assert install(app, background_limit=7, background_grace=math.inf) is app
    assert app.build_middleware_stack is build


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"background_limit": 8}, id="limit"),
        pytest.param({"background_grace": 1.0}, id="grace"),
        pytest.param({}, id="defaults"),
    ],
)
def test_install_again_with_other_background_settings_raises(settings: dict[str, Any]) -> None:
    app = install(Starlette(), background_limit=7, background_grace=0.5)
    build = app.build_middleware_stack

    with pytest.raises(ValueError, match="already installed"):
        install(app, **settings)
    assert app.build_middleware_stack is build


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"background_limit": True}, id="limit-bool"),
        pytest.param({"background_limit": 1.0}, id="limit-float"),
        pytest.param({"background_grace": True}, id="grace-bool"),
    ],
)
def test_install_again_validates_settings_equal_to_the_installed_ones(
    settings: dict[str, Any],
) -> None:
    # True == 1 == 1.0: invalid values that compare equal to the installed ones.
    app = install(Starlette(), background_limit=1, background_grace=1)

    with pytest.raises(ValueError, match="background_"):
        install(app, **{"background_limit": 1, "background_grace": 1, **settings})


# -- under uvicorn ---------------------------------------------------------------------------


# uvicorn runs on asyncio only (its server is written on asyncio's loop and
# protocols; it has no trio support), so this test runs on asyncio alone.
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_under_uvicorn_shutdown_waits_for_a_background_receiver(
    anyio_backend: str, report_ready: NamedSignal
) -> None:
    log: list[str] = []
    started = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        log.append("receiver started")
        started.set()
        assert watched.shutdown_sent is not None
        await watched.shutdown_sent.wait()
        await anyio.lowlevel.checkpoint()
        log.append("receiver done")

    async def endpoint(request: Request) -> Response:
        report_ready.send_background("uvicorn")
        await started.wait()  # still running as the response goes out
        return PlainTextResponse("sent")

    report_ready.connect(slow)
    app = make_app(Route("/", endpoint), lifespan=logging_lifespan(log))
    watched = Watched(app, log)

    # A socket bound and listening before the server starts: the request waits
    # in its backlog until uvicorn serves, so nothing polls server.started.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            watched, host="127.0.0.1", port=port, lifespan="on", log_level="warning"
        )
        server = uvicorn.Server(config)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(server.serve, [sock])
                async with httpx2.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{port}/")
                assert server.started
                assert response.text == "sent"
                assert "receiver done" not in log
                server.should_exit = True
    finally:
        sock.close()

    assert log == [
        "lifespan.startup",
        "app startup",
        "lifespan.startup.complete",
        "receiver started",
        "lifespan.shutdown",
        "receiver done",
        "app shutdown",
        "lifespan.shutdown.complete",
    ]


# -- a send cancelled before it began ---------------------------------------------------


@pytest.mark.anyio
async def test_a_send_cancelled_before_it_began_runs_nothing_and_is_logged(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    # Driven through the internals: a shutdown that cancels a send between
    # its start and its task's first step cannot be ordered from outside.
    from asignals._background import Background, _BackgroundSend

    ran = recorder(report_ready)
    pushed: list[Any] = []
    torn_down: list[Any] = []
    with (
        asignals.appcontext_pushed.connected_to(lambda sender, **kwargs: pushed.append(sender)),
        asignals.appcontext_tearing_down.connected_to(
            lambda sender, **kwargs: torn_down.append(sender)
        ),
    ):
        async with anyio.create_task_group() as tasks:
            background = Background(tasks, limit=10, grace=0)
            entries = report_ready._lookup("job")[0]
            send = _BackgroundSend(
                background, "the-app", report_ready, entries, "job", {}, False, None
            )
            background.start(send)
            send.cancel("the test cancelled it")
            with anyio.fail_after(5):
                await background.idle()

    assert ran == []
    assert pushed == []
    assert torn_down == []
    (message,) = background_errors(caplog)
    assert "cancelled: the test cancelled it" in message
    assert "(sender 'job')" in message
    assert "recorder.<locals>.record" in message.split("not called:")[1]

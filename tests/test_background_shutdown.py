"""Background sends at the end of the app's lifespan.

The drain at shutdown (before the app's own shutdown code, sends made during
it included), the grace period and its cancellations, a lifespan cancelled,
ended early or failed, a send cancelled before it began, and one run under a
real uvicorn server. Most tests play the
server by hand (raw ASGI), so that they can see and order every lifespan
message.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import Boom, client
from lifespan_driving import OVER, Server, make_app, name, recorder, sending, serving
from raw_asgi import SHUTDOWN, STARTUP
from serving import loopback_listener
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import asignals
from asignals import NamedSignal, SignalMiddleware, install


def background_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "asignals" and record.levelno == logging.ERROR
    ]


def logging_lifespan(log: list[str]) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.append("app startup")
        yield
        log.append("app shutdown")

    return lifespan


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
    with loopback_listener() as sock:
        host, port = sock.getsockname()
        config = uvicorn.Config(watched, host=host, port=port, lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(server.serve, [sock])
                async with httpx2.AsyncClient() as client:
                    response = await client.get(f"http://{host}:{port}/")
                assert server.started
                assert response.text == "sent"
                assert "receiver done" not in log
                server.should_exit = True

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

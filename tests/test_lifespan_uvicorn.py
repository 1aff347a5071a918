"""A lifespan whose startup fails (its startup code raises, or an
``appcontext_pushed`` receiver does) under a server that does not wait for it
to end: ``appcontext_tearing_down`` gets the startup's error as ``exc``, once.

uvicorn, told ``lifespan.startup.failed``, exits at once (``sys.exit`` in its
startup, which leaves the event loop); asyncio.run then cancels the tasks
left, among them the lifespan's, still closing. That cancellation came after
the failure and must not stand in for it. A cancellation that comes before
the startup failed is what ended the lifespan, and stays its ``exc``.

uvicorn runs on asyncio only (its loop choices are asyncio and uvloop), so
the real server runs the app on those; the server's behaviour is played by
hand on asyncio and trio.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from asgi_apps import APP_TEARDOWN, POPPED, PUSHED, Recorder, assert_contexts_reset, is_cancellation
from helpers import Boom, receiver_of
from raw_asgi import STARTUP, Canceller, Client, lifespan_scope
from serving import UvicornProcess
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message
from uvicorn_lifespan_app import MARK

import asignals
from asignals import NamedSignal, g, install

# uvicorn's exit status when the app's startup failed.
STARTUP_FAILURE = 3

STARTUP_ERROR = ("uvicorn_lifespan_app.StartupError", "the lifespan's startup failed")
RECEIVER_ERROR = ("uvicorn_lifespan_app.ReceiverError", "the appcontext_pushed receiver failed")

# How the startup fails under uvicorn: the app's factory in
# uvicorn_lifespan_app.py, and the error the teardown should get.
UNDER_UVICORN = {
    "startup": ("startup_raises", STARTUP_ERROR),
    "appcontext_pushed": ("appcontext_pushed_raises", RECEIVER_ERROR),
    # With a background send running, which the closing lifespan waits for.
    "startup-while-sending": ("startup_raises_while_sending", STARTUP_ERROR),
}
FAILURES = ["startup", "appcontext_pushed"]

# uvloop is in the test extra: uvicorn picks it when it is installed.
LOOPS = ["asyncio", "uvloop"]


# -- under a real uvicorn server ---------------------------------------------------------


@pytest.mark.parametrize("receivers", ["sync", "async"])
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("failure", list(UNDER_UVICORN))
def test_under_uvicorn_a_failed_startup_is_the_teardowns_exc(
    failure: str, loop: str, receivers: str
) -> None:
    factory, (error_type, message) = UNDER_UVICORN[failure]
    server = UvicornProcess(
        f"uvicorn_lifespan_app:{factory}",
        *("--factory", "--app-dir", "tests", "--loop", loop, "--lifespan", "on"),
        env={"RECEIVERS": receivers},
    )
    try:
        returncode = server.wait_for_exit()
    finally:
        server.stop()
        print(f"The server's output:\n{server.output}")

    reports = [
        json.loads(line.removeprefix(MARK)) for line in server.lines if line.startswith(MARK)
    ]
    # The lifespan's app context is the first (a background send has its own).
    lifespan = [report for report in reports if report.get("context") == 0]
    pushed = [report for report in reports if report["signal"] == "appcontext_pushed"]
    popped = [report for report in reports if report["signal"] == "appcontext_popped"]
    assert returncode == STARTUP_FAILURE
    assert "Application startup failed. Exiting." in server.output
    assert lifespan == [
        {"signal": "appcontext_pushed", "context": 0},
        {
            "signal": "appcontext_tearing_down",
            "context": 0,
            "exc_type": error_type,
            "exc_message": message,
        },
    ]
    assert len(popped) == len(pushed)


# -- the same server played by hand ---------------------------------------------------------


def failing_app(failure: str, error: Exception) -> ASGIApp:
    """An installed app whose startup fails with ``error``, raised by its
    lifespan's startup code, or by the ``appcontext_pushed`` receiver that the
    test connects."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if failure == "startup":
            raise error
        yield

    return install(Starlette(lifespan=lifespan))


class Recorded:
    """``appcontext_tearing_down`` and ``appcontext_popped`` receivers of a
    ``kind``, connected for the block, and what they got; and, if
    ``pushed_raises``, an ``appcontext_pushed`` receiver that raises it."""

    def __init__(self, kind: str, pushed_raises: Exception | None) -> None:
        self.kind = kind
        self.pushed_raises = pushed_raises
        self.torn_down: list[BaseException | None] = []
        self.popped = 0

    def __enter__(self) -> Recorded:
        def pushed(sender: Any) -> None:
            if self.pushed_raises is not None:
                raise self.pushed_raises

        def tearing_down(sender: Any, exc: BaseException | None) -> None:
            self.torn_down.append(exc)

        def popped(sender: Any) -> None:
            self.popped += 1

        self.receivers = [
            (asignals.appcontext_pushed, receiver_of(self.kind, pushed)),
            (asignals.appcontext_tearing_down, receiver_of(self.kind, tearing_down)),
            (asignals.appcontext_popped, receiver_of(self.kind, popped)),
        ]
        for signal, receiver in self.receivers:
            signal.connect(receiver)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signal, receiver in self.receivers:
            signal.disconnect(receiver)


class GivingUp(Client):
    """The server's side of a lifespan that, told the startup failed, gives up
    on it: ``give_up()`` runs as ``lifespan.startup.failed`` arrives, before
    the app goes on."""

    def __init__(self, give_up: Any) -> None:
        super().__init__(STARTUP)
        self.give_up = give_up

    async def send(self, message: Message) -> None:
        await super().send(message)
        if message["type"] == "lifespan.startup.failed":
            self.give_up()


@pytest.mark.anyio
@pytest.mark.parametrize("failure", FAILURES)
async def test_a_cancellation_after_the_startup_failed_leaves_the_failure_as_exc(
    failure: str, receiver_kind: str, signals: Recorder
) -> None:
    """The server cancels the lifespan (a cancel scope's cancellation, on
    asyncio and trio) as soon as it is told the startup failed: every
    checkpoint after it is cancelled."""
    error = Boom(failure)
    app = failing_app(failure, error)
    pushed_raises = error if failure == "appcontext_pushed" else None
    raised: list[BaseException] = []

    with Recorded(receiver_kind, pushed_raises) as recorded, anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            server = GivingUp(scope.cancel)
            try:
                await app(lifespan_scope(), server.receive, server.send)
            except Boom as exc:
                raised.append(exc)

    assert server.types == ["lifespan.startup.failed"]
    assert recorded.torn_down == [error]
    assert recorded.popped == 1
    # The failure propagates, or else the cancellation that came after it.
    assert raised == [error] or (raised == [] and scope.cancelled_caught)
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert signals.kwargs(APP_TEARDOWN) == {"exc": error}
    assert_contexts_reset()


# asyncio's own Task.cancel(), delivered once, as asyncio.run does to the tasks
# uvicorn leaves when it exits: on asyncio alone.
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("failure", FAILURES)
async def test_an_asyncio_task_cancelled_after_the_startup_failed_keeps_the_failure_as_exc(
    anyio_backend: str, failure: str, receiver_kind: str, signals: Recorder
) -> None:
    error = Boom(failure)
    app = failing_app(failure, error)
    pushed_raises = error if failure == "appcontext_pushed" else None

    def cancel_the_lifespan() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    server = GivingUp(cancel_the_lifespan)

    async def run_lifespan() -> None:
        await app(lifespan_scope(), server.receive, server.send)

    with Recorded(receiver_kind, pushed_raises) as recorded, anyio.fail_after(5):
        task = asyncio.create_task(run_lifespan())
        with pytest.raises((asyncio.CancelledError, Boom)) as raised:
            await task

    assert server.types == ["lifespan.startup.failed"]
    assert recorded.torn_down == [error]
    assert recorded.popped == 1
    assert isinstance(raised.value, asyncio.CancelledError) or raised.value is error
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]


@pytest.mark.anyio
async def test_a_cancellation_before_the_startup_failed_is_the_exc(
    receiver_kind: str, signals: Recorder
) -> None:
    """A lifespan cancelled while its startup code runs: the cancellation
    ended it."""
    canceller = Canceller()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        canceller.trigger.set()
        await anyio.sleep_forever()
        yield  # pragma: no cover

    app = install(Starlette(lifespan=lifespan))
    with Recorded(receiver_kind, None) as recorded, anyio.fail_after(5):
        await canceller.call(app, lifespan_scope(), Client(STARTUP))

    assert canceller.scope.cancelled_caught
    assert not canceller.app_returned
    (exc,) = recorded.torn_down
    assert is_cancellation(exc)
    assert recorded.popped == 1
    assert signals.names == [PUSHED, APP_TEARDOWN, POPPED]
    assert_contexts_reset()


@pytest.mark.anyio
async def test_a_cancellation_while_a_failed_lifespan_drains_its_sends_leaves_the_failure_as_exc(
    receiver_kind: str, report_ready: NamedSignal
) -> None:
    """The startup sent in the background, then failed: its sends get the
    grace period, which the server's cancellation cuts short."""
    error = Boom("startup")
    started = anyio.Event()

    async def stuck(sender: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        g.phase = "startup"
        report_ready.send_background("startup")
        await started.wait()
        raise error
        yield  # pragma: no cover

    torn_down: list[tuple[Any, BaseException | None]] = []

    def tearing_down(sender: Any, exc: BaseException | None) -> None:
        # The lifespan's, not the background send's own app context's.
        torn_down.append((g.get("phase"), exc))

    report_ready.connect(stuck)
    app = install(Starlette(lifespan=lifespan))
    receiver = receiver_of(receiver_kind, tearing_down)
    with asignals.appcontext_tearing_down.connected_to(receiver), anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            server = GivingUp(scope.cancel)
            await app(lifespan_scope(), server.receive, server.send)

    assert scope.cancelled_caught
    assert server.types == ["lifespan.startup.failed"]
    assert [exc for phase, exc in torn_down if phase == "startup"] == [error]

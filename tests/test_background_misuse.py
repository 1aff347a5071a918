"""send_background() where no lifespan runs: once the app's lifespan is over,
under a server without lifespan support, a TestClient used without ``with``,
and a mounted app with only its own middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from helpers import client
from lifespan_driving import OVER, get, make_app, recorder, sending, serving
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

import asignals
from asignals import BackgroundError, NamedSignal, SignalMiddleware, install

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

    assert client.body == b"BackgroundError"
    (error,) = errors
    assert type(error) is BackgroundError
    assert isinstance(error, RuntimeError)
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
        assert type(error) is BackgroundError
        assert isinstance(error, RuntimeError)
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

    assert test_client.get("/").text == "BackgroundError"

    (error,) = errors
    assert type(error) is BackgroundError
    assert isinstance(error, RuntimeError)
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
        assert test_client.get("/sub/").text == "BackgroundError"

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

    assert client.body == b"BackgroundError"
    (error,) = errors
    message = str(error)
    assert "lifespan has not started" in message
    assert "server with lifespan support" in message
    assert ran == []

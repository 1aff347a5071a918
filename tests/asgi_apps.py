"""Scopes, apps, endpoints and the lifecycle recorder of the raw-ASGI
middleware tests (test_middleware_asgi.py, test_middleware_asgi_cancellation.py);
its ``signals`` fixture is registered in conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

import asignals
from asignals import SignalMiddleware, current_app, g, install

PUSHED = "appcontext_pushed"
STARTED = "request_started"
FINISHED = "request_finished"
GOT = "got_request_exception"
REQUEST_TEARDOWN = "request_tearing_down"
APP_TEARDOWN = "appcontext_tearing_down"
POPPED = "appcontext_popped"
WS_STARTED = "websocket_started"
WS_FINISHED = "websocket_finished"
WS_GOT = "got_websocket_exception"
WS_TEARDOWN = "websocket_tearing_down"

LIFECYCLE = [
    PUSHED,
    STARTED,
    FINISHED,
    GOT,
    REQUEST_TEARDOWN,
    APP_TEARDOWN,
    POPPED,
    WS_STARTED,
    WS_FINISHED,
    WS_GOT,
    WS_TEARDOWN,
]

NORMAL = [PUSHED, STARTED, FINISHED, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
# Cancelled or failed before the response started, with no response sent.
NO_RESPONSE = [PUSHED, STARTED, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
# An unhandled exception once the response started (mid-stream): no 500.
FAILED_MID_STREAM = [PUSHED, STARTED, FINISHED, GOT, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]

# The ways a Starlette app gets the middleware.
FORMS = ["install", "wrap", "add_middleware"]


# Scopes and the server side of a connection.


def build(form: str, routes: list[BaseRoute], **options: Any) -> tuple[ASGIApp, Starlette]:
    """A Starlette app with the middleware installed the ``form`` way: the
    ASGI callable to call, and the app (every signal's sender)."""
    app = Starlette(routes=routes, **options)
    if form == "install":
        return install(app), app
    if form == "wrap":
        return SignalMiddleware(app), app
    app.add_middleware(SignalMiddleware)
    return app, app


def assert_contexts_reset() -> None:
    proxies: tuple[Any, ...] = (current_app, g, asignals.request)
    for proxy in proxies:
        with pytest.raises(RuntimeError, match="Working outside"):
            proxy._get_current_object()


def is_cancellation(exc: object) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())


# Recording the lifecycle signals.


class Recorder:
    """Every lifecycle signal sent while the fixture is active, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    @property
    def senders(self) -> set[int]:
        return {id(sender) for _, sender, _ in self.calls}

    def kwargs(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``name``'s only send."""
        (kwargs,) = [kwargs for called, _, kwargs in self.calls if called == name]
        return kwargs


@pytest.fixture
def signals() -> Iterator[Recorder]:
    recorder = Recorder()
    connected = []
    for name in LIFECYCLE:

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            recorder.calls.append((_name, sender, kwargs))

        signal = getattr(asignals, name)
        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
    try:
        yield recorder
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver)


# Endpoints.


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


# 3. Unhandled exceptions in each install form.

FAILED_BEFORE_RESPONSE = {
    # The hook inside Starlette's error middleware sends got_request_exception
    # before the 500 is made, as in Flask.
    "install": [PUSHED, STARTED, GOT, FINISHED, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED],
    "wrap": [PUSHED, STARTED, GOT, FINISHED, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED],
    # The 500 is made outside the middleware: no request_finished.
    "add_middleware": [PUSHED, STARTED, GOT, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED],
}

"""The server's side of a lifespan driven by hand over raw ASGI, and the
apps and signal the shutdown tests use (test_background_shutdown.py,
test_background_limit.py, test_background_misuse.py); its ``report_ready``
fixture is registered in conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from raw_asgi import HTTP_REQUEST, SHUTDOWN, STARTUP, Client, call, http_scope, lifespan_scope
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message

import asignals
from asignals import NamedSignal, install

OVER = "after the app's lifespan was over"


@pytest.fixture
def report_ready() -> NamedSignal:
    """A fresh signal for each test, named as the log messages name it."""
    return asignals.Namespace().signal("report-ready")


def recorder(signal: NamedSignal) -> list[Any]:
    """The senders of ``signal``'s sends that reached a receiver."""
    ran: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        ran.append(sender)

    signal.connect(record, weak=False)
    return ran


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


def name(receiver: Callable[..., Any]) -> str:
    """How the log messages name a receiver."""
    return f"{receiver.__module__}.{receiver.__qualname__}"

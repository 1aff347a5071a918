"""Apps in each install form and a lifespan run by hand, for the
send_background() tests (test_background.py, test_background_dispatch.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel
from fastapi import FastAPI
from raw_asgi import HTTP_REQUEST, SHUTDOWN, STARTUP, Client, call, http_scope, lifespan_scope
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Scope

import asignals
from asignals import SignalMiddleware, current_app, install

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


def the_app() -> Any:
    return current_app._get_current_object()


def request_is_unavailable() -> bool:
    try:
        _ = asignals.request.scope
    except RuntimeError:
        return True
    return False


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

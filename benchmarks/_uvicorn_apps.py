"""The apps that ``bench_uvicorn.py`` serves, one factory per candidate:

    python -m uvicorn --app-dir benchmarks --factory _uvicorn_apps:bare

Every candidate is the same Starlette app: ``/`` returns a plain-text "ok"
(what the load generator asks for), and ``/calls`` answers, as JSON, whether
asignals handles the request and how many times each receiver connected by
:func:`asignals_receivers` ran, so that the benchmark can check that each
server runs what it says. A factory connects receivers only when it is called,
so only the server that serves that candidate has them.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import asignals

# The signals of a plain request that succeeds, in the order they are sent.
SIGNALS = (
    asignals.appcontext_pushed,
    asignals.request_started,
    asignals.request_finished,
    asignals.request_tearing_down,
    asignals.appcontext_tearing_down,
    asignals.appcontext_popped,
)

calls: dict[str, int] = {}


class PassThrough:
    """The least a pure ASGI middleware can do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class CallNext(BaseHTTPMiddleware):
    """The least a ``BaseHTTPMiddleware`` can do."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def report(request: Request) -> JSONResponse:
    return JSONResponse({"handled": bool(asignals.current_app), "calls": calls})


def make_app(middleware: list[Middleware] | None = None) -> Starlette:
    return Starlette(routes=[Route("/", homepage), Route("/calls", report)], middleware=middleware)


def bare() -> Starlette:
    return make_app()


def install_pass_through(app: Starlette) -> Starlette:
    """Put a PassThrough where ``asignals.install`` puts SignalMiddleware:
    around the middleware stack the app builds, outside its error handling."""
    build = app.build_middleware_stack

    def build_with_pass_through() -> ASGIApp:
        return PassThrough(build())

    app.build_middleware_stack = build_with_pass_through  # type: ignore[method-assign]
    return app


def pass_through() -> Starlette:
    return install_pass_through(make_app())


def base_http_middleware() -> Starlette:
    return make_app([Middleware(CallNext)])


def asignals_install() -> Starlette:
    return asignals.install(make_app())


def asignals_receivers() -> Starlette:
    """``asignals_install`` with one sync receiver on each signal of a plain
    request, counting its calls."""
    for signal in SIGNALS:
        name = signal.name
        calls[name] = 0

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            calls[name] += 1

        signal.connect(receiver, weak=False)
    return asignals_install()

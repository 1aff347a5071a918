"""The apps that ``bench_uvicorn.py`` serves, one factory per candidate:

    python -m uvicorn --app-dir benchmarks --factory _uvicorn_apps:bare

Every candidate is the same Starlette app: ``/`` returns a plain-text "ok"
(what the load generator asks for), and ``/calls`` answers, as JSON, whether
asignals handles the request, how many times each receiver connected by
:func:`asignals_receivers` ran, and which of uvicorn's HTTP implementations and
which event loop serve it, so that the benchmark can check that each server
runs what it says. A factory connects receivers only when it is called, so
only the server that serves that candidate has them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
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
    # uvicorn imports only the HTTP implementation it was told to use
    # (uvicorn.protocols.http.h11_impl or httptools_impl).
    http = sorted(
        name.rsplit(".", 1)[1].removesuffix("_impl")
        for name in sys.modules
        if name.startswith("uvicorn.protocols.http.") and name.endswith("_impl")
    )
    # asyncio's own loop is asyncio.unix_events' (or windows_events'), uvloop's is uvloop's.
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return JSONResponse(
        {"handled": bool(asignals.current_app), "calls": calls, "http": http, "loop": loop}
    )


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
    request, counting its calls, connected for the app as Flask's docs do it
    (``connect_via(app)``): they run for this app's requests only."""
    app = make_app()
    for signal in SIGNALS:
        name = signal.name
        calls[name] = 0

        @signal.connect_via(app)
        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            calls[name] += 1

    return asignals.install(app)


# The load test's app (load_test.py): many receivers on every signal of a
# plain request, one in ten of them failing, with receiver_errors="log".
RECEIVERS_PER_SIGNAL = 10
# For each signal, the requests its first receiver saw; "calls": the calls of
# all receivers that did not fail; "failed": those that failed; "logged":
# the records asignals logged.
load_counts: dict[str, int] = {"calls": 0, "failed": 0, "logged": 0}
log_messages: list[str] = []


class Failing(Exception):
    """What a failing receiver of the load test raises."""


class CountRecords(logging.Handler):
    """Counts the records of asignals' logger, keeping the first message."""

    def emit(self, record: logging.LogRecord) -> None:
        load_counts["logged"] += 1
        if not log_messages:
            log_messages.append(record.getMessage())


def load_test() -> Starlette:
    for signal in SIGNALS:
        name = signal.name
        load_counts[name] = 0
        for i in range(RECEIVERS_PER_SIGNAL):
            signal.connect(make_load_receiver(name, i), weak=False)
    logger = logging.getLogger("asignals")
    logger.addHandler(CountRecords())
    logger.propagate = False
    app = make_app()
    app.add_route("/report", load_report)
    return asignals.install(app, receiver_errors="log")


def make_load_receiver(name: str, i: int) -> Any:
    """The ``i``-th receiver of signal ``name``: sync or async (alternately),
    counting its calls; the last of each signal's receivers fails."""
    failing = i == RECEIVERS_PER_SIGNAL - 1
    if i % 2:

        async def async_receiver(sender: Any, **kwargs: Any) -> None:
            count(name, i, failing)

        receiver: Any = async_receiver
    else:

        def sync_receiver(sender: Any, **kwargs: Any) -> None:
            count(name, i, failing)

        receiver = sync_receiver
    receiver.__qualname__ = f"{name}_receiver_{i}" + ("_failing" if failing else "")
    return receiver


def count(name: str, i: int, failing: bool) -> None:
    if failing:
        load_counts["failed"] += 1
        raise Failing(f"a failing receiver of {name}")
    load_counts["calls"] += 1
    if i == 0:
        load_counts[name] += 1


async def load_report(request: Request) -> JSONResponse:
    return JSONResponse({"counts": load_counts, "first_log_message": log_messages[:1]})


# The monitor's benchmark (bench_monitor.py): 3 sync receivers on each
# signal of a plain request, for the app, with or without a monitor mounted.
MONITOR_RECEIVERS = 3


def _with_receivers(app: Starlette) -> Starlette:
    for signal in SIGNALS:
        for i in range(MONITOR_RECEIVERS):

            @signal.connect_via(app)
            def receiver(sender: Any, i: int = i, **kwargs: Any) -> None:
                pass

    return asignals.install(app)


def receivers_no_monitor() -> Starlette:
    return _with_receivers(make_app())


def receivers_monitor() -> Starlette:
    """The same app with a SignalMonitor mounted at /signals, open to as
    many pages as the benchmark opens."""
    from asignals.monitor import SignalMonitor

    app = make_app()
    app.router.routes.append(Mount("/signals", app=SignalMonitor(max_views=1000)))
    return _with_receivers(app)

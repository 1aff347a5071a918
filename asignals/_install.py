"""How asignals goes into a Starlette (or FastAPI) app: :func:`install`,
which puts :class:`~asignals.SignalMiddleware` around the middleware stack
the app builds, and the hook in the app's error middleware (and in those of
the apps mounted in it) that sends ``got_request_exception`` before the 500
response, as Flask orders them.

The hook costs a request nothing: it wraps the error middleware's handler,
which runs only for an unhandled exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from ._exceptions import ArgumentError, InvalidValueError, UsageError
from ._middleware import _STATE, SignalMiddleware, _Request, check_bridge, check_settings
from ._plans import own_sessions, wrapped
from ._requests import name_app
from ._starlette import Starlette

if TYPE_CHECKING:
    from .bridge import RedisBridge

logger = logging.getLogger("asignals")

AppT = TypeVar("AppT", bound=Starlette)


def install(
    app: AppT,
    *,
    receiver_errors: Literal["raise", "log"] = "raise",
    background_limit: int = 1000,
    background_grace: float = 10.0,
    name: str | None = None,
    bridge: RedisBridge | None = None,
) -> AppT:
    """Send the lifecycle signals for a Starlette or FastAPI ``app``, with
    ``app`` as sender, and return ``app``.

    The middleware goes around the whole app, outside Starlette's error
    handling, so an unhandled exception gives ``got_request_exception`` and
    then ``request_finished`` with the 500 response the client gets, as in
    Flask. The app object stays the same (routes, ``app.state``, TestClient).
    Call it before the app handles its first request or lifespan; calling it
    again with the same settings does nothing, with others is a
    ``ValueError``. ``receiver_errors``, ``background_limit`` and
    ``background_grace`` are as for :class:`SignalMiddleware`, and so is
    ``bridge``, a :class:`~asignals.bridge.RedisBridge` that the app's
    lifespan starts and stops.

    ``name`` is the name the app sends with, which Flask's receivers read as
    ``sender.name``: asignals sets it as ``app.name`` unless the app has a
    ``name`` attribute of its own, which is never replaced (a different
    ``name=`` is a ``ValueError``). Without it, a FastAPI app's ``title``;
    else, as Flask's import name, the name of the module that calls
    ``install()`` (for a script run as ``python app.py``, ``"app"``).

    >>> from starlette.applications import Starlette
    >>> app = install(Starlette())
    """
    if not isinstance(app, Starlette):
        raise ArgumentError(
            f"install() takes a Starlette or FastAPI app, not {app!r}; wrap any "
            "other ASGI app with SignalMiddleware(app)."
        )
    # Checked before they are compared with those installed: True == 1.
    check_settings(receiver_errors, background_limit, background_grace)
    check_bridge(bridge)
    name_app(app, name)
    build = app.build_middleware_stack
    settings = {
        "receiver_errors": receiver_errors,
        "background_limit": background_limit,
        "background_grace": background_grace,
        "bridge": bridge,
    }
    installed = getattr(build, "_asignals_settings", None)
    if installed == settings:
        return app
    if installed is not None:
        given = ", ".join(f"{k}={v!r}" for k, v in installed.items())
        raise InvalidValueError(
            f"asignals is already installed on this app with {given}; "
            "it cannot be installed again with other settings."
        )
    if app.middleware_stack is not None:
        raise UsageError(
            "install(app) must be called before the app handles its first "
            "request or lifespan: its middleware stack is already built."
        )
    # The middleware goes around the stack the app builds, once it is built.
    middleware = SignalMiddleware(
        _not_built,
        receiver_errors=receiver_errors,
        background_limit=background_limit,
        background_grace=background_grace,
        bridge=bridge,
    )
    middleware._sender = middleware._wrapped = app

    def build_with_signals() -> ASGIApp:
        outer, tracing, stack = _split_tracing(build())
        middleware.app = stack
        _hook(app, stack, middleware, top=True, starts=True)
        if tracing is None:
            return middleware
        tracing.app = middleware
        return outer

    build_with_signals._asignals_settings = settings  # type: ignore[attr-defined]
    app.build_middleware_stack = build_with_signals  # type: ignore[method-assign]
    return app


def _split_tracing(stack: ASGIApp) -> tuple[ASGIApp, Any, ASGIApp]:
    """Where in ``stack`` the middleware goes if OpenTelemetry's ASGI
    middleware is there: inside it, so that the request's span is current
    as the lifecycle signals are sent (their spans are its children), and
    outside the error middleware as ever. Returns the stack's new top, the
    OpenTelemetry middleware whose app the middleware becomes (or None),
    and the stack the middleware wraps.

    Its two places: FastAPI's instrumentor puts it outside the error
    middleware, inside another (``FastAPIInstrumentor.instrument_app``
    before ``install``); Starlette's adds it as the first user middleware,
    inside the error middleware, whence it is taken out.
    """
    if not isinstance(stack, ServerErrorMiddleware) or not _is_tracing(stack.app):
        if any(_is_tracing(node) for node in wrapped(stack)):
            logger.warning(
                "OpenTelemetry's ASGI middleware is not the app's outermost middleware: "
                "the spans of asignals' sends will not be children of the request's span. "
                "Make it the outermost (add it after the others, or wrap the app: "
                "OpenTelemetryMiddleware(app))."
            )
        return stack, None, stack
    tracing: Any = stack.app
    if isinstance(tracing.app, ServerErrorMiddleware):
        return stack, tracing, tracing.app
    stack.app = tracing.app
    return tracing, tracing, stack


def _is_tracing(app: object) -> bool:
    """Whether ``app`` is OpenTelemetry's ASGI middleware (not imported)."""
    kind = type(app)
    return kind.__name__ == "OpenTelemetryMiddleware" and kind.__module__.startswith(
        "opentelemetry.instrumentation.asgi"
    )


async def _not_built(scope: Scope, receive: Receive, send: Send) -> None:
    raise UsageError("install(): the app's middleware stack is not built yet")


def hook_when_built(app: Starlette, middleware: SignalMiddleware) -> None:
    """Hook ``app``'s error middleware for ``SignalMiddleware(app)``: now, if
    ``app`` has built its middleware stack, else as it builds it, during the
    first request or lifespan."""
    _when_built(app, lambda stack: _hook(app, stack, middleware, top=True, starts=False))


def _when_built(app: Starlette, then: Callable[[ASGIApp], None]) -> None:
    """Call ``then`` with the middleware stack of ``app``: now if it is
    built, else each time the app builds it."""
    if app.middleware_stack is not None:
        then(app.middleware_stack)
        return
    build = app.build_middleware_stack

    def build_hooked() -> ASGIApp:
        stack = build()
        then(stack)
        return stack

    # What install() left on it, so that installing again still sees it.
    settings = getattr(build, "_asignals_settings", None)
    if settings is not None:
        build_hooked._asignals_settings = settings  # type: ignore[attr-defined]
    app.build_middleware_stack = build_hooked  # type: ignore[method-assign]


def _hook(
    app: Starlette,
    stack: ASGIApp,
    middleware: SignalMiddleware,
    *,
    top: bool = False,
    starts: bool = False,
) -> None:
    """Hook the error middleware of ``app``'s built ``stack`` for
    ``middleware``, and, as they are built, those of the Starlette (and
    FastAPI) apps mounted in it at any depth: each makes its own 500
    response, which must come after ``got_request_exception`` too. ``top``:
    ``app`` is the one the middleware serves; ``starts``: the middleware,
    outside the error middleware (install()), has it answer when a
    ``request_started`` receiver raises."""
    while isinstance(stack, SignalMiddleware):  # installed there too
        stack = stack.app
    if isinstance(stack, ServerErrorMiddleware) and _is_tracing(stack.app):
        # FastAPI's instrumentor's: the error middleware with the app's
        # handler is inside OpenTelemetry's (and asignals', if installed
        # there too), which another wraps.
        inner: Any = stack.app.app  # type: ignore[attr-defined]
        while isinstance(inner, SignalMiddleware):
            inner = inner.app
        if isinstance(inner, ServerErrorMiddleware):
            stack = inner
    if isinstance(stack, ServerErrorMiddleware):
        _hook_error_middleware(stack, middleware, own_sessions(app))
        if top:
            middleware._hooked = True
            if starts:
                middleware._error_middleware = stack
    _hook_mounted_apps(app.routes, middleware)


def _hook_mounted_apps(routes: list[BaseRoute], middleware: SignalMiddleware) -> None:
    for route in routes:
        if not isinstance(route, (Mount, Host)):
            continue
        mounted = _starlette_app(route.app)
        if mounted is not None:
            _when_built(mounted, partial(_hook, mounted, middleware=middleware))
        else:
            _hook_mounted_apps(route.routes, middleware)


def _starlette_app(app: object) -> Starlette | None:
    """The Starlette app that ``app`` is, or that it wraps (middleware of a
    mount, another ASGI wrapper, followed through ``.app``), or None."""
    return next((node for node in wrapped(app) if isinstance(node, Starlette)), None)


def _hook_error_middleware(
    error_middleware: ServerErrorMiddleware, middleware: SignalMiddleware, sessions: bool
) -> None:
    """Wrap the handler of ``error_middleware`` so that, for a request that
    ``middleware`` serves, ``got_request_exception`` is sent before the 500
    response is made. The handler then makes the response the error
    middleware would have made: the traceback page in debug mode, the app's
    own handler for 500 errors, or Starlette's plain 500."""
    handler = error_middleware.handler
    debug = error_middleware.debug

    async def hooked(request: Request, exc: Exception) -> Response:
        state = request.scope.get(_STATE)
        if type(state) is _Request and state.middleware is middleware:
            await state.hooked(exc, sessions)
        if debug:
            return await run_in_threadpool(error_middleware.debug_response, request, exc)
        if handler is None:
            return error_middleware.error_response(request, exc)
        # Told apart as the error middleware tells them apart.
        if is_async_callable(handler):
            return cast(Response, await handler(request, exc))  # type: ignore[arg-type]
        return cast(Response, await run_in_threadpool(handler, request, exc))

    # The error middleware calls its handler unless it is in debug mode: the
    # hooked handler takes that over.
    error_middleware.debug = False
    error_middleware.handler = hooked

"""The ASGI middleware that sends Flask's lifecycle signals for Starlette
(and any ASGI) apps, and ``install`` that puts it around a whole app."""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Any, Literal, TypeVar

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._context import (
    AppContext,
    RequestContext,
    _request_ctx,
    log_failures,
    raise_failures,
)
from ._lifecycle import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    got_request_exception,
    got_websocket_exception,
    request_finished,
    request_started,
    request_tearing_down,
    websocket_finished,
    websocket_started,
    websocket_tearing_down,
)
from ._signal import Failures, Signal

logger = logging.getLogger("asignals")

AppT = TypeVar("AppT", bound=Starlette)

# The scope key under which the middleware that handles a connection keeps
# its state. A second SignalMiddleware that sees it passes the connection
# through, so installing twice never sends a signal twice.
_STATE = "asignals.state"


class ResponseHead:
    """The status and headers of a response as it starts: the ``response``
    that ``request_finished`` receivers get (and ``websocket_finished`` ones,
    for a denied websocket). A receiver may change ``status_code`` and
    ``headers`` (a Starlette ``MutableHeaders``); for ``request_finished`` the
    changes reach the client."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int, headers: MutableHeaders) -> None:
        self.status_code = status_code
        self.headers = headers

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status_code}>"


class SignalMiddleware:
    """Pure ASGI middleware that sends the lifecycle signals for each HTTP
    request, websocket and the lifespan of the app it wraps, with that app as
    sender, and sets :data:`~asignals.current_app`, :data:`~asignals.g` and
    :data:`~asignals.request` for them.

    For a Starlette or FastAPI app prefer :func:`install`, which puts the
    middleware around the app's error handling. This class also works as
    ``app = SignalMiddleware(app)`` around any ASGI app, and as
    ``app.add_middleware(SignalMiddleware)``, inside Starlette's error
    handling: there, an unhandled exception's 500 response is made outside the
    middleware and ``request_finished`` is not sent for it.

    :param app: The ASGI app to wrap.
    :param receiver_errors: What an exception from a lifecycle receiver does.
        ``"raise"`` (the default) behaves as Flask: one from
        ``request_started`` or ``request_finished`` becomes the request's
        unhandled exception. ``"log"`` logs it (logger ``asignals``, naming
        the receiver) and the request goes on. Either way every teardown
        signal is sent to every receiver; with ``"raise"`` their errors are
        raised after all of them ran, with the request's own exception, in an
        ``ExceptionGroup`` when there are several.
    """

    def __init__(self, app: ASGIApp, *, receiver_errors: Literal["raise", "log"] = "raise") -> None:
        if receiver_errors not in ("raise", "log"):
            raise ValueError(f'receiver_errors must be "raise" or "log", not {receiver_errors!r}')
        self.app = app
        self.receiver_errors = receiver_errors
        # The sender. Around a Starlette app, that app; otherwise the app
        # Starlette sets in the scope (the middleware was added with
        # add_middleware), else the wrapped app.
        self._sender: Any = app if isinstance(app, Starlette) else None
        # Set by install(): the hook inside Starlette's error middleware sends
        # request_started and got_request_exception, so that the 500 response
        # comes after them, as in Flask.
        self._hooked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if _STATE in scope or kind not in ("http", "websocket", "lifespan"):
            await self.app(scope, receive, send)
            return
        sender = self._sender
        if sender is None:
            sender = scope.get("app", self.app)
        if kind == "http":
            await _Request(self, sender, scope, receive, send).run()
        elif kind == "websocket":
            await _Websocket(self, sender, scope, receive, send).run()
        else:
            await self._lifespan(sender, scope, receive, send)

    async def _lifespan(self, sender: Any, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_STATE] = self
        ctx = AppContext(sender)
        ctx.push()
        failures: Failures = []
        exc: BaseException | None = None
        try:
            await self.emit(appcontext_pushed, sender, {}, failures)
            await self.app(scope, receive, send)
        except BaseException as error:
            exc = error
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.emit_each(appcontext_tearing_down, sender, {"exc": exc}, failures)
                ctx.pop()
                await self.emit_each(appcontext_popped, sender, {}, failures)
            raise_failures(failures, exc)

    async def emit(
        self, signal: Signal, sender: Any, kwargs: dict[str, Any], failures: Failures
    ) -> None:
        """Send ``signal`` on the request's path: a receiver's exception
        propagates, or with ``receiver_errors="log"`` is logged."""
        if not (signal.receivers or signal._recorded):
            return
        if self.receiver_errors == "raise":
            await signal.send_async(sender, **kwargs)
        else:
            log_failures(signal, await signal._send_each(sender, kwargs))

    async def emit_each(
        self, signal: Signal, sender: Any, kwargs: dict[str, Any], failures: Failures
    ) -> None:
        """Send ``signal`` to every receiver, even past one that raises; their
        errors are kept in ``failures`` to raise at the end, or logged."""
        if not (signal.receivers or signal._recorded):
            return
        failed = await signal._send_each(sender, kwargs)
        if self.receiver_errors == "raise":
            failures += failed
        else:
            log_failures(signal, failed)


class _Connection:
    """One HTTP request or websocket on its way through the middleware: the
    signals around it, in Flask's order, and its teardown on every path."""

    __slots__ = (
        "client_send",
        "exception_sent",
        "failures",
        "middleware",
        "receive",
        "request_token",
        "response",
        "response_started",
        "scope",
        "sender",
    )
    tearing_down: Signal
    got_exception: Signal

    def __init__(
        self,
        middleware: SignalMiddleware,
        sender: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.middleware = middleware
        self.sender = sender
        self.scope = scope
        self.receive = receive
        self.client_send = send
        self.failures: Failures = []
        self.request_token: Token[RequestContext] | None = None
        self.response_started = False
        self.exception_sent = False
        self.response: ResponseHead | None = None

    async def run(self) -> None:
        scope = self.scope
        scope[_STATE] = self
        app = AppContext(self.sender)
        app.push()
        # exc ended the request (teardown receivers get it); propagating is
        # what leaves the middleware: a cancellation while handling exc.
        exc = propagating = None
        try:
            await self.middleware.emit(appcontext_pushed, self.sender, {}, self.failures)
            self.request_token = _request_ctx.set(RequestContext(scope, self.receive, self.send))
            await self.handle()
        except BaseException as error:
            exc = propagating = error
            if isinstance(error, Exception) and self.request_token is not None:
                try:
                    await self.handle_error(error)
                except BaseException as during:
                    propagating = during
                    raise
            raise
        finally:
            shielded = await self.teardown(exc, app)
            raise_failures(self.failures, propagating)
        if shielded:
            # A cancellation that came during the shielded teardown of a
            # request that succeeded: raised now, not at some later await.
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def handle(self) -> None:
        raise NotImplementedError

    async def handle_error(self, exc: Exception) -> None:
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    async def failed(self, exc: Exception) -> None:
        """Send ``got_request_exception`` (or the websocket one), once."""
        if not self.exception_sent:
            self.exception_sent = True
            await self.middleware.emit_each(
                self.got_exception, self.sender, {"exception": exc}, self.failures
            )

    async def teardown(self, exc: BaseException | None, app: AppContext) -> bool:
        """Send the teardown signals, each to every receiver, and pop the
        contexts; shielded, so that a cancelled request still tears down.
        Return whether it was shielded."""
        token = self.request_token
        # No request context (appcontext_pushed failed): no request teardown.
        signal = None if token is None else self.tearing_down
        if not (
            (signal is not None and (signal.receivers or signal._recorded))
            or appcontext_tearing_down.receivers
            or appcontext_tearing_down._recorded
            or appcontext_popped.receivers
            or appcontext_popped._recorded
        ):
            # The common case: nothing awaits, so there is nothing to shield.
            if token is not None:
                _request_ctx.reset(token)
            app.pop()
            return False
        middleware = self.middleware
        sender = self.sender
        failures = self.failures
        with anyio.CancelScope(shield=True):
            try:
                if signal is not None:
                    await middleware.emit_each(signal, sender, {"exc": exc}, failures)
            finally:
                if token is not None:
                    _request_ctx.reset(token)
                try:
                    await middleware.emit_each(
                        appcontext_tearing_down, sender, {"exc": exc}, failures
                    )
                finally:
                    app.pop()
                    await middleware.emit_each(appcontext_popped, sender, {}, failures)
        return True


class _Request(_Connection):
    __slots__ = ()
    tearing_down = request_tearing_down
    got_exception = got_request_exception

    async def handle(self) -> None:
        middleware = self.middleware
        if not middleware._hooked:
            await middleware.emit(request_started, self.sender, {}, self.failures)
        await middleware.app(self.scope, self.receive, self.send)

    async def handle_error(self, exc: Exception) -> None:
        await self.failed(exc)
        if self.middleware._hooked and not self.response_started:
            # A request_finished receiver raised: the error middleware took
            # the response as started and made none, so the 500 comes here.
            try:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    self.scope, self.receive, self.send
                )
            except Exception:
                logger.exception("Could not send the 500 response after %r", exc)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            if request_finished.receivers or request_finished._recorded:
                response = ResponseHead(message["status"], MutableHeaders(scope=message))
                kwargs = {"response": response}
                if self.exception_sent:
                    # The error response: a receiver that fails cannot stop
                    # it; its error is raised with the request's at the end.
                    await self.middleware.emit_each(
                        request_finished, self.sender, kwargs, self.failures
                    )
                else:
                    await self.middleware.emit(request_finished, self.sender, kwargs, self.failures)
                message["status"] = response.status_code
            # Only once the receivers are done: if one raised, the response
            # has not started, and install()'s 500 can still go out.
            self.response_started = True
        await self.client_send(message)


class _Websocket(_Connection):
    __slots__ = ("handler_returned",)
    tearing_down = websocket_tearing_down
    got_exception = got_websocket_exception

    async def handle(self) -> None:
        middleware = self.middleware
        self.handler_returned = False
        await middleware.emit(websocket_started, self.sender, {}, self.failures)
        await middleware.app(self.scope, self.receive, self.send)
        self.handler_returned = True
        await middleware.emit(
            websocket_finished, self.sender, {"response": self.response}, self.failures
        )

    async def handle_error(self, exc: Exception) -> None:
        await self.failed(exc)
        if not self.handler_returned:
            # As Quart does: the failed handler still gets websocket_finished.
            await self.middleware.emit_each(
                websocket_finished, self.sender, {"response": self.response}, self.failures
            )

    async def send(self, message: Message) -> None:
        if not self.response_started:
            kind = message["type"]
            if kind == "websocket.accept":
                self.response_started = True
            elif kind == "websocket.http.response.start":
                self.response_started = True
                self.response = ResponseHead(message["status"], MutableHeaders(scope=message))
            elif kind == "websocket.close":
                # Closing before accepting denies the connection: the server
                # answers 403 (ASGI spec).
                self.response_started = True
                self.response = ResponseHead(403, MutableHeaders())
        await self.client_send(message)


class _ExceptionHook:
    """Sits just inside Starlette's error middleware (put there by
    :func:`install`), so that ``request_started`` and
    ``got_request_exception`` are sent before that middleware makes the 500
    response, as Flask orders them."""

    def __init__(self, app: ASGIApp, middleware: SignalMiddleware) -> None:
        self.app = app
        self.middleware = middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get(_STATE)
        if not (isinstance(state, _Request) and state.middleware is self.middleware):
            await self.app(scope, receive, send)
            return
        try:
            await self.middleware.emit(request_started, state.sender, {}, state.failures)
            await self.app(scope, receive, send)
        except Exception as exc:
            await state.failed(exc)
            raise


def install(app: AppT, *, receiver_errors: Literal["raise", "log"] = "raise") -> AppT:
    """Send the lifecycle signals for a Starlette or FastAPI ``app``, with
    ``app`` as sender, and return ``app``.

    The middleware goes around the whole app, outside Starlette's error
    handling, so an unhandled exception gives ``got_request_exception`` and
    then ``request_finished`` with the 500 response the client gets, as in
    Flask. The app object stays the same (routes, ``app.state``, TestClient).
    Call it before the app handles its first request or lifespan; calling it
    again does nothing. ``receiver_errors`` is as for :class:`SignalMiddleware`.

    >>> from starlette.applications import Starlette
    >>> app = install(Starlette())
    """
    if not isinstance(app, Starlette):
        raise TypeError(
            f"install() takes a Starlette or FastAPI app, not {app!r}; wrap any "
            "other ASGI app with SignalMiddleware(app)."
        )
    build = app.build_middleware_stack
    if getattr(build, "_asignals_installed", False):
        return app
    if app.middleware_stack is not None:
        raise RuntimeError(
            "install(app) must be called before the app handles its first "
            "request or lifespan: its middleware stack is already built."
        )
    middleware = SignalMiddleware(app, receiver_errors=receiver_errors)

    def build_with_signals() -> ASGIApp:
        stack = build()
        middleware.app = stack
        if isinstance(stack, ServerErrorMiddleware):
            stack.app = _ExceptionHook(stack.app, middleware)
            middleware._hooked = True
        return middleware

    build_with_signals._asignals_installed = True  # type: ignore[attr-defined]
    app.build_middleware_stack = build_with_signals  # type: ignore[method-assign]
    return app

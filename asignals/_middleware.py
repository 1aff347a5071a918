"""The ASGI middleware that sends Flask's lifecycle signals for Starlette
(and any ASGI) apps, and ``install`` that puts it around a whole app."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Sequence
from contextlib import nullcontext
from typing import Any, Literal, TypeVar, cast

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._background import STATE_KEY as BACKGROUND_KEY
from ._background import Background
from ._context import (
    RequestContext,
    _app_ctx,
    log_failures,
    raise_failures,
)
from ._delivery import COLLECT_NOW, COLLECT_SEQUENTIAL, RAISE_NOW, call_awaited, call_plain
from ._exceptions import ArgumentError, InvalidValueError, UsageError
from ._lifecycle import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    before_render_template,
    got_request_exception,
    got_websocket_exception,
    message_flashed,
    request_finished,
    request_started,
    request_tearing_down,
    template_rendered,
    websocket_finished,
    websocket_started,
    websocket_tearing_down,
)
from ._requests import name_app
from ._signal import Signal
from ._types import Failures

logger = logging.getLogger("asignals")
_new = object.__new__
_UNSHIELDED = nullcontext()

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
    changes reach the client.

    :param message: The ``http.response.start`` (or
        ``websocket.http.response.start``) ASGI message, which changes are
        made to.
    """

    __slots__ = ("_headers", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self._headers: MutableHeaders | None = None

    @property
    def status_code(self) -> int:
        """The response's HTTP status code."""
        return int(self.message["status"])

    @status_code.setter
    def status_code(self, value: int) -> None:
        self.message["status"] = value

    @property
    def headers(self) -> MutableHeaders:
        """The response's headers, made when first asked for."""
        if self._headers is None:
            # ASGI lets a response start without "headers".
            self.message.setdefault("headers", [])
            self._headers = MutableHeaders(scope=self.message)
        return self._headers

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status_code}>"


class SignalMiddleware:
    """Pure ASGI middleware that sends the lifecycle signals for each HTTP
    request, websocket and the lifespan of the app it wraps, with that app as
    sender, and sets :data:`~asignals.current_app`, :data:`~asignals.g` and
    :data:`~asignals.request` for them.

    For a Starlette or FastAPI app prefer :func:`install`, which puts the
    middleware around the app's error handling and keeps the app's
    identity. This class also works as ``app = SignalMiddleware(app)``
    around any ASGI app (around a Starlette app it puts the same hook as
    :func:`install` inside the app's error middleware, so that
    ``got_request_exception`` comes before the 500 response, as in Flask),
    and as ``app.add_middleware(SignalMiddleware)``, inside Starlette's error
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
    :param background_limit: How many background sends
        (:meth:`Signal.send_background`) may run at once; past it,
        ``send_background`` raises :class:`BackgroundLimitError`.
    :param background_grace: Seconds the app's shutdown waits for running
        background sends before it cancels them (each is logged).
    :param name: The name a Starlette or FastAPI app this middleware wraps
        sends with, as Flask's receivers read it (``sender.name``): set as
        the app's ``name`` attribute, if it has none (see :func:`install`).
        Added with ``add_middleware``, or around another ASGI app, the
        middleware does not know its sender: ``name`` is then an
        :class:`ArgumentError`, and the sender keeps what it has.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        receiver_errors: Literal["raise", "log"] = "raise",
        background_limit: int = 1000,
        background_grace: float = 10.0,
        name: str | None = None,
    ) -> None:
        if receiver_errors not in ("raise", "log"):
            raise InvalidValueError(
                f'receiver_errors must be "raise" or "log", not {receiver_errors!r}'
            )
        _check_background_settings(background_limit, background_grace)
        self.app = app
        self._receiver_errors = receiver_errors
        self._background_limit = background_limit
        self._background_grace = background_grace
        # What runs background sends while a lifespan runs (the last one to
        # start); kept, closed, once it is over.
        self._background: Background | None = None
        # The sender. Around a Starlette app, that app; otherwise the app
        # Starlette sets in the scope (the middleware was added with
        # add_middleware), else the wrapped app. Another SignalMiddleware
        # is seen through.
        while isinstance(app, SignalMiddleware):
            app = app.app
        self._sender: Any = app if isinstance(app, Starlette) else None
        name_app(self._sender, name)
        self._wrapped = app
        self._raising = receiver_errors == "raise"  # read on every request
        # Set once the hook is inside the Starlette app's error middleware: it
        # sends got_request_exception, so that the 500 response comes after
        # it, as in Flask; and with install(), request_started too.
        self._hooked = self._hook_starts = False
        if isinstance(self.app, Starlette):
            _hook_when_built(self.app, self)

    @property
    def receiver_errors(self) -> Literal["raise", "log"]:
        """What an exception from a lifecycle receiver does: ``"raise"`` or
        ``"log"``."""
        return self._receiver_errors

    @property
    def background_limit(self) -> int:
        """How many background sends may run at once."""
        return self._background_limit

    @property
    def background_grace(self) -> float:
        """Seconds the app's shutdown waits for running background sends."""
        return self._background_grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _STATE in scope:
            await self._other(scope, receive, send)
            return
        # An HTTP request: the hot path, inlined here, and the request made
        # without an __init__ call, as each saves about 1% of a small
        # Starlette request.
        request = _new(_Request)
        request.middleware = self
        sender = self._sender
        request.app = scope.get("app", self._wrapped) if sender is None else sender
        request.scope = scope
        request.receive = receive
        request.client_send = send
        scope[_STATE] = request
        request._token = _app_ctx.set(request)
        # exc ended the request (teardown receivers get it); propagating is
        # what leaves the middleware: a cancellation while handling exc.
        exc = propagating = None
        try:
            # A signal whose receivers are all sync is sent with plain calls:
            # no coroutine.
            if appcontext_pushed._observed and not request.emit_now(appcontext_pushed, {}):
                await request.emit(appcontext_pushed, {})
            request.in_request = True
            if (
                not self._hook_starts
                and request_started._observed
                and not request.emit_now(request_started, {})
            ):
                await request.emit(request_started, {})
            if request_finished._observed:
                request.watching = True
            # The response start is always seen: a message flashed after it
            # could not be saved in the session, and must fail, not be lost.
            await self.app(scope, receive, request.send)
        except BaseException as caught:
            error = request.own_error(caught)
            # install()'s hook may have reported the request's error already,
            # before the 500 response that then failed (the client left, a
            # cancellation): that error stays the request's.
            reported = request.reported
            exc = error if reported is None else reported
            propagating = error
            if isinstance(error, Exception) and request.in_request:
                try:
                    await request.handle_error(error)
                except BaseException as during:
                    propagating = during
                    raise
            if error is not caught:
                raise error from None
            raise
        finally:
            # The scope and the request refer to each other: let go of the
            # mark now, or the pair (and all they hold) waits for the garbage
            # collector.
            scope.pop(_STATE, None)
            if request.start_error is not None:
                request.start_error = None  # its traceback holds the scope
            if request.reported is not None:
                request.reported = None  # so does this one's
            if (
                request_tearing_down._observed
                or appcontext_tearing_down._observed
                or appcontext_popped._observed
                or request.pending
            ):
                try:
                    await request.teardown(exc, propagating)
                finally:
                    request.release()
            else:
                # The common case: nothing to send, so nothing to shield.
                _app_ctx.reset(request._token)
                request.release()
                if request.failures:
                    raise_failures(request.let_go(), propagating)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything but a new HTTP request: websockets, the lifespan, and
        what passes through (other scope types, connections already handled
        by an outer SignalMiddleware)."""
        kind = scope["type"]
        if _STATE in scope or kind not in ("websocket", "lifespan"):
            await self.app(scope, receive, send)
            return
        sender = self._sender
        if sender is None:
            sender = scope.get("app", self._wrapped)
        connection = _Websocket if kind == "websocket" else _Lifespan
        await connection(self, sender, scope, receive, send).run()


class _Connection(RequestContext):
    """One HTTP request or websocket on its way through the middleware: its
    application and request context (``app`` is the sender), the signals
    around it in Flask's order, and its teardown on every path.

    Attributes have class-level defaults and are set only when they change:
    one of these is made for every request."""

    tearing_down: Signal
    got_exception: Signal
    response_started = False
    exception_sent = False
    # The exception got_request_exception (or the websocket one) reported.
    reported: Exception | None = None
    response: ResponseHead | None = None
    # Errors of receivers that must not stop the signals after them, raised
    # when the connection is torn down.
    failures: Failures | None = None

    def __init__(
        self,
        middleware: SignalMiddleware,
        sender: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # (An HTTP request is made without this: see SignalMiddleware.__call__.)
        super().__init__(sender, scope, receive, send)
        self.middleware = middleware

    @property
    def raising(self) -> bool:
        return self.middleware._raising

    @property
    def background(self) -> Background | None:
        # The lifespan this connection is served under: servers copy the
        # lifespan's state into each request's scope. Without one (an older
        # server, a connection over), the middleware's last lifespan.
        scope = getattr(self, "scope", None)
        state = None if scope is None else scope.get("state")
        if state:
            background = state.get(BACKGROUND_KEY)
            if background is not None:
                return cast(Background, background)
        return self.middleware._background

    async def emit(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        """Send ``signal`` on the connection's path: a receiver's exception
        propagates, or with ``receiver_errors="log"`` is logged."""
        if not signal._observed:
            return
        if self.middleware._raising:
            await signal.send_async(self.app, **kwargs)
        else:
            log_failures(signal, await call_awaited(signal, self.app, kwargs, COLLECT_SEQUENTIAL))

    def emit_now(self, signal: Signal, kwargs: dict[str, Any]) -> bool:
        """:meth:`emit` with plain calls, if no receiver must be awaited;
        False, having called nothing, if one must: then use :meth:`emit`."""
        failed = call_plain(
            signal, self.app, kwargs, RAISE_NOW if self.middleware._raising else COLLECT_NOW
        )
        if failed is None:
            return False
        if failed:
            log_failures(signal, failed)
        return True

    def keep(self, signal: Signal, failed: Failures) -> None:
        """Keep the errors of ``signal``'s receivers for the end, or log them."""
        if not failed:
            return
        if not self.middleware._raising:
            log_failures(signal, failed)
        elif self.failures is None:
            self.failures = failed
        else:
            self.failures += failed

    def let_go(self) -> Failures:
        """The receivers' errors kept for the end, no longer kept: their
        tracebacks hold the request's frames, and so its scope, which
        contexts copied during the request must not keep alive."""
        failures, self.failures = self.failures or [], None
        return failures

    async def failed(self, exc: Exception) -> None:
        """Send ``got_request_exception`` (or the websocket one), once, after
        the receivers that sync code left to run."""
        if not self.exception_sent:
            self.exception_sent = True
            self.reported = exc
            await self.flush_each()
            await self.emit_each(self.got_exception, {"exception": exc})

    async def flush_each(self) -> None:
        """:meth:`flush` on a path that must go on: every receiver runs, and
        their errors are kept for the end, or logged."""
        await self.run_pending(False, self.keep)

    async def teardown(self, exc: BaseException | None, propagating: BaseException | None) -> None:
        """Send the teardown signals, each to every receiver, and pop the
        contexts; then raise the receivers' errors. If a receiver must be
        awaited, this is shielded, so that a cancelled connection still tears
        down, and a cancellation that came meanwhile is raised at the end.

        Each signal is first sent with plain calls (:meth:`emit_each_now`),
        which costs no coroutine: this runs for every request while teardown
        receivers are connected."""
        shielded = (
            bool(self.pending)
            or (self.in_request and self.tearing_down._awaits)
            or appcontext_tearing_down._awaits
            or appcontext_popped._awaits
        )
        kwargs = {"exc": exc}
        # From now on a flash could not be saved.
        self.responding = True
        # Without a receiver to await, nothing waits, so nothing can be
        # cancelled: no shield.
        with anyio.CancelScope(shield=True) if shielded else _UNSHIELDED:
            try:
                # No request context if appcontext_pushed failed, so no
                # request teardown either.
                if self.in_request:
                    # What sync code sent and nothing awaited yet (the request
                    # was cancelled, or sent it after the response), then
                    # what the teardown receivers send.
                    await self.flush_each()
                    if not self.emit_each_now(self.tearing_down, kwargs):
                        await self.emit_each(self.tearing_down, kwargs)
                    await self.flush_each()
            finally:
                self.in_request = False
                try:
                    if not self.emit_each_now(appcontext_tearing_down, kwargs):
                        await self.emit_each(appcontext_tearing_down, kwargs)
                finally:
                    self.pop()
                    if not self.emit_each_now(appcontext_popped, {}):
                        await self.emit_each(appcontext_popped, {})
        if self.failures:
            raise_failures(self.let_go(), propagating)
        if shielded and propagating is None:
            await anyio.lowlevel.checkpoint_if_cancelled()

    def emit_each_now(self, signal: Signal, kwargs: dict[str, Any]) -> bool:
        """:meth:`emit_each` with plain calls, if no receiver must be
        awaited; False, having called nothing, if one must."""
        if signal._observed:
            failed = call_plain(signal, self.app, kwargs, COLLECT_NOW)
            if failed is None:
                return False
            if failed:
                self.keep(signal, failed)
        return True

    async def emit_each(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        """Send ``signal`` to every receiver, even past one that raises; their
        errors are kept for the end, or logged."""
        if signal._observed:
            failed = call_plain(signal, self.app, kwargs, COLLECT_NOW)
            if failed is None:
                failed = await call_awaited(signal, self.app, kwargs, COLLECT_SEQUENTIAL)
            self.keep(signal, failed)


class _Request(_Connection):
    tearing_down = request_tearing_down
    got_exception = got_request_exception
    # Whether request_finished had receivers when the request started: then
    # install()'s hook sends got_request_exception before the 500.
    watching = False
    # What a receiver run as the response started raised.
    start_error: Exception | None = None

    def own_error(self, caught: BaseException) -> BaseException:
        """The request's error, given what reached the middleware: what a
        receiver raised as the response started, if ``caught`` was made of
        it on its way up (Starlette raises "Caught handled exception, but
        response already started." from an exception a handler takes)."""
        error = self.start_error
        if error is not None and (caught is error or caught.__cause__ is error):
            return error
        return caught

    async def handle_error(self, exc: Exception) -> None:
        # The error response is made outside any session middleware.
        self.session_bypassed = True
        await self.failed(exc)
        if self.middleware._hooked and self.responding and not self.response_started:
            # A receiver raised as the response started: the error
            # middleware took the response as started and made none, so the
            # 500 comes here.
            try:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    self.scope, self.receive, self.send
                )
            except Exception:
                logger.exception("Could not send the 500 response after %r", exc)

    # Not async: every message goes straight to the client's send, without a
    # coroutine of its own, unless receivers wait for the response to start.
    def send(self, message: Message) -> Awaitable[None]:
        if self.response_started or message["type"] != "http.response.start":
            return self.client_send(message)
        self.responding = True
        if request_finished._observed or self.pending:
            return self.start(message)
        self.response_started = True
        return self.client_send(message)

    async def start(self, message: Message) -> None:
        try:
            await self.before_start(message)
        except Exception as error:
            # The request fails with this error. On its way up through the
            # app, Starlette may make another of it (for a type an exception
            # handler takes: "Caught handled exception, but response already
            # started."), which the middleware then takes as this one.
            self.start_error = error
            raise
        # Only once the receivers are done: if one raised, the response has
        # not started, and install()'s 500 can still go out.
        self.response_started = True
        await self.client_send(message)

    async def before_start(self, message: Message) -> None:
        if self.pending:
            # Receivers that sync code in the endpoint sent to, and that must
            # be awaited, run before request_finished, and as it does: an
            # error fails the request. Not if this is an error response,
            # made while an exception is handled that this middleware may not
            # have seen: around an app with its own error middleware, which
            # makes its 500 before the exception leaves it. Then every
            # receiver runs and their errors come at the end, with the
            # request's. (install()'s hook sees the exception first.)
            if self.exception_sent or (not self.middleware._hooked and sys.exception() is not None):
                await self.flush_each()
            else:
                await self.flush()
        if request_finished._observed:
            response = ResponseHead(message)
            if self.exception_sent:
                # The error response: as in Flask, a receiver that fails now
                # cannot stop it, and its error is logged (the request's own
                # error is what propagates).
                log_failures(
                    request_finished,
                    await call_awaited(
                        request_finished, self.app, {"response": response}, COLLECT_SEQUENTIAL
                    ),
                )
            elif not self.emit_now(request_finished, {"response": response}):
                await self.emit(request_finished, {"response": response})


class _Websocket(_Connection):
    tearing_down = websocket_tearing_down
    got_exception = got_websocket_exception
    handler_returned = False

    async def run(self) -> None:
        self.scope[_STATE] = self
        self.push()
        exc = propagating = None
        try:
            await self.emit(appcontext_pushed, {})
            self.in_request = True
            await self.emit(websocket_started, {})
            await self.middleware.app(self.scope, self.receive, self.send)
            await self.flush()
            self.handler_returned = True
            await self.emit(websocket_finished, {"response": self.response})
        except BaseException as error:
            exc = propagating = error
            if isinstance(error, Exception) and self.in_request:
                try:
                    await self.failed(error)
                    if not self.handler_returned:
                        # As Quart does: a failed handler still gets
                        # websocket_finished.
                        await self.emit_each(websocket_finished, {"response": self.response})
                except BaseException as during:
                    propagating = during
                    raise
            raise
        finally:
            self.scope.pop(_STATE, None)
            try:
                await self.teardown(exc, propagating)
            finally:
                self.release()

    async def send(self, message: Message) -> None:
        if not self.response_started:
            kind = message["type"]
            if kind == "websocket.accept":
                self.response_started = True
            elif kind == "websocket.http.response.start":
                self.response_started = True
                self.response = ResponseHead(message)
            elif kind == "websocket.close":
                # Closing before accepting denies the connection: the server
                # answers 403 (ASGI spec).
                self.response_started = True
                self.response = ResponseHead(
                    {"type": "websocket.http.response.start", "status": 403, "headers": []}
                )
        await self.client_send(message)


class _Lifespan(_Connection):
    """The lifespan, from startup to shutdown, inside one application
    context; its messages pass through untouched."""

    async def fail_startup(self, error: Exception) -> None:
        """Answer the server's startup with a failure, as Starlette does for
        its own: a lifespan that just raised would look unsupported to the
        server, which would then serve the app without starting it."""
        message = await self.receive()
        if message["type"] == "lifespan.startup":
            await self.client_send(
                {
                    "type": "lifespan.startup.failed",
                    "message": f"An appcontext_pushed receiver raised {error!r}",
                }
            )

    async def run(self) -> None:
        self.scope[_STATE] = self
        self.push()
        exc = None
        try:
            await self.serve()
        except BaseException as error:
            exc = error
            raise
        finally:
            self.scope.pop(_STATE, None)
            try:
                await self.teardown(exc, exc)
            finally:
                self.release()

    async def serve(self) -> None:
        """Send ``appcontext_pushed`` and run the app's lifespan, with the
        task group that background sends run on. They are drained as the
        server asks for shutdown, before the app sees it (so before its
        shutdown code closes what they may use), or when the app's lifespan
        ends."""
        middleware = self.middleware
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            background = Background(
                task_group, middleware._background_limit, middleware._background_grace
            )
            middleware._background = background
            state = self.scope.get("state")
            if isinstance(state, dict):
                state[BACKGROUND_KEY] = background

            async def receive() -> Message:
                message = await self.receive()
                if message["type"] == "lifespan.shutdown":
                    await background.close()
                return message

            try:
                try:
                    await self.emit(appcontext_pushed, {})
                except Exception as exc:
                    await self.fail_startup(exc)
                    raise
                await middleware.app(self.scope, receive, self.client_send)
            except Exception as exc:
                # Raised below, not into the task group, which would wrap it
                # in an ExceptionGroup.
                error = exc
            except BaseException:
                # Cancelled (on asyncio, maybe only once: do not wait).
                await background.abort("the app's lifespan was cancelled")
                raise
            finally:
                # Drained already, unless the lifespan ended without a
                # shutdown, or failed.
                await background.close()
                background.release()
        if error is not None:
            raise error


def _exception_hook(
    app: ASGIApp, middleware: SignalMiddleware, starts: bool, sessions: bool
) -> ASGIApp:
    """The ASGI app that :func:`install` (and ``SignalMiddleware`` around a
    Starlette app) puts just inside Starlette's error middleware, around
    ``app``, so that ``got_request_exception`` (and, if
    ``starts``, ``request_started``) is sent before that middleware makes the
    500 response, as Flask orders them. That order can only be seen when
    ``request_finished`` has receivers; otherwise the hook steps aside and
    ``middleware`` sends ``got_request_exception`` itself, unless the app
    has ``sessions``: then flash() must know the request failed before the
    error middleware's handlers run, as they run outside the session
    middleware and a message they flash would be lost."""

    async def hooked(state: _Request, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if starts and request_started._observed and not state.emit_now(request_started, {}):
                await state.emit(request_started, {})
            await app(scope, receive, send)
        except Exception as exc:
            if sessions:
                state.session_bypassed = True
            error = state.own_error(exc)
            await state.failed(error if isinstance(error, Exception) else exc)
            raise

    # A plain function, not async: stepping aside returns app's coroutine for
    # the error middleware to await. Both save time on every request.
    def hook(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        state = scope.get(_STATE)
        if (
            type(state) is not _Request
            or state.middleware is not middleware
            or not (
                sessions
                or state.watching
                or (starts and request_started._observed)
                # Sync code in the endpoint may leave receivers to run as the
                # response starts, whose errors must not be taken for the
                # request's (inlined: this runs for every request).
                or message_flashed._awaits
                or before_render_template._awaits
                or template_rendered._awaits
            )
        ):
            return app(scope, receive, send)
        return hooked(state, scope, receive, send)

    # Tools that walk a middleware stack through .app (FastAPI's telemetry)
    # can go on past the hook.
    hook.app = app  # type: ignore[attr-defined]
    return hook


def _hook(app: Starlette, stack: ASGIApp, middleware: SignalMiddleware, starts: bool) -> None:
    """Put the hook that sends ``got_request_exception`` (and, if
    ``starts``, ``request_started``) for ``middleware`` inside the error
    middleware of ``app``'s built ``stack``, and in the apps mounted in it."""
    while isinstance(stack, SignalMiddleware):  # installed there too
        stack = stack.app
    if isinstance(stack, ServerErrorMiddleware):
        stack.app = _exception_hook(stack.app, middleware, starts, _has_sessions(app))
        middleware._hooked = True
        middleware._hook_starts = starts
    _hook_mounted_apps(app.routes, middleware)


def _hook_when_built(app: Starlette, middleware: SignalMiddleware) -> None:
    """:func:`_hook` for ``SignalMiddleware(app)``: now, if ``app`` has
    built its middleware stack, else as it builds it, during the first
    request or lifespan, which is why ``request_started`` stays the
    middleware's to send."""
    if app.middleware_stack is not None:
        _hook(app, app.middleware_stack, middleware, starts=False)
        return
    build = app.build_middleware_stack

    def build_hooked() -> ASGIApp:
        stack = build()
        _hook(app, stack, middleware, starts=False)
        return stack

    app.build_middleware_stack = build_hooked  # type: ignore[method-assign]


async def _not_built(scope: Scope, receive: Receive, send: Send) -> None:
    raise UsageError("install(): the app's middleware stack is not built yet")


def _check_background_settings(limit: object, grace: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidValueError(
            f"background_limit must be a whole number of sends, at least 1, not {limit!r}"
        )
    if (
        not isinstance(grace, (int, float)) or isinstance(grace, bool) or not grace >= 0  # also NaN
    ):
        raise InvalidValueError(
            f"background_grace must be a number of seconds, 0 or more, not {grace!r} "
            "(math.inf waits for background sends however long they take)"
        )


def _has_sessions(app: Starlette) -> bool:
    """Whether ``app`` has session middleware: Starlette's, or another named
    ``SessionMiddleware`` (as the session packages for Starlette name theirs)."""
    return any(
        cls.__name__ == "SessionMiddleware"
        for middleware in app.user_middleware
        for cls in getattr(middleware.cls, "__mro__", ())
    )


def _hook_mounted_apps(routes: Sequence[BaseRoute], middleware: SignalMiddleware) -> None:
    """Hook the error middleware of the Starlette (and FastAPI) apps mounted
    among ``routes``, at any depth: each makes its own 500 response, which
    must come after ``got_request_exception`` too."""
    for route in routes:
        if not isinstance(route, Mount):
            continue
        mounted = route.app
        if isinstance(mounted, Starlette):
            _hook_error_middleware(mounted, middleware)
            _hook_mounted_apps(mounted.routes, middleware)
        else:
            _hook_mounted_apps(route.routes, middleware)


def _hook_error_middleware(app: Starlette, middleware: SignalMiddleware) -> None:
    def hook(stack: ASGIApp) -> None:
        if isinstance(stack, SignalMiddleware):  # asignals is installed there too
            stack = stack.app
        if isinstance(stack, ServerErrorMiddleware):
            stack.app = _exception_hook(
                stack.app, middleware, starts=False, sessions=_has_sessions(app)
            )

    if app.middleware_stack is not None:
        hook(app.middleware_stack)
        return
    build = app.build_middleware_stack

    def build_hooked() -> ASGIApp:
        stack = build()
        hook(stack)
        return stack

    app.build_middleware_stack = build_hooked  # type: ignore[method-assign]


def install(
    app: AppT,
    *,
    receiver_errors: Literal["raise", "log"] = "raise",
    background_limit: int = 1000,
    background_grace: float = 10.0,
    name: str | None = None,
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
    ``background_grace`` are as for :class:`SignalMiddleware`.

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
    if receiver_errors not in ("raise", "log"):
        raise InvalidValueError(
            f'receiver_errors must be "raise" or "log", not {receiver_errors!r}'
        )
    _check_background_settings(background_limit, background_grace)
    name_app(app, name)
    build = app.build_middleware_stack
    settings = {
        "receiver_errors": receiver_errors,
        "background_limit": background_limit,
        "background_grace": background_grace,
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
    )
    middleware._sender = middleware._wrapped = app

    def build_with_signals() -> ASGIApp:
        stack = build()
        middleware.app = stack
        _hook(app, stack, middleware, starts=True)
        return middleware

    build_with_signals._asignals_settings = settings  # type: ignore[attr-defined]
    app.build_middleware_stack = build_with_signals  # type: ignore[method-assign]
    return app

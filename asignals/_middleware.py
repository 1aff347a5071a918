"""The ASGI middleware that sends Flask's lifecycle signals for Starlette
(and any ASGI) apps: the state machine of each request, websocket and
lifespan it serves.

What a request of an app needs (which receivers to call for each lifecycle
signal, whether to watch the response, whether anything could be left to
run) is worked out once per app, and again only after the lifecycle signals'
connections change (:mod:`asignals._plans`): receivers for another app cost this
one nothing, and a request that nothing watches costs a context and a
pass-through. How the middleware goes into a Starlette app is in
:mod:`asignals._install`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
import anyio.lowlevel
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _bookkeeping
from ._background import Background
from ._context import (
    BACKGROUND_KEY,
    RequestContext,
    _app_ctx,
    log_failures,
    raise_failures,
)
from ._deferred import flush, run_pending
from ._delivery import COLLECT_NOW, COLLECT_SEQUENTIAL, RAISE_NOW, call_awaited, call_plain
from ._exceptions import ArgumentError, InvalidValueError
from ._flash import check_saved_session
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
from ._plans import (
    GENERAL,
    NO_PLANS,
    POPPED,
    TEARING,
    TORN,
    AppPlans,
    General,
    Handles,
    Plan,
    has_sessions,
)
from ._requests import name_app
from ._signal import Signal
from ._starlette import Starlette
from ._template_trap import watch_templates
from ._types import Failures

if TYPE_CHECKING:
    from .bridge import RedisBridge

logger = logging.getLogger("asignals")
_new = object.__new__
_UNSHIELDED = nullcontext()

# The scope key under which the middleware that handles a connection keeps
# its state (the connection, or for a request that nothing watches, its
# context). A second SignalMiddleware that sees it passes the connection
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


# What run() is given for a request that returned on the lean path.
RETURNED: Any = object()


class _NoArgument(Enum):
    #: What :meth:`_Request.step` is given for a signal that takes no ``exc``.
    NO_ARGUMENT = "no argument"


_NO_ARGUMENT = _NoArgument.NO_ARGUMENT


def _shield() -> anyio.CancelScope:
    """A cancel scope that shields what follows, entered."""
    scope = anyio.CancelScope(shield=True)
    scope.__enter__()
    return scope


def _call(handles: Handles, app: Any, kwargs: dict[str, Any]) -> None:
    """Call each receiver; the first exception propagates (as blinker)."""
    for handle in handles:
        receiver = handle[0]()
        if receiver is not None:
            receiver(app, **kwargs)


def _call_each(handles: Handles, app: Any, kwargs: dict[str, Any]) -> Failures:
    """Call every receiver, even past one that raises; return the failures."""
    failures: Failures = []
    for handle in handles:
        receiver = handle[0]()
        if receiver is not None:
            try:
                receiver(app, **kwargs)
            except Exception as exc:
                failures.append((receiver, exc))
    return failures


class SignalMiddleware:
    """Pure ASGI middleware that sends the lifecycle signals for each HTTP
    request, websocket and the lifespan of the app it wraps, with that app as
    sender, and sets :data:`~asignals.current_app`, :data:`~asignals.g` and
    :data:`~asignals.request` for them.

    For a Starlette or FastAPI app prefer :func:`install`, which puts the
    middleware around the app's error handling and keeps the app's
    identity. This class also works as ``app = SignalMiddleware(app)``
    around any ASGI app (around a Starlette app it hooks the app's error
    middleware as :func:`install` does, so that ``got_request_exception``
    comes before the 500 response, as in Flask), and as
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
    :param bridge: A :class:`~asignals.bridge.RedisBridge` that the app's
        lifespan starts (after ``appcontext_pushed``, before the app's own
        startup; the startup fails if it cannot connect) and stops: as the
        server asks for shutdown it stops taking sends from other processes
        and the background sends drain; once the app's own shutdown code
        ran, what is queued is published, within ``background_grace``. Sends
        from other processes run as this app's background sends.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        receiver_errors: Literal["raise", "log"] = "raise",
        background_limit: int = 1000,
        background_grace: float = 10.0,
        name: str | None = None,
        bridge: RedisBridge | None = None,
    ) -> None:
        check_settings(receiver_errors, background_limit, background_grace)
        check_bridge(bridge)
        watch_templates()
        self.app = app
        self._bridge = bridge
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
        self._plans = NO_PLANS
        # Set once the Starlette app's error middleware is hooked to send
        # got_request_exception before its 500 response, as in Flask (see
        # asignals._install); with install(), that error middleware, which
        # also makes the 500 when a request_started receiver raises.
        self._hooked = False
        self._error_middleware: Any = None
        if isinstance(self.app, Starlette):
            from ._install import hook_when_built

            hook_when_built(self.app, self)

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

    def plans(self, app: Any) -> AppPlans:
        """What the requests of ``app`` need, as the connections stand."""
        plans = self._plans
        if plans.app is not app or not plans.current:
            plans = self._plans = AppPlans(
                app, plans.sessions if plans.app is app else has_sessions(app)
            )
        return plans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _STATE in scope:
            await self._other(scope, receive, send)
            return
        # An HTTP request: the hot path, inlined here, and the context made
        # without an __init__ call, as each saves about 1% of a small
        # Starlette request.
        sender = self._sender
        app = scope.get("app", self._wrapped) if sender is None else sender
        plans = self._plans
        if plans.app is not app or plans.version != _bookkeeping.changes:
            plans = self.plans(app)
        # RequestContext(app, scope, receive, send), inlined.
        ctx = _new(RequestContext)
        ctx.app = app
        ctx.scope = scope
        ctx.receive = receive
        ctx.client_send = send
        ctx.middleware = self
        ctx._token = ctx._request = ctx.flashes = ctx.pending = None
        ctx.responding = ctx.session_bypassed = ctx.flashed = False
        # Session middleware outside the app (a parent app's, a wrapper)
        # is seen in the scope: then too a late flash() must fail.
        outer_sessions = "session" in scope
        if not plans.lean or outer_sessions:
            ctx.in_request = False
            # Made without an __init__ call, as the context.
            request = _new(_Request)
            request.middleware = self
            request.ctx = ctx
            request.plans = plans
            request.watch = plans.watch or outer_sessions
            request.response_started = request.exception_sent = False
            request.reported = request.start_error = request.failures = None
            await request.run()
            return
        # Nothing to send and nothing to watch: the context, and the app.
        ctx.in_request = True
        scope[_STATE] = ctx
        token = _app_ctx.set(ctx)
        try:
            await self.app(scope, receive, send)
        except BaseException as caught:
            scope.pop(_STATE, None)
            if ctx.pending or plans.version != _bookkeeping.changes:
                # Receivers were connected meanwhile, or sync code left some
                # to await: the request ends as any other.
                ctx._token = token
                await _Request(self, ctx, self.plans(app)).run(caught)
            else:
                _app_ctx.reset(token)
                ctx.release()
            raise
        scope.pop(_STATE, None)
        if ctx.pending or plans.version != _bookkeeping.changes:
            ctx._token = token
            await _Request(self, ctx, self.plans(app)).run(RETURNED)
            return
        _app_ctx.reset(token)
        # ctx.release(), inlined.
        ctx.in_request = False
        ctx.scope = ctx.receive = ctx.client_send = None  # type: ignore[assignment]
        ctx._request = ctx.flashes = ctx.pending = None

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
        ctx = RequestContext(sender, scope, receive, send)
        ctx.middleware = self
        connection = _Websocket if kind == "websocket" else _Lifespan
        await connection(self, ctx).run()


class _Connection:
    """One HTTP request, websocket or lifespan on its way through the
    middleware: the signals around it in Flask's order, sent for its context
    (``ctx``, whose ``app`` is the sender), and its teardown on every path.

    Its attributes are slots, so that :class:`_Request`, made for many
    requests, has no ``__dict__``: an object with one costs more to make."""

    __slots__ = (
        "ctx",
        "exception_sent",
        "failures",
        "middleware",
        "reported",
        "response_started",
    )
    tearing_down: ClassVar[Signal]
    got_exception: ClassVar[Signal]
    response_started: bool
    exception_sent: bool
    # The exception got_request_exception (or the websocket one) reported.
    reported: Exception | None
    # Errors of receivers that must not stop the signals after them, raised
    # when the connection is torn down.
    failures: Failures | None

    def __init__(self, middleware: SignalMiddleware, ctx: RequestContext) -> None:
        self.middleware = middleware
        self.ctx = ctx
        self.response_started = self.exception_sent = False
        self.reported = self.failures = None

    async def emit(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        """Send ``signal`` on the connection's path: a receiver's exception
        propagates, or with ``receiver_errors="log"`` is logged."""
        if not signal._observed:
            return
        if self.middleware._raising:
            await signal.send_async(self.ctx.app, **kwargs)
        else:
            log_failures(
                signal, await call_awaited(signal, self.ctx.app, kwargs, COLLECT_SEQUENTIAL)
            )

    def emit_now(self, signal: Signal, kwargs: dict[str, Any]) -> bool:
        """:meth:`emit` with plain calls, if no receiver must be awaited;
        False, having called nothing, if one must: then use :meth:`emit`."""
        failed = call_plain(
            signal, self.ctx.app, kwargs, RAISE_NOW if self.middleware._raising else COLLECT_NOW
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
        """:func:`~asignals._deferred.flush` on a path that must go on: every
        receiver runs, and their errors are kept for the end, or logged."""
        await run_pending(self.ctx, False, self.keep)

    async def teardown(self, exc: BaseException | None, propagating: BaseException | None) -> None:
        """Send the teardown signals, each to every receiver, and pop the
        context; then raise the receivers' errors. If a receiver must be
        awaited, this is shielded, so that a cancelled connection still tears
        down, and a cancellation that came meanwhile is raised at the end.

        Each signal is first sent with plain calls (:meth:`emit_each_now`),
        which costs no coroutine."""
        ctx = self.ctx
        shielded = (
            bool(ctx.pending)
            or (ctx.in_request and self.tearing_down._awaits)
            or appcontext_tearing_down._awaits
            or appcontext_popped._awaits
        )
        kwargs = {"exc": exc}
        # From now on a flash could not be saved.
        ctx.responding = True
        # Without a receiver to await, nothing waits, so nothing can be
        # cancelled: no shield.
        with anyio.CancelScope(shield=True) if shielded else _UNSHIELDED:
            try:
                # No request context if appcontext_pushed failed, so no
                # request teardown either.
                if ctx.in_request:
                    # What sync code sent and nothing awaited yet (the request
                    # was cancelled, or sent it after the response), then
                    # what the teardown receivers send.
                    await self.flush_each()
                    if not self.emit_each_now(self.tearing_down, kwargs):
                        await self.emit_each(self.tearing_down, kwargs)
                    await self.flush_each()
            finally:
                ctx.in_request = False
                try:
                    if not self.emit_each_now(appcontext_tearing_down, kwargs):
                        await self.emit_each(appcontext_tearing_down, kwargs)
                finally:
                    ctx.pop()
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
            failed = call_plain(signal, self.ctx.app, kwargs, COLLECT_NOW)
            if failed is None:
                return False
            if failed:
                self.keep(signal, failed)
        return True

    async def emit_each(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        """Send ``signal`` to every receiver, even past one that raises; their
        errors are kept for the end, or logged."""
        if signal._observed:
            failed = call_plain(signal, self.ctx.app, kwargs, COLLECT_NOW)
            if failed is None:
                failed = await call_awaited(signal, self.ctx.app, kwargs, COLLECT_SEQUENTIAL)
            self.keep(signal, failed)


class _Request(_Connection):
    """An HTTP request that something watches: the app's plans say what to
    send and call.

    Its attributes are slots, all set as it is made (see
    :meth:`SignalMiddleware.__call__`, which makes one without calling this
    ``__init__``): slots are read faster than class-level defaults."""

    __slots__ = ("plans", "start_error", "watch")
    tearing_down = request_tearing_down
    got_exception = got_request_exception
    # What a receiver run as the response started raised.
    start_error: Exception | None

    def __init__(self, middleware: SignalMiddleware, ctx: RequestContext, plans: AppPlans) -> None:
        self.middleware = middleware
        self.ctx = ctx
        self.plans = plans
        self.watch = plans.watch
        self.response_started = self.exception_sent = False
        self.reported = self.start_error = self.failures = None

    def fire(self, signal: Signal, plan: Handles | General, kwargs: dict[str, Any]) -> bool:
        """Send ``signal`` as :meth:`emit_now` does, following its plan:
        False, having called nothing, if a receiver must be awaited."""
        if plan is GENERAL:
            return self.emit_now(signal, kwargs)
        if self.middleware._raising:
            _call(plan, self.ctx.app, kwargs)
        else:
            failed = _call_each(plan, self.ctx.app, kwargs)
            if failed:
                log_failures(signal, failed)
        return True

    async def run(self, ended: Any = None) -> None:
        """Serve the request: the signals in Flask's order around the app,
        and the teardown on every path. With ``ended`` (a request served on
        the lean path, whose connections changed meanwhile), only its end:
        ``ended`` is what it raised, or :data:`RETURNED`."""
        ctx = self.ctx
        plans = self.plans
        app = ctx.app
        scope = ctx.scope
        # exc ended the request (teardown receivers get it); propagating is
        # what leaves the middleware: a cancellation while handling exc.
        exc: BaseException | None = None
        propagating: BaseException | None = None
        try:
            try:
                if ended is None:
                    ctx.scope[_STATE] = self
                    ctx._token = _app_ctx.set(ctx)
                    # A signal whose receivers are all sync is sent with
                    # plain calls (inlined: this runs for every request).
                    plan = plans.pushed
                    if plan is not None:
                        if plan is GENERAL or not self.middleware._raising:
                            if not self.fire(appcontext_pushed, plan, {}):
                                await self.emit(appcontext_pushed, {})
                        else:
                            for handle in plan:
                                receiver = handle[0]()
                                if receiver is not None:
                                    receiver(app)
                    ctx.in_request = True
                    if plans.version != _bookkeeping.changes:
                        # appcontext_pushed's receivers changed connections.
                        plans = self.plans = self.middleware.plans(app)
                    plan = plans.started
                    if plan is not None:
                        try:
                            if plan is GENERAL or not self.middleware._raising:
                                if not self.fire(request_started, plan, {}):
                                    await self.emit(request_started, {})
                            else:
                                for handle in plan:
                                    receiver = handle[0]()
                                    if receiver is not None:
                                        receiver(app)
                        except Exception as failure:
                            if self.middleware._error_middleware is None:
                                raise
                            # install(): the app's error handling answers,
                            # as it would for the endpoint's error.
                            await self.error_response(failure)
                            raise
                    await self.middleware.app(
                        ctx.scope, ctx.receive, self.send if self.watch else ctx.client_send
                    )
                elif ended is not RETURNED:
                    raise ended
            except BaseException as caught:
                error = self.own_error(caught)
                # The error middleware's hook may have reported the
                # request's error already, before the 500 response that then
                # failed (the client left, a cancellation): that error stays
                # the request's.
                reported = self.reported
                exc = error if reported is None else reported
                propagating = error
                if isinstance(error, Exception) and ctx.in_request:
                    try:
                        await self.handle_error(error)
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
            if self.start_error is not None:
                self.start_error = None  # its traceback holds the scope
            if self.reported is not None:
                self.reported = None  # so does this one's
            try:
                # From now on a flash could not be saved.
                ctx.responding = True
                # Shielded from the first await on, so that a cancelled
                # request still tears down. Without a receiver to await
                # (found as each signal comes: a teardown receiver may leave
                # sends to await, or connect another), nothing waits, so
                # nothing can be cancelled: no shield. (Entered by hand: a
                # with statement around a null context would cost more than
                # the rest, on every request.)
                shield: anyio.CancelScope | None = None
                try:
                    # The teardown signals, in order, each to every receiver
                    # (plain calls inlined: this runs for every request).
                    try:
                        if ctx.in_request:
                            if ctx.pending:
                                shield = shield or _shield()
                                await self.flush_each()
                            if not self.step(request_tearing_down, TEARING, exc):
                                shield = shield or _shield()
                                await self.emit_each(request_tearing_down, {"exc": exc})
                            if ctx.pending:
                                shield = shield or _shield()
                                await self.flush_each()
                    finally:
                        ctx.in_request = False
                        try:
                            if not self.step(appcontext_tearing_down, TORN, exc):
                                shield = shield or _shield()
                                await self.emit_each(appcontext_tearing_down, {"exc": exc})
                        finally:
                            _app_ctx.reset(ctx._token)  # type: ignore[arg-type]
                            ctx._token = None
                            if not self.step(appcontext_popped, POPPED):
                                shield = shield or _shield()
                                await self.emit_each(appcontext_popped, {})
                except BaseException as error:
                    if shield is None or not shield.__exit__(
                        type(error), error, error.__traceback__
                    ):
                        raise
                else:
                    if shield is not None:
                        shield.__exit__(None, None, None)
                if self.failures:
                    raise_failures(self.let_go(), propagating)
                if shield is not None and propagating is None:
                    await anyio.lowlevel.checkpoint_if_cancelled()
            finally:
                ctx.release()

    def step(
        self,
        signal: Signal,
        plan_of: Callable[[AppPlans], Plan],
        exc: BaseException | _NoArgument | None = _NO_ARGUMENT,
    ) -> bool:
        """Send teardown ``signal`` (with ``exc``, unless it takes none) to
        every receiver, even past one that raises (their errors kept for the
        end, or logged), with plain calls, as the plans say now (a receiver
        of the step before may have changed them); False, having called
        nothing, if one must be awaited: then use :meth:`emit_each`.

        Receivers get ``exc`` as a keyword written out, not from a dict:
        ``receiver(app, **kwargs)`` costs about as much as the receiver."""
        plans = self.plans
        app = self.ctx.app
        if plans.version != _bookkeeping.changes:
            plans = self.plans = self.middleware.plans(app)
        plan = plan_of(plans)
        if plan is GENERAL:
            return False
        if plan is not None:
            for handle in plan:
                receiver = handle[0]()
                if receiver is not None:
                    try:
                        if exc is _NO_ARGUMENT:
                            receiver(app)
                        else:
                            receiver(app, exc=exc)
                    except Exception as error:
                        self.keep(signal, [(receiver, error)])
        return True

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
        ctx = self.ctx
        ctx.session_bypassed = True
        await self.failed(exc)
        if self.middleware._hooked and ctx.responding and not self.response_started:
            # A receiver raised as the response started: the error
            # middleware took the response as started and made none, so the
            # 500 comes here.
            try:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    ctx.scope, ctx.receive, self.send
                )
            except Exception:
                logger.exception("Could not send the 500 response after %r", exc)

    async def error_response(self, error: Exception) -> None:
        """Answer with the response the app's error middleware makes for
        ``error`` (its hooked handler sends ``got_request_exception``
        first)."""
        ctx = self.ctx
        handler = self.middleware._error_middleware.handler
        response: Response = await handler(Request(ctx.scope), error)
        await response(ctx.scope, ctx.receive, self.send)

    async def hooked(self, exc: Exception, sessions: bool) -> None:
        """What the app's error middleware does first with the request's
        unhandled exception (see :mod:`asignals._install`): send
        ``got_request_exception`` before it makes its 500 response, as Flask
        orders them. With ``sessions``, flash() must know the request failed
        before the error middleware's handlers run, as they run outside the
        session middleware and a message they flash would be lost."""
        if sessions:
            self.ctx.session_bypassed = True
        error = self.own_error(exc)
        await self.failed(error if isinstance(error, Exception) else exc)

    # Not async: every message goes straight to the client's send, without a
    # coroutine of its own, unless receivers must be awaited as the response
    # starts.
    def send(self, message: Message) -> Awaitable[None]:
        ctx = self.ctx
        if self.response_started or message["type"] != "http.response.start":
            return ctx.client_send(message)
        ctx.responding = True
        plans = self.plans
        if plans.version != _bookkeeping.changes:
            plans = self.plans = self.middleware.plans(ctx.app)
        plan = plans.finished
        if (
            ctx.pending
            # A request that flashed has its session cookie checked.
            or ctx.flashed
            or (plan is not None and (plan is GENERAL or self.exception_sent))
        ):
            return self.start(message)
        if plan is not None:
            try:
                if self.middleware._raising:
                    app = ctx.app
                    response = _new(ResponseHead)
                    response.message = message
                    response._headers = None
                    for handle in plan:
                        receiver = handle[0]()
                        if receiver is not None:
                            receiver(app, response=response)
                else:
                    self.fire(request_finished, plan, {"response": ResponseHead(message)})
            except Exception as error:
                self.start_error = error
                raise
        self.response_started = True
        return ctx.client_send(message)

    async def start(self, message: Message) -> None:
        try:
            if self.ctx.flashed:  # flash() ran: fail if the session cookie is too big
                check_saved_session(self.ctx, message)
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
        await self.ctx.client_send(message)

    async def before_start(self, message: Message) -> None:
        if self.ctx.pending:
            # Receivers that sync code in the endpoint sent to, and that must
            # be awaited, run before request_finished, and as it does: an
            # error fails the request. Not if this is an error response,
            # made while an exception is handled that this middleware may not
            # have seen: around an app with its own error middleware, which
            # makes its 500 before the exception leaves it. Then every
            # receiver runs and their errors come at the end, with the
            # request's. (The hooked error middleware reports it first.)
            if self.exception_sent or (not self.middleware._hooked and sys.exception() is not None):
                await self.flush_each()
            else:
                await flush(self.ctx)
        if request_finished._observed:
            response = ResponseHead(message)
            if self.exception_sent:
                # The error response: as in Flask, a receiver that fails now
                # cannot stop it, and its error is logged (the request's own
                # error is what propagates).
                log_failures(
                    request_finished,
                    await call_awaited(
                        request_finished, self.ctx.app, {"response": response}, COLLECT_SEQUENTIAL
                    ),
                )
            elif not self.emit_now(request_finished, {"response": response}):
                await self.emit(request_finished, {"response": response})


class _Websocket(_Connection):
    tearing_down = websocket_tearing_down
    got_exception = got_websocket_exception
    handler_returned = False
    # How the handshake ended: what websocket_finished receivers get.
    response: ResponseHead | None = None

    async def run(self) -> None:
        ctx = self.ctx
        ctx.scope[_STATE] = self
        ctx.push()
        exc = propagating = None
        try:
            await self.emit(appcontext_pushed, {})
            ctx.in_request = True
            await self.emit(websocket_started, {})
            await self.middleware.app(ctx.scope, ctx.receive, self.send)
            await flush(ctx)
            self.handler_returned = True
            await self.emit(websocket_finished, {"response": self.response})
        except BaseException as error:
            exc = propagating = error
            if isinstance(error, Exception) and ctx.in_request:
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
            ctx.scope.pop(_STATE, None)
            try:
                await self.teardown(exc, propagating)
            finally:
                ctx.release()

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
        await self.ctx.client_send(message)


class _Lifespan(_Connection):
    """The lifespan, from startup to shutdown, inside one application
    context; its messages pass through untouched."""

    # The error that ended the lifespan: what the app's lifespan, or an
    # appcontext_pushed receiver, raised. Kept as it is raised, where a
    # cancellation that comes while the lifespan closes cannot replace it:
    # uvicorn, told the startup failed, exits at once, and asyncio.run then
    # cancels the lifespan's task wherever it waits (the task group's exit,
    # the drain of background sends).
    failure: Exception | None = None

    async def fail_startup(self, why: str) -> None:
        """Answer the server's startup with a failure, as Starlette does for
        its own: a lifespan that just raised would look unsupported to the
        server, which would then serve the app without starting it."""
        message = await self.ctx.receive()
        if message["type"] == "lifespan.startup":
            await self.ctx.client_send({"type": "lifespan.startup.failed", "message": why})

    async def run(self) -> None:
        ctx = self.ctx
        ctx.scope[_STATE] = self
        ctx.push()
        exc = None
        try:
            await self.serve()
        except BaseException as error:
            exc = error
            raise
        finally:
            ctx.scope.pop(_STATE, None)
            # The failure, if the lifespan failed, ended it: a cancellation
            # that came after, as it closed, goes on but is not its exc.
            failure, self.failure = self.failure, None
            try:
                await self.teardown(exc if failure is None else failure, exc)
            finally:
                ctx.release()

    async def serve(self) -> None:
        """Send ``appcontext_pushed`` and run the app's lifespan, with the
        task group that background sends run on. They are drained as the
        server asks for shutdown, before the app sees it (so before its
        shutdown code closes what they may use), or when the app's lifespan
        ends."""
        middleware = self.middleware
        bridge = middleware._bridge
        async with anyio.create_task_group() as task_group:
            background = Background(
                task_group, middleware._background_limit, middleware._background_grace
            )
            middleware._background = background
            state = self.ctx.scope.get("state")
            if isinstance(state, dict):
                state[BACKGROUND_KEY] = background

            # The bridge, once this lifespan started it.
            running: RedisBridge | None = None

            async def receive() -> Message:
                message = await self.ctx.receive()
                if message["type"] == "lifespan.shutdown":
                    await quiet()
                return message

            async def quiet() -> None:
                # No more sends from other processes; the background sends
                # end (and may send: that is published at the end).
                if running is not None:
                    await running._quiet(middleware._background_grace)
                await background.close()

            try:
                try:
                    await self.emit(appcontext_pushed, {})
                except Exception as exc:
                    self.failure = exc
                    await self.fail_startup(f"An appcontext_pushed receiver raised {exc!r}")
                    raise
                if bridge is not None:
                    try:
                        await bridge._start(task_group, background, self.ctx.app)
                    except Exception as exc:
                        self.failure = exc
                        await self.fail_startup(f"The bridge could not start: {exc}")
                        raise
                    running = bridge
                await middleware.app(self.ctx.scope, receive, self.ctx.client_send)
            except Exception as exc:
                # Raised below, not into the task group, which would wrap it
                # in an ExceptionGroup.
                self.failure = exc
            except BaseException:
                # Cancelled (on asyncio, maybe only once: do not wait).
                await background.abort("the app's lifespan was cancelled")
                raise
            finally:
                try:
                    # Drained already, unless the lifespan ended without a
                    # shutdown, or failed.
                    await quiet()
                    # After the app's own shutdown code, which may send: what
                    # is queued is published, within background_grace.
                    if running is not None:
                        await running._drain(middleware._background_grace)
                finally:
                    if running is not None:
                        await running._close()
                    background.release()
        if self.failure is not None:
            raise self.failure


def check_bridge(bridge: object) -> None:
    """Check the ``bridge`` setting of :class:`SignalMiddleware` and
    ``install()``."""
    if bridge is None:
        return
    from .bridge import RedisBridge

    if not isinstance(bridge, RedisBridge):
        raise ArgumentError(f"bridge must be an asignals.bridge.RedisBridge, not {bridge!r}")


def check_settings(receiver_errors: object, limit: object, grace: object) -> None:
    """Check the settings of :class:`SignalMiddleware` and ``install()``."""
    if receiver_errors not in ("raise", "log"):
        raise InvalidValueError(
            f'receiver_errors must be "raise" or "log", not {receiver_errors!r}'
        )
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

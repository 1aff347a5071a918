"""The contexts behind ``current_app``, ``g`` and ``request``, as in Flask.

An application context holds the app and ``g``; a request context holds the
request. Both live in context variables, so each request (each task) sees its
own, and worker threads and tasks started from a request see the request's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.types import Receive, Scope, Send

from . import _requests, _signal
from ._delivery import COLLECT_NOW, COLLECT_SEQUENTIAL, Deferred, call_awaited, call_now
from ._exceptions import BackgroundError, ContextError, UsageError
from ._lifecycle import appcontext_popped, appcontext_pushed, appcontext_tearing_down
from ._signal import Signal
from ._types import Failures
from ._utilities import callable_name, describe

if TYPE_CHECKING:
    from ._background import Background

logger = logging.getLogger("asignals")

# The key under which the middleware puts a lifespan's Background in the
# lifespan's state, which servers copy into each request's scope: so each
# request finds the lifespan it is served under, even when the same app runs
# several (two test clients, one inside the other).
BACKGROUND_KEY = "asignals.background"

# One variable for both contexts: a request's application context is its
# request context too, and setting a context variable is much of what the
# middleware costs per request.
_app_ctx: ContextVar[AppContext] = ContextVar("asignals.app_context")

_MISSING: Any = object()


class AppGlobals:
    """A namespace for data that lives as long as an application context:
    what :data:`asignals.g` refers to. Set and read attributes freely.

    >>> g = AppGlobals()
    >>> g.user = "ada"
    >>> g.get("user"), g.get("missing", 0), "user" in g
    ('ada', 0, True)
    """

    # Declared for type checkers, so that ``g.anything`` type-checks.
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"g has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, or ``default`` if it is not set."""
        return self.__dict__.get(name, default)

    def pop(self, name: str, default: Any = _MISSING) -> Any:
        """Remove and return the attribute ``name``; ``default`` if it is not
        set, or ``KeyError`` without a default."""
        if default is _MISSING:
            return self.__dict__.pop(name)
        return self.__dict__.pop(name, default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, set to ``default`` first if it is not set."""
        return self.__dict__.setdefault(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __repr__(self) -> str:
        ctx = _app_ctx.get(None)
        if ctx is not None and ctx.g is self:
            return f"<asignals.g of {ctx.app!r}>"
        return object.__repr__(self)


class AppContext:
    """An application context: while it is pushed, :data:`asignals.current_app`
    is ``app`` and :data:`asignals.g` is this context's :class:`AppGlobals`.

    The middleware pushes one for each request, websocket and the lifespan;
    :func:`app_context` makes one to push by hand. Entering it (``async with``
    or ``with``) sends ``appcontext_pushed``; leaving it sends
    ``appcontext_tearing_down(exc=...)`` and, once popped,
    ``appcontext_popped``. Every receiver of the leaving signals runs even if
    one raises; their errors are raised after them, together with the
    exception that ended the context, in an ``ExceptionGroup`` when there are
    several.
    """

    # What every context has is in slots, read faster than class-level
    # defaults (a request makes one of these); the rest is in __dict__.
    __slots__ = ("__dict__", "_token", "app", "in_request")
    _g: AppGlobals | None = None
    _token: Token[AppContext] | None
    #: Whether :data:`asignals.request` is bound: only between the request
    #: context's set-up and its teardown, as in Flask.
    in_request: bool
    _background: Background | None = None

    def __init__(self, app: Any) -> None:
        self.app = app
        self._token = None
        self.in_request = False

    @property
    def background(self) -> Background | None:
        """What runs background sends made in this context: the app's while
        its lifespan runs, else None."""
        return self._background

    @property
    def g(self) -> AppGlobals:
        """This context's :class:`AppGlobals`, made when first asked for."""
        g = self._g
        if g is None:
            g = self._g = AppGlobals()
        return g

    def push(self) -> None:
        """Make this the current application context, sending no signal."""
        if self._token is not None:
            raise UsageError(
                "This application context is already pushed; call "
                "asignals.app_context(app) again for another one."
            )
        self._token = _app_ctx.set(self)

    def pop(self) -> None:
        """Restore the application context that was current before
        :meth:`push`, sending no signal."""
        if self._token is None:
            raise UsageError("This application context is not pushed.")
        _app_ctx.reset(self._token)
        self._token = None

    async def __aenter__(self) -> AppContext:
        self.push()
        try:
            await appcontext_pushed.send_async(self.app)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failures: Failures = []
        with anyio.CancelScope(shield=True):
            try:
                failures += await call_awaited(
                    appcontext_tearing_down, self.app, {"exc": exc}, COLLECT_SEQUENTIAL
                )
            finally:
                self.pop()
                failures += await call_awaited(appcontext_popped, self.app, {}, COLLECT_SEQUENTIAL)
        raise_failures(failures, exc)

    def __enter__(self) -> AppContext:
        self.push()
        try:
            appcontext_pushed.send(self.app)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failures: Failures = []
        try:
            failures += call_now(appcontext_tearing_down, self.app, {"exc": exc}, COLLECT_NOW)
        finally:
            self.pop()
            failures += call_now(appcontext_popped, self.app, {}, COLLECT_NOW)
        raise_failures(failures, exc)

    def __repr__(self) -> str:
        return f"<AppContext of {self.app!r}>"


def app_context(app: Any) -> AppContext:
    """An application context for ``app``, to push by hand in scripts, jobs
    and tests, so that :data:`~asignals.current_app` and :data:`~asignals.g`
    work there. Use it with ``async with`` (receivers may be async) or
    ``with`` (async receivers then run as :meth:`Signal.send` runs them).

    >>> from asignals import current_app
    >>> with app_context("my-app"):
    ...     current_app._get_current_object()
    'my-app'
    """
    return AppContext(app)


class RequestContext(AppContext):
    """The application context of one HTTP request or websocket (or of the
    lifespan, which has no request), which also holds the request: while
    ``in_request`` is set, :data:`asignals.request` is a Starlette ``Request``
    (an ``HTTPConnection`` for a websocket) over its scope, made when first
    asked for.

    It also keeps what ``flash()`` and sync code sending signals need to know
    about the request (see :mod:`asignals._deferred`). The middleware makes
    one for every request, without calling ``__init__``
    (see :meth:`SignalMiddleware.__call__`)."""

    __slots__ = (
        "_request",
        "client_send",
        "flashed",
        "flashes",
        "middleware",
        "pending",
        "receive",
        "responding",
        "scope",
        "session_bypassed",
    )
    #: The SignalMiddleware serving this context, if any: its settings and
    #: its last lifespan.
    middleware: Any
    _request: HTTPConnection | None
    #: Set when the response starts to go out, or the request is torn down
    #: without one. The session was saved then (or never will be), so a
    #: message flashed later would be lost.
    responding: bool
    #: Set when an unhandled exception left the session middleware: the
    #: error response is made outside it, so the session is not saved.
    session_bypassed: bool
    #: The flashed messages get_flashed_messages() took from the session.
    flashes: list[tuple[str, Any]] | None
    #: Set by flash(): as the response starts, the middleware checks that the
    #: session cookie keeping the messages still fits in a browser.
    flashed: bool
    #: Sends made by sync code on the event loop whose receivers must be
    #: awaited: what :func:`asignals._deferred.flush` has still to run, in
    #: order.
    pending: list[Deferred] | None

    def __init__(self, app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.client_send = send
        self.middleware = self._token = self._request = self.flashes = self.pending = None
        self.in_request = self.responding = self.session_bypassed = self.flashed = False

    @property
    def raising(self) -> bool:
        """Whether a lifecycle receiver's exception propagates (``True``) or
        is logged; the middleware's ``receiver_errors`` says which."""
        middleware = self.middleware
        return middleware is None or bool(middleware._raising)

    @property
    def background(self) -> Background | None:
        # The lifespan this context is served under: servers copy the
        # lifespan's state into each request's scope. Without one (an older
        # server, a request over), the middleware's last lifespan.
        scope = getattr(self, "scope", None)
        state = None if scope is None else scope.get("state")
        if state:
            background = state.get(BACKGROUND_KEY)
            if background is not None:
                return cast("Background", background)
        middleware = self.middleware
        return None if middleware is None else cast("Background | None", middleware._background)

    def release(self) -> None:
        """Let go of the request once it is over. Contexts copied while it ran
        (a task it started, a timer the server set, as uvicorn does for
        keep-alive) keep this object alive, as their ``current_app``; they
        must not keep the request's scope and channels alive with it, which
        under a server ties them into reference cycles."""
        self.in_request = False
        self.scope = self.receive = self.client_send = None  # type: ignore[assignment]
        self._request = self.flashes = self.pending = None

    @property
    def request(self) -> HTTPConnection:
        if self._request is None:
            if self.scope["type"] == "http":
                self._request = _requests.Request(self.scope, self.receive, self.client_send)
            else:
                self._request = _requests.Connection(self.scope)
        return self._request


def current_request_context() -> RequestContext | None:
    """The context of the request being handled, or None outside one."""
    ctx = _app_ctx.get(None)
    if ctx is None or not ctx.in_request:
        return None
    return cast(RequestContext, ctx)


def _current_app() -> Any:
    ctx = _app_ctx.get(None)
    if ctx is None:
        raise ContextError(_outside_app_context("current_app"))
    return ctx.app


def _current_g() -> AppGlobals:
    ctx = _app_ctx.get(None)
    if ctx is None:
        raise ContextError(_outside_app_context("g"))
    return ctx.g


def _current_request() -> HTTPConnection:
    ctx = _app_ctx.get(None)
    if ctx is None or not ctx.in_request:
        raise ContextError(
            "Working outside of a request: asignals.request is only set while "
            "SignalMiddleware handles an HTTP request or a websocket, in its "
            "endpoint, receivers, background tasks and worker threads (not in "
            "the receivers of a background send, which may run after it). "
            "Install the middleware with asignals.install(app), and pass what "
            "code that runs elsewhere needs from the request along explicitly."
        )
    return cast(RequestContext, ctx).request


def _outside_app_context(name: str) -> str:
    return (
        f"Working outside of an application context: asignals.{name} is only "
        "set while SignalMiddleware handles a request, a websocket or the "
        "lifespan. Install the middleware with asignals.install(app), or push "
        "a context by hand with `async with asignals.app_context(app):`."
    )


class _Proxy:
    """Stands for the object that ``find`` returns in the current context,
    forwarding attribute access and common operations to it, as Flask's
    proxies do. :meth:`_get_current_object` returns the object itself."""

    __slots__ = ("__find", "__name")
    __find: Callable[[], Any]
    __name: str

    def __init__(self, find: Callable[[], Any], name: str) -> None:
        object.__setattr__(self, "_Proxy__find", find)
        object.__setattr__(self, "_Proxy__name", name)

    def _get_current_object(self) -> Any:
        """The object this proxy stands for in the current context; pass it to
        code that runs outside the context (another task or thread)."""
        return self.__find()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # so that isinstance() sees the object's class
        try:
            return type(self.__find())
        except RuntimeError:
            return type(self)

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            # Introspection (doctest, inspect.unwrap, copy) probes special
            # names and expects AttributeError when there is no object.
            try:
                obj = self.__find()
            except RuntimeError as exc:
                raise AttributeError(name) from exc
            return getattr(obj, name)
        return getattr(self.__find(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__find(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__find(), name)

    def __dir__(self) -> list[str]:
        try:
            return dir(self.__find())
        except RuntimeError:
            return []

    def __repr__(self) -> str:
        try:
            return repr(self.__find())
        except RuntimeError:
            return f"<asignals.{self.__name} (unbound)>"

    def __str__(self) -> str:
        try:
            return str(self.__find())
        except RuntimeError:
            return f"<asignals.{self.__name} (unbound)>"

    def __bool__(self) -> bool:
        try:
            return bool(self.__find())
        except RuntimeError:
            return False

    def __eq__(self, other: object) -> bool:
        return bool(self.__find() == other)

    def __ne__(self, other: object) -> bool:
        return bool(self.__find() != other)

    def __hash__(self) -> int:
        return hash(self.__find())

    def __len__(self) -> int:
        return len(self.__find())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.__find())

    def __contains__(self, item: object) -> bool:
        return item in self.__find()

    def __getitem__(self, key: Any) -> Any:
        return self.__find()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__find()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.__find()[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__find()(*args, **kwargs)


current_app: Any = _Proxy(_current_app, "current_app")
"""The application handling the current request, websocket or lifespan (the
app the middleware was installed on), or pushed with :func:`app_context`."""

g: AppGlobals = cast(AppGlobals, _Proxy(_current_g, "g"))
"""A namespace for data during one application context: one request, one
websocket, the lifespan, or an :func:`app_context` block."""

request: Request = cast(Request, _Proxy(_current_request, "request"))
"""The current request: a Starlette ``Request`` over the request's scope (for
a websocket, an ``HTTPConnection``). It is not the endpoint's own ``Request``
object; it shares the scope (``state``, path parameters), not the body, so
read the body in the endpoint."""


def raise_failures(failures: Failures, exc: BaseException | None) -> None:
    """Raise what the receivers in ``failures`` raised, together with ``exc``
    (the exception already propagating, if any): alone if it is the only one,
    else in an ``ExceptionGroup``. A propagating cancellation or other
    ``BaseException`` goes on unchanged, and the receivers' errors are
    logged."""
    # A receiver that re-raised the exception it was given is not a second
    # error.
    failures = [(receiver, error) for receiver, error in failures if error is not exc]
    if not failures:
        return
    errors: list[BaseException] = [error for _, error in failures]
    if exc is not None and not isinstance(exc, Exception):
        for receiver, error in failures:
            logger.error(
                "Receiver %s raised while %r propagated",
                callable_name(receiver),
                exc,
                exc_info=error,
            )
        return
    if exc is not None:
        errors.insert(0, exc)
    if len(errors) == 1:
        raise errors[0]
    raise BaseExceptionGroup(f"{len(failures)} lifecycle receivers raised", errors)


def log_failures(signal: Signal, failures: Failures) -> None:
    """Log each receiver of ``signal`` that raised, naming it."""
    for receiver, error in failures:
        logger.error(
            "Receiver %s of %s raised",
            callable_name(receiver),
            describe(signal),
            exc_info=error,
        )


def send_in_background(signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
    """:meth:`Signal.send_background`: hand the send to the lifespan that
    serves the current application context."""
    ctx = _app_ctx.get(None)
    background = None if ctx is None else ctx.background
    if background is None:
        where = (
            "outside of an application context"
            if ctx is None
            else "in an application context pushed by hand (asignals.app_context)"
            if type(ctx) is AppContext
            else "in an app whose lifespan has not started"
        )
        raise BackgroundError(_signal.no_lifespan(signal, where))
    assert ctx is not None
    background.send(ctx.app, signal, sender, kwargs)


# Background sends need an application context: from now on one can exist.
_signal.background_sender = send_in_background

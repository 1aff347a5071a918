"""The errors asignals raises.

Each is an :class:`AsignalsError` and also an instance of the builtin that
callers caught before these classes existed (``TypeError``, ``ValueError``,
``RuntimeError``, ``TimeoutError``; for :class:`FlaskNameError`, the
``AttributeError`` of a missing attribute), so ``except RuntimeError`` keeps
working. Catch :class:`AsignalsError` for any of them::

    AsignalsError
    ├── ArgumentError (TypeError)          a call got an argument it cannot take
    ├── FlaskNameError (AttributeError)    a Flask request name with no answer here
    ├── InvalidValueError (ValueError)     the right type, a value out of range
    ├── ContextError (RuntimeError)        no app or request context here
    ├── NeedsAwaitError (RuntimeError)     sync code would have to await
    ├── UsageError (RuntimeError)          a call made at the wrong time
    ├── FlashError (RuntimeError)          a flash message could not be kept
    ├── BackgroundError (RuntimeError)     a background send could not start
    │   └── BackgroundLimitError           ... because too many run already
    ├── ReceiverCancelledError (RuntimeError)  a receiver cancelled, not by its send
    └── SendTimeoutError (TimeoutError)    a send ran out of time

What receivers raise is not wrapped: it propagates as it is, or grouped in an
``ExceptionGroup`` where several receivers ran to the end.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "AsignalsError",
    "BackgroundError",
    "BackgroundLimitError",
    "ContextError",
    "FlashError",
    "FlaskNameError",
    "InvalidValueError",
    "NeedsAwaitError",
    "ReceiverCancelledError",
    "SendTimeoutError",
    "UsageError",
]


class AsignalsError(Exception):
    """The base class of every error asignals raises."""


class ArgumentError(AsignalsError, TypeError):
    """A call got an argument it cannot take: a receiver that is not callable
    (or an async generator function), a misspelt ``_`` option or another
    method's, ``sender=`` by keyword, a ``_concurrent`` that is not a bool, a
    wrapper that is not callable. The message names the fix."""


class FlaskNameError(AsignalsError, AttributeError):
    """A receiver read a name of Flask's request that
    :data:`~asignals.request` cannot answer on Starlette: the body
    (``get_json()``, ``data``, ``files``: the endpoint reads it), the WSGI
    ``environ``, ``url_rule`` or ``blueprint``. The message says what to use
    instead. Being an ``AttributeError``, ``hasattr()`` and ``getattr(request,
    name, default)`` treat the name as missing."""


class InvalidValueError(AsignalsError, ValueError):
    """An argument with a value that cannot be used: a ``_timeout`` that is
    not a positive number, a middleware setting out of range, a signal name
    already taken with other settings, a flash message too big to keep."""


class ContextError(AsignalsError, RuntimeError):
    """:data:`~asignals.current_app`, :data:`~asignals.g`,
    :data:`~asignals.request` or a call that needs them was used outside the
    application or request context that the middleware (or
    :func:`~asignals.app_context`) sets up."""


class NeedsAwaitError(AsignalsError, RuntimeError):
    """Sync code was asked to do what only async code can: ``send()`` with
    async receivers anywhere but a thread that anyio started (use ``await
    signal.send_async(...)``), or a template of an async Jinja2 environment
    rendered by ``TemplateResponse`` on the event loop."""


class UsageError(AsignalsError, RuntimeError):
    """A call made at the wrong time: ``install()`` after the app started, a
    recorder entered twice, a context pushed twice."""


class FlashError(AsignalsError, RuntimeError):
    """A flash message could not be kept in the session (no
    ``SessionMiddleware``, the response already started, a websocket), or
    flashed messages could no longer be read."""


class BackgroundError(AsignalsError, RuntimeError):
    """:meth:`Signal.send_background <asignals.Signal.send_background>` could
    not start: no lifespan of an app with asignals' middleware runs here, or it
    shut down. Nothing was sent."""


class BackgroundLimitError(BackgroundError):
    """Raised by :meth:`Signal.send_background
    <asignals.Signal.send_background>` when the app already runs as many
    background sends as its middleware's ``background_limit`` allows. Nothing
    was sent: send inline instead (``await signal.send_async(...)``), retry
    later, or raise the limit."""


class BridgeError(AsignalsError, RuntimeError):
    """A bridge (:mod:`asignals.bridge`) could not do what was asked: it
    could not connect to Redis in time as it started, or it is already
    running."""


class BridgeFullError(BridgeError):
    """A send of a shared signal was refused because the bridge's outbound
    queue is full (Redis is down or slower than the sends) and the bridge was
    made with ``when_full="raise"``. Nothing was sent, here or elsewhere."""


class ReceiverCancelledError(AsignalsError, RuntimeError):
    """A receiver of a concurrent send, a background send or the
    middleware's teardown ended with a cancellation that did not come from
    the send (it awaited something another task cancelled, or another task
    cancelled it): that receiver's failure, with the cancellation as its
    ``__cause__`` where the receiver raised one. (In a sequential
    ``send_async`` the cancellation propagates, as in blinker.)"""


class SendTimeoutError(AsignalsError, TimeoutError):
    """A send's ``_timeout`` ran out: the receivers still running were
    cancelled. The message names them, and those never called."""

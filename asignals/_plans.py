"""What the requests of one app need from the middleware, worked out once
per app and again only after the lifecycle signals' connections change
(:data:`asignals._bookkeeping.changes`): for each signal of a plain HTTP
request, nothing, the handles of its receivers to call, or the general path;
whether the response must be watched; and whether the app has session
middleware anywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from operator import attrgetter
from typing import Any, Literal

from starlette.routing import Host, Mount

from . import _bookkeeping
from ._lifecycle import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    before_render_template,
    got_request_exception,
    message_flashed,
    request_finished,
    request_started,
    request_tearing_down,
    template_rendered,
)
from ._signal import Signal
from ._starlette import Starlette
from ._types import SYNC, Handle

# What a signal's send for one app takes (see AppPlans).
Handles = tuple[Handle, ...]


class _Path(Enum):
    #: A send that must take the general path: a receiver must be awaited,
    #: or observers watch the signal.
    GENERAL = "general"


GENERAL = _Path.GENERAL
General = Literal[_Path.GENERAL]


# What a send of one signal for one app takes (see _plan_for).
Plan = Handles | General | None


def _plan_for(signal: Signal, app: Any) -> Plan:
    """How a send of ``signal`` for ``app`` goes: None if it has nothing to
    do, the handles to call if all that it takes is plain calls, else
    :data:`GENERAL`."""
    if not signal._observed:
        return None
    if signal._observers is not None:
        return GENERAL
    plan = signal._lookup(app)
    if not plan[0]:
        return None
    plain: Handles | None = plan[2]
    return GENERAL if plain is None else plain


def _awaits_for(signal: Signal, app: Any) -> bool:
    """Whether a send of ``signal`` for ``app`` has a receiver to await."""
    return signal._awaits and any(kind != SYNC for _, kind in signal._lookup(app)[0])


class AppPlans:
    """What the requests of one app need, from the lifecycle signals'
    connections as they were at ``version``: per signal, None (nothing to
    do), the handles of its receivers (plain calls) or :data:`GENERAL`."""

    __slots__ = (
        "app",
        "finished",
        "got",
        "lean",
        "popped",
        "pushed",
        "sessions",
        "started",
        "tearing",
        "torn",
        "version",
        "watch",
    )

    def __init__(self, app: Any, sessions: bool) -> None:
        # Read first: a change made while the plans are worked out makes
        # them out of date at once.
        self.version = _bookkeeping.changes
        self.app = app
        self.sessions = sessions
        self.pushed = _plan_for(appcontext_pushed, app)
        self.started = _plan_for(request_started, app)
        self.finished = _plan_for(request_finished, app)
        self.got = _plan_for(got_request_exception, app)
        self.tearing = _plan_for(request_tearing_down, app)
        self.torn = _plan_for(appcontext_tearing_down, app)
        self.popped = _plan_for(appcontext_popped, app)
        # Sync code in the endpoint may leave receivers to await: they run as
        # the response starts, at the latest.
        defers = any(
            _awaits_for(signal, app)
            for signal in (message_flashed, before_render_template, template_rendered)
        )
        # The response start is watched when request_finished has receivers,
        # when receivers may be left to run before it, and with sessions: a
        # message flashed after it could not be saved, and must fail.
        self.watch = self.finished is not None or defers or sessions
        self.lean = not self.watch and all(
            plan is None
            for plan in (
                self.pushed,
                self.started,
                self.got,
                self.tearing,
                self.torn,
                self.popped,
            )
        )

    @property
    def current(self) -> bool:
        return self.version == _bookkeeping.changes


# Each teardown signal's plan.
TEARING: Callable[[AppPlans], Plan] = attrgetter("tearing")
TORN: Callable[[AppPlans], Plan] = attrgetter("torn")
POPPED: Callable[[AppPlans], Plan] = attrgetter("popped")


# The plans of no app: what a middleware has before its first request.
NO_PLANS = AppPlans(None, sessions=False)
NO_PLANS.version = -1


def own_sessions(app: Starlette) -> bool:
    """Whether ``app`` has session middleware: Starlette's, or another named
    ``SessionMiddleware`` (as the session packages for Starlette name theirs)."""
    return any(_is_session_middleware(middleware.cls) for middleware in app.user_middleware)


def _is_session_middleware(cls: Any) -> bool:
    return any(base.__name__ == "SessionMiddleware" for base in getattr(cls, "__mro__", ()))


# How far wrapped() follows a chain of ASGI apps through ``.app``.
_CHAIN_DEPTH = 32


def has_sessions(app: Any) -> bool:
    """Whether ``app``, or anything routed in it at any depth (mounted and
    hosted apps, the middleware of a route or a mount), has session
    middleware. True for an app that is not a Starlette app: it cannot be
    told. (Session middleware outside the app is seen in the scope, as each
    request arrives.)"""
    if not isinstance(app, Starlette):
        return True
    if own_sessions(app):
        return True
    routes = list(app.routes)
    seen: set[int] = set()
    while routes:
        route = routes.pop()
        # A route's app, and what wraps it (Route(middleware=...),
        # Mount(middleware=...)): any session middleware, any Starlette app.
        for node in wrapped(getattr(route, "app", None)):
            if id(node) in seen:
                break
            seen.add(id(node))
            if isinstance(node, Starlette):
                if has_sessions(node):
                    return True
                break
            if _is_session_middleware(type(node)):
                return True
        if isinstance(route, (Mount, Host)):
            routes.extend(route.routes)
    return False


def wrapped(app: Any) -> Iterator[Any]:
    """``app``, then the ASGI app it wraps, and so on through ``.app`` (at
    most :data:`_CHAIN_DEPTH` of them), until one wraps nothing."""
    for _ in range(_CHAIN_DEPTH):
        if app is None:
            return
        yield app
        app = getattr(app, "app", None)

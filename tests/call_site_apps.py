"""The log, receivers and apps of the sync-call-site tests
(test_sync_call_sites.py, test_sync_call_sites_failures.py); its
``finished_watched`` fixture is registered in conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import jinja2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute

from asignals import (
    NamedSignal,
    Signal,
    _deferred,
    got_request_exception,
    install,
    request_finished,
    request_tearing_down,
)
from asignals._context import current_request_context
from asignals.templating import Jinja2Templates

# What happened, in order.


class Log(list[str]):
    """Names of what happened, in order, and the keyword arguments each
    lifecycle signal was sent with."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def one(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``name``'s only send."""
        (kwargs,) = self.sent[name]
        return kwargs


def deferred(log: Log, name: str) -> Callable[..., Any]:
    """An async receiver that awaits, then notes ``name``."""

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(name)

    return receiver


def failing(log: Log, name: str, error: Exception) -> Callable[..., Any]:
    """An async receiver that awaits, notes ``name`` and raises ``error``."""

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(name)
        raise error

    receiver.__qualname__ = name  # so that log records name it
    return receiver


@contextmanager
def watching(log: Log, *signals: NamedSignal) -> Iterator[None]:
    """Note each send of the lifecycle ``signals`` (with sync receivers, so
    they add nothing pending) under the signal's name."""

    def watcher(name: str) -> Callable[..., None]:
        def receiver(sender: Any, **kwargs: Any) -> None:
            log.append(name)
            log.sent.setdefault(name, []).append(kwargs)

        return receiver

    with ExitStack() as stack:
        for signal in signals:
            stack.enter_context(signal.connected_to(watcher(signal.name)))
        yield


@pytest.fixture(params=[True, False], ids=["request_finished-watched", "unwatched"])
def finished_watched(request: pytest.FixtureRequest) -> bool:
    """Whether request_finished has a receiver, which has the response
    watched. Either way, the hooked error middleware sends
    got_request_exception before Starlette's 500 response."""
    return bool(request.param)


@contextmanager
def watching_errors(log: Log, finished_watched: bool) -> Iterator[None]:
    """Note got_request_exception, request_tearing_down and, if
    ``finished_watched``, request_finished."""
    signals = [got_request_exception, request_tearing_down]
    if finished_watched:
        signals.append(request_finished)
    with watching(log, *signals):
        yield


# Apps.


def send_from_sync(signal: Signal, **kwargs: Any) -> None:
    """What a sync call site does: send through the current request context."""
    ctx = current_request_context()
    assert ctx is not None
    _deferred.send_from_sync(ctx, signal, kwargs)


def app_with(*routes: BaseRoute, receiver_errors: Any = "raise") -> Starlette:
    """A Starlette app with sessions (for flash()) and asignals installed."""
    app = Starlette(
        routes=list(routes), middleware=[Middleware(SessionMiddleware, secret_key="test")]
    )
    return install(app, receiver_errors=receiver_errors)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"page.html": "Hello {{ name }}"}), autoescape=True
    )
    return Jinja2Templates(env=env)

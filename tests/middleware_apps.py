"""Apps and the lifecycle recorder for the middleware tests
(test_middleware.py, test_middleware_install.py, test_middleware_errors.py);
its ``events`` fixture is registered in conftest.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, NamedTuple

import anyio.lowlevel
import pytest
from helpers import Boom
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asignals import lifecycle

# Flask's order for one request that went well (or that an exception handler
# turned into a response).
NORMAL = [
    "appcontext-pushed",
    "request-started",
    "request-finished",
    "request-tearing-down",
    "appcontext-tearing-down",
    "appcontext-popped",
]
# ... and for an unhandled exception, with install().
UNHANDLED = [
    "appcontext-pushed",
    "request-started",
    "got-request-exception",
    "request-finished",
    "request-tearing-down",
    "appcontext-tearing-down",
    "appcontext-popped",
]
TEARDOWN = ["request-tearing-down", "appcontext-tearing-down", "appcontext-popped"]


class Event(NamedTuple):
    name: str
    sender: Any
    kwargs: dict[str, Any]


class Events(list[Event]):
    """What the lifecycle receivers (and the app, with :meth:`note`) saw, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.popped = threading.Event()

    def note(self, name: str) -> None:
        self.append(Event(name, None, {}))

    @property
    def names(self) -> list[str]:
        return [event.name for event in self]

    @property
    def senders(self) -> list[Any]:
        return [event.sender for event in self if event.sender is not None]

    def one(self, name: str) -> dict[str, Any]:
        """The kwargs of the only ``name`` event."""
        found = [event.kwargs for event in self if event.name == name]
        assert len(found) == 1, self.names
        return found[0]

    def wait_popped(self) -> bool:
        """Wait (in the test's thread) until the app context was popped: the
        websocket test session does not wait for the app to end."""
        return self.popped.wait(timeout=10)


def recording(events: Events, name: str, kind: str) -> Callable[..., Any]:
    """A sync or async receiver that records the ``name`` signal in ``events``."""

    def record(sender: Any, **kwargs: Any) -> None:
        events.append(Event(name, sender, kwargs))
        if name == "appcontext-popped":
            events.popped.set()

    if kind == "sync":
        return record

    async def record_async(sender: Any, **kwargs: Any) -> None:
        record(sender, **kwargs)
        await anyio.lowlevel.checkpoint()

    return record_async


def record_lifecycle(kind: str) -> Iterator[Events]:
    """Yield the events of one ``kind`` of recording receiver connected to
    every lifecycle signal, disconnected when the generator closes."""
    events = Events()
    with ExitStack() as stack:
        for name, signal in lifecycle.items():
            stack.enter_context(signal.connected_to(recording(events, name, kind)))
        yield events


@pytest.fixture
def events(receiver_kind: str) -> Iterator[Events]:
    """One recording receiver, sync or async, on every lifecycle signal."""
    yield from record_lifecycle(receiver_kind)


def hello_app(events: Events | None = None, **kwargs: Any) -> Starlette:
    async def hello(request: Request) -> Response:
        if events is not None:
            events.note("endpoint")
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)], **kwargs)


def failing_app(error: Exception | None = None, **kwargs: Any) -> Starlette:
    async def fail(request: Request) -> Response:
        raise error if error is not None else Boom("endpoint failed")

    return Starlette(routes=[Route("/", fail)], **kwargs)

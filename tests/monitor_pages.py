"""Signals, receivers, apps and readers of the traces and live view for the
signal monitor's tests (test_monitor.py, test_monitor_records.py,
test_monitor_review.py); its ``monitor`` fixture (a monitor that records
while the test runs) is registered in conftest.py."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.testclient import WebSocketTestSession
from starlette.types import Message

from asignals import NamedSignal, install
from asignals.monitor import SignalMonitor

WAIT = 5  # seconds before a wait that should end at once fails the test


@pytest.fixture
def monitor() -> Iterator[SignalMonitor]:
    with SignalMonitor() as watching:
        yield watching


# Signals, senders and receivers

_ids = itertools.count()


def new_signal(name: str = "order-placed", doc: str | None = None) -> NamedSignal:
    """A signal of its own for the test: ``name`` with a number added, so that
    a signal another test left for the garbage collector is never mistaken
    for it."""
    return NamedSignal(f"{name}-{next(_ids)}", doc)


class Shown:
    """A sender whose repr is ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def name_of(receiver: Callable[..., Any]) -> str:
    """How the monitor names a receiver."""
    return f"{receiver.__module__}.{receiver.__qualname__}"


def done(sender: Any, **kwargs: Any) -> str:
    return "done"


async def done_async(sender: Any, **kwargs: Any) -> str:
    await anyio.lowlevel.checkpoint()
    return "done async"


def fails(sender: Any, **kwargs: Any) -> None:
    raise ValueError("boom")


async def send_by(way: str, signal: NamedSignal, sender: Any, **kwargs: Any) -> Any:
    """``signal.send(...)`` or ``await signal.send_async(...)``."""
    if way == "send":
        return signal.send(sender, **kwargs)
    return await signal.send_async(sender, **kwargs)


class Run:
    """A receiver's part in a send, as the monitor recorded it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.name: str = data["name"]
        self.kind: str = data["kind"]
        self.status: str = data["status"]
        self.error: str | None = data["error"]
        start, end = data["start"], data["end"]
        self.duration: float | None = None if end is None or start is None else end - start


class SendView:
    """A send as the monitor recorded it, with the request (or other trace)
    it belongs to."""

    def __init__(self, trace: dict[str, Any], data: dict[str, Any]) -> None:
        self.trace = trace
        self.data = data
        self.signal: str = data["signal"]
        self.sender: str = data["sender"]
        self.mode: str = data["mode"]
        self.arguments: dict[str, str] = dict(data["args"])
        self.receivers = [Run(run) for run in data["receivers"]]
        self.error: str | None = data["error"]
        method, path = trace["method"], trace["path"]
        self.request = f"{method} {path}" if trace["kind"] in ("http", "websocket") else None


def all_sends(monitor: SignalMonitor) -> list[SendView]:
    """Every send kept, in the order they started."""
    found = [SendView(trace, send) for trace in monitor.traces() for send in trace["sends"]]
    return sorted(found, key=lambda send: send.data["start"])


def sends_of(monitor: SignalMonitor, signal: NamedSignal | str) -> list[SendView]:
    name = signal if isinstance(signal, str) else signal.name
    return [send for send in all_sends(monitor) if send.signal == name]


# Apps and clients


def app_with(monitor: SignalMonitor, *routes: BaseRoute) -> Starlette:
    """An app with ``routes``, sessions, asignals installed and ``monitor``
    mounted at /signals."""
    app = Starlette(
        routes=[*routes, Mount("/signals", app=monitor)],
        middleware=[Middleware(SessionMiddleware, secret_key="test")],
    )
    return install(app)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


# Reading the page and the live view


def connected(page: str) -> dict[str, str]:
    """The rows of the connected-receivers table, by signal name (escaped)."""
    table = page[page.index('<table id="signals">') :]
    found = re.findall(r'(<tr>\s*<td class="signal-name">([^<]*).*?</tr>)', table, re.S)
    return {name: row for row, name in found}


def receive(websocket: WebSocketTestSession) -> dict[str, Any]:
    """The next JSON message of the live view (bounded, as receive_raw)."""
    message = receive_raw(websocket)
    assert message["type"] == "websocket.send", message
    data: dict[str, Any] = json.loads(message["text"])
    return data


def only_send(monitor: SignalMonitor, signal: NamedSignal) -> SendView:
    (send,) = sends_of(monitor, signal)
    return send


def runs(send: SendView) -> list[tuple[str, str, str]]:
    """Each receiver of ``send``: its name, kind and status."""
    return [(run.name, run.kind, run.status) for run in send.receivers]


def receive_raw(websocket: WebSocketTestSession) -> Message:
    """The next ASGI message the server sent, or TimeoutError after WAIT
    seconds: a bug fails the test rather than hanging it. (TestClient's own
    receive() waits forever; this reads the same stream, with a deadline.)"""

    async def next_message() -> Message:
        with anyio.fail_after(WAIT):
            return await websocket._send_rx.receive()

    return websocket.portal.call(next_message)

"""Signals, receivers, apps and readers of the page and live view for the
signal monitor's tests (test_monitor.py, test_monitor_records.py,
test_monitor_review.py); its ``monitor`` fixture is registered in conftest.py."""

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
from asignals.monitor import SignalMonitor, WatchedSend

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


def sends_of(monitor: SignalMonitor, signal: NamedSignal) -> list[WatchedSend]:
    return [send for send in monitor.sends if send.signal == signal.name]


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


def rows(html: str) -> dict[int, str]:
    """The send rows in ``html`` (a page, or a live message's rows), by send
    number, in the order shown."""
    return {
        int(number): row for row, number in re.findall(r'(<tr id="send-(\d+)".*?</tr>)', html, re.S)
    }


def signal_of(row: str) -> str:
    match = re.search(r'<td class="signal">([^<]*)</td>', row)
    assert match is not None, row
    return match[1]


def request_of(row: str) -> str:
    match = re.search(r'<td class="request">([^<]*)</td>', row)
    assert match is not None, row
    return match[1]


def connected(page: str) -> dict[str, str]:
    """The rows of the connected-receivers table, by signal name (escaped)."""
    table = page[page.index('<table id="signals">') :]
    found = re.findall(r'(<tr>\s*<td class="signal">([^<]*).*?</tr>)', table, re.S)
    return {name: row for row, name in found}


def receive(websocket: WebSocketTestSession) -> dict[str, Any]:
    """The next JSON message of the live view (bounded, as receive_raw)."""
    message = receive_raw(websocket)
    assert message["type"] == "websocket.send", message
    data: dict[str, Any] = json.loads(message["text"])
    return data


def live_html(message: dict[str, Any]) -> str:
    return "".join(row["html"] for row in message["rows"])


def only_send(monitor: SignalMonitor, signal: NamedSignal) -> WatchedSend:
    (send,) = sends_of(monitor, signal)
    return send


def runs(send: WatchedSend) -> list[tuple[str, str, str]]:
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

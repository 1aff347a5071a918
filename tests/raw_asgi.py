"""Driving an ASGI app by hand, for the tests that need what a test
client hides: the exact messages, a client that leaves, cancellation."""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message, Scope


def http_scope(path: str = "/", *, spec_version: str = "2.4", query: bytes = b"") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
        "state": {},
    }


def websocket_scope(path: str = "/ws", *, extensions: dict[str, Any] | None = None) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "extensions": extensions or {},
        "state": {},
    }


def lifespan_scope() -> Scope:
    return {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}


HTTP_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}
STARTUP: Message = {"type": "lifespan.startup"}
SHUTDOWN: Message = {"type": "lifespan.shutdown"}
WS_CONNECT: Message = {"type": "websocket.connect"}
WS_DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1001}


class Client:
    """The server's side of one connection: ``receive`` hands out the
    ``incoming`` messages in order (then waits for more), ``send`` records
    what the app sends.

    :param disconnect_after_body: Queue ``http.disconnect`` once the first
        ``http.response.body`` went out (a client leaving mid-stream).
    :param fail_on: A message type whose send raises ``OSError`` (ASGI 2.4:
        the client is gone).
    """

    def __init__(
        self,
        *incoming: Message,
        disconnect_after_body: bool = False,
        fail_on: str | None = None,
    ) -> None:
        self.incoming: deque[Message] = deque(incoming)
        self.received: list[Message] = []
        self.sent: list[Message] = []
        self.disconnect_after_body = disconnect_after_body
        self.fail_on = fail_on
        self._arrived: anyio.Event | None = None

    def push(self, message: Message) -> None:
        self.incoming.append(message)
        if self._arrived is not None:
            self._arrived.set()

    async def receive(self) -> Message:
        while not self.incoming:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        message = self.incoming.popleft()
        self.received.append(message)
        return message

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()  # a server's send awaits the socket
        if message["type"] == self.fail_on:
            raise OSError("the client went away")
        self.sent.append(message)
        if self.disconnect_after_body and message["type"] == "http.response.body":
            self.disconnect_after_body = False
            self.push({"type": "http.disconnect"})

    @property
    def types(self) -> list[str]:
        return [message["type"] for message in self.sent]

    @property
    def start(self) -> Message:
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]
        return start

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def call(app: ASGIApp, scope: Scope, client: Client) -> None:
    await app(scope, client.receive, client.send)


class Canceller:
    """Calls an app inside a cancel scope that another task cancels once the
    code under test sets ``trigger``; ``cancelled`` is set right after.
    ``app_returned`` tells whether the app returned rather than raising."""

    def __init__(self) -> None:
        self.trigger = anyio.Event()
        self.cancelled = anyio.Event()
        self.scope = anyio.CancelScope()
        self.app_returned = False

    async def call(self, app: ASGIApp, scope: Scope, client: Client) -> None:
        with self.scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._cancel_when_triggered)
                await app(scope, client.receive, client.send)
                self.app_returned = True
                # A cancel that came while the app was shielded (in teardown)
                # is still pending: it is delivered at the next checkpoint.
                await anyio.lowlevel.checkpoint()
                tasks.cancel_scope.cancel()

    async def _cancel_when_triggered(self) -> None:
        await self.trigger.wait()
        self.scope.cancel()
        self.cancelled.set()

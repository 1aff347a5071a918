"""What many test modules need: an exception for receivers and endpoints to
raise, a receiver of either kind, a Starlette test client on the test's
backend, and the cases of a test parametrized over signals."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import anyio.lowlevel
import anyio.to_thread
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asignals import NamedSignal

LOOPBACK = "127.0.0.1"


class Boom(Exception):
    """The failure a test provokes: a receiver's, an endpoint's, a
    lifespan's. Nothing in asignals or its dependencies raises it."""


def receiver_of(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself (``kind`` "sync"), or an async receiver of the same name
    that calls it after a checkpoint."""
    if kind == "sync":
        return fn

    @functools.wraps(fn)
    async def receiver(sender: Any, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return fn(sender, **kwargs)

    return receiver


def client(
    app: Any,
    backend: str,
    *,
    peer: str | None = "testclient",
    host: str = "testserver",
    **kwargs: Any,
) -> TestClient:
    """A test client for ``app`` on ``backend`` ("asyncio" or "trio"): its
    requests come from ``peer`` (None: a scope without a client) and ask for
    ``http://<host>``; ``kwargs`` go to TestClient."""
    address = None if peer is None else (peer, 50000)
    return TestClient(
        app,
        backend=backend,  # type: ignore[arg-type]
        client=address,  # type: ignore[arg-type]
        base_url=f"http://{host}",
        **kwargs,
    )


def local_client(app: Any, backend: str, **kwargs: Any) -> TestClient:
    """A test client on this machine that asks for http://localhost (unless
    ``peer`` or ``host`` say otherwise): what the signal monitor lets in."""
    kwargs.setdefault("peer", LOOPBACK)
    kwargs.setdefault("host", "localhost")
    return client(app, backend, **kwargs)


def per_signal(*cases: NamedSignal | tuple[Any, ...]) -> list[Any]:
    """The cases of a test parametrized over signals, each with its signal's
    name as its id: a case is a signal, or a tuple that starts with one."""
    return [
        pytest.param(case, id=case.name)
        if isinstance(case, NamedSignal)
        else pytest.param(*case, id=case[0].name)
        for case in cases
    ]


class Gate:
    """Stands in for an example module's ``anyio``: ``sleep`` says it was
    entered, then waits until the gate is released (for at most
    ``wait`` seconds)."""

    def __init__(self, wait: float = 10.0) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.wait = wait

    async def sleep(self, delay: float) -> None:
        self.entered.set()
        await anyio.to_thread.run_sync(self.release.wait, self.wait)
        await anyio.lowlevel.checkpoint()  # as a sleep is


class ReleasedAtShutdown:
    """An app that is ``app``, except that the start of its lifespan's
    shutdown releases ``gate``: a receiver held by the gate ends only while
    the app drains."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_release() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.gate.release.set()
            return message

        if scope["type"] == "lifespan":
            await self.app(scope, receive_and_release, send)
        else:
            await self.app(scope, receive, send)

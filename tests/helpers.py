"""What many test modules need: an exception for receivers and endpoints to
raise, and a Starlette test client on the test's backend."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

LOOPBACK = "127.0.0.1"


class Boom(Exception):
    """The failure a test provokes: a receiver's, an endpoint's, a
    lifespan's. Nothing in asignals or its dependencies raises it."""


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

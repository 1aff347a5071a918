"""What the in-process ASGI benchmarks share: a request's scope and
channels, their command line, and the line that says what was measured."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib.metadata import version

from starlette.types import Message, Scope

SCOPE: Scope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"asignals-benchmark"),
        (b"accept", b"*/*"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def receive() -> Message:
    """A request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Message) -> None:
    """A client that takes the response and drops it."""


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=15, help="rounds (median of these)")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the requests, for a smoke run"
    )
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="the event loop"
    )
    return parser.parse_args()


def setting(backend: str, rounds: int, number: int) -> str:
    """The machine, the versions and the sample size, for a table's heading."""
    loop = f"trio {version('trio')}" if backend == "trio" else "asyncio"
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs; asignals {version('asignals')}, "
        f"Starlette {version('starlette')}, anyio {version('anyio')}, on {loop}; "
        f"median of {rounds} interleaved rounds of {number} requests each"
    )

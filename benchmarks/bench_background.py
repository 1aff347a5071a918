"""Background send benchmark: what a background send adds to the request
path, against awaiting ``send_async`` inline, in the same run.

Run: python benchmarks/bench_background.py [--rounds N] [--quick] [--backend trio]

No sockets: one Starlette app with ``asignals.install``, its lifespan
started in-process (so background sends have their task group), called
directly as ASGI, one request at a time. Three endpoints: one that sends
nothing (the baseline), one that awaits ``signal.send_async(...)`` and one
that calls ``signal.send_background(...)``. Each is measured with two
receivers: an async one that only yields to the event loop once, and one
that waits 1 ms, standing for I/O (a mail, a webhook).

Only the request path is timed: from the app's call to its return. After
each request, untimed, the benchmark waits until the receiver ran (for the
baseline, it calls the receiver itself), so that background work never
piles up and every row does the same work. Candidates
are interleaved (their order rotates every round) and the table shows the
median time per request, what the send added to the baseline, and the
background path's time over the inline one.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import anyio
import anyio.lowlevel
from _in_process import SCOPE, arguments, discard, receive, setting
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

import asignals

work = asignals.Signal("Sent by the endpoints under test.")


class Runs:
    """Counts the receiver's runs, and lets the benchmark wait for the next."""

    def __init__(self) -> None:
        self.count = 0
        self.done: anyio.Event | None = None  # made in the event loop

    def ran(self) -> None:
        self.count += 1
        if self.done is None:
            self.done = anyio.Event()
        self.done.set()

    async def wait(self) -> None:
        if self.done is None:
            self.done = anyio.Event()
        await self.done.wait()
        self.done = None


runs = Runs()


async def yields_once(sender: Any, **kwargs: Any) -> None:
    await anyio.lowlevel.checkpoint()
    runs.ran()


async def waits_1ms(sender: Any, **kwargs: Any) -> None:
    await anyio.sleep(0.001)
    runs.ran()


async def no_send(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def inline(request: Request) -> PlainTextResponse:
    await work.send_async(request.app, order=1)
    return PlainTextResponse("ok")


async def background(request: Request) -> PlainTextResponse:
    work.send_background(request.app, order=1)
    return PlainTextResponse("ok")


ROUTES = {"/none": no_send, "/inline": inline, "/background": background}
PATHS = {"no send": "/none", "await send_async": "/inline", "send_background": "/background"}
RECEIVERS: dict[str, Callable[..., Any]] = {
    "an async receiver that yields once": yields_once,
    "an async receiver that waits 1 ms": waits_1ms,
}


@dataclass
class Candidate:
    way: str  # a key of PATHS
    receiver: str  # a key of RECEIVERS

    @property
    def name(self) -> str:
        return f"{self.way}, {self.receiver}"


@asynccontextmanager
async def lifespan_of(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block, as a server does."""
    to_app, from_server = anyio.create_memory_object_stream[Message](2)
    started, stopped = anyio.Event(), anyio.Event()

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.shutdown.complete":
            stopped.set()
        else:
            raise RuntimeError(f"the lifespan failed: {message!r}")

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def serve() -> None:
        await app(scope, from_server.receive, send)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(serve)
        await to_app.send({"type": "lifespan.startup"})
        await started.wait()
        yield
        await to_app.send({"type": "lifespan.shutdown"})
        await stopped.wait()


async def check(app: ASGIApp, candidate: Candidate) -> None:
    """One request: a 200 "ok", and the receiver ran once (none for the
    baseline)."""
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    before = runs.count
    await app({**SCOPE, "path": PATHS[candidate.way]}, receive, record)
    if candidate.way != "no send":
        with anyio.fail_after(5):
            await runs.wait()
    if [m.get("status", m.get("body")) for m in sent] != [200, b"ok"]:
        raise RuntimeError(f"{candidate.name}: sent {sent!r}")
    expected = 0 if candidate.way == "no send" else 1
    if runs.count - before != expected:
        raise RuntimeError(f"{candidate.name}: the receiver ran {runs.count - before} times")


async def batch(app: ASGIApp, candidate: Candidate, number: int) -> float:
    """Time ``number`` requests' paths: seconds per request."""
    scopes = [{**SCOPE, "path": PATHS[candidate.way]} for _ in range(number)]
    receiver = RECEIVERS[candidate.receiver]
    before = runs.count
    elapsed = 0.0
    for scope in scopes:
        start = perf_counter()
        await app(scope, receive, discard)
        elapsed += perf_counter() - start
        # Untimed: the receiver's run, or for the baseline a call of it, so
        # that every row does the same work between requests (a 1 ms wait
        # leaves the event loop idle, which slows the next request).
        if candidate.way == "no send":
            await receiver(None)
        await runs.wait()
    if runs.count - before != number:
        raise RuntimeError(f"{candidate.name}: the receiver ran {runs.count - before} times")
    return elapsed / number


def run(rounds: int, number: int, backend: str) -> dict[str, float]:
    candidates = [Candidate(way, receiver) for receiver in RECEIVERS for way in PATHS]
    app = asignals.install(
        Starlette(routes=[Route(path, endpoint) for path, endpoint in ROUTES.items()])
    )

    async def measure() -> dict[str, float]:
        samples: dict[str, list[float]] = {c.name: [] for c in candidates}
        async with lifespan_of(app):
            for candidate in candidates:
                with work.connected_to(RECEIVERS[candidate.receiver]):
                    await check(app, candidate)
            for round_ in range(rounds):
                shift = round_ % len(candidates)
                for candidate in candidates[shift:] + candidates[:shift]:
                    with work.connected_to(RECEIVERS[candidate.receiver]):
                        samples[candidate.name].append(await batch(app, candidate, number))
        return {name: statistics.median(values) for name, values in samples.items()}

    return anyio.run(measure, backend=backend)


def format_table(times: dict[str, float]) -> str:
    lines = [
        "| receiver | request path | time per request | added to no send "
        "| send_background / send_async |",
        "|---|---|---:|---:|---:|",
    ]
    for receiver in RECEIVERS:
        base = times[Candidate("no send", receiver).name]
        inline_time = times[Candidate("await send_async", receiver).name]
        for way in PATHS:
            time = times[Candidate(way, receiver).name]
            added = "-" if way == "no send" else f"{(time - base) * 1e6:,.2f} µs"
            ratio = f"{time / inline_time:.2f}x" if way == "send_background" else "-"
            lines.append(f"| {receiver} | {way} | {time * 1e6:,.2f} µs | {added} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    number = 20 if args.quick else 200
    times = run(args.rounds, number, args.backend)
    print(setting(args.backend, args.rounds, number))
    print()
    print(format_table(times))


if __name__ == "__main__":
    main()

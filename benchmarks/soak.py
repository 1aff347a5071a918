"""Soak test: many requests through asignals' middleware, with receivers
connected and disconnected as it runs; memory must not grow and every
request must be torn down once.

Run: python benchmarks/soak.py [--requests N] [--backend trio]

No sockets: one Starlette app with ``asignals.install``, its lifespan running
(so that background sends have their task group), called directly as ASGI,
a few requests at a time. The requests cycle through what an app meets: a
plain response, a rendered template, a streamed response, a response with a
``BackgroundTask``, a background send, a route miss, an unhandled exception,
a client that leaves mid-stream and a request cancelled while its endpoint
waits. Every lifecycle signal has a counting receiver that stays connected;
between batches, other receivers come and go: sync and async, functions and
bound methods, weak and strong, for any sender and for the app, receivers
left to die with their last reference, and receivers of a signal whose
object senders die.

Memory is traced with tracemalloc and read at ten checkpoints, each after the
churning receivers were dropped and a garbage collection, when the app
should hold what it held at the first one. The run fails if the last
checkpoint is more than ``--limit`` bytes above the first (the first tenth of
the run is warm-up), or if the teardown signals and ``appcontext_popped``
were not sent exactly once for each request that was started. Exit status 0
means both held; the figures are printed either way.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import anyio
import jinja2
from _in_process import SCOPE
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

import asignals
from asignals.templating import Jinja2Templates

LIFECYCLE = (
    asignals.appcontext_pushed,
    asignals.request_started,
    asignals.message_flashed,
    asignals.before_render_template,
    asignals.template_rendered,
    asignals.request_finished,
    asignals.got_request_exception,
    asignals.request_tearing_down,
    asignals.appcontext_tearing_down,
    asignals.appcontext_popped,
)
# Sent once for every request, whatever happens to it.
ONCE_PER_REQUEST = (asignals.request_started, asignals.request_tearing_down)
# Sent once for every request, every background send (whose receivers run in
# an app context of their own) and the lifespan.
ONCE_PER_APP_CONTEXT = (
    asignals.appcontext_pushed,
    asignals.appcontext_tearing_down,
    asignals.appcontext_popped,
)
# What the requests do, in the order they cycle through.
KINDS = (
    "plain",
    "template",
    "plain",
    "stream",
    "background task",
    "background send",
    "route miss",
    "unhandled exception",
    "client leaves mid-stream",
    "cancelled",
)
CONCURRENCY = 8
CHECKPOINTS = 10

done_in_background = asignals.signal("soak-done-in-background")
object_senders = asignals.signal("soak-object-senders")


class Boom(Exception):
    """The endpoint's unhandled exception."""


@dataclass
class Soak:
    """What one run counted and measured."""

    requests: int = 0
    started: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    background_sends: int = 0
    churned: int = 0
    memory: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, sender: Any, *, signal: str) -> None:
        self.started[signal] += 1


def make_app(soak: Soak) -> Starlette:
    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.DictLoader(
                {"page.html": "<p>{{ greeting }}, {{ request.url.path }}</p>"}
            ),
            autoescape=True,
        )
    )

    async def plain(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def template(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", {"greeting": "hello"})

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in (b"one ", b"two ", b"three"):
                yield chunk

        return StreamingResponse(chunks())

    async def background_task(request: Request) -> Response:
        async def task() -> None:
            await anyio.lowlevel.checkpoint()

        return PlainTextResponse("ok", background=BackgroundTask(task))

    async def background_send(request: Request) -> Response:
        done_in_background.send_background(request.app, path=request.url.path)
        return PlainTextResponse("ok")

    async def fail(request: Request) -> Response:
        raise Boom("the endpoint failed")

    async def wait(request: Request) -> Response:
        request.scope["entered"].set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    routes = [
        Route("/plain", plain),
        Route("/template", template),
        Route("/stream", stream),
        Route("/background task", background_task),
        Route("/background send", background_send),
        Route("/unhandled exception", fail),
        Route("/client leaves mid-stream", stream),
        Route("/cancelled", wait),
    ]
    return asignals.install(Starlette(routes=routes))


class Client:
    """One request's client: sends an empty body, keeps the response; with
    ``leave_after`` body messages sent, the next ``send`` fails as a server's
    does once the client is gone (ASGI 2.4)."""

    def __init__(self, leave_after: int | None = None) -> None:
        self.leave_after = leave_after
        self.bodies = 0
        self.status: int | None = None

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            if self.bodies == self.leave_after:
                raise OSError("the client went away")
            self.bodies += 1


async def request(app: ASGIApp, kind: str, soak: Soak) -> None:
    """Send one request of ``kind`` and check what came of it."""
    scope: Scope = {**SCOPE, "path": f"/{kind}", "raw_path": f"/{kind}".encode(), "state": {}}
    client = Client(leave_after=1 if kind == "client leaves mid-stream" else None)
    expected_status: int | None = 200
    try:
        if kind == "cancelled":
            scope["entered"] = entered = anyio.Event()
            expected_status = None

            async def call() -> None:
                await app(scope, client.receive, client.send)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await entered.wait()
                tasks.cancel_scope.cancel()
        else:
            await app(scope, client.receive, client.send)
    except Boom:
        if kind != "unhandled exception":
            raise
        expected_status = 500
    except ClientDisconnect:
        if kind != "client leaves mid-stream":
            raise
        expected_status = 200  # the response started before the client left
    else:
        if kind == "unhandled exception":
            raise RuntimeError("the endpoint's exception did not propagate")
        if kind == "route miss":
            expected_status = 404
    if client.status != expected_status:
        raise RuntimeError(f"{kind}: status {client.status}, not {expected_status}")
    soak.kinds[kind] += 1


class Churn:
    """Receivers that come and go: each round connects some new ones and
    disconnects or drops some of those already there."""

    def __init__(self, app: ASGIApp, seed: int) -> None:
        self.app = app
        self.random = random.Random(seed)
        self.strong: list[tuple[asignals.Signal, Callable[..., Any]]] = []
        self.weak: list[Callable[..., Any]] = []
        self.calls = 0

    def make_receiver(self) -> Callable[..., Any]:
        shape = self.random.choice(["sync", "async", "method"])
        if shape == "sync":

            def receiver(sender: Any, **kwargs: Any) -> None:
                self.calls += 1

            return receiver
        if shape == "async":

            async def async_receiver(sender: Any, **kwargs: Any) -> None:
                self.calls += 1

            return async_receiver
        return Listener(self).receive

    def round(self) -> int:
        """One round of churn; the number of connections it made."""
        made = 0
        for _ in range(self.random.randint(1, 4)):
            signal = self.random.choice(LIFECYCLE)
            receiver = self.make_receiver()
            sender = self.random.choice([asignals.ANY, self.app])
            weak = self.random.random() < 0.5
            signal.connect(receiver, sender, weak=weak)
            if weak:
                self.weak.append(receiver)
            else:
                self.strong.append((signal, receiver))
            made += 1
        while len(self.strong) > 6:
            connected, receiver = self.strong.pop(self.random.randrange(len(self.strong)))
            connected.disconnect(receiver)
        while len(self.weak) > 6:
            # Its last reference goes: the connection dies with it.
            del self.weak[self.random.randrange(len(self.weak))]
        # A sender object that lives for a moment, with a receiver of its own.
        short_lived = Sender()
        object_senders.connect(Listener(self).receive, short_lived, weak=False)
        object_senders.send(short_lived)
        del short_lived
        return made + 1

    def clear(self) -> None:
        for signal, receiver in self.strong:
            signal.disconnect(receiver)
        self.strong.clear()
        self.weak.clear()


class Sender:
    pass


class Listener:
    def __init__(self, churn: Churn) -> None:
        self.churn = churn

    def receive(self, sender: Any, **kwargs: Any) -> None:
        self.churn.calls += 1


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run the app's lifespan: started on entry, shut down on exit."""
    to_app, app_receives = anyio.create_memory_object_stream[Message](2)
    app_sends, from_app = anyio.create_memory_object_stream[Message](2)

    async def run() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await app(scope, app_receives.receive, app_sends.send)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        if (reply := await from_app.receive())["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app's startup failed: {reply}")
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            if (reply := await from_app.receive())["type"] != "lifespan.shutdown.complete":
                raise RuntimeError(f"the app's shutdown failed: {reply}")


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def soak_run(total: int, seed: int, soak: Soak) -> None:
    app = make_app(soak)
    counters = []
    for signal in LIFECYCLE:

        def counter(sender: Any, name: str = signal.name, **kwargs: Any) -> None:
            soak.count(sender, signal=name)

        signal.connect(counter, weak=False)
        counters.append((signal, counter))

    def background_receiver(sender: Any, **kwargs: Any) -> None:
        soak.background_sends += 1

    done_in_background.connect(background_receiver, weak=False)
    churn = Churn(app, seed)
    checkpoint_every = max(CONCURRENCY, total // CHECKPOINTS)
    try:
        async with lifespan(app):
            start = perf_counter()
            while soak.requests < total:
                upto = min(soak.requests + CONCURRENCY, total)
                batch = [KINDS[i % len(KINDS)] for i in range(soak.requests, upto)]
                async with anyio.create_task_group() as tasks:
                    for kind in batch:
                        tasks.start_soon(request, app, kind, soak)
                previous = soak.requests
                soak.requests += len(batch)
                soak.churned += churn.round()
                if soak.requests // checkpoint_every != previous // checkpoint_every:
                    churn.clear()
                    # Let the background sends of the requests so far finish.
                    while soak.background_sends < soak.kinds["background send"]:
                        await anyio.lowlevel.checkpoint()
                    soak.memory.append(traced())
            soak.seconds = perf_counter() - start
    finally:
        churn.clear()
        done_in_background.disconnect(background_receiver)
        for signal, counter in counters:
            signal.disconnect(counter)


def problems(soak: Soak, limit: int) -> list[str]:
    found = []
    for signal in ONCE_PER_REQUEST:
        if (sent := soak.started[signal.name]) != soak.requests:
            found.append(f"{signal.name} was sent {sent:,} times for {soak.requests:,} requests")
    contexts = soak.requests + soak.kinds["background send"] + 1
    for signal in ONCE_PER_APP_CONTEXT:
        if (sent := soak.started[signal.name]) != contexts:
            found.append(
                f"{signal.name} was sent {sent:,} times for {contexts:,} app contexts "
                "(the requests, the background sends and the lifespan)"
            )
    if soak.background_sends != soak.kinds["background send"]:
        found.append(
            f"{soak.background_sends} background sends reached their receiver, "
            f"of {soak.kinds['background send']}"
        )
    if len(soak.memory) >= 2 and (growth := soak.memory[-1] - soak.memory[0]) > limit:
        found.append(f"traced memory grew by {growth:,} bytes (limit {limit:,})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests in all")
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="the event loop"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=64 * 1024,
        help="bytes the traced memory may grow between the first and last checkpoints",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the receivers' churn")
    parser.add_argument(
        "--leak",
        action="store_true",
        help="keep every request (a deliberate leak, to see the check fail)",
    )
    args = parser.parse_args()
    if args.requests < CONCURRENCY * CHECKPOINTS:
        parser.error(f"--requests must be at least {CONCURRENCY * CHECKPOINTS}")
    soak = Soak()
    kept: list[Any] = []
    if args.leak:

        def keep(sender: Any, **kwargs: Any) -> None:
            kept.append(dict(asignals.request.scope))

        asignals.request_started.connect(keep)
    tracemalloc.start()
    anyio.run(soak_run, args.requests, args.seed, soak, backend=args.backend)
    tracemalloc.stop()
    found = problems(soak, args.limit)
    print(
        f"{soak.requests:,} requests on {args.backend} in {soak.seconds:.1f} s "
        f"(traced), {CONCURRENCY} at a time; {soak.churned:,} receivers connected by the churn"
    )
    print("requests: " + ", ".join(f"{kind} {n:,}" for kind, n in soak.kinds.items()))
    print("signals: " + ", ".join(f"{name} {n:,}" for name, n in soak.started.items()))
    print("traced memory at the checkpoints: " + ", ".join(f"{m:,}" for m in soak.memory))
    if soak.memory:
        print(f"growth from the first checkpoint: {soak.memory[-1] - soak.memory[0]:,} bytes")
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

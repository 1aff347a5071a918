"""Apps whose lifespan startup fails, for uvicorn to serve in a subprocess
(test_lifespan_uvicorn.py, with ``--factory``): factories, so that importing
this module, as pytest's doctest collection does, connects nothing. The
receivers they connect to the app context's signals print what they got to
stderr, a line each: MARK and a JSON object, with the number of the app
context they ran in (its ``g.context``; the lifespan's is 0) but for
``appcontext_popped``, which runs once the context is gone. RECEIVERS in the
environment says whether the receivers are "sync" (the default) or "async"."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette

import asignals
from asignals import g, install

MARK = "lifecycle signal: "


class StartupError(Exception):
    """What the lifespan's startup code raises."""


class ReceiverError(Exception):
    """What the appcontext_pushed receiver raises."""


def report(signal: str, **fields: Any) -> None:
    print(MARK + json.dumps({"signal": signal, **fields}), file=sys.stderr, flush=True)


def connect_reporters(pushed_raises: bool) -> None:
    contexts = itertools.count()

    def pushed(sender: Any) -> None:
        g.context = next(contexts)
        report("appcontext_pushed", context=g.context)
        if pushed_raises:
            raise ReceiverError("the appcontext_pushed receiver failed")

    def tearing_down(sender: Any, exc: BaseException | None) -> None:
        name = None if exc is None else f"{type(exc).__module__}.{type(exc).__qualname__}"
        report("appcontext_tearing_down", context=g.context, exc_type=name, exc_message=str(exc))

    def popped(sender: Any) -> None:
        report("appcontext_popped")

    receivers: dict[asignals.NamedSignal, Callable[..., Any]] = {
        asignals.appcontext_pushed: pushed,
        asignals.appcontext_tearing_down: tearing_down,
        asignals.appcontext_popped: popped,
    }
    if os.environ.get("RECEIVERS") == "async":
        receivers = {signal: awaiting(receiver) for signal, receiver in receivers.items()}
    for signal, receiver in receivers.items():
        signal.connect(receiver, weak=False)


def awaiting(receiver: Callable[..., None]) -> Callable[..., Any]:
    """An async receiver that calls ``receiver``, then awaits a checkpoint.
    It reports first: under uvloop the cancellation of the lifespan's task as
    uvicorn exits can land in a teardown receiver's own await (anyio's shield
    does not hold off asyncio's Task.cancel()), which these tests do not
    check."""

    async def call(sender: Any, **kwargs: Any) -> None:
        receiver(sender, **kwargs)
        await anyio.lowlevel.checkpoint()

    return call


def startup_raises() -> Starlette:
    """An installed app whose lifespan's startup code raises StartupError."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise StartupError("the lifespan's startup failed")
        yield

    connect_reporters(pushed_raises=False)
    return install(Starlette(lifespan=lifespan))


def appcontext_pushed_raises() -> Starlette:
    """An installed app whose appcontext_pushed receiver raises ReceiverError."""
    connect_reporters(pushed_raises=True)
    return install(Starlette())


def startup_raises_while_sending() -> Starlette:
    """An installed app whose lifespan's startup code sends a signal in the
    background, then raises StartupError while the send still runs (its
    receiver never returns): the lifespan waits for it as it closes."""
    work = asignals.NamedSignal("work")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = anyio.Event()

        async def stuck(sender: Any) -> None:
            started.set()
            await anyio.sleep_forever()

        work.connect(stuck, weak=False)
        work.send_background("startup")
        await started.wait()
        raise StartupError("the lifespan's startup failed")
        yield

    connect_reporters(pushed_raises=False)
    return install(Starlette(lifespan=lifespan))

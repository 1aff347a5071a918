"""Background sends: a signal sent without making its sender wait.

The receivers run on a task group that the app's lifespan owns (the
middleware sets it up), so the app's shutdown waits for them, for a bounded
grace period, and cancels what is left, logging each. A receiver that fails
is logged and reported through ``got_background_exception``.
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import threading
from collections.abc import Sequence
from contextvars import Context, copy_context
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from ._context import AppContext, AppGlobals, _app_ctx, _on_event_loop, log_failures
from ._dispatch import SYNC, Handle, Receiver, call_receiver
from ._lifecycle import got_background_exception
from ._signal import Signal, _check_keywords, _check_timeout, _known_keywords
from ._utilities import (
    callable_name,
    describe,
    in_anyio_worker_thread,
    running_asyncio_loop,
)

logger = logging.getLogger("asignals")

_sender_repr = reprlib.Repr()
_sender_repr.maxstring = _sender_repr.maxother = 80


class BackgroundLimitError(RuntimeError):
    """Raised by :meth:`Signal.send_background
    <asignals.Signal.send_background>` when the app already runs as many
    background sends as its middleware's ``background_limit`` allows. Nothing
    was sent: send inline instead (``await signal.send_async(...)``), retry
    later, or raise the limit."""


class Background:
    """The background sends of one app while its lifespan runs: the task
    group they run on, their bound, and the drain at shutdown.

    Made by the middleware's lifespan, in the event loop's thread; every
    method but :meth:`submit` runs in that thread.
    """

    def __init__(self, app: Any, task_group: anyio.abc.TaskGroup, limit: int, grace: float) -> None:
        self.app = app
        self.task_group = task_group
        self.limit = limit
        self.grace = grace
        self.thread = threading.get_ident()
        self.token = anyio.lowlevel.current_token()
        self.loop = running_asyncio_loop()
        #: The sends started and not finished.
        self.sends: set[_BackgroundSend] = set()
        #: Set once the drain is over: no send starts any more.
        self.closed = False
        self._idle: anyio.Event | None = None

    def submit(self, send: _BackgroundSend) -> None:
        """Start ``send`` from any thread, or raise why it cannot start."""
        if self.closed:
            raise RuntimeError(_shut_down(send.signal))
        if threading.get_ident() == self.thread:
            self.start(send)
            return
        if not in_anyio_worker_thread() and _on_event_loop():
            raise RuntimeError(
                f"send_background() of {describe(send.signal)} was called on another "
                "event loop than the one the app's lifespan runs on: call it from the "
                "app's own requests, receivers and worker threads."
            )
        # In the loop's thread, in a task (anyio starts tasks only from one),
        # with this thread's context variables.
        context = copy_context()
        anyio.from_thread.run(self._start_from_thread, context, send, token=self.token)

    async def _start_from_thread(self, context: Context, send: _BackgroundSend) -> None:
        context.run(self.start, send)

    def start(self, send: _BackgroundSend) -> None:
        """Start ``send`` on the task group. It runs in a copy of the current
        context (both anyio backends copy it for a new task)."""
        if self.closed:
            raise RuntimeError(_shut_down(send.signal))
        if len(self.sends) >= self.limit:
            raise BackgroundLimitError(
                f"send_background() of {describe(send.signal)} refused: the app already "
                f"runs {len(self.sends)} background sends, its limit (background_limit="
                f"{self.limit} on the middleware). Nothing was sent. Send it inline "
                "(await signal.send_async(...)), retry later, or raise the limit."
            )
        self.sends.add(send)
        if self.loop is None:
            self.task_group.start_soon(send.run)
        else:
            # A plain asyncio task costs a fraction of an anyio task group's
            # on the request path; close() waits for it and cancels it as the
            # task group would. (Kept by the send: asyncio keeps only a weak
            # reference to a task.)
            send.task = self.loop.create_task(send.run())

    def done(self, send: _BackgroundSend) -> None:
        self.sends.discard(send)
        if not self.sends and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no background send runs."""
        while self.sends:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def close(self) -> None:
        """Let the running background sends finish, for at most ``grace``
        seconds (sends they make meanwhile are taken too), then cancel those
        left, each logged, and wait for them. No send starts afterwards."""
        if self.closed:
            return
        try:
            with anyio.move_on_after(self.grace):
                await self.idle()
        except BaseException:
            # The lifespan was cancelled (or interrupted) meanwhile.
            self.closed = True
            self.cancel_all("the app's lifespan was cancelled")
            with anyio.CancelScope(shield=True):
                await self.idle()
            raise
        self.closed = True
        if self.sends:
            self.cancel_all(
                f"the app's shutdown grace period (background_grace={self.grace}) ran out"
            )
            await self.idle()

    def cancel_all(self, reason: str) -> None:
        for send in self.sends:
            send.cancel(reason)


class _BackgroundContext(AppContext):
    """The application context of a background send's receivers: the app and
    ``g`` of the code that made the send, without its request, which may be
    over by the time they run."""

    def __init__(self, app: Any, g: AppGlobals, background: Background) -> None:
        self.app = app
        self._g = g
        self._background = background

    def __repr__(self) -> str:
        return f"<background AppContext of {self.app!r}>"


class _BackgroundSend:
    """One background send: its receivers, run in order or concurrently,
    each failure reported, and what is still to run if it is cancelled."""

    scope: anyio.CancelScope | None = None
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    # The index in ``entries`` of the next receiver to call.
    next = 0

    def __init__(
        self,
        background: Background,
        signal: Signal,
        entries: Sequence[tuple[Handle, int]],
        sender: Any,
        kwargs: dict[str, Any],
        concurrent: bool,
        timeout: float | None,
        context: _BackgroundContext,
    ) -> None:
        self.background = background
        self.signal = signal
        self.entries = entries
        self.sender = sender
        self.kwargs = kwargs
        self.concurrent = concurrent
        self.timeout = timeout
        self.context = context
        # The receivers called and not yet returned.
        self.running: list[Receiver] = []

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        _app_ctx.set(self.context)  # this task's own copy of the context
        finished = False
        error: BaseException | None = None
        try:
            with anyio.CancelScope() as self.scope:
                # Not if shutdown cancelled it before it began: a sync
                # receiver would run before any cancellation could stop it.
                if self.cancel_reason is None:
                    await self.dispatch()
                    finished = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.background.done(self)
            if not finished:
                self.log_unfinished(error)

    async def dispatch(self) -> None:
        if self.timeout is None:
            await self.call_all()
            return
        with anyio.move_on_after(self.timeout) as deadline:
            await self.call_all()
        if deadline.cancelled_caught and (self.running or self.not_called()):
            await self.report(None, TimeoutError(self.timeout_message()))

    async def call_all(self) -> None:
        entries = self.entries
        if not self.concurrent:
            while self.next < len(entries):
                handle, kind = entries[self.next]
                self.next += 1
                receiver = handle[0]()
                if receiver is not None:
                    await self.call(receiver, kind)
            return
        # As a concurrent send_async: sync receivers inline, in order, as the
        # tasks of the others start.
        async with anyio.create_task_group() as task_group:
            while self.next < len(entries):
                handle, kind = entries[self.next]
                self.next += 1
                receiver = handle[0]()
                if receiver is None:
                    continue
                if kind == SYNC:
                    try:
                        receiver(self.sender, **self.kwargs)
                    except Exception as exc:
                        task_group.start_soon(self.report, receiver, exc)
                else:
                    self.running.append(receiver)
                    task_group.start_soon(self.call, receiver, kind)

    async def call(self, receiver: Receiver, kind: int) -> None:
        if receiver not in self.running:
            self.running.append(receiver)
        try:
            await call_receiver(receiver, kind, self.sender, self.kwargs, None)
        except Exception as exc:
            self.running.remove(receiver)
            await self.report(receiver, exc)
        else:
            self.running.remove(receiver)

    async def report(self, receiver: Receiver | None, exc: Exception) -> None:
        """Log a failure, naming the receiver, and send it to
        ``got_background_exception``'s receivers (whose own failures are
        logged)."""
        if receiver is None:
            logger.error("Background send of %s failed", describe(self.signal), exc_info=exc)
        else:
            logger.error(
                "Receiver %s of %s, sent in the background, raised",
                callable_name(receiver),
                describe(self.signal),
                exc_info=exc,
            )
        signal = got_background_exception
        if signal._observed:
            kwargs = {"exception": exc}
            app = self.context.app
            failed = signal._send_each_sync(app, kwargs)
            if failed is None:
                failed = await signal._send_each(app, kwargs)
            log_failures(signal, failed)

    def not_called(self) -> list[str]:
        return [
            callable_name(receiver)
            for handle, _ in self.entries[self.next :]
            if (receiver := handle[0]()) is not None
        ]

    def timeout_message(self) -> str:
        message = (
            f"receivers of {describe(self.signal)}, sent in the background, did not "
            f"finish within {self.timeout} seconds and were cancelled: "
            f"{', '.join(map(callable_name, self.running)) or 'none'}"
        )
        not_called = self.not_called()
        if not_called:
            message += f"; not called: {', '.join(not_called)}"
        return message

    def log_unfinished(self, error: BaseException | None) -> None:
        if self.cancel_reason is not None:
            why = f"cancelled: {self.cancel_reason}"
        elif error is None or isinstance(error, anyio.get_cancelled_exc_class()):
            why = "cancelled: the app's lifespan was cancelled or failed"
        else:
            why = f"interrupted by {error!r}"
        running = ", ".join(map(callable_name, self.running)) or "none"
        not_called = ", ".join(self.not_called()) or "none"
        logger.error(
            "Background send of %s (sender %s) was %s. Receivers still running: %s; not called: %s",
            describe(self.signal),
            _sender_repr.repr(self.sender),
            why,
            running,
            not_called,
        )


def send_in_background(signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
    """:meth:`Signal.send_background`."""
    ctx = _app_ctx.get(None)
    background = None if ctx is None else ctx.background
    if background is None:
        raise RuntimeError(_no_lifespan(signal, ctx))
    entries = signal._plan_for(sender)[0]
    if not entries:
        return  # nobody to run, or muted
    concurrent = signal.concurrent
    timeout = None
    if kwargs and not _known_keywords(kwargs):
        option = kwargs.pop("_concurrent", None)
        if option is not None:
            concurrent = bool(option)
        timeout = kwargs.pop("_timeout", None)
        _check_keywords(kwargs, "send_background")
        _check_timeout(timeout)
    assert ctx is not None
    context = (
        ctx if type(ctx) is _BackgroundContext else _BackgroundContext(ctx.app, ctx.g, background)
    )
    background.submit(
        _BackgroundSend(background, signal, entries, sender, kwargs, concurrent, timeout, context)
    )


def _no_lifespan(signal: Signal, ctx: AppContext | None) -> str:
    where = (
        "outside of an application context"
        if ctx is None
        else "in an application context pushed by hand (asignals.app_context)"
        if type(ctx) is AppContext
        else "in an app whose lifespan has not started"
    )
    return (
        f"send_background() of {describe(signal)} was called {where}: background "
        "receivers run on a task group that the app's lifespan owns, and no lifespan "
        "of an app with asignals' middleware is running here. Call it while such an "
        "app serves (its requests, websockets, receivers, lifespan); run the app "
        "under a server with lifespan support (uvicorn's default), use "
        "`with TestClient(app) as client:` in tests, and install asignals on the app "
        "that gets the lifespan (a mounted app gets none). Or send inline with "
        "`await signal.send_async(...)`."
    )


def _shut_down(signal: Signal) -> str:
    return (
        f"send_background() of {describe(signal)} was called after the app's lifespan "
        "was over (it shut down or failed), so nothing runs background sends any more; "
        "nothing was sent. If this request is served without a lifespan (a TestClient "
        "used without `with`, a server with lifespan support off), serve it inside one "
        "(`with TestClient(app) as client:`); or send inline with "
        "`await signal.send_async(...)`."
    )

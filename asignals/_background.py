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

from . import _tracing
from ._context import AppContext, _app_ctx, log_failures
from ._delivery import COLLECT_SEQUENTIAL, call_awaited, finish, start_background
from ._dispatch import Send
from ._exceptions import (
    BackgroundError,
    BackgroundLimitError,
    SendTimeoutError,
)
from ._lifecycle import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    got_background_exception,
)
from ._signal import Signal
from ._types import Entry, Receiver
from ._utilities import (
    callable_name,
    describe,
    in_anyio_worker_thread,
    on_event_loop,
    running_asyncio_loop,
)
from .observers import ObservedSend

logger = logging.getLogger("asignals")


_sender_repr = reprlib.Repr()
_sender_repr.maxstring = _sender_repr.maxother = 80


class Background:
    """The background sends of one app while one lifespan of it runs: where
    they run, their bound, and the drain at shutdown.

    Made by the middleware's lifespan, in the event loop's thread; every
    method but :meth:`submit` runs in that thread.
    """

    #: Set once the drain began to cancel, or was over: no send starts.
    closed = False
    #: Set once the app's lifespan is over.
    over = False

    def __init__(self, task_group: anyio.abc.TaskGroup, limit: int, grace: float) -> None:
        self.limit = limit
        self.grace = grace
        self.thread = threading.get_ident()
        self._task_group: anyio.abc.TaskGroup | None = task_group
        self._token: anyio.lowlevel.EventLoopToken | None = anyio.lowlevel.current_token()
        self._loop = running_asyncio_loop()
        #: The sends started and not finished.
        self.sends: set[_BackgroundSend] = set()
        self._idle: anyio.Event | None = None

    def send(self, app: Any, signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
        """:meth:`Signal.send_background` of ``signal`` in ``app``: check the
        options, then start the send, from any thread."""
        if self.closed:
            raise BackgroundError(self.closed_message(signal))
        started = start_background(signal, sender, kwargs)
        if started is None:
            return  # nobody to run, or muted
        entries, policy, observed = started
        send = _BackgroundSend(
            self, app, signal, entries, sender, kwargs, policy.concurrent, policy.timeout
        )
        send.observed = observed
        try:
            self.submit(send)
        except BaseException as exc:
            if observed is not None:
                finish(observed, exc)
            raise

    def submit(self, send: _BackgroundSend) -> None:
        """Start ``send`` from any thread, or raise why it cannot start."""
        if threading.get_ident() == self.thread:
            self.start(send)
            return
        if not in_anyio_worker_thread() and on_event_loop():
            raise BackgroundError(
                f"send_background() of {describe(send.signal)} was called on another "
                "event loop than the one the app's lifespan runs on: call it from the "
                "app's own requests, receivers and worker threads."
            )
        # In the loop's thread, in a task (anyio starts tasks only from one),
        # with this thread's context variables.
        context = copy_context()
        anyio.from_thread.run(self._start_from_thread, context, send, token=self._token)

    async def _start_from_thread(self, context: Context, send: _BackgroundSend) -> None:
        context.run(self.start, send)

    def start(self, send: _BackgroundSend) -> None:
        """Start ``send``. It runs in a copy of the current context (asyncio
        and trio both copy it for a new task)."""
        if self.closed:
            raise BackgroundError(self.closed_message(send.signal))
        if len(self.sends) >= self.limit:
            raise BackgroundLimitError(
                f"send_background() of {describe(send.signal)} refused: the app already "
                f"runs {len(self.sends)} background sends, its limit (background_limit="
                f"{self.limit} on the middleware). Nothing was sent. Send it inline "
                "(await signal.send_async(...)), retry later, or raise the limit."
            )
        self.sends.add(send)
        if self._loop is not None:
            # A plain asyncio task costs a fraction of an anyio task group's
            # on the request path; the lifespan waits for it and cancels it as
            # a task group would. Made as a Task, not with create_task, so
            # that an eager task factory cannot run receivers before this
            # returns. Kept by the send: asyncio keeps only a weak reference.
            send.task = asyncio.Task(send.run(), loop=self._loop)
        else:
            assert self._task_group is not None
            self._task_group.start_soon(send.run)

    def closed_message(self, signal: Signal) -> str:
        if not self.over:
            return (
                f"send_background() of {describe(signal)} was called while the app "
                "shuts down, after its background sends were drained; nothing was sent. "
                "Send inline with `await signal.send_async(...)` there."
            )
        return (
            f"send_background() of {describe(signal)} was called after the app's "
            "lifespan was over (it shut down or failed), so nothing runs background "
            "sends any more; nothing was sent. If this request is served without a "
            "lifespan (a TestClient used without `with`, a server with lifespan "
            "support off), serve it inside one (`with TestClient(app) as client:`); "
            "or send inline with `await signal.send_async(...)`."
        )

    def done(self, send: _BackgroundSend) -> None:
        self.sends.discard(send)
        send.task = None  # its task holds it: let both go with no cycle
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
            await self.abort("the app's lifespan was cancelled")
            raise
        self.closed = True
        if self.sends:
            self.cancel_all(
                f"the app's shutdown grace period (background_grace={self.grace}) ran out"
            )
            await self.idle()

    async def abort(self, reason: str) -> None:
        """Cancel the running background sends at once, each logged, and wait
        for them, whatever cancels this meanwhile."""
        self.closed = True
        self.cancel_all(reason)
        cancelled: BaseException | None = None
        while self.sends:
            try:
                with anyio.CancelScope(shield=True):
                    await self.idle()
            except asyncio.CancelledError as exc:
                # A plain task.cancel() reaches through anyio's shield: keep
                # waiting, then let it through.
                cancelled = exc
        if cancelled is not None:
            raise cancelled

    def cancel_all(self, reason: str) -> None:
        for send in self.sends:
            send.cancel(reason)

    def release(self) -> None:
        """Once the lifespan is over: let go of its event loop and task
        group, which the middleware would otherwise keep alive."""
        self.over = self.closed = True
        self._task_group = self._token = self._loop = None


class _BackgroundContext(AppContext):
    """The application context that the receivers of one background send run
    in: the app, a ``g`` of their own, and the lifespan that runs them."""

    #: The background send, while observed: what the sends made in this
    #: context belong to (the monitor links them to it).
    made_by: ObservedSend | None = None

    def __init__(self, app: Any, background: Background) -> None:
        super().__init__(app)
        self._background = background

    def __repr__(self) -> str:
        return f"<background AppContext of {self.app!r}>"


class _BackgroundSend:
    """One background send: its receivers, run in order or concurrently in an
    application context of their own, each failure reported, and what is
    still to run if it is cancelled."""

    scope: anyio.CancelScope | None = None
    task: asyncio.Task[None] | None = None
    observed: ObservedSend | None = None
    timed_out: SendTimeoutError | None = None
    send: Send
    cancel_reason: str | None = None

    def __init__(
        self,
        background: Background,
        app: Any,
        signal: Signal,
        entries: Sequence[Entry],
        sender: Any,
        kwargs: dict[str, Any],
        concurrent: bool,
        timeout: float | None,
    ) -> None:
        self.background = background
        self.app = app
        self.signal = signal
        self.entries = entries
        self.sender = sender
        self.kwargs = kwargs
        self.concurrent = concurrent
        self.timeout = timeout
        # Failures not yet sent to got_background_exception: they are sent
        # once the receivers are done, outside their timeout.
        self.failures: list[Exception] = []

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        # What came of each receiver, as it runs: made here, in the send's
        # own task, not on the path of the request that made the send.
        self.send = Send(
            self.signal, self.entries, self.sender, self.kwargs, None, self.receiver_failed
        )
        context = _BackgroundContext(self.app, self.background)
        # In this task's own copy of the caller's context, for good: the task
        # ends with the send, and resetting would bring back the caller's
        # context, maybe a request still running.
        _app_ctx.set(context)
        if self.observed is not None:
            context.made_by = self.observed
        # While traced (asignals.otel), the send's span is current here.
        tracer = _tracing.tracer
        if tracer is not None and self.observed is not None:
            tracer.background_running(self.observed)
        pushed = finished = False
        error: BaseException | None = None
        try:
            with anyio.CancelScope() as self.scope:
                # Not if shutdown cancelled it before it began: a sync
                # receiver would run before any cancellation could stop it.
                if self.cancel_reason is None:
                    pushed = True
                    await self.emit(appcontext_pushed, {})
                    await self.dispatch()
                    await self.report()
                    finished = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if not finished:
                    self.log_unfinished(error)
                # As for a request: torn down on every path, shielded.
                with anyio.CancelScope(shield=True):
                    if pushed:
                        await self.emit(appcontext_tearing_down, {"exc": error})
                        await self.emit(appcontext_popped, {})
                    await self.report()
            finally:
                if self.observed is not None:
                    finish(self.observed, error or self.timed_out)
                self.background.done(self)
                # The record of the send refers back to this send (its
                # failure hook): let go of it now, so that no reference cycle
                # waits for the garbage collector.
                del self.send

    async def emit(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        """Send an app context signal to every receiver; keep the failures.
        (Off the request path: a coroutine per signal costs nothing here.)"""
        if signal._observed:
            for receiver, exc in await call_awaited(signal, self.app, kwargs, COLLECT_SEQUENTIAL):
                self.failed(receiver, signal, exc)

    async def dispatch(self) -> None:
        """Run the receivers as ``send_async`` would, but go on past those
        that fail: each failure is logged at once and kept for the report."""
        try:
            await self.send.run(self.concurrent, self.timeout)
        except SendTimeoutError as error:
            logger.error("Background send of %s timed out", describe(self.signal), exc_info=error)
            self.failures.append(error)
            self.timed_out = error

    def receiver_failed(self, receiver: Receiver, exc: Exception) -> None:
        self.failed(receiver, self.signal, exc)

    def failed(self, receiver: Receiver, signal: Signal, exc: Exception) -> None:
        """Log a receiver's failure now, and keep it for
        ``got_background_exception``."""
        logger.error(
            "Receiver %s of %s, sent in the background, raised",
            callable_name(receiver),
            describe(signal),
            exc_info=exc,
        )
        self.failures.append(exc)

    async def report(self) -> None:
        """Send each failure kept so far to ``got_background_exception``'s
        receivers (whose own failures are logged)."""
        signal = got_background_exception
        while self.failures:
            exc = self.failures.pop(0)
            if signal._observed:
                log_failures(
                    signal,
                    await call_awaited(signal, self.app, {"exception": exc}, COLLECT_SEQUENTIAL),
                )

    def log_unfinished(self, error: BaseException | None) -> None:
        if self.cancel_reason is not None:
            why = f"cancelled: {self.cancel_reason}"
        elif error is None or isinstance(error, anyio.get_cancelled_exc_class()):
            why = "cancelled: the app's lifespan was cancelled or failed"
        else:
            why = f"interrupted by {error!r}"
        running = ", ".join(self.send.running_names()) or "none"
        not_called = ", ".join(self.send.not_called_names()) or "none"
        logger.error(
            "Background send of %s (sender %s) was %s. Receivers still running: %s; "
            "not called: %s; failures not yet sent to got_background_exception: %d "
            "(sent now)",
            describe(self.signal),
            _sender_repr.repr(self.sender),
            why,
            running,
            not_called,
            len(self.failures),
        )

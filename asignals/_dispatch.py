"""Awaited dispatch: a send's receivers run one after another or as
concurrent tasks, on asyncio or trio, within a timeout, with what came of
each kept until the send ends.

Receivers come as ``(handle, kind)`` entries (see asignals._types); a
receiver is fetched from its handle when its turn comes, so one that an
earlier receiver disconnected is not called (as in blinker). Errors are
raised as blinker raises them (the first, sequentially; all, in an
``ExceptionGroup``, concurrently) or, given an ``on_failure`` callback, passed
to it as they happen while every receiver runs (the middleware's teardown,
background sends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from inspect import CORO_CREATED, getcoroutinestate
from typing import Any, cast

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._exceptions import ReceiverCancelledError, SendTimeoutError
from ._types import ASYNC, SYNC, THREAD, Entries, Receiver, Results
from ._types import Wrapper as SyncWrapper
from ._utilities import callable_name, describe, running_asyncio_loop, through

logger = logging.getLogger("asignals")

#: Called with each receiver that raised, and what it raised, as it happens.
OnFailure = Callable[[Receiver, Exception], None]

_NOT_CALLED: Any = object()
_RUNNING: Any = object()


class _Failure:
    """The outcome of a receiver that raised, kept until every receiver ran."""

    __slots__ = ("exception",)

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception


async def call_receiver(
    receiver: Receiver,
    kind: int,
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
) -> Any:
    """Call one receiver from async code, the way its kind asks for."""
    if kind == ASYNC:
        return await receiver(sender, **kwargs)
    if kind == THREAD:
        # anyio runs the function in a copy of the caller's context, so the
        # receiver sees the sender's context variables.
        return await anyio.to_thread.run_sync(partial(receiver, sender, **kwargs))
    if sync_wrapper is not None:
        return await through(sync_wrapper, receiver)(sender, **kwargs)
    return receiver(sender, **kwargs)


async def dispatch(
    signal: object,
    entries: Entries,
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
    concurrent: bool,
    timeout: float | None,  # noqa: ASYNC109 - the send's own option, applied inside
    on_failure: OnFailure | None = None,
) -> Results:
    """Run the receivers of ``entries`` sequentially or concurrently, within
    ``timeout``, and return their results (see :meth:`Send.run`)."""
    send = Send(signal, entries, sender, kwargs, sync_wrapper, on_failure)
    await send.run(concurrent, timeout)
    return send.results()


_TASK_NAME = "asignals receiver"


class _ReceiverTask(asyncio.Task[None]):
    """The task of one receiver of a concurrent send on asyncio.

    Its coroutine, :meth:`Send._run_task`, counts it done for the send. A
    task cancelled before its first step never runs its coroutine, so if
    something other than the send cancels it then, ``cancel`` has the count
    kept by a done callback instead. (The task is made directly, not by
    ``loop.create_task``, so a custom task factory does not apply.)
    """

    __slots__ = ("index", "owner")

    owner: Send
    index: int

    def started(self) -> bool:
        coro = cast(Coroutine[Any, Any, None], self.get_coro())
        return getcoroutinestate(coro) != CORO_CREATED

    def cancel(self, msg: Any | None = None) -> bool:
        first_cancel = not self.done() and not self.cancelling()
        if first_cancel and not self.started() and not self.owner.cancelling:
            # Its coroutine will never run: count the task done once it is.
            self.add_done_callback(self.owner.cancelled_before_start)
        return super().cancel(msg)


class Send:
    """One send in progress: for each entry, the receiver it was fetched as
    when its turn came and what came of it."""

    __slots__ = (
        "all_done",
        "cancelling",
        "entries",
        "interrupt",
        "kwargs",
        "on_failure",
        "outcomes",
        "receivers",
        "running",
        "sender",
        "signal",
        "skipped",
        "sync_wrapper",
    )

    def __init__(
        self,
        signal: object,
        entries: Entries,
        sender: Any,
        kwargs: dict[str, Any],
        sync_wrapper: SyncWrapper | None,
        on_failure: OnFailure | None = None,
    ) -> None:
        self.signal = signal
        self.entries = entries
        self.sender = sender
        self.kwargs = kwargs
        self.sync_wrapper = sync_wrapper
        self.on_failure = on_failure
        self.receivers: list[Receiver | None] = [None] * len(entries)
        self.outcomes: list[Any] = [_NOT_CALLED] * len(entries)
        # Whether a receiver was collected or disconnected before its turn.
        self.skipped = False
        # Concurrent dispatch on asyncio: the number of receivers' tasks still
        # running, a future done when none is (or one raised an interrupt),
        # the first interrupt, and whether the send is cancelling its tasks.
        self.running = 0
        self.all_done: asyncio.Future[None]
        self.interrupt: BaseException | None = None
        self.cancelling = False

    async def run(self, concurrent: bool, timeout: float | None) -> None:  # noqa: ASYNC109
        """Run the receivers sequentially or concurrently, within ``timeout``.

        Without ``on_failure``, sequential dispatch stops at the first
        exception and raises it, as blinker does, and concurrent dispatch
        lets every receiver finish, then raises an ``ExceptionGroup`` of all
        that failed. With it, every receiver runs and each failure goes to
        it. A timeout cancels what still runs and, if that cut the send
        short, raises :class:`SendTimeoutError`.
        """
        run = self.run_concurrently if concurrent else self.run_sequentially
        try:
            if timeout is None:
                await run()
            else:
                with anyio.move_on_after(timeout) as scope:
                    await run()
                # Only a send the deadline cut short fails: one whose receivers
                # all finished (a worker thread, or receivers that never await,
                # cannot be stopped) returns their results.
                # (By identity: outcomes are the receivers' return values.)
                if scope.cancelled_caught and any(o is _RUNNING for o in self.outcomes):
                    raise self.timeout_error(timeout)
        except BaseException as exc:
            if not isinstance(exc, TimeoutError) and self.on_failure is None:
                # Cancelled or interrupted while receivers failed: there is
                # nobody to raise their errors to, so they are logged, never
                # dropped. (on_failure had each already.)
                self.log_failures(exc)
            raise
        if self.on_failure is None:
            failures = [o.exception for o in self.outcomes if type(o) is _Failure]
            if failures:
                count = f"{len(failures)} receiver{'s' if len(failures) > 1 else ''}"
                raise BaseExceptionGroup(f"{count} of {describe(self.signal)} raised", failures)

    def failed(self, index: int, exc: Exception) -> None:
        """Keep what receiver ``index`` raised, and pass it on if asked to."""
        self.outcomes[index] = _Failure(exc)
        if self.on_failure is not None:
            self.on_failure(cast(Receiver, self.receivers[index]), exc)

    def start(self, index: int) -> Receiver | None:
        """Fetch the receiver of entry ``index`` as its turn comes; None if it
        was collected or disconnected since the send began."""
        receiver: Receiver | None = self.entries[index][0][0]()
        if receiver is None:
            self.skipped = True
        else:
            self.receivers[index] = receiver
            self.outcomes[index] = _RUNNING
        return receiver

    def call(self, receiver: Receiver, kind: int) -> Any:
        return call_receiver(receiver, kind, self.sender, self.kwargs, self.sync_wrapper)

    async def run_sequentially(self) -> None:
        if self.on_failure is None:
            for index, (_, kind) in enumerate(self.entries):
                receiver = self.start(index)
                if receiver is not None:
                    self.outcomes[index] = await self.call(receiver, kind)
            return
        for index, (_, kind) in enumerate(self.entries):
            receiver = self.start(index)
            if receiver is None:
                continue
            try:
                self.outcomes[index] = await self.call(receiver, kind)
            except Exception as exc:
                self.failed(index, exc)
            except BaseException as exc:
                if not _cancelled_by_itself(exc):
                    raise
                # On asyncio a receiver may raise CancelledError that nothing
                # cancelled it with (it awaited a future another task
                # cancelled): that receiver failed, the send goes on.
                error = self.cancelled_elsewhere(index)
                error.__cause__ = exc
                self.failed(index, error)

    async def run_concurrently(self) -> None:
        loop = running_asyncio_loop()
        if loop is None:
            await self._run_in_nursery()
            return
        # On asyncio, plain tasks cost a fraction of an anyio task group's per
        # task, which is most of a concurrent send. Structure is kept by hand:
        # nothing returns or raises while a task it started is still running.
        for _, kind in self.entries:
            if kind == THREAD:
                # Started tasks run before this one next checks for
                # cancellation, and a worker thread cannot be stopped: check
                # first, as the task group and anyio.to_thread.run_sync do.
                await anyio.lowlevel.checkpoint_if_cancelled()
                break
        sender, kwargs = self.sender, self.kwargs
        receivers, outcomes = self.receivers, self.outcomes
        plain_sync = SYNC if self.sync_wrapper is None else None
        run_task = self._run_task
        tasks: list[_ReceiverTask] = []
        try:
            for index, (handle, kind) in enumerate(self.entries):
                # self.start(index), inlined: this loop is most of the send.
                receiver = handle[0]()
                if receiver is None:
                    self.skipped = True
                    continue
                receivers[index] = receiver
                outcomes[index] = _RUNNING
                if kind == plain_sync:
                    try:
                        outcomes[index] = receiver(sender, **kwargs)
                    except Exception as exc:
                        self.failed(index, exc)
                    continue
                # Tasks copy the current context: receivers see the sender's
                # context variables. (Made directly, not by loop.create_task:
                # see _ReceiverTask. Named, as on Python 3.11 a task makes up
                # its default name at once, which costs more than the rest.)
                task = _ReceiverTask(run_task(index, receiver, kind), loop=loop, name=_TASK_NAME)
                task.owner = self
                task.index = index
                tasks.append(task)
            if tasks:
                self.running = len(tasks)
                self.all_done = loop.create_future()
                # Cancelling the send cancels this future, not a receiver's
                # task, which could swallow the cancellation.
                await self.all_done
        except BaseException:
            await self._cancel(tasks)
            raise
        if self.interrupt is not None:
            await self._cancel(tasks)
            raise self.interrupt

    async def _run_task(self, index: int, receiver: Receiver, kind: int) -> None:
        """A receiver's task: call it, keep what came of it and count it done.
        The bookkeeping is done here, not in a done callback, which would
        cost each task another turn of the event loop."""
        try:
            if kind == ASYNC:
                self.outcomes[index] = await receiver(self.sender, **self.kwargs)
            else:
                self.outcomes[index] = await self.call(receiver, kind)
        except Exception as exc:
            # Kept, not raised: a failing receiver does not stop the others.
            self.failed(index, exc)
        except asyncio.CancelledError as exc:
            if not self.cancelling:
                error = self.cancelled_elsewhere(index)
                error.__cause__ = exc
                self.failed(index, error)
            self._task_done()
            raise
        except GeneratorExit:
            # Closed, not cancelled, as a task's coroutine is when the task
            # is destroyed while pending: no send waits for it any more.
            raise
        except BaseException as exc:
            # An interrupt (KeyboardInterrupt, SystemExit...): the send
            # cancels the other receivers, then raises it.
            self.outcomes[index] = _Failure(exc)
            if self.interrupt is None:
                self.interrupt = exc
        self._task_done()

    def _task_done(self) -> None:
        """Count a receiver's task done, and wake the send once none runs,
        or at once if one raised an interrupt."""
        self.running -= 1
        if (not self.running or self.interrupt is not None) and not self.all_done.done():
            self.all_done.set_result(None)

    def cancelled_elsewhere(self, index: int) -> ReceiverCancelledError:
        """The failure of a receiver that something other than the send
        cancelled, as the send has no result to give for it."""
        return ReceiverCancelledError(
            f"receiver {callable_name(self.receivers[index])} was cancelled, "
            "by itself or by another task, not by the send: it awaited something "
            "that was cancelled; catch that in the receiver, or bound the send "
            "with _timeout= instead"
        )

    def cancelled_before_start(self, task: _ReceiverTask) -> None:
        """Done callback of a task that something other than the send
        cancelled before its coroutine started, so that never ran."""
        self.failed(task.index, self.cancelled_elsewhere(task.index))
        self._task_done()

    async def _cancel(self, tasks: list[_ReceiverTask]) -> None:
        """Cancel ``tasks`` and wait until every one has finished, whatever
        else cancels this task meanwhile. A worker thread cannot be stopped,
        so a receiver running in one is waited for; one whose task has not
        started yet is cancelled before it starts."""
        self.cancelling = True
        for task in tasks:
            if self.entries[task.index][1] != THREAD or not task.started():
                task.cancel()
        pending = {task for task in tasks if not task.done()}
        cancelled_again = None
        while pending:
            try:
                with anyio.CancelScope(shield=True):
                    _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError as exc:
                # A plain task.cancel() reaches through anyio's shield: keep
                # waiting, then let that cancellation through.
                cancelled_again = exc
        if cancelled_again is not None:
            raise cancelled_again

    async def _run_in_nursery(self) -> None:
        # Not on asyncio, so on trio, anyio's other backend. Its own nursery
        # costs far less per task than an anyio task group around it.
        import trio

        try:
            async with trio.open_nursery(strict_exception_groups=True) as nursery:
                for index, (_, kind) in enumerate(self.entries):
                    receiver = self.start(index)
                    if receiver is None:
                        continue
                    if kind == SYNC and self.sync_wrapper is None:
                        try:
                            self.outcomes[index] = receiver(self.sender, **self.kwargs)
                        except Exception as exc:
                            self.failed(index, exc)
                    else:
                        nursery.start_soon(self._run_into, index, receiver, kind)
        except BaseExceptionGroup as group:
            # Receivers' exceptions are kept, so the group only holds what a
            # receiver raised that is not an Exception (KeyboardInterrupt,
            # SystemExit...): raise it as it is, as on asyncio.
            interrupts = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(interrupts) == 1 and not isinstance(interrupts[0], BaseExceptionGroup):
                raise interrupts[0] from None
            raise

    async def _run_into(self, index: int, receiver: Receiver, kind: int) -> None:
        # A failing receiver must not cancel its siblings, so its exception is
        # kept rather than raised into the nursery.
        try:
            if kind == ASYNC:
                self.outcomes[index] = await receiver(self.sender, **self.kwargs)
            else:
                self.outcomes[index] = await self.call(receiver, kind)
        except Exception as exc:
            self.failed(index, exc)

    def results(self) -> Results:
        pairs = zip(self.receivers, self.outcomes, strict=True)
        if self.skipped:
            return [(receiver, outcome) for receiver, outcome in pairs if receiver is not None]
        return cast(Results, list(pairs))

    def running_names(self) -> list[str]:
        """The names of the receivers called and not yet ended."""
        return [
            callable_name(receiver)
            for receiver, outcome in zip(self.receivers, self.outcomes, strict=True)
            if outcome is _RUNNING
        ]

    def not_called_names(self) -> list[str]:
        """The names of the live receivers not called yet."""
        return [
            callable_name(receiver)
            for (handle, _), outcome in zip(self.entries, self.outcomes, strict=True)
            if outcome is _NOT_CALLED and (receiver := handle[0]()) is not None
        ]

    def timeout_error(self, timeout: float) -> SendTimeoutError:
        message = (
            f"receivers of {describe(self.signal)} did not finish within {timeout} seconds "
            f"and were cancelled: {', '.join(self.running_names())}"
        )
        not_called = self.not_called_names()
        if not_called:
            message += f"; not called: {', '.join(not_called)}"
        error = SendTimeoutError(message)
        failures = [o.exception for o in self.outcomes if type(o) is _Failure]
        if failures:
            error.__cause__ = BaseExceptionGroup(
                "receivers that raised before the timeout", failures
            )
        return error

    def log_failures(self, raising: BaseException) -> None:
        for receiver, outcome in zip(self.receivers, self.outcomes, strict=True):
            if type(outcome) is _Failure and outcome.exception is not raising:
                logger.error(
                    "receiver %s of %s raised while the send was cancelled or interrupted",
                    callable_name(receiver),
                    describe(self.signal),
                    exc_info=outcome.exception,
                )


def _cancelled_by_itself(exc: BaseException) -> bool:
    """Whether ``exc`` is an asyncio cancellation of a receiver that its task
    was not asked for (trio's cannot be raised that way)."""
    if not isinstance(exc, asyncio.CancelledError) or running_asyncio_loop() is None:
        return False
    task = asyncio.current_task()
    return task is not None and not task.cancelling()

"""How a send calls its receivers once the signal has chosen them.

The common case, a sequential ``send`` or ``send_async``, is inlined in the
signal itself; this module holds everything else: concurrent dispatch,
timeouts, worker threads and the way back to the event loop.

Receivers come as ``(handle, kind)`` entries. A handle is a one-item list
holding a callable that returns the receiver, or None once the receiver was
collected or disconnected; a receiver is fetched from it when its turn comes,
so one that an earlier receiver disconnected is not called (as in blinker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from inspect import CORO_CREATED, getcoroutinestate
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ._utilities import callable_name, describe, running_asyncio_loop, through

logger = logging.getLogger("asignals")

#: How a receiver is called: inline, awaited, or in a worker thread.
SYNC = 0
ASYNC = 1
THREAD = 2

Receiver = Callable[..., Any]
Handle = list[Callable[[], Any]]
Entries = Sequence[tuple[Handle, int]]
SyncWrapper = Callable[[Receiver], Callable[..., Any]]
Results = list[tuple[Receiver, Any]]

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
) -> Results:
    """Run the receivers of ``entries`` sequentially or concurrently, within
    ``timeout``.

    Sequential dispatch stops at the first exception and raises it, as blinker
    does. Concurrent dispatch lets every receiver finish, then raises an
    ``ExceptionGroup`` of all that failed. A timeout cancels what still runs
    and, if that cut the send short, raises ``TimeoutError``.
    """
    send = _Send(signal, entries, sender, kwargs, sync_wrapper)
    run = send.run_concurrently if concurrent else send.run_sequentially
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
            if scope.cancelled_caught and any(o is _RUNNING for o in send.outcomes):
                raise send.timeout_error(timeout)
    except BaseException as exc:
        if not isinstance(exc, TimeoutError):
            # Cancelled or interrupted while receivers failed: there is nobody
            # to raise their errors to, so they are logged, never dropped.
            send.log_failures(exc)
        raise
    failures = [o.exception for o in send.outcomes if type(o) is _Failure]
    if failures:
        count = f"{len(failures)} receiver{'s' if len(failures) > 1 else ''}"
        raise BaseExceptionGroup(f"{count} of {describe(signal)} raised", failures)
    return send.results()


class _Send:
    """One send in progress: for each entry, the receiver it was fetched as
    when its turn came and what came of it."""

    def __init__(
        self,
        signal: object,
        entries: Entries,
        sender: Any,
        kwargs: dict[str, Any],
        sync_wrapper: SyncWrapper | None,
    ) -> None:
        self.signal = signal
        self.entries = entries
        self.sender = sender
        self.kwargs = kwargs
        self.sync_wrapper = sync_wrapper
        self.receivers: list[Receiver | None] = [None] * len(entries)
        self.outcomes: list[Any] = [_NOT_CALLED] * len(entries)

    def start(self, index: int) -> Receiver | None:
        """Fetch the receiver of entry ``index`` as its turn comes; None if it
        was collected or disconnected since the send began."""
        receiver: Receiver | None = self.entries[index][0][0]()
        if receiver is not None:
            self.receivers[index] = receiver
            self.outcomes[index] = _RUNNING
        return receiver

    def call(self, receiver: Receiver, kind: int) -> Any:
        return call_receiver(receiver, kind, self.sender, self.kwargs, self.sync_wrapper)

    async def run_sequentially(self) -> None:
        for index, (_, kind) in enumerate(self.entries):
            receiver = self.start(index)
            if receiver is not None:
                self.outcomes[index] = await self.call(receiver, kind)

    async def run_concurrently(self) -> None:
        loop = running_asyncio_loop()
        if loop is not None:
            await self._run_on_asyncio(loop)
        else:
            await self._run_in_task_group()

    async def _run_on_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        # Plain asyncio tasks cost a fraction of an anyio task group's per
        # task, which is most of a concurrent send. Structure is kept by hand:
        # nothing returns or raises while a task it started is still running.
        if any(kind == THREAD for _, kind in self.entries):
            # Started tasks run before this one next checks for cancellation,
            # and a worker thread cannot be stopped: check first, as the task
            # group and anyio.to_thread.run_sync do.
            await anyio.lowlevel.checkpoint_if_cancelled()
        tasks: list[tuple[int, int, asyncio.Task[Any]]] = []
        try:
            for index, (_, kind) in enumerate(self.entries):
                receiver = self.start(index)
                if receiver is None:
                    continue
                try:
                    if kind == SYNC and self.sync_wrapper is None:
                        self.outcomes[index] = receiver(self.sender, **self.kwargs)
                        continue
                    coro = self.call(receiver, kind)
                except Exception as exc:
                    self.outcomes[index] = _Failure(exc)
                    continue
                # Tasks copy the current context: receivers see the sender's
                # context variables.
                tasks.append((index, kind, loop.create_task(coro)))
            if tasks:
                await _all_done(loop, tasks)
        except BaseException:
            await self._cancel(tasks)
            raise
        interrupted = not all(task.done() for _, _, task in tasks)
        if interrupted:
            await self._cancel(tasks)  # a receiver raised an interrupt
        interrupt = None
        for index, _, task in tasks:
            if task.cancelled():
                if interrupted:
                    continue  # cancelled by the send, for the interrupt
                # The send did not cancel it: something else did.
                error = RuntimeError(
                    f"receiver {callable_name(self.receivers[index])} was cancelled, "
                    "by itself or by another task, not by the send"
                )
                self.outcomes[index] = _Failure(error)
                continue
            exception = self._keep(index, task)
            if interrupt is None and not isinstance(exception, Exception | None):
                interrupt = exception
        if interrupt is not None:
            raise interrupt

    async def _cancel(self, tasks: list[tuple[int, int, asyncio.Task[Any]]]) -> None:
        """Cancel ``tasks`` and wait until every one has finished, whatever
        else cancels this task meanwhile; keep what came of each. A worker
        thread cannot be stopped, so a receiver running in one is waited for;
        one whose task has not started yet is cancelled before it starts."""
        for _, kind, task in tasks:
            coro = cast(Coroutine[Any, Any, Any], task.get_coro())
            if kind != THREAD or getcoroutinestate(coro) == CORO_CREATED:
                task.cancel()
        pending = {task for _, _, task in tasks if not task.done()}
        cancelled_again = None
        while pending:
            try:
                with anyio.CancelScope(shield=True):
                    _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError as exc:
                # A plain task.cancel() reaches through anyio's shield: keep
                # waiting, then let that cancellation through.
                cancelled_again = exc
        for index, _, task in tasks:
            if not task.cancelled():
                self._keep(index, task)
        if cancelled_again is not None:
            raise cancelled_again

    def _keep(self, index: int, task: asyncio.Task[Any]) -> BaseException | None:
        """Keep what a finished, uncancelled task came to: its result, or
        its exception as a failure; return the exception."""
        exception = task.exception()
        self.outcomes[index] = task.result() if exception is None else _Failure(exception)
        return exception

    async def _run_in_task_group(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for index, (_, kind) in enumerate(self.entries):
                    receiver = self.start(index)
                    if receiver is None:
                        continue
                    if kind == SYNC and self.sync_wrapper is None:
                        try:
                            self.outcomes[index] = receiver(self.sender, **self.kwargs)
                        except Exception as exc:
                            self.outcomes[index] = _Failure(exc)
                    else:
                        tg.start_soon(self._run_into, index, receiver, kind)
        except BaseExceptionGroup as group:
            # Receivers' exceptions are kept, so the group only holds what a
            # receiver raised that is not an Exception (KeyboardInterrupt,
            # SystemExit...): raise it as it is, as on asyncio.
            cancelled = anyio.get_cancelled_exc_class()
            interrupts = [e for e in group.exceptions if not isinstance(e, cancelled)]
            if len(interrupts) == 1 and not isinstance(interrupts[0], BaseExceptionGroup):
                raise interrupts[0] from None
            raise

    async def _run_into(self, index: int, receiver: Receiver, kind: int) -> None:
        # A failing receiver must not cancel its siblings, so its exception is
        # kept rather than raised into the task group.
        try:
            self.outcomes[index] = await self.call(receiver, kind)
        except Exception as exc:
            self.outcomes[index] = _Failure(exc)

    def results(self) -> Results:
        return [
            (receiver, outcome)
            for receiver, outcome in zip(self.receivers, self.outcomes, strict=True)
            if receiver is not None
        ]

    def timeout_error(self, timeout: float) -> TimeoutError:
        unfinished = [
            callable_name(receiver)
            for receiver, outcome in zip(self.receivers, self.outcomes, strict=True)
            if outcome is _RUNNING
        ]
        message = (
            f"receivers of {describe(self.signal)} did not finish within {timeout} seconds "
            f"and were cancelled: {', '.join(unfinished)}"
        )
        not_called = [
            callable_name(receiver)
            for (handle, _), outcome in zip(self.entries, self.outcomes, strict=True)
            if outcome is _NOT_CALLED and (receiver := handle[0]()) is not None
        ]
        if not_called:
            message += f"; not called: {', '.join(not_called)}"
        error = TimeoutError(message)
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


async def _all_done(
    loop: asyncio.AbstractEventLoop, tasks: list[tuple[int, int, asyncio.Task[Any]]]
) -> None:
    """Wait until every task is done, or until one raised an interrupt (a
    BaseException that is not an Exception). Unlike awaiting each task, this
    never passes a cancellation of the send on to a receiver, which could
    swallow it."""
    done: asyncio.Future[None] = loop.create_future()
    remaining = len(tasks)

    def on_done(task: asyncio.Task[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        if done.done():
            return
        if remaining == 0 or (
            not task.cancelled() and not isinstance(task.exception(), Exception | None)
        ):
            done.set_result(None)

    for _, _, task in tasks:
        task.add_done_callback(on_done)
    await done


def call_from_worker_thread(entries: Entries, sender: Any, kwargs: dict[str, Any]) -> Results:
    """Run receivers for a sync ``send()`` made in an anyio worker thread: sync
    receivers in this thread, async ones on the event loop, one by one."""
    results: Results = []
    for handle, kind in entries:
        receiver = handle[0]()
        if receiver is None:
            continue
        if kind == ASYNC:
            # anyio runs the coroutine in a copy of this thread's context.
            value = anyio.from_thread.run(partial(receiver, sender, **kwargs))
        else:
            value = receiver(sender, **kwargs)
        results.append((receiver, value))
    return results

"""How a send calls its receivers once the signal has chosen them.

The common case, a sequential ``send`` or ``send_async``, is inlined in the
signal itself; this module holds everything else: concurrent dispatch,
timeouts, worker threads and the way back to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from ._utilities import callable_name, running_asyncio_loop

logger = logging.getLogger("asignals")

#: How a receiver is called: inline, awaited, or in a worker thread.
SYNC = 0
ASYNC = 1
THREAD = 2

Receiver = Callable[..., Any]
SyncWrapper = Callable[[Receiver], Callable[..., Any]]
Results = list[tuple[Receiver, Any]]

_PENDING: Any = object()


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
        return await sync_wrapper(receiver)(sender, **kwargs)
    return receiver(sender, **kwargs)


async def dispatch(
    signal: object,
    receivers: Sequence[tuple[Receiver, int]],
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
    concurrent: bool,
    timeout: float | None,  # noqa: ASYNC109 - the send's own option, applied inside
) -> Results:
    """Run ``receivers`` sequentially or concurrently, within ``timeout``.

    Sequential dispatch stops at the first exception and raises it, as blinker
    does. Concurrent dispatch lets every receiver finish, then raises an
    ``ExceptionGroup`` of all that failed. A timeout cancels what still runs
    and raises ``TimeoutError``.
    """
    outcomes: list[Any] = [_PENDING] * len(receivers)
    run = _run_concurrently if concurrent else _run_sequentially
    try:
        if timeout is None:
            await run(receivers, outcomes, sender, kwargs, sync_wrapper)
        else:
            with anyio.move_on_after(timeout) as scope:
                await run(receivers, outcomes, sender, kwargs, sync_wrapper)
            if scope.cancelled_caught:
                raise _timeout_error(signal, receivers, outcomes, timeout)
    except BaseException as exc:
        if not isinstance(exc, TimeoutError):
            # Cancelled from outside while receivers failed: there is nobody
            # to raise their errors to, so they are logged, never dropped.
            _log_failures(signal, receivers, outcomes)
        raise

    failures = [o.exception for o in outcomes if type(o) is _Failure]
    if failures:
        raise BaseExceptionGroup(
            f"{len(failures)} of {len(receivers)} receivers of {signal!r} raised",
            failures,
        )
    return list(zip([r for r, _ in receivers], outcomes, strict=True))


async def _run_sequentially(
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
) -> None:
    for index, (receiver, kind) in enumerate(receivers):
        outcomes[index] = await call_receiver(receiver, kind, sender, kwargs, sync_wrapper)


async def _run_concurrently(
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
) -> None:
    loop = running_asyncio_loop()
    if loop is not None:
        await _run_on_asyncio(loop, receivers, outcomes, sender, kwargs, sync_wrapper)
    else:
        await _run_in_task_group(receivers, outcomes, sender, kwargs, sync_wrapper)


async def _run_on_asyncio(
    loop: asyncio.AbstractEventLoop,
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
) -> None:
    # Plain asyncio tasks cost a fraction of an anyio task group's per task,
    # which is most of a concurrent send. Structure is kept by hand: nothing
    # returns or raises while a task it started is still running.
    tasks: list[tuple[int, asyncio.Task[Any]]] = []
    try:
        for index, (receiver, kind) in enumerate(receivers):
            try:
                if kind == SYNC and sync_wrapper is None:
                    outcomes[index] = receiver(sender, **kwargs)
                    continue
                if kind == ASYNC:
                    coro = receiver(sender, **kwargs)
                else:
                    coro = call_receiver(receiver, kind, sender, kwargs, sync_wrapper)
            except Exception as exc:
                outcomes[index] = _Failure(exc)
                continue
            # Tasks copy the current context: receivers see the sender's variables.
            tasks.append((index, loop.create_task(coro)))

        for index, task in tasks:
            try:
                outcomes[index] = await task
            except Exception as exc:
                outcomes[index] = _Failure(exc)
    except BaseException:
        if tasks:
            for _, task in tasks:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task for _, task in tasks])
            # Receivers that finished before the cancellation keep their
            # outcome; only those cancelled here stay pending.
            for index, task in tasks:
                if not task.cancelled():
                    error = task.exception()
                    outcomes[index] = task.result() if error is None else _Failure(error)
        raise


async def _run_in_task_group(
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
    sender: Any,
    kwargs: dict[str, Any],
    sync_wrapper: SyncWrapper | None,
) -> None:
    async with anyio.create_task_group() as tg:
        for index, (receiver, kind) in enumerate(receivers):
            if kind == SYNC and sync_wrapper is None:
                try:
                    outcomes[index] = receiver(sender, **kwargs)
                except Exception as exc:
                    outcomes[index] = _Failure(exc)
            else:
                tg.start_soon(
                    _run_into,
                    outcomes,
                    index,
                    partial(call_receiver, receiver, kind, sender, kwargs, sync_wrapper),
                )


async def _run_into(outcomes: list[Any], index: int, call: Callable[[], Any]) -> None:
    # A failing receiver must not cancel its siblings, so its exception is
    # kept rather than raised into the task group.
    try:
        outcomes[index] = await call()
    except Exception as exc:
        outcomes[index] = _Failure(exc)


def _timeout_error(
    signal: object,
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
    timeout: float,
) -> TimeoutError:
    unfinished = [
        callable_name(receiver)
        for (receiver, _), outcome in zip(receivers, outcomes, strict=True)
        if outcome is _PENDING
    ]
    error = TimeoutError(
        f"receivers of {signal!r} did not finish within {timeout} seconds "
        f"and were cancelled: {', '.join(unfinished)}"
    )
    failures = [o.exception for o in outcomes if type(o) is _Failure]
    if failures:
        error.__cause__ = BaseExceptionGroup("receivers that raised before the timeout", failures)
    return error


def _log_failures(
    signal: object,
    receivers: Sequence[tuple[Receiver, int]],
    outcomes: list[Any],
) -> None:
    for (receiver, _), outcome in zip(receivers, outcomes, strict=True):
        if type(outcome) is _Failure:
            logger.error(
                "receiver %s of %r raised while the send was cancelled",
                callable_name(receiver),
                signal,
                exc_info=outcome.exception,
            )


def call_from_worker_thread(
    receivers: Sequence[tuple[Receiver, int]],
    sender: Any,
    kwargs: dict[str, Any],
) -> Results:
    """Run receivers for a sync ``send()`` made in an anyio worker thread: sync
    receivers in this thread, async ones on the event loop, one by one."""
    results: Results = []
    for receiver, kind in receivers:
        if kind == ASYNC:
            # anyio runs the coroutine in a copy of this thread's context.
            value = anyio.from_thread.run(partial(receiver, sender, **kwargs))
        else:
            value = receiver(sender, **kwargs)
        results.append((receiver, value))
    return results

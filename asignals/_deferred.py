"""Sends made by sync code inside a request (``flash()``,
``TemplateResponse()``), whose receivers may have to be awaited.

Sync code on the event loop cannot await: it calls the sync receivers at
once, in order, and leaves the others on the request context's ``pending``
list, which async code runs later (:func:`flush`): as the response starts
(before ``request_finished``), before ``got_request_exception``, at teardown,
or when async code in the request sends, whichever comes first. From a worker
thread, sync code reaches the event loop itself, as :meth:`Signal.send`
does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from ._context import log_failures
from ._delivery import (
    COLLECT_NOW,
    COLLECT_SEQUENTIAL,
    RAISE_NOW,
    call_awaited,
    call_later,
    call_now,
    call_split,
)
from ._signal import Signal
from ._types import Failures
from ._utilities import in_anyio_worker_thread, on_event_loop

if TYPE_CHECKING:
    from ._context import RequestContext


def send_from_sync(ctx: RequestContext, signal: Signal, kwargs: dict[str, Any]) -> None:
    """Send ``signal`` from sync code in the request of ``ctx``, with the app
    as sender: see the module docstring. A receiver's exception propagates,
    unless the middleware logs receiver errors."""
    if not signal._observed:
        return
    raising = ctx.raising
    worker = in_anyio_worker_thread()
    if worker or not on_event_loop():
        if worker and ctx.pending:
            anyio.from_thread.run(flush, ctx)
        # Elsewhere than on the event loop, async receivers are reached as
        # send() reaches them, or fail as it fails.
        if raising:
            call_now(signal, ctx.app, kwargs, RAISE_NOW)
        else:
            log_failures(signal, call_now(signal, ctx.app, kwargs, COLLECT_NOW))
        return
    failed, later = call_split(signal, ctx.app, kwargs, RAISE_NOW if raising else COLLECT_NOW)
    if later is not None:
        # Those connected before a receiver that failed still run.
        if ctx.pending is None:
            ctx.pending = []
        ctx.pending.append(later)
    if failed:
        if raising:
            raise failed[0][1]
        log_failures(signal, failed)


async def send_from_async(ctx: RequestContext, signal: Signal, kwargs: dict[str, Any]) -> None:
    """Send ``signal`` from async code in the request of ``ctx``, with the
    app as sender, after the sends that sync code left (:func:`flush`)."""
    if ctx.pending:
        await flush(ctx)
    if not signal._observed:
        return
    if ctx.raising:
        await signal.send_async(ctx.app, **kwargs)
    else:
        log_failures(signal, await call_awaited(signal, ctx.app, kwargs, COLLECT_SEQUENTIAL))


async def flush(ctx: RequestContext) -> None:
    """Run the receivers that sync code on the event loop left, in order. An
    exception propagates, as from any lifecycle receiver, unless receiver
    errors are logged."""
    await run_pending(ctx, ctx.raising, log_failures)


async def run_pending(
    ctx: RequestContext, raising: bool, failed: Callable[[Signal, Failures], None]
) -> None:
    """Run the receivers that sync code left, in order (see
    :func:`~asignals._delivery.call_later`; the first error propagates if
    ``raising``), and pass each send's failures to ``failed``."""
    pending = ctx.pending
    policy = RAISE_NOW if raising else COLLECT_NOW
    while pending:
        deferred = pending[0]
        try:
            failures = await call_later(deferred, policy)
        finally:
            # Only once its receivers were all called: a cancelled flush
            # leaves the rest to the teardown's.
            if not deferred.entries:
                pending.pop(0)
        failed(deferred.signal, failures)

"""Every way to call a send's receivers, given a policy.

A :class:`Policy` says how errors go (``collect=False``: the first exception
propagates and later receivers are not called, as in blinker;
``collect=True``: every receiver runs and the failures are returned), whether
async receivers run concurrently, within which timeout, and through which
blinker wrapper. How the caller waits is the function it calls:

- :func:`call_now` for sync code: async receivers go through
  ``_async_wrapper``, or to the event loop from an anyio worker thread, or
  are a :class:`NeedsAwaitError`;
- :func:`call_plain` for the middleware's hot path: plain calls when no
  receiver must be awaited, else nothing;
- :func:`call_split` and :func:`call_later` for sync code on the event loop,
  which cannot await: sync receivers now, the others later, in order;
- :func:`call_awaited` for async code, sequentially or concurrently;
- :func:`start_background` for a background send, whose receivers
  asignals._background runs later with the awaited dispatch;
- :func:`call_nobody` for a send with no receiver to call.

The public send methods' common cases are inlined in the signal itself; each
of these functions tells the signal's observers, if it has any.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import observers as _observers
from ._exceptions import NeedsAwaitError
from ._options import ALL_OPTIONS, check_concurrent, check_timeout, known, take
from ._types import ASYNC, SYNC, Entry, Failures, Results, Wrapper
from ._utilities import (
    callable_name,
    describe,
    in_anyio_worker_thread,
    lookup_key,
    through,
)
from .observers import Mode

if TYPE_CHECKING:
    from ._signal import Signal


_dispatch: ModuleType | None = None


def awaiting() -> ModuleType:
    """asignals._dispatch, imported on first use: it needs asyncio (or trio),
    which an awaited send has loaded already, and ``import asignals`` need
    not."""
    global _dispatch
    if _dispatch is None:
        from . import _dispatch as module

        _dispatch = module
    return _dispatch


class Policy:
    """How a send calls its receivers: see the module docstring. ``mode`` is
    what observers are told (``"sync"``, ``"sequential"``, ``"concurrent"``
    or ``"background"``)."""

    __slots__ = ("collect", "concurrent", "mode", "timeout", "wrapper")

    def __init__(
        self,
        mode: Mode,
        *,
        collect: bool = False,
        concurrent: bool = False,
        timeout: float | None = None,
        wrapper: Wrapper | None = None,
    ) -> None:
        self.mode = mode
        self.collect = collect
        self.concurrent = concurrent
        self.timeout = timeout
        self.wrapper = wrapper


#: send(), and sync code that lets the first error propagate.
RAISE_NOW = Policy("sync")
#: Sync code that must reach every receiver (teardown).
COLLECT_NOW = Policy("sync", collect=True)
#: send_async() without options.
SEQUENTIAL = Policy("sequential")
#: send_async() of a concurrent signal, or with _concurrent=True alone.
CONCURRENT = Policy("concurrent", concurrent=True)
#: Async code that must reach every receiver (teardown).
COLLECT_SEQUENTIAL = Policy("sequential", collect=True)


def call_nobody(signal: Signal, sender: Any, kwargs: dict[str, Any], mode: Mode) -> None:
    """A send with nothing to call: it returns at once without checking its
    keywords, and its observers see it, without the options."""
    if signal._observers is not None:
        arguments = {k: v for k, v in kwargs.items() if k not in ALL_OPTIONS}
        _observers._finish(
            _observers._start(signal, sender, arguments, mode, (), signal._observers)[0], None
        )


def call_now(
    signal: Signal,
    sender: Any,
    kwargs: dict[str, Any],
    policy: Policy,
    entries: Sequence[Entry] | None = None,
) -> Any:
    """Call the receivers from sync code; return the results, or with
    ``policy.collect`` the failures."""
    if entries is None:
        entries = signal._lookup(sender)[0]
    observers = signal._observers
    if observers is None:
        return _now(signal, entries, sender, kwargs, policy)
    if not policy.collect and policy.wrapper is None and any(k == ASYNC for _, k in entries):
        # A send that cannot be made is not shown as made.
        _check_can_reach_loop(signal, sender)
    send, entries = _observers._start(signal, sender, kwargs, policy.mode, entries, observers)
    try:
        outcome = _now(signal, entries, sender, kwargs, policy)
    except BaseException as exc:
        _observers._finish(send, exc)
        raise
    _observers._finish(send, None)
    return _observers._unwrap(outcome)


def _now(
    signal: Signal, entries: Sequence[Entry], sender: Any, kwargs: dict[str, Any], policy: Policy
) -> Any:
    wrapper = policy.wrapper
    if policy.collect:
        failures: Failures = []
        for handle, kind in entries:
            receiver = handle[0]()
            if receiver is None:
                continue
            try:
                if kind == ASYNC:
                    _call_async_from_sync(signal, receiver, sender, kwargs, wrapper)
                else:
                    receiver(sender, **kwargs)
            except Exception as exc:
                failures.append((receiver, exc))
        return failures
    if wrapper is None and any(kind == ASYNC for _, kind in entries):
        # Checked first: no receiver is called if one cannot be.
        _check_can_reach_loop(signal, sender)
    results: Results = []
    for handle, kind in entries:
        receiver = handle[0]()
        if receiver is None:
            continue
        if kind == ASYNC:
            value = _call_async_from_sync(signal, receiver, sender, kwargs, wrapper)
        else:
            value = receiver(sender, **kwargs)
        results.append((receiver, value))
    return results


def _call_async_from_sync(
    signal: Signal, receiver: Any, sender: Any, kwargs: dict[str, Any], wrapper: Wrapper | None
) -> Any:
    if wrapper is not None:
        return through(wrapper, receiver)(sender, **kwargs)
    _check_can_reach_loop(signal, sender)
    import anyio.from_thread  # loaded already: this is anyio's worker thread

    # anyio runs the coroutine in a copy of this thread's context.
    return anyio.from_thread.run(partial(receiver, sender, **kwargs))


def _check_can_reach_loop(signal: Signal, sender: Any) -> None:
    if in_anyio_worker_thread():
        return
    # From the plan as connected, not an observed send's stand-ins.
    names = ", ".join(
        callable_name(receiver)
        for handle, kind in signal._lookup(sender)[0]
        if kind == ASYNC and (receiver := handle[0]()) is not None
    )
    raise NeedsAwaitError(
        f"{describe(signal)} has async receivers ({names}) that send() cannot run "
        "here: only in a thread started by anyio (anyio.to_thread.run_sync, "
        "as a sync Starlette endpoint runs in) can send() reach the event "
        "loop. Use `await signal.send_async(...)` instead, or pass "
        "_async_wrapper= to turn them into sync callables."
    )


def call_plain(
    signal: Signal, sender: Any, kwargs: dict[str, Any], policy: Policy
) -> Failures | None:
    """Call the receivers with plain calls if none must be awaited (none
    async, none run in a worker thread), and return the failures (with
    ``policy.collect``; else the first propagates); if one must be awaited,
    return None having called nothing: then use :func:`call_awaited`. No
    results are kept: the middleware sends lifecycle signals this way, on
    every request."""
    handles = signal._plain_handles
    if handles is None:
        plans = signal._sender_plans
        if plans is not None:
            # Receivers for specific senders, nobody observing.
            handles = plans.get(lookup_key(sender), signal._any_plan)[2]
            if handles is None:
                return None
        else:
            # Observed, or some receiver must be awaited.
            entries = signal._lookup(sender)[0]
            if any(kind != SYNC for _, kind in entries):
                return None
            if signal._observers is not None:
                outcome = call_now(signal, sender, kwargs, policy, entries)
                return outcome if policy.collect else []
            handles = tuple(handle for handle, _ in entries)
    failures: Failures = []
    # Flat, as in Signal.send.
    for handle in handles:
        receiver = handle[0]()
        if receiver is not None:
            try:
                receiver(sender, **kwargs)
            except Exception as exc:
                if not policy.collect:
                    raise
                failures.append((receiver, exc))
    return failures


class Deferred:
    """The receivers a split send left to await (:func:`call_split`), taken
    out as each is called, so that a cancelled :func:`call_later` can be
    taken up again."""

    __slots__ = ("entries", "error", "kwargs", "observed", "sender", "signal")

    def __init__(
        self,
        signal: Signal,
        entries: list[Entry],
        sender: Any,
        kwargs: dict[str, Any],
        observed: _observers.ObservedSend | None,
    ) -> None:
        self.signal = signal
        self.entries = entries
        self.sender = sender
        self.kwargs = kwargs
        self.observed = observed
        # What ended the send's first half, for the observers: the failure
        # that stopped it, without ``collect``.
        self.error: BaseException | None = None


def call_split(
    signal: Signal, sender: Any, kwargs: dict[str, Any], policy: Policy
) -> tuple[Failures, Deferred | None]:
    """For sync code on the event loop, which cannot await: call the sync
    receivers now, in order, and return their failures and what is left for
    :func:`call_later` (async receivers, and those run in worker threads), or
    None. Without ``policy.collect``, the first failure ends the send: the
    receivers after it are neither called nor left (the caller raises it)."""
    entries: Sequence[Entry] = signal._lookup(sender)[0]
    observed = None
    observers = signal._observers
    if observers is not None:
        observed, entries = _observers._start(
            signal, sender, kwargs, policy.mode, entries, observers
        )
    failures: Failures = []
    later: list[Entry] = []
    try:
        for entry in entries:
            if entry[1] != SYNC:
                later.append(entry)
                continue
            receiver = entry[0][0]()
            if receiver is not None:
                try:
                    receiver(sender, **kwargs)
                except Exception as exc:
                    failures.append((receiver, exc))
                    if not policy.collect:
                        break
    except BaseException as exc:
        if observed is not None:
            _observers._finish(observed, exc)
        raise
    stopped = failures[0][1] if failures and not policy.collect else None
    if observed is not None:
        failures = _observers._unwrap(failures)
        if not later:
            _observers._finish(observed, stopped)
    if not later:
        return failures, None
    deferred = Deferred(signal, later, sender, kwargs, observed)
    deferred.error = stopped
    return failures, deferred


async def call_later(deferred: Deferred, policy: Policy) -> Failures:
    """Call the receivers :func:`call_split` left, in order. One disconnected
    meanwhile is not called. Without ``policy.collect`` the first exception
    propagates and later receivers are not called; with it every receiver
    runs and the failures are returned."""
    failures: Failures = []
    entries = deferred.entries
    error: BaseException | None = None
    try:
        while entries:
            handle, kind = entries.pop(0)
            receiver = handle[0]()
            if receiver is None:
                continue
            try:
                await awaiting().call_receiver(
                    receiver, kind, deferred.sender, deferred.kwargs, None
                )
            except Exception as exc:
                if not policy.collect:
                    entries.clear()
                    raise
                failures.append((receiver, exc))
    except BaseException as exc:
        error = exc
        raise
    finally:
        # Only once every receiver was called: a cancelled call is taken up
        # again, and the send goes on.
        if deferred.observed is not None and not entries:
            _observers._finish(deferred.observed, error or deferred.error)
    if deferred.observed is not None:
        failures = _observers._unwrap(failures)
    return failures


async def call_awaited(
    signal: Signal,
    sender: Any,
    kwargs: dict[str, Any],
    policy: Policy,
    entries: Sequence[Entry] | None = None,
) -> Any:
    """Call the receivers from async code, awaiting the async ones (and
    those run in worker threads), sequentially or concurrently, within the
    policy's timeout; return the results, or with ``policy.collect`` the
    failures, every receiver having run."""
    if entries is None:
        entries = signal._lookup(sender)[0]
    observers = signal._observers
    if observers is None:
        return await _awaited(signal, entries, sender, kwargs, policy)
    send, entries = _observers._start(signal, sender, kwargs, policy.mode, entries, observers)
    try:
        outcome = await _awaited(signal, entries, sender, kwargs, policy)
    except BaseException as exc:
        _observers._finish(send, exc)
        raise
    _observers._finish(send, None)
    return _observers._unwrap(outcome)


async def _awaited(
    signal: Signal, entries: Sequence[Entry], sender: Any, kwargs: dict[str, Any], policy: Policy
) -> Any:
    if not policy.collect:
        if not entries:
            return []
        return await awaiting().dispatch(
            signal, entries, sender, kwargs, policy.wrapper, policy.concurrent, policy.timeout
        )
    failures: Failures = []
    if entries:
        await awaiting().dispatch(
            signal,
            entries,
            sender,
            kwargs,
            policy.wrapper,
            policy.concurrent,
            policy.timeout,
            lambda receiver, exc: failures.append((receiver, exc)),
        )
    return failures


def start_background(
    signal: Signal, sender: Any, kwargs: dict[str, Any]
) -> tuple[Sequence[Entry], Policy, _observers.ObservedSend | None] | None:
    """What :meth:`Signal.send_background` needs before its receivers run
    later: their entries, the policy (from the options, checked and taken out
    of ``kwargs`` now) and the send as its observers were told of it; None if
    there is nothing to run."""
    entries: Sequence[Entry] = signal._lookup(sender)[0]
    if not entries:
        call_nobody(signal, sender, kwargs, "background")
        return None
    concurrent = signal.concurrent
    timeout = None
    if kwargs and not known(kwargs):
        options = take(kwargs, "send_background")
        chosen = check_concurrent(options.get("_concurrent"))
        if chosen is not None:
            concurrent = chosen
        timeout = check_timeout(options.get("_timeout"))
    policy = Policy("background", collect=True, concurrent=concurrent, timeout=timeout)
    observers = signal._observers
    if observers is None:
        return entries, policy, None
    # Told now, as the send is made; its receivers report as they run.
    observed, entries = _observers._start(signal, sender, kwargs, "background", entries, observers)
    if not entries:  # collected meanwhile
        _observers._finish(observed, None)
        return None
    return entries, policy, observed


def finish(observed: _observers.ObservedSend, error: BaseException | None) -> None:
    """Tell the observers that a send begun elsewhere ended."""
    _observers._finish(observed, error)

"""Async dispatch, receivers together and interrupted: send_async's
concurrent mode, timeouts, cancellation from outside, and the corner cases
of cancellation and interruption. Sequential dispatch and the rest are in
test_dispatch.py.

Every async test runs on asyncio and on trio (see conftest.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from dispatch_helpers import MODES, connect_slow_then_fast
from helpers import Boom

from asignals import ReceiverCancelledError, Signal

# --------------------------------------------------------------------------
# Concurrent dispatch


def _connect_rendezvous(sig: Signal, log: list[str]) -> tuple[Callable[..., Any], ...]:
    """Connect ``waiter`` then ``setter``: ``waiter`` only returns once ``setter``
    has run, so a sequential send would never finish."""
    event = anyio.Event()

    async def waiter(sender: Any) -> str:
        log.append("waiter started")
        await event.wait()
        log.append("waiter finished")
        return "w"

    async def setter(sender: Any) -> str:
        log.append("setter started")
        event.set()
        log.append("setter finished")
        return "s"

    sig.connect(waiter, weak=False)
    sig.connect(setter, weak=False)
    return waiter, setter


@pytest.mark.anyio
async def test_concurrent_signal_runs_async_receivers_concurrently() -> None:
    sig = Signal(concurrent=True)
    log: list[str] = []
    waiter, setter = _connect_rendezvous(sig, log)

    with anyio.fail_after(5):
        results = await sig.send_async(None)

    assert results == [(waiter, "w"), (setter, "s")]
    assert log.index("setter finished") < log.index("waiter finished")


@pytest.mark.anyio
async def test_concurrent_option_overrides_sequential_signal() -> None:
    sig = Signal()
    log: list[str] = []
    waiter, setter = _connect_rendezvous(sig, log)

    with anyio.fail_after(5):
        results = await sig.send_async(None, _concurrent=True)

    assert results == [(waiter, "w"), (setter, "s")]


@pytest.mark.anyio
async def test_sequential_option_overrides_concurrent_signal() -> None:
    sig = Signal(concurrent=True)
    log: list[str] = []
    connect_slow_then_fast(sig, log)

    with anyio.fail_after(5):
        await sig.send_async(None, _concurrent=False)

    assert log == ["slow started", "slow finished", "fast"]


@pytest.mark.anyio
async def test_concurrent_results_in_connection_order_when_completion_order_differs() -> None:
    sig = Signal(concurrent=True)
    completed: list[str] = []
    second_done = anyio.Event()

    async def first(sender: Any) -> str:
        await second_done.wait()
        completed.append("first")
        return "1"

    def middle(sender: Any) -> str:
        completed.append("middle")
        return "m"

    async def second(sender: Any) -> str:
        completed.append("second")
        second_done.set()
        return "2"

    for receiver in (first, middle, second):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async(None)

    assert completed.index("second") < completed.index("first")
    assert results == [(first, "1"), (middle, "m"), (second, "2")]


@pytest.mark.anyio
async def test_concurrent_failing_receiver_does_not_cancel_the_others() -> None:
    sig = Signal(concurrent=True)
    go = anyio.Event()
    outcome: list[str] = []

    async def survivor(sender: Any) -> None:
        try:
            await go.wait()
            # A checkpoint after the failure: a cancelled sibling dies here.
            await anyio.lowlevel.checkpoint()
            outcome.append("completed")
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    async def fails(sender: Any) -> None:
        go.set()
        raise Boom("fails")

    sig.connect(survivor, weak=False)
    sig.connect(fails, weak=False)

    with anyio.fail_after(5), pytest.raises(ExceptionGroup):
        await sig.send_async(None)

    assert outcome == ["completed"]


@pytest.mark.anyio
async def test_concurrent_raises_exception_group_with_all_failures() -> None:
    sig = Signal(concurrent=True)
    both_started = anyio.Event()
    started: list[str] = []
    finished: list[str] = []

    def make_failing(name: str) -> Callable[..., Any]:
        async def receiver(sender: Any) -> None:
            started.append(name)
            if len(started) == 2:
                both_started.set()
            await both_started.wait()
            raise Boom(name)

        return receiver

    async def succeeds(sender: Any) -> str:
        await both_started.wait()
        await anyio.lowlevel.checkpoint()
        finished.append("succeeds")
        return "ok"

    fail_a, fail_b = make_failing("a"), make_failing("b")
    for receiver in (fail_a, succeeds, fail_b):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        await sig.send_async(None)

    assert len(info.value.exceptions) == 2
    assert all(isinstance(exc, Boom) for exc in info.value.exceptions)
    assert sorted(str(exc) for exc in info.value.exceptions) == ["a", "b"]
    assert finished == ["succeeds"]


@pytest.mark.anyio
async def test_concurrent_single_failure_is_still_an_exception_group() -> None:
    sig = Signal(concurrent=True)

    async def fails(sender: Any) -> None:
        raise Boom("only")

    async def ok(sender: Any) -> None:
        pass

    sig.connect(fails, weak=False)
    sig.connect(ok, weak=False)

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        await sig.send_async(None)

    assert [str(exc) for exc in info.value.exceptions] == ["only"]


@pytest.mark.anyio
async def test_concurrent_sync_receiver_failures_are_in_the_exception_group() -> None:
    sig = Signal(concurrent=True)
    ran: list[str] = []

    def sync_fails(sender: Any) -> None:
        ran.append("sync_fails")
        raise Boom("sync")

    async def async_fails(sender: Any) -> None:
        ran.append("async_fails")
        raise KeyError("async")

    async def async_ok(sender: Any) -> None:
        ran.append("async_ok")

    def sync_ok(sender: Any) -> None:
        ran.append("sync_ok")

    for receiver in (sync_fails, async_fails, async_ok, sync_ok):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        await sig.send_async(None)

    types = sorted(type(exc).__name__ for exc in info.value.exceptions)
    assert types == ["Boom", "KeyError"]
    assert sorted(ran) == ["async_fails", "async_ok", "sync_fails", "sync_ok"]


@pytest.mark.anyio
async def test_concurrent_mixed_sync_and_async_results_in_connection_order() -> None:
    sig = Signal(concurrent=True)

    async def a(sender: Any, **kw: Any) -> tuple[str, Any]:
        await anyio.lowlevel.checkpoint()
        return ("a", kw["n"])

    def b(sender: Any, **kw: Any) -> tuple[str, Any]:
        return ("b", kw["n"])

    async def c(sender: Any, **kw: Any) -> tuple[str, Any]:
        return ("c", kw["n"])

    for receiver in (a, b, c):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async("me", n=7)

    assert results == [(a, ("a", 7)), (b, ("b", 7)), (c, ("c", 7))]


@pytest.mark.anyio
async def test_concurrent_runs_to_thread_receiver_concurrently_with_async_receivers() -> None:
    sig = Signal(concurrent=True)
    released = threading.Event()

    def blocking(sender: Any) -> bool:
        # Released by the async receiver connected after this one.
        return released.wait(timeout=5)

    async def releaser(sender: Any) -> str:
        released.set()
        return "released"

    sig.connect(blocking, weak=False, to_thread=True)
    sig.connect(releaser, weak=False)

    with anyio.fail_after(10):
        results = await sig.send_async(None)

    assert results == [(blocking, True), (releaser, "released")]


# --------------------------------------------------------------------------
# Timeouts


def _hanging_receiver(seen: list[str]) -> Callable[..., Any]:
    async def hangs_forever(sender: Any) -> None:
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            seen.append("cancelled")
            raise
        finally:
            seen.append("finally")

    return hangs_forever


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_timeout_cancels_hanging_receiver_and_raises_timeout_error(
    concurrent: bool,
) -> None:
    sig = Signal()
    seen: list[str] = []
    sig.connect(_hanging_receiver(seen), weak=False)

    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await sig.send_async(None, _concurrent=concurrent, _timeout=0.05)

    assert seen == ["cancelled", "finally"]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_timeout_error_names_the_unfinished_receiver(concurrent: bool) -> None:
    sig = Signal()
    hangs_forever = _hanging_receiver([])
    sig.connect(hangs_forever, weak=False)

    with anyio.fail_after(5), pytest.raises(TimeoutError) as info:
        await sig.send_async(None, _concurrent=concurrent, _timeout=0.05)

    assert "hangs_forever" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_timeout_error_does_not_name_receivers_that_finished(concurrent: bool) -> None:
    sig = Signal()
    finished = anyio.Event()

    async def returns_at_once(sender: Any) -> str:
        finished.set()
        return "done"

    hangs_forever = _hanging_receiver([])
    if concurrent:
        # The hanging receiver comes first: its sibling finishes while it waits.
        sig.connect(hangs_forever, weak=False)
        sig.connect(returns_at_once, weak=False)
    else:
        sig.connect(returns_at_once, weak=False)
        sig.connect(hangs_forever, weak=False)

    with anyio.fail_after(5), pytest.raises(TimeoutError) as info:
        await sig.send_async(None, _concurrent=concurrent, _timeout=0.5)

    assert finished.is_set()
    message = str(info.value)
    assert "hangs_forever" in message
    assert "returns_at_once" not in message


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_send_within_timeout_returns_results(concurrent: bool) -> None:
    sig = Signal()

    async def quick(sender: Any) -> str:
        await anyio.lowlevel.checkpoint()
        return "quick"

    def sync(sender: Any) -> str:
        return "sync"

    sig.connect(quick, weak=False)
    sig.connect(sync, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async(None, _concurrent=concurrent, _timeout=5)

    assert results == [(quick, "quick"), (sync, "sync")]


@pytest.mark.anyio
async def test_timeout_error_has_earlier_failures_as_cause() -> None:
    sig = Signal(concurrent=True)

    async def fails(sender: Any) -> None:
        raise Boom("before the timeout")

    sig.connect(fails, weak=False)
    sig.connect(_hanging_receiver([]), weak=False)

    with anyio.fail_after(5), pytest.raises(TimeoutError) as info:
        await sig.send_async(None, _timeout=0.2)

    cause = info.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert [str(exc) for exc in cause.exceptions] == ["before the timeout"]


@pytest.mark.anyio
@pytest.mark.parametrize("bad_timeout", [0, -1, "1", True, float("nan")])
async def test_invalid_timeout_raises_value_error(bad_timeout: Any) -> None:
    sig = Signal()
    called: list[str] = []

    async def receiver(sender: Any) -> None:
        called.append("receiver")

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(ValueError, match="_timeout"):
        await sig.send_async(None, _timeout=bad_timeout)

    assert called == []


# --------------------------------------------------------------------------
# Cancellation from outside


@pytest.mark.anyio
async def test_outer_cancellation_cancels_concurrent_receivers_and_leaves_no_orphans() -> None:
    sig = Signal(concurrent=True)
    started: list[str] = []
    all_started = anyio.Event()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def make(name: str) -> Callable[..., Any]:
        async def receiver(sender: Any) -> None:
            started.append(name)
            if len(started) == 2:
                all_started.set()
            try:
                await anyio.Event().wait()
            except anyio.get_cancelled_exc_class():
                seen[name].append("cancelled")
                raise
            finally:
                seen[name].append("finally")

        return receiver

    sig.connect(make("a"), weak=False)
    sig.connect(make("b"), weak=False)
    send_returned: list[bool] = []

    async def send() -> None:
        await sig.send_async(None)
        send_returned.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await all_started.wait()
            tg.cancel_scope.cancel()
        # The scope has exited: every receiver must have finished by now.
        assert seen == {"a": ["cancelled", "finally"], "b": ["cancelled", "finally"]}

    assert send_returned == []


@pytest.mark.anyio
async def test_outer_cancellation_of_sequential_send_cancels_running_receiver() -> None:
    sig = Signal()
    started = anyio.Event()
    seen: list[str] = []
    later: list[str] = []

    async def waits(sender: Any) -> None:
        started.set()
        try:
            await anyio.Event().wait()
        finally:
            seen.append("finally")

    async def after(sender: Any) -> None:
        later.append("called")

    sig.connect(waits, weak=False)
    sig.connect(after, weak=False)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sig.send_async, None)
            await started.wait()
            tg.cancel_scope.cancel()
        assert seen == ["finally"]

    assert later == []


@pytest.mark.anyio
async def test_receiver_failure_during_outer_cancellation_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal(concurrent=True)
    failed = anyio.Event()
    waiting = anyio.Event()

    async def waits_forever(sender: Any) -> None:
        waiting.set()
        await anyio.Event().wait()

    async def fails_while_cancelled(sender: Any) -> None:
        try:
            raise Boom("lost")
        finally:
            failed.set()

    sig.connect(waits_forever, weak=False)
    sig.connect(fails_while_cancelled, weak=False)

    with caplog.at_level(logging.ERROR, logger="asignals"), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sig.send_async, None)
            await waiting.wait()
            await failed.wait()
            tg.cancel_scope.cancel()

    messages = [r.getMessage() for r in caplog.records if r.name == "asignals"]
    assert len(messages) == 1
    assert "fails_while_cancelled" in messages[0]


# --------------------------------------------------------------------------
# Cancellation and interruption corner cases


class Stop(BaseException):
    """A BaseException that is not an Exception, as KeyboardInterrupt."""


async def ended_cancelled(task: Any) -> None:
    """Wait for ``task`` without letting an outer cancellation pass for its
    own, and check that it ended cancelled."""
    import asyncio

    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done, "the send did not end"
    assert task.cancelled(), f"the send ended with {task.exception() or task.result()!r}"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_concurrent_receiver_base_exception_propagates_as_itself(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    sig = Signal(concurrent=True)

    def sync_stop(sender: Any) -> None:
        raise Stop("stop")

    async def async_stop(sender: Any) -> None:
        raise Stop("stop")

    cancelled: list[str] = []

    async def hangs(sender: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append("hangs")

    sig.connect(hangs, weak=False)
    sig.connect(sync_stop if kind == "sync" else async_stop, weak=False)
    with anyio.fail_after(5), pytest.raises(Stop):
        await sig.send_async()
    if kind == "async":
        # Cancelled by the send, at once. (Beside a sync receiver, which runs
        # while the tasks are made, it may be cancelled before it starts.)
        assert cancelled == ["hangs"]
    assert "raised while the send" not in caplog.text


def test_asyncio_send_waits_for_receivers_through_a_second_cancel() -> None:
    # Plain asyncio only: task.cancel() reaches through anyio's shield.
    import asyncio

    sig = Signal(concurrent=True)

    async def main() -> None:
        cleanup_started, cleanup_may_end = asyncio.Event(), asyncio.Event()
        cleaned: list[str] = []

        async def slow_cleanup(sender: Any) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleanup_started.set()
                await asyncio.shield(cleanup_may_end.wait())
                cleaned.append("slow")

        async def quick(sender: Any) -> None:
            await asyncio.sleep(3600)

        sig.connect(quick, weak=False)
        sig.connect(slow_cleanup, weak=False)
        send = asyncio.create_task(sig.send_async())
        await asyncio.sleep(0)
        send.cancel()
        await cleanup_started.wait()
        # Each receiver runs in a task of the send's, named for it.
        assert [t for t in asyncio.all_tasks() if t.get_name() == "asignals receiver"]
        send.cancel()  # lands while the send waits for its receivers
        await asyncio.sleep(0)
        assert not send.done()
        cleanup_may_end.set()
        await ended_cancelled(send)
        assert cleaned == ["slow"]
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "asignals receiver"]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_asyncio_receiver_cancelled_by_another_task_is_a_failure_not_a_cancellation() -> None:
    # Plain asyncio only: a receiver task cancelled by someone else.
    import asyncio

    sig = Signal(concurrent=True)
    log: list[str] = []

    async def cancelled_elsewhere(sender: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_soon(task.cancel)
        await asyncio.sleep(3600)

    async def finishes(sender: Any) -> str:
        await asyncio.sleep(0)
        log.append("finished")
        return "done"

    sig.connect(cancelled_elsewhere, weak=False)
    sig.connect(finishes, weak=False)

    async def main() -> None:
        with pytest.raises(ExceptionGroup) as caught:
            await sig.send_async()
        [error] = caught.value.exceptions
        assert isinstance(error, ReceiverCancelledError)
        assert isinstance(error, RuntimeError)
        assert isinstance(error.__cause__, asyncio.CancelledError)
        assert "cancelled_elsewhere" in str(error)

    asyncio.run(asyncio.wait_for(main(), 10))
    assert log == ["finished"]


@pytest.mark.anyio
async def test_timeout_message_names_receivers_not_called() -> None:
    sig = Signal()

    async def hangs(sender: Any) -> None:
        await anyio.sleep_forever()

    async def after(sender: Any) -> None:
        pass

    sig.connect(hangs, weak=False)
    sig.connect(after, weak=False)
    with pytest.raises(TimeoutError) as caught:
        await sig.send_async(_timeout=0.05)
    message = str(caught.value)
    assert "cancelled: " in message
    assert message.index("hangs") < message.index("not called: ") < message.index("after")


def test_asyncio_send_is_cancelled_even_if_the_awaited_receiver_swallows_it() -> None:
    # Plain asyncio only: the send's cancellation must not be handed to one
    # receiver task, which could swallow it.
    import asyncio

    sig = Signal(concurrent=True)
    seen: list[str] = []

    async def main() -> None:
        started = asyncio.Event()

        async def stubborn(sender: Any) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                seen.append("stubborn swallowed it")

        async def slow(sender: Any) -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                seen.append("slow cancelled")
                raise

        sig.connect(stubborn, weak=False)
        sig.connect(slow, weak=False)
        send = asyncio.create_task(sig.send_async())
        await started.wait()
        send.cancel()
        await ended_cancelled(send)

    asyncio.run(asyncio.wait_for(main(), 10))
    assert sorted(seen) == ["slow cancelled", "stubborn swallowed it"]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_cancelled_send_waits_for_its_worker_thread_receiver(concurrent: bool) -> None:
    sig = Signal()
    log: list[str] = []
    thread_started, release = threading.Event(), threading.Event()

    def blocking(sender: Any) -> None:
        thread_started.set()
        assert release.wait(10)
        log.append("thread finished")

    async def hangs(sender: Any) -> None:
        await anyio.sleep_forever()

    sig.connect(blocking, weak=False, to_thread=True)
    sig.connect(hangs, weak=False)

    async def send(scope: anyio.CancelScope) -> None:
        with scope:
            await sig.send_async(_concurrent=concurrent)
        log.append("send finished")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(send, scope)
            await anyio.to_thread.run_sync(thread_started.wait, 10)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert log == ["thread finished", "send finished"]


def test_asyncio_cancellation_during_a_timeout_cleanup_wins_over_the_timeout() -> None:
    # Plain asyncio only: the caller cancels while the send, having timed
    # out, waits for a receiver to clean up.
    import asyncio

    sig = Signal(concurrent=True)

    async def main() -> None:
        cleanup_started, cleanup_may_end = asyncio.Event(), asyncio.Event()

        async def slow_cleanup(sender: Any) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleanup_started.set()
                await asyncio.shield(cleanup_may_end.wait())

        sig.connect(slow_cleanup, weak=False)
        send = asyncio.create_task(sig.send_async(_timeout=0.01))
        await cleanup_started.wait()
        send.cancel()
        await asyncio.sleep(0)
        cleanup_may_end.set()
        await ended_cancelled(send)

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_worker_thread_receiver_not_started_when_the_send_is_cancelled_never_runs(
    concurrent: bool,
) -> None:
    sig = Signal()
    ran: list[str] = []
    sig.connect(lambda sender: ran.append("thread"), weak=False, to_thread=True)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sig.send_async(_concurrent=concurrent)
    assert scope.cancelled_caught
    assert ran == []


@pytest.mark.anyio
async def test_timeout_outlasted_only_by_a_worker_thread_returns_the_results() -> None:
    sig = Signal(concurrent=True)
    release = threading.Event()

    def blocking(sender: Any) -> str:
        assert release.wait(10)
        return "thread"

    sig.connect(blocking, weak=False, to_thread=True)
    results: list[Any] = []

    async def send() -> None:
        results.extend(await sig.send_async(_timeout=0.01))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await anyio.sleep(0.1)  # ten times the timeout: its deadline has passed
            release.set()
    assert results == [(blocking, "thread")]


class Incomparable:
    """A return value whose == raises, as some array types do."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("ambiguous comparison")

    __hash__ = object.__hash__


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_timeout_is_raised_beside_a_value_that_cannot_be_compared(concurrent: bool) -> None:
    sig = Signal()

    async def returns_it(sender: Any) -> Incomparable:
        return Incomparable()

    async def hangs(sender: Any) -> None:
        await anyio.sleep_forever()

    sig.connect(returns_it, weak=False)
    sig.connect(hangs, weak=False)
    with anyio.fail_after(5), pytest.raises(TimeoutError, match="hangs"):
        await sig.send_async(_timeout=0.01, _concurrent=concurrent)

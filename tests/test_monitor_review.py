"""asignals.monitor: what the review of the monitor found, each a test.

The results of a send the monitor stopped watching midway; blinker's
``_async_wrapper``/``_sync_wrapper`` given the receivers themselves; a send
with nothing to call that returns [] as without a monitor; senders known by
their id; a send() that raised before calling anything; how an interrupted
receiver is shown.

Every monitor a test records with stops by the end of the test (the autouse
fixture in conftest.py fails a test that leaves one recording).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import local_client
from monitor_pages import (
    WAIT,
    connected,
    done,
    done_async,
    name_of,
    new_signal,
    only_send,
    runs,
    sends_of,
)

from asignals import NamedSignal
from asignals.monitor import SignalMonitor

# 1. A monitor closed during a send: the results hold the receivers


def waiting_receiver(started: anyio.Event, release: anyio.Event) -> Callable[..., Any]:
    async def waiting(sender: Any, **kwargs: Any) -> str:
        started.set()
        await release.wait()
        return "released"

    return waiting


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["send_async", "concurrent send_async", "send in a worker thread"])
async def test_results_hold_the_receivers_when_the_monitor_closes_during_the_send(
    way: str,
) -> None:
    signal = new_signal()
    started, release = anyio.Event(), anyio.Event()
    waiting = waiting_receiver(started, release)
    signal.connect(done)
    signal.connect(waiting)
    results: list[tuple[Any, Any]] = []

    async def sending() -> None:
        if way == "send in a worker thread":
            # The async receiver runs on the event loop, the send waits in
            # the thread.
            results.extend(await anyio.to_thread.run_sync(partial(signal.send, "shop")))
        else:
            concurrent = way == "concurrent send_async"
            results.extend(await signal.send_async("shop", _concurrent=concurrent))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            with SignalMonitor():
                tasks.start_soon(sending)
                await started.wait()
            release.set()

    assert results == [(done, "done"), (waiting, "released")]
    assert results[0][0] is done
    assert results[1][0] is waiting


def test_results_of_send_hold_the_receivers_when_a_receiver_closes_the_monitor() -> None:
    signal = new_signal()
    monitor = SignalMonitor()

    def closing(sender: Any, **kwargs: Any) -> str:
        monitor.close()
        return "closed"

    signal.connect(closing)
    signal.connect(done)
    with monitor:
        results = signal.send("shop")

    assert results == [(closing, "closed"), (done, "done")]
    assert results[0][0] is closing
    assert results[1][0] is done


# 2. _async_wrapper and _sync_wrapper get the receivers themselves


def test_async_wrapper_gets_the_async_receiver_itself(anyio_backend: str) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async)
    wrapped: list[Callable[..., Any]] = []

    def ensure_sync(func: Callable[..., Any]) -> Callable[..., Any]:
        # What flask.Flask.ensure_sync does: it tells async functions by
        # inspecting them.
        wrapped.append(func)
        if inspect.iscoroutinefunction(func):
            return lambda *args, **kwargs: anyio.run(
                partial(func, *args, **kwargs), backend=anyio_backend
            )
        return func

    with SignalMonitor() as monitor:
        results = signal.send("shop", _async_wrapper=ensure_sync)

    assert wrapped == [done_async]
    assert wrapped[0] is done_async
    assert results == [(done, "done"), (done_async, "done async")]
    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done), "sync", "done"),
        (name_of(done_async), "async", "done"),
    ]
    assert all(run.duration is not None and run.error is None for run in send.receivers)


@pytest.mark.anyio
async def test_sync_wrapper_gets_the_sync_receiver_itself() -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async)
    wrapped: list[Callable[..., Any]] = []

    def to_async(func: Callable[..., Any]) -> Callable[..., Any]:
        wrapped.append(func)
        name = func.__name__  # as a wrapper that logs would

        async def call(*args: Any, **kwargs: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return (name, func(*args, **kwargs))

        return call

    with SignalMonitor() as monitor:
        results = await signal.send_async("shop", _sync_wrapper=to_async)

    assert wrapped == [done]
    assert wrapped[0] is done
    assert results == [(done, ("done", "done")), (done_async, "done async")]
    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done), "sync", "done"),
        (name_of(done_async), "async", "done"),
    ]
    assert all(run.duration is not None and run.error is None for run in send.receivers)


# 3. A send with nothing to call returns [] before checking its keywords


async def send_with_a_slip(call: str, signal: NamedSignal) -> Any:
    """A send whose keywords would be a TypeError if there were a receiver
    to call."""
    if call == "send(None, _concurent=True)":
        return signal.send(None, _concurent=True)
    if call == "send(sender=1)":
        return signal.send(sender=1)
    return await signal.send_async(None, _timout=1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "call", ["send(None, _concurent=True)", "send(sender=1)", "send_async(None, _timout=1)"]
)
@pytest.mark.parametrize("state", ["without receivers", "muted"])
async def test_a_send_with_nothing_to_call_returns_nothing_as_without_a_monitor(
    call: str, state: str
) -> None:
    signal = new_signal()
    if state == "muted":
        signal.connect(done)
        signal.is_muted = True
    assert await send_with_a_slip(call, signal) == []

    with SignalMonitor() as monitor:
        results = await send_with_a_slip(call, signal)

    assert results == []
    assert only_send(monitor, signal).receivers == []


# 8. The connected-receivers table: senders known by their id


class Slotted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<Slotted>"


@pytest.mark.parametrize(
    "sender", [None, ("shop", 1), Slotted()], ids=["None", "a tuple", "a __slots__ object"]
)
def test_connected_receivers_table_shows_a_sender_known_by_its_id_as_such(
    anyio_backend: str, monitor: SignalMonitor, sender: Any
) -> None:
    signal = new_signal()
    signal.connect(done, sender)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert f'<span class="doc">for &lt;the sender with id {id(sender)}&gt;</span>' in row


def test_connected_receivers_table_shows_an_int_sender_as_the_int(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()
    signal.connect(done, 12345)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert '<span class="doc">for 12345</span>' in row


# 9. A send() that raised before calling anything is not shown


@pytest.mark.anyio
@pytest.mark.parametrize(
    "receivers", [[done_async], [done, done_async]], ids=["async", "sync then async"]
)
async def test_send_on_the_event_loop_with_async_receivers_raises_and_is_not_shown(
    receivers: list[Callable[..., Any]],
) -> None:
    signal = new_signal()
    for receiver in receivers:
        signal.connect(receiver)

    with SignalMonitor() as monitor, pytest.raises(RuntimeError, match="send_async"):
        signal.send("shop")

    assert sends_of(monitor, signal) == []


# 10. How an interrupted receiver is shown


@pytest.mark.parametrize(
    ("exception", "shown_as"),
    [(KeyboardInterrupt(), "KeyboardInterrupt"), (SystemExit(3), "SystemExit: 3")],
    ids=["KeyboardInterrupt", "SystemExit"],
)
def test_a_receiver_raising_a_base_exception_shows_failed_with_it(
    exception: BaseException, shown_as: str
) -> None:
    signal = new_signal()

    def interrupted(sender: Any, **kwargs: Any) -> None:
        raise exception

    signal.connect(interrupted)
    with SignalMonitor() as monitor, pytest.raises(type(exception)):
        signal.send("shop")

    (run,) = only_send(monitor, signal).receivers
    assert (run.status, run.error) == ("failed", shown_as)
    assert run.duration is not None


# The name of each event loop's cancellation exception.
CANCELLATION = {"asyncio": "CancelledError", "trio": "Cancelled"}


async def stuck(sender: Any, **kwargs: Any) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
async def test_receivers_cancelled_by_the_timeout_of_a_concurrent_send_show_cancelled(
    anyio_backend: str,
) -> None:
    signal = new_signal()
    signal.connect(stuck)
    signal.connect(done_async)
    with SignalMonitor() as monitor, pytest.raises(TimeoutError):
        # The receiver never ends: the timeout cuts it short whatever its length.
        await signal.send_async("shop", _concurrent=True, _timeout=0.01)

    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(stuck), "async", "cancelled"),
        (name_of(done_async), "async", "done"),
    ]
    assert send.receivers[0].error == CANCELLATION[anyio_backend]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_receiver_cancelled_from_outside_the_send_shows_cancelled(
    anyio_backend: str, concurrent: bool
) -> None:
    signal = new_signal()
    started = anyio.Event()

    async def waiting(sender: Any, **kwargs: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    signal.connect(waiting)
    with SignalMonitor() as monitor, anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(signal.send_async, "shop", _concurrent=concurrent))
            await started.wait()
            tasks.cancel_scope.cancel()

    (run,) = only_send(monitor, signal).receivers
    assert (run.status, run.error) == ("cancelled", CANCELLATION[anyio_backend])
    assert run.duration is not None

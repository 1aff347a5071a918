"""Async dispatch, one receiver after another: send_async's sequential
paths, context variables, worker-thread receivers and send() from threads,
the per-call options, muting, what counts as an async receiver, and senders.
Concurrent dispatch, timeouts and cancellation are in
test_dispatch_concurrent.py.

Every async test runs on asyncio and on trio (see conftest.py)."""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from dispatch_helpers import ALL_PATHS, MODES, SEQUENTIAL_PATHS, connect_slow_then_fast
from helpers import Boom

from asignals import ANY, Signal

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


# --------------------------------------------------------------------------
# Sequential dispatch


@pytest.mark.anyio
@pytest.mark.parametrize("options", SEQUENTIAL_PATHS)
async def test_send_async_calls_mixed_receivers_in_connection_order(
    options: dict[str, Any],
) -> None:
    sig = Signal()
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def first(sender: Any, **kw: Any) -> str:
        calls.append(("first", sender, kw))
        return "one"

    async def second(sender: Any, **kw: Any) -> str:
        await anyio.lowlevel.checkpoint()
        calls.append(("second", sender, kw))
        return "two"

    def third(sender: Any, **kw: Any) -> str:
        calls.append(("third", sender, kw))
        return "three"

    async def fourth(sender: Any, **kw: Any) -> str:
        calls.append(("fourth", sender, kw))
        return "four"

    for receiver in (first, second, third, fourth):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async("me", x=1, **options)

    assert results == [(first, "one"), (second, "two"), (third, "three"), (fourth, "four")]
    assert calls == [
        ("first", "me", {"x": 1}),
        ("second", "me", {"x": 1}),
        ("third", "me", {"x": 1}),
        ("fourth", "me", {"x": 1}),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("options", SEQUENTIAL_PATHS)
async def test_send_async_sequential_awaits_each_receiver_before_the_next(
    options: dict[str, Any],
) -> None:
    sig = Signal()
    log: list[str] = []
    connect_slow_then_fast(sig, log)

    with anyio.fail_after(5):
        await sig.send_async(None, **options)

    assert log == ["slow started", "slow finished", "fast"]


@pytest.mark.anyio
@pytest.mark.parametrize("options", SEQUENTIAL_PATHS)
async def test_send_async_sequential_first_exception_propagates_and_stops(
    options: dict[str, Any],
) -> None:
    sig = Signal()
    called: list[str] = []

    def ok(sender: Any) -> None:
        called.append("ok")

    async def fails(sender: Any) -> None:
        called.append("fails")
        raise Boom("first")

    async def also_fails(sender: Any) -> None:
        called.append("also_fails")
        raise Boom("second")

    def later(sender: Any) -> None:
        called.append("later")

    for receiver in (ok, fails, also_fails, later):
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(Boom, match="first"):
        await sig.send_async(None, **options)

    assert called == ["ok", "fails"]


@pytest.mark.anyio
async def test_send_async_sequential_sync_receiver_exception_propagates_unwrapped() -> None:
    sig = Signal()
    called: list[str] = []

    def fails(sender: Any) -> None:
        called.append("fails")
        raise Boom("sync")

    async def later(sender: Any) -> None:
        called.append("later")

    sig.connect(fails, weak=False)
    sig.connect(later, weak=False)

    with anyio.fail_after(5), pytest.raises(Boom, match="sync"):
        await sig.send_async(None)

    assert called == ["fails"]


@pytest.mark.anyio
async def test_send_async_with_no_receivers_returns_empty_list() -> None:
    sig = Signal(concurrent=True)
    with anyio.fail_after(5):
        assert await sig.send_async("me", x=1) == []


# --------------------------------------------------------------------------
# Context variables


@pytest.mark.anyio
@pytest.mark.parametrize("options", ALL_PATHS)
async def test_async_receiver_sees_sender_context_variable(options: dict[str, Any]) -> None:
    sig = Signal()
    seen: list[str] = []

    async def async_receiver(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(request_id.get())

    def sync_receiver(sender: Any) -> None:
        seen.append(request_id.get())

    sig.connect(async_receiver, weak=False)
    sig.connect(sync_receiver, weak=False)

    token = request_id.set("req-42")
    try:
        with anyio.fail_after(5):
            await sig.send_async(None, **options)
    finally:
        request_id.reset(token)

    assert seen == ["req-42", "req-42"]


@pytest.mark.anyio
@pytest.mark.parametrize("options", ALL_PATHS)
async def test_to_thread_receiver_sees_sender_context_variable(options: dict[str, Any]) -> None:
    sig = Signal()
    seen: list[str] = []

    def in_thread(sender: Any) -> None:
        seen.append(request_id.get())

    sig.connect(in_thread, weak=False, to_thread=True)

    token = request_id.set("req-thread")
    try:
        with anyio.fail_after(5):
            await sig.send_async(None, **options)
    finally:
        request_id.reset(token)

    assert seen == ["req-thread"]


@pytest.mark.anyio
async def test_async_receiver_reached_by_send_from_worker_thread_sees_context_variable() -> None:
    sig = Signal()
    seen: list[str] = []

    async def receiver(sender: Any) -> None:
        seen.append(request_id.get())

    sig.connect(receiver, weak=False)

    token = request_id.set("req-worker")
    try:
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(lambda: sig.send(None))
    finally:
        request_id.reset(token)

    assert seen == ["req-worker"]


@pytest.mark.anyio
async def test_concurrent_receiver_context_changes_do_not_leak_to_sender() -> None:
    sig = Signal(concurrent=True)

    async def sets_var(sender: Any) -> None:
        request_id.set("changed by receiver")

    sig.connect(sets_var, weak=False)

    token = request_id.set("sender's")
    try:
        with anyio.fail_after(5):
            await sig.send_async(None)
        assert request_id.get() == "sender's"
    finally:
        request_id.reset(token)


# --------------------------------------------------------------------------
# to_thread receivers


@pytest.mark.anyio
@pytest.mark.parametrize("options", ALL_PATHS)
async def test_send_async_runs_to_thread_receiver_in_worker_thread(options: dict[str, Any]) -> None:
    sig = Signal()
    loop_thread = threading.get_ident()

    def blocking(sender: Any) -> int:
        return threading.get_ident()

    sig.connect(blocking, weak=False, to_thread=True)

    with anyio.fail_after(5):
        [(receiver, thread)] = await sig.send_async(None, **options)

    assert receiver is blocking
    assert thread != loop_thread


@pytest.mark.anyio
@pytest.mark.parametrize("options", ALL_PATHS)
async def test_send_async_runs_plain_sync_receiver_on_loop_thread(options: dict[str, Any]) -> None:
    sig = Signal()
    loop_thread = threading.get_ident()

    def plain(sender: Any) -> int:
        return threading.get_ident()

    sig.connect(plain, weak=False)

    with anyio.fail_after(5):
        [(_, thread)] = await sig.send_async(None, **options)

    assert thread == loop_thread


def test_send_calls_to_thread_receiver_inline() -> None:
    sig = Signal()

    def blocking(sender: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
        return threading.get_ident(), kw

    sig.connect(blocking, weak=False, to_thread=True)

    assert sig.send("me", x=1) == [(blocking, (threading.get_ident(), {"x": 1}))]


@pytest.mark.anyio
async def test_send_on_loop_thread_calls_to_thread_receiver_inline() -> None:
    sig = Signal()

    def blocking(sender: Any) -> int:
        return threading.get_ident()

    sig.connect(blocking, weak=False, to_thread=True)

    assert sig.send(None) == [(blocking, threading.get_ident())]


# --------------------------------------------------------------------------
# send() from a worker thread


@pytest.mark.anyio
async def test_send_from_worker_thread_runs_async_receiver_on_loop_thread() -> None:
    sig = Signal()
    loop_thread = threading.get_ident()

    async def receiver(sender: Any, **kw: Any) -> tuple[int, Any, dict[str, Any]]:
        await anyio.lowlevel.checkpoint()
        return threading.get_ident(), sender, kw

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5):
        results = await anyio.to_thread.run_sync(lambda: sig.send("me", x=1))

    assert results == [(receiver, (loop_thread, "me", {"x": 1}))]


@pytest.mark.anyio
async def test_send_from_worker_thread_calls_mixed_receivers_in_connection_order() -> None:
    sig = Signal()
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []

    def make(name: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def async_receiver(sender: Any) -> str:
                calls.append((name, threading.get_ident() == loop_thread))
                return name

            return async_receiver

        def sync_receiver(sender: Any) -> str:
            calls.append((name, threading.get_ident() == loop_thread))
            return name

        return sync_receiver

    receivers = [make("s1", False), make("a1", True), make("s2", False), make("a2", True)]
    for receiver in receivers:
        sig.connect(receiver, weak=False)

    with anyio.fail_after(5):
        results = await anyio.to_thread.run_sync(lambda: sig.send(None))

    assert results == list(zip(receivers, ["s1", "a1", "s2", "a2"], strict=True))
    # Sync receivers stay in the worker thread; async ones run on the loop.
    assert calls == [("s1", False), ("a1", True), ("s2", False), ("a2", True)]


@pytest.mark.anyio
async def test_send_from_worker_thread_propagates_async_receiver_exception() -> None:
    sig = Signal()
    later: list[str] = []

    async def fails(sender: Any) -> None:
        raise Boom("from loop")

    def after(sender: Any) -> None:
        later.append("after")

    sig.connect(fails, weak=False)
    sig.connect(after, weak=False)

    with anyio.fail_after(5), pytest.raises(Boom, match="from loop"):
        await anyio.to_thread.run_sync(lambda: sig.send(None))

    assert later == []


# --------------------------------------------------------------------------
# send() where async receivers cannot run


def send_to_sync_then_async_receiver() -> None:
    """``send()`` a signal with a sync receiver, then an async one, where the
    async one cannot run: RuntimeError pointing to send_async, and no receiver
    called before it."""
    sig = Signal()
    called: list[str] = []

    def sync_first(sender: Any) -> None:
        called.append("sync_first")

    async def receiver(sender: Any) -> None:
        called.append("receiver")

    sig.connect(sync_first, weak=False)
    sig.connect(receiver, weak=False)
    with pytest.raises(RuntimeError, match=r"await signal\.send_async"):
        sig.send(None)
    assert called == []


@pytest.mark.anyio
async def test_send_on_event_loop_thread_refuses_async_receivers_before_calling_any() -> None:
    send_to_sync_then_async_receiver()


def test_send_without_event_loop_refuses_async_receivers_before_calling_any() -> None:
    send_to_sync_then_async_receiver()


def test_send_from_plain_thread_refuses_async_receivers_before_calling_any() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            send_to_sync_then_async_receiver()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert errors == []


# --------------------------------------------------------------------------
# Options


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_sync_wrapper_wraps_sync_receivers(concurrent: bool) -> None:
    sig = Signal()
    wrapped: list[Callable[..., Any]] = []

    def sync_receiver(sender: Any, **kw: Any) -> str:
        return f"sync {sender} {kw['x']}"

    async def async_receiver(sender: Any, **kw: Any) -> str:
        return "async"

    def wrapper(receiver: Callable[..., Any]) -> Callable[..., Any]:
        wrapped.append(receiver)

        async def inner(*args: Any, **kwargs: Any) -> Any:
            return ("wrapped", receiver(*args, **kwargs))

        return inner

    sig.connect(sync_receiver, weak=False)
    sig.connect(async_receiver, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async("me", x=1, _sync_wrapper=wrapper, _concurrent=concurrent)

    assert wrapped == [sync_receiver]
    assert results == [(sync_receiver, ("wrapped", "sync me 1")), (async_receiver, "async")]


@pytest.mark.anyio
async def test_sync_wrapper_is_not_applied_to_to_thread_receivers() -> None:
    sig = Signal()
    wrapped: list[Callable[..., Any]] = []

    def in_thread(sender: Any) -> str:
        return "thread"

    def wrapper(receiver: Callable[..., Any]) -> Callable[..., Any]:
        wrapped.append(receiver)

        async def inner(*args: Any, **kwargs: Any) -> Any:
            return receiver(*args, **kwargs)

        return inner

    sig.connect(in_thread, weak=False, to_thread=True)

    with anyio.fail_after(5):
        results = await sig.send_async(None, _sync_wrapper=wrapper)

    assert wrapped == []
    assert results == [(in_thread, "thread")]


@pytest.mark.anyio
async def test_misspelled_option_on_send_async_raises_type_error_naming_concurrent() -> None:
    sig = Signal()
    called: list[str] = []

    async def receiver(sender: Any, **kw: Any) -> None:
        called.append("receiver")

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(TypeError, match="_concurrent"):
        await sig.send_async(None, _concurent=True)

    assert called == []


def test_concurrent_option_on_send_raises_type_error() -> None:
    sig = Signal()
    called: list[str] = []

    def receiver(sender: Any, **kw: Any) -> None:
        called.append("receiver")

    sig.connect(receiver, weak=False)

    with pytest.raises(TypeError, match=r"option of send_async"):
        sig.send(None, _concurrent=True)

    assert called == []


@pytest.mark.anyio
async def test_sender_keyword_on_send_async_raises_type_error() -> None:
    sig = Signal()
    called: list[str] = []

    async def receiver(sender: Any, **kw: Any) -> None:
        called.append("receiver")

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5), pytest.raises(TypeError, match="sender"):
        await sig.send_async(sender="me")

    assert called == []


# --------------------------------------------------------------------------
# Muting


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_muted_send_async_returns_empty_list_without_calling_receivers(
    concurrent: bool,
) -> None:
    sig = Signal(concurrent=concurrent)
    called: list[str] = []

    async def async_receiver(sender: Any) -> None:
        called.append("async")

    def sync_receiver(sender: Any) -> None:
        called.append("sync")

    sig.connect(async_receiver, weak=False)
    sig.connect(sync_receiver, weak=False, sender="me")

    with anyio.fail_after(5):
        with sig.muted():
            assert await sig.send_async("me") == []
            assert await sig.send_async(None, _concurrent=not concurrent) == []
        assert called == []
        # Unmuted again: the receivers are back.
        assert len(await sig.send_async("me")) == 2

    assert sorted(called) == ["async", "sync"]


# --------------------------------------------------------------------------
# Detecting async receivers


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_object_with_async_call_is_awaited(concurrent: bool) -> None:
    class AsyncCallable:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        async def __call__(self, sender: Any, **kw: Any) -> str:
            await anyio.lowlevel.checkpoint()
            self.calls.append((sender, kw))
            return "called"

    receiver = AsyncCallable()
    sig = Signal()
    sig.connect(receiver)

    with anyio.fail_after(5):
        results = await sig.send_async("me", x=1, _concurrent=concurrent)

    assert results == [(receiver, "called")]
    assert receiver.calls == [("me", {"x": 1})]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_partial_of_async_function_is_awaited(concurrent: bool) -> None:
    async def receiver(prefix: str, sender: Any, **kw: Any) -> str:
        await anyio.lowlevel.checkpoint()
        return f"{prefix} {sender} {kw['x']}"

    bound = functools.partial(receiver, "hello")
    sig = Signal()
    sig.connect(bound, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async("me", x=1, _concurrent=concurrent)

    assert results == [(bound, "hello me 1")]


# --------------------------------------------------------------------------
# Senders


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_receiver_for_specific_sender_is_only_called_for_that_sender(
    concurrent: bool,
) -> None:
    sig = Signal()
    called: list[Any] = []

    async def for_alice(sender: Any) -> None:
        called.append(sender)

    sig.connect(for_alice, sender="alice", weak=False)

    with anyio.fail_after(5):
        assert await sig.send_async("bob", _concurrent=concurrent) == []
        assert await sig.send_async(None, _concurrent=concurrent) == []
        assert await sig.send_async("alice", _concurrent=concurrent) == [(for_alice, None)]

    assert called == ["alice"]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", MODES)
async def test_receivers_for_sender_and_any_are_called_in_connection_order(
    concurrent: bool,
) -> None:
    sig = Signal()
    sender = object()
    other = object()

    def make(name: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def async_receiver(sender: Any) -> str:
                return name

            return async_receiver

        def sync_receiver(sender: Any) -> str:
            return name

        return sync_receiver

    any_1 = sig.connect(make("any-1", True), weak=False)
    specific_1 = sig.connect(make("specific-1", False), sender=sender, weak=False)
    any_2 = sig.connect(make("any-2", False), sender=ANY, weak=False)
    specific_2 = sig.connect(make("specific-2", True), sender=sender, weak=False)
    sig.connect(make("other", True), sender=other, weak=False)

    with anyio.fail_after(5):
        results = await sig.send_async(sender, _concurrent=concurrent)

    assert results == [
        (any_1, "any-1"),
        (specific_1, "specific-1"),
        (any_2, "any-2"),
        (specific_2, "specific-2"),
    ]

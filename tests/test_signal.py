"""asignals' own behaviour of the signal core, where it goes beyond or departs
from blinker: calling order, bookkeeping, argument checks, thread safety."""

from __future__ import annotations

import gc
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from signal_tables import bookkeeping

from asignals import ANY, ArgumentError, Namespace, Signal, signal


class Recorder:
    """A named receiver that appends its name to a shared log when called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def __call__(self, sender: Any, **kwargs: Any) -> str:
        self.log.append(self.name)
        return self.name

    def __repr__(self) -> str:
        return f"Recorder({self.name!r})"


class Sender:
    """A weakly referenceable sender."""


class Abort(BaseException):
    """A BaseException that is not an Exception."""


def make_receiver(calls: list[Any]) -> Callable[..., None]:
    """A fresh function, referenced only by the caller, that records senders."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    return receiver


# Calling order


def test_send_calls_receivers_in_connection_order_across_any_and_sender() -> None:
    sig = Signal()
    log: list[str] = []
    x = Sender()
    r1, r2, r3 = Recorder("r1", log), Recorder("r2", log), Recorder("r3", log)
    sig.connect(r1, x)
    sig.connect(r2)
    sig.connect(r3, x)
    assert sig.send(x) == [(r1, "r1"), (r2, "r2"), (r3, "r3")]
    assert log == ["r1", "r2", "r3"]


def test_send_for_other_sender_calls_only_any_receivers_in_order() -> None:
    sig = Signal()
    log: list[str] = []
    x = Sender()
    r1, r2, r3, r4 = (Recorder(name, log) for name in ("r1", "r2", "r3", "r4"))
    sig.connect(r1)
    sig.connect(r2, x)
    sig.connect(r3)
    sig.connect(r4, "other")
    sig.send(Sender())
    assert log == ["r1", "r3"]


def test_receivers_for_yields_in_connection_order() -> None:
    sig = Signal()
    log: list[str] = []
    x = Sender()
    r1, r2, r3 = Recorder("r1", log), Recorder("r2", log), Recorder("r3", log)
    sig.connect(r3, x)
    sig.connect(r1)
    sig.connect(r2, x)
    assert list(sig.receivers_for(x)) == [r3, r1, r2]
    assert list(sig.receivers_for(Sender())) == [r1]


def test_reconnecting_connected_receiver_keeps_its_place() -> None:
    sig = Signal()
    log: list[str] = []
    x = Sender()
    r1, r2, r3 = Recorder("r1", log), Recorder("r2", log), Recorder("r3", log)
    sig.connect(r1)
    sig.connect(r2)
    sig.connect(r3)
    sig.connect(r1)
    sig.connect(r1, x)
    sig.connect(r2, weak=False)
    sig.send(x)
    assert log == ["r1", "r2", "r3"]


def test_partly_disconnected_receiver_keeps_its_place() -> None:
    sig = Signal()
    log: list[str] = []
    x = Sender()
    r1, r2 = Recorder("r1", log), Recorder("r2", log)
    sig.connect(r1, x)
    sig.connect(r1, "other")
    sig.connect(r2, x)
    sig.disconnect(r1, x)
    sig.connect(r1, x)
    sig.send(x)
    assert log == ["r1", "r2"]


def test_fully_disconnected_then_reconnected_receiver_moves_to_end() -> None:
    sig = Signal()
    log: list[str] = []
    r1, r2, r3 = Recorder("r1", log), Recorder("r2", log), Recorder("r3", log)
    sig.connect(r1)
    sig.connect(r2, "x")
    sig.connect(r3)
    sig.disconnect(r1)
    sig.connect(r1, "x")
    sig.send("x")
    assert log == ["r2", "r3", "r1"]


# Departures from blinker


def test_disconnect_from_only_sender_empties_receivers() -> None:
    sig = Signal()
    receiver = Recorder("r", [])
    sig.connect(receiver, "a")
    sig.disconnect(receiver, "a")
    assert not sig.receivers
    assert not sig.has_receivers_for("a")


def test_collected_sender_empties_receivers_of_its_only_receiver() -> None:
    sig = Signal()
    receiver = Recorder("r", [])
    sender = Sender()
    sig.connect(receiver, sender)
    del sender
    gc.collect()
    assert not sig.receivers
    # Its handle is kept while the receiver lives, in case it is reconnected
    # during a send that already started; it goes with the receiver.
    assert bookkeeping(sig) == (0, 0, 0, 0, 0, 1)
    del receiver
    gc.collect()
    assert bookkeeping(sig) == (0, 0, 0, 0, 0, 0)


def test_nested_muted_restores_previous_state() -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), weak=False)
    with sig.muted():
        with sig.muted():
            assert sig.is_muted
        assert sig.is_muted
        assert sig.send() == []
    assert not sig.is_muted
    sig.send()
    assert log == ["r"]


def test_muted_keeps_signal_muted_when_it_was_muted_before() -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), weak=False)
    sig.is_muted = True
    with sig.muted():
        pass
    assert sig.is_muted
    assert sig.send() == []
    assert log == []


def test_receiver_connected_while_muted_is_called_after_unmuting() -> None:
    sig = Signal()
    log: list[str] = []
    first, second = Recorder("first", log), Recorder("second", log)
    sig.connect(first)
    with sig.muted():
        sig.connect(second, "x")
        assert sig.send("x") == []
    sig.send("x")
    assert log == ["first", "second"]


@pytest.mark.anyio
async def test_send_async_calls_sync_receivers_without_wrapper() -> None:
    sig = Signal()
    log: list[str] = []
    sync_receiver = Recorder("sync", log)

    async def async_receiver(sender: Any, **kwargs: Any) -> str:
        await anyio.lowlevel.checkpoint()
        log.append("async")
        return "async"

    sig.connect(sync_receiver)
    sig.connect(async_receiver)
    assert await sig.send_async("a") == [(sync_receiver, "sync"), (async_receiver, "async")]
    assert log == ["sync", "async"]


def test_exception_in_receiver_connected_undoes_connection() -> None:
    sig = Signal()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise LookupError("refused")

    sig.receiver_connected.connect(refuse)
    receiver = Recorder("r", [])
    with pytest.raises(LookupError, match="refused"):
        sig.connect(receiver, "a")
    assert not sig.receivers
    assert sig.send("a") == []


def test_base_exception_in_receiver_connected_undoes_connection() -> None:
    sig = Signal()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Abort

    sig.receiver_connected.connect(refuse)
    receiver = Recorder("r", [])
    with pytest.raises(Abort):
        sig.connect(receiver)
    assert not sig.receivers


def test_undone_connection_for_any_keeps_earlier_connection_for_sender() -> None:
    sig = Signal()
    log: list[str] = []
    receiver = Recorder("r", log)
    sig.connect(receiver, "a")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise LookupError("refused")

    sig.receiver_connected.connect(refuse)
    with pytest.raises(LookupError, match="refused"):
        sig.connect(receiver)
    sig.send("b")
    sig.send("a")
    assert log == ["r"]


def test_send_passes_an_unknown_underscore_keyword_to_receivers_as_blinker_does() -> None:
    sig = Signal()
    seen: list[dict[str, Any]] = []
    sig.connect(lambda sender, **kwargs: seen.append(kwargs), weak=False)

    sig.send("a", _request_id=7, x=1)
    sig.send("a", _request_id=8)  # the name is known now: the fast path

    assert seen == [{"_request_id": 7, "x": 1}, {"_request_id": 8}]


@pytest.mark.parametrize(
    ("keyword", "match"),
    [
        ("_timeout", r"_timeout is an option of send_async\(\) and send_background\(\)"),
        ("_concurrent", r"_concurrent is an option of send_async\(\)"),
        ("_sync_wrapper", r"_sync_wrapper is an option of send_async\(\)"),
        ("_asycn_wrapper", r"did you mean _async_wrapper\?"),
        ("_timout", r"did you mean _timeout\? It is an option of send_async\(\)"),
    ],
)
def test_send_rejects_an_option_of_another_method_or_a_near_miss(keyword: str, match: str) -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), weak=False)
    with pytest.raises(ArgumentError, match=match):
        sig.send("a", **{keyword: 1})
    assert log == []


def test_send_rejects_sender_keyword_when_receivers_are_connected() -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), weak=False)
    with pytest.raises(TypeError, match="positional"):
        sig.send(sender="a")
    assert log == []


def test_send_without_receivers_ignores_bad_arguments() -> None:
    sig = Signal()
    assert sig.send("a", _unknown=1) == []
    assert sig.send(sender="a") == []


@pytest.mark.anyio
async def test_send_async_passes_unknown_keywords_and_rejects_the_sender_keyword() -> None:
    sig = Signal()
    seen: list[dict[str, Any]] = []
    sig.connect(lambda sender, **kwargs: seen.append(kwargs), weak=False)
    await sig.send_async("a", _unknown=1)
    await sig.send_async("a", _unknown=2, _concurrent=True)
    with pytest.raises(ArgumentError, match="positional"):
        await sig.send_async(sender="a")
    with pytest.raises(ArgumentError, match=r"_async_wrapper is an option of send\(\)"):
        await sig.send_async("a", _async_wrapper=lambda r: r)
    assert seen == [{"_unknown": 1}, {"_unknown": 2}]


@pytest.mark.anyio
async def test_send_async_typo_of_concurrent_suggests_the_option() -> None:
    sig = Signal()
    sig.connect(Recorder("r", []), weak=False)
    with pytest.raises(TypeError, match="did you mean _concurrent"):
        await sig.send_async("a", _concurent=True)


def test_send_with_async_receiver_and_no_wrapper_points_to_send_async() -> None:
    sig = Signal()
    log: list[str] = []

    async def async_receiver(sender: Any, **kwargs: Any) -> None:
        log.append("async")

    sig.connect(Recorder("sync", log), weak=False)
    sig.connect(async_receiver)
    with pytest.raises(RuntimeError, match="send_async"):
        sig.send("a")
    assert log == []


@pytest.mark.anyio
async def test_send_on_event_loop_with_async_receiver_points_to_send_async() -> None:
    sig = Signal()

    async def async_receiver(sender: Any, **kwargs: Any) -> None:
        pass

    sig.connect(async_receiver)
    with pytest.raises(RuntimeError, match="send_async"):
        sig.send("a")


# Connecting


def test_connect_of_non_callable_names_it() -> None:
    sig = Signal()
    with pytest.raises(TypeError, match="'not a receiver'"):
        sig.connect("not a receiver")  # type: ignore[type-var]
    assert not sig.receivers


def test_weak_connect_of_unreferenceable_receiver_suggests_weak_false() -> None:
    # (print is weakly referenceable on CPython 3.11; method descriptors are not.)
    sig = Signal()
    with pytest.raises(TypeError, match="weak=False"):
        sig.connect(str.upper)
    assert not sig.receivers


def test_weak_connect_of_slotted_callable_suggests_weak_false() -> None:
    class Slotted:
        __slots__ = ()

        def __call__(self, sender: Any, **kwargs: Any) -> None:
            pass

    sig = Signal()
    with pytest.raises(TypeError, match=r"Slotted objects .* connect it with weak=False"):
        sig.connect(Slotted())
    assert not sig.receivers


def test_strong_connect_of_unreferenceable_receiver_works() -> None:
    sig = Signal()
    assert sig.connect(str.upper, weak=False) is str.upper
    assert sig.send("hello") == [(str.upper, "HELLO")]


def test_to_thread_with_async_receiver_is_type_error() -> None:
    sig = Signal()

    async def async_receiver(sender: Any, **kwargs: Any) -> None:
        pass

    with pytest.raises(TypeError, match="to_thread"):
        sig.connect(async_receiver, to_thread=True)
    assert not sig.receivers


def test_int_sender_does_not_match_object_with_that_id() -> None:
    sig = Signal()
    log: list[str] = []
    obj = Sender()
    sig.connect(Recorder("r", log), id(obj), weak=False)
    assert sig.send(obj) == []
    assert not sig.has_receivers_for(obj)
    sig.send(id(obj))
    assert log == ["r"]


def test_object_does_not_match_int_sender_equal_to_its_id() -> None:
    sig = Signal()
    log: list[str] = []
    obj = Sender()
    sig.connect(Recorder("r", log), obj, weak=False)
    assert sig.send(id(obj)) == []
    assert not sig.has_receivers_for(id(obj))
    sig.send(obj)
    assert log == ["r"]


class Name(str):
    """A str subclass: still matched by value."""


class Code(int):
    """An int subclass: still matched by value."""


@pytest.mark.parametrize(
    ("connected_for", "sent_by"),
    [("api", Name("api")), (Name("api"), "".join(["a", "pi"])), (7, Code(7)), (Code(7), 7)],
)
def test_str_and_int_subclass_senders_match_by_value(connected_for: Any, sent_by: Any) -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), connected_for, weak=False)
    sig.send(Sender())  # an identity-matched sender first, as the hot path learns types
    sig.send(sent_by)
    sig.send(sent_by)
    assert log == ["r", "r"]


def test_objects_of_a_seen_type_still_match_by_identity() -> None:
    sig = Signal()
    log: list[str] = []
    first, second = Sender(), Sender()
    sig.connect(Recorder("first", log), first, weak=False)
    sig.connect(Recorder("second", log), second, weak=False)
    for _ in range(2):
        sig.send(second)
        sig.send(first)
    assert log == ["second", "first", "second", "first"]


# Namespaces


def test_namespace_signal_refuses_other_concurrency_for_existing_signal() -> None:
    ns = Namespace()
    sequential = ns.signal("saved")
    assert sequential.concurrent is False
    with pytest.raises(ValueError, match="concurrent"):
        ns.signal("saved", concurrent=True)
    assert ns["saved"] is sequential
    assert sequential.concurrent is False


def test_namespace_signal_without_concurrency_returns_existing_signal() -> None:
    ns = Namespace()
    concurrent = ns.signal("saved", concurrent=True)
    assert ns.signal("saved") is concurrent
    assert ns.signal("saved", concurrent=True) is concurrent


def test_module_signal_creates_concurrent_signal() -> None:
    sig = signal("test_signal.concurrent", concurrent=True)
    assert sig.concurrent is True
    assert signal("test_signal.concurrent") is sig
    assert signal("test_signal.sequential").concurrent is False


# Bookkeeping


def test_sender_churn_leaves_no_bookkeeping() -> None:
    sig = Signal()
    receiver = Recorder("r", [])
    sig.connect(receiver, "permanent")
    baseline = bookkeeping(sig)
    for i in range(10_000):
        sender = Sender()
        sig.connect(receiver, sender)
        if i % 2:
            sig.disconnect(receiver, sender)
        del sender
    gc.collect()
    assert bookkeeping(sig) == baseline
    assert not sig._pending


def test_sender_churn_of_fully_connected_receivers_leaves_no_bookkeeping() -> None:
    sig = Signal()
    sig.connect(Recorder("permanent", []), weak=False)
    baseline = bookkeeping(sig)
    for i in range(10_000):
        sender = Sender()
        receiver = Recorder(str(i), [])
        sig.connect(receiver, sender)
        if i % 2:
            sig.disconnect(receiver)
        del sender
    del receiver
    gc.collect()
    assert bookkeeping(sig) == baseline


def test_weak_receiver_churn_leaves_no_bookkeeping() -> None:
    sig = Signal()
    sig.connect(Recorder("permanent", []), "permanent", weak=False)
    baseline = bookkeeping(sig)
    calls: list[Any] = []
    for i in range(10_000):
        receiver = make_receiver(calls)
        sig.connect(receiver, "permanent" if i % 2 else ANY)
        del receiver
    gc.collect()
    assert bookkeeping(sig) == baseline
    sig.send("permanent")
    assert calls == []


def test_weak_receiver_collected_during_send_is_skipped() -> None:
    sig = Signal()
    log: list[str] = []
    holder = [Recorder("doomed", log)]

    def drop_doomed(sender: Any, **kwargs: Any) -> str:
        log.append("dropper")
        holder.clear()
        return "dropper"

    sig.connect(drop_doomed)
    sig.connect(holder[0])
    assert sig.send("a") == [(drop_doomed, "dropper")]
    assert log == ["dropper"]
    assert bookkeeping(sig)[:2] == (1, 1)


def test_weak_receiver_collected_in_other_thread_during_send_is_skipped() -> None:
    sig = Signal()
    log: list[str] = []
    holder = [Recorder("doomed", log)]
    entered, collected = threading.Event(), threading.Event()
    results: list[Any] = []
    errors: list[BaseException] = []

    def wait_for_collection(sender: Any, **kwargs: Any) -> None:
        entered.set()
        assert collected.wait(10)

    def send() -> None:
        try:
            results.extend(sig.send("a"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    sig.connect(wait_for_collection)
    sig.connect(holder[0])
    thread = threading.Thread(target=send)
    thread.start()
    try:
        assert entered.wait(10)
        holder.clear()  # collected here, while the other thread is mid-send
        gc.collect()
    finally:
        collected.set()
        thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert results == [(wait_for_collection, None)]
    assert log == []
    assert not sig._pending


# Thread safety


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads as often as the interpreter can, to interleave more."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_weak_receivers_dying_while_threads_send_do_not_break_sends() -> None:
    sig = Signal()
    permanent = Recorder("permanent", [])
    sig.connect(permanent, weak=False)
    stop = threading.Event()
    errors: list[BaseException] = []
    bad_results: list[Any] = []
    started = threading.Barrier(3)

    def send_in_loop() -> None:
        try:
            started.wait(10)
            for _ in range(200_000):
                if stop.is_set():
                    return
                results = sig.send("a")
                if results[0] != (permanent, "permanent"):
                    bad_results.append(results)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=send_in_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    calls: list[Any] = []
    try:
        started.wait(10)
        for i in range(3_000):
            receiver = make_receiver(calls)
            sig.connect(receiver, "a" if i % 2 else ANY)
            del receiver
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert bad_results == []
    assert bookkeeping(sig) == (1, 1, 1, 0, 0, 0)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_sends_and_connection_churn_never_call_disconnected_receiver() -> None:
    sig = Signal()
    target = Sender()
    stable_log: list[str] = []
    stable = Recorder("stable", stable_log)
    sig.connect(stable, weak=False)
    disconnected = threading.Event()
    late_calls: list[Any] = []
    victim_calls: list[bool] = []

    def victim(sender: Any, *, disconnected_before_send: bool, **kwargs: Any) -> None:
        # list.append is atomic: safe to share between the sending threads.
        victim_calls.append(disconnected_before_send)
        if disconnected_before_send:
            late_calls.append(sender)

    sig.connect(victim, weak=False)
    sig.connect(victim, target, weak=False)
    done = threading.Event()
    errors: list[BaseException] = []
    bad_results: list[Any] = []
    senders_ready = threading.Barrier(4)

    def send_in_loop() -> None:
        try:
            for iteration in range(1_000_000):
                flag = disconnected.is_set()  # read before the send starts
                results = sig.send(target, disconnected_before_send=flag)
                if not results or results[0] != (stable, "stable"):
                    bad_results.append(results)
                if iteration == 0:
                    senders_ready.wait(10)
                if done.is_set() and flag:
                    return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def churn() -> None:
        try:
            senders_ready.wait(10)
            for i in range(3_000):
                helper = Recorder(f"helper{i}", [])
                sig.connect(helper, target if i % 3 else ANY, weak=False)
                if i % 5 == 0:
                    sig.connect(helper, Sender(), weak=False)
                sig.disconnect(helper)
                if i == 1_500:
                    sig.disconnect(victim)
                    disconnected.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            disconnected.set()
            done.set()

    threads = [threading.Thread(target=send_in_loop) for _ in range(3)]
    threads.append(threading.Thread(target=churn))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert bad_results == []
    assert late_calls == []
    assert False in victim_calls  # it was called while connected
    # The stable receiver; the victim, still alive, keeps its retired handle.
    assert bookkeeping(sig) == (1, 1, 1, 0, 0, 1)


# Finalizers that call back into the signal


def run_bounded(action: Callable[[], None]) -> None:
    """Run ``action`` in a thread and fail, rather than hang, if it deadlocks."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "deadlocked"
    assert errors == []


def test_finalizer_that_disconnects_while_the_signal_changes_does_not_deadlock() -> None:
    sig = Signal()
    finalized: list[str] = []

    class SelfRemoving:
        """A receiver that disconnects itself when it is finalized."""

        def __call__(self, sender: Any, **kwargs: Any) -> None:
            pass

        def __del__(self) -> None:
            sig.disconnect(self)
            finalized.append("disconnected")

    def drop_the_sender() -> None:
        sender = Sender()
        # Held only by the signal: collecting the sender frees it inside the
        # signal's own bookkeeping, where its finalizer calls disconnect.
        sig.connect(SelfRemoving(), sender=sender, weak=False)
        del sender

    run_bounded(drop_the_sender)
    assert finalized == ["disconnected"]
    assert bookkeeping(sig) == (0, 0, 0, 0, 0, 0)
    assert not sig._pending


def test_finalizer_that_connects_during_garbage_collection_takes_effect() -> None:
    sig = Signal()
    log: list[str] = []
    late = Recorder("late", log)

    class Reconnecting:
        def __init__(self) -> None:
            self.cycle = self  # only the cyclic collector frees it

        def __del__(self) -> None:
            sig.connect(late, weak=False)

    def connect_while_collecting() -> None:
        thresholds = gc.get_threshold()
        gc.disable()
        try:
            Reconnecting()
            gc.set_threshold(1)
            gc.enable()
            # Allocations inside connect's locked section start a collection.
            for i in range(50):
                sig.connect(Recorder(f"r{i}", []), sender=i, weak=False)
        finally:
            gc.set_threshold(*thresholds)
            gc.enable()
        gc.collect()

    run_bounded(connect_while_collecting)
    sig.send("anyone")
    assert log == ["late"]
    assert not sig._pending


# Receivers disconnected during a send


def disconnecting_pair(sig: Signal, log: list[str]) -> tuple[Any, Any]:
    """``first`` disconnects ``second``, which must then not be called."""

    def second(sender: Any, **kwargs: Any) -> str:
        log.append("second")
        return "second"

    def first(sender: Any, **kwargs: Any) -> str:
        log.append("first")
        sig.disconnect(second)
        return "first"

    return first, second


@pytest.mark.parametrize("for_sender", [ANY, "x"])
def test_send_skips_receiver_disconnected_by_earlier_one(for_sender: Any) -> None:
    sig = Signal()
    log: list[str] = []
    first, second = disconnecting_pair(sig, log)
    sig.connect(first, for_sender, weak=False)
    sig.connect(second, for_sender, weak=False)
    third = sig.connect(Recorder("third", log), for_sender, weak=False)
    results = sig.send("x", key=1)
    assert log == ["first", "third"]
    assert results == [(first, "first"), (third, "third")]


def test_send_calls_receivers_that_stay_connected_after_a_change() -> None:
    sig = Signal()
    log: list[str] = []

    def connects_another(sender: Any) -> None:
        log.append("connects")
        sig.connect(Recorder("new", log), weak=False)  # not called in this send

    sig.connect(connects_another, weak=False)
    sig.connect(Recorder("kept", log), weak=False)
    sig.send()
    assert log == ["connects", "kept"]


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{}, {"_concurrent": False}, {"_timeout": 5}])
async def test_send_async_skips_receiver_disconnected_by_earlier_one(
    options: dict[str, Any],
) -> None:
    sig = Signal()
    log: list[str] = []
    first, second = disconnecting_pair(sig, log)

    async def third(sender: Any, **kwargs: Any) -> str:
        log.append("third")
        return "third"

    for receiver in (first, second, third):
        sig.connect(receiver, weak=False)
    results = await sig.send_async("x", **options)
    assert log == ["first", "third"]
    assert results == [(first, "first"), (third, "third")]


@pytest.mark.anyio
async def test_concurrent_send_does_not_start_receiver_disconnected_by_sync_one() -> None:
    sig = Signal(concurrent=True)
    log: list[str] = []

    async def async_second(sender: Any, **kwargs: Any) -> None:
        log.append("async second")

    def first_async(sender: Any, **kwargs: Any) -> None:
        log.append("first")
        sig.disconnect(async_second)

    sig.connect(first_async, weak=False)
    sig.connect(async_second, weak=False)
    assert await sig.send_async() == [(first_async, None)]
    assert log == ["first"]


@pytest.mark.anyio
async def test_send_from_worker_thread_skips_receiver_disconnected_by_earlier_one() -> None:
    sig = Signal()
    log: list[str] = []

    async def second(sender: Any, **kwargs: Any) -> None:
        log.append("second")

    def first_sync(sender: Any, **kwargs: Any) -> None:
        log.append("first")
        sig.disconnect(second)

    sig.connect(first_sync, weak=False)
    sig.connect(second, weak=False)
    results = await anyio.to_thread.run_sync(sig.send)
    assert results == [(first_sync, None)]
    assert log == ["first"]


@pytest.mark.anyio
async def test_send_async_calls_receiver_reconnected_by_an_earlier_one() -> None:
    sig = Signal()
    log: list[str] = []

    async def second(sender: Any) -> None:
        log.append("second")

    def first(sender: Any) -> None:
        log.append("first")
        sig.disconnect(second)
        sig.connect(second, weak=False)

    sig.connect(first, weak=False)
    sig.connect(second, weak=False)
    await sig.send_async()
    assert log == ["first", "second"]


def test_retired_handle_goes_with_its_receiver() -> None:
    sig = Signal()
    receiver = Recorder("r", [])
    sig.connect(receiver)
    sig.disconnect(receiver)
    assert len(sig._retired) == 1
    del receiver
    gc.collect()
    assert len(sig._retired) == 0


# Errors inside changes


class Ambiguous:
    def __bool__(self) -> bool:
        raise ValueError("ambiguous")


class Unhashable(str):
    def __hash__(self) -> int:
        raise ValueError("no hash")


def test_error_while_muting_is_raised_to_the_caller_and_changes_nothing() -> None:
    sig = Signal()
    log: list[str] = []
    sig.connect(Recorder("r", log), weak=False)
    with pytest.raises(ValueError, match="ambiguous"):
        sig.is_muted = Ambiguous()  # type: ignore[assignment]
    assert not sig.is_muted
    assert not sig._pending
    sig.send()
    assert log == ["r"]


def test_sender_whose_hash_fails_is_refused_before_anything_changes() -> None:
    sig = Signal()
    with pytest.raises(ValueError, match="no hash"):
        sig.connect(Recorder("r", []), Unhashable("x"), weak=False)
    assert bookkeeping(sig) == (0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="no hash"):
        sig.disconnect(Recorder("r", []), Unhashable("x"))


def run_change_behind_another(sig: Signal, operation: Callable[[], None]) -> dict[str, str]:
    """Queue ``operation`` from a second thread while a first thread holds the
    signal's lock, so that the first thread runs it; say how each ended."""
    results: dict[str, str] = {}
    holding, queued = threading.Event(), threading.Event()

    class SignallingQueue(deque[Any]):
        def append(self, change: Any) -> None:
            super().append(change)
            queued.set()

    def hold_the_lock() -> None:
        holding.set()
        assert queued.wait(10)

    def run(name: str, change: Callable[[], None]) -> None:
        try:
            sig._change(change)
        except BaseException as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
        else:
            results[name] = "returned"

    def second() -> None:
        assert holding.wait(10)
        sig._pending = SignallingQueue(sig._pending)
        run("second", operation)

    threads = [
        threading.Thread(target=run, args=("first", hold_the_lock)),
        threading.Thread(target=second),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not sig._lock.locked()
    return results


def test_error_in_a_change_run_by_another_thread_reaches_the_thread_that_asked() -> None:
    def failing() -> None:
        raise LookupError("from the failing change")

    results = run_change_behind_another(Signal(), failing)
    assert results == {"first": "returned", "second": "LookupError: from the failing change"}


def test_interrupt_in_a_change_belongs_to_the_thread_running_it() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt  # as a Ctrl-C landing while this runs

    results = run_change_behind_another(Signal(), interrupted)
    assert results == {"first": "KeyboardInterrupt: ", "second": "returned"}

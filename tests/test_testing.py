"""asignals.testing.record_signals: recording sends for assertions."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest
from helpers import Boom

from asignals import Signal
from asignals.testing import Sent, SignalRecorder, record_signals


def _is_restored(sig: Signal) -> bool:
    """Nothing observes ``sig`` any more: its sends take the unobserved
    paths again, and no method of it was replaced."""
    return sig._observers is None and "send" not in vars(sig) and "send_async" not in vars(sig)


def test_record_signals_returns_an_empty_signal_recorder_list() -> None:
    sig = Signal()
    recorder = record_signals(sig)

    assert isinstance(recorder, SignalRecorder)
    assert isinstance(recorder, list)
    assert recorder == []


def test_with_returns_the_recorder_itself() -> None:
    sig = Signal()
    recorder = record_signals(sig)

    with recorder as entered:
        assert entered is recorder


def test_records_send_sender_and_kwargs() -> None:
    sig = Signal()

    with record_signals(sig) as sent:
        sig.send("doc-1", size=3, name="x")

    assert sent == [Sent(sig, "doc-1", {"size": 3, "name": "x"})]
    assert sent[0].signal is sig
    assert sent[0].sender == "doc-1"
    assert sent[0].kwargs == {"size": 3, "name": "x"}


def test_records_send_with_default_sender_as_none() -> None:
    sig = Signal()

    with record_signals(sig) as sent:
        sig.send()

    assert sent == [Sent(sig, None, {})]


@pytest.mark.anyio
async def test_records_send_async_sender_and_kwargs() -> None:
    sig = Signal()

    with anyio.fail_after(5), record_signals(sig) as sent:
        await sig.send_async("doc-2", size=4)

    assert sent == [Sent(sig, "doc-2", {"size": 4})]


@pytest.mark.anyio
async def test_records_sends_in_the_order_they_were_made() -> None:
    sig = Signal()

    with anyio.fail_after(5), record_signals(sig) as sent:
        sig.send("a")
        await sig.send_async("b")
        sig.send("c", n=1)

    assert sent == [Sent(sig, "a", {}), Sent(sig, "b", {}), Sent(sig, "c", {"n": 1})]


@pytest.mark.anyio
async def test_send_async_options_are_not_recorded() -> None:
    sig = Signal()

    async def receiver(sender: Any, **kw: Any) -> None:
        pass

    sig.connect(receiver, weak=False)

    def wrapper(fn: Any) -> Any:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return inner

    with anyio.fail_after(5), record_signals(sig) as sent:
        await sig.send_async("s", x=1, _concurrent=True, _timeout=5, _sync_wrapper=wrapper)

    assert sent == [Sent(sig, "s", {"x": 1})]


def test_send_options_are_not_recorded() -> None:
    sig = Signal()

    async def receiver(sender: Any, **kw: Any) -> str:
        return "async"

    sig.connect(receiver, weak=False)

    def wrapper(fn: Any) -> Any:
        return lambda *args, **kwargs: "wrapped"

    with record_signals(sig) as sent:
        results = sig.send("s", x=1, _async_wrapper=wrapper)

    assert results == [(receiver, "wrapped")]
    assert sent == [Sent(sig, "s", {"x": 1})]


@pytest.mark.anyio
async def test_options_still_reach_send_async() -> None:
    sig = Signal()
    event = anyio.Event()

    async def waiter(sender: Any) -> str:
        await event.wait()
        return "w"

    async def setter(sender: Any) -> str:
        event.set()
        return "s"

    sig.connect(waiter, weak=False)
    sig.connect(setter, weak=False)

    # Would deadlock if _concurrent=True were lost by the recorder.
    with anyio.fail_after(5), record_signals(sig):
        results = await sig.send_async(None, _concurrent=True)

    assert results == [(waiter, "w"), (setter, "s")]


@pytest.mark.anyio
async def test_records_sends_with_no_receivers_connected() -> None:
    sig = Signal()

    with anyio.fail_after(5), record_signals(sig) as sent:
        assert sig.send("a") == []
        assert await sig.send_async("b") == []

    assert sent.senders == ["a", "b"]


@pytest.mark.anyio
async def test_records_muted_sends() -> None:
    sig = Signal()
    called: list[str] = []

    def receiver(sender: Any) -> None:
        called.append("receiver")

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5), record_signals(sig) as sent, sig.muted():
        assert sig.send("a") == []
        assert await sig.send_async("b") == []

    assert sent.senders == ["a", "b"]
    assert called == []


def test_records_send_whose_receiver_raises() -> None:
    sig = Signal()

    def fails(sender: Any, **kw: Any) -> None:
        raise Boom("sync")

    sig.connect(fails, weak=False)

    with record_signals(sig) as sent, pytest.raises(Boom):
        sig.send("a", x=1)

    assert sent == [Sent(sig, "a", {"x": 1})]


@pytest.mark.anyio
async def test_records_send_async_whose_receiver_raises() -> None:
    sig = Signal()

    async def fails(sender: Any, **kw: Any) -> None:
        raise Boom("async")

    sig.connect(fails, weak=False)

    with anyio.fail_after(5), record_signals(sig) as sent, pytest.raises(Boom):
        await sig.send_async("b", y=2)

    assert sent == [Sent(sig, "b", {"y": 2})]


def test_receivers_still_run_and_send_results_are_unchanged() -> None:
    sig = Signal()
    calls: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kw: Any) -> str:
        calls.append((sender, kw))
        return f"got {sender}"

    sig.connect(receiver, weak=False)

    with record_signals(sig):
        results = sig.send("a", x=1)

    assert results == [(receiver, "got a")]
    assert calls == [("a", {"x": 1})]


@pytest.mark.anyio
async def test_receivers_still_run_and_send_async_results_are_unchanged() -> None:
    sig = Signal()
    calls: list[tuple[Any, dict[str, Any]]] = []

    async def async_receiver(sender: Any, **kw: Any) -> str:
        calls.append((sender, kw))
        return "async"

    def sync_receiver(sender: Any, **kw: Any) -> str:
        calls.append((sender, kw))
        return "sync"

    sig.connect(async_receiver, weak=False)
    sig.connect(sync_receiver, weak=False)

    with anyio.fail_after(5), record_signals(sig):
        results = await sig.send_async("a", x=1)

    assert results == [(async_receiver, "async"), (sync_receiver, "sync")]
    assert calls == [("a", {"x": 1}), ("a", {"x": 1})]


def test_receiver_mutating_kwargs_does_not_change_the_record() -> None:
    sig = Signal()

    def receiver(sender: Any, **kw: Any) -> None:
        kw["added"] = True

    sig.connect(receiver, weak=False)

    with record_signals(sig) as sent:
        sig.send("a", x=1)

    assert sent == [Sent(sig, "a", {"x": 1})]


def test_of_filters_by_signal() -> None:
    first, second, unrecorded = Signal(), Signal(), Signal()

    with record_signals(first, second) as sent:
        first.send("1a")
        second.send("2a")
        unrecorded.send("u")
        first.send("1b")

    assert sent.of(first) == [Sent(first, "1a", {}), Sent(first, "1b", {})]
    assert sent.of(second) == [Sent(second, "2a", {})]
    assert sent.of(unrecorded) == []
    assert len(sent) == 3


def test_senders_lists_the_sender_of_each_send_in_order() -> None:
    first, second = Signal(), Signal()
    owner = object()

    with record_signals(first, second) as sent:
        first.send(owner)
        second.send("b")
        first.send()

    assert sent.senders == [owner, "b", None]
    assert sent.senders[0] is owner


def test_exit_restores_the_signal() -> None:
    sig = Signal()

    with record_signals(sig):
        assert sig._observers is not None
        assert not _is_restored(sig)

    assert _is_restored(sig)
    assert sig.send.__func__ is Signal.send  # type: ignore[attr-defined]
    assert sig.send_async.__func__ is Signal.send_async  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_sends_after_exit_are_not_recorded() -> None:
    sig = Signal()

    with anyio.fail_after(5):
        with record_signals(sig) as sent:
            sig.send("inside")
        sig.send("after")
        await sig.send_async("after async")

    assert sent.senders == ["inside"]


def test_exit_restores_the_signal_when_the_block_raises() -> None:
    sig = Signal()

    with pytest.raises(Boom), record_signals(sig):
        raise Boom("in block")

    assert _is_restored(sig)


@pytest.mark.anyio
async def test_async_with_records_and_restores() -> None:
    sig = Signal()

    with anyio.fail_after(5):
        async with record_signals(sig) as sent:
            sig.send("a", x=1)
            await sig.send_async("b", y=2)

    assert sent == [Sent(sig, "a", {"x": 1}), Sent(sig, "b", {"y": 2})]
    assert _is_restored(sig)


def test_nested_recorders_on_the_same_signal_both_record() -> None:
    sig = Signal()

    with record_signals(sig) as outer:
        sig.send("before")
        with record_signals(sig) as inner:
            sig.send("during", x=1)
        sig.send("after")

    assert outer.senders == ["before", "during", "after"]
    assert inner == [Sent(sig, "during", {"x": 1})]


def test_nested_recorders_restore_the_outer_then_the_original() -> None:
    sig = Signal()

    with record_signals(sig) as outer:
        outer_observers = sig._observers
        with record_signals(sig) as inner:
            pass
        assert sig._observers == outer_observers
        sig.send("after inner")

    assert _is_restored(sig)
    assert outer.senders == ["after inner"]
    assert inner == []


@pytest.mark.anyio
async def test_nested_recorders_both_record_send_async() -> None:
    sig = Signal()

    with anyio.fail_after(5), record_signals(sig) as outer, record_signals(sig) as inner:
        await sig.send_async("a", _concurrent=True, x=1)

    assert outer == [Sent(sig, "a", {"x": 1})]
    assert inner == [Sent(sig, "a", {"x": 1})]
    assert _is_restored(sig)


def test_record_signals_without_signals_raises_type_error() -> None:
    with pytest.raises(TypeError):
        record_signals()


@pytest.mark.parametrize("not_a_signal", [None, "send", object(), Signal])
def test_record_signals_with_a_non_signal_raises_type_error(not_a_signal: Any) -> None:
    with pytest.raises(TypeError):
        record_signals(Signal(), not_a_signal)


def test_reentering_an_active_recorder_raises_runtime_error() -> None:
    sig = Signal()
    recorder = record_signals(sig)

    with recorder:
        with pytest.raises(RuntimeError), recorder:
            pass  # pragma: no cover - not reached
        sig.send("still recording")

    assert recorder.senders == ["still recording"]
    assert _is_restored(sig)


@pytest.mark.anyio
async def test_reentering_an_active_recorder_with_async_with_raises_runtime_error() -> None:
    sig = Signal()
    recorder = record_signals(sig)

    with anyio.fail_after(5):
        async with recorder:
            with pytest.raises(RuntimeError):
                async with recorder:
                    pass  # pragma: no cover - not reached

    assert _is_restored(sig)


def test_recorder_records_sends_from_several_signals_interleaved() -> None:
    first, second = Signal(), Signal()

    with record_signals(first, second) as sent:
        second.send("s1")
        first.send("f1", a=1)
        second.send("s2")

    assert sent == [
        Sent(second, "s1", {}),
        Sent(first, "f1", {"a": 1}),
        Sent(second, "s2", {}),
    ]
    assert _is_restored(first)
    assert _is_restored(second)


@pytest.mark.anyio
async def test_records_send_made_from_a_worker_thread() -> None:
    sig = Signal()

    async def receiver(sender: Any, **kw: Any) -> str:
        return "async"

    sig.connect(receiver, weak=False)

    with anyio.fail_after(5), record_signals(sig) as sent:
        results = await anyio.to_thread.run_sync(lambda: sig.send("thread", x=1))

    assert results == [(receiver, "async")]
    assert sent == [Sent(sig, "thread", {"x": 1})]


def test_a_signal_given_twice_is_recorded_once_per_send() -> None:
    sig = Signal()

    with record_signals(sig, sig) as sent:
        sig.send("once")

    assert sent.senders == ["once"]
    assert _is_restored(sig)


def test_overlapping_recorders_exiting_out_of_order_restore_the_signal() -> None:
    sig = Signal()
    first, second = record_signals(sig), record_signals(sig)

    first.__enter__()
    second.__enter__()
    sig.send("both")
    first.__exit__(None, None, None)
    sig.send("second only")
    second.__exit__(None, None, None)
    sig.send("nobody")

    assert first.senders == ["both"]
    assert second.senders == ["both", "second only"]
    assert _is_restored(sig)

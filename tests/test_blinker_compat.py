"""Behaviour asignals shares with blinker 1.9.

Every test runs against both ``blinker`` and ``asignals``: passing on blinker
proves the test describes blinker's real behaviour, passing on asignals proves
asignals keeps it.
"""

from __future__ import annotations

import gc
import importlib
import pickle
from collections.abc import Callable, Coroutine
from functools import partial
from types import ModuleType
from typing import Any

import anyio
import pytest


@pytest.fixture(params=["blinker", "asignals"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    """The module under test: blinker itself, or asignals."""
    return importlib.import_module(str(request.param))


class Recorder:
    """A receiver that records each call's positional and keyword arguments."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.result = result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result


class Sender:
    """A weakly referenceable sender."""


class EqualToAll:
    """Equal to every other instance, with one shared hash."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EqualToAll)

    def __hash__(self) -> int:
        return 1


class Abort(BaseException):
    """A BaseException that is not an Exception."""


def make_receiver(calls: list[Any]) -> Callable[..., None]:
    """A fresh function, referenced only by the caller, that records senders."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    return receiver


class Listener:
    """An object whose bound method is the receiver; records senders."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def on_signal(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(sender)


def by_receiver(results: list[tuple[Any, Any]]) -> dict[int, Any]:
    """Send results keyed by receiver identity: blinker's order is undefined."""
    return {id(receiver): value for receiver, value in results}


# Construction, names and namespaces


def test_signal_positional_doc_becomes_docstring(mod: ModuleType) -> None:
    assert mod.Signal("Sent when saved.").__doc__ == "Sent when saved."


def test_named_signal_has_name_and_shows_it_in_repr(mod: ModuleType) -> None:
    sig = mod.NamedSignal("saved", "Sent when saved.")
    assert sig.name == "saved"
    assert sig.__doc__ == "Sent when saved."
    assert repr(sig).endswith("; 'saved'>")


def test_namespace_is_a_dict(mod: ModuleType) -> None:
    assert issubclass(mod.Namespace, dict)
    ns = mod.Namespace()
    sig = ns.signal("saved")
    assert ns == {"saved": sig}


def test_namespace_signal_returns_same_signal_for_same_name(mod: ModuleType) -> None:
    ns = mod.Namespace()
    first = ns.signal("saved", "Sent when saved.")
    assert isinstance(first, mod.NamedSignal)
    assert first.name == "saved"
    assert ns.signal("saved") is first
    assert ns.signal("deleted") is not first


def test_module_signal_uses_default_namespace(mod: ModuleType) -> None:
    name = f"test_blinker_compat.default.{mod.__name__}"
    sig = mod.signal(name)
    assert mod.default_namespace[name] is sig
    assert mod.signal(name) is sig
    assert isinstance(mod.default_namespace, mod.Namespace)


def test_any_repr_is_any(mod: ModuleType) -> None:
    assert repr(mod.ANY) == "ANY"


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_any_pickles_to_itself(mod: ModuleType, protocol: int) -> None:
    assert pickle.loads(pickle.dumps(mod.ANY, protocol)) is mod.ANY


def test_signal_any_alias_is_any(mod: ModuleType) -> None:
    assert mod.Signal.ANY is mod.ANY
    assert mod.Signal().ANY is mod.ANY


# Connecting and disconnecting


def test_connect_returns_receiver(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    assert sig.connect(receiver) is receiver


def test_connect_via_connects_for_sender_and_returns_function(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []

    def on_save(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    assert sig.connect_via("db")(on_save) is on_save
    sig.send("db")
    sig.send("cache")
    assert calls == ["db"]


def test_connect_via_holds_receiver_strongly_by_default(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []

    @sig.connect_via(mod.ANY)  # type: ignore[untyped-decorator]
    def on_save(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    del on_save
    gc.collect()
    sig.send("db")
    assert calls == ["db"]


def test_connected_to_disconnects_on_normal_exit(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    with sig.connected_to(receiver, "db"):
        sig.send("db")
        assert len(receiver.calls) == 1
    assert not sig.receivers
    sig.send("db")
    assert len(receiver.calls) == 1


def test_connected_to_disconnects_on_exception(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    connected_inside: list[bool] = []

    def block() -> None:
        with sig.connected_to(receiver):
            connected_inside.append(bool(sig.receivers))
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        block()
    assert connected_inside == [True]
    assert not sig.receivers


def test_connected_to_disconnects_on_base_exception(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    connected_inside: list[bool] = []

    def block() -> None:
        with sig.connected_to(receiver):
            connected_inside.append(bool(sig.receivers))
            raise Abort

    with pytest.raises(Abort):
        block()
    assert connected_inside == [True]
    assert not sig.receivers
    sig.send()
    assert receiver.calls == []


def test_connected_to_holds_receiver_strongly(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []
    with sig.connected_to(make_receiver(calls)):
        gc.collect()
        sig.send("db")
    assert calls == ["db"]


def test_disconnect_with_any_removes_receiver_from_every_sender(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver, "a")
    sig.connect(receiver, "b")
    sig.connect(receiver)
    sig.disconnect(receiver)
    assert sig.send("a") == []
    assert sig.send("b") == []
    assert receiver.calls == []
    assert not sig.receivers


def test_disconnect_with_sender_removes_only_that_sender(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver, "a")
    sig.connect(receiver, "b")
    sig.disconnect(receiver, "a")
    sig.send("a")
    sig.send("b")
    assert receiver.calls == [(("b",), {})]


def test_disconnect_of_unconnected_receiver_does_nothing(mod: ModuleType) -> None:
    sig = mod.Signal()
    connected = Recorder()
    sig.connect(connected)
    sig.disconnect(Recorder())
    sig.disconnect(Recorder(), "a")
    sig.send("a")
    assert len(connected.calls) == 1


def test_receivers_is_truthy_only_while_connected(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    assert not sig.receivers
    sig.connect(receiver, "a")
    sig.connect(receiver)
    assert sig.receivers
    sig.disconnect(receiver)
    assert not sig.receivers


def test_has_receivers_for(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    assert not sig.has_receivers_for("a")
    sig.connect(receiver, "a")
    assert sig.has_receivers_for("a")
    assert not sig.has_receivers_for("b")
    assert not sig.has_receivers_for(mod.ANY)
    sig.connect(Recorder(), weak=False)
    assert sig.has_receivers_for("b")
    assert sig.has_receivers_for(mod.ANY)


def test_receivers_for_yields_live_receivers_for_sender_and_any(mod: ModuleType) -> None:
    sig = mod.Signal()
    for_a, for_b, for_any = Recorder(), Recorder(), Recorder()
    sig.connect(for_a, "a")
    sig.connect(for_b, "b")
    sig.connect(for_any)
    assert set(map(id, sig.receivers_for("a"))) == {id(for_a), id(for_any)}
    assert list(sig.receivers_for("c")) == [for_any]


def test_receivers_for_skips_collected_weak_receiver(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []
    sig.connect(make_receiver(calls))
    gc.collect()
    assert list(sig.receivers_for("a")) == []


# Meta-signals


def test_receiver_connected_is_sent_with_connect_arguments(mod: ModuleType) -> None:
    sig = mod.Signal()
    meta = Recorder()
    sig.receiver_connected.connect(meta)
    receiver = Recorder()
    sig.connect(receiver, "a", weak=False)
    assert meta.calls == [((sig,), {"receiver": receiver, "sender": "a", "weak": False})]


def test_receiver_connected_passes_default_arguments(mod: ModuleType) -> None:
    sig = mod.Signal()
    meta = Recorder()
    sig.receiver_connected.connect(meta)
    receiver = Recorder()
    sig.connect(receiver)
    assert meta.calls == [((sig,), {"receiver": receiver, "sender": mod.ANY, "weak": True})]


def test_receiver_disconnected_is_sent_with_disconnect_arguments(mod: ModuleType) -> None:
    sig = mod.Signal()
    meta = Recorder()
    sig.receiver_disconnected.connect(meta)
    receiver = Recorder()
    sig.connect(receiver, "a")
    sig.disconnect(receiver, "a")
    sig.disconnect(receiver)
    assert meta.calls == [
        ((sig,), {"receiver": receiver, "sender": "a"}),
        ((sig,), {"receiver": receiver, "sender": mod.ANY}),
    ]


def test_collected_weak_receiver_is_dropped_without_receiver_disconnected(
    mod: ModuleType,
) -> None:
    sig = mod.Signal()
    meta = Recorder()
    sig.receiver_disconnected.connect(meta)
    calls: list[Any] = []
    sig.connect(make_receiver(calls))
    gc.collect()
    assert sig.send("a") == []
    assert calls == []
    assert meta.calls == []
    assert not sig.receivers


def test_meta_signals_are_signals_of_their_own(mod: ModuleType) -> None:
    sig = mod.Signal()
    assert isinstance(sig.receiver_connected, mod.Signal)
    assert sig.receiver_connected is sig.receiver_connected
    assert sig.receiver_connected is not sig.receiver_disconnected
    assert sig.receiver_connected is not mod.Signal().receiver_connected


# Weak and strong receivers


def test_weak_function_receiver_goes_when_collected(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []
    receiver = make_receiver(calls)
    sig.connect(receiver)
    sig.send("a")
    del receiver
    gc.collect()
    sig.send("b")
    assert calls == ["a"]
    assert not sig.receivers


def test_weak_bound_method_receiver_goes_when_instance_collected(mod: ModuleType) -> None:
    calls: list[Any] = []

    sig = mod.Signal()
    listener = Listener(calls)
    sig.connect(listener.on_signal)
    gc.collect()  # the temporary bound method is gone, the connection is not
    sig.send("a")
    del listener
    gc.collect()
    sig.send("b")
    assert calls == ["a"]
    assert not sig.receivers


def test_strong_function_receiver_survives_collection(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []
    sig.connect(make_receiver(calls), weak=False)
    gc.collect()
    sig.send("a")
    assert calls == ["a"]


def test_strong_bound_method_receiver_survives_collection(mod: ModuleType) -> None:
    calls: list[Any] = []

    sig = mod.Signal()
    sig.connect(Listener(calls).on_signal, weak=False)
    gc.collect()
    sig.send("a")
    assert calls == ["a"]


def test_bound_method_disconnects_by_function_and_instance(mod: ModuleType) -> None:
    calls: list[Any] = []

    sig = mod.Signal()
    listener = Listener(calls)
    sig.connect(listener.on_signal)
    sig.disconnect(listener.on_signal)  # a new bound method object
    sig.send("a")
    assert calls == []
    assert not sig.receivers


# Senders


def test_collected_weak_sender_takes_its_connections_along(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sender = Sender()
    sig.connect(receiver, sender)
    assert sig.has_receivers_for(sender)
    old_id = id(sender)
    del sender  # freed at once: its memory, and so its id, is reused below
    candidates = [Sender() for _ in range(1000)]
    same_id = [c for c in candidates if id(c) == old_id]
    assert same_id, "precondition: a new sender reuses the collected one's id"
    new = same_id[0]
    assert sig.send(new) == []
    assert receiver.calls == []
    assert not sig.has_receivers_for(new)
    assert list(sig.receivers_for(new)) == []


def test_object_senders_match_by_identity_not_equality(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    connected, other = EqualToAll(), EqualToAll()
    assert connected == other
    sig.connect(receiver, connected)
    sig.send(other)
    assert receiver.calls == []
    assert not sig.has_receivers_for(other)
    sig.send(connected)
    assert receiver.calls == [((connected,), {})]


def test_str_senders_match_by_value(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    literal = "sender-name"
    built = "".join(["sender", "-", "name"])
    assert built == literal
    assert built is not literal
    sig.connect(receiver, literal)
    assert sig.has_receivers_for(built)
    sig.send(built)
    assert receiver.calls == [((built,), {})]


def test_int_senders_match_by_value(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    literal = 100000
    built = int("100000")
    assert built == literal
    assert built is not literal
    sig.connect(receiver, literal)
    assert sig.has_receivers_for(built)
    sig.send(built)
    sig.send(100001)
    assert receiver.calls == [((built,), {})]


def test_receiver_for_any_and_sender_is_called_once_for_that_sender(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver, "a")
    sig.connect(receiver)
    assert sig.send("a") == [(receiver, None)]
    assert len(receiver.calls) == 1
    assert list(sig.receivers_for("a")) == [receiver]


# Sending


def test_receiver_gets_sender_positionally_and_kwargs_by_name(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver)
    sig.send("a", x=1, y="two")
    assert receiver.calls == [(("a",), {"x": 1, "y": "two"})]


def test_default_sender_is_none(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver)
    sig.send()
    assert receiver.calls == [((None,), {})]


def test_send_returns_receiver_and_return_value_pairs(mod: ModuleType) -> None:
    sig = mod.Signal()
    first, second = Recorder("one"), Recorder("two")
    sig.connect(first)
    sig.connect(second)
    results = sig.send("a")
    assert isinstance(results, list)
    assert all(isinstance(pair, tuple) for pair in results)
    assert len(results) == 2
    assert by_receiver(results) == {id(first): "one", id(second): "two"}


def test_send_with_no_receivers_returns_empty_list(mod: ModuleType) -> None:
    assert mod.Signal().send("a", x=1) == []


def test_muted_blocks_sends_and_sets_is_muted(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver)
    assert not sig.is_muted
    with sig.muted():
        assert sig.is_muted
        assert sig.send("a") == []
    assert not sig.is_muted
    sig.send("b")
    assert receiver.calls == [(("b",), {})]


def test_setting_is_muted_blocks_sends(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver)
    sig.is_muted = True
    assert sig.send("a") == []
    sig.is_muted = False
    sig.send("b")
    assert receiver.calls == [(("b",), {})]


def test_sequential_send_propagates_first_exception_and_stops(mod: ModuleType) -> None:
    # blinker's calling order is undefined: every receiver records, then raises.
    sig = mod.Signal()
    called: list[str] = []

    def fail_first(sender: Any, **kwargs: Any) -> None:
        called.append("first")
        raise ValueError("first")

    def fail_second(sender: Any, **kwargs: Any) -> None:
        called.append("second")
        raise ValueError("second")

    sig.connect(fail_first)
    sig.connect(fail_second)
    with pytest.raises(ValueError, match=r"^(first|second)$") as info:
        sig.send("a")
    assert called == [str(info.value)]


def run_with_anyio(
    receiver: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Any]:
    """An ``_async_wrapper``: run the async receiver to completion."""

    def run(sender: Any, **kwargs: Any) -> Any:
        return ("wrapped", anyio.run(partial(receiver, sender, **kwargs)))

    return run


def test_send_calls_async_wrapper_for_async_receivers(mod: ModuleType) -> None:
    sig = mod.Signal()
    sync_receiver = Recorder("sync")

    async def async_receiver(sender: Any, **kwargs: Any) -> Any:
        return (sender, kwargs)

    sig.connect(sync_receiver)
    sig.connect(async_receiver)
    results = sig.send("a", _async_wrapper=run_with_anyio, x=1)
    assert len(results) == 2
    assert by_receiver(results) == {
        id(async_receiver): ("wrapped", ("a", {"x": 1})),
        id(sync_receiver): "sync",
    }
    assert sync_receiver.calls == [(("a",), {"x": 1})]


@pytest.mark.anyio
async def test_send_async_awaits_sync_wrapper_for_sync_receivers(mod: ModuleType) -> None:
    sig = mod.Signal()
    sync_receiver = Recorder("sync")
    wrapped: list[Any] = []

    def wrap(receiver: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
        wrapped.append(receiver)

        async def run(sender: Any, **kwargs: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return ("wrapped", receiver(sender, **kwargs))

        return run

    async def async_receiver(sender: Any, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return "async"

    sig.connect(sync_receiver)
    sig.connect(async_receiver)
    results = await sig.send_async("a", _sync_wrapper=wrap, x=1)
    assert len(results) == 2
    assert by_receiver(results) == {
        id(async_receiver): "async",
        id(sync_receiver): ("wrapped", "sync"),
    }
    assert wrapped == [sync_receiver]
    assert sync_receiver.calls == [(("a",), {"x": 1})]


@pytest.mark.anyio
async def test_send_async_respects_sender(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []

    async def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs))

    sig.connect(receiver, "a")
    assert await sig.send_async("b") == []
    assert await sig.send_async("a", x=1) == [(receiver, None)]
    assert calls == [("a", {"x": 1})]


@pytest.mark.anyio
async def test_send_async_when_muted_returns_empty_list(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []

    async def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    sig.connect(receiver)
    with sig.muted():
        assert await sig.send_async("a") == []
    assert calls == []


def test_reconnecting_with_weak_false_makes_receiver_strong(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[Any] = []
    receiver = make_receiver(calls)
    sig.connect(receiver)
    sig.connect(receiver, "a", weak=False)
    del receiver
    gc.collect()
    sig.send("a")
    assert calls == ["a"]


def test_options_are_not_passed_to_receivers(mod: ModuleType) -> None:
    sig = mod.Signal()
    receiver = Recorder()
    sig.connect(receiver)
    sig.send("a", _async_wrapper=run_with_anyio, x=1)
    assert receiver.calls == [(("a",), {"x": 1})]


def test_receiver_disconnected_by_an_earlier_receiver_is_not_called(mod: ModuleType) -> None:
    sig = mod.Signal()
    calls: list[str] = []

    def first(sender: Any) -> None:
        calls.append("first")
        sig.disconnect(second)

    def second(sender: Any) -> None:
        calls.append("second")

    # blinker's order is undefined: connect for the two senders so that each
    # library calls first, then second (blinker calls ANY receivers first).
    sig.connect(first, weak=False)
    sig.connect(second, "x", weak=False)
    sig.send("x")
    assert calls == ["first"]


def test_receiver_disconnected_and_reconnected_by_an_earlier_receiver_is_called(
    mod: ModuleType,
) -> None:
    sig = mod.Signal()
    calls: list[str] = []

    def first(sender: Any) -> None:
        calls.append("first")
        sig.disconnect(second)
        sig.connect(second, weak=False)

    def second(sender: Any) -> None:
        calls.append("second")

    sig.connect(first, weak=False)
    sig.connect(second, "x", weak=False)
    sig.send("x")
    assert calls == ["first", "second"]

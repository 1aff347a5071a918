"""Stateful property tests of the signal core.

A hypothesis state machine connects and disconnects receivers (sync and async
functions and bound methods, weak and strong, for ANY and for str, int, None
and object senders), uses ``connected_to`` and ``muted``, drops the last
references to receivers and object senders and collects them, and sends in
every mode. After each step, the signal is checked against a plain reference
model of who must be called, in what order: the calls, the results,
``receivers_for``, ``has_receivers_for``, ``receivers``, the meta-signals and
the size of the signal's internal tables.

The model's order rule is the one ``Signal.connect`` documents: a receiver
keeps its place from its first connection until it is disconnected from every
sender (by ``disconnect``, or because the senders it was connected for were
collected); connected again after that, it goes to the end.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import count
from types import MethodType, ModuleType
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from signal_tables import bookkeeping

from asignals import ANY, Signal

SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
)

# How a receiver is made: the test holds the function, or the object whose
# bound method is the receiver.
KINDS = ("function", "method", "async function", "async method")

# Send modes.
SEND = "send"
SEND_IN_WORKER = "send in an anyio worker thread"
SEND_ASYNC = "send_async (the signal's default)"
SEQUENTIAL = "send_async(_concurrent=False)"
CONCURRENT = "send_async(_concurrent=True)"
MODES = (SEND, SEND_IN_WORKER, SEND_ASYNC, SEQUENTIAL, CONCURRENT)

RECEIVER_SLOTS = 5
OBJECT_SLOTS = 2

# A sender as the model knows it: ("ANY", None), ("None", None),
# ("str", value), ("int", value) or ("object", label).
Key = tuple[str, object]
ANY_KEY: Key = ("ANY", None)


@dataclass(frozen=True)
class SenderSpec:
    """Which sender a step uses. ``built``: a str or int made at run time,
    equal to the constant ``value`` but not the same object."""

    kind: str
    value: Any = None
    built: bool = False


CONNECT_SENDERS = (
    SenderSpec("ANY"),
    SenderSpec("None"),
    SenderSpec("str", "alpha"),
    SenderSpec("str", "alpha", built=True),
    SenderSpec("str", "beta", built=True),
    SenderSpec("int", 1000),
    SenderSpec("int", 1000, built=True),
    SenderSpec("int", 1001, built=True),
    # An int equal to the id() of object sender 0: it matches by value, so
    # never that object.
    SenderSpec("id", 0),
    SenderSpec("object", 0),
    SenderSpec("object", 1),
)
# A send with ANY as its sender calls the receivers connected for ANY only;
# one by "None" is send() with no sender; a stranger is an object nobody is
# connected for (it may take the id of a collected sender).
SEND_SENDERS = (*CONNECT_SENDERS, SenderSpec("stranger"))

# Connections for ANY come often, so that a signal often has no receiver
# for a specific sender (the sends' fast paths are for that case), and so do
# connections for objects, so that receivers connected only for a sender
# that dies are common.
connect_senders = (
    st.sampled_from(CONNECT_SENDERS)
    | st.just(SenderSpec("ANY"))
    | st.sampled_from([SenderSpec("object", 0), SenderSpec("object", 1)])
)
send_senders = st.sampled_from(SEND_SENDERS)


class Call(NamedTuple):
    receiver: str
    sender: object
    n: int
    thread: int


class SenderObject:
    """An object sender, weakly referenceable. ``cyclic``: it refers to
    itself, so that only the cyclic garbage collector frees it."""

    def __init__(self, label: str, cyclic: bool = False) -> None:
        self.label = label
        if cyclic:
            self.cycle = self

    def __repr__(self) -> str:
        return f"<SenderObject {self.label}>"


class Owner:
    """An object whose bound method ``receive`` is a sync receiver."""

    def __init__(self, label: str, log: list[Call]) -> None:
        self.label = label
        self.log = log

    def receive(self, sender: object, *, n: int) -> tuple[str, int]:
        self.log.append(Call(self.label, sender, n, threading.get_ident()))
        return self.label, n


class AsyncOwner:
    """An object whose bound method ``receive`` is an async receiver."""

    def __init__(self, label: str, log: list[Call]) -> None:
        self.label = label
        self.log = log

    async def receive(self, sender: object, *, n: int) -> tuple[str, int]:
        self.log.append(Call(self.label, sender, n, threading.get_ident()))
        await anyio.lowlevel.checkpoint()
        return self.label, n


def make_target(label: str, kind: str, cyclic: bool, log: list[Call]) -> Any:
    """A new receiver's target: a function made here (so that the caller
    holds the only reference), or the owner of a bound method."""
    target: Any
    if kind == "function":

        def receiver(sender: object, *, n: int) -> tuple[str, int]:
            log.append(Call(label, sender, n, threading.get_ident()))
            return label, n

        target = receiver
    elif kind == "async function":

        async def async_receiver(sender: object, *, n: int) -> tuple[str, int]:
            log.append(Call(label, sender, n, threading.get_ident()))
            await anyio.lowlevel.checkpoint()
            return label, n

        target = async_receiver
    elif kind == "method":
        target = Owner(label, log)
    else:
        target = AsyncOwner(label, log)
    target.__dict__["label"] = label
    if cyclic:
        target.__dict__["cycle"] = target
    return target


def label_of(receiver: Callable[..., Any]) -> str:
    if isinstance(receiver, MethodType):
        owner: Any = receiver.__self__
        return str(owner.label)
    return str(receiver.__dict__["label"])


def key_of(sender: object) -> Key:
    """The model's key of a real sender."""
    if sender is ANY:
        return ANY_KEY
    if sender is None:
        return ("None", None)
    if isinstance(sender, str):
        return ("str", sender)
    if isinstance(sender, int):
        return ("int", sender)
    assert isinstance(sender, SenderObject)
    return ("object", sender.label)


class Model:
    """The reference model of one receiver."""

    def __init__(self, label: str, kind: str, target: Any) -> None:
        self.label = label
        self.kind = kind
        self.held: Any = target  # the test's reference; None once dropped
        self.ref = weakref.ref(target)
        self.senders: set[Key] = set()
        self.order = -1  # the place in the calling order; -1 while not connected
        self.weak = True  # as the last connect asked
        self.to_thread = False  # as the last connect asked
        self.ever_connected = False

    @property
    def is_async(self) -> bool:
        return self.kind.startswith("async")

    def receiver(self) -> Callable[..., Any] | None:
        """The receiver itself, if it is still alive (a bound method is made
        anew on each call, equal but not identical)."""
        target = self.ref()
        if target is None:
            return None
        if self.kind.endswith("method"):
            return target.receive  # type: ignore[no-any-return]
        return target  # type: ignore[no-any-return]

    def is_receiver(self, receiver: object) -> bool:
        expected = self.receiver()
        if isinstance(expected, MethodType):
            # Made anew on each access: the same function, of the same object.
            return (
                isinstance(receiver, MethodType)
                and receiver.__func__ is expected.__func__
                and receiver.__self__ is expected.__self__
            )
        return receiver is expected

    def connects(self, key: Key) -> bool:
        """Whether a send by the sender ``key`` calls this receiver."""
        return ANY_KEY in self.senders or key in self.senders


class Leave(BaseException):
    """How a step leaves a connected_to block early."""


class LeaveByException(Leave, Exception):
    pass


class LeaveByBaseException(Leave):
    pass


class SignalMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        # The steps collect garbage often: leave what exists before this
        # example (the test session, hypothesis' own data) out of the
        # collector's sight. The test unfreezes it at the end.
        gc.freeze()
        self.thread = threading.get_ident()
        self.log: list[Call] = []
        self.labels = count()
        self.orders = count()
        self.steps = count(1)
        self.models: dict[str, Model] = {}
        self.slots: list[Model | None] = [None] * RECEIVER_SLOTS
        self.objects = [SenderObject(self.new_label("o")) for _ in range(OBJECT_SLOTS)]
        self.expected_meta: list[tuple[Any, ...]] = []
        self.seen_meta: list[tuple[Any, ...]] = []
        self.sig = Signal()

    def new_label(self, prefix: str) -> str:
        return f"{prefix}{next(self.labels)}"

    # The signal and its meta-signals

    @initialize(concurrent=st.booleans())
    def make_signal(self, concurrent: bool) -> None:
        self.sig = Signal(concurrent=concurrent)
        self.sig.receiver_connected.connect(self.on_connected, weak=False)
        self.sig.receiver_disconnected.connect(self.on_disconnected, weak=False)

    def on_connected(
        self, signal: Signal, *, receiver: Callable[..., Any], sender: object, weak: bool
    ) -> None:
        assert signal is self.sig
        self.seen_meta.append(("connected", label_of(receiver), key_of(sender), weak))

    def on_disconnected(
        self, signal: Signal, *, receiver: Callable[..., Any], sender: object
    ) -> None:
        assert signal is self.sig
        self.seen_meta.append(("disconnected", label_of(receiver), key_of(sender)))

    # Receivers and senders

    def model_in(self, slot: int, kind: str, cyclic: bool) -> Model:
        """The receiver in ``slot`` (held by the test, or only by the
        signal), or a new one of ``kind`` if the slot is empty."""
        model = self.slots[slot]
        if model is None:
            label = self.new_label("r")
            model = Model(label, kind, make_target(label, kind, cyclic, self.log))
            self.slots[slot] = self.models[label] = model
        return model

    def sender_for(self, spec: SenderSpec) -> object:
        if spec.kind == "ANY":
            return ANY
        if spec.kind == "None":
            return None
        if spec.kind == "str":
            if not spec.built:
                return spec.value
            built = "".join(list(spec.value))
            assert built == spec.value
            assert built is not spec.value
            return built
        if spec.kind == "int":
            if not spec.built:
                return spec.value
            number = int(str(spec.value))
            assert number == spec.value
            assert number is not spec.value
            return number
        if spec.kind == "id":
            return id(self.objects[spec.value])
        if spec.kind == "object":
            return self.objects[spec.value]
        return SenderObject("stranger")

    def expected_for(self, key: Key) -> list[Model]:
        """The receivers a send by ``key`` must call, in order."""
        called = [m for m in self.models.values() if m.connects(key)]
        return sorted(called, key=lambda m: m.order)

    # The model's changes

    def model_connect(self, model: Model, key: Key, weak: bool, to_thread: bool) -> None:
        if not model.senders:
            model.order = next(self.orders)
        model.senders.add(key)
        model.weak, model.to_thread = weak, to_thread
        model.ever_connected = True
        self.expected_meta.append(("connected", model.label, key, weak))

    def model_disconnect(self, model: Model, key: Key) -> None:
        if key == ANY_KEY:
            model.senders.clear()
        else:
            model.senders.discard(key)
        if not model.senders:
            model.order = -1
        self.expected_meta.append(("disconnected", model.label, key))

    def settle(self) -> None:
        """Collect the receivers that nothing holds any more (the test let go,
        and the signal holds them weakly or not at all), and drop them from
        the model: silently, as a receiver collected sends no meta-signal."""
        doomed = [m for m in self.models.values() if m.held is None and (m.weak or not m.senders)]
        if not doomed:
            return
        gc.collect()
        for model in doomed:
            assert model.ref() is None, f"receiver {model.label} was kept alive"
            del self.models[model.label]
            self.slots[self.slots.index(model)] = None

    # Rules

    @rule(
        slot=st.integers(0, RECEIVER_SLOTS - 1),
        kind=st.sampled_from(KINDS),
        cyclic=st.booleans(),
        sender=connect_senders,
        weak=st.booleans(),
        to_thread=st.booleans(),
    )
    def connect(
        self, slot: int, kind: str, cyclic: bool, sender: SenderSpec, weak: bool, to_thread: bool
    ) -> None:
        model = self.model_in(slot, kind, cyclic)
        to_thread = to_thread and not model.is_async
        receiver = model.receiver()
        assert receiver is not None
        real_sender = self.sender_for(sender)
        returned = self.sig.connect(receiver, real_sender, weak=weak, to_thread=to_thread)
        assert returned is receiver
        self.model_connect(model, key_of(real_sender), weak, to_thread)

    @rule(
        slot=st.integers(0, RECEIVER_SLOTS - 1),
        kind=st.sampled_from(KINDS),
        cyclic=st.booleans(),
        sender=connect_senders,
    )
    def disconnect(self, slot: int, kind: str, cyclic: bool, sender: SenderSpec) -> None:
        model = self.model_in(slot, kind, cyclic)
        self.disconnect_receiver(model, self.sender_for(sender))

    def disconnect_receiver(self, model: Model, sender: object) -> None:
        receiver = model.receiver()
        assert receiver is not None
        self.sig.disconnect(receiver, sender)
        self.model_disconnect(model, key_of(sender))

    @rule(slot=st.integers(0, RECEIVER_SLOTS - 1))
    def drop_receiver(self, slot: int) -> None:
        """Drop the test's reference to a receiver and collect: a weak one
        goes, a strong one stays, called, until it is disconnected."""
        model = self.slots[slot]
        if model is not None and model.held is not None:
            model.held = None
            gc.collect()

    @rule(slot=st.integers(0, OBJECT_SLOTS - 1), cyclic=st.booleans())
    def replace_sender_object(self, slot: int, cyclic: bool) -> None:
        """Drop the last reference to an object sender and collect: its
        connections go, silently."""
        old = weakref.ref(self.objects[slot])
        key = key_of(self.objects[slot])
        self.objects[slot] = SenderObject(self.new_label("o"), cyclic)
        gc.collect()
        assert old() is None, "the signal kept an object sender alive"
        for model in self.models.values():
            model.senders.discard(key)
            if not model.senders:
                model.order = -1

    @rule(sender=send_senders, mode=st.sampled_from(MODES))
    def send(self, sender: SenderSpec, mode: str) -> None:
        self.send_and_check(sender, mode)

    @rule(
        slot=st.integers(0, RECEIVER_SLOTS - 1),
        sender=connect_senders,
        send_for=send_senders,
        mode=st.sampled_from(MODES),
    )
    def reconnect_with_other_options(
        self, slot: int, sender: SenderSpec, send_for: SenderSpec, mode: str
    ) -> None:
        """Connected again, for one sender, with the other weak and to_thread:
        every send, for whatever sender, calls it the new way."""
        model = self.slots[slot]
        if model is None or not model.senders:
            return
        receiver = model.receiver()
        assert receiver is not None
        real_sender = self.sender_for(sender)
        weak, to_thread = not model.weak, not model.to_thread and not model.is_async
        self.sig.connect(receiver, real_sender, weak=weak, to_thread=to_thread)
        self.model_connect(model, key_of(real_sender), weak, to_thread)
        self.send_and_check(send_for, mode)

    @rule(sender=send_senders)
    def send_in_every_mode(self, sender: SenderSpec) -> None:
        for mode in MODES:
            self.send_and_check(sender, mode)

    @rule(concurrent=st.booleans())
    def set_concurrent(self, concurrent: bool) -> None:
        """The signal's default for send_async."""
        self.sig.concurrent = concurrent

    @rule(
        slot=st.integers(0, RECEIVER_SLOTS - 1),
        kind=st.sampled_from(KINDS),
        cyclic=st.booleans(),
        connect_for=connect_senders,
        sender=send_senders,
        mode=st.sampled_from(MODES),
        leave_by=st.sampled_from(["end of block", "Exception", "BaseException"]),
    )
    def send_while_connected_to(
        self,
        slot: int,
        kind: str,
        cyclic: bool,
        connect_for: SenderSpec,
        sender: SenderSpec,
        mode: str,
        leave_by: str,
    ) -> None:
        """connected_to connects strongly, and disconnects from every sender
        however the block is left."""
        model = self.model_in(slot, kind, cyclic)
        real_sender = self.sender_for(connect_for)
        receiver = model.receiver()
        assert receiver is not None
        leaving = pytest.raises(Leave) if leave_by != "end of block" else nullcontext()
        with leaving, self.sig.connected_to(receiver, real_sender):
            self.model_connect(model, key_of(real_sender), weak=False, to_thread=False)
            self.send_and_check(sender, mode)
            if leave_by == "Exception":
                raise LeaveByException
            if leave_by == "BaseException":
                raise LeaveByBaseException
        self.model_disconnect(model, ANY_KEY)

    @rule(
        sender=send_senders,
        mode=st.sampled_from(MODES),
        connect_slot=st.none() | st.integers(0, RECEIVER_SLOTS - 1),
        kind=st.sampled_from(KINDS),
        connect_for=connect_senders,
    )
    def send_while_muted(
        self,
        sender: SenderSpec,
        mode: str,
        connect_slot: int | None,
        kind: str,
        connect_for: SenderSpec,
    ) -> None:
        """A muted signal calls nothing and returns []; a receiver connected
        meanwhile is called once the signal is unmuted."""
        assert not self.sig.is_muted
        with self.sig.muted():
            assert self.sig.is_muted
            if connect_slot is not None:
                self.connect(connect_slot, kind, False, connect_for, weak=False, to_thread=False)
            self.send_and_check(sender, mode, muted=True)
            # As in blinker, muting stops sends, not the lookups.
            real_sender = self.sender_for(sender)
            key = key_of(real_sender)
            found = [label_of(r) for r in self.sig.receivers_for(real_sender)]
            assert found == [m.label for m in self.expected_for(key)]
            assert self.sig.has_receivers_for(real_sender) == self.has_receivers(key)
        assert not self.sig.is_muted

    @rule()
    def disconnect_and_drop_everything(self) -> None:
        """With every receiver disconnected and collected and every object
        sender collected, the signal's tables are empty."""
        self.clear()
        assert bookkeeping(self.sig) == (0, 0, 0, 0, 0, 0)

    def clear(self) -> None:
        for model in list(self.models.values()):
            self.disconnect_receiver(model, ANY)
            model.held = None
        self.objects = [SenderObject(self.new_label("o")) for _ in range(OBJECT_SLOTS)]
        self.settle()
        assert not self.models

    # Sends

    def dispatch(self, sender: SenderSpec, real_sender: object, mode: str, n: int) -> list[Any]:
        args = () if sender.kind == "None" else (real_sender,)
        if mode == SEND:
            return self.sig.send(*args, n=n)
        if mode == SEND_IN_WORKER:
            # The worker thread may still hold what its function returned
            # for a moment after the loop got it: it gets nothing to hold.
            box: list[Any] = [args]

            def send_in_worker() -> None:
                box.append(self.sig.send(*box.pop(), n=n))

            async def send_from_worker() -> None:
                with anyio.fail_after(10):
                    await anyio.to_thread.run_sync(send_in_worker, abandon_on_cancel=True)

            self.run(send_from_worker)
            return box.pop()  # type: ignore[no-any-return]
        options = {SEQUENTIAL: {"_concurrent": False}, CONCURRENT: {"_concurrent": True}}

        async def send_async() -> list[Any]:
            with anyio.fail_after(10):
                return await self.sig.send_async(*args, n=n, **options.get(mode, {}))

        return self.run(send_async)  # type: ignore[no-any-return]

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        """``anyio.run``, then wait for the worker threads it started to exit
        (on asyncio they are told to when the run ends): until then, one may
        still hold the receiver it ran last, and its sender."""
        before = set(threading.enumerate())
        result = anyio.run(function, backend=self.backend)
        for thread in set(threading.enumerate()) - before:
            if thread.name == "AnyIO worker thread":
                thread.join(30)
                assert not thread.is_alive()
        return result

    def send_and_check(self, sender: SenderSpec, mode: str, muted: bool = False) -> None:
        real_sender = self.sender_for(sender)
        expected = [] if muted else self.expected_for(key_of(real_sender))
        labels = [m.label for m in expected]
        n = next(self.steps)
        if mode == SEND and any(m.is_async for m in expected):
            # No loop in this thread: send() cannot run them, and says so
            # before calling any receiver.
            with pytest.raises(RuntimeError, match=r"await signal\.send_async"):
                self.dispatch(sender, real_sender, mode, n)
            assert self.log == []
            return
        results = self.dispatch(sender, real_sender, mode, n)
        try:
            assert [(label_of(r), value) for r, value in results] == [
                (label, (label, n)) for label in labels
            ]
            assert all(m.is_receiver(r) for m, (r, _) in zip(expected, results, strict=True))
            called = [call.receiver for call in self.log]
            if mode == CONCURRENT or (mode == SEND_ASYNC and self.sig.concurrent):
                assert Counter(called) == Counter(labels)
            else:
                assert called == labels
            assert all(call.sender is real_sender and call.n == n for call in self.log)
            for call in self.log:
                model = self.models[call.receiver]
                if mode == SEND:
                    on_loop_thread = True
                elif mode == SEND_IN_WORKER:
                    on_loop_thread = model.is_async
                else:
                    on_loop_thread = not model.to_thread
                assert (call.thread == self.thread) == on_loop_thread, (call, mode)
        finally:
            del results
            self.log.clear()

    # Checks

    def has_receivers(self, key: Key) -> bool:
        return any(m.connects(key) for m in self.models.values())

    @invariant()
    def matches_the_model(self) -> None:
        self.settle()
        assert self.seen_meta == self.expected_meta
        self.seen_meta.clear()
        self.expected_meta.clear()
        assert bool(self.sig.receivers) == any(m.senders for m in self.models.values())
        for spec in SEND_SENDERS:
            real_sender = self.sender_for(spec)
            key = key_of(real_sender)
            expected = self.expected_for(key)
            found = list(self.sig.receivers_for(real_sender))
            assert [label_of(r) for r in found] == [m.label for m in expected], spec
            assert all(m.is_receiver(r) for m, r in zip(expected, found, strict=True))
            del found
            assert self.sig.has_receivers_for(real_sender) == self.has_receivers(key), spec

    @invariant()
    def bookkeeping_matches_the_model(self) -> None:
        """The internal tables hold the live connections and nothing more:
        no growth from churn, dead receivers or dead senders."""
        self.settle()
        connected = [m for m in self.models.values() if m.senders]
        keys = set().union(*(m.senders for m in connected))
        assert bookkeeping(self.sig) == (
            len(connected),
            len(connected),
            len(keys),
            sum(1 for kind, _ in keys if kind == "object"),
            len(keys - {ANY_KEY}),
            sum(1 for m in self.models.values() if m.ever_connected and not m.senders),
        )

    def teardown(self) -> None:
        # Not while a failure propagates: it would hide the failure.
        if sys.exc_info()[1] is None:
            self.clear()
            assert bookkeeping(self.sig) == (0, 0, 0, 0, 0, 0)


class SignalOnAsyncio(SignalMachine):
    backend = "asyncio"


class SignalOnTrio(SignalMachine):
    backend = "trio"


MACHINES: dict[str, type[SignalMachine]] = {"asyncio": SignalOnAsyncio, "trio": SignalOnTrio}


def test_signal_matches_the_reference_model(anyio_backend: str) -> None:
    try:
        run_state_machine_as_test(MACHINES[anyio_backend], settings=SETTINGS)
    finally:
        gc.unfreeze()


@pytest.fixture(params=["blinker", "asignals"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    """blinker itself, or asignals."""
    return importlib.import_module(str(request.param))


def test_receivers_for_while_muted_yields_the_connected_receivers(mod: ModuleType) -> None:
    """As in blinker, muting stops sends, not receivers_for."""
    sig = mod.Signal()

    def receiver(sender: object) -> None:
        pass

    sig.connect(receiver)
    sig.connect(receiver, "a")
    with sig.muted():
        assert sig.send("a") == []
        assert list(sig.receivers_for("a")) == [receiver]
        assert list(sig.receivers_for(None)) == [receiver]

"""Thread safety of the signal core under churn: sends from plain threads,
from anyio worker threads (whose ``send()`` runs async receivers on the event
loop) and from the event loop, while other threads connect and disconnect
receivers (weak and strong, for ANY and for str, int, None and object
senders, with ``connected_to``), mute the signal, let weak receivers die and
drop object senders.

One churn runs per backend and records, with a sequence number taken from one
counter shared by every thread, when each send started and ended, what it
returned, which receivers it called, and when each change to a receiver's
connections started and ended. The tests then check the records: each test is
one property of the same run.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import logging
import sys
import threading
import time
import traceback
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from signal_tables import bookkeeping

from asignals import ANY, Signal

Receiver = Callable[..., Any]

# Tags name senders in the records: "ANY", "str:alpha", "int:1000007",
# "None", "obj:<serial>". str and int senders match by value, so their tag is
# their value; objects match by identity, so theirs is a serial number.
EVERY = "ANY"
ALPHA = "alpha"  # a str sender
LOOP = "loop"  # the str sender whose receivers may be async
NUMBER = 1_000_007  # an int sender, not one of the interpreter's cached ints
FOREVER = sys.maxsize

# The size of the churn. Sender threads send until the churn is over.
RECEIVER_CHURN_THREADS = 2
RECEIVER_CHURN_ROUNDS = 800
ASYNC_CHURN_ROUNDS = 600
FLAPPER_ROUNDS = 800
SENDER_CHURN_ROUNDS = 600
MUTE_ROUNDS = 10
SENDS_BETWEEN_MUTES = 200
PLAIN_SENDER_THREADS = 2
WORKER_SENDER_THREADS = 2
MIN_SENDS, MAX_SENDS = 1_000, 30_000  # per sender thread or task
GC_EVERY = 40  # rounds of a churn thread between full collections
RUN_LIMIT = 120.0  # seconds: the churn fails rather than hangs


def alpha() -> str:
    """``"alpha"``, as a new object: equal to the others, not the same."""
    return "".join(["al", "pha"])


def number() -> int:
    """``NUMBER``, as a new object."""
    return int(str(NUMBER))


class Sender:
    """An object sender, weakly referenceable; a cyclic one dies only when
    the cyclic garbage collector runs."""

    def __init__(self, serial: int, cyclic: bool = False) -> None:
        self.serial = serial
        self.cycle = self if cyclic else None


def tag_of(sender: object) -> str:
    if sender is ANY:
        return EVERY
    if sender is None:
        return "None"
    if isinstance(sender, Sender):
        return f"obj:{sender.serial}"
    if isinstance(sender, str):
        return f"str:{sender}"
    if isinstance(sender, int):
        return f"int:{sender}"
    raise AssertionError(f"unexpected sender {sender!r}")


# Records


@dataclass(frozen=True)
class Op:
    """One change a churn thread made to a receiver's connections: the
    sequence numbers taken just before the call and just after it returned,
    and the senders the receiver may be, and is surely, connected for once it
    took effect. (After its last reference is dropped, a weak receiver may
    live on in a running send, so it may still be connected, not surely.)"""

    start: int
    end: int
    possible: frozenset[str]
    sure: frozenset[str]


@dataclass(frozen=True)
class Sent:
    """A send (or a ``receivers_for`` lookup) and the receivers it returned."""

    mode: str
    tag: str
    start: int
    end: int
    rids: tuple[int, ...]


@dataclass
class Run:
    """What a churn recorded. It holds no receiver: results are reduced to
    receiver ids as they come, so that the records keep nothing alive."""

    backend: str
    tick: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)
    new_id: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)
    # (receiver id, send's start, call's own sequence number, sender tag)
    calls: list[tuple[int, int, int, str]] = field(default_factory=list)
    sends: list[Sent] = field(default_factory=list)
    failed_sends: set[int] = field(default_factory=set)
    ledgers: dict[int, list[Op]] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    # (mute start, mute end, unmute start, unmute end)
    mutes: list[tuple[int, int, int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    receivers_collected: list[str] = field(default_factory=list)
    senders_collected: list[int] = field(default_factory=list)
    # Filled in once the churn is over and everything was dropped.
    bookkeeping: tuple[int, ...] = ()
    leftovers: list[str] = field(default_factory=list)
    strong_receivers_kept: int = -1
    pending_after_churn: int = -1
    # Analyses that several tests read, made once.
    memo: dict[str, Any] = field(default_factory=dict)


def rid_of(receiver: Any) -> Any:
    """The id of a receiver in the results (a bound method: its object's)."""
    return getattr(getattr(receiver, "__self__", receiver), "rid", None)


def record_send(run: Run, mode: str, sender: object, start: int, results: Any, end: int) -> None:
    """Check the shape of a send's results and keep them as receiver ids."""
    rids: list[int] = []
    if type(results) is not list:
        run.malformed.append(f"{mode} #{start} returned {type(results).__name__}, not a list")
        results = []
    for pair in results:
        if type(pair) is not tuple or len(pair) != 2:
            run.malformed.append(f"{mode} #{start} returned {pair!r}, not a pair")
            continue
        receiver, value = pair
        rid = rid_of(receiver)
        if value != (rid, start):
            run.malformed.append(
                f"{mode} #{start}: receiver {rid} paired with {value!r}, which it did not return"
            )
        rids.append(rid)
    if len(set(rids)) != len(rids):
        run.malformed.append(f"{mode} #{start} returned a receiver twice: {rids}")
    run.sends.append(Sent(mode, tag_of(sender), start, end, tuple(rids)))


def send_and_record(run: Run, sig: Signal, mode: str, sender: object, **kwargs: Any) -> None:
    start = run.tick()
    try:
        results = sig.send(sender, seq=start, **kwargs)
    except BaseException:
        run.failed_sends.add(start)
        raise
    record_send(run, mode, sender, start, results, run.tick())


def look_up_and_record(run: Run, sig: Signal, sender: object) -> None:
    start = run.tick()
    rids = tuple(rid_of(receiver) for receiver in sig.receivers_for(sender))
    run.sends.append(Sent("receivers_for", tag_of(sender), start, run.tick(), rids))


# Receivers: each records its calls and returns (its id, the send's start).


def sync_function(run: Run) -> Receiver:
    rid, calls, tick = run.new_id(), run.calls, run.tick

    def receiver(sender: Any, *, seq: int, **kwargs: Any) -> tuple[int, int]:
        calls.append((rid, seq, tick(), tag_of(sender)))
        return rid, seq

    receiver.__dict__["rid"] = rid
    run.kinds[rid] = "sync function"
    return receiver


def async_function(run: Run) -> Receiver:
    rid, calls, tick = run.new_id(), run.calls, run.tick

    async def receiver(
        sender: Any, *, seq: int, on_loop: bool = False, **kwargs: Any
    ) -> tuple[int, int]:
        calls.append((rid, seq, tick(), tag_of(sender)))
        if on_loop:
            await anyio.lowlevel.checkpoint()
        return rid, seq

    receiver.__dict__["rid"] = rid
    run.kinds[rid] = "async function"
    return receiver


class Holder:
    """An object whose bound methods are receivers."""

    def __init__(self, run: Run, kind: str) -> None:
        self.rid = run.new_id()
        self.calls, self.tick = run.calls, run.tick
        run.kinds[self.rid] = kind

    def receive(self, sender: Any, *, seq: int, **kwargs: Any) -> tuple[int, int]:
        self.calls.append((self.rid, seq, self.tick(), tag_of(sender)))
        return self.rid, seq

    async def receive_async(
        self, sender: Any, *, seq: int, on_loop: bool = False, **kwargs: Any
    ) -> tuple[int, int]:
        self.calls.append((self.rid, seq, self.tick(), tag_of(sender)))
        if on_loop:
            await anyio.lowlevel.checkpoint()
        return self.rid, seq


class CallableReceiver(Holder):
    """A callable object; a cyclic one dies only when the cyclic garbage
    collector runs, in whichever thread that happens."""

    def __init__(self, run: Run, cyclic: bool) -> None:
        super().__init__(run, "cyclic callable" if cyclic else "callable")
        self.cycle = self if cyclic else None

    def __call__(self, sender: Any, *, seq: int, **kwargs: Any) -> tuple[int, int]:
        return self.receive(sender, seq=seq)


def make_sync_receiver(run: Run, round_: int) -> Receiver:
    kind = round_ % 4
    if kind == 0:
        return sync_function(run)
    if kind == 1:
        return Holder(run, "sync method").receive
    return CallableReceiver(run, cyclic=kind == 3)


def make_async_receiver(run: Run, round_: int) -> Receiver:
    if round_ % 2:
        return Holder(run, "async method").receive_async
    return async_function(run)


def run_to_completion(receiver: Receiver) -> Receiver:
    """An ``_async_wrapper`` for a thread with no event loop: runs the
    coroutine, which must not wait for anything."""

    def call(*args: Any, **kwargs: Any) -> Any:
        coroutine: Coroutine[Any, Any, Any] = receiver(*args, **kwargs)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        coroutine.close()
        raise AssertionError(f"{receiver!r} waited for something outside an event loop")

    return call


class Owned:
    """A receiver that one churn thread owns, holding its only strong
    reference, and the ledger of what that thread did with it."""

    def __init__(self, run: Run, sig: Signal, receiver: Receiver) -> None:
        self.run, self.sig = run, sig
        self.receiver: Receiver | None = receiver
        self.rid = rid_of(receiver)
        self.state: set[str] = set()
        self.ops = run.ledgers.setdefault(self.rid, [])

    def record(self, start: int, possible: set[str], sure: set[str]) -> None:
        self.ops.append(Op(start, self.run.tick(), frozenset(possible), frozenset(sure)))

    def connect(self, sender: Any, weak: bool) -> None:
        assert self.receiver is not None
        start = self.run.tick()
        self.sig.connect(self.receiver, sender, weak=weak)
        self.state.add(tag_of(sender))
        self.record(start, self.state, self.state)

    def disconnect(self, sender: Any = ANY) -> None:
        assert self.receiver is not None
        start = self.run.tick()
        self.sig.disconnect(self.receiver, sender)
        if sender is ANY:
            self.state.clear()
        else:
            self.state.discard(tag_of(sender))
        self.record(start, self.state, self.state)

    def drop(self) -> None:
        """Let go of the receiver; connected weakly, it dies (now, or at the
        next collection if it is cyclic)."""
        start = self.run.tick()
        self.receiver = None
        self.record(start, self.state, set())


# The churn


def guarded(run: Run, action: Callable[[], None]) -> Callable[[], None]:
    """``action``, with anything it raises recorded as text (a traceback
    object would keep receivers alive)."""

    def target() -> None:
        try:
            action()
        except BaseException:
            run.errors.append(f"{threading.current_thread().name}: {traceback.format_exc()}")

    return target


@dataclass
class Churn:
    run: Run
    sig: Signal
    stable_sender: Sender
    churn_done: threading.Event = field(default_factory=threading.Event)
    serials: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)

    def sends_remain(self, i: int) -> bool:
        return i < MAX_SENDS and (i < MIN_SENDS or not self.churn_done.is_set())

    # Senders

    def plain_sends(self, k: int) -> None:
        """Sends from a thread that anyio did not start: async receivers (of
        LOOP) are run by an ``_async_wrapper``."""
        run, sig = self.run, self.sig
        senders: list[Callable[[], object]] = [
            alpha,
            number,
            lambda: self.stable_sender,
            lambda: None,
            lambda: LOOP,
        ]
        i = 0
        while self.sends_remain(i):
            sender = senders[(i + k) % len(senders)]()
            if i % 7 == 3:
                look_up_and_record(run, sig, sender)
                assert sig.has_receivers_for(sender)  # the stable receivers
            elif sender == LOOP:
                send_and_record(
                    run, sig, "send(_async_wrapper=)", sender, _async_wrapper=run_to_completion
                )
            else:
                send_and_record(run, sig, "send", sender)
            i += 1

    def worker_sends(self, k: int) -> None:
        """Sends from an anyio worker thread: async receivers run on the loop."""
        run, sig = self.run, self.sig
        senders: list[Callable[[], object]] = [
            lambda: LOOP,
            alpha,
            lambda: LOOP,
            lambda: self.stable_sender,
            number,
        ]
        i = 0
        while self.sends_remain(i):
            sender = senders[(i + k) % len(senders)]()
            send_and_record(run, sig, "send in a worker thread", sender, on_loop=True)
            i += 1

    async def loop_sends(self) -> None:
        """``send_async`` on the event loop, sequential and concurrent."""
        run, sig = self.run, self.sig
        senders: list[Callable[[], object]] = [
            lambda: LOOP,
            alpha,
            lambda: self.stable_sender,
            lambda: LOOP,
            lambda: None,
        ]
        i = 0
        try:
            while self.sends_remain(i):
                sender = senders[i % len(senders)]()
                concurrent = i % 2 == 1
                mode = "send_async(_concurrent=True)" if concurrent else "send_async"
                start = run.tick()
                try:
                    results = await sig.send_async(
                        sender, seq=start, on_loop=True, _concurrent=concurrent
                    )
                except BaseException:
                    run.failed_sends.add(start)
                    raise
                record_send(run, mode, sender, start, results, run.tick())
                await anyio.lowlevel.checkpoint()
                i += 1
        except Exception:
            run.errors.append(f"event loop: {traceback.format_exc()}")

    # Churn

    def churn_receivers(self, k: int) -> None:
        """Fresh sync receivers, weak and strong, through every way of being
        connected and disconnected."""
        run, sig = self.run, self.sig
        for i in range(RECEIVER_CHURN_ROUNDS):
            weak = (i // 7 + k) % 2 == 0
            owned = Owned(run, sig, make_sync_receiver(run, i + k))
            pattern = i % 7
            if pattern == 0:  # ANY, then from every sender
                owned.connect(ANY, weak)
                owned.disconnect()
            elif pattern == 1:  # a str sender and ANY; the str sender only, then all
                owned.connect(alpha(), weak)
                owned.connect(ANY, weak)
                owned.disconnect(alpha())
                owned.disconnect(ANY)
            elif pattern == 2:  # two senders, taken away one by one
                owned.connect(number(), weak)
                owned.connect(self.stable_sender, weak)
                owned.disconnect(number())
                owned.disconnect(self.stable_sender)
            elif pattern == 3:  # gone from its only sender, then back for another
                owned.connect(alpha(), weak)
                owned.disconnect(alpha())
                owned.connect(number(), weak)
                owned.disconnect()
            elif pattern == 4:  # None, which cannot be weakly referenced, and LOOP
                owned.connect(None, weak)
                owned.connect(LOOP, weak)
                owned.disconnect(None)
                owned.disconnect(LOOP)
            elif pattern == 5:  # connected_to, with a send of its own inside
                self.connected_to(owned, alpha() if i % 2 else ANY)
            elif weak:  # left to die connected
                owned.connect(ANY, weak)
                owned.connect(alpha(), weak)
            else:
                owned.connect(self.stable_sender, weak)
                owned.disconnect()
            owned.drop()
            if i % GC_EVERY == GC_EVERY - 1:
                gc.collect()

    def connected_to(self, owned: Owned, sender: Any) -> None:
        run, receiver = self.run, owned.receiver
        assert receiver is not None
        start = run.tick()
        with self.sig.connected_to(receiver, sender):
            owned.state.add(tag_of(sender))
            owned.record(start, owned.state, owned.state)
            send_and_record(run, self.sig, "send", ALPHA)
            start = run.tick()
        owned.state.clear()
        owned.record(start, owned.state, owned.state)

    def churn_async_receivers(self) -> None:
        """Fresh async receivers of LOOP, weak and strong."""
        run, sig = self.run, self.sig
        for i in range(ASYNC_CHURN_ROUNDS):
            weak = i % 3 != 0
            owned = Owned(run, sig, make_async_receiver(run, i))
            owned.connect(LOOP, weak)
            send_and_record(
                run, sig, "send(_async_wrapper=)", LOOP, _async_wrapper=run_to_completion
            )
            if i % 4 == 1:
                owned.disconnect()
            elif i % 4 == 2:
                owned.disconnect(LOOP)
            elif not weak:
                owned.disconnect(ANY)
            owned.drop()  # a weak one still connected dies here

    def flap(self) -> None:
        """The same receivers, connected and disconnected again and again: a
        send may find one reconnected after it was disconnected."""
        run, sig = self.run, self.sig
        strong = Owned(run, sig, sync_function(run))
        weak = Owned(run, sig, Holder(run, "sync method").receive)
        async_function_ = Owned(run, sig, async_function(run))
        async_method = Owned(run, sig, Holder(run, "async method").receive_async)
        for i in range(FLAPPER_ROUNDS):
            strong.connect(ANY if i % 2 else alpha(), False)
            weak.connect(alpha() if i % 3 else ANY, True)
            async_function_.connect(LOOP, i % 2 == 0)
            async_method.connect(LOOP, i % 2 == 1)
            strong.disconnect()
            weak.disconnect(ANY if i % 2 else alpha())
            async_function_.disconnect(LOOP)
            weak.disconnect()
            async_method.disconnect()
        for owned in (strong, weak, async_function_, async_method):
            owned.drop()

    def churn_senders(self) -> None:
        """Object senders made, sent by, and dropped, with weak and strong
        receivers connected for them only."""
        run, sig = self.run, self.sig
        for i in range(SENDER_CHURN_ROUNDS):
            sender = Sender(self.serials(), cyclic=i % 5 == 4)
            weakref.finalize(sender, run.senders_collected.append, sender.serial)
            weak = Owned(run, sig, make_sync_receiver(run, i))
            strong = Owned(run, sig, make_sync_receiver(run, i + 1))
            strong_receiver = strong.receiver
            weakref.finalize(strong_receiver, run.receivers_collected.append, "strong")
            weak.connect(sender, True)
            strong.connect(sender, False)
            del strong_receiver
            send_and_record(run, sig, "send", sender)
            if i % 3 == 0:
                weak.disconnect(sender)
            # The sender goes first: its connections must go with it.
            del sender
            weak.drop()
            strong.drop()
            if i % GC_EVERY == GC_EVERY - 1:
                gc.collect()

    def mute(self) -> None:
        """One thread (only one: see the test of overlapping muted blocks)
        mutes the signal now and then, sending inside and between."""
        run, sig = self.run, self.sig
        for i in range(MUTE_ROUNDS):
            mute_start = run.tick()
            with sig.muted():
                mute_end = run.tick()
                send_and_record(run, sig, "send", alpha() if i % 2 else self.stable_sender)
                unmute_start = run.tick()
            run.mutes.append((mute_start, mute_end, unmute_start, run.tick()))
            for _ in range(SENDS_BETWEEN_MUTES):
                send_and_record(run, sig, "send", alpha())


class ErrorLog(logging.Handler):
    """Records what asignals logs: a change that fails where nobody waits
    for it (one a weak reference's callback queued) is logged, not raised."""

    def __init__(self, run: Run) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.errors.append(f"logged by {record.threadName}: {self.format(record)}")


def join_all(
    run: Run,
    churners: list[threading.Thread],
    senders: list[threading.Thread],
    churn_done: threading.Event,
    deadline: float,
) -> None:
    for thread in churners:
        thread.join(max(0.0, deadline - time.monotonic()))
    churn_done.set()
    for thread in senders:
        thread.join(max(0.0, deadline - time.monotonic()))
    for thread in churners + senders:
        if thread.is_alive():
            run.errors.append(f"{thread.name} did not finish within the time limit")


def bookkeeping_and_queue(sig: Signal) -> tuple[int, ...]:
    """The sizes of a signal's internal tables, and its queue of pending
    changes."""
    return (*bookkeeping(sig), len(sig._pending))


async def churn_on(backend: str) -> Run:
    run = Run(backend)
    sig = Signal()
    churn = Churn(run, sig, Sender(0))
    # Stable receivers, connected throughout: a sync function for ANY, a weak
    # bound method for ANY, an async function for LOOP.
    stable = [
        Owned(run, sig, sync_function(run)),
        Owned(run, sig, Holder(run, "sync method").receive),
        Owned(run, sig, async_function(run)),
    ]
    stable[0].connect(ANY, False)
    stable[1].connect(ANY, True)
    stable[2].connect(LOOP, False)

    def thread(name: str, action: Callable[[], None]) -> threading.Thread:
        return threading.Thread(target=guarded(run, action), name=name, daemon=True)

    churners = [
        *(
            thread(f"receiver churn {k}", partial(churn.churn_receivers, k))
            for k in range(RECEIVER_CHURN_THREADS)
        ),
        thread("async receiver churn", churn.churn_async_receivers),
        thread("flapper", churn.flap),
        thread("sender churn", churn.churn_senders),
        thread("muter", churn.mute),
    ]
    senders = [
        thread(f"plain sender {k}", partial(churn.plain_sends, k))
        for k in range(PLAIN_SENDER_THREADS)
    ]
    deadline = time.monotonic() + RUN_LIMIT
    logged = ErrorLog(run)
    logging.getLogger("asignals").addHandler(logged)
    try:
        with anyio.fail_after(RUN_LIMIT + 10):
            async with anyio.create_task_group() as tg:
                for k in range(WORKER_SENDER_THREADS):
                    work = guarded(run, partial(churn.worker_sends, k))
                    tg.start_soon(partial(anyio.to_thread.run_sync, work, abandon_on_cancel=True))
                tg.start_soon(churn.loop_sends)
                for started in churners + senders:
                    started.start()
                await anyio.to_thread.run_sync(
                    partial(join_all, run, churners, senders, churn.churn_done, deadline),
                    abandon_on_cancel=True,
                )
    finally:
        logging.getLogger("asignals").removeHandler(logged)
    # No thread holds the lock now: no change may be left waiting for one.
    run.pending_after_churn = len(sig._pending)

    # Everything goes: the signal must be left with nothing.
    for owned in stable:
        assert owned.receiver is not None
        sig.disconnect(owned.receiver)
        owned.drop()
    del churn, stable, churners, senders, tg
    # A collection can free a sender whose receivers only become garbage
    # then: collect until nothing is left.
    for _ in range(10):
        if not gc.collect():
            break
    run.bookkeeping = bookkeeping_and_queue(sig)
    run.leftovers = [repr(receiver) for receiver in sig.receivers_for(ANY)]
    run.strong_receivers_kept = SENDER_CHURN_ROUNDS - run.receivers_collected.count("strong")
    return run


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The conftest's backends, for the whole module: the churn runs once per
    backend and every test below checks one property of it."""
    return str(request.param)


@pytest.fixture(scope="module")
async def churn(anyio_backend: str) -> Run:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        return await churn_on(anyio_backend)
    finally:
        sys.setswitchinterval(previous)


# Checking the records


def shown(violations: list[str], limit: int = 10) -> str:
    more = len(violations) - limit
    return "\n".join(violations[:limit] + ([f"... and {more} more"] if more > 0 else []))


def covers(possible: frozenset[str], tag: str | None) -> bool:
    """Whether a receiver connected for ``possible`` is called by a send with
    ``tag`` (None: by any send at all)."""
    if tag is None:
        return bool(possible)
    return tag in possible or EVERY in possible


def op_bounds(run: Run) -> dict[int, tuple[list[int], list[int]]]:
    """For each receiver, the starts and the ends of its ops (both sorted:
    one thread made them one after another)."""
    if "bounds" not in run.memo:
        run.memo["bounds"] = {
            rid: ([op.start for op in ops], [op.end for op in ops])
            for rid, ops in run.ledgers.items()
        }
    bounds: dict[int, tuple[list[int], list[int]]] = run.memo["bounds"]
    return bounds


def possibly_connected(run: Run, rid: int, tag: str | None, start: int, call: int) -> bool:
    """Whether the receiver may have been connected for ``tag`` at some moment
    between a send's start and its call: the state an op leaves holds from
    the op's start (it may take effect at once) to the end of the next op."""
    ops = run.ledgers.get(rid, [])
    starts, ends = op_bounds(run).get(rid, ([], []))
    first = max(0, bisect.bisect_left(ends, start) - 1)
    last = bisect.bisect_right(starts, call) - 1
    for i in range(first, last + 1):
        until = ends[i + 1] if i + 1 < len(ops) else FOREVER
        if covers(ops[i].possible, tag) and until >= start:
            return True
    return False


def late_calls(run: Run) -> tuple[list[str], list[str]]:
    """Calls of receivers that a send made though the receiver had been
    disconnected, from every sender or from the send's own, before the send
    started (and not reconnected before the call)."""
    if "late" in run.memo:
        late: tuple[list[str], list[str]] = run.memo["late"]
        return late
    fully: list[str] = []
    from_sender: list[str] = []
    for rid, start, call, tag in run.calls:
        if possibly_connected(run, rid, tag, start, call):
            continue
        where = f"receiver {rid} ({run.kinds[rid]}) called by send #{start} of {tag} at #{call}"
        history = [(op.start, op.end, sorted(op.possible)) for op in run.ledgers.get(rid, [])]
        if possibly_connected(run, rid, None, start, call):
            from_sender.append(f"{where}; its connections: {history}")
        else:
            fully.append(f"{where}; its connections: {history}")
    run.memo["late"] = fully, from_sender
    return fully, from_sender


def raced_disconnects(run: Run) -> int:
    """How many calls were made while their receiver was being disconnected
    from the send's sender (the op started before the call and ended after
    the send started)."""
    raced = 0
    bounds = op_bounds(run)
    for rid, start, call, tag in run.calls:
        ops = run.ledgers[rid]
        starts, ends = bounds[rid]
        for i in range(bisect.bisect_left(ends, start), bisect.bisect_right(starts, call)):
            if not covers(ops[i].possible, tag):
                raced += 1
                break
    return raced


def sure_intervals(run: Run) -> dict[str, list[tuple[int, int, int]]]:
    """For each tag, ``(receiver, after, before)``: the receiver is surely
    connected for every send of that tag that starts after ``after`` and ends
    before ``before``. Tag ANY: for every send."""
    intervals: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for rid, ops in run.ledgers.items():
        tags = {tag for op in ops for tag in op.sure}
        for tag in tags:
            i = 0
            while i < len(ops):
                if not covers(ops[i].sure, tag) or (tag == EVERY and EVERY not in ops[i].sure):
                    i += 1
                    continue
                j = i
                while j + 1 < len(ops) and (
                    EVERY in ops[j + 1].sure if tag == EVERY else covers(ops[j + 1].sure, tag)
                ):
                    j += 1
                before = ops[j + 1].start if j + 1 < len(ops) else FOREVER
                intervals[tag].append((rid, ops[i].end, before))
                i = j + 1
    return intervals


def overlaps_a_mute(run: Run, sent: Sent) -> bool:
    return any(mute < sent.end and unmuted > sent.start for mute, _, _, unmuted in run.mutes)


def missed_receivers(run: Run) -> tuple[list[str], int]:
    """Receivers surely connected for the whole of a send that it did not
    return (sends that a mute overlaps are left out); and how many sends
    were checked against at least one receiver."""
    sends = sorted(run.sends, key=lambda sent: sent.start)
    starts = [sent.start for sent in sends]
    expected: dict[int, set[int]] = defaultdict(set)
    for tag, intervals in sure_intervals(run).items():
        for rid, after, before in intervals:
            low = bisect.bisect_right(starts, after)
            high = bisect.bisect_left(starts, before)
            for index in range(low, high):
                sent = sends[index]
                if sent.end < before and (tag == EVERY or sent.tag == tag):
                    expected[index].add(rid)
    missed: list[str] = []
    checked = 0
    for index, rids in expected.items():
        sent = sends[index]
        if overlaps_a_mute(run, sent) or sent.start in run.failed_sends:
            continue
        checked += 1
        for rid in sorted(rids - set(sent.rids)):
            missed.append(
                f"{sent.mode} #{sent.start}-#{sent.end} of {sent.tag} returned {sent.rids}, "
                f"without receiver {rid} ({run.kinds[rid]}), connected throughout: "
                f"{[(op.start, op.end, sorted(op.sure)) for op in run.ledgers[rid]]}"
            )
    return missed, checked


def first_connections(run: Run) -> dict[int, Op]:
    """The op that connected each receiver that was connected only once
    (never reconnected after it was disconnected from every sender)."""
    firsts: dict[int, Op] = {}
    for rid, ops in run.ledgers.items():
        lives = [
            op
            for previous, op in zip([None, *ops], ops, strict=False)
            if op.possible and (previous is None or not previous.possible)
        ]
        if len(lives) == 1:
            firsts[rid] = lives[0]
    return firsts


def out_of_order(run: Run) -> list[str]:
    """Results where a receiver comes after one connected only after its own
    connection had returned."""
    firsts = first_connections(run)
    wrong: list[str] = []
    for sent in run.sends:
        known = [rid for rid in sent.rids if rid in firsts]
        for i, earlier in enumerate(known):
            for later in known[i + 1 :]:
                if firsts[later].end < firsts[earlier].start:
                    wrong.append(
                        f"{sent.mode} #{sent.start} returned {sent.rids}: {later} (connected "
                        f"#{firsts[later].start}-#{firsts[later].end}) after {earlier} "
                        f"(connected #{firsts[earlier].start}-#{firsts[earlier].end})"
                    )
    return wrong


def calls_not_returned(run: Run) -> list[str]:
    """Sends whose calls and results differ."""
    called: dict[int, Counter[int]] = defaultdict(Counter)
    for rid, start, _, _ in run.calls:
        called[start][rid] += 1
    wrong: list[str] = []
    returned: set[int] = set()
    for sent in run.sends:
        if sent.mode == "receivers_for":
            continue
        returned.add(sent.start)
        if called[sent.start] != Counter(sent.rids):
            wrong.append(
                f"{sent.mode} #{sent.start} returned {sent.rids}, called "
                f"{sorted(called[sent.start].elements())}"
            )
    stray = set(called) - returned - run.failed_sends
    wrong.extend(f"calls of a send #{start} that never returned" for start in sorted(stray))
    return wrong


# The properties


def test_no_thread_raises(churn: Run) -> None:
    assert churn.errors == [], "\n".join(churn.errors[:5])


def test_no_receiver_is_called_by_a_send_that_started_after_it_was_fully_disconnected(
    churn: Run,
) -> None:
    fully, _ = late_calls(churn)
    assert fully == [], shown(fully)


def test_no_receiver_is_called_for_a_sender_it_was_disconnected_from_before_the_send(
    churn: Run,
) -> None:
    _, from_sender = late_calls(churn)
    assert from_sender == [], shown(from_sender)


def test_every_send_returns_one_pair_per_receiver_it_called(churn: Run) -> None:
    wrong = churn.malformed + calls_not_returned(churn)
    assert wrong == [], shown(wrong)


def test_every_send_returns_the_receivers_connected_throughout_it(churn: Run) -> None:
    missed, checked = missed_receivers(churn)
    assert missed == [], shown(missed)
    # Every send was checked: the stable receivers are connected throughout.
    unmuted = [
        sent
        for sent in churn.sends
        if not overlaps_a_mute(churn, sent) and sent.start not in churn.failed_sends
    ]
    assert checked == len(unmuted)


def test_results_come_in_connection_order(churn: Run) -> None:
    wrong = out_of_order(churn)
    assert wrong == [], shown(wrong)


def test_sends_while_muted_call_no_receiver(churn: Run) -> None:
    muted = [
        sent
        for sent in churn.sends
        if sent.mode != "receivers_for"
        and any(end < sent.start and sent.end < unmute for _, end, unmute, _ in churn.mutes)
    ]
    assert len(muted) >= len(churn.mutes)  # the muter's own sends, at least
    called = {start for _, start, _, _ in churn.calls}
    wrong = [f"{sent}" for sent in muted if sent.rids or sent.start in called]
    assert wrong == [], shown(wrong)


def test_no_change_is_left_pending_once_the_threads_are_done(churn: Run) -> None:
    assert churn.pending_after_churn == 0


def test_nothing_is_left_in_the_bookkeeping_once_everything_is_gone(churn: Run) -> None:
    assert churn.leftovers == []
    assert churn.bookkeeping == (0, 0, 0, 0, 0, 0, 0)


def test_strong_receivers_of_collected_senders_are_released(churn: Run) -> None:
    assert churn.senders_collected, "no object sender was collected"
    assert churn.strong_receivers_kept == 0


def test_the_churn_reaches_every_kind_of_send_and_receiver(churn: Run) -> None:
    """The checks above are only as good as what the churn did."""
    sends = Counter(sent.mode for sent in churn.sends)
    assert set(sends) == {
        "send",
        "send(_async_wrapper=)",
        "send in a worker thread",
        "send_async",
        "send_async(_concurrent=True)",
        "receivers_for",
    }, sends
    called = {churn.kinds[rid] for rid, _, _, _ in churn.calls}
    assert called == {
        "sync function",
        "sync method",
        "callable",
        "cyclic callable",
        "async function",
        "async method",
    }
    by_mode = {sent.start: sent.mode for sent in churn.sends}
    async_calls_in_workers = [
        rid
        for rid, start, _, _ in churn.calls
        if churn.kinds[rid].startswith("async") and by_mode.get(start) == "send in a worker thread"
    ]
    assert async_calls_in_workers
    # Sends and disconnects did interleave.
    assert raced_disconnects(churn) > 0
    assert len(churn.mutes) == MUTE_ROUNDS
    assert len(churn.senders_collected) == SENDER_CHURN_ROUNDS

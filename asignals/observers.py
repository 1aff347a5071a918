"""Observers: see every send of every signal, or of some, as it happens.

An observer is an :class:`Observer` whose methods asignals calls as a send
starts, as each receiver starts and ends, and as the send ends. The monitor
and :mod:`asignals.testing` are observers; yours can log, count or trace the
same way.

>>> from asignals import Signal
>>> from asignals.observers import Observer, observe
>>> class Log(Observer):
...     def send_finished(self, send):
...         print(send.mode, [(call.name, call.status) for call in send.calls])
>>> saved = Signal()
>>> @saved.connect
... def index(sender, **kwargs): ...
>>> with observe(Log(), saved):
...     _ = saved.send("doc-1")
sync [('asignals.observers.index', 'done')]

A signal that nobody observes pays one attribute check per send for this:
the observed path is taken only while an observer watches the signal.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._exceptions import ArgumentError
from ._types import ASYNC, KIND_NAMES, Entry, Failures, Handle, Receiver, Results
from ._utilities import callable_name

if TYPE_CHECKING:
    from ._signal import Signal

__all__ = [
    "Connection",
    "ObservedSend",
    "Observer",
    "Observing",
    "ReceiverCall",
    "all_signals",
    "connections",
    "observe",
]

logger = logging.getLogger("asignals")

Mode = Literal["sync", "sequential", "concurrent", "background"]


class ReceiverCall:
    """One receiver's part in an :class:`ObservedSend`.

    ``status`` is ``"not called"`` (yet, or ever: an earlier receiver raised,
    the send timed out or was cancelled), ``"running"``, ``"done"``,
    ``"failed"`` or ``"cancelled"``. ``started`` is a
    :func:`time.perf_counter` value and ``duration`` is in seconds, once the
    call ended; ``error`` is what it raised.
    """

    __slots__ = ("duration", "error", "index", "kind", "name", "receiver", "started", "status")

    def __init__(self, index: int, name: str, kind: str) -> None:
        self.index = index
        """Its place in the send's ``calls``."""
        self.receiver: Receiver | None = None
        """The receiver, once its turn came: the send holds weak receivers
        weakly until then, so one collected before its turn stays None and is
        not called."""
        self.name = name
        """The receiver's dotted name, for display."""
        self.kind = kind
        """``"sync"``, ``"async"`` or ``"thread"`` (a sync receiver run in a
        worker thread)."""
        self.status = "not called"
        self.started: float | None = None
        self.duration: float | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<ReceiverCall {self.name} {self.status}>"


class ObservedSend:
    """One send, as observers see it.

    ``mode`` says how it was made: ``"sync"`` (with plain calls:
    :meth:`Signal.send`, the lifecycle signals that sync code sends, and the
    middleware's sends when every receiver is sync), ``"sequential"`` or
    ``"concurrent"`` (awaited: :meth:`Signal.send_async`, and the middleware's
    sends when a receiver must be awaited, which are sequential), or
    ``"background"`` (:meth:`Signal.send_background`; its receivers run
    later, in another task). ``kwargs`` are the receivers' arguments, without the ``_``
    options. ``calls`` has one :class:`ReceiverCall` per receiver the send
    will call, in calling order. ``error`` is what ended the send, once it
    ended (``None`` if it returned). ``data`` is a dict for observers to keep
    what they need for this send, under a key of their own.
    """

    __slots__ = (
        "calls",
        "data",
        "duration",
        "error",
        "kwargs",
        "mode",
        "observers",
        "sender",
        "signal",
        "started",
    )

    def __init__(
        self,
        signal: Signal,
        sender: Any,
        kwargs: dict[str, Any],
        mode: Mode,
        observers: _ObserverSet,
    ) -> None:
        self.signal = signal
        self.sender = sender
        self.kwargs = kwargs
        self.mode = mode
        self.calls: list[ReceiverCall] = []
        self.started = perf_counter()
        self.duration: float | None = None
        self.error: BaseException | None = None
        self.data: dict[Hashable, Any] = {}
        self.observers = observers

    def __repr__(self) -> str:
        return f"<ObservedSend {self.mode} of {self.signal!r}>"


class Observer:
    """The base class of observers: override the methods you need.

    Each method is called in the thread and task of what it reports:
    :meth:`send_started` and :meth:`send_finished` where the send was made
    (for a background send, :meth:`send_finished` in the task that ran it),
    :meth:`receiver_started` and :meth:`receiver_finished` in the task (or
    worker thread) that runs the receiver, so a context variable set there is
    seen by the receiver. They must be quick; an exception they raise is
    logged (logger ``asignals``) and the send goes on.
    """

    def send_started(self, send: ObservedSend) -> None:
        """A send began; its receivers are in ``send.calls``, not called yet."""

    def receiver_started(self, send: ObservedSend, call: ReceiverCall) -> None:
        """A receiver is about to be called."""

    def receiver_finished(self, send: ObservedSend, call: ReceiverCall) -> None:
        """A receiver returned, raised, or was cancelled (see ``call.status``)."""

    def send_finished(self, send: ObservedSend) -> None:
        """The send is over: every receiver it called has ended."""


_EVENTS = ("send_started", "receiver_started", "receiver_finished", "send_finished")


class _ObserverSet(tuple[Observer, ...]):
    """The observers of a signal, with, for each event, the methods to call:
    those that an observer overrides (the base class's do nothing). Made when
    the observers change, not on every send."""

    send_started: tuple[Callable[..., None], ...]
    receiver_started: tuple[Callable[..., None], ...]
    receiver_finished: tuple[Callable[..., None], ...]
    send_finished: tuple[Callable[..., None], ...]
    # Observers of asignals' own that may refuse a send (the bridge, which
    # refuses what cannot cross to other processes): each is called with the
    # send once the observers were told it started, before any receiver, and
    # what it raises ends the send (the observers are told) and is raised
    # from it. Not for other observers: theirs are logged (see _notify).
    checks: tuple[Callable[[ObservedSend], None], ...]


def _observer_set(observers: Sequence[Observer]) -> _ObserverSet | None:
    """``observers`` as a signal keeps them, or None if there are none."""
    if not observers:
        return None
    made = _ObserverSet(observers)
    for event in _EVENTS:
        base = getattr(Observer, event)
        hooks = tuple(getattr(o, event) for o in made if getattr(type(o), event) is not base)
        setattr(made, event, hooks)
    made.checks = tuple(
        check for o in made if (check := getattr(o, "_asignals_check_send", None)) is not None
    )
    return made


def _notify(hooks: tuple[Callable[..., None], ...], *args: Any) -> None:
    for hook in hooks:
        try:
            hook(*args)
        except Exception:
            logger.exception(
                "observer %r failed in %s", getattr(hook, "__self__", hook), hook.__name__
            )


class Connection(NamedTuple):
    """A receiver connected to a signal: the receiver, its kind (``"sync"``,
    ``"async"`` or ``"thread"``) and the senders it is connected for
    (:data:`~asignals.ANY`, or the senders themselves)."""

    receiver: Receiver
    kind: str
    senders: list[Any]


def connections(signal: Signal) -> list[Connection]:
    """The receivers connected to ``signal``, in calling order."""
    return [
        Connection(receiver, KIND_NAMES[kind], senders)
        for receiver, kind, senders in signal._connected()
    ]


# Every signal alive, and the observers of every signal. The lock is taken
# before a signal's own, never after.
_signals: weakref.WeakSet[Signal] = weakref.WeakSet()
_everywhere: tuple[Observer, ...] = ()
_lock = threading.Lock()


def all_signals() -> list[Signal]:
    """Every signal alive now."""
    with _lock:
        return list(_signals)


def _register(signal: Signal) -> None:
    """Called by each new signal: it is observed by the observers of every
    signal."""
    with _lock:
        _signals.add(signal)
        if _everywhere:
            signal._add_observers(_everywhere)


class Observing:
    """What :func:`observe` returns: the observer watches until :meth:`close`,
    or the end of a ``with`` block."""

    def __init__(self, observer: Observer, signals: tuple[Signal, ...]) -> None:
        self.observer = observer
        self.signals = signals
        self.closed = False

    def close(self) -> None:
        """Stop observing. Sends already running may still report to the
        observer."""
        global _everywhere
        with _lock:
            if self.closed:
                return
            self.closed = True
            if self.signals:
                for signal in self.signals:
                    signal._remove_observer(self.observer)
            else:
                # Once: the same observer may observe every signal twice.
                index = next(i for i, o in enumerate(_everywhere) if o is self.observer)
                _everywhere = _everywhere[:index] + _everywhere[index + 1 :]
                for signal in _signals:
                    signal._remove_observer(self.observer)

    def __enter__(self) -> Observing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def observe(observer: Observer, *signals: Signal) -> Observing:
    """Have ``observer`` see every send of ``signals``, or with none given,
    of every signal, made now or later, until the returned :class:`Observing`
    is closed (or its ``with`` block ends). An observer may observe a signal
    several times; it is told of each send once per time."""
    if not isinstance(observer, Observer):
        raise ArgumentError(
            f"observe() takes an asignals.observers.Observer, not {observer!r}: "
            "subclass Observer and override the methods you need"
        )
    from ._signal import Signal  # the signal module imports this one

    for signal in signals:
        if not isinstance(signal, Signal):
            raise ArgumentError(f"observe() observes signals, not {signal!r}")
    global _everywhere
    with _lock:
        if signals:
            for signal in signals:
                signal._add_observers((observer,))
        else:
            _everywhere = (*_everywhere, observer)
            for signal in _signals:
                signal._add_observers((observer,))
    return Observing(observer, signals)


# How the core runs an observed send: its entries are replaced by entries
# whose handles return a _Timed stand-in for the receiver, which tells the
# observers as the receiver starts and ends. The delivery code then runs them
# as it runs any receivers; results and failures are given back with the
# receivers themselves (unwrap).


def _start(
    signal: Signal,
    sender: Any,
    kwargs: dict[str, Any],
    mode: Mode,
    entries: Sequence[Entry],
    observers: _ObserverSet,
) -> tuple[ObservedSend, tuple[Entry, ...]]:
    """Tell ``observers`` (a signal's ``_observers``) that a send starts,
    and return it with the entries to call instead of ``entries``; or raise
    what an observer that checks sends refused it for (the observers are
    told that the send ended with it)."""
    send = ObservedSend(signal, sender, kwargs, mode, observers)
    watched: list[Entry] = []
    for handle, kind in entries:
        receiver = handle[0]()
        if receiver is None:
            continue
        call = ReceiverCall(len(send.calls), callable_name(receiver), KIND_NAMES[kind])
        send.calls.append(call)
        timed = (_AsyncTimed if kind == ASYNC else _Timed)(send, handle, call)
        watched.append(([timed.get], kind))
    _notify(observers.send_started, send)
    try:
        for check in observers.checks:
            check(send)
    except BaseException as exc:
        _finish(send, exc)
        raise
    return send, tuple(watched)


def _finish(send: ObservedSend, error: BaseException | None) -> None:
    """Tell the observers that ``send`` ended, with ``error`` or not."""
    if send.duration is not None:
        return
    send.duration = perf_counter() - send.started
    send.error = error
    _notify(send.observers.send_finished, send)


def _unwrap(results: Results | Failures) -> Any:
    """``results`` (or failures) with the receivers the stand-ins stood for."""
    return [(getattr(r, "receiver", r), value) for r, value in results]


class _Timed:
    """Stands in for a sync receiver in one observed send."""

    __slots__ = ("call", "handle", "receiver", "send")

    def __init__(self, send: ObservedSend, handle: Handle, call: ReceiverCall) -> None:
        self.send = send
        self.handle = handle
        self.call = call

    @property
    def _asignals_receiver(self) -> Receiver:
        # What messages name (see callable_name).
        receiver: Receiver = self.receiver
        return receiver

    def get(self) -> _Timed | None:
        """What the entry's handle returns: this stand-in, or None if the
        receiver is gone since the send began (the send skips it)."""
        receiver = self.handle[0]()
        if receiver is None:
            return None
        self.receiver = self.call.receiver = receiver
        return self

    def __call__(self, sender: Any, /, **kwargs: Any) -> Any:
        return self.run_sync(self.receiver, sender, **kwargs)

    def through(self, wrapper: Callable[[Any], Callable[..., Any]]) -> Callable[..., Any]:
        """``wrapper(receiver)``, timed: ``_sync_wrapper`` makes a sync
        receiver async."""
        return _bind(self.run_async, wrapper(self.receiver))

    def run_sync(self, target: Callable[..., Any], sender: Any, /, **kwargs: Any) -> Any:
        self.begin()
        try:
            result = target(sender, **kwargs)
        except BaseException as exc:
            self.end(exc)
            raise
        self.end(None)
        return result

    async def run_async(self, target: Callable[..., Any], sender: Any, /, **kwargs: Any) -> Any:
        self.begin()
        try:
            result = await target(sender, **kwargs)
        except BaseException as exc:
            self.end(exc)
            raise
        self.end(None)
        return result

    def begin(self) -> None:
        call = self.call
        call.status = "running"
        call.started = perf_counter()
        _notify(self.send.observers.receiver_started, self.send, call)

    def end(self, exc: BaseException | None) -> None:
        call = self.call
        call.duration = perf_counter() - (call.started or 0.0)
        if exc is None:
            call.status = "done"
        else:
            call.status = "cancelled" if _is_cancellation(exc) else "failed"
            call.error = exc
        _notify(self.send.observers.receiver_finished, self.send, call)


class _AsyncTimed(_Timed):
    """Stands in for an async receiver in one observed send."""

    __slots__ = ()

    def __call__(self, sender: Any, /, **kwargs: Any) -> Any:
        return self.run_async(self.receiver, sender, **kwargs)

    def through(self, wrapper: Callable[[Any], Callable[..., Any]]) -> Callable[..., Any]:
        # _async_wrapper makes an async receiver sync.
        return _bind(self.run_sync, wrapper(self.receiver))


def _bind(run: Callable[..., Any], target: Callable[..., Any]) -> Callable[..., Any]:
    def call(sender: Any, /, **kwargs: Any) -> Any:
        return run(target, sender, **kwargs)

    return call


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is asyncio's or trio's cancellation."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and isinstance(exc, asyncio.CancelledError):
        return True
    kind = type(exc)
    return kind.__name__ == "Cancelled" and kind.__module__.startswith("trio")

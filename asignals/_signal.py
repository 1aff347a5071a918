"""The signal core: blinker's API, with ordered, async-native dispatch."""

from __future__ import annotations

import difflib
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Collection, Generator, Hashable
from contextlib import contextmanager, suppress
from functools import partial
from itertools import count, repeat
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from ._dispatch import (
    ASYNC,
    SYNC,
    THREAD,
    Handle,
    Receiver,
    Results,
    call_from_worker_thread,
    call_receiver,
    dispatch,
    logger,
)
from ._utilities import (
    ANY,
    IDENTITY_TYPES,
    StandIn,
    callable_name,
    describe,
    in_anyio_worker_thread,
    is_async_callable,
    receiver_key,
    sender_key,
    through,
    weak_ref,
)

F = TypeVar("F", bound=Callable[..., Any])
AsyncWrapper = Callable[[Receiver], Callable[..., Any]]
Failures = list[tuple[Receiver, Exception]]

# A plan is what a send needs, precomputed for one sender: ``entries`` holds
# ``(handle, kind)`` in connection order, and ``handles`` the same handles when
# no receiver is async, else None. A handle is a connection's one-item list
# holding a callable that returns the receiver: its weak reference, or a
# C-level callable returning it. The callable is swapped for _GONE when the
# receiver is disconnected from every sender, so that sends already running
# skip it, as in blinker. Plans are immutable and replaced as a whole, so a
# send reads them without a lock.
Plan = tuple[tuple[tuple[Handle, int], ...], tuple[Handle, ...] | None]
_EMPTY_PLAN: Plan = ((), ())
_GONE: Callable[[], None] = repeat(None).__next__
_EVERYTHING: Collection[Hashable] = (ANY,)

# Keyword names already seen to be plain receiver arguments. Checking a call's
# keywords against it costs one C call; a name seen for the first time takes
# the slow path once. Bounded, as keywords can be made at run time.
_KNOWN_KEYWORDS: set[str] = set()
_KNOWN_KEYWORDS_LIMIT = 4096
_known_keywords = _KNOWN_KEYWORDS.issuperset
_OPTIONS = {
    "send": ("_async_wrapper",),
    "send_async": ("_sync_wrapper", "_concurrent", "_timeout"),
    "send_background": ("_concurrent", "_timeout"),
}
# For an unknown option: the method whose options it may belong to.
_OTHER_METHOD = {"send": "send_async", "send_async": "send", "send_background": "send_async"}


class Watcher(Protocol):
    """What asignals.monitor sets on signals: called by each send with the
    signal, the sender, the keyword arguments and the plan, it returns the
    plan the send follows."""

    def __call__(self, signal: Signal, sender: Any, kwargs: dict[str, Any], plan: Plan) -> Plan: ...


# Every signal, for asignals.monitor, and the watcher that signals made now
# get (None unless a monitor watches). The lock is taken before a signal's
# own, never after.
_signals: weakref.WeakSet[Signal] = weakref.WeakSet()
_new_signal_watcher: Watcher | None = None
# Whether a watcher was ever set: only then can results hold stand-ins.
_stand_ins_made = False
_registry_lock = threading.Lock()


def watch_signals(watcher: Watcher | None) -> None:
    """Have ``watcher`` plan every send of every signal, made now or later;
    with None, stop."""
    global _new_signal_watcher, _stand_ins_made
    with _registry_lock:
        _stand_ins_made = _stand_ins_made or watcher is not None
        _new_signal_watcher = watcher
        for signal in list(_signals):
            signal._set_watcher(watcher)


def all_signals() -> list[Signal]:
    """Every signal alive now."""
    with _registry_lock:
        return list(_signals)


def _without_stand_ins(results: Results) -> Results:
    """``results`` with the receivers a watcher stood in for. A watched plan
    has stand-ins only, so the first result tells (whether the monitor is
    still open or not)."""
    if not results or not isinstance(results[0][0], StandIn):
        return results
    return [(receiver.receiver, value) for receiver, value in results]


class _Change:
    """A queued change to the bookkeeping, and the error it raised, which
    goes back to the thread that asked for it."""

    __slots__ = ("detached", "error", "operation")

    def __init__(self, operation: Callable[[], None], detached: bool) -> None:
        self.operation = operation
        self.detached = detached  # nobody waits for it: errors are logged
        self.error: BaseException | None = None


class _Connection:
    """A connected receiver: how to reach it, how to call it, and for which
    senders."""

    __slots__ = ("handle", "kind", "order", "senders", "stored")

    def __init__(self, order: int) -> None:
        self.order = order
        self.senders: set[Hashable] = set()
        self.stored: Any = None
        self.handle: Handle = [_GONE]
        self.kind = SYNC


class Signal:
    """A notification emitter with blinker's API.

    Receivers are called as ``receiver(sender, **kwargs)`` in the order they
    were connected. Sync and ``async def`` receivers can be mixed.

    :param doc: The docstring for the signal.
    :param concurrent: Whether :meth:`send_async` runs async receivers
        concurrently by default (see :meth:`send_async`).

    >>> started = Signal("Sent when a job starts.")
    >>> def log(sender, **kwargs):
    ...     return f"{sender} started"
    >>> started.connect(log) is log
    True
    >>> started.send("job-1")  # doctest: +ELLIPSIS
    [(<function log at ...>, 'job-1 started')]
    """

    ANY = ANY
    """An alias for the :data:`~asignals.ANY` sender symbol."""

    def __init__(self, doc: str | None = None, *, concurrent: bool = False) -> None:
        if doc:
            self.__doc__ = doc
        self.concurrent = concurrent
        """Whether :meth:`send_async` dispatches concurrently by default."""

        self.receivers: dict[Hashable, Any] = {}
        """The connected receivers, keyed by identity, each a weak reference
        or the receiver. Only its truth value is public: it is true while any
        receiver is connected."""

        self._connections: dict[Hashable, _Connection] = {}
        self._by_sender: dict[Hashable, set[Hashable]] = {}
        self._sender_refs: dict[Hashable, weakref.ref[Any]] = {}
        # Muted while is_muted is set or a muted() block is open.
        self._is_muted = self._mute_set = False
        self._mute_blocks = 0
        # Whether a send would be seen: by a connected receiver, or by
        # asignals.testing.record_signals (_recorded). The middleware reads it
        # to skip, at the cost of one attribute load, the signals nobody sees.
        self._recorded = False
        self._observed = False
        # Whether a receiver must be awaited (async, or run in a thread):
        # without one, the middleware sends with plain calls.
        self._awaits = False
        self._any_plan: Plan = _EMPTY_PLAN
        self._plans: dict[Hashable, Plan] | None = None
        self._async_entries: tuple[tuple[Handle, int], ...] | None = ()
        self._sync_handles: tuple[Handle, ...] | None = ()
        # _sync_handles when every receiver is plainly sync (none runs in a
        # worker thread), for _send_each_sync; else None.
        self._plain_handles: tuple[Handle, ...] | None = ()
        self._order = count()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread holding _lock
        self._pending: deque[_Change] = deque()
        # Handles of receivers disconnected from every sender, kept while the
        # receiver lives, so that reconnecting it during a send that already
        # started puts it back in that send: {receiver key: (handle, weak ref)}.
        self._retired: dict[Hashable, tuple[Handle, weakref.ref[Any]]] = {}
        # The meta-signals, made on first use. (Not cached_property: touching
        # an instance's __dict__ makes every attribute load on it slower in
        # CPython 3.11, and send() loads attributes.)
        self._receiver_connected: Signal | None = None
        self._receiver_disconnected: Signal | None = None
        self._watcher: Watcher | None = None
        with _registry_lock:
            _signals.add(self)
            if _new_signal_watcher is not None:
                self._set_watcher(_new_signal_watcher)

    @property
    def receiver_connected(self) -> Signal:
        """Sent at the end of each :meth:`connect`, with this signal as sender
        and the ``receiver``, ``sender`` and ``weak`` arguments of the call.
        If one of its receivers raises, the connection is undone and the
        exception propagates from :meth:`connect`."""
        if self._receiver_connected is None:
            self._receiver_connected = Signal("Sent after a receiver connects.")
        return self._receiver_connected

    @property
    def receiver_disconnected(self) -> Signal:
        """Sent at the end of each :meth:`disconnect`, with this signal as
        sender and the ``receiver`` and ``sender`` arguments of the call. It is
        not sent when a weak receiver or sender is garbage collected."""
        if self._receiver_disconnected is None:
            self._receiver_disconnected = Signal("Sent after a receiver disconnects.")
        return self._receiver_disconnected

    @property
    def is_muted(self) -> bool:
        """Whether sends are ignored (see :meth:`muted`)."""
        return self._is_muted

    @is_muted.setter
    def is_muted(self, value: bool) -> None:
        muted = bool(value)

        def mute() -> None:
            self._mute_set = muted
            self._is_muted = muted or self._mute_blocks > 0
            self._rebuild(_EVERYTHING)

        self._change(mute)

    def _mute_block(self, change: int) -> None:
        """Enter (+1) or leave (-1) a :meth:`muted` block."""

        def mute() -> None:
            self._mute_blocks += change
            self._is_muted = self._mute_set or self._mute_blocks > 0
            self._rebuild(_EVERYTHING)

        self._change(mute)

    def connect(
        self,
        receiver: F,
        sender: Any = ANY,
        weak: bool = True,
        *,
        to_thread: bool = False,
    ) -> F:
        """Connect ``receiver`` to be called when the signal is sent by
        ``sender``, and return it.

        :param receiver: A callable, sync or ``async def``, called as
            ``receiver(sender, **kwargs)``.
        :param sender: Call ``receiver`` only for this sender, or for any
            sender with :data:`ANY`. ``str`` and ``int`` senders match by
            value, other senders by identity. Connect several times for
            several senders.
        :param weak: Hold ``receiver`` by a weak reference, so that it is
            disconnected when it is garbage collected. Use ``weak=False`` for
            a receiver defined inside a function, or it goes when the function
            returns.
        :param to_thread: For a blocking sync receiver: :meth:`send_async`
            runs it in a worker thread (with the sender's context variables)
            rather than on the event loop. :meth:`send` calls it inline.

        A receiver keeps its place in the calling order from its first
        connection until it is disconnected from every sender.
        """
        if not callable(receiver):
            raise TypeError(
                f"cannot connect {receiver!r} to {describe(self)}: a receiver must be "
                "callable as receiver(sender, **kwargs)"
            )
        is_async = is_async_callable(receiver)
        if to_thread and is_async:
            raise TypeError(
                f"cannot connect {callable_name(receiver)} with to_thread=True: "
                "it is async and already runs on the event loop; to_thread is "
                "for blocking sync receivers"
            )
        kind = ASYNC if is_async else THREAD if to_thread else SYNC
        rkey = receiver_key(receiver)
        skey = ANY if sender is ANY else sender_key(sender)
        hash(skey)  # a str sender's own __hash__ may fail: not inside the lock

        stored: Any
        if weak:
            try:
                stored = weak_ref(receiver, partial(self._on_collected, "receiver", rkey))
            except TypeError:
                raise TypeError(
                    f"cannot connect {callable_name(receiver)} weakly: "
                    f"{type(receiver).__name__} objects do not support weak "
                    "references; connect it with weak=False"
                ) from None
            get = stored
        else:
            stored = receiver
            # A C-level callable that returns the receiver: weak and strong
            # receivers are then fetched the same way on the hot path.
            get = repeat(receiver).__next__

        sender_ref = None
        if skey is not ANY and not isinstance(sender, (str, int)):
            # A sender that cannot be weakly referenced is kept until disconnected.
            with suppress(TypeError):
                sender_ref = weak_ref(sender, partial(self._on_collected, "sender", skey))

        added = False

        def add() -> None:
            nonlocal added
            connection = self._connections.get(rkey)
            if connection is None:
                connection = self._connections[rkey] = _Connection(next(self._order))
                retired = self._retired.pop(rkey, None)
                # The same key and a live receiver: the very same receiver,
                # disconnected earlier. Sends still running find it again.
                if retired is not None and retired[1]() is not None:
                    connection.handle = retired[0]
                changed = False
            else:
                # Connected before: only a change of weak or to_thread replaces
                # how it is reached, which every plan holding it must see.
                changed = connection.kind != kind or weak != isinstance(
                    connection.stored, weakref.ref
                )
            if connection.stored is None or changed:
                connection.stored, connection.kind = stored, kind
                connection.handle[0] = get
                self.receivers[rkey] = stored
            added = skey not in connection.senders
            connection.senders.add(skey)
            self._by_sender.setdefault(skey, set()).add(rkey)
            if sender_ref is not None and skey not in self._sender_refs:
                self._sender_refs[skey] = sender_ref
            self._rebuild(_EVERYTHING if changed else (skey,))

        self._change(add)
        meta = self._receiver_connected
        if meta is not None and meta.receivers:
            try:
                meta._notify(self, {"receiver": receiver, "sender": sender, "weak": weak})
            except BaseException:
                # Undo this connect only: a connection made before stays.
                if added:
                    self._change(partial(self._disconnect, rkey, skey, every=False))
                    self._notify_disconnected(receiver, sender)
                raise
        return receiver

    def connect_via(
        self, sender: Any, weak: bool = False, *, to_thread: bool = False
    ) -> Callable[[F], F]:
        """A decorator that connects the decorated function for ``sender``
        (see :meth:`connect`). Unlike :meth:`connect`, ``weak`` defaults to
        ``False``.

        >>> ready = Signal()
        >>> @ready.connect_via(ANY)
        ... def on_ready(sender, **kwargs):
        ...     pass
        """

        def decorator(fn: F) -> F:
            self.connect(fn, sender, weak, to_thread=to_thread)
            return fn

        return decorator

    @contextmanager
    def connected_to(self, receiver: Receiver, sender: Any = ANY) -> Generator[None, None, None]:
        """A context manager that connects ``receiver`` (strongly) for the
        duration of a ``with`` block, then disconnects it from every sender,
        however the block exits. Useful in tests."""
        self.connect(receiver, sender=sender, weak=False)
        try:
            yield None
        finally:
            self.disconnect(receiver)

    @contextmanager
    def muted(self) -> Generator[None, None, None]:
        """A context manager during which sends call no receiver and return
        ``[]``. Blocks nest, in one thread or across threads: the signal is
        muted while any block is open, or while ``is_muted`` is set."""
        self._mute_block(+1)
        try:
            yield None
        finally:
            self._mute_block(-1)

    def disconnect(self, receiver: Receiver, sender: Any = ANY) -> None:
        """Disconnect ``receiver`` from ``sender``, or with :data:`ANY` (the
        default) from every sender it is connected for. Disconnecting a
        receiver that is not connected changes nothing (though, as in blinker,
        ``receiver_disconnected`` is sent)."""
        skey = ANY if sender is ANY else sender_key(sender)
        hash(skey)
        self._change(partial(self._disconnect, receiver_key(receiver), skey))
        self._notify_disconnected(receiver, sender)

    def _notify_disconnected(self, receiver: Receiver, sender: Any) -> None:
        meta = self._receiver_disconnected
        if meta is not None and meta.receivers:
            meta._notify(self, {"receiver": receiver, "sender": sender})

    def send(self, sender: Any = None, /, **kwargs: Any) -> Results:
        """Call every receiver connected for ``sender`` or :data:`ANY`, in
        connection order, as ``receiver(sender, **kwargs)``, and return a list
        of ``(receiver, return value)`` pairs. The first exception a receiver
        raises propagates, and later receivers are not called.

        Async receivers are run in one of two ways. In a worker thread started
        by anyio (a sync Starlette endpoint, ``anyio.to_thread.run_sync``), they
        run on the event loop and ``send`` returns their results. Otherwise
        ``_async_wrapper=``, if given, is called with each async receiver and
        must return a sync callable to call instead, as in blinker; without it,
        ``RuntimeError``: use ``await signal.send_async(...)``.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param kwargs: Passed to each receiver. Names starting with ``_`` are
            options (here only ``_async_wrapper``); an unknown one, or
            ``sender=``, is a ``TypeError`` whenever there is a receiver to
            call (a send with none, or a muted one, returns ``[]`` at once).
        """
        handles = self._sync_handles
        if not handles:
            if handles is None:
                return self._send(sender, kwargs)
            return []
        if kwargs and not _known_keywords(kwargs):
            return self._send(sender, kwargs)
        # Flat on purpose: for the common case (receivers connected for ANY,
        # all sync) this loop is the whole cost of a send. It is _notify's
        # loop, inlined to save a call.
        results: Results = []
        for handle in handles:
            receiver = handle[0]()
            if receiver is not None:
                results.append((receiver, receiver(sender, **kwargs)))
        return results

    async def send_async(self, sender: Any = None, /, **kwargs: Any) -> Results:
        """Call every receiver connected for ``sender`` or :data:`ANY` and
        return a list of ``(receiver, return value)`` pairs in connection
        order. Async receivers are awaited; sync receivers are called inline,
        or in a worker thread if connected with ``to_thread=True``, or through
        ``_sync_wrapper=`` if given (as in blinker).

        Sequential dispatch (the default) calls receivers one after another;
        the first exception propagates and later receivers are not called.
        Concurrent dispatch runs async receivers as concurrent tasks, so a send
        takes about as long as its slowest receiver; every receiver runs to the
        end, then the exceptions of all that failed are raised together in an
        ``ExceptionGroup``.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param _concurrent: Dispatch concurrently (``True``) or sequentially
            (``False``); defaults to the signal's ``concurrent`` setting.
        :param _timeout: Seconds the whole send may take. Receivers still
            running then are cancelled and ``TimeoutError`` is raised, naming
            them. Only receivers that await can be cancelled: a sync receiver
            runs to its end and a worker thread is waited for, so a send
            whose receivers all finished returns their results.
        :param _sync_wrapper: Called with each sync receiver (not those
            connected with ``to_thread=True``); must return an async callable
            to await instead.
        :param kwargs: Passed to each receiver. An unknown option (a name
            starting with ``_``), or ``sender=``, is a ``TypeError`` whenever
            there is a receiver to call.
        """
        entries = self._async_entries
        if not entries:
            if entries is None:
                return await self._send_async(sender, kwargs)
            return []
        if self.concurrent or (kwargs and not _known_keywords(kwargs)):
            return await self._send_async(sender, kwargs)
        results: Results = []
        for handle, kind in entries:
            receiver = handle[0]()
            if receiver is None:
                continue
            if kind == ASYNC:
                results.append((receiver, await receiver(sender, **kwargs)))
            elif kind == SYNC:
                results.append((receiver, receiver(sender, **kwargs)))
            else:
                results.append(
                    (receiver, await call_receiver(receiver, kind, sender, kwargs, None))
                )
        return results

    def send_background(self, sender: Any = None, /, **kwargs: Any) -> None:
        """Send in the background: return at once, and have the receivers
        run later, on a task group that the app's lifespan owns, as
        :meth:`send_async` runs them, with the caller's context variables, in
        an application context of their own (a new ``g``; the appcontext
        signals are sent around them).

        Call it (it is not async) from anywhere the middleware serves: an
        async or sync endpoint, a receiver, the lifespan, or the receiver of
        another background send. The receivers are those connected now.
        Unlike :meth:`send_async`, a receiver that raises does not stop the
        others: each failure is logged (logger ``asignals``) and sent as
        ``got_background_exception(exception=...)`` with the app as sender.
        The app's shutdown waits for background sends, for at most the
        middleware's ``background_grace`` seconds, then cancels those still
        running and logs each.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param _concurrent: As for :meth:`send_async`.
        :param _timeout: As for :meth:`send_async`; receivers still running
            then are cancelled, and a ``TimeoutError`` naming them is reported
            as a failure.
        :param kwargs: Passed to each receiver; checked as :meth:`send_async`
            checks them, before this returns.
        :raises RuntimeError: if no lifespan of an app with asignals'
            middleware is running here (no app context; a server without
            lifespan support; a ``TestClient`` used without ``with``), or it
            has shut down. The work is never dropped silently.
        :raises asignals.BackgroundLimitError: if the app already runs its
            middleware's ``background_limit`` of background sends.
        """
        from ._background import send_in_background

        send_in_background(self, sender, kwargs)

    def has_receivers_for(self, sender: Any) -> bool:
        """Whether a receiver is connected for ``sender`` or for :data:`ANY`.
        Weak receivers are counted even if they are about to be collected; see
        :meth:`receivers_for` for the live ones."""
        if not self.receivers:
            return False
        if ANY in self._by_sender:
            return True
        if sender is ANY:
            return False
        return sender_key(sender) in self._by_sender

    def receivers_for(self, sender: Any) -> Generator[Receiver, None, None]:
        """Yield each live receiver that a send by ``sender`` would call, in
        calling order. As in blinker, muting stops sends, not this."""
        entries = self._lookup(sender)[0] if not self._is_muted else self._unmuted(sender)
        for handle, _ in entries:
            receiver = handle[0]()
            if receiver is not None:
                yield receiver

    def _unmuted(self, sender: Any) -> tuple[tuple[Handle, int], ...]:
        """The entries of the plan for ``sender`` had the signal not been
        muted (a muted signal's plans are empty)."""
        entries: list[tuple[tuple[Handle, int], ...]] = []

        def read() -> None:
            key = id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)
            keys = self._by_sender.get(ANY, set())
            if sender is not ANY:
                keys = keys | self._by_sender.get(key, set())
            entries.append(self._plan(keys)[0])

        self._change(read)
        return entries[0] if entries else ()

    def _lookup(self, sender: Any) -> Plan:
        """The plan for ``sender``: the receivers connected for it."""
        plans = self._plans
        if plans is None:
            return self._any_plan
        key = id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)
        return plans.get(key, self._any_plan)

    def _plan_for(self, sender: Any, kwargs: dict[str, Any]) -> Plan:
        """The plan a send by ``sender`` with ``kwargs`` follows: every send
        path but the fast ones comes here once per send. While a watcher
        (asignals.monitor) watches the signal, it is the watcher's plan for
        this one send, whose handles return stand-ins that time each receiver;
        the fast paths are then off (see _rebuild)."""
        # _lookup, inlined: the general send paths come here on every send.
        plans = self._plans
        if plans is None:
            plan = self._any_plan
        else:
            key = id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)
            plan = plans.get(key, self._any_plan)
        watcher = self._watcher
        return plan if watcher is None else watcher(self, sender, kwargs, plan)

    def _nothing_to_call(self) -> bool:
        """Whether no receiver is connected (or the signal is muted): then the
        fast paths of send and send_async return [] before checking the
        keywords, and a watched send must do as they do."""
        return self._plans is None and not self._any_plan[0]

    def _send(self, sender: Any, kwargs: dict[str, Any]) -> Results:
        """``send`` for every case its fast path leaves out: options, new
        keyword names, receivers for specific senders, async receivers."""
        if self._watcher is not None and self._nothing_to_call():
            self._plan_for(sender, kwargs)  # the watcher sees it
            return []
        async_wrapper = None
        if kwargs and not _known_keywords(kwargs):
            async_wrapper = kwargs.pop("_async_wrapper", None)
            _check_keywords(kwargs, "send")
        results = self._notify(sender, kwargs, async_wrapper)
        # Only if a watcher was ever set: a signal never watched pays one
        # global load. (The watcher may have gone since the plan was made.)
        return _without_stand_ins(results) if _stand_ins_made else results

    def _notify(
        self, sender: Any, kwargs: dict[str, Any], async_wrapper: AsyncWrapper | None = None
    ) -> Results:
        """Call the receivers for ``sender`` with ``kwargs`` as they are. The
        meta-signals come here directly: blinker sends them with ``sender=``,
        which :meth:`send` rejects from callers."""
        entries, handles = self._plan_for(sender, kwargs)
        if handles is None:
            return self._send_to_async(entries, sender, kwargs, async_wrapper)
        results: Results = []
        for handle in handles:
            receiver = handle[0]()
            if receiver is not None:
                results.append((receiver, receiver(sender, **kwargs)))
        return results

    async def _send_async(self, sender: Any, kwargs: dict[str, Any]) -> Results:
        """``send_async`` for every case its fast path leaves out: options,
        concurrency, new keyword names, receivers for specific senders."""
        if self._watcher is not None and self._nothing_to_call():
            self._plan_for(sender, kwargs)  # the watcher sees it
            return []
        sync_wrapper = concurrent = timeout = None
        if kwargs and not _known_keywords(kwargs):
            sync_wrapper = kwargs.pop("_sync_wrapper", None)
            concurrent = kwargs.pop("_concurrent", None)
            timeout = kwargs.pop("_timeout", None)
            _check_keywords(kwargs, "send_async")
        _check_timeout(timeout)
        entries = self._plan_for(sender, kwargs)[0]
        if not entries:
            return []
        if concurrent is None:
            concurrent = self.concurrent
        results = await dispatch(
            self, entries, sender, kwargs, sync_wrapper, bool(concurrent), timeout
        )
        return _without_stand_ins(results) if _stand_ins_made else results

    async def _send_each(self, sender: Any, kwargs: dict[str, Any]) -> Failures:
        """Call every receiver for ``sender`` in order, as a sequential
        :meth:`send_async` does, but go on past a receiver that raises an
        ``Exception``; return those receivers with what they raised. For the
        middleware, where every teardown receiver must run."""
        failures: Failures = []
        for handle, kind in self._plan_for(sender, kwargs)[0]:
            receiver = handle[0]()
            if receiver is None:
                continue
            try:
                await call_receiver(receiver, kind, sender, kwargs, None)
            except Exception as exc:
                failures.append((receiver, exc))
        return failures

    def _send_each_sync(
        self, sender: Any, kwargs: dict[str, Any], raising: bool = False
    ) -> Failures | None:
        """:meth:`_send_each` with plain calls, if no receiver for ``sender``
        must be awaited (none async, none run in a worker thread); else None,
        having called nothing: then use :meth:`_send_each`. With ``raising``,
        the first exception propagates and later receivers are not called, as
        in :meth:`send`. No results are kept: the middleware sends lifecycle
        signals this way. The receivers are read once, so a receiver
        connected meanwhile cannot make it fail."""
        failures: Failures = []
        handles = self._plain_handles
        if handles is None:
            entries = self._plan_for(sender, kwargs)[0]
            if any(kind != SYNC for _, kind in entries):
                return None
            handles = tuple(handle for handle, _ in entries)
        # Flat, as in send(): the middleware comes here on every request.
        for handle in handles:
            receiver = handle[0]()
            if receiver is not None:
                try:
                    receiver(sender, **kwargs)
                except Exception as exc:
                    if raising:
                        raise
                    failures.append((receiver, exc))
        return failures

    def _send_each_blocking(self, sender: Any, kwargs: dict[str, Any]) -> Failures:
        """:meth:`_send_each` for sync code, whatever the receivers: async ones
        are run as :meth:`send` runs them, or fail as it does."""
        failures: Failures = []
        for entry in self._plan_for(sender, kwargs)[0]:
            receiver = entry[0][0]()
            if receiver is None:
                continue
            try:
                if entry[1] == ASYNC:
                    self._send_to_async((entry,), sender, kwargs, None)
                else:
                    receiver(sender, **kwargs)
            except Exception as exc:
                failures.append((receiver, exc))
        return failures

    def _send_now(
        self, sender: Any, kwargs: dict[str, Any], raising: bool = False
    ) -> tuple[Failures, list[tuple[Handle, int]]]:
        """For sync code on the event loop, which cannot await: call the
        receivers for ``sender`` that need no awaiting, in order, and return
        what those that failed raised, and the entries of the others (async
        receivers, and those run in worker threads), for :meth:`_send_later`.
        With ``raising``, the first failure ends the send, as in
        :meth:`send`: the receivers after it are neither called nor returned
        (the caller raises the failure)."""
        failures: Failures = []
        later: list[tuple[Handle, int]] = []
        for entry in self._plan_for(sender, kwargs)[0]:
            if entry[1] != SYNC:
                later.append(entry)
                continue
            receiver = entry[0][0]()
            if receiver is not None:
                try:
                    receiver(sender, **kwargs)
                except Exception as exc:
                    failures.append((receiver, exc))
                    if raising:
                        break
        return failures, later

    async def _send_later(
        self,
        entries: list[tuple[Handle, int]],
        sender: Any,
        kwargs: dict[str, Any],
        raising: bool = False,
    ) -> Failures:
        """Call the receivers that :meth:`_send_now` left, in order, taking
        each out of ``entries`` as it is called, so that a send cancelled
        midway can be taken up again with the receivers it has not called.
        One disconnected meanwhile is not called. With ``raising``, the first
        exception propagates and later receivers are not called; otherwise
        every receiver runs and those that failed are returned."""
        failures: Failures = []
        while entries:
            handle, kind = entries.pop(0)
            receiver = handle[0]()
            if receiver is None:
                continue
            try:
                await call_receiver(receiver, kind, sender, kwargs, None)
            except Exception as exc:
                if raising:
                    entries.clear()
                    raise
                failures.append((receiver, exc))
        return failures

    def _send_to_async(
        self,
        entries: tuple[tuple[Handle, int], ...],
        sender: Any,
        kwargs: dict[str, Any],
        async_wrapper: AsyncWrapper | None,
    ) -> Results:
        if async_wrapper is None:
            if in_anyio_worker_thread():
                return call_from_worker_thread(entries, sender, kwargs)
            # From the plan as connected: a watcher's handles would show the
            # send as made, though it calls no receiver.
            names = ", ".join(
                callable_name(receiver)
                for handle, kind in self._lookup(sender)[0]
                if kind == ASYNC and (receiver := handle[0]()) is not None
            )
            raise RuntimeError(
                f"{describe(self)} has async receivers ({names}) that send() cannot run "
                "here: only in a thread started by anyio (anyio.to_thread.run_sync, "
                "as a sync Starlette endpoint runs in) can send() reach the event "
                "loop. Use `await signal.send_async(...)` instead, or pass "
                "_async_wrapper= to turn them into sync callables."
            )
        results: Results = []
        for handle, kind in entries:
            receiver = handle[0]()
            if receiver is None:
                continue
            if kind == ASYNC:
                results.append((receiver, through(async_wrapper, receiver)(sender, **kwargs)))
            else:
                results.append((receiver, receiver(sender, **kwargs)))
        return results

    # Bookkeeping. Every change runs under ``_lock`` and ends by rebuilding
    # the plans it affects. Garbage collection can start inside any allocation,
    # so weak reference callbacks and finalizers may call in at any moment, in
    # any thread, even in the thread that holds the lock: changes that cannot
    # run at once are queued, and whoever holds the lock runs the queue before
    # letting go.

    def _change(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the bookkeeping, under the lock."""
        if self._owner == threading.get_ident():
            # Re-entered inside a change: it runs before the lock goes.
            self._pending.append(_Change(operation, detached=True))
            return
        change = _Change(operation, detached=False)
        self._pending.append(change)
        self._lock.acquire()
        self._owner = threading.get_ident()
        self._run_pending()
        # Another thread may have run it, but its error is raised here.
        if change.error is not None:
            raise change.error

    def _on_collected(self, what: str, key: Hashable, ref: weakref.ref[Any]) -> None:
        if sys.is_finalizing():
            return
        if what != "receiver":
            # A sender's key is its id(), which a new object may take before
            # the change below runs (another thread may hold the lock): its
            # plan goes now (one atomic pop), and _rebuild_plans makes none
            # for a dead sender meanwhile.
            plans = self._plans
            if plans is not None and self._sender_refs.get(key) is ref:
                plans.pop(key, None)
        self._pending.append(_Change(partial(self._reap, what, key, ref), detached=True))
        if self._owner != threading.get_ident() and self._lock.acquire(blocking=False):
            self._owner = threading.get_ident()
            self._run_pending()

    def _run_pending(self) -> None:
        """Run the queued changes, then release the lock; take it back if
        another thread queued a change meanwhile and could not run it."""
        interrupt = None
        while True:
            try:
                while self._pending:
                    change = self._pending.popleft()
                    try:
                        change.operation()
                    except Exception as exc:
                        if not change.detached:
                            change.error = exc
                        else:
                            logger.error("a change to %s failed", describe(self), exc_info=exc)
                    except BaseException as exc:
                        # KeyboardInterrupt, SystemExit: this thread's, not
                        # the change's; raised once the queue is done.
                        interrupt = interrupt or exc
            finally:
                self._owner = None
                self._lock.release()
            if not self._pending or not self._lock.acquire(blocking=False):
                break
            self._owner = threading.get_ident()
        if interrupt is not None:
            raise interrupt

    def _reap(self, what: str, key: Hashable, ref: weakref.ref[Any]) -> None:
        if what == "receiver":
            connection = self._connections.get(key)
            # The key is an id() that a new receiver may have taken since.
            if connection is not None and connection.stored is ref:
                self._disconnect(key, ANY)
            retired = self._retired.get(key)
            if retired is not None and retired[1] is ref:
                del self._retired[key]
        elif self._sender_refs.get(key) is ref:
            self._forget_sender(key)

    def _disconnect(self, rkey: Hashable, skey: Hashable, *, every: bool = True) -> None:
        """Disconnect receiver ``rkey`` from ``skey``; with ANY and ``every``,
        from every sender, as :meth:`disconnect` does."""
        connection = self._connections.get(rkey)
        if connection is None:
            return
        if skey is ANY and every:
            senders = set(connection.senders)
        elif skey in connection.senders:
            senders = {skey}
        else:
            return
        for key in senders:
            connection.senders.discard(key)
            bucket = self._by_sender[key]
            bucket.discard(rkey)
            if not bucket:
                del self._by_sender[key]
                self._sender_refs.pop(key, None)
        if not connection.senders:
            self._forget_receiver(rkey)
        self._rebuild(senders)

    def _forget_sender(self, skey: Hashable) -> None:
        del self._sender_refs[skey]
        for rkey in self._by_sender.pop(skey, ()):
            connection = self._connections[rkey]
            connection.senders.discard(skey)
            if not connection.senders:
                self._forget_receiver(rkey)
        self._rebuild((skey,))

    def _forget_receiver(self, rkey: Hashable) -> None:
        connection = self._connections.pop(rkey)
        del self.receivers[rkey]
        stored = connection.stored
        if isinstance(stored, weakref.ref):
            ref = stored
        else:
            try:
                ref = weak_ref(stored, partial(self._on_collected, "receiver", rkey))
            except TypeError:
                ref = None  # cannot tell if it is reconnected: not kept
        if ref is not None and ref() is not None:
            self._retired[rkey] = (connection.handle, ref)
        connection.handle[0] = _GONE  # sends already running skip it

    def _set_recorded(self, recorded: bool) -> None:
        """Mark this signal as recorded by record_signals, or no longer."""

        def change() -> None:
            self._recorded = recorded
            self._rebuild(_EVERYTHING)

        self._change(change)

    def _set_watcher(self, watcher: Watcher | None) -> None:
        """Have ``watcher`` plan every send of this signal, or stop."""

        def change() -> None:
            self._watcher = watcher
            self._rebuild(_EVERYTHING)

        self._change(change)

    def _connected(self) -> list[tuple[Receiver, int, list[Any]]]:
        """Each live receiver, in calling order, with its kind and the
        senders it is connected for (:data:`ANY`, or the sender; one known
        by its id only, collected or not weakly referenceable, as a
        ``_SenderId``)."""
        connected: list[tuple[Receiver, int, list[Any]]] = []

        def read() -> None:
            for connection in sorted(self._connections.values(), key=attrgetter("order")):
                receiver = connection.handle[0]()
                if receiver is not None:
                    senders = [self._sender_of(key) for key in connection.senders]
                    connected.append((receiver, connection.kind, senders))

        self._change(read)
        return connected

    def _sender_of(self, key: Hashable) -> Any:
        if key is ANY or isinstance(key, str):
            return key
        if isinstance(key, tuple) and key[0] is int:
            return key[1]
        ref = self._sender_refs.get(key)
        sender = None if ref is None else ref()
        # Not weakly referenceable (None, tuples, __slots__ objects): only
        # its id is kept.
        return _SenderId(key) if sender is None else sender

    def _rebuild(self, senders: Collection[Hashable]) -> None:
        """Replace the plans of ``senders``; all plans if :data:`ANY` is one."""
        watched = self._watcher is not None
        self._observed = self._recorded or watched or bool(self.receivers)
        self._awaits = any(c.kind != SYNC for c in self._connections.values())
        if self._is_muted:
            self._any_plan, self._plans = _EMPTY_PLAN, None
        else:
            self._rebuild_plans(senders)
        # What the fast paths of send and send_async read: the plan for every
        # sender when no receiver is connected for a specific one, () when
        # there is nothing to call, None to take the general path.
        if watched:
            # Every send must reach the watcher through _plan_for.
            self._async_entries = self._sync_handles = self._plain_handles = None
        elif self._plans is None:
            self._async_entries, self._sync_handles = self._any_plan
            self._plain_handles = None if self._awaits else self._sync_handles
        else:
            self._async_entries = self._sync_handles = self._plain_handles = None

    def _rebuild_plans(self, senders: Collection[Hashable]) -> None:
        any_keys = self._by_sender.get(ANY, set())
        if ANY in senders or self._plans is None:
            self._any_plan = self._plan(any_keys)
            plans = {
                key: self._plan(any_keys | bucket)
                for key, bucket in self._by_sender.items()
                if key is not ANY
            }
            # Listed before the plans are in place, where _on_collected may
            # pop from them.
            rebuilt: Collection[Hashable] = list(plans)
            self._plans = plans or None
        else:
            # Only some senders changed: their plans are replaced in place,
            # each assignment atomic for a concurrent send.
            for key in senders:
                bucket = self._by_sender.get(key)
                if bucket:
                    self._plans[key] = self._plan(any_keys | bucket)
                else:
                    self._plans.pop(key, None)
            rebuilt = senders
        # A sender that died since its plan was made (its own change waits
        # for the lock): no plan, as its id() may be another object's now.
        # Checked after the plans are in place, so that _on_collected, which
        # drops the plan of a sender as it dies, drops it from these.
        current = self._plans
        if current is not None:
            refs = self._sender_refs
            for key in [k for k in rebuilt if (ref := refs.get(k)) is not None and ref() is None]:
                current.pop(key, None)
            if not current:
                self._plans = None

    def _plan(self, keys: set[Hashable]) -> Plan:
        if not keys:
            return _EMPTY_PLAN
        connections = sorted((self._connections[key] for key in keys), key=attrgetter("order"))
        entries = tuple((c.handle, c.kind) for c in connections)
        if any(c.kind == ASYNC for c in connections):
            return entries, None
        return entries, tuple(c.handle for c in connections)


class _SenderId:
    """A sender known by its id only."""

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"<the sender with id {self.key}>"


def _check_timeout(timeout: object) -> None:
    if timeout is not None and not (
        isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
    ):
        raise ValueError(f"_timeout must be a positive number of seconds or None, not {timeout!r}")


def _check_keywords(kwargs: dict[str, Any], method: str) -> None:
    """Reject keywords that cannot be receiver arguments, with a message that
    says what to do; remember the good ones."""
    if "sender" in kwargs:
        raise TypeError(
            f"{method}() takes the sender as its first positional argument, not "
            f"as sender=...: call signal.{method}(sender, **kwargs)"
        )
    for name in kwargs:
        if name.startswith("_"):
            options = _OPTIONS[method]
            other = _OTHER_METHOD[method]
            close = difflib.get_close_matches(name, options + _OPTIONS[other], n=1)
            if name in _OPTIONS[other]:
                hint = f"{name} is an option of {other}(), not of {method}()"
            elif close and close[0] not in options:
                hint = f"did you mean {close[0]}? It is an option of {other}()"
            elif close:
                hint = f"did you mean {close[0]}?"
            else:
                hint = f"the options of {method}() are {', '.join(options)}"
            raise TypeError(
                f"{method}() got an unknown option {name!r} ({hint}); keyword "
                "arguments starting with '_' are reserved for options and are "
                "not passed to receivers"
            )
    if len(_KNOWN_KEYWORDS) < _KNOWN_KEYWORDS_LIMIT:
        _KNOWN_KEYWORDS.update(kwargs)


class NamedSignal(Signal):
    """A signal with a name, usually the key it has in its :class:`Namespace`.

    :param name: The name of the signal.
    :param doc: The docstring for the signal.
    :param concurrent: See :class:`Signal`.
    """

    def __init__(self, name: str, doc: str | None = None, *, concurrent: bool = False) -> None:
        super().__init__(doc, concurrent=concurrent)
        self.name: str = name
        """The name of this signal."""

    def __repr__(self) -> str:
        base = super().__repr__()
        return f"{base[:-1]}; {self.name!r}>"


class Namespace(dict[str, NamedSignal]):
    """A dict of named signals.

    >>> ns = Namespace()
    >>> ns.signal("saved") is ns.signal("saved")
    True
    """

    def signal(
        self, name: str, doc: str | None = None, *, concurrent: bool | None = None
    ) -> NamedSignal:
        """Return the :class:`NamedSignal` called ``name``, creating it if
        needed; the same name always gives the same signal.

        :param name: The name of the signal.
        :param doc: The docstring, used when the signal is created.
        :param concurrent: The signal's default dispatch (see :class:`Signal`);
            ``None`` means sequential for a new signal and no check for an
            existing one.
        """
        try:
            existing = self[name]
        except KeyError:
            return self.setdefault(name, NamedSignal(name, doc, concurrent=bool(concurrent)))
        if concurrent is not None and existing.concurrent != concurrent:
            raise ValueError(
                f"signal {name!r} already exists with concurrent={existing.concurrent}; "
                f"set its .concurrent attribute to change it, or pass "
                "_concurrent= to send_async() for one send"
            )
        return existing


class _NamespaceSignal(Protocol):
    def __call__(
        self, name: str, doc: str | None = None, *, concurrent: bool | None = None
    ) -> NamedSignal: ...


default_namespace: Namespace = Namespace()
"""The :class:`Namespace` that :func:`signal` creates signals in."""

signal: _NamespaceSignal = default_namespace.signal
"""Return the :class:`NamedSignal` called ``name`` in
:data:`default_namespace`, creating it if needed."""

"""The signal: blinker's API, with ordered, async-native dispatch."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager, suppress
from functools import partial
from itertools import repeat
from typing import Any, Protocol, TypeVar

from . import observers
from ._bookkeeping import Bookkeeping
from ._delivery import (
    CONCURRENT,
    RAISE_NOW,
    SEQUENTIAL,
    Policy,
    awaiting,
    call_awaited,
    call_nobody,
    call_now,
)
from ._exceptions import ArgumentError, BackgroundError, InvalidValueError
from ._options import (
    check_concurrent,
    check_timeout,
    check_wrapper,
    known,
    take,
)
from ._types import ANY, ASYNC, SYNC, THREAD, Receiver, Results
from ._utilities import (
    IDENTITY_TYPES,
    callable_name,
    describe,
    is_async_callable,
    is_async_generator_callable,
    receiver_key,
    sender_key,
    weak_ref,
)
from .observers import Mode

F = TypeVar("F", bound=Callable[..., Any])

#: What runs :meth:`Signal.send_background`: set by asignals' contexts when
#: they are first imported. Before that no app context can exist, so no
#: lifespan could run the send.
background_sender: Callable[[Signal, Any, dict[str, Any]], None] | None = None


class Signal(Bookkeeping):
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
        if not isinstance(concurrent, bool):
            raise ArgumentError(f"concurrent takes True or False, not {concurrent!r}")
        self.concurrent = concurrent
        """Whether :meth:`send_async` dispatches concurrently by default."""
        super().__init__()
        # The meta-signals, made on first use. (Not cached_property: touching
        # an instance's __dict__ makes every attribute load on it slower in
        # CPython 3.11, and send() loads attributes.)
        self._receiver_connected: Signal | None = None
        self._receiver_disconnected: Signal | None = None
        observers._register(self)

    receivers: dict[Any, Any]
    """The connected receivers, keyed by identity, each a weak reference or the
    receiver. Only its truth value is public: it is true while any receiver is
    connected."""

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
        self._mute(setting=bool(value))

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
            ``receiver(sender, **kwargs)``. Not an async generator function,
            whose body no send would run (an :class:`ArgumentError`).
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
            raise ArgumentError(
                f"cannot connect {receiver!r} to {describe(self)}: a receiver must be "
                "callable as receiver(sender, **kwargs)"
            )
        if is_async_generator_callable(receiver):
            raise ArgumentError(
                f"cannot connect {callable_name(receiver)} to {describe(self)}: it is an "
                "async generator function, whose body would never run (a send calls "
                "receivers, it does not iterate them); make it an `async def` that "
                "does not yield"
            )
        is_async = is_async_callable(receiver)
        if to_thread and is_async:
            raise ArgumentError(
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
                raise ArgumentError(
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
            added = self._add(rkey, skey, stored, get, kind, weak, sender_ref)

        self._change(add)
        meta = self._receiver_connected
        if meta is not None and meta.receivers:
            try:
                call_now(
                    meta, self, {"receiver": receiver, "sender": sender, "weak": weak}, RAISE_NOW
                )
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
        self._mute(blocks=+1)
        try:
            yield None
        finally:
            self._mute(blocks=-1)

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
            call_now(meta, self, {"receiver": receiver, "sender": sender}, RAISE_NOW)

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
        :class:`NeedsAwaitError` (a ``RuntimeError``): use ``await
        signal.send_async(...)``.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param kwargs: Passed to each receiver, as blinker passes them, names
            starting with ``_`` included, except this method's option
            ``_async_wrapper``. An option of another method (``_timeout``), a
            near-miss of one (``_asycn_wrapper``) or ``sender=`` is an
            :class:`ArgumentError` (a ``TypeError``) whenever there is a
            receiver to call (a send with none, or a muted one, returns ``[]``
            at once).
        """
        handles = self._sync_handles
        if handles is None:
            # Receivers for specific senders: their plans are looked up here,
            # so that they take this path too.
            plans = self._sender_plans
            if plans is None:
                return self._send(sender, kwargs)
            key = id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)
            handles = plans.get(key, self._any_plan)[1]
            if handles is None:
                return self._send(sender, kwargs)
        if not handles:
            return []
        if kwargs and not known(kwargs):
            return self._send(sender, kwargs)
        # Flat on purpose: for the common case (all receivers sync, nobody
        # observing) this loop is the whole cost of a send.
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

        The options, keyword arguments that receivers do not get:

        - ``_concurrent``: dispatch concurrently (``True``) or sequentially
          (``False``); ``None`` (the default) means the signal's
          ``concurrent`` setting.
        - ``_timeout``: seconds the whole send may take. Receivers still
          running then are cancelled and :class:`SendTimeoutError` (a
          ``TimeoutError``) is raised, naming them. Only receivers that await
          can be cancelled: a sync receiver runs to its end and a worker
          thread is waited for, so a send whose receivers all finished
          returns their results.
        - ``_sync_wrapper``: called with each sync receiver (not those
          connected with ``to_thread=True``); must return an async callable
          to await instead.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param kwargs: Passed to each receiver, as for :meth:`send`, except
            the options above.
        """
        entries = self._async_entries
        if entries is None:
            plans = self._sender_plans
            if plans is None:
                return await self._send_async(sender, kwargs)
            key = id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)
            entries = plans.get(key, self._any_plan)[0]
        if not entries:
            return []
        if self.concurrent or (kwargs and not known(kwargs)):
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
                    (receiver, await awaiting().call_receiver(receiver, kind, sender, kwargs, None))
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

        It takes the options ``_concurrent`` and ``_timeout``, as
        :meth:`send_async` does; a ``_timeout`` that runs out cancels the
        receivers still running and reports a :class:`SendTimeoutError`
        naming them as a failure.

        :param sender: The sender, positional only. Defaults to ``None``.
        :param kwargs: Passed to each receiver; checked as :meth:`send_async`
            checks them, before this returns.
        :raises BackgroundError: (a ``RuntimeError``) if no lifespan of an app
            with asignals' middleware is running here (no app context; a
            server without lifespan support; a ``TestClient`` used without
            ``with``), or it has shut down. The work is never dropped
            silently.
        :raises BackgroundLimitError: if the app already runs its
            middleware's ``background_limit`` of background sends.
        """
        send = background_sender
        if send is None:
            raise BackgroundError(no_lifespan(self, "outside of an application context"))
        send(self, sender, kwargs)

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

    # The general paths of send and send_async: options, new keyword names,
    # async receivers, observers.

    def _send(self, sender: Any, kwargs: dict[str, Any]) -> Results:
        policy = RAISE_NOW
        if kwargs and not known(kwargs):
            if not self._lookup(sender)[0]:
                call_nobody(self, sender, kwargs, "sync")
                return []
            options = take(kwargs, "send")
            if options:
                wrapper = check_wrapper(options["_async_wrapper"], "_async_wrapper")
                policy = Policy("sync", wrapper=wrapper)
        return call_now(self, sender, kwargs, policy)  # type: ignore[no-any-return]

    async def _send_async(self, sender: Any, kwargs: dict[str, Any]) -> Results:
        concurrent = self.concurrent
        timeout = wrapper = None
        if kwargs and not known(kwargs):
            if not self._lookup(sender)[0]:
                call_nobody(self, sender, kwargs, "sequential")
                return []
            options = take(kwargs, "send_async")
            if options:
                wrapper = check_wrapper(options.get("_sync_wrapper"), "_sync_wrapper")
                chosen = check_concurrent(options.get("_concurrent"))
                if chosen is not None:
                    concurrent = chosen
                timeout = check_timeout(options.get("_timeout"))
        if timeout is not None or wrapper is not None:
            mode: Mode = "concurrent" if concurrent else "sequential"
            policy = Policy(mode, concurrent=concurrent, timeout=timeout, wrapper=wrapper)
        else:
            policy = CONCURRENT if concurrent else SEQUENTIAL
        return await call_awaited(self, sender, kwargs, policy)  # type: ignore[no-any-return]


def no_lifespan(signal: Signal, where: str) -> str:
    """Why ``send_background`` of ``signal`` cannot run ``where`` it was
    called, and what to do."""
    return (
        f"send_background() of {describe(signal)} was called {where}: background "
        "receivers run on a task group that the app's lifespan owns, and no lifespan "
        "of an app with asignals' middleware is running here. Call it while such an "
        "app serves (its requests, websockets, receivers, lifespan); run the app "
        "under a server with lifespan support (uvicorn's default); in tests, run the "
        "lifespan (`with TestClient(app) as client:`; httpx's ASGITransport runs "
        "none: wrap the app in asgi-lifespan's LifespanManager); and install asignals "
        "on the app that gets the lifespan (a mounted app gets none). Or send inline "
        "with `await signal.send_async(...)`."
    )


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
        if concurrent is not None and not isinstance(concurrent, bool):
            raise ArgumentError(
                f"concurrent takes True, False or None (sequential for a new signal, "
                f"and no check for an existing one), not {concurrent!r}"
            )
        try:
            existing = self[name]
        except KeyError:
            return self.setdefault(name, NamedSignal(name, doc, concurrent=bool(concurrent)))
        if concurrent is not None and existing.concurrent != concurrent:
            raise InvalidValueError(
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

"""A signal's connections: who is connected for which sender, held weakly or
not, and the plans that sends follow, rebuilt after every change.

Every change runs under the signal's lock and ends by rebuilding the plans it
affects. Garbage collection can start inside any allocation, so weak
reference callbacks may call in at any moment, in any thread, even in the
thread that holds the lock: changes that cannot run at once are queued, and
whoever holds the lock runs the queue before letting go. Sends never take the
lock: they read plans, which are immutable and replaced whole.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Collection, Hashable
from functools import partial
from itertools import count, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ._types import ANY, ASYNC, SYNC, THREAD, Entry, Handle, Plan
from ._utilities import describe, lookup_key, weak_ref
from .observers import _observer_set, _ObserverSet

if TYPE_CHECKING:
    from .observers import Observer

logger = logging.getLogger("asignals")

EMPTY_PLAN: Plan = ((), (), ())

# Set to a value never used before each time the plans of a signal whose
# ``_counted`` is set change (the lifecycle signals): the middleware works
# out once what the requests of an app need, and again when this changes.
_versions = count(1)
changes = 0
GONE: Callable[[], None] = repeat(None).__next__
EVERYTHING: Collection[Hashable] = (ANY,)


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
        self.handle: Handle = [GONE]
        self.kind = SYNC


class SenderId:
    """A sender known by its id only: collected, or not weakly referenceable."""

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"<the sender with id {self.key}>"


class Bookkeeping:
    """The connection tables of a signal and the plans built from them: the
    base of :class:`~asignals.Signal`, which reads the plans on every send.

    What sends read (each replaced whole, never changed in place):

    - ``_sync_handles``: the handles to call for any sender, when every
      receiver is sync, none is connected for a specific sender and nobody
      observes the signal; ``()`` when there is nothing to call; else None.
    - ``_async_entries``: the same as ``(handle, kind)`` entries, whatever
      the kinds.
    - ``_plain_handles``: ``_sync_handles`` when no receiver runs in a worker
      thread either (the middleware calls them), else None.
    - ``_sender_plans``: with receivers for specific senders and nobody
      observing, the plans by sender key, for the fast paths; else None.
    - ``_plans`` and ``_any_plan``: the plans by sender key and the plan for
      any other sender, for every other path.
    - ``_observers``: the observers (see :mod:`asignals.observers`), or None.

    And what the web modules read to skip a signal at the cost of one
    attribute load: ``_observed`` (anything would see a send: a receiver or
    an observer) and ``_awaits`` (some receiver must be awaited).
    """

    receivers: dict[Hashable, Any]
    #: Whether a change of plans sets a new :data:`changes`.
    _counted = False

    def __init__(self) -> None:
        self.receivers = {}
        self._observed = self._awaits = False
        self._observers: _ObserverSet | None = None
        self._any_plan: Plan = EMPTY_PLAN
        self._plans: dict[Hashable, Plan] | None = None
        self._sender_plans: dict[Hashable, Plan] | None = None
        self._async_entries: tuple[Entry, ...] | None = ()
        self._sync_handles: tuple[Handle, ...] | None = ()
        # _sync_handles when no receiver runs in a worker thread either.
        self._plain_handles: tuple[Handle, ...] | None = ()
        self._connections: dict[Hashable, _Connection] = {}
        self._by_sender: dict[Hashable, set[Hashable]] = {}
        self._sender_refs: dict[Hashable, weakref.ref[Any]] = {}
        # Handles of receivers disconnected from every sender, kept while the
        # receiver lives, so that reconnecting it during a send that already
        # started puts it back in that send: {receiver key: (handle, ref)}.
        self._retired: dict[Hashable, tuple[Handle, weakref.ref[Any]]] = {}
        # Muted while is_muted is set or a muted() block is open.
        self._is_muted = self._mute_set = False
        self._mute_blocks = 0
        self._order = count()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread holding _lock
        self._pending: deque[_Change] = deque()

    # Changes.

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

    def _on_collected(self, what: str, key: Hashable, ref: weakref.ref[Any]) -> None:
        if sys.is_finalizing():
            return
        # A sender's key is its id(), which a new object may take before the
        # change below runs (another thread may hold the lock): its plan goes
        # now (one atomic pop each), and _rebuild_plans makes none for a dead
        # sender meanwhile.
        if what != "receiver" and self._sender_refs.get(key) is ref:
            for plans in (self._plans, self._sender_plans):
                if plans is not None:
                    plans.pop(key, None)
        self._pending.append(_Change(partial(self._reap, what, key, ref), detached=True))
        if self._owner != threading.get_ident() and self._lock.acquire(blocking=False):
            self._owner = threading.get_ident()
            self._run_pending()

    def _add(
        self,
        rkey: Hashable,
        skey: Hashable,
        stored: Any,
        get: Callable[[], Any],
        kind: int,
        weak: bool,
        sender_ref: weakref.ref[Any] | None,
    ) -> bool:
        """Connect receiver ``rkey`` for sender ``skey``; return whether that
        is a new connection."""
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
            changed = connection.kind != kind or weak != isinstance(connection.stored, weakref.ref)
        if connection.stored is None or changed:
            connection.stored, connection.kind = stored, kind
            connection.handle[0] = get
            self.receivers[rkey] = stored
        added = skey not in connection.senders
        connection.senders.add(skey)
        self._by_sender.setdefault(skey, set()).add(rkey)
        if sender_ref is not None and skey not in self._sender_refs:
            self._sender_refs[skey] = sender_ref
        self._rebuild(EVERYTHING if changed else (skey,))
        return added

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
        from every sender, as :meth:`Signal.disconnect` does."""
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
        connection.handle[0] = GONE  # sends already running skip it

    def _mute(self, setting: bool | None = None, blocks: int = 0) -> None:
        """Set ``is_muted`` to ``setting``, or enter (+1) or leave (-1) a
        ``muted()`` block."""

        def mute() -> None:
            if setting is not None:
                self._mute_set = setting
            self._mute_blocks += blocks
            self._is_muted = self._mute_set or self._mute_blocks > 0
            self._rebuild(EVERYTHING)

        self._change(mute)

    def _add_observers(self, observers: tuple[Observer, ...]) -> None:
        def change() -> None:
            self._observers = _observer_set((*(self._observers or ()), *observers))
            self._rebuild(EVERYTHING)

        self._change(change)

    def _remove_observer(self, observer: Observer) -> None:
        """Remove ``observer`` once (it may observe a signal several times)."""

        def change() -> None:
            current = list(self._observers or ())
            for index, existing in enumerate(current):
                if existing is observer:
                    del current[index]
                    break
            self._observers = _observer_set(current)
            self._rebuild(EVERYTHING)

        self._change(change)

    # Reading.

    def _connected(self) -> list[tuple[Any, int, list[Any]]]:
        """Each live receiver, in calling order, with its kind and the
        senders it is connected for (:data:`ANY`, or the sender; one known
        by its id only as a :class:`SenderId`)."""
        connected: list[tuple[Any, int, list[Any]]] = []

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
        return SenderId(key) if sender is None else sender

    def _lookup(self, sender: Any) -> Plan:
        """The plan for ``sender``: the receivers connected for it."""
        plans = self._plans
        if plans is None:
            return self._any_plan
        return plans.get(lookup_key(sender), self._any_plan)

    def _unmuted(self, sender: Any) -> tuple[Entry, ...]:
        """The entries of the plan for ``sender`` had the signal not been
        muted (a muted signal's plans are empty)."""
        entries: list[tuple[Entry, ...]] = []

        def read() -> None:
            keys = self._by_sender.get(ANY, set())
            if sender is not ANY:
                keys = keys | self._by_sender.get(lookup_key(sender), set())
            entries.append(self._plan(keys)[0])

        self._change(read)
        return entries[0] if entries else ()

    # Plans.

    def _rebuild(self, senders: Collection[Hashable]) -> None:
        """Replace the plans of ``senders``; all plans if :data:`ANY` is one."""
        observed = self._observers is not None
        self._observed = observed or bool(self.receivers)
        self._awaits = any(c.kind != SYNC for c in self._connections.values())
        if self._is_muted:
            self._any_plan, self._plans = EMPTY_PLAN, None
        else:
            self._rebuild_plans(senders)
        # What the fast paths read (see the class docstring).
        if observed:
            # Every send must reach the observers through the general path.
            self._async_entries = self._sync_handles = self._plain_handles = None
            self._sender_plans = None
        elif self._plans is None:
            self._async_entries, self._sync_handles, self._plain_handles = self._any_plan
            self._sender_plans = None
        else:
            self._async_entries = self._sync_handles = self._plain_handles = None
            self._sender_plans = self._plans
        if self._counted:
            global changes
            changes = next(_versions)

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
            return EMPTY_PLAN
        connections = sorted((self._connections[key] for key in keys), key=attrgetter("order"))
        entries = tuple((c.handle, c.kind) for c in connections)
        if any(c.kind == ASYNC for c in connections):
            return entries, None, None
        handles = tuple(c.handle for c in connections)
        if any(c.kind == THREAD for c in connections):
            return entries, handles, None
        return entries, handles, handles

"""Small private helpers of the signal core: symbols, identity keys, receiver
inspection and event-loop detection."""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Callable, Hashable
from types import MethodType
from typing import Any, ClassVar

from anyio._core._eventloop import threadlocals as _anyio_threadlocals

try:
    import sniffio
except ImportError:  # pragma: no cover - trio depends on sniffio, asyncio does not
    sniffio = None  # type: ignore[assignment]


class Symbol:
    """A named constant. There is one instance per name, which survives
    pickling.

    >>> Symbol("ANY") is Symbol("ANY")
    True
    """

    _instances: ClassVar[dict[str, Symbol]] = {}

    def __new__(cls, name: str) -> Symbol:
        try:
            return cls._instances[name]
        except KeyError:
            instance = super().__new__(cls)
            instance.name = name
            return cls._instances.setdefault(name, instance)

    name: str

    def __repr__(self) -> str:
        return self.name

    def __getnewargs__(self) -> tuple[str]:
        return (self.name,)


ANY = Symbol("ANY")
"""The "any sender" symbol: a receiver connected for ``ANY`` is called
whatever the sender."""


def sender_key(sender: Any) -> Hashable:
    """Return the key a sender is matched by.

    Senders match by identity, except ``str`` and ``int`` senders, which match
    by value. Bound methods are created anew on every attribute access, so they
    match by their function and instance. Integers are tagged so that an int
    sender can never collide with the ``id()`` of another object.
    """
    if isinstance(sender, str):
        return sender
    if isinstance(sender, int):
        return (int, sender)
    if isinstance(sender, MethodType):
        return (id(sender.__func__), id(sender.__self__))
    if len(IDENTITY_TYPES) < _IDENTITY_TYPES_LIMIT:
        IDENTITY_TYPES.add(type(sender))
    return id(sender)


# Types whose instances match by identity, learnt from the senders seen, so
# that a send can take ``id(sender)`` without calling sender_key. Bounded, as
# classes can be made at run time.
IDENTITY_TYPES: set[type] = set()
_IDENTITY_TYPES_LIMIT = 1024


def receiver_key(receiver: Callable[..., Any]) -> Hashable:
    """Return the key a receiver is known by: a bound method is known by its
    function and instance, anything else by its identity."""
    if isinstance(receiver, MethodType):
        return (id(receiver.__func__), id(receiver.__self__))
    return id(receiver)


def weak_ref(obj: Any, callback: Callable[[weakref.ref[Any]], None]) -> weakref.ref[Any]:
    """A weak reference to ``obj`` that also works for bound methods, which
    would otherwise die as soon as the temporary method object does."""
    if isinstance(obj, MethodType):
        return weakref.WeakMethod(obj, callback)
    return weakref.ref(obj, callback)


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns a coroutine: ``async def`` functions and
    methods, partials of them, and objects with an ``async def __call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj):
        return False
    return inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004


class StandIn:
    """Called in a receiver's place, to watch it (see asignals.monitor); the
    signal core gives the receiver itself back in results and messages, and
    to ``_sync_wrapper`` and ``_async_wrapper``."""

    __slots__ = ("receiver",)

    receiver: Callable[..., Any]

    def through(self, wrapper: Callable[[Any], Callable[..., Any]]) -> Callable[..., Any]:
        """What to call for ``wrapper(receiver)``."""
        return wrapper(self.receiver)


def through(
    wrapper: Callable[[Any], Callable[..., Any]], receiver: Callable[..., Any]
) -> Callable[..., Any]:
    """``wrapper(receiver)`` for blinker's ``_sync_wrapper`` and
    ``_async_wrapper``: a stand-in gives the wrapper its receiver."""
    if isinstance(receiver, StandIn):
        return receiver.through(wrapper)
    return wrapper(receiver)


def callable_name(obj: Any) -> str:
    """A readable name for a receiver, for error and log messages."""
    if isinstance(obj, StandIn):
        obj = obj.receiver
    target = obj
    while isinstance(target, functools.partial):
        target = target.func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:
        qualname = type(target).__qualname__ + " instance"
        module = type(target).__module__
    if isinstance(obj, functools.partial):
        qualname = f"partial({qualname})"
    return f"{module}.{qualname}" if module else qualname


def describe(signal: object) -> str:
    """How messages name a signal: by its name if it has one."""
    name = getattr(signal, "name", None)
    return f"signal {name!r}" if isinstance(name, str) else repr(signal)


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio event loop, or ``None`` when the current task runs on
    another event loop (trio) or none at all."""
    loop = asyncio._get_running_loop()
    if loop is not None and sniffio is not None:
        # trio in guest mode runs inside a host asyncio loop; sniffio knows.
        if sniffio.thread_local.name not in (None, "asyncio"):
            return None
        if sniffio.current_async_library_cvar.get() not in (None, "asyncio"):
            return None
    return loop


def in_anyio_worker_thread() -> bool:
    """Whether this thread was started by ``anyio.to_thread.run_sync`` (as a sync
    Starlette endpoint is), and so can reach its event loop."""
    # anyio keeps the worker's event loop token in a thread-local; its public
    # functions only expose it by raising when it is missing.
    return hasattr(_anyio_threadlocals, "current_token")

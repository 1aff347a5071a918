"""Small private helpers of the signal core: identity keys, receiver
inspection, names for messages, and where the caller runs."""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from collections.abc import Callable, Hashable
from types import MethodType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

# The core imports neither asyncio nor anyio: a blinker user may need
# neither. What the helpers below ask of them is looked up in sys.modules,
# as nothing can run on an event loop that was never imported.


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


def lookup_key(sender: Any) -> Hashable:
    """:func:`sender_key`, the quick way for a sender of a type seen before.
    (The send fast paths inline this.)"""
    return id(sender) if type(sender) in IDENTITY_TYPES else sender_key(sender)


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
    return _calling_is(obj, inspect.iscoroutinefunction)


def is_async_generator_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns an async generator: its body would
    only run if something iterated it, which a send never does."""
    return _calling_is(obj, inspect.isasyncgenfunction)


def _calling_is(obj: Any, test: Callable[[Any], bool]) -> bool:
    """Whether ``test`` holds for the function that calling ``obj`` runs:
    through partials, and an object's ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if test(obj):
        return True
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj):
        return False
    return test(getattr(obj, "__call__", None))  # noqa: B004


def through(
    wrapper: Callable[[Any], Callable[..., Any]], receiver: Callable[..., Any]
) -> Callable[..., Any]:
    """``wrapper(receiver)`` for blinker's ``_sync_wrapper`` and
    ``_async_wrapper``: an observed send's stand-in gives the wrapper the
    receiver it stands for (see asignals.observers)."""
    if hasattr(receiver, "_asignals_receiver"):
        return receiver.through(wrapper)  # type: ignore[attr-defined,no-any-return]
    return wrapper(receiver)


def callable_name(obj: Any) -> str:
    """A readable name for a receiver, for error and log messages."""
    # An observed send's stand-in names the receiver it stands for.
    obj = getattr(obj, "_asignals_receiver", obj)
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
    module = sys.modules.get("asyncio")
    if module is None:
        return None
    loop: asyncio.AbstractEventLoop | None = module._get_running_loop()
    sniffio = sys.modules.get("sniffio")
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
    eventloop = sys.modules.get("anyio._core._eventloop")
    return eventloop is not None and hasattr(eventloop.threadlocals, "current_token")


def on_event_loop() -> bool:
    """Whether this thread runs an event loop that anyio knows."""
    if "sniffio" not in sys.modules and "asyncio" not in sys.modules:
        return False  # no event loop was ever imported
    import anyio.lowlevel

    try:
        anyio.lowlevel.current_token()
    except RuntimeError:
        return False
    return True

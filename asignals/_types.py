"""What the signal core's modules share: the ``ANY`` symbol, the kinds of
receivers, and the shapes of plans, results and failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar


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

#: How a receiver is called: inline, awaited, or in a worker thread.
SYNC = 0
ASYNC = 1
THREAD = 2
#: The names observers see for each kind.
KIND_NAMES = ("sync", "async", "thread")

Receiver = Callable[..., Any]
Wrapper = Callable[[Receiver], Callable[..., Any]]
Results = list[tuple[Receiver, Any]]
Failures = list[tuple[Receiver, Exception]]

# A handle is a connection's one-item list holding a callable that returns the
# receiver: its weak reference, or a C-level callable returning it. The
# callable is swapped for one returning None when the receiver is disconnected
# from every sender, so that sends already running skip it, as in blinker. A
# receiver is fetched from its handle when its turn comes.
Handle = list[Callable[[], Any]]
Entry = tuple[Handle, int]
Entries = Sequence[Entry]

# A plan is what a send needs, precomputed for one sender: ``(handle, kind)``
# entries in connection order; the same handles alone when no receiver is
# async (send() calls them), else None; and again when every receiver is
# plainly sync, none run in a worker thread (the middleware calls them), else
# None. Plans are immutable and replaced as a whole, so a send reads them
# without a lock.
Plan = tuple[tuple[Entry, ...], tuple[Handle, ...] | None, tuple[Handle, ...] | None]

"""Where a tracer (:mod:`asignals.otel`) reaches what observers do not see:
the bridge's messages, and the task a background send runs in.

Both are None-checks until :func:`asignals.otel.instrument` sets
:data:`tracer`; nothing here imports OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._signal import Signal
    from .observers import ObservedSend

#: How a tracer is told that a published send reached Redis (None) or did
#: not (why).
Published = Callable[[BaseException | str | None], None]


class Tracer(Protocol):
    def publishing(
        self, send: ObservedSend, destination: str
    ) -> tuple[dict[str, str], Published] | None:
        """A send is queued for publishing to ``destination``: the trace
        context to carry in its message, and what to call once it is out."""

    def exclusive(
        self, signal: Signal, receiver: str, message: Message
    ) -> AbstractContextManager[Any]:
        """The span of an exclusive receiver running a send from a message,
        current while the receiver runs."""

    def background_running(self, send: ObservedSend) -> None:
        """The task that runs a background send's receivers begins, in its
        own copy of the context: a span made current here stays current there
        until the task ends."""


class Message:
    """A message the bridge took, as a tracer sees it: the trace context it
    carries and the messaging attributes of the span that processes it."""

    __slots__ = ("attributes", "carrier", "signal", "taken")

    def __init__(
        self, signal: Signal, carrier: dict[str, str] | None, attributes: dict[str, Any]
    ) -> None:
        self.signal = signal
        self.carrier = carrier
        self.attributes = attributes
        #: Whether a send's span took it: only the first, the send the
        #: message made (not those its receivers make).
        self.taken = False


#: The most fields of a trace context a message carries, and the longest
#: field (name and value), in characters: a tracer leaves out the others, a
#: bridge ignores a trace context beyond them.
CARRIED_FIELDS = 8
CARRIED_CHARS = 1024

#: The tracer, while asignals is instrumented.
tracer: Tracer | None = None

#: The message whose send the bridge is handing to its receivers, while it
#: starts that background send.
incoming: ContextVar[Message | None] = ContextVar("asignals.incoming", default=None)

#: The sending process's id and the number of the message whose send a
#: bridge is handing to its receivers, while it starts that background send
#: (the monitor links the send to the one that published it).
handing: ContextVar[tuple[str, int] | None] = ContextVar("asignals.handing", default=None)

#: Where a send that a bridge queued for publishing keeps, in its
#: ``ObservedSend.data``, the bridge's id and the message's number.
PUBLISHED = "asignals.bridge.published"

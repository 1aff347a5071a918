"""Helpers for asserting on signals in tests.

>>> from asignals import Signal
>>> from asignals.testing import record_signals
>>> saved = Signal()
>>> with record_signals(saved) as sent:
...     _ = saved.send("doc-1", size=3)
>>> sent
[Sent(signal=<...>, sender='doc-1', kwargs={'size': 3})]
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, NamedTuple

from ._exceptions import ArgumentError, UsageError
from ._signal import Signal
from .observers import ObservedSend, Observer, Observing, observe

__all__ = ["Sent", "SignalRecorder", "record_signals"]


class Sent(NamedTuple):
    """One recorded send: the signal, its sender and its keyword arguments
    (without the ``_`` options)."""

    signal: Signal
    sender: Any
    kwargs: dict[str, Any]


class SignalRecorder(list[Sent]):
    """The sends of some signals, in the order they were made, recorded while
    it is entered (with ``with`` or ``async with``).

    Every call of ``send``, ``send_async`` or ``send_background`` is
    recorded when it is made, even one that calls no receiver, fails, or is
    muted; the receivers and the results of the send are not affected. On
    exit the signals are restored. Recorders may overlap and exit in any
    order.
    """

    def __init__(self, *signals: Signal) -> None:
        super().__init__()
        if not signals:
            raise ArgumentError("record_signals() needs at least one signal to record")
        for signal in signals:
            if not isinstance(signal, Signal):
                raise ArgumentError(f"record_signals() takes signals, not {signal!r}")
        self.signals = tuple(dict.fromkeys(signals))
        self._observing: Observing | None = None
        self._lock = threading.Lock()

    def of(self, signal: Signal) -> list[Sent]:
        """The recorded sends of ``signal``."""
        return [sent for sent in self if sent.signal is signal]

    @property
    def senders(self) -> list[Any]:
        """The sender of each recorded send."""
        return [sent.sender for sent in self]

    def __enter__(self) -> SignalRecorder:
        with self._lock:
            if self._observing is not None:
                raise UsageError("this SignalRecorder is already recording")
            self._observing = observe(_Recorder(self), *self.signals)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._observing is not None:
                self._observing.close()
                self._observing = None

    async def __aenter__(self) -> SignalRecorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _Recorder(Observer):
    """Records each send as it is made (a background send too, before its
    receivers run)."""

    def __init__(self, recorder: SignalRecorder) -> None:
        self.recorder = recorder

    def send_started(self, send: ObservedSend) -> None:
        self.recorder.append(Sent(send.signal, send.sender, dict(send.kwargs)))


def record_signals(*signals: Signal) -> SignalRecorder:
    """Record every send of ``signals`` inside a ``with`` (or ``async with``)
    block, for assertions.

    >>> from asignals import request_started
    >>> with record_signals(request_started) as sent:
    ...     pass  # make a request
    >>> [s.sender for s in sent.of(request_started)]  # doctest: +SKIP
    [app]
    """
    return SignalRecorder(*signals)

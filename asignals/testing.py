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

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple

from ._signal import Signal

__all__ = ["Sent", "SignalRecorder", "record_signals"]

_MISSING: Any = object()


class Sent(NamedTuple):
    """One recorded send: the signal, its sender and its keyword arguments
    (without the ``_`` options)."""

    signal: Signal
    sender: Any
    kwargs: dict[str, Any]


class SignalRecorder(list[Sent]):
    """The sends of some signals, in the order they were made, recorded while
    it is entered (with ``with`` or ``async with``).

    Every call of ``send`` or ``send_async`` is recorded when it is made, even
    one that calls no receiver, fails, or is muted; the receivers and the
    results of the send are not affected. On exit the signals are restored.
    """

    def __init__(self, *signals: Signal) -> None:
        super().__init__()
        if not signals:
            raise TypeError("record_signals() needs at least one signal to record")
        for signal in signals:
            if not isinstance(signal, Signal):
                raise TypeError(f"record_signals() takes signals, not {signal!r}")
        self.signals = signals
        self._saved: list[tuple[Signal, Any, Any]] = []

    def of(self, signal: Signal) -> list[Sent]:
        """The recorded sends of ``signal``."""
        return [sent for sent in self if sent.signal is signal]

    @property
    def senders(self) -> list[Any]:
        """The sender of each recorded send."""
        return [sent.sender for sent in self]

    def __enter__(self) -> SignalRecorder:
        if self._saved:
            raise RuntimeError("this SignalRecorder is already recording")
        for signal in self.signals:
            # Instance attributes shadow the methods: nothing is added to the
            # signal's hot path, and removing them restores it exactly.
            self._saved.append((signal, _override(signal, "send"), _override(signal, "send_async")))
            signal.send = self._recording(signal, signal.send)  # type: ignore[method-assign]
            signal.send_async = self._recording_async(  # type: ignore[method-assign]
                signal, signal.send_async
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._saved:
            signal, send, send_async = self._saved.pop()
            for name, previous in (("send", send), ("send_async", send_async)):
                if previous is _MISSING:
                    delattr(signal, name)
                else:
                    setattr(signal, name, previous)

    async def __aenter__(self) -> SignalRecorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _record(self, signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
        options = [name for name in kwargs if name.startswith("_")]
        if options:
            kwargs = {k: v for k, v in kwargs.items() if k not in options}
        self.append(Sent(signal, sender, kwargs))

    def _recording(self, signal: Signal, send: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(send)
        def recording_send(sender: Any = None, /, **kwargs: Any) -> Any:
            self._record(signal, sender, kwargs)
            return send(sender, **kwargs)

        return recording_send

    def _recording_async(
        self, signal: Signal, send_async: Callable[..., Any]
    ) -> Callable[..., Any]:
        @functools.wraps(send_async)
        async def recording_send_async(sender: Any = None, /, **kwargs: Any) -> Any:
            self._record(signal, sender, kwargs)
            return await send_async(sender, **kwargs)

        return recording_send_async


def _override(signal: Signal, name: str) -> Any:
    """The instance attribute shadowing method ``name`` (an outer recorder's),
    or _MISSING."""
    method = getattr(signal, name)
    if getattr(method, "__func__", None) is getattr(type(signal), name):
        return _MISSING
    return method


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

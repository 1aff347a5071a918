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
import threading
from types import TracebackType
from typing import Any, NamedTuple

from ._dispatch import Handle
from ._signal import Failures, Signal

__all__ = ["Sent", "SignalRecorder", "record_signals"]

_MISSING: Any = object()
_SHADOWED = (
    "send",
    "send_async",
    "send_background",
    "_send_each",
    "_send_each_sync",
    "_send_each_blocking",
    "_send_now",
)


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
            raise TypeError("record_signals() needs at least one signal to record")
        for signal in signals:
            if not isinstance(signal, Signal):
                raise TypeError(f"record_signals() takes signals, not {signal!r}")
        self.signals = tuple(dict.fromkeys(signals))
        self._active = False

    def of(self, signal: Signal) -> list[Sent]:
        """The recorded sends of ``signal``."""
        return [sent for sent in self if sent.signal is signal]

    @property
    def senders(self) -> list[Any]:
        """The sender of each recorded send."""
        return [sent.sender for sent in self]

    def __enter__(self) -> SignalRecorder:
        with _lock:
            if self._active:
                raise RuntimeError("this SignalRecorder is already recording")
            self._active = True
            for signal in self.signals:
                if signal not in _recordings:
                    _recordings[signal] = _Recording(signal)
                _recordings[signal].recorders.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _lock:
            self._active = False
            for signal in self.signals:
                recording = _recordings[signal]
                # By identity: recorders are lists, and equal ones are common.
                recording.recorders = [r for r in recording.recorders if r is not self]
                if not recording.recorders:
                    recording.restore()
                    del _recordings[signal]

    async def __aenter__(self) -> SignalRecorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _Recording:
    """The recording of one signal while recorders are active: its send
    methods are shadowed by instance attributes that record, then call the
    originals. Nothing is added to the signal's own hot path, and removing the
    attributes restores it exactly."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.recorders: list[SignalRecorder] = []
        self.saved = {name: _override(signal, name) for name in _SHADOWED}
        send, send_async, send_background = signal.send, signal.send_async, signal.send_background
        send_each, send_each_sync = signal._send_each, signal._send_each_sync
        send_each_blocking, send_now = signal._send_each_blocking, signal._send_now

        @functools.wraps(send)
        def recording_send(sender: Any = None, /, **kwargs: Any) -> Any:
            self.record(sender, kwargs)
            return send(sender, **kwargs)

        @functools.wraps(send_async)
        async def recording_send_async(sender: Any = None, /, **kwargs: Any) -> Any:
            self.record(sender, kwargs)
            return await send_async(sender, **kwargs)

        @functools.wraps(send_background)
        def recording_send_background(sender: Any = None, /, **kwargs: Any) -> None:
            # Recorded as it is made, not as its receivers run.
            self.record(sender, kwargs)
            send_background(sender, **kwargs)

        # The middleware sends teardown signals through these, to reach every
        # receiver, and skips signals nobody observes.
        async def recording_send_each(sender: Any, kwargs: dict[str, Any]) -> Failures:
            self.record(sender, kwargs)
            return await send_each(sender, kwargs)

        def recording_send_each_sync(
            sender: Any, kwargs: dict[str, Any], raising: bool = False
        ) -> Failures | None:
            # Recorded unless nothing was sent (the caller then uses
            # _send_each, which records).
            failures = send_each_sync(sender, kwargs, raising)
            if failures is not None:
                self.record(sender, kwargs)
            return failures

        signal.send = recording_send  # type: ignore[method-assign]
        signal.send_async = recording_send_async  # type: ignore[method-assign]
        signal.send_background = recording_send_background  # type: ignore[method-assign]
        signal._send_each = recording_send_each  # type: ignore[method-assign]

        def recording_send_each_blocking(sender: Any, kwargs: dict[str, Any]) -> Failures:
            self.record(sender, kwargs)
            return send_each_blocking(sender, kwargs)

        # Sync code on the event loop (flash(), TemplateResponse()) sends
        # through this; the receivers it leaves run later, unrecorded.
        def recording_send_now(
            sender: Any, kwargs: dict[str, Any], raising: bool = False
        ) -> tuple[Failures, list[tuple[Handle, int]]]:
            self.record(sender, kwargs)
            return send_now(sender, kwargs, raising)

        signal._send_each_sync = recording_send_each_sync  # type: ignore[method-assign]
        signal._send_each_blocking = recording_send_each_blocking  # type: ignore[method-assign]
        signal._send_now = recording_send_now  # type: ignore[method-assign]
        signal._set_recorded(True)

    def record(self, sender: Any, kwargs: dict[str, Any]) -> None:
        arguments = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        for recorder in list(self.recorders):
            recorder.append(Sent(self.signal, sender, dict(arguments)))

    def restore(self) -> None:
        self.signal._set_recorded(False)
        for name, previous in self.saved.items():
            if previous is _MISSING:
                delattr(self.signal, name)
            else:
                setattr(self.signal, name, previous)


_lock = threading.Lock()
_recordings: dict[Signal, _Recording] = {}


def _override(signal: Signal, name: str) -> Any:
    """The instance attribute that shadows method ``name``, or _MISSING."""
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

"""The instrumentation itself: an observer of every send that makes the
spans and records the metrics, and the tracer the bridge and background
sends call (asignals._tracing). Imported by instrument() only."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from weakref import WeakSet

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from .. import _tracing
from .._exceptions import SendTimeoutError
from .._signal import Signal
from .._summary import argument
from ..observers import ObservedSend, Observer, Observing, ReceiverCall, _is_cancellation, observe

logger = logging.getLogger("asignals")

# The longest str sender put on a span as it is.
_SENDER_CHARS = 256

# Whether a trace context that could not be read was logged.
_unreadable = False

# The W3C trace context's fields, carried first.
_W3C = ("traceparent", "tracestate")

# The instrumentation in place, which the bridge's metric callbacks read.
_current: Instrumentation | None = None


def _version() -> str:
    try:
        return version("asignals")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "0"


def signal_name(signal: Signal) -> str:
    name = getattr(signal, "name", None)
    return name if isinstance(name, str) else "anonymous"


def sender_attribute(sender: Any) -> str | int | float | bool | None:
    """The sender as an attribute: its value if it is a str or a number,
    else its type's name (a class: its own name); None for None."""
    kind = type(sender)
    if kind is str:
        text: str = sender
        return text if len(text) <= _SENDER_CHARS else text[: _SENDER_CHARS - 3] + "..."
    if kind is int:
        # Beyond 64 bits, exporters cannot carry it as an int.
        number: int = sender
        return number if -(2**63) <= number < 2**63 else str(number)
    if kind is float or kind is bool:
        value: float | bool = sender
        return value
    if sender is None:
        return None
    if isinstance(sender, type):
        return sender.__qualname__
    return kind.__qualname__


# The names of the signal monitor's own signals, which are never traced.
_MONITOR = "asignals.monitor."


class _Send:
    """What the instrumentation keeps for one send it traces."""

    __slots__ = ("calls", "in_flight", "name", "span")

    def __init__(self, name: str) -> None:
        self.name = name
        self.span: Span | None = None
        # Each running receiver's span and the token that made it current.
        self.calls: dict[int, tuple[Span, object]] = {}
        self.in_flight = False


class Instrumentation(Observer):
    """See :func:`asignals.otel.instrument`."""

    def __init__(
        self,
        tracer_provider: Any,
        meter_provider: Any,
        signals: list[Signal | str] | None,
        exclude: list[Signal | str],
        record_arguments: bool,
    ) -> None:
        release = _version()
        self.tracer = trace.get_tracer("asignals", release, tracer_provider=tracer_provider)
        self.meter = metrics.get_meter("asignals", release, meter_provider=meter_provider)
        self.record_arguments = record_arguments
        # The signals to trace, given as signals and by name; None: all.
        self.chosen: frozenset[Signal] | None = None
        self.names: frozenset[str] = frozenset()
        if signals is not None:
            self.chosen = frozenset(s for s in signals if isinstance(s, Signal))
            self.names = frozenset(s for s in signals if isinstance(s, str))
        self.excluded = frozenset(s for s in exclude if isinstance(s, Signal))
        self.excluded_names = frozenset(s for s in exclude if isinstance(s, str))
        self.observing: list[Observing] = []
        self.duration = self.meter.create_histogram(
            "asignals.receiver.duration",
            unit="s",
            description="How long each receiver took, by signal and receiver.",
        )
        self.tallies = _TALLIES
        if self.meter not in _measured:
            _measured.add(self.meter)
            _observe(self.meter)

    # Setting up.

    def start(self) -> None:
        global _current
        if self.chosen is not None and not self.names:
            # Only those: the others keep their unobserved path.
            self.observing.append(observe(self, *self.chosen))
        else:
            self.observing.append(observe(self))
        _current = self
        _tracing.tracer = self

    def stop(self) -> None:
        global _current
        for observing in self.observing:
            observing.close()
        self.observing.clear()
        if _tracing.tracer is self:
            _tracing.tracer = None
        if _current is self:
            _current = None

    def traces(self, signal: Signal) -> bool:
        """Whether sends of ``signal`` are traced: chosen (or all are), and
        not excluded."""
        if signal in self.excluded:
            return False
        name = getattr(signal, "name", None)
        if isinstance(name, str) and name.startswith(_MONITOR):
            return False  # the signal monitor's own, between workers
        if not self.excluded_names and self.chosen is None:
            return True
        if name in self.excluded_names:
            return False
        return self.chosen is None or signal in self.chosen or name in self.names

    # The observer.

    def send_started(self, send: ObservedSend) -> None:
        signal = send.signal
        if not self.traces(signal):
            return
        name = signal_name(signal)
        mode = send.mode
        tallies = self.tallies
        tallies.add(tallies.sends, (("asignals.signal", name), ("asignals.mode", mode)), 1)
        if mode != "background" and not send.calls:
            return  # nothing to see
        state = send.data[self] = _Send(name)
        if mode == "background":
            state.in_flight = True
            self.tallies.add(self.tallies.in_flight, (("asignals.signal", name),), 1)
        if not send.calls:
            return
        attributes: dict[str, Any] = {
            "asignals.signal": name,
            "asignals.mode": mode,
            "asignals.receivers": len(send.calls),
        }
        sender = sender_attribute(send.sender)
        if sender is not None:
            attributes["asignals.sender"] = sender
        if self.record_arguments:
            for key, value in send.kwargs.items():
                attributes[f"asignals.argument.{key}"] = argument(key, value)
        if mode != "background":
            # A child of what is current: the request's span, the receiver
            # that sends.
            state.span = self.tracer.start_span(f"send {name}", attributes=attributes)
            return
        kind = SpanKind.INTERNAL
        message = _tracing.incoming.get()
        if message is not None and message.signal is signal and not message.taken:
            # A send from another process, through the bridge: linked to the
            # span that published it there.
            message.taken = True
            kind = SpanKind.CONSUMER
            attributes.update(message.attributes)
            links = _links(message.carrier)
        else:
            # Its own trace, linked to the span that made it.
            made = trace.get_current_span().get_span_context()
            links = [Link(made)] if made.is_valid else []
        state.span = self.tracer.start_span(
            f"send {name}",
            context=otel_context.Context(),
            kind=kind,
            attributes=attributes,
            links=links,
        )

    def receiver_started(self, send: ObservedSend, call: ReceiverCall) -> None:
        state = send.data.get(self)
        if state is None or state.span is None:
            return
        span = self.tracer.start_span(
            call.name,
            context=trace.set_span_in_context(state.span),
            attributes={"code.function": call.name, "asignals.receiver.kind": call.kind},
        )
        # Current while the receiver runs (this is its task, or thread):
        # what it does and sends is traced under it.
        token = otel_context.attach(trace.set_span_in_context(span))
        state.calls[call.index] = (span, token)

    def receiver_finished(self, send: ObservedSend, call: ReceiverCall) -> None:
        state = send.data.get(self)
        if state is None:
            return
        attributes = {
            "asignals.signal": state.name,
            "code.function": call.name,
            "asignals.receiver.kind": call.kind,
        }
        error = call.error
        if call.status == "failed" and error is not None:
            attributes["error.type"] = type(error).__qualname__
            self.tallies.add(self.tallies.errors, tuple(attributes.items()), 1)
        if call.duration is not None:
            self.duration.record(call.duration, attributes)
        running = state.calls.pop(call.index, None)
        if running is None:
            return
        span, token = running
        otel_context.detach(token)
        if call.status == "cancelled":
            span.add_event("cancelled")
        elif error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
        span.end()

    def send_finished(self, send: ObservedSend) -> None:
        state = send.data.get(self)
        if state is None:
            return
        if state.in_flight:
            self.tallies.add(self.tallies.in_flight, (("asignals.signal", state.name),), -1)
        span = state.span
        if span is None:
            return
        error = send.error
        if error is not None:
            _record(span, error, send.calls)
        else:
            # Sends that go on past a receiver's failure (background sends,
            # the middleware's with receiver_errors="log", teardown).
            failed = sum(call.status == "failed" for call in send.calls)
            if failed:
                span.set_status(
                    Status(StatusCode.ERROR, f"{failed} of {len(send.calls)} receivers raised")
                )
        span.end()

    # What the bridge and background sends call (asignals._tracing).

    def publishing(
        self, send: ObservedSend, destination: str
    ) -> tuple[dict[str, str], _tracing.Published] | None:
        if not self.traces(send.signal):
            return None
        state = send.data.get(self)
        parent = None if state is None or state.span is None else state.span
        # (What a propagator raises is the bridge's to log: it then
        # publishes the send untraced.)
        name = signal_name(send.signal)
        span = self.tracer.start_span(
            f"publish {name}",
            context=None if parent is None else trace.set_span_in_context(parent),
            kind=SpanKind.PRODUCER,
            attributes={
                "asignals.signal": name,
                "messaging.system": "redis",
                "messaging.destination.name": destination,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
            },
        )
        try:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            # Within what a bridge takes (asignals._tracing), the W3C fields
            # first.
            fields = sorted(carrier.items(), key=lambda item: item[0] not in _W3C)
            carried = dict(
                [
                    (k, v)
                    for k, v in fields
                    if type(k) is str
                    and type(v) is str
                    and len(k) + len(v) <= _tracing.CARRIED_CHARS
                ][: _tracing.CARRIED_FIELDS]
            )
            if len(carried) < len(carrier):
                span.add_event(
                    "trace context fields left out",
                    {"asignals.left_out": sorted(str(k) for k in set(carrier) - set(carried))},
                )
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, "the propagator failed"))
            span.end()
            raise

        def published(outcome: BaseException | str | None) -> None:
            try:
                if isinstance(outcome, BaseException):
                    span.record_exception(outcome)
                    span.set_status(
                        Status(StatusCode.ERROR, f"{type(outcome).__qualname__}: {outcome}")
                    )
                elif outcome is not None:
                    span.set_status(Status(StatusCode.ERROR, f"not published: {outcome}"))
                span.end()
            except Exception:
                logger.exception("Tracing the publishing of a send failed")

        return carried, published

    @contextmanager
    def exclusive(self, signal: Signal, receiver: str, message: _tracing.Message) -> Iterator[None]:
        if not self.traces(signal):
            yield
            return
        name = signal_name(signal)
        span = self.tracer.start_span(
            f"process {name}",
            context=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "asignals.signal": name,
                "code.function": receiver,
                **message.attributes,
            },
            links=_links(message.carrier),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        except BaseException as exc:
            _record(span, exc, ())
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def background_running(self, send: ObservedSend) -> None:
        state = send.data.get(self)
        if state is not None and state.span is not None:
            # Never detached: the task ends with the send.
            otel_context.attach(trace.set_span_in_context(state.span))


def _record(span: Span, error: BaseException, calls: Iterable[ReceiverCall]) -> None:
    """Put on ``span`` what ended it: a cancellation or a timeout is an
    event; an exception that no receiver's span shows is recorded."""
    if _is_cancellation(error):
        span.add_event("cancelled")
        return
    if isinstance(error, SendTimeoutError):
        span.add_event("timeout", {"exception.message": str(error)})
    elif not isinstance(error, BaseExceptionGroup) and not any(
        call.error is error for call in calls
    ):
        # (A group holds what the receivers' spans recorded.)
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))


def _links(carrier: dict[str, str] | None) -> list[Link]:
    """A link to the span whose context ``carrier`` holds, if it holds one
    (a propagator that fails on it is logged: no link)."""
    if not carrier:
        return []
    global _unreadable
    try:
        made = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    except Exception:
        if not _unreadable:
            _unreadable = True
            logger.exception(
                "The trace context of a message from another process could not be read: "
                "its span has no link, as have the next ones (said once)"
            )
        return []
    return [Link(made)] if made.is_valid else []


class _Tallies:
    """The counters, counted here and read by observable instruments as a
    meter collects: a send costs a dict update, not a measurement through
    the SDK. One for the process, whatever the meters: the counts only grow,
    and every meter that asignals was instrumented with reads them (the SDK
    makes an instrument once per name and meter, and a meter got before the
    global provider was set stands for the one set later)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # By attributes, as (name, value) pairs.
        self.sends: dict[tuple[tuple[str, Any], ...], int] = {}
        self.errors: dict[tuple[tuple[str, Any], ...], int] = {}
        self.in_flight: dict[tuple[tuple[str, Any], ...], int] = {}

    def add(self, counts: dict[tuple[tuple[str, Any], ...], int], key: Any, n: int) -> None:
        with self.lock:
            counts[key] = counts.get(key, 0) + n

    def read(
        self, counts: dict[tuple[tuple[str, Any], ...], int], options: CallbackOptions
    ) -> Iterable[Observation]:
        """The counts, while asignals is instrumented."""
        if _current is None:
            return []
        with self.lock:
            taken = list(counts.items())
        return [Observation(value, dict(key)) for key, value in taken]


_TALLIES = _Tallies()

# The meters whose observable instruments are made.
_measured: WeakSet[Meter] = WeakSet()


def _observe(meter: Meter) -> None:
    """Make ``meter``'s observable instruments, which read the counters and
    the bridges."""
    tallies = _TALLIES
    meter.create_observable_counter(
        "asignals.sends",
        callbacks=[partial(tallies.read, tallies.sends)],
        unit="{send}",
        description="Sends of signals, by signal and mode.",
    )
    meter.create_observable_counter(
        "asignals.receiver.errors",
        callbacks=[partial(tallies.read, tallies.errors)],
        unit="{error}",
        description="Receivers that raised, by signal, receiver and exception type.",
    )
    meter.create_observable_up_down_counter(
        "asignals.background.in_flight",
        callbacks=[partial(tallies.read, tallies.in_flight)],
        unit="{send}",
        description="Background sends made and not finished yet, by signal.",
    )
    for stat in ("published", "received", "dropped", "reconnects"):
        meter.create_observable_counter(
            f"asignals.bridge.{stat}",
            callbacks=[partial(_bridge_stat, stat)],
            unit="{send}" if stat != "reconnects" else "{reconnect}",
            description=_BRIDGE_STATS[stat],
        )
    meter.create_observable_gauge(
        "asignals.bridge.queued",
        callbacks=[partial(_bridge_stat, "queued")],
        unit="{send}",
        description="Sends each bridge has queued and Redis has not taken yet.",
    )


_BRIDGE_STATS = {
    "published": "Sends the bridges of this process published to Redis.",
    "received": "Sends from other processes that the bridges handed to receivers here.",
    "dropped": "Sends the bridges did not publish (queue full, shut down, refused by Redis).",
    "reconnects": "Times the bridges reconnected to Redis after an outage.",
}


def _bridge_stat(stat: str, options: CallbackOptions) -> Iterable[Observation]:
    """One count of each live bridge, while asignals is instrumented."""
    bridges = sys.modules.get("asignals.bridge._bridge")
    if _current is None or bridges is None:
        return []
    return [
        Observation(
            len(bridge._queue) if stat == "queued" else bridge.stats[stat],
            {
                "asignals.bridge.namespace": bridge.namespace,
                "asignals.bridge.mode": bridge.mode,
                "messaging.client.id": bridge.id,
            },
        )
        for bridge in list(bridges._bridges)
    ]

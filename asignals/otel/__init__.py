"""OpenTelemetry for asignals: a span for each send and each receiver,
metrics, and traces that cross the bridge.

>>> import asignals.otel
>>> asignals.otel.instrument()  # the global tracer and meter providers
>>> asignals.otel.uninstrument()

Importing this module imports nothing of OpenTelemetry, and until
:func:`instrument` is called, sends cost what they cost before. Needs the
``otel`` extra (``pip install -e '.[otel]'`` in asignals' checkout), which
brings ``opentelemetry-api``; your app installs and sets up the SDK and its
exporters, as for any instrumentation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._exceptions import ArgumentError, UsageError
from .._signal import Signal

if TYPE_CHECKING:
    from ._instrumentation import Instrumentation

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_lock = threading.Lock()
_current: Instrumentation | None = None


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    signals: Iterable[Signal | str] | None = None,
    exclude: Iterable[Signal | str] = (),
    record_arguments: bool = False,
) -> None:
    """Trace and measure every send from now on, until :func:`uninstrument`.

    Each send with at least one receiver makes a span named ``send <signal
    name>``, and each receiver it calls a child span; a send with no
    receiver makes none. See ``docs/observability.md`` for the spans'
    attributes and the metrics.

    :param tracer_provider: The ``TracerProvider`` to trace with; by
        default the global one (``opentelemetry.trace``).
    :param meter_provider: The ``MeterProvider`` to measure with; by
        default the global one.
    :param signals: Trace only these signals (the signals, or their names);
        by default every signal. Given as signals, the others keep their
        untraced cost; given by name, every send is looked at to find them.
    :param exclude: Signals (or names) never to trace.
    :param record_arguments: Put each argument's value on the send's span,
        as ``asignals.argument.<name>``, shortened, with values under names
        that look secret (password, token, secret, authorization, cookie,
        key, ...) masked: argument names, mapping keys, dataclass fields,
        and ``name=value`` in a ``repr()``. Off by default: arguments may
        hold personal data.
    """
    if not isinstance(record_arguments, bool):
        raise ArgumentError(f"record_arguments must be True or False, not {record_arguments!r}")
    chosen = None if signals is None else _signals("signals", signals)
    excluded = _signals("exclude", exclude)
    try:
        from ._instrumentation import Instrumentation
    except ImportError as exc:
        raise ImportError(
            f"asignals.otel needs opentelemetry-api: pip install opentelemetry-api "
            f"(the otel extra of asignals brings it) ({exc})"
        ) from exc
    global _current
    with _lock:
        if _current is not None:
            raise UsageError(
                "asignals is instrumented already: call asignals.otel.uninstrument() "
                "before instrumenting it again (with other settings)."
            )
        instrumentation = Instrumentation(
            tracer_provider, meter_provider, chosen, excluded, record_arguments
        )
        instrumentation.start()
        _current = instrumentation


def uninstrument() -> None:
    """Stop tracing and measuring sends: every signal is as it was before
    :func:`instrument` (sends already running still end their spans). Does
    nothing if asignals is not instrumented."""
    global _current
    with _lock:
        if _current is None:
            return
        _current.stop()
        _current = None


def is_instrumented() -> bool:
    """Whether :func:`instrument` was called, and :func:`uninstrument` not
    since."""
    return _current is not None


def _signals(option: str, given: Iterable[Signal | str]) -> list[Signal | str]:
    if isinstance(given, (str, Signal)):
        raise ArgumentError(
            f"instrument({option}=...) takes a list of signals or signal names, not one: "
            f"{option}=[{given!r}]"
        )
    try:
        items = list(given)
    except TypeError:
        raise ArgumentError(
            f"instrument({option}=...) takes a list of signals or signal names, not {given!r}"
        ) from None
    if option == "signals" and not items:
        raise ArgumentError(
            "instrument(signals=[]) would trace nothing: leave signals out to trace every "
            "signal, or list those to trace."
        )
    for item in items:
        if not isinstance(item, (str, Signal)):
            raise ArgumentError(
                f"instrument({option}=...) takes signals or signal names, not {item!r}"
            )
    return items

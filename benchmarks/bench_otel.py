"""OpenTelemetry benchmark: what ``asignals.otel.instrument()`` adds to a
send, with the SDK and with the API's no-op providers, against the same send
not instrumented, in one run.

Run: python benchmarks/bench_otel.py [--rounds N] [--quick]

Three setups, the columns of the table:

- not instrumented: ``asignals.otel.instrument()`` not called;
- SDK: instrumented with the OpenTelemetry SDK's ``TracerProvider``, whose
  ``BatchSpanProcessor`` (default settings) hands the spans to an exporter
  that discards them, and the SDK's ``MeterProvider`` with an
  ``InMemoryMetricReader``, which is not collected while timing;
- no-op: instrumented with the API's no-op providers
  (``trace.NoOpTracerProvider()`` and ``metrics.NoOpMeterProvider()``), what
  an app that installs no SDK gets.

The rows, each saying the mode it ran in: ``send`` with 0, 1 and 5 sync
receivers (no event loop); ``await send_async(...)``, sequential, with one
async receiver, on asyncio and on trio; and one request through
``asignals.install(app)`` on a tiny Starlette app called in-process as ASGI
(as in ``bench_middleware.py``), with one sync receiver on each of
``request_started``, ``request_finished`` and ``request_tearing_down``.
Every call passes a sender and two keyword arguments, as in ``bench_core.py``.

Setups are interleaved (their order rotates every round); for each batch
of calls, the candidate's setup is made (``instrument()``) before the clock
starts and undone (``uninstrument()``, in a ``finally``) after it stops, so
no instrumentation outlives its batch; the async rows run each batch in an
event loop of its own, started and closed untimed. After every batch,
untimed, the SDK's span processor is flushed, so that no batch pays for
another's spans. The garbage collector stays on: the spans the SDK makes
are part of its cost. The table shows the median time per call and the
ratios of medians.

Before timing, each setup is checked with one call of each row: the
receivers ran; not instrumented, nothing was counted and nothing reached
the SDK; with the SDK, the exporter got exactly one span per send that has
receivers (``send <signal>``, in the row's mode) and one per receiver (a
child of its send's span), asignals counted every send and the SDK's meter
recorded every receiver's duration; no-op, asignals was instrumented with
the no-op tracer and meter, started as many spans, counted every send and
recorded as many durations, and nothing reached the SDK. After each row,
the sends counted must be those of both instrumented setups' calls, the
SDK's durations those of the SDK's calls, and its exporter must have got
every span of the SDK's batches; the spans the ``BatchSpanProcessor``
drops when its queue is full are counted and shown under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from time import perf_counter
from typing import Any

import anyio
import trio
from _in_process import SCOPE, discard, receive
from _uvicorn_apps import SIGNALS as REQUEST_SIGNALS
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message

import asignals
import asignals.otel
from asignals.otel._instrumentation import _TALLIES

SENDER = object()
# Every call passes the sender and these, as Flask sends template_rendered.
TEMPLATE = "page.html"
CONTEXT = {"user": "ada"}

NOT_INSTRUMENTED = "not instrumented"
SDK = "SDK"
NO_OP = "no-op"

signals = asignals.Namespace()

# --- The SDK, and what it got ----------------------------------------------


class Discard(SpanExporter):
    """An exporter that counts the spans it gets and drops them (or, while
    a check runs, keeps them for it)."""

    def __init__(self) -> None:
        self.exported = 0
        self.kept: list[ReadableSpan] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        if self.kept is not None:
            self.kept.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Telemetry:
    """The SDK's providers, the exporter behind them and the metric reader."""

    def __init__(self) -> None:
        self.exporter = Discard()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.flushed = 0

    def flush(self) -> int:
        """Export what the span processor holds: the spans exported since
        the last flush."""
        if not self.tracer_provider.force_flush():
            raise RuntimeError("bench_otel: the SDK's span processor did not flush")
        exported, self.flushed = self.exporter.exported - self.flushed, self.exporter.exported
        return exported

    def totals(self) -> tuple[int, int]:
        """Never while timing: the sends counted so far (by asignals, for the
        process, whichever the providers: what the meters read), and the
        receiver durations the SDK's meter recorded."""
        with _TALLIES.lock:
            sends = sum(_TALLIES.sends.values())
        durations = 0
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if metric.name == "asignals.receiver.duration" and isinstance(
                            point, HistogramDataPoint
                        ):
                            durations += point.count
        return sends, durations

    def reported_sends(self) -> tuple[int, int]:
        """While instrumented: the sends the SDK's meter reports, and those
        asignals counted, which must be the same."""
        reported = 0
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "asignals.sends":
                        for point in metric.data.data_points:
                            if isinstance(point, NumberDataPoint):
                                reported += int(point.value)
        with _TALLIES.lock:
            return reported, sum(_TALLIES.sends.values())

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@dataclass
class Setup:
    """One column: not instrumented (no providers), or instrumented with
    these providers."""

    name: str
    tracer_provider: Any = None
    meter_provider: Any = None

    @contextmanager
    def active(self) -> Iterator[None]:
        if asignals.otel.is_instrumented():
            raise RuntimeError(f"bench_otel: asignals is instrumented before {self.name}")
        if self.tracer_provider is None:
            yield
            return
        asignals.otel.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        try:
            yield
        finally:
            asignals.otel.uninstrument()


def make_setups(telemetry: Telemetry) -> list[Setup]:
    return [
        Setup(NOT_INSTRUMENTED),
        Setup(SDK, telemetry.tracer_provider, telemetry.meter_provider),
        Setup(NO_OP, trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()),
    ]


# --- The rows --------------------------------------------------------------


@dataclass
class Work:
    """What one row times. Each call makes ``sends`` sends, all counted by
    the instrumentation, of which ``traced`` have receivers (a span each),
    and calls ``receivers`` receivers (a span and a duration each); traced
    sends are made in ``span_mode`` (their span's ``asignals.mode``)."""

    label: str
    mode: str
    number: int  # calls per batch, at full scale
    sends: int
    traced: int
    receivers: int
    span_mode: str
    # One call, which checks that its receivers ran.
    once: Callable[[], None]
    # ``n`` calls, timed: seconds per call.
    batch: Callable[[int], float]
    # The signals and receivers connected while the row runs.
    connections: list[tuple[asignals.Signal, Callable[..., Any]]] = field(default_factory=list)

    @property
    def spans(self) -> int:
        return self.traced + self.receivers


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def sync_send(count: int) -> Work:
    signal = signals.signal(f"bench-otel-send-{count}")
    connections: list[tuple[asignals.Signal, Callable[..., Any]]] = []
    for i in range(count):

        def receiver(sender: Any, i: int = i, **kwargs: Any) -> int:
            return i

        connections.append((signal, receiver))

    def once() -> None:
        results = signal.send(SENDER, template=TEMPLATE, context=CONTEXT)
        if [value for _, value in results] != list(range(count)):
            raise RuntimeError(f"bench_otel: send returned {results!r}")

    def batch(number: int) -> float:
        send = signal.send
        start = perf_counter()
        for _ in range(number):
            send(SENDER, template=TEMPLATE, context=CONTEXT)
        return (perf_counter() - start) / number

    return Work(
        f"`send()`, {count} sync receiver{plural(count)}" if count else "`send()`, 0 receivers",
        "send, no event loop",
        number=20_000 if count == 0 else 5000 if count == 1 else 2000,
        sends=1,
        traced=1 if count else 0,
        receivers=count,
        span_mode="sync",
        once=once,
        batch=batch,
        connections=connections,
    )


def running_on() -> str:
    """The event loop this runs on: asyncio or trio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        trio.lowlevel.current_task()  # or raises: neither
        return "trio"
    return "asyncio"


def async_send(backend: str) -> Work:
    signal = signals.signal(f"bench-otel-send-async-{backend}")
    tasks: list[anyio.TaskInfo] = []

    async def receiver(sender: Any, **kwargs: Any) -> int:
        tasks.append(anyio.get_current_task())
        return 1

    async def send_once() -> None:
        if running_on() != backend:
            raise RuntimeError(f"bench_otel: not running on {backend}")
        tasks.clear()
        results = await signal.send_async(SENDER, template=TEMPLATE, context=CONTEXT)
        if [value for _, value in results] != [1]:
            raise RuntimeError(f"bench_otel: send_async returned {results!r}")
        if tasks != [anyio.get_current_task()]:
            raise RuntimeError("bench_otel: the receiver did not run in the sender's task")

    async def send_batch(number: int) -> float:
        send = signal.send_async
        start = perf_counter()
        for _ in range(number):
            await send(SENDER, template=TEMPLATE, context=CONTEXT)
        return (perf_counter() - start) / number

    def once() -> None:
        anyio.run(send_once, backend=backend)

    def batch(number: int) -> float:
        # A fresh event loop for each batch, made and closed untimed.
        return anyio.run(send_batch, number, backend=backend)

    return Work(
        "`await send_async()` sequential, 1 async receiver",
        f"sequential, {backend}",
        number=5000,
        sends=1,
        traced=1,
        receivers=1,
        span_mode="sequential",
        once=once,
        batch=batch,
        connections=[(signal, receiver)],
    )


# The signals of a plain request through install(app) are REQUEST_SIGNALS,
# in the order they are sent; these, the request row connects a receiver to.
REQUEST_RECEIVED = (
    asignals.request_started,
    asignals.request_finished,
    asignals.request_tearing_down,
)


def request() -> Work:
    async def homepage(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = asignals.install(Starlette(routes=[Route("/", homepage)]))
    calls: Counter[str] = Counter()
    connections: list[tuple[asignals.Signal, Callable[..., Any]]] = []
    for signal in REQUEST_RECEIVED:

        def receiver(sender: Any, name: str = signal.name, **kwargs: Any) -> None:
            calls[name] += 1

        connections.append((signal, receiver))

    async def request_once() -> None:
        sent: list[Message] = []

        async def record(message: Message) -> None:
            sent.append(message)

        calls.clear()
        await app(dict(SCOPE), receive, record)
        if [m.get("status", m.get("body")) for m in sent] != [200, b"ok"]:
            raise RuntimeError(f"bench_otel: the app sent {sent!r}")
        if calls != dict.fromkeys((s.name for s in REQUEST_RECEIVED), 1):
            raise RuntimeError(f"bench_otel: receiver calls {dict(calls)}, not 1 each")

    async def request_batch(number: int) -> float:
        scopes = [dict(SCOPE) for _ in range(number)]
        start = perf_counter()
        for scope in scopes:
            await app(scope, receive, discard)
        return (perf_counter() - start) / number

    def once() -> None:
        anyio.run(request_once, backend="asyncio")

    def batch(number: int) -> float:
        return anyio.run(request_batch, number, backend="asyncio")

    return Work(
        "one request through `install(app)`, 1 sync receiver on each of request_started, "
        "request_finished, request_tearing_down",
        "in-process ASGI, asyncio",
        number=500,
        sends=len(REQUEST_SIGNALS),
        traced=len(REQUEST_RECEIVED),
        receivers=len(REQUEST_RECEIVED),
        span_mode="sync",
        once=once,
        batch=batch,
        connections=connections,
    )


def make_works() -> list[Work]:
    return [
        sync_send(0),
        sync_send(1),
        sync_send(5),
        async_send("asyncio"),
        async_send("trio"),
        request(),
    ]


# --- Checks and timing -----------------------------------------------------


@contextmanager
def counting_no_op() -> Iterator[Counter[str]]:
    """While asignals is instrumented with the no-op providers: count the
    spans its tracer starts, the sends its meter counts and the durations it
    records."""
    instrumentation = asignals.otel._current
    if instrumentation is None:
        raise RuntimeError("bench_otel: no-op: asignals is not instrumented")
    tracer, meter = instrumentation.tracer, instrumentation.meter
    if type(tracer) is not trace.NoOpTracer or type(meter) is not metrics.NoOpMeter:
        raise RuntimeError(f"bench_otel: no-op: instrumented with {tracer!r} and {meter!r}")
    counts: Counter[str] = Counter()
    patched = [(tracer, "start_span"), (instrumentation.duration, "record")]

    def counting(method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[method] += 1
            return original(*args, **kwargs)

        return counted

    for target, method in patched:
        setattr(target, method, counting(method, getattr(target, method)))
    try:
        yield counts
    finally:
        for target, method in patched:
            delattr(target, method)


def check_spans(work: Work, spans: list[ReadableSpan]) -> list[str]:
    """What is wrong with the spans one call made with the SDK."""
    sends = [s for s in spans if s.name.startswith("send ")]
    calls = [s for s in spans if not s.name.startswith("send ")]
    problems = []
    if len(sends) != work.traced or len(calls) != work.receivers:
        problems.append(
            f"{len(sends)} send spans and {len(calls)} receiver spans, "
            f"not {work.traced} and {work.receivers}"
        )
    modes = {(s.attributes or {}).get("asignals.mode") for s in sends}
    if sends and modes != {work.span_mode}:
        problems.append(f"send spans in modes {modes}, not {work.span_mode}")
    send_ids = {s.context.span_id for s in sends if s.context is not None}
    parents = {s.parent.span_id if s.parent else None for s in calls}
    if not parents <= send_ids:
        problems.append("receiver spans that are not children of a send span")
    return problems


def check(work: Work, setup: Setup, telemetry: Telemetry) -> None:
    """One call with ``setup`` made: it does what its column says."""
    telemetry.flush()
    before = telemetry.totals()
    kept: list[ReadableSpan] = []
    telemetry.exporter.kept = kept
    counts: Counter[str] = Counter()
    try:
        with setup.active(), ExitStack() as stack:
            instrumented = asignals.otel.is_instrumented()
            if setup.name == NO_OP:
                counts = stack.enter_context(counting_no_op())
            work.once()
            reported = telemetry.reported_sends() if setup.name == SDK else (0, 0)
        telemetry.flush()
    finally:
        telemetry.exporter.kept = None
    sends, durations = (b - a for a, b in zip(before, telemetry.totals(), strict=True))
    problems = []
    if instrumented != (setup.name != NOT_INSTRUMENTED):
        problems.append("asignals was instrumented" if instrumented else "it was not instrumented")
    wanted_sends = 0 if setup.name == NOT_INSTRUMENTED else work.sends
    if sends != wanted_sends:
        problems.append(f"{sends} sends were counted, not {wanted_sends}")
    if setup.name == SDK:
        problems += check_spans(work, kept)
        if reported[0] != reported[1]:
            problems.append(f"the SDK's meter reported {reported[0]} sends of {reported[1]}")
        if durations != work.receivers:
            problems.append(
                f"the SDK's meter recorded {durations} receiver durations, not {work.receivers}"
            )
    elif kept or durations:
        problems.append(f"the SDK got {len(kept)} spans and {durations} durations")
    if setup.name == NO_OP:
        wanted = {"start_span": work.spans, "record": work.receivers}
        if {name: counts[name] for name in wanted} != wanted:
            problems.append(f"the no-op instruments were called {dict(counts)}, not {wanted}")
    if problems:
        raise RuntimeError(f"bench_otel: {work.label}, {setup.name}: " + "; ".join(problems))


@dataclass
class Row:
    """One row of the table: the median seconds per call in each setup, and
    the spans the SDK's batches made and its exporter never got."""

    label: str
    mode: str
    spans: int  # per call, with the SDK
    number: int  # calls per batch
    times: dict[str, float]
    dropped: int
    timed_spans: int

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "spans_per_call": self.spans,
            "calls_per_batch": self.number,
            "times": self.times,
            "sdk_spans_dropped": self.dropped,
            "sdk_spans": self.timed_spans,
        }


def time_work(work: Work, rounds: int, number: int, telemetry: Telemetry) -> Row:
    setups = make_setups(telemetry)
    samples: dict[str, list[float]] = {s.name: [] for s in setups}
    exported: Counter[str] = Counter()
    with ExitStack() as stack:
        for signal, receiver in work.connections:
            stack.enter_context(signal.connected_to(receiver))
        telemetry.flush()
        before = telemetry.totals()
        for setup in setups:
            check(work, setup, telemetry)
        for round_ in range(rounds):
            shift = round_ % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                with setup.active():
                    samples[setup.name].append(work.batch(number))
                exported[setup.name] += telemetry.flush()
        if asignals.otel.is_instrumented():
            raise RuntimeError("bench_otel: asignals is still instrumented")
        after = telemetry.totals()
    calls = rounds * number  # timed calls in each setup
    counted = tuple(b - a for a, b in zip(before, after, strict=True))
    # Sends in both instrumented setups; durations with the SDK only.
    wanted = (2 * (calls + 1) * work.sends, (calls + 1) * work.receivers)
    if counted != wanted:
        raise RuntimeError(
            f"bench_otel: {work.label}: counted (sends, SDK durations) {counted}, not "
            f"{wanted} for the {calls} timed calls and the check of each instrumented setup"
        )
    timed_spans = calls * work.spans
    if exported[NOT_INSTRUMENTED] or exported[NO_OP] or exported[SDK] > timed_spans:
        raise RuntimeError(
            f"bench_otel: {work.label}: the exporter got {dict(exported)} spans, "
            f"for {timed_spans} from the SDK's batches"
        )
    return Row(
        work.label,
        work.mode,
        work.spans,
        number,
        {name: statistics.median(values) for name, values in samples.items()},
        timed_spans - exported[SDK],
        timed_spans,
    )


class Rows(list[Row]):
    """The rows, and what the SDK alone costs (see :func:`sdk_alone`)."""

    sdk_alone: dict[str, float]


def sdk_alone(rounds: int, number: int, telemetry: Telemetry) -> dict[str, float]:
    """For scale, with the SDK set up as for the SDK column and asignals not
    instrumented: the median seconds a span takes, started and ended (a
    child of another, with three attributes, as a receiver's span), and a
    histogram measurement with three attributes (as a receiver's duration)."""
    tracer = telemetry.tracer_provider.get_tracer("bench_otel")
    histogram = telemetry.meter_provider.get_meter("bench_otel").create_histogram("bench")
    parent = trace.set_span_in_context(tracer.start_span("parent"))
    attributes: dict[str, str | int] = {
        "code.function": "module.receiver",
        "asignals.receiver.kind": "sync",
        "n": 1,
    }

    def spans() -> float:
        start = perf_counter()
        for _ in range(number):
            tracer.start_span("span", context=parent, attributes=attributes).end()
        return (perf_counter() - start) / number

    def measurements() -> float:
        start = perf_counter()
        for _ in range(number):
            histogram.record(0.001, attributes)
        return (perf_counter() - start) / number

    taken: dict[str, list[float]] = {"span": [], "histogram measurement": []}
    for _ in range(rounds):
        taken["span"].append(spans())
        telemetry.flush()
        taken["histogram measurement"].append(measurements())
    return {name: statistics.median(values) for name, values in taken.items()}


def run(rounds: int, scale: float) -> Rows:
    telemetry = Telemetry()
    try:
        rows = Rows(
            time_work(work, rounds, max(1, int(work.number * scale)), telemetry)
            for work in make_works()
        )
        rows.sdk_alone = sdk_alone(rounds, max(1, int(2000 * scale)), telemetry)
        telemetry.flush()
        return rows
    finally:
        telemetry.shutdown()


# --- Output ----------------------------------------------------------------


def format_table(rows: Rows) -> str:
    lines = [
        f"| work | mode | {NOT_INSTRUMENTED} | {SDK} | {NO_OP} "
        f"| {SDK} / not | {NO_OP} / not | spans per call ({SDK}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        times = row.times
        base = times[NOT_INSTRUMENTED]
        cells = " | ".join(
            f"{times[name] * 1e6:,.2f} µs" for name in (NOT_INSTRUMENTED, SDK, NO_OP)
        )
        lines.append(
            f"| {row.label} | {row.mode} | {cells} | {times[SDK] / base:.2f}x "
            f"| {times[NO_OP] / base:.2f}x | {row.spans} |"
        )
    alone = ", ".join(f"a {name} {value * 1e6:,.2f} µs" for name, value in rows.sdk_alone.items())
    lines += ["", f"For scale, the SDK alone (set up as for the {SDK} column): {alone}."]
    dropped = [row for row in rows if row.dropped]
    if dropped:
        lines.append("")
        lines += [
            f"With the SDK, the BatchSpanProcessor dropped {row.dropped:,} of the "
            f"{row.timed_spans:,} spans of {row.label} ({row.mode}): its queue was full."
            for row in dropped
        ]
    return "\n".join(lines)


def describe(rounds: int) -> str:
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs; asignals {version('asignals')}, "
        f"opentelemetry-api {version('opentelemetry-api')}, "
        f"opentelemetry-sdk {version('opentelemetry-sdk')}, Starlette {version('starlette')}, "
        f"anyio {version('anyio')}, trio {version('trio')}; "
        f"median of {rounds} interleaved rounds; time per call"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per row (median of these)")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the calls, for a smoke run"
    )
    args = parser.parse_args()
    rows = run(args.rounds, 0.1 if args.quick else 1.0)
    print(describe(args.rounds))
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()

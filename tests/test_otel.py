"""OpenTelemetry (asignals.otel): the span tree of each mode of send, errors,
timeouts and cancellation, metrics, nesting under a request's span, the link
of a background send, allow and deny lists, arguments, and what uninstrument
leaves behind. The SDK's in-memory exporters stand in for a tracing tool.
Across processes, through a real bridge: test_otel_bridge.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import asignals
import asignals.otel
from asignals import ArgumentError, SendTimeoutError, UsageError, _tracing
from asignals.bridge import RedisBridge, _wire

# Every wait in these tests is bounded by this many seconds.
WAIT = 10.0


class Boom(Exception):
    pass


class Telemetry:
    """An SDK's tracer and meter providers with in-memory exporters, and
    asignals instrumented with them (see the ``otel`` fixture)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, **options: Any) -> Telemetry:
        asignals.otel.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )
        return self

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        """The finished spans whose names begin with ``prefix``, in the order
        they ended."""
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """The spans whose parent is ``parent``, in the order they started."""
        found = [
            s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]
        return sorted(found, key=lambda s: s.start_time or 0)

    def points(self, metric: str, signal: str | None = None) -> list[Any]:
        """The data points of ``metric`` (of ``signal`` only, if given), as
        collected now. (The counters are the process's: other tests' sends
        are counted too.)"""
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
            if signal is None or point.attributes.get("asignals.signal") == signal
        ]


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    """Providers to instrument with (``otel.instrument(**options)``);
    uninstrumented after the test, whatever happens."""
    telemetry = Telemetry()
    try:
        yield telemetry
    finally:
        asignals.otel.uninstrument()
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()


def connect(signal: asignals.Signal, *receivers: Callable[..., Any]) -> None:
    for receiver in receivers:
        signal.connect(receiver, weak=False)


# The cost before instrument().


def test_nothing_of_opentelemetry_is_imported_before_instrument() -> None:
    """Importing asignals, asignals.otel and the bridge, and sending, load no
    OpenTelemetry module; instrument() does."""
    script = """
import sys, asignals, asignals.otel, asignals.bridge
signal = asignals.signal("s")
signal.connect(lambda sender, **kwargs: None, weak=False)
signal.send("x")
before = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
asignals.otel.instrument()
after = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(__import__("json").dumps([before, bool(after)]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [[], True]


# Each mode's span tree.


def test_a_sync_send_makes_a_span_and_a_child_per_receiver(otel: Telemetry) -> None:
    otel.instrument()
    placed = asignals.Signal()

    def first(sender: Any, **kwargs: Any) -> None:
        pass

    def second(sender: Any, **kwargs: Any) -> None:
        pass

    connect(placed, first, second)
    placed.send("shop", order=7)
    send = otel.span("send anonymous")
    assert send.kind is SpanKind.INTERNAL
    assert send.parent is None
    assert dict(send.attributes or {}) == {
        "asignals.signal": "anonymous",
        "asignals.mode": "sync",
        "asignals.receivers": 2,
        "asignals.sender": "shop",
    }
    children = otel.children(send)
    assert [c.name for c in children] == [f"{__name__}.{f.__qualname__}" for f in (first, second)]
    for child, function in zip(children, (first, second), strict=True):
        assert child.attributes == {
            "code.function": f"{__name__}.{function.__qualname__}",
            "asignals.receiver.kind": "sync",
        }
        assert child.status.status_code is StatusCode.UNSET
    # Within the send, one after the other.
    assert send.start_time <= children[0].start_time <= children[0].end_time  # type: ignore[operator]
    assert children[0].end_time <= children[1].start_time <= send.end_time  # type: ignore[operator]


@pytest.mark.parametrize(
    ("sender", "shown"),
    [("ada", "ada"), (42, 42), (None, None), (Boom("x"), "Boom"), (Boom, "Boom")],
)
def test_the_sender_attribute(otel: Telemetry, sender: Any, shown: Any) -> None:
    """A str or a number as it is; an object by its type's name; a class by
    its own; None not at all."""
    otel.instrument()
    signal = asignals.Signal()
    connect(signal, lambda sender, **kwargs: None)
    signal.send(sender)
    assert otel.span("send anonymous").attributes.get("asignals.sender") == shown  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_sequential_receivers_run_under_the_send_span_in_turn(otel: Telemetry) -> None:
    otel.instrument()
    signal = asignals.NamedSignal("sequential-otel")
    inside: list[Any] = []

    async def first(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        inside.append(trace.get_current_span().get_span_context().span_id)

    def second(sender: Any, **kwargs: Any) -> None:
        inside.append(trace.get_current_span().get_span_context().span_id)

    def blocking(sender: Any, **kwargs: Any) -> None:
        assert threading.current_thread() is not threading.main_thread()
        inside.append(trace.get_current_span().get_span_context().span_id)

    connect(signal, first, second)
    signal.connect(blocking, weak=False, to_thread=True)
    await signal.send_async("x")
    send = otel.span("send sequential-otel")
    assert send.attributes["asignals.mode"] == "sequential"  # type: ignore[index]
    children = otel.children(send)
    assert [c.attributes["asignals.receiver.kind"] for c in children] == [  # type: ignore[index]
        "async",
        "sync",
        "thread",
    ]
    # Each receiver runs with its own span current: what it traces, and the
    # worker thread's receiver too, is under it.
    assert inside == [c.context.span_id for c in children]
    assert children[0].end_time <= children[1].start_time  # type: ignore[operator]
    assert children[1].end_time <= children[2].start_time  # type: ignore[operator]


@pytest.mark.anyio
async def test_concurrent_receivers_spans_overlap_as_the_receivers_did(otel: Telemetry) -> None:
    """Each receiver waits until the other has started: their spans overlap,
    both under the send's."""
    otel.instrument()
    signal = asignals.NamedSignal("concurrent-otel")
    started = {"a": anyio.Event(), "b": anyio.Event()}

    async def a(sender: Any, **kwargs: Any) -> None:
        started["a"].set()
        with anyio.fail_after(WAIT):
            await started["b"].wait()

    async def b(sender: Any, **kwargs: Any) -> None:
        started["b"].set()
        with anyio.fail_after(WAIT):
            await started["a"].wait()

    connect(signal, a, b)
    await signal.send_async("x", _concurrent=True)
    send = otel.span("send concurrent-otel")
    assert send.attributes["asignals.mode"] == "concurrent"  # type: ignore[index]
    first, second = otel.children(send)
    assert first.start_time < second.end_time  # type: ignore[operator]
    assert second.start_time < first.end_time  # type: ignore[operator]


# Errors, timeouts, cancellation.


@pytest.mark.anyio
async def test_a_receiver_that_raises(otel: Telemetry, anyio_backend: str) -> None:
    """Its span has status ERROR and the exception; the send's too; the
    receiver after it is not called and has no span; the error is counted."""
    otel.instrument()
    name = f"raising-otel-{anyio_backend}"
    signal = asignals.NamedSignal(name)

    async def fails(sender: Any, **kwargs: Any) -> None:
        raise Boom("no stock")

    def never(sender: Any, **kwargs: Any) -> None:
        raise AssertionError("called")

    connect(signal, fails, never)
    with pytest.raises(Boom):
        await signal.send_async("x")
    send = otel.span(f"send {name}")
    (failed,) = otel.children(send)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "Boom: no stock"
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("Boom")  # type: ignore[index]
    assert send.status.status_code is StatusCode.ERROR
    # The exception is on the receiver's span, once.
    assert not [e for e in send.events if e.name == "exception"]
    (errors,) = otel.points("asignals.receiver.errors", name)
    assert errors.value == 1
    assert errors.attributes == {
        "asignals.signal": name,
        "code.function": f"{__name__}.{fails.__qualname__}",
        "asignals.receiver.kind": "async",
        "error.type": "Boom",
    }


@pytest.mark.anyio
async def test_a_timeout_is_an_event(otel: Telemetry) -> None:
    """A send that times out: the receiver cut short has a ``cancelled``
    event; the send a ``timeout`` event and status ERROR (it raised)."""
    otel.instrument()
    signal = asignals.NamedSignal("slow-otel")
    never = anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        await never.wait()

    connect(signal, slow)
    with anyio.fail_after(WAIT), pytest.raises(SendTimeoutError):
        await signal.send_async("x", _timeout=0.01)
    send = otel.span("send slow-otel")
    (cut,) = otel.children(send)
    assert [e.name for e in cut.events] == ["cancelled"]
    assert cut.status.status_code is StatusCode.UNSET
    assert [e.name for e in send.events] == ["timeout"]
    assert send.status.status_code is StatusCode.ERROR


@pytest.mark.anyio
async def test_a_cancelled_send_is_an_event(otel: Telemetry) -> None:
    """Cancelled from outside while its receiver waits: both spans end, with
    a ``cancelled`` event and no error."""
    otel.instrument()
    signal = asignals.NamedSignal("cancelled-otel")
    running = anyio.Event()

    async def waits(sender: Any, **kwargs: Any) -> None:
        running.set()
        await anyio.sleep_forever()

    connect(signal, waits)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(signal.send_async, "x")
            await running.wait()
            group.cancel_scope.cancel()
    send = otel.span("send cancelled-otel")
    (receiver,) = otel.children(send)
    for span in (send, receiver):
        assert [e.name for e in span.events] == ["cancelled"]
        assert span.status.status_code is StatusCode.UNSET


# Nesting.


@pytest.mark.anyio
async def test_sends_and_spans_made_by_a_receiver_are_its_children(otel: Telemetry) -> None:
    otel.instrument()
    outer = asignals.NamedSignal("outer-otel")
    inner = asignals.NamedSignal("inner-otel")
    tracer = otel.tracer_provider.get_tracer("test")

    async def sends(sender: Any, **kwargs: Any) -> None:
        with tracer.start_as_current_span("own work"):
            pass
        await inner.send_async(sender)

    connect(outer, sends)
    connect(inner, lambda sender, **kwargs: None)
    with tracer.start_as_current_span("caller"):
        await outer.send_async("x")
    caller = otel.span("caller")
    (send,) = otel.children(caller)
    assert send.name == "send outer-otel"
    (receiver,) = otel.children(send)
    assert [s.name for s in otel.children(receiver)] == ["own work", "send inner-otel"]
    assert {s.context.trace_id for s in otel.spans()} == {caller.context.trace_id}


def test_a_send_with_no_receiver_makes_no_span_but_is_counted(otel: Telemetry) -> None:
    otel.instrument()
    signal = asignals.NamedSignal("nobody-otel")
    signal.send("x")
    signal.send("x")
    assert otel.spans() == []
    (sends,) = otel.points("asignals.sends", "nobody-otel")
    assert sends.value == 2
    assert sends.attributes == {"asignals.signal": "nobody-otel", "asignals.mode": "sync"}


def test_metrics_of_receivers(otel: Telemetry) -> None:
    """The sends counter and each receiver's duration histogram."""
    otel.instrument()
    signal = asignals.NamedSignal("measured-otel")

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    connect(signal, receiver)
    for _ in range(3):
        signal.send("x")
    (sends,) = otel.points("asignals.sends", "measured-otel")
    assert sends.value == 3
    (duration,) = otel.points("asignals.receiver.duration", "measured-otel")
    assert duration.count == 3
    assert duration.sum >= 0
    assert duration.attributes == {
        "asignals.signal": "measured-otel",
        "code.function": f"{__name__}.{receiver.__qualname__}",
        "asignals.receiver.kind": "sync",
    }
    assert otel.points("asignals.receiver.errors", "measured-otel") == []


# Under a request's span.


def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("home")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/", home)])


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/")(home)
    return app


def wrapped(otel: Telemetry) -> Any:
    return OpenTelemetryMiddleware(
        asignals.install(starlette_app()), tracer_provider=otel.tracer_provider
    )


def fastapi_instrumented_first(otel: Telemetry) -> Any:
    app = fastapi_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=otel.tracer_provider)
    return asignals.install(app)


def starlette_instrumented_first(otel: Telemetry) -> Any:
    app = starlette_app()
    StarletteInstrumentor.instrument_app(app, tracer_provider=otel.tracer_provider)
    return asignals.install(app)


def starlette_instrumented_after(otel: Telemetry) -> Any:
    app = asignals.install(starlette_app())
    StarletteInstrumentor.instrument_app(app, tracer_provider=otel.tracer_provider)
    return app


@pytest.mark.parametrize(
    "make",
    [
        wrapped,
        fastapi_instrumented_first,
        starlette_instrumented_first,
        starlette_instrumented_after,
    ],
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_lifecycle_sends_are_children_of_the_request_span(
    otel: Telemetry, make: Callable[[Telemetry], Any], backend: str
) -> None:
    """Wherever OpenTelemetry's ASGI middleware is (around the app, or put
    by FastAPI's or Starlette's instrumentor), install() goes inside it, and
    the request's sends are children of its span."""
    otel.instrument()
    app = make(otel)
    received: list[str] = []

    def on(sender: Any, **kwargs: Any) -> None:
        received.append("on")

    for signal in (asignals.request_started, asignals.request_finished):
        signal.connect(on, weak=False)
    try:
        with TestClient(app, backend=backend) as client:
            assert client.get("/").text == "home"
    finally:
        for signal in (asignals.request_started, asignals.request_finished):
            signal.disconnect(on)
    assert received == ["on", "on"]
    (request,) = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    sends = otel.spans("send request-")
    assert [s.name for s in sends] == ["send request-started", "send request-finished"]
    for send in sends:
        assert send.parent is not None
        assert send.parent.span_id == request.context.span_id


# Background sends.


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_background_send_starts_its_own_trace_linked_to_its_maker(
    otel: Telemetry, backend: str
) -> None:
    """Made in a request: its span is a root, linked to the request's span;
    its receivers' spans are its children, and so are the application
    context's sends in its task; the in-flight gauge goes up and back."""
    otel.instrument()
    job = asignals.NamedSignal("job-otel")
    ran = threading.Event()

    async def work(sender: Any, **kwargs: Any) -> None:
        ran.set()

    def pushed(sender: Any, **kwargs: Any) -> None:
        pass

    connect(job, work)

    async def endpoint(request: Request) -> PlainTextResponse:
        job.send_background("maker", n=1)
        return PlainTextResponse("queued")

    app = OpenTelemetryMiddleware(
        asignals.install(Starlette(routes=[Route("/", endpoint)])),
        tracer_provider=otel.tracer_provider,
    )
    asignals.appcontext_pushed.connect(pushed, weak=False)
    try:
        with TestClient(app, backend=backend) as client:
            assert client.get("/").text == "queued"
            assert ran.wait(WAIT)
        # The lifespan's end waited for the send.
    finally:
        asignals.appcontext_pushed.disconnect(pushed)
    (request,) = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    send = otel.span("send job-otel")
    assert send.parent is None
    assert send.context.trace_id != request.context.trace_id
    assert send.attributes["asignals.mode"] == "background"  # type: ignore[index]
    (link,) = send.links
    assert link.context.span_id == request.context.span_id
    children = otel.children(send)
    assert [c.name for c in children] == [
        "send appcontext-pushed",
        f"{__name__}.{work.__qualname__}",
    ]
    points = otel.points("asignals.background.in_flight", "job-otel")
    assert [(p.attributes, p.value) for p in points] == [({"asignals.signal": "job-otel"}, 0)]


# Allow and deny lists.


def test_only_the_signals_given(otel: Telemetry) -> None:
    """Given as signals, only those are observed: the others keep their
    untraced path. Given by name, the named ones are traced."""
    traced, other, named = (
        asignals.Signal(),
        asignals.Signal(),
        asignals.NamedSignal("named-otel"),
    )
    for signal in (traced, other, named):
        connect(signal, lambda sender, **kwargs: None)
    otel.instrument(signals=[traced])
    assert other._observers is None
    for signal in (traced, other, named):
        signal.send("x")
    (send,) = otel.spans("send ")
    assert send.name == "send anonymous"
    assert otel.children(send)
    asignals.otel.uninstrument()
    otel.exporter.clear()
    otel.instrument(signals=["named-otel"])
    for signal in (traced, other, named):
        signal.send("x")
    assert [s.name for s in otel.spans("send ")] == ["send named-otel"]


def test_excluded_signals(otel: Telemetry) -> None:
    kept, dropped = asignals.NamedSignal("kept-otel"), asignals.NamedSignal("dropped-otel")
    anonymous = asignals.Signal()
    for signal in (kept, dropped, anonymous):
        connect(signal, lambda sender, **kwargs: None)
    otel.instrument(exclude=["dropped-otel", anonymous])
    for signal in (kept, dropped, anonymous):
        signal.send("x")
    assert [s.name for s in otel.spans("send ")] == ["send kept-otel"]
    assert otel.points("asignals.sends", "dropped-otel") == []
    (sends,) = otel.points("asignals.sends", "kept-otel")
    assert sends.value == 1


def test_the_signal_monitor_s_own_signals_are_never_traced(otel: Telemetry) -> None:
    from asignals.monitor import pages_open, traces_changed

    otel.instrument()
    pages_open.send("a-worker")
    traces_changed.send("a-worker", traces="[]")
    assert otel.spans("send ") == []
    assert otel.points("asignals.sends", pages_open.name) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"signals": "named"}, "not one"),
        ({"signals": []}, "would trace nothing"),
        ({"signals": [1]}, "not 1"),
        ({"exclude": 5}, "not 5"),
        ({"record_arguments": "yes"}, "True or False"),
    ],
)
def test_bad_options(otel: Telemetry, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        otel.instrument(**options)
    assert not asignals.otel.is_instrumented()


def test_instrumenting_twice_is_an_error(otel: Telemetry) -> None:
    otel.instrument()
    with pytest.raises(UsageError, match="uninstrument"):
        otel.instrument()
    asignals.otel.uninstrument()
    asignals.otel.uninstrument()  # nothing to do
    otel.instrument()
    assert asignals.otel.is_instrumented()


# Arguments.


def test_arguments_are_not_recorded_by_default(otel: Telemetry) -> None:
    otel.instrument()
    signal = asignals.NamedSignal("quiet-otel")
    connect(signal, lambda sender, **kwargs: None)
    signal.send("x", email="ada@example.com")
    attributes = otel.span("send quiet-otel").attributes or {}
    assert not [k for k in attributes if k.startswith("asignals.argument")]


def test_recorded_arguments_are_short_and_secrets_masked(otel: Telemetry) -> None:
    otel.instrument(record_arguments=True)
    signal = asignals.NamedSignal("loud-otel")
    connect(signal, lambda sender, **kwargs: None)
    signal.send(
        "x",
        user="ada",
        password="hunter2",
        api_key="k",
        Authorization="Bearer t",
        session_cookie="c",
        form={"name": "ada", "card": {"secret": "123"}},
        blob=b"x" * 10_000_000,
        big=set(range(1_000_000)),
    )
    attributes = otel.span("send loud-otel").attributes or {}
    recorded = {
        k.removeprefix("asignals.argument."): v
        for k, v in attributes.items()
        if k.startswith("asignals.argument.")
    }
    assert recorded["user"] == "'ada'"
    for secret in ("password", "api_key", "Authorization", "session_cookie"):
        assert recorded[secret] == "***"
    assert recorded["form"] == "{'name': 'ada', 'card': {'secret': ***}}"
    assert recorded["blob"].endswith("(10,000,000 bytes)")
    assert recorded["big"] == "{0, 1, 2, 3, 4, 5, 6, 7, ...}"
    assert all(len(v) < 200 for v in recorded.values())


# The bridge's check, seen as a failed send.


def test_a_send_the_bridge_refuses_is_a_failed_span(otel: Telemetry) -> None:
    """The bridge refuses an argument JSON cannot carry before any receiver
    runs: the send's span says so, and nothing was published."""
    otel.instrument()
    signal = asignals.NamedSignal("refused-otel")
    connect(signal, lambda sender, **kwargs: None)
    bridge = RedisBridge("redis://127.0.0.1:1")
    bridge.share(signal)
    try:
        with pytest.raises(ArgumentError, match="cannot cross"):
            signal.send("x", when={1, 2})
    finally:
        bridge._unshare(signal)
    send = otel.span("send refused-otel")
    assert send.status.status_code is StatusCode.ERROR
    assert [e.name for e in send.events] == ["exception"]
    assert otel.children(send) == []
    assert otel.spans("publish") == []


# Leaving nothing behind.


def test_uninstrument_leaves_nothing_behind(otel: Telemetry) -> None:
    signal = asignals.NamedSignal("after-otel")
    connect(signal, lambda sender, **kwargs: None)
    unobserved = [s for s in asignals.observers.all_signals() if s._observers is None]
    otel.instrument()
    assert _tracing.tracer is not None
    asignals.otel.uninstrument()
    assert _tracing.tracer is None
    assert not asignals.otel.is_instrumented()
    assert [s for s in unobserved if s._observers is not None] == []
    signal.send("x")
    assert otel.spans() == []
    assert otel.points("asignals.sends") == []


# The documentation's examples.

DOCS = Path(__file__).parent.parent / "docs" / "observability.md"
EXAMPLE = Path(__file__).parent.parent / "examples" / "otel_trace.py"


def _docs_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.DOTALL)


def test_the_docs_python_examples_run_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """The first prints what the page shows; the collector's set-up (its
    exporter is not a dependency) compiles; each way to choose the signals
    instruments."""
    first, collector, shutdown, *choosing = _docs_blocks("python")
    shown = _docs_blocks("text")[0]
    exec(compile(first, str(DOCS), "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == shown
    assert not asignals.otel.is_instrumented()
    compile(collector, str(DOCS), "exec")
    compile(shutdown, str(DOCS), "exec")
    assert len(choosing) == 2
    for code in choosing:
        exec(compile(code, str(DOCS), "exec"), {"__name__": "docs"})
        assert asignals.otel.is_instrumented()
        asignals.otel.uninstrument()


def test_the_docs_rendered_trace_is_what_the_example_prints() -> None:
    """The example's trees, without the bars and durations, which each run
    measures anew."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    shown = _docs_blocks("text")[1]

    def shape(text: str) -> list[str]:
        return [line.split("|")[0].rstrip() for line in text.splitlines()]

    assert shape(done.stdout) == shape(shown)
    assert done.stderr == ""


# The bridge's spans and metrics in one process.


def test_the_bridge_metrics_read_each_bridge(otel: Telemetry) -> None:
    """A bridge that has not started queues the send: one queued, none
    published; after uninstrument, no points."""
    otel.instrument()
    signal = asignals.NamedSignal("queued-otel")
    bridge = RedisBridge("redis://127.0.0.1:1", namespace="metrics-otel")
    bridge.share(signal)
    try:
        signal.send("x")
    finally:
        bridge._unshare(signal)
    mine = {
        "asignals.bridge.namespace": "metrics-otel",
        "asignals.bridge.mode": "pubsub",
        "messaging.client.id": bridge.id,
    }

    def value(metric: str) -> Any:
        (point,) = [p for p in otel.points(metric) if p.attributes == mine]
        return point.value

    assert value("asignals.bridge.queued") == 1
    for metric in ("published", "received", "dropped", "reconnects"):
        assert value(f"asignals.bridge.{metric}") == 0
    asignals.otel.uninstrument()
    assert [p for p in otel.points("asignals.bridge.queued") if p.attributes == mine] == []


@pytest.mark.anyio
async def test_a_published_send_has_a_producer_span(otel: Telemetry, redis_server: Any) -> None:
    """A child of the send's span, ended once Redis took the message, which
    carries its trace context."""
    otel.instrument()
    signal = asignals.NamedSignal("published-otel")
    connect(signal, lambda sender, **kwargs: None)
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    async with bridge:
        signal.send("x")
        with anyio.fail_after(WAIT):
            await bridge.flush()
    send = otel.span("send published-otel")
    publish = otel.span("publish published-otel")
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == send.context.span_id
    assert publish.status.status_code is StatusCode.UNSET
    assert publish.attributes == {
        "asignals.signal": "published-otel",
        "messaging.system": "redis",
        "messaging.destination.name": "asignals:published-otel",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    assert bridge.stats["published"] == 1


class ManyFields(TextMapPropagator):
    """Injects the W3C trace context after ten fields of its own, one of
    them too long to carry."""

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        for n in range(9):
            carrier[f"extra-{n}"] = "x"
        carrier["long"] = "y" * 2000
        TraceContextTextMapPropagator().inject(carrier, context)

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        return TraceContextTextMapPropagator().extract(carrier, context)

    @property
    def fields(self) -> set[str]:
        return {"traceparent", "tracestate", "long", *(f"extra-{n}" for n in range(9))}


def test_a_message_carries_a_bounded_trace_context(otel: Telemetry) -> None:
    """However many fields the propagators inject, a message carries what a
    bridge takes: traceparent first, at most 8 fields, none too long; the
    rest is named on the publish span. A message that carries more (from
    elsewhere) is taken without its trace context."""
    otel.instrument()
    signal = asignals.NamedSignal("bounded-otel")
    bridge = RedisBridge("redis://127.0.0.1:1")
    bridge.share(signal)
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(ManyFields())
    try:
        signal.send("x")
    finally:
        propagate.set_global_textmap(before)
        bridge._unshare(signal)
    ((_, _, message, published),) = bridge._queue
    envelope = _wire.decode(message, None, bridge.max_message_bytes)
    assert envelope.trace is not None
    assert next(iter(envelope.trace)) == "traceparent"
    assert len(envelope.trace) == _tracing.CARRIED_FIELDS
    assert "long" not in envelope.trace
    assert published is not None
    published(None)
    (event,) = otel.span("publish bounded-otel").events
    assert event.name == "trace context fields left out"
    assert set(event.attributes["asignals.left_out"]) == {"long", "extra-7", "extra-8"}  # type: ignore[index, arg-type]
    # More than a bridge takes: the send arrives, its trace context does not.
    envelope.trace = {f"f{n}": "v" for n in range(_tracing.CARRIED_FIELDS + 1)}
    arrived = _wire.decode(_wire.encode(envelope, None, 1 << 20), None, 1 << 20)
    assert arrived.trace is None
    assert arrived.number == envelope.number


def test_signals_not_chosen_are_not_published_traced(otel: Telemetry) -> None:
    """With ``signals=``, a shared signal not chosen makes no publish span
    and carries no trace context."""
    chosen, other = asignals.NamedSignal("chosen-otel"), asignals.NamedSignal("other-otel")
    otel.instrument(signals=[chosen])
    bridge = RedisBridge("redis://127.0.0.1:1")
    bridge.share(chosen, other)
    try:
        chosen.send("x")
        other.send("x")
    finally:
        bridge._unshare(chosen)
        bridge._unshare(other)
    traced, untraced = (_wire.decode(m, None, 1 << 20) for _, _, m, _ in bridge._queue)
    assert traced.trace is not None
    assert untraced.trace is None
    assert [told is None for *_, told in bridge._queue] == [False, True]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_background_send_whose_receiver_raised_is_an_error(
    otel: Telemetry, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Background sends go on past a failure: the send's span still says a
    receiver raised."""
    otel.instrument()
    job = asignals.NamedSignal("failing-job-otel")

    async def fails(sender: Any, **kwargs: Any) -> None:
        raise Boom("later")

    def fine(sender: Any, **kwargs: Any) -> None:
        pass

    connect(job, fails, fine)

    async def endpoint(request: Request) -> PlainTextResponse:
        job.send_background("maker")
        return PlainTextResponse("queued")

    app = asignals.install(Starlette(routes=[Route("/", endpoint)]))
    with TestClient(app, backend=backend) as client:
        assert client.get("/").text == "queued"
    send = otel.span("send failing-job-otel")
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "1 of 2 receivers raised"
    assert [c.status.status_code for c in otel.children(send)] == [
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]


def test_install_after_starlettes_instrumentor_instruments_every_app(otel: Telemetry) -> None:
    """StarletteInstrumentor().instrument() puts a subclass in Starlette's
    place: an app made before it is still one install() takes, and one made
    after it has its sends under the request's span."""
    import starlette.applications

    otel.instrument()
    before = starlette_app()
    StarletteInstrumentor().instrument(tracer_provider=otel.tracer_provider)
    try:
        asignals.install(before)
        after = asignals.install(starlette.applications.Starlette(routes=[Route("/", home)]))
        asignals.request_started.connect(on_request, weak=False)
        with TestClient(after) as client:
            assert client.get("/").text == "home"
    finally:
        asignals.request_started.disconnect(on_request)
        StarletteInstrumentor().uninstrument()
    (request,) = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    send = otel.span("send request-started")
    assert send.parent is not None
    assert send.parent.span_id == request.context.span_id


def on_request(sender: Any, **kwargs: Any) -> None:
    pass


# What a tracer's failure may not break.


class Failing(TextMapPropagator):
    """A propagator that fails both ways."""

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        raise RuntimeError("propagator bug")

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise RuntimeError("propagator bug")

    @property
    def fields(self) -> set[str]:
        return set()


def test_a_propagator_that_fails_costs_no_send(
    otel: Telemetry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send runs and is published untraced; its publish span ends with
    the error; a message's trace context that cannot be read makes a span
    without a link, and the receiver runs."""
    from asignals.otel import _instrumentation

    monkeypatch.setattr(_instrumentation, "_unreadable", False)
    otel.instrument()
    signal = asignals.NamedSignal("failing-propagator-otel")
    ran: list[str] = []
    connect(signal, lambda sender, **kwargs: ran.append(sender))
    bridge = RedisBridge("redis://127.0.0.1:1")
    bridge.share(signal)
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(Failing())
    try:
        signal.send("x")
        assert _tracing.tracer is not None
        message = _tracing.Message(signal, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16}, {})
        with _tracing.tracer.exclusive(signal, "mail", message):
            ran.append("exclusive")
    finally:
        propagate.set_global_textmap(before)
        bridge._unshare(signal)
    assert ran == ["x", "exclusive"]
    ((_, _, queued, told),) = bridge._queue
    assert told is None
    assert _wire.decode(queued, None, 1 << 20).trace is None
    publish = otel.span("publish failing-propagator-otel")
    assert publish.status.status_code is StatusCode.ERROR
    assert otel.span("process failing-propagator-otel").links == ()
    logged = [r.getMessage() for r in caplog.records if r.name == "asignals"]
    assert any("published untraced" in m for m in logged)
    assert any("could not be read" in m for m in logged)


def test_a_signal_given_twice_is_traced_once(otel: Telemetry) -> None:
    signal = asignals.NamedSignal("twice-otel")
    connect(signal, lambda sender, **kwargs: None)
    otel.instrument(signals=[signal, signal, "twice-otel"])
    signal.send("x")
    assert len(otel.spans("send ")) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    ("sender", "shown"),
    [(2**70, str(2**70)), (-(2**63), -(2**63)), ("s" * 1000, "s" * 253 + "...")],
)
def test_senders_an_exporter_could_not_carry(otel: Telemetry, sender: Any, shown: Any) -> None:
    otel.instrument()
    signal = asignals.Signal()
    connect(signal, lambda sender, **kwargs: None)
    signal.send(sender)
    assert otel.span("send anonymous").attributes["asignals.sender"] == shown  # type: ignore[index]


def test_counts_go_on_through_the_global_meter_set_after_instrument() -> None:
    """Instrumented before the app set its global meter provider, then again
    after: the counts go on, and the bridges' too."""
    script = """
import asignals, asignals.otel, json
from asignals.bridge import RedisBridge
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

signal = asignals.signal("counted")
bridge = RedisBridge("redis://127.0.0.1:1")
bridge.share(signal)
asignals.otel.instrument()
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
signal.send("x")
asignals.otel.uninstrument()
asignals.otel.instrument()
for _ in range(5):
    signal.send("x")

def value(name):
    data = reader.get_metrics_data()
    return [p.value for r in data.resource_metrics for s in r.scope_metrics
            for m in s.metrics if m.name == name for p in m.data.data_points]

print(json.dumps([value("asignals.sends"), value("asignals.bridge.queued")]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [[6], [6]]


# install() where OpenTelemetry's middleware is elsewhere.


@pytest.mark.parametrize("installed_too", [False, True])
def test_a_mounted_app_that_fastapis_instrumentor_wrapped_reports_its_error_first(
    otel: Telemetry, installed_too: bool
) -> None:
    """got_request_exception comes before the mounted app's own 500
    handler makes its response, as in an app not instrumented; also when
    the mounted app is installed with asignals too."""
    from fastapi import FastAPI

    order: list[str] = []

    def boom(request: Request) -> PlainTextResponse:
        raise Boom("mounted")

    def handler(request: Request, exc: Exception) -> PlainTextResponse:
        order.append("500 handler")
        return PlainTextResponse("sorry", status_code=500)

    mounted = FastAPI(exception_handlers={500: handler})
    mounted.get("/boom")(boom)
    FastAPIInstrumentor.instrument_app(mounted, tracer_provider=otel.tracer_provider)
    if installed_too:
        asignals.install(mounted)
    app = asignals.install(Starlette(routes=[Mount("/sub", mounted)]))

    def got(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        order.append("got_request_exception")

    asignals.got_request_exception.connect(got, weak=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/sub/boom").status_code == 500
    finally:
        asignals.got_request_exception.disconnect(got)
    assert order == ["got_request_exception", "500 handler"]


def test_tracing_middleware_deeper_in_the_stack_is_warned_of(
    otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the outermost middleware: install() leaves the order as it is,
    and says the sends will not be under the request's span."""
    app = starlette_app()
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=otel.tracer_provider)
    app.add_middleware(GZipMiddleware)
    asignals.install(app)
    with TestClient(app) as client:
        assert client.get("/").text == "home"
    (warning,) = [r for r in caplog.records if r.name == "asignals"]
    assert "not the app's outermost middleware" in warning.getMessage()


def test_an_app_made_before_an_instrumentor_replaced_starlettes_class() -> None:
    """In a fresh process, where asignals meets Starlette's class only after
    the instrumentor replaced it: install() still takes the app made before."""
    script = """
from starlette.applications import Starlette
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
import asignals
app = Starlette()
StarletteInstrumentor().instrument()
asignals.install(app)
print("installed")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.stdout, done.returncode) == ("installed\n", 0), done.stderr

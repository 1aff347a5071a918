"""A traced request, rendered as text: what asignals.otel shows a tracing tool.

Run: python examples/otel_trace.py
(needs the OpenTelemetry SDK, its ASGI instrumentation and httpx2 for
Starlette's test client, which ``pip install -e '.[test]'`` installs)

A Starlette app, installed with asignals and wrapped in OpenTelemetry's ASGI
middleware, takes an order. Its endpoint sends ``order-placed``, whose two
async receivers run concurrently, then makes a background send,
``receipt-due``, which runs in its own trace, linked to the request's. The
spans go to the SDK's in-memory exporter and are printed one trace at a
time: each span with its kind, a bar showing when it ran within its trace,
and its duration.
"""

from __future__ import annotations

from typing import Any

import anyio
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import asignals
import asignals.otel

order_placed = asignals.signal("order-placed")
receipt_due = asignals.signal("receipt-due")


@asignals.request_started.connect
def log_request(sender: Any, **kwargs: Any) -> None:
    pass


@order_placed.connect
async def reserve_stock(sender: Any, order: int, **kwargs: Any) -> None:
    await anyio.sleep(0.004)


@order_placed.connect
async def notify_warehouse(sender: Any, order: int, **kwargs: Any) -> None:
    await anyio.sleep(0.002)


@receipt_due.connect
async def mail_receipt(sender: Any, order: int, **kwargs: Any) -> None:
    await anyio.sleep(0.003)


async def place_order(request: Request) -> PlainTextResponse:
    await order_placed.send_async(request.app, order=42, _concurrent=True)
    receipt_due.send_background(request.app, order=42)
    return PlainTextResponse("thanks")


def traced_request() -> list[ReadableSpan]:
    """Serve one request, traced; return the finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = asignals.install(Starlette(routes=[Route("/order", place_order, methods=["POST"])]))
    traced = OpenTelemetryMiddleware(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )
    asignals.otel.instrument(tracer_provider=provider)
    try:
        with TestClient(traced) as client:
            assert client.post("/order").text == "thanks"
        # The lifespan's end waited for the background send.
    finally:
        asignals.otel.uninstrument()
    return list(exporter.get_finished_spans())


def render(spans: list[ReadableSpan], width: int = 30) -> list[str]:
    """The spans as text, a tree per trace, in the order the traces began."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)
    names = {span.context.span_id: span.name for span in spans}
    lines: list[str] = []
    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        links = ", ".join(names.get(link.context.span_id, "?") for link in root.links)
        lines.append(f"trace: {root.name}" + (f" (linked to {links})" if links else ""))
        begin = root.start_time or 0
        total = max((root.end_time or 0) - begin, 1)

        def walk(span: ReadableSpan, depth: int, begin: int = begin, total: int = total) -> None:
            start = (span.start_time or 0) - begin
            end = (span.end_time or 0) - begin
            left = min(width - 1, start * width // total)
            right = max(left + 1, min(width, -(-end * width // total)))
            bar = " " * left + "=" * (right - left) + " " * (width - right)
            label = "  " * depth + span.name
            kind = span.kind.name
            lines.append(f"  {label:<52}{kind:<9}|{bar}| {(end - start) / 1e6:6.2f} ms")
            for child in sorted(children.get(span.context.span_id, []), key=_started):
                walk(child, depth + 1)

        walk(root, 0)
    return lines


def _started(span: ReadableSpan) -> int:
    return span.start_time or 0


if __name__ == "__main__":
    print("\n".join(render(traced_request())))

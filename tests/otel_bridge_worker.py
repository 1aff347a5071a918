"""One process of the tests of trace context across the bridge
(``tests/test_otel_bridge.py``).

Run: python tests/otel_bridge_worker.py REDIS_URL NAME BACKEND MODE [plain] [exclusive]

As ``tests/bridge_worker.py``: it shares the signal ``fanout`` through a
bridge in MODE (``pubsub`` or ``stream``), has a receiver of it, and prints
one JSON line for each event: ``{"ready": <bridge id>}`` once connected,
``{"got": ...}`` each time its receiver runs, ``{"sent": TEXT}`` once a send
it was told to make is published. Commands on standard input, one a line:
``send TEXT``, ``quit``. At ``quit``, once its bridge is shut down (every
send finished), it prints a ``{"span": ...}`` line for each span it made,
then ``{"stats": <the bridge's stats>}``.

It is instrumented (``asignals.otel.instrument``, with an SDK tracer
provider that keeps its spans in memory) unless ``plain`` is given. With
``exclusive`` (stream mode), it also has the exclusive receiver ``mail`` of
``fanout``, which prints ``{"exclusive": TEXT}``.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from bridge_worker import fanout, say, serve
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asignals.otel
from asignals.bridge import RedisBridge, origin


def receiver(sender: Any, **kwargs: Any) -> None:
    say(got={"sender": sender, "kwargs": kwargs, "origin": origin()})


async def mail(sender: Any, text: str) -> None:
    say(exclusive=text)


def described(span: ReadableSpan) -> dict[str, Any]:
    """``span`` as the test reads it, ids in hex as W3C trace context has them."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


async def main(url: str, name: str, mode: Any, options: list[str]) -> None:
    exporter = InMemorySpanExporter()
    if "plain" not in options:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        asignals.otel.instrument(tracer_provider=provider)
    bridge = RedisBridge(url, mode=mode)
    bridge.share(fanout)
    fanout.connect(receiver)
    if "exclusive" in options:
        bridge.exclusive(fanout, mail, name="mail")
    await serve(bridge, name)
    for span in exporter.get_finished_spans():
        say(span=described(span))
    say(stats=bridge.stats)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[4], sys.argv[5:], backend=sys.argv[3])

"""Trace context across the bridge: two real OS processes
(``tests/otel_bridge_worker.py``), each with its own OpenTelemetry SDK, on
one real redis-server."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from coredis import Redis
from redis_server import RedisServer
from test_bridge_processes import Worker as BridgeWorker

from asignals.bridge import _wire

WORKER = Path(__file__).with_name("otel_bridge_worker.py")
# The name of the worker's receiver of ``fanout``, which names its span.
RECEIVER = "__main__.receiver"

Line = dict[str, Any]
Span = dict[str, Any]


class Worker(BridgeWorker):
    """A process of ``otel_bridge_worker.py``, read as the bridge's
    multi-process tests read theirs (every wait bounded)."""

    def __init__(self, url: str, name: str, backend: str, mode: str, *options: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, name, backend, mode, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[Line | None] = queue.Queue()
        self.seen: list[Line] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.id = ""  # its bridge's, once it is ready

    def sees(self, predicate: Callable[[Line], bool]) -> Line:
        """The first line ``predicate`` takes, printed already or to come."""
        for line in self.seen:
            if predicate(line):
                return line
        return self.expect(predicate)

    def finish(self) -> list[Span]:
        """Quit; the spans it made. It wrote nothing to stderr."""
        self.stop()
        assert self.process.stderr is not None
        assert self.process.stderr.read() == ""
        return [line["span"] for line in self.seen if "span" in line]


@pytest.fixture
def start(redis_server: RedisServer) -> Iterator[Callable[..., list[Worker]]]:
    """``start(backend, mode, a=[options], b=[options])``: the workers, each
    named as given, once each is connected; killed after the test."""
    started: list[Worker] = []

    def start(backend: str, mode: str, **options: list[str]) -> list[Worker]:
        for name, given in options.items():
            started.append(Worker(redis_server.url, name, backend, mode, *given))
        workers = started[-len(options) :]
        for worker in workers:
            worker.id = worker.expect(lambda line: "ready" in line)["ready"]
        return workers

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def send(worker: Worker, text: str) -> None:
    """Have ``worker`` send ``fanout`` with ``text``; return once published."""
    worker.tell(f"send {text}")
    worker.expect(lambda line: line.get("sent") == text)


def got_from(sender: Worker, text: str) -> Callable[[Line], bool]:
    """Whether a line says the receiver ran for ``sender``'s send of ``text``."""
    got = {"sender": sender.name, "kwargs": {"text": text}, "origin": sender.id}
    return lambda line: line.get("got") == got


def named(spans: list[Span]) -> dict[str, Span]:
    """``spans`` by name (each name once)."""
    found = {span["name"]: span for span in spans}
    assert len(found) == len(spans), spans
    return found


def is_child(span: Span, parent: Span) -> bool:
    return bool(span["trace_id"] == parent["trace_id"] and span["parent"] == parent["span_id"])


def link_to(span: Span) -> dict[str, str]:
    return {"trace_id": span["trace_id"], "span_id": span["span_id"]}


def processing(sender: Worker, mode: str, text: str, publish: Span | None) -> dict[str, Any]:
    """The messaging attributes of the span that processes ``sender``'s first
    send, of ``text``, whose message carries ``publish``'s trace context."""
    trace = None
    if publish is not None:
        trace = {"traceparent": f"00-{publish['trace_id']}-{publish['span_id']}-01"}
    envelope = _wire.Envelope(1, sender.id, "fanout", sender.name, False, {"text": text}, trace)
    return {
        "messaging.system": "redis",
        "messaging.destination.name": "asignals:fanout",
        "messaging.operation.type": "process",
        "messaging.message.body.size": len(_wire.encode(envelope, None, 1 << 20)),
        "asignals.bridge.origin": sender.id,
        "asignals.bridge.mode": mode,
    }


@pytest.mark.parametrize("mode", ["pubsub", "stream"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_send_is_traced_into_the_other_process(
    start: Callable[..., list[Worker]], backend: str, mode: str
) -> None:
    """In the sending process: the send's span, its receiver's, and a PRODUCER
    span under it, ended once Redis took the message. In the other: the
    send from there has a CONSUMER span, the root of a trace of its own,
    linked to that PRODUCER span, with the messaging attributes; its
    receiver's span is its child."""
    a, b = start(backend, mode, a=[], b=[])
    send(a, "hello")
    b.sees(got_from(a, "hello"))
    here = named(a.finish())
    assert set(here) == {"send fanout", RECEIVER, "publish fanout"}
    sent, publish = here["send fanout"], here["publish fanout"]
    assert (sent["kind"], sent["parent"]) == ("INTERNAL", None)
    assert is_child(here[RECEIVER], sent)
    assert is_child(publish, sent)
    assert (publish["kind"], publish["status"]) == ("PRODUCER", "UNSET")
    assert publish["attributes"]["messaging.destination.name"] == "asignals:fanout"
    there = named(b.finish())
    assert set(there) == {"send fanout", RECEIVER}
    consumer = there["send fanout"]
    assert (consumer["kind"], consumer["parent"]) == ("CONSUMER", None)
    assert consumer["trace_id"] != publish["trace_id"]
    assert consumer["links"] == [link_to(publish)]
    assert processing(a, mode, "hello", publish).items() <= consumer["attributes"].items()
    assert is_child(there[RECEIVER], consumer)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_exclusive_receiver_runs_under_a_consumer_span(
    start: Callable[..., list[Worker]], redis_server: RedisServer, backend: str
) -> None:
    """An exclusive receiver (stream mode) runs under a CONSUMER span
    ``process fanout`` of a trace of its own, linked to the PRODUCER span of
    the process that sent, with the stream entry's id and the group's name."""
    a, b = start(backend, "stream", a=[], b=["exclusive"])
    send(a, "hello")
    b.sees(lambda line: line.get("exclusive") == "hello")
    b.sees(got_from(a, "hello"))
    publish = named(a.finish())["publish fanout"]
    there = named(b.finish())
    assert set(there) == {"send fanout", RECEIVER, "process fanout"}
    process = there["process fanout"]
    assert (process["kind"], process["parent"]) == ("CONSUMER", None)
    assert process["trace_id"] not in (publish["trace_id"], there["send fanout"]["trace_id"])
    assert process["links"] == [link_to(publish)]
    [entry] = anyio.run(_entries, redis_server.url, backend=backend)
    assert {
        **processing(a, "stream", "hello", publish),
        "messaging.message.id": entry,
        "messaging.consumer.group.name": "mail",
        "asignals.bridge.attempt": 1,
        "code.function": "__main__.mail",
    }.items() <= process["attributes"].items()


@pytest.mark.parametrize("mode", ["pubsub", "stream"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_traced_process_and_a_plain_one_hear_each_other(
    start: Callable[..., list[Worker]], backend: str, mode: str
) -> None:
    """A process that is not instrumented runs its receivers for a traced
    send, which it takes as any (nothing on stderr); the instrumented one
    makes a CONSUMER span with no link for a send that carries no trace
    context."""
    a, b = start(backend, mode, a=[], b=["plain"])
    send(a, "traced")
    b.sees(got_from(a, "traced"))
    send(b, "plain")
    a.sees(got_from(b, "plain"))
    assert b.finish() == []
    spans = a.finish()
    assert len(spans) == 5  # its own send's three, and two for b's
    [consumer] = [span for span in spans if span["kind"] == "CONSUMER"]
    assert (consumer["name"], consumer["parent"], consumer["links"]) == ("send fanout", None, [])
    assert processing(b, mode, "plain", None).items() <= consumer["attributes"].items()
    assert any(span["name"] == RECEIVER and is_child(span, consumer) for span in spans)


async def _entries(url: str) -> list[str]:
    """The ids of the entries of ``fanout``'s stream."""
    client: Redis[str] = Redis.from_url(url, decode_responses=True)
    async with client:
        return [str(entry.identifier) for entry in await client.xrange("asignals:fanout")]

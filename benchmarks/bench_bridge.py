"""Bridge benchmark: the fan-out latency and throughput of asignals'
RedisBridge between two processes on loopback, against raw coredis doing the
same, in the same run, in both of the bridge's modes.

Run: python benchmarks/bench_bridge.py [--rounds N] [--quick]

Needs Debian's redis-server (``apt-get install redis-server``) and coredis
(the ``redis`` extra). The benchmark starts its own redis-server on a free
port of 127.0.0.1, without persistence, and stops it at the end. By default
3 rounds (one to two minutes on 2 CPUs); ``--quick``: one round with a tenth
of the messages (a few seconds), a smoke run.

Two OS processes, both on asyncio (``anyio.run``): the sender is this
process; the receiver is a child process (this file run with ``--receive``),
a fresh one for each case in each round, which reports back one JSON line at
a time on its standard output. Four cases:

- raw coredis, pubsub: the sender awaits ``PUBLISH`` of each message (a JSON
  object); a coredis pubsub subscriber in the child receives it and decodes
  the JSON;
- asignals, pubsub: ``signal.send(...)`` of a named signal that a
  ``RedisBridge(mode="pubsub")`` shares; in the child, the same signal's
  receiver, which the child's bridge runs as a background send (``async with
  bridge:`` gives the bridge its own task group);
- raw coredis, stream: the sender awaits ``XADD`` of each message (with no
  trimming; the bridge's adds trim to about ``stream_maxlen``); an ``XREAD
  BLOCK`` loop (``COUNT 100``, as the bridge reads) in the child;
- asignals, stream: as the pubsub case, with ``RedisBridge(mode="stream")``.

The bridges have their default settings. The sending process's bridge shares
the signal as any process's does, so it also subscribes to (or reads) the
signal's channel (or stream) and gets its own sends back, which it drops:
that work is part of the bridge rows, as it is in an app. The child says it
is ready once subscribed (raw pubsub), connected (raw stream: it reads the
fresh stream from its start) or once ``async with bridge:`` has returned.

Each message carries its kind, its number and the sender's ``time.time_ns()``
taken just before it is sent. Latency is one way: the child takes
``time.time_ns()`` as the message reaches it (the receiver runs, or the
subscriber or the XREAD loop hands it over) and reports the difference. Both
processes read the same clock (the system's wall clock, on one machine), so
no round trip is halved; each figure is also checked to be no more than the
time the sender saw from the send to the child's report, as a guard against
a clock step. Messages go one at a time: send, wait for the child's report,
the next. The table gives the p50 and p99 (nearest rank) of the measured
messages of every round together, after a warm-up in each round.

Throughput: the sender sends M messages as fast as it can (raw: ``PUBLISH``
or ``XADD`` in a loop, awaiting each; the bridge: ``signal.send`` in a loop,
then ``await bridge.flush()``), and the child reports when it has received
all M: messages per second = M / (time from the first send to the child's
last receipt, on the same clock). The table gives the median of the rounds
and every round's figure. M (10,000) is also the bridge's default
``queue_size``: the burst fits in its outbound queue, just; a send that did
not would be dropped, and fail the run.

The cases are interleaved: every round runs each of them, in an order that
rotates from round to round. Checks, so that no row measures less than it
says: the child counts what it receives, and the run fails (non-zero exit)
if any message was lost, duplicated or unexpected, in either mode (in pubsub
mode messages may be lost only while a subscriber is disconnected, which is
itself a failure: the raw subscriber does not reconnect, and a bridge that
sent ``bridge_disconnected`` fails the run); on the bridge rows, also if the
sender's bridge dropped a send or did not publish each one once, or the
receiving bridge refused, dropped as duplicates or could not run any. Every
wait has a time limit that fails the run, and the child and redis-server are
stopped whatever happens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.buffered import BufferedByteReceiveStream
from coredis import Redis
from coredis.retry import NoRetryPolicy

import asignals
from asignals.bridge import RedisBridge, bridge_disconnected

SCRIPT = str(Path(__file__).resolve())
REDIS_SERVER = "/usr/bin/redis-server"

Mode = Literal["pubsub", "stream"]

# The named signal the bridge rows share, and the sender they send it with.
SIGNAL = asignals.signal("bench-bridge")
SENDER = "bench"

# Time limits, in seconds: each one that runs out fails the run.
START_TIMEOUT = 30.0  # redis-server and the child starting, the bridge connecting
REPORT_TIMEOUT = 10.0  # the child's report of one message, and its last reports
STOP_TIMEOUT = 10.0  # the child and redis-server exiting
# A latency figure may exceed the round trip the sender saw by this much
# (clock reading granularity) before the clocks are taken to disagree.
CLOCK_SLACK_NS = 50_000

LATENCY_TARGET = 1.5
THROUGHPUT_TARGET = 0.7


class BenchmarkFailed(Exception):
    """A check failed or a wait ran out: no figures for this run."""


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    mode: Mode
    bridge: bool


CASES = [
    Case(
        "raw-pubsub",
        "raw coredis: awaited PUBLISH, to a coredis pubsub subscriber",
        "pubsub",
        False,
    ),
    Case(
        "bridge-pubsub",
        'asignals RedisBridge(mode="pubsub"): signal.send(), to the signal\'s receiver '
        "(a background send in the other process's bridge)",
        "pubsub",
        True,
    ),
    Case(
        "raw-stream",
        "raw coredis: awaited XADD, to an XREAD BLOCK loop",
        "stream",
        False,
    ),
    Case(
        "bridge-stream",
        'asignals RedisBridge(mode="stream"): signal.send(), to the signal\'s receiver '
        "(a background send in the other process's bridge)",
        "stream",
        True,
    ),
]
BY_KEY = {case.key: case for case in CASES}


@dataclass
class Sizes:
    rounds: int
    warmup: int  # latency messages before the measured ones, in each round
    latency: int  # measured latency messages, in each round
    throughput: int  # messages of the throughput burst, in each round


@dataclass
class Figures:
    """What one case measured, over the rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def message(kind: str, number: int, stamp: int) -> dict[str, Any]:
    """A message: its kind (``lat``: a latency message, ``thr``: one of the
    throughput burst, ``end``: the last), its number and the send's time."""
    return {"k": kind, "i": number, "t": stamp}


# The receiving process.


def say(**what: Any) -> None:
    """Report to the sender: one JSON line on standard output."""
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()


class Tally:
    """What the child received, and its reports as messages arrive."""

    def __init__(self, latency: int, throughput: int) -> None:
        self.latency = latency  # warm-up and measured latency messages
        self.throughput = throughput
        self.latency_received = 0
        self.latency_out_of_order = 0
        self.throughput_seen: set[int] = set()
        self.throughput_duplicates = 0
        self.unexpected = 0
        self.ends = 0
        self.disconnects = 0
        # Set as the sender closes our standard input: the receiving stops.
        self.stopping = False

    def take_json(self, data: bytes | str) -> None:
        taken = json.loads(data)
        self.take(taken["k"], taken["i"], taken["t"])

    def take(self, kind: str, number: int, stamp: int) -> None:
        now = time.time_ns()
        if kind == "lat":
            if number != self.latency_received:
                self.latency_out_of_order += 1
            self.latency_received += 1
            say(ack=number, ns=now - stamp)
        elif kind == "thr" and 0 <= number < self.throughput:
            if number in self.throughput_seen:
                self.throughput_duplicates += 1
                return
            self.throughput_seen.add(number)
            if len(self.throughput_seen) == self.throughput:
                say(done=self.throughput, last=now)
        elif kind == "end":
            self.ends += 1
            say(end=self.summary())
        else:
            self.unexpected += 1

    def summary(self) -> dict[str, int]:
        return {
            "latency_received": self.latency_received,
            "latency_out_of_order": self.latency_out_of_order,
            "throughput_received": len(self.throughput_seen),
            "throughput_duplicates": self.throughput_duplicates,
            "unexpected": self.unexpected,
            "ends": self.ends,
            "disconnects": self.disconnects,
        }


@contextmanager
def stopped_quietly(tally: Tally) -> Iterator[None]:
    """Let coredis' clean-up fail on a connection it closed itself as the
    receiving is cancelled at the end (the bridge's ``_redis.py`` takes the
    same errors as no outage): any other error, or one before, is raised."""
    try:
        yield
    except BaseExceptionGroup as group:
        _, rest = group.split((anyio.ClosedResourceError, anyio.get_cancelled_exc_class()))
        if rest is not None or not tally.stopping:
            raise


async def receive_raw_pubsub(
    url: str, channel: str, tally: Tally, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    # Not reconnecting: a lost connection fails the run rather than losing
    # messages quietly.
    with stopped_quietly(tally):
        async with (
            client,
            client.pubsub(
                channels=[channel], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
            ) as pubsub,
        ):
            task_status.started()
            async for received in pubsub:
                if received["type"] == "message":
                    data = received["data"]
                    tally.take_json(data if isinstance(data, bytes) else str(data))
    if not tally.stopping:
        raise BenchmarkFailed("the coredis subscription ended")


async def receive_raw_stream(
    url: str, stream: str, tally: Tally, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    with stopped_quietly(tally):
        async with client:
            await client.ping()
            task_status.started()
            last: str | bytes = b"0-0"  # a fresh stream: everything added to it
            while True:
                read = await client.xread({stream: last}, count=100, block=1000)
                for entries in (read or {}).values():
                    for entry in entries:
                        last = entry.identifier
                        tally.take_json(entry.field_values[b"m"])


async def receive_bridge(
    url: str,
    mode: Mode,
    namespace: str,
    tally: Tally,
    stats: dict[str, int],
    *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    bridge = RedisBridge(url, mode=mode, namespace=namespace, connect_timeout=START_TIMEOUT)
    bridge.share(SIGNAL)

    def receiver(sender: Any, **kwargs: Any) -> None:
        tally.take(kwargs["k"], kwargs["i"], kwargs["t"])

    def disconnected(sender: Any, **kwargs: Any) -> None:
        tally.disconnects += 1

    with (
        SIGNAL.connected_to(receiver),
        bridge_disconnected.connected_to(disconnected, sender=bridge),
    ):
        try:
            async with bridge:
                task_status.started()
                await anyio.sleep_forever()
        finally:
            stats.update(bridge.stats)


async def stdin_closed() -> None:
    """Return once the sender closes our standard input (or dies). Read by
    a daemon thread, which does not keep this process alive if it fails."""
    closed = anyio.Event()
    token = anyio.lowlevel.current_token()

    def read() -> None:
        # From the descriptor, unbuffered: a daemon thread blocked in
        # sys.stdin's buffer would abort the interpreter's exit.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        with suppress(RuntimeError):  # the event loop is gone
            anyio.from_thread.run_sync(closed.set, token=token)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    await closed.wait()


async def receive(case: Case, url: str, key: str, latency: int, throughput: int) -> None:
    """The child: receive the case's messages and report them, until the
    sender closes our standard input."""
    tally = Tally(latency, throughput)
    stats: dict[str, int] = {}
    async with anyio.create_task_group() as tasks:
        with anyio.fail_after(START_TIMEOUT):
            if case.bridge:
                await tasks.start(receive_bridge, url, case.mode, key, tally, stats)
            elif case.mode == "pubsub":
                await tasks.start(receive_raw_pubsub, url, key, tally)
            else:
                await tasks.start(receive_raw_stream, url, key, tally)
        say(ready=os.getpid())
        await stdin_closed()
        tally.stopping = True
        tasks.cancel_scope.cancel()
    say(final=tally.summary(), bridge=stats)


# The sending process.


class Sender(Protocol):
    async def send(self, kind: str, number: int, stamp: int) -> None:
        """Send one message."""

    async def burst(self, count: int) -> None:
        """Send ``count`` throughput messages as fast as it can; return once
        they are all handed to Redis."""


class RawPubsub:
    def __init__(self, client: Redis[bytes], channel: str) -> None:
        self.client = client
        self.channel = channel

    async def send(self, kind: str, number: int, stamp: int) -> None:
        await self.client.publish(self.channel, json.dumps(message(kind, number, stamp)))

    async def burst(self, count: int) -> None:
        for number in range(count):
            await self.send("thr", number, time.time_ns())


class RawStream:
    def __init__(self, client: Redis[bytes], stream: str) -> None:
        self.client = client
        self.stream = stream

    async def send(self, kind: str, number: int, stamp: int) -> None:
        await self.client.xadd(self.stream, {b"m": json.dumps(message(kind, number, stamp))})

    async def burst(self, count: int) -> None:
        for number in range(count):
            await self.send("thr", number, time.time_ns())


class BridgeSender:
    def __init__(self, bridge: RedisBridge) -> None:
        self.bridge = bridge

    async def send(self, kind: str, number: int, stamp: int) -> None:
        SIGNAL.send(SENDER, **message(kind, number, stamp))

    async def burst(self, count: int) -> None:
        send = SIGNAL.send
        for number in range(count):
            send(SENDER, k="thr", i=number, t=time.time_ns())
        await self.bridge.flush()


class Child:
    """The receiving process, as the sender sees it."""

    def __init__(self, process: anyio.abc.Process, errors: IO[bytes]) -> None:
        self.process = process
        self.errors = errors
        assert process.stdout is not None
        self.lines = BufferedByteReceiveStream(process.stdout)
        # Its last report, with what it counted, once it has said it.
        self.final: dict[str, Any] | None = None

    def output(self) -> str:
        """The end of what the child wrote on its standard error."""
        self.errors.flush()
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace").strip()
        return f"; its standard error:\n{text[-3000:]}" if text else ""

    async def report(self, key: str, limit: float, waiting_for: str) -> dict[str, Any]:
        """The child's next report, which must hold ``key``, within ``limit``
        seconds."""
        try:
            with anyio.fail_after(limit):
                line = await self.lines.receive_until(b"\n", 1 << 20)
        except TimeoutError:
            raise BenchmarkFailed(
                f"no report from the receiving process within {limit:g} s while "
                f"waiting for {waiting_for}{self.output()}"
            ) from None
        except (anyio.EndOfStream, anyio.IncompleteRead):
            with anyio.move_on_after(STOP_TIMEOUT):
                await self.process.wait()
            raise BenchmarkFailed(
                f"the receiving process exited (status {self.process.returncode}) while "
                f"waiting for {waiting_for}{self.output()}"
            ) from None
        report: dict[str, Any] = json.loads(line)
        if "final" in report:
            self.final = report
        if key not in report:
            raise BenchmarkFailed(f"waiting for {waiting_for}, the receiving process said {line!r}")
        return report

    async def counted(self) -> str:
        """What the child counted, for the message of a failure: it says so
        as it exits, once its standard input is closed. Nothing if the failure
        came from what it said there."""
        if self.final is not None:
            return ""
        with suppress(Exception), anyio.move_on_after(REPORT_TIMEOUT):
            if self.process.stdin is not None:
                await self.process.stdin.aclose()
            while True:
                report = json.loads(await self.lines.receive_until(b"\n", 1 << 20))
                if "final" in report:
                    return f"; the receiving process counted {report['final']}" + (
                        f", its bridge's stats {report['bridge']}" if report["bridge"] else ""
                    )
        return ""

    async def stop(self) -> None:
        """Close its standard input (it exits), and kill it if it lingers."""
        with anyio.CancelScope(shield=True):
            if self.process.stdin is not None:
                with suppress(Exception):
                    await self.process.stdin.aclose()
            with anyio.move_on_after(STOP_TIMEOUT):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                with anyio.move_on_after(STOP_TIMEOUT):
                    await self.process.wait()
            with suppress(Exception):
                await self.process.aclose()


async def start_child(
    case: Case, url: str, key: str, sizes: Sizes, errors: IO[bytes]
) -> anyio.abc.Process:
    command = [
        sys.executable,
        SCRIPT,
        "--receive",
        case.key,
        "--url",
        url,
        "--key",
        key,
        "--latency",
        str(sizes.warmup + sizes.latency),
        "--throughput",
        str(sizes.throughput),
    ]
    return await anyio.open_process(command, stderr=errors)


def percentile(values: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def check(case: Case, problems: list[str]) -> None:
    if problems:
        raise BenchmarkFailed(f"{case.key} ({case.mode}): " + "; ".join(problems))


async def measure(case: Case, sender: Sender, child: Child, sizes: Sizes, figures: Figures) -> None:
    """Measure latency then throughput through ``sender`` to ``child``, and
    check what the child counted."""
    try:
        await measure_and_check(case, sender, child, sizes, figures)
    except BenchmarkFailed as failed:
        raise BenchmarkFailed(
            f"{case.key} ({case.mode}): {failed}{await child.counted()}"
        ) from None


async def measure_and_check(
    case: Case, sender: Sender, child: Child, sizes: Sizes, figures: Figures
) -> None:
    total = sizes.warmup + sizes.latency
    for number in range(total):
        before = time.perf_counter_ns()
        stamp = time.time_ns()
        await sender.send("lat", number, stamp)
        report = await child.report("ack", REPORT_TIMEOUT, f"latency message {number}")
        seen = time.perf_counter_ns() - before
        if report["ack"] != number:
            raise BenchmarkFailed(f"latency message {number} sent, {report['ack']} reported")
        latency: int = report["ns"]
        if not -CLOCK_SLACK_NS <= latency <= seen + CLOCK_SLACK_NS:
            raise BenchmarkFailed(
                f"a one-way latency of {latency} ns, outside 0 to the "
                f"{seen} ns the sender saw: the wall clock moved during the run"
            )
        if number >= sizes.warmup:
            figures.latencies_ns.append(latency)

    count = sizes.throughput
    # Bounded: the least rate this waits for is 1 message per 5 ms.
    limit = max(60.0, count * 0.005)
    try:
        with anyio.fail_after(limit):
            first = time.time_ns()
            await sender.burst(count)
    except TimeoutError:
        raise BenchmarkFailed(
            f"the burst of {count} messages was not sent within {limit:g} s"
        ) from None
    report = await child.report("done", limit, f"the {count} throughput messages")
    figures.rates.append(count / ((report["last"] - first) / 1e9))

    await sender.send("end", 0, time.time_ns())
    await child.report("end", REPORT_TIMEOUT, "the last message")
    # Its tallies as it exits: with whatever arrived after the last message.
    if child.process.stdin is not None:
        await child.process.stdin.aclose()
    final = await child.report("final", REPORT_TIMEOUT, "the final tallies")
    with anyio.fail_after(STOP_TIMEOUT):
        status = await child.process.wait()
    problems = [] if status == 0 else [f"the receiving process exited with status {status}"]
    tally: dict[str, int] = final["final"]
    expected = {
        "latency_received": total,
        "latency_out_of_order": 0,
        "throughput_received": count,
        "throughput_duplicates": 0,
        "unexpected": 0,
        "ends": 1,
        "disconnects": 0,
    }
    problems += [
        f"the receiving process counted {name}={tally.get(name)}, not {value}"
        for name, value in expected.items()
        if tally.get(name) != value
    ]
    if case.bridge:
        stats: dict[str, int] = final["bridge"]
        for name in ("refused", "not_run", "duplicates", "reconnects", "dropped"):
            if stats.get(name) != 0:
                problems.append(f"the receiving bridge's stats[{name!r}] is {stats.get(name)}")
        if stats.get("received") != total + count + 1:
            problems.append(
                f"the receiving bridge received {stats.get('received')} sends, "
                f"not {total + count + 1}"
            )
    if problems:
        raise BenchmarkFailed("; ".join(problems))


async def run_case(case: Case, url: str, key: str, sizes: Sizes, figures: Figures) -> None:
    """One case, once: a fresh receiving process, then the measurements."""
    with tempfile.TemporaryFile() as errors:
        process = await start_child(case, url, key, sizes, errors)
        child = Child(process, errors)
        try:
            await child.report("ready", START_TIMEOUT, "the receiving process to start")
            if case.bridge:
                bridge = RedisBridge(url, mode=case.mode, namespace=key)
                bridge.share(SIGNAL)
                async with bridge:
                    await measure(case, BridgeSender(bridge), child, sizes, figures)
                    published = sizes.warmup + sizes.latency + sizes.throughput + 1
                    problems = [
                        f"the sending bridge's stats[{name!r}] is {bridge.stats[name]}"
                        for name in ("dropped", "refused", "not_run", "reconnects")
                        if bridge.stats[name] != 0
                    ]
                    if bridge.stats["published"] != published:
                        problems.append(
                            f"the sending bridge published {bridge.stats['published']} "
                            f"sends, not {published}"
                        )
                    check(case, problems)
            else:
                client: Redis[bytes] = Redis.from_url(url)
                async with client:
                    sender: Sender = (
                        RawPubsub(client, key) if case.mode == "pubsub" else RawStream(client, key)
                    )
                    await measure(case, sender, child, sizes, figures)
        finally:
            await child.stop()
        # Leave Redis as it was for the next case.
        cleanup: Redis[bytes] = Redis.from_url(url)
        async with cleanup:
            with anyio.fail_after(REPORT_TIMEOUT):
                await cleanup.delete([key, f"{key}:{SIGNAL.name}"])


def run(url: str, sizes: Sizes) -> dict[str, Figures]:
    """Every case in every round, interleaved: the figures, by case key."""
    figures = {case.key: Figures() for case in CASES}

    async def rounds() -> None:
        for round_ in range(sizes.rounds):
            shift = round_ % len(CASES)
            for case in CASES[shift:] + CASES[:shift]:
                print(
                    f"round {round_ + 1}/{sizes.rounds}: {case.key}",
                    file=sys.stderr,
                    flush=True,
                )
                key = f"bench-{os.getpid()}-{round_}-{case.key}"
                await run_case(case, url, key, sizes, figures[case.key])

    anyio.run(rounds, backend="asyncio")
    return figures


# redis-server.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(directory: str) -> Iterator[str]:
    """A redis-server without persistence on a free port of 127.0.0.1, for
    the ``with`` block: yields its URL once it accepts connections, and stops
    it on the way out, whatever happens."""
    if not os.access(REDIS_SERVER, os.X_OK):
        sys.exit(
            f"bench_bridge.py needs {REDIS_SERVER}: install it with "
            "`apt-get install redis-server` (Debian, Ubuntu)."
        )
    port = free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            "--loglevel",
            "notice",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(process, port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()


def wait_until_ready(process: subprocess.Popen[bytes], port: int) -> None:
    """Return once redis-server accepts connections on ``port``: it says so
    on its output, which is then no longer read."""
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"Ready to accept connections" not in output:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise BenchmarkFailed(
                    f"redis-server did not start on port {port} within {START_TIMEOUT:g} s: "
                    f"{output.decode(errors='replace')[-500:]}"
                )
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise BenchmarkFailed(
                    f"redis-server exited with {process.wait(STOP_TIMEOUT)}: "
                    f"{output.decode(errors='replace')[-500:]}"
                )
            output += chunk
    # Its later output is not read: send it nowhere that can fill up.
    process.stdout.close()


def redis_version() -> str:
    done = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=STOP_TIMEOUT
    )
    for word in done.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return done.stdout.strip()


# The table.


def microseconds(ns: float) -> str:
    return f"{ns / 1000:,.0f} µs"


def format_table(figures: dict[str, Figures]) -> str:
    lines = [
        "| case | mode | p50 latency (one way) | p99 latency (one way) | throughput "
        "(median) | throughput per round | p50 / raw | throughput / raw | target | met |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    raw = {case.mode: figures[case.key] for case in CASES if not case.bridge}
    for case in CASES:
        found = figures[case.key]
        p50 = percentile(found.latencies_ns, 0.50)
        p99 = percentile(found.latencies_ns, 0.99)
        rate = statistics.median(found.rates)
        rounds = ", ".join(f"{r:,.0f}" for r in found.rates)
        if case.bridge:
            base = raw[case.mode]
            latency_ratio = p50 / percentile(base.latencies_ns, 0.50)
            rate_ratio = rate / statistics.median(base.rates)
            ratios = f"{latency_ratio:.2f}x | {rate_ratio:.2f}x"
            target = f"p50 <= {LATENCY_TARGET}x raw; throughput >= {THROUGHPUT_TARGET}x raw"
            met = (
                f"p50 {'yes' if latency_ratio <= LATENCY_TARGET else 'NO'}; "
                f"throughput {'yes' if rate_ratio >= THROUGHPUT_TARGET else 'NO'}"
            )
        else:
            ratios, target, met = "- | -", "-", "-"
        lines.append(
            f"| {case.label} | {case.mode} | {microseconds(p50)} | {microseconds(p99)} "
            f"| {rate:,.0f} msg/s | {rounds} | {ratios} | {target} | {met} |"
        )
    return "\n".join(lines)


def setting(sizes: Sizes) -> str:
    """The machine, the versions and the sample sizes, for the table's heading."""
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared by redis-server and both "
        f"processes; asignals {version('asignals')}, coredis {version('coredis')}, "
        f"anyio {version('anyio')}, both processes on asyncio; redis-server "
        f"{redis_version()} on 127.0.0.1, no persistence; {sizes.rounds} interleaved "
        f"round{'' if sizes.rounds == 1 else 's'}, a fresh receiving process for each "
        f"case in each; latency: {sizes.latency} messages one at a time per round after "
        f"{sizes.warmup} of warm-up, percentiles over the {sizes.rounds * sizes.latency} "
        f"of all rounds; throughput: {sizes.throughput} messages per round, median of "
        "the rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (interleaved)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round with a tenth of the messages, for a smoke run",
    )
    # The receiving process's options.
    parser.add_argument("--receive", choices=list(BY_KEY), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--throughput", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.receive is not None:
        anyio.run(
            receive,
            BY_KEY[args.receive],
            args.url,
            args.key,
            args.latency,
            args.throughput,
            backend="asyncio",
        )
        return
    if args.quick:
        sizes = Sizes(rounds=1, warmup=10, latency=100, throughput=1000)
    else:
        sizes = Sizes(rounds=args.rounds, warmup=100, latency=1000, throughput=10_000)
    try:
        with tempfile.TemporaryDirectory() as directory, redis_server(directory) as url:
            figures = run(url, sizes)
    except (BenchmarkFailed, BaseExceptionGroup) as error:
        failures = list(_leaves(error))
        if not all(isinstance(failure, BenchmarkFailed) for failure in failures):
            raise
        sys.exit("bench_bridge.py failed: " + "; ".join(map(str, failures)))
    print(setting(sizes))
    print()
    print(format_table(figures))
    print()
    print(
        "Checked in every round: each message reached the receiving process once "
        "(none lost, duplicated or unexpected; no disconnection); on the bridge rows, "
        "every send published once by the sending bridge and run once by the receiving one."
    )


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions in ``error``, out of the groups that task groups made."""
    if isinstance(error, BaseExceptionGroup):
        for exc in error.exceptions:
            yield from _leaves(exc)
    else:
        yield error


if __name__ == "__main__":
    main()

"""The signal monitor under load: requests per second under uvicorn, loaded
by wrk on loopback, with the monitor mounted and 0, 1, 20 or 100 pages of it
open, against the same app without a monitor.

Run: python benchmarks/bench_monitor.py [--duration S] [--rounds N] [--quick]

The app (``_uvicorn_apps.py``) has asignals installed and 3 sync receivers
on each of the 6 signals of a plain request, connected for the app. Each
round serves each candidate in turn (the order rotates every round) with a
fresh ``python -m uvicorn`` (``--http h11 --loop asyncio``, one worker, no
access log) on a free port of 127.0.0.1, opens its pages, loads ``/`` with
``wrk -t1 -c32``, then stops it. A page is what a browser's page keeps
open: a connection to the monitor's server-sent events, read as they come
by a thread of this process (websockets and events carry the same
messages). After the load, each page must have got the updates of the
requests made meanwhile: the table gives the messages and bytes a page got
per second, the same for every page since each change is encoded once for
all of them.

Needs wrk (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version

from bench_uvicorn import Load, load, need_wrk, serving

# Candidates: a name, the app's factory, how many pages are open.
CANDIDATES = [
    ("no monitor", "receivers_no_monitor", 0),
    ("monitor mounted, nobody watching", "receivers_monitor", 0),
    ("monitor, 1 page open", "receivers_monitor", 1),
    ("monitor, 20 pages open", "receivers_monitor", 20),
    ("monitor, 100 pages open", "receivers_monitor", 100),
]
SETUP = ("--http", "h11", "--loop", "asyncio")
OPEN_TIMEOUT = 10.0


@dataclass
class Page:
    """One open page: its events connection, read by a thread."""

    port: int
    messages: int = 0
    bytes: int = 0
    snapshot: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.connection.request("GET", "/signals/events", headers={"host": "localhost"})
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"the monitor answered {self.response.status}")
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            while line := self.response.readline():
                if line.startswith(b"data: "):
                    self.messages += 1
                    self.bytes += len(line)
                    self.snapshot.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.reader.join(OPEN_TIMEOUT)
        self.connection.close()


@contextlib.contextmanager
def pages(port: int, number: int) -> Iterator[list[Page]]:
    opened: list[Page] = []
    try:
        for _ in range(number):
            opened.append(Page(port))
        for page in opened:
            if not page.snapshot.wait(OPEN_TIMEOUT):
                raise RuntimeError("a page got no snapshot")
        yield opened
    finally:
        for page in opened:
            page.close()


@dataclass
class Result:
    load: Load
    # Per page and second of load: messages and bytes received.
    messages: float = 0.0
    bytes: float = 0.0


def run(rounds: int, duration: int) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {name: [] for name, _, _ in CANDIDATES}
    for round_ in range(rounds):
        shift = round_ % len(CANDIDATES)
        for name, factory, views in CANDIDATES[shift:] + CANDIDATES[:shift]:
            with serving(factory, SETUP) as port, pages(port, views) as opened:
                before = [(p.messages, p.bytes) for p in opened]
                result = Result(load(port, duration))
                if result.load.non_2xx_3xx or result.load.socket_errors:
                    raise RuntimeError(f"{name}: wrk saw errors: {result.load}")
                if opened:
                    # What arrives after the load is over is part of it.
                    time.sleep(1.0)
                    got = [
                        (p.messages - m, p.bytes - b)
                        for p, (m, b) in zip(opened, before, strict=True)
                    ]
                    if min(m for m, _ in got) == 0:
                        raise RuntimeError(f"{name}: a page got no update during the load")
                    result.messages = statistics.mean(m for m, _ in got) / duration
                    result.bytes = statistics.mean(b for _, b in got) / duration
                results[name].append(result)
    return results


def format_table(results: dict[str, list[Result]]) -> str:
    lines = [
        "| candidate | req/s (median) | / no monitor | messages per page per s | "
        "bytes per page per s | rounds |",
        "|---|---:|---:|---:|---:|---|",
    ]
    base = statistics.median(r.load.rate for r in results["no monitor"])
    for name, found in results.items():
        rate = statistics.median(r.load.rate for r in found)
        messages = statistics.median(r.messages for r in found)
        size = statistics.median(r.bytes for r in found)
        rounds = ", ".join(f"{r.load.rate:,.0f}" for r in found)
        shown = ("-", "-") if not messages else (f"{messages:.1f}", f"{size:,.0f}")
        lines.append(
            f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {shown[0]} | {shown[1]} | {rounds} |"
        )
    return "\n".join(lines)


def describe(rounds: int, duration: int) -> str:
    return (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs shared by wrk, the "
        f"server and the pages' reader; asignals {version('asignals')}, Starlette "
        f"{version('starlette')}, uvicorn {version('uvicorn')} (1 worker, "
        f"{' '.join(SETUP)}); wrk -t1 -c32 -d{duration}s on 127.0.0.1; median of "
        f"{rounds} interleaved round{'' if rounds == 1 else 's'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--quick", action="store_true", help="one round of 1 second")
    args = parser.parse_args()
    rounds, duration = (1, 1) if args.quick else (args.rounds, args.duration)
    need_wrk("bench_monitor.py")
    results = run(rounds, duration)
    print(describe(rounds, duration))
    print()
    print(format_table(results))


if __name__ == "__main__":
    main()

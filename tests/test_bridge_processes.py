"""The bridge across real OS processes: three workers
(``tests/bridge_worker.py``) on one real redis-server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from coredis import Redis
from redis_server import RedisServer

from asignals.bridge import _wire

WORKER = Path(__file__).with_name("bridge_worker.py")

# Every wait in these tests is bounded by this many seconds.
WAIT = 30.0


class Worker:
    """A worker process, its JSON lines read by a thread as they come."""

    def __init__(
        self,
        url: str,
        name: str,
        backend: str,
        mode: str,
        *options: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, name, backend, mode, *options],
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next line that ``predicate`` takes (earlier ones are kept in
        ``seen``); fail if none comes in time or the process ends."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.name}: nothing matching within {WAIT} s; saw {self.seen}")
            if line is None:
                assert self.process.stderr is not None
                pytest.fail(f"{self.name} ended: {self.process.stderr.read()[-2000:]}")
            self.seen.append(line)
            if predicate(line):
                return line

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict[str, Any]:
        """Quit; its last line, the bridge's stats."""
        self.tell("quit")
        stats = self.expect(lambda line: "stats" in line)["stats"]
        self.process.wait(WAIT)
        return stats  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        # The reader ends at the end of the output, which comes with the
        # process's: then its pipe can be closed under no one.
        self.reader.join(WAIT)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[list[Worker]]:
    backend, mode = request.param
    started = [Worker(redis_server.url, f"w{n}", backend, mode) for n in (1, 2, 3)]
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


@pytest.mark.parametrize(
    "workers",
    [(backend, mode) for backend in ("asyncio", "trio") for mode in ("pubsub", "stream")],
    indirect=True,
    ids=lambda param: "-".join(param),
)
def test_a_send_in_one_process_reaches_each_other_once(workers: list[Worker]) -> None:
    ids = [w.expect(lambda line: "ready" in line)["ready"] for w in workers]
    assert len(set(ids)) == 3
    first, second, third = workers
    first.tell("send hello")
    first.expect(lambda line: "sent" in line)
    # Here: the local receiver, as a local send.
    assert first.seen[1] == {"got": {"sender": "w1", "kwargs": {"text": "hello"}, "origin": None}}
    for other in (second, third):
        got = other.expect(lambda line: "got" in line)["got"]
        assert got == {"sender": "w1", "kwargs": {"text": "hello"}, "origin": ids[0]}
    third.tell("send back")
    third.expect(lambda line: "sent" in line)
    for other in (first, second):
        got = other.expect(lambda line: "got" in line)["got"]
        assert got == {"sender": "w3", "kwargs": {"text": "back"}, "origin": ids[2]}
    stats = [w.stop() for w in workers]
    # Each send ran once in each other process: nothing twice, nothing back.
    assert [s["published"] for s in stats] == [1, 0, 1]
    assert [s["received"] for s in stats] == [1, 2, 1]
    assert all(s["refused"] == s["duplicates"] == s["dropped"] == 0 for s in stats)
    # Each process's receiver ran twice in all: once per send.
    assert [len([line for line in w.seen if "got" in line]) for w in workers] == [2, 2, 2]


def collect(
    workers: list[Worker], predicate: Callable[[dict[str, Any]], bool], count: int
) -> list[dict[str, Any]]:
    """The first ``count`` lines that ``predicate`` takes, from any of
    ``workers`` (each worker's lines are kept in its ``seen``)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(found) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} of {count} lines within {WAIT} s: {found}")
        for worker in workers:
            try:
                line = worker.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"{worker.name} ended")
            worker.seen.append(line)
            if predicate(line):
                found.append(line)
    return found


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_exclusive_send_runs_once_and_survives_a_killed_process(
    redis_server: RedisServer, backend: str
) -> None:
    started: list[Worker] = []

    def start(name: str, **env: str) -> Worker:
        worker = Worker(redis_server.url, name, backend, "stream", "exclusive", env=env)
        started.append(worker)
        worker.expect(lambda line: "ready" in line)
        return worker

    def done(line: dict[str, Any]) -> bool:
        return line.get("exclusive", [None, None])[1] == "done"

    try:
        # Sends from both of a group's processes: each runs in one, once.
        first, second = start("w1"), start("w2")
        for n in range(6):
            (first if n % 2 else second).tell(f"send {n}")
        ran = collect([first, second], done, 6)
        assert sorted(line["exclusive"][0] for line in ran) == [str(n) for n in range(6)]
        stats = [first.stop(), second.stop()]
        assert sum(s["exclusive_done"] for s in stats) == 6
        # A send whose process is killed inside the receiver: the next
        # process of the group takes it over once it has been pending for
        # the idle timeout, and finishes it.
        hanging = start("w3", HANG="1")
        hanging.tell("send hang")
        hanging.expect(lambda line: line.get("exclusive") == ["hang", "started"])
        hanging.kill()
        taker = start("w4")
        taker.expect(lambda line: line.get("exclusive") == ["hang", "done"])
        assert taker.stop()["exclusive_done"] == 1
    finally:
        for worker in started:
            worker.kill()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_send_published_twice_runs_once_in_a_group_of_two(
    redis_server: RedisServer, backend: str
) -> None:
    started: list[Worker] = []
    try:
        for name in ("w1", "w2"):
            worker = Worker(redis_server.url, name, backend, "stream", "exclusive")
            started.append(worker)
            worker.expect(lambda line: "ready" in line)
        # Two copies of one send, as a publisher that sent its batch again
        # after its connection broke leaves them, next to each other.
        message = _wire.encode(
            _wire.Envelope(1, "elsewhere:1:ab", "fanout", "shop", False, {"text": "twice"}),
            None,
            1 << 20,
        )
        anyio.run(_add_twice, redis_server.url, message)
        collect(started, lambda line: line.get("exclusive") == ["twice", "done"], 1)
        # Both copies delivered in the group and acknowledged: the second
        # was seen, and not run.
        anyio.run(_group_caught_up, redis_server.url)
        stats = [worker.stop() for worker in started]
        assert sum(s["exclusive_done"] for s in stats) == 1
        assert sum(s["duplicates"] for s in stats) >= 1  # the listener's, and the group's
        done = [
            line for w in started for line in w.seen if line.get("exclusive") == ["twice", "done"]
        ]
        assert len(done) == 1
    finally:
        for worker in started:
            worker.kill()


async def _add_twice(url: str, message: bytes) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    async with client, client.pipeline(transaction=True) as pipe:
        pipe.xadd("asignals:fanout", {b"m": message})
        pipe.xadd("asignals:fanout", {b"m": message})


async def _group_caught_up(url: str) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        with anyio.fail_after(WAIT):
            while True:
                last = (await client.xrevrange("asignals:fanout", "+", "-", count=1))[0]
                (group,) = await client.xinfo_groups("asignals:fanout")
                if group[b"pending"] == 0 and group[b"last-delivered-id"] == last.identifier:
                    return
                await anyio.sleep(0.05)
